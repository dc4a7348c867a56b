"""Images in MatryoshkaIndex: added and searched through the same funnel as texts.

The tiny CLIP model has random weights, so only what holds for any model is asserted: an
image's own vector is its nearest neighbour, and the funnel's scores equal exact cosines.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex, truncate
from tiny_clip import noise_images


@pytest.fixture
def image_index(clip_encoder, image_files) -> MatryoshkaIndex:
    index = MatryoshkaIndex(clip_encoder, coarse_dim=16, rescore_multiplier=2, exact_below=0)
    index.add_images(
        image_files,
        ids=[f"img{i}" for i in range(len(image_files))],
        metadatas=[{"even": i % 2 == 0} for i in range(len(image_files))],
    )
    return index


def test_each_image_finds_itself_first(image_index, image_files) -> None:
    for i, path in enumerate(image_files):
        hits = image_index.search(path, k=3)
        assert hits[0].id == f"img{i}"
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_the_record_text_is_the_image_path(image_index, image_files) -> None:
    records = image_index.get(["img0", "img5"])
    assert [r.text for r in records] == [str(image_files[0]), str(image_files[5])]


def test_a_text_query_ranks_the_images_by_exact_cosine(
    image_index, clip_encoder, image_files
) -> None:
    hits = image_index.search("a photo of a red bicycle", k=3)
    query = clip_encoder.encode_queries(["a photo of a red bicycle"])[0]
    images = clip_encoder.encode_images(image_files)
    scores = images @ query
    # with k=3 and rescore_multiplier=2 the coarse stage keeps 6 of 8, ranked on 16 dims
    coarse = truncate(images, 16) @ truncate(query[None], 16)[0]
    shortlist = np.argsort(-coarse, kind="stable")[:6]
    best = shortlist[np.argsort(-scores[shortlist], kind="stable")[:3]]
    assert hits.ids == [f"img{i}" for i in best]
    np.testing.assert_allclose(hits.scores, scores[best], atol=1e-5)
    np.testing.assert_allclose([h.coarse_score for h in hits], coarse[best], atol=1e-5)


def test_a_filter_applies_to_image_search(image_index, image_files) -> None:
    hits = image_index.search(image_files[1], k=8, filter={"even": True})
    assert len(hits) == 4
    assert all(int(h.id[3:]) % 2 == 0 for h in hits)


def test_batched_image_search_gives_one_hits_per_image(image_index, image_files) -> None:
    results = image_index.search_images([str(p) for p in image_files[:3]], k=1)
    assert [hits[0].id for hits in results] == ["img0", "img1", "img2"]


def test_pil_images_and_bytes_are_added_and_found(clip_encoder) -> None:
    images = noise_images(4, seed=7)
    index = MatryoshkaIndex(clip_encoder, coarse_dim=8)
    ids = index.add_images(images)
    assert len(ids) == 4 and len(set(ids)) == 4
    assert [r.text for r in index.get(ids)] == [None] * 4
    assert index.search(images[2], k=1)[0].id == ids[2]


def test_a_bad_image_raises_and_loses_nothing_stored(image_index, image_files, tmp_path) -> None:
    bad = tmp_path / "not-an-image.png"
    bad.write_text("just some text")
    before = image_index.ids()
    with pytest.raises(ValueError, match=r"images\[1\] \('.*not-an-image.png'\) is not an image"):
        image_index.add_images([image_files[0], bad], ids=["new0", "new1"])
    assert image_index.ids() == before
    assert image_index.search(image_files[3], k=1)[0].id == "img3"


def test_bad_ids_fail_before_any_image_is_read(image_index, image_files) -> None:
    with pytest.raises(ValueError, match=r"got 1 ids for 2 vectors"):
        image_index.add_images([image_files[0], "/no/such/file.png"], ids=["x"])
    assert len(image_index) == len(image_files)


def test_an_existing_id_is_refused_unless_replaced(image_index, image_files) -> None:
    with pytest.raises(ValueError, match=r"already in the index.*'img0'"):
        image_index.add_images([image_files[1]], ids=["img0"])
    image_index.add_images([image_files[1]], ids=["img0"], on_conflict="replace")
    hits = image_index.search(image_files[1], k=2)
    assert set(hits.ids) == {"img0", "img1"}
    np.testing.assert_allclose(hits.scores, [1.0, 1.0], atol=1e-5)
    assert image_index.get(["img0"])[0].text == str(image_files[1])


def test_a_text_only_encoder_refuses_images_and_stores_nothing(minilm_encoder, image_files):
    index = MatryoshkaIndex(minilm_encoder, coarse_dim=32)
    index.add_texts(["a stored text"], ids=["t"])
    with pytest.raises(TypeError, match=r"images\[0\] is an image .*embeds texts only"):
        index.add_images(image_files[:2])
    assert index.ids() == ["t"]


def test_add_images_needs_an_encoder(image_files) -> None:
    with pytest.raises(ValueError, match="add_images needs an encoder"):
        MatryoshkaIndex(dim=48, coarse_dim=16).add_images(image_files[:1])


def test_texts_and_images_share_one_index(clip_encoder, image_files) -> None:
    index = MatryoshkaIndex(clip_encoder, coarse_dim=16)
    index.add_texts(["a caption", "another caption"], ids=["t0", "t1"])
    index.add_images(image_files[:3], ids=["i0", "i1", "i2"])
    assert index.search("a caption", k=1)[0].id == "t0"
    assert index.search(image_files[2], k=1)[0].id == "i2"
    assert set(index.search("anything", k=5).ids) == {"t0", "t1", "i0", "i1", "i2"}


def test_a_saved_image_index_reloads_and_searches_by_image(
    image_index, clip_encoder, image_files, tmp_path
) -> None:
    image_index.save(tmp_path / "images")
    loaded = MatryoshkaIndex.load(tmp_path / "images", encoder=clip_encoder)
    for path in image_files[:4]:
        assert loaded.search(path, k=3).ids == image_index.search(path, k=3).ids
    with pytest.raises(ValueError, match="outputs 16-dim vectors but this index stores 48"):
        MatryoshkaIndex.load(tmp_path / "images", encoder=clip_encoder.with_truncate_dim(16))


def test_async_add_and_search_by_image(clip_encoder, image_files) -> None:
    async def run() -> list[str]:
        index = MatryoshkaIndex(clip_encoder, coarse_dim=16)
        await index.aadd_images(image_files[:4], ids=["a", "b", "c", "d"])
        return (await index.asearch(image_files[2], k=2)).ids

    assert asyncio.run(run())[0] == "c"


# -- adversarial images ----------------------------------------------------------------------
def _limited(clip_encoder, max_pixels: int):
    """A copy of the shared encoder with a pixel limit (the session fixture stays as it was)."""
    encoder = clip_encoder.with_truncate_dim(None)
    encoder.max_image_pixels = max_pixels
    return encoder


@pytest.mark.parametrize("size", [(0, 0), (5, 0), (0, 7)])
def test_an_empty_image_is_refused_naming_its_size_and_nothing_is_stored(image_index, size) -> None:
    # D17: a 0x0 image raised ZeroDivisionError inside the model's preprocessing
    from PIL import Image

    before = image_index.ids()
    width, height = size
    with pytest.raises(ValueError, match=rf"images\[1\] .* is {width}x{height} pixels: an image"):
        image_index.add_images([noise_images(1)[0], Image.new("RGB", size)], ids=["e0", "e1"])
    assert image_index.ids() == before


def test_an_empty_image_query_is_refused_naming_the_query(image_index) -> None:
    # D17 and D25: the query is named as the query, and its size is given
    from PIL import Image

    with pytest.raises(ValueError, match=r"queries\[0\] .* is 0x0 pixels: an image needs at least"):
        image_index.search(Image.new("RGB", (0, 0)), k=1)


def test_an_oversized_image_query_is_named_as_the_query_not_a_text(clip_encoder) -> None:
    # D25: the error called the image query "texts[0]"
    index = MatryoshkaIndex(_limited(clip_encoder, 100), coarse_dim=16)
    index.add_vectors(np.eye(48, dtype=np.float32)[:3], ids=["a", "b", "c"])
    with pytest.raises(
        ValueError, match=r"^queries\[0\] .* 20x20 = 400 pixels, over the limit of 100"
    ):
        index.search(noise_images(1, size=(20, 20))[0], k=1)


def test_an_oversized_image_query_is_named_on_the_async_path_too(clip_encoder) -> None:
    # D25, through asearch
    index = MatryoshkaIndex(_limited(clip_encoder, 100), coarse_dim=16)
    index.add_vectors(np.eye(48, dtype=np.float32)[:3], ids=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^queries\[0\] .* over the limit of 100 pixels"):
        asyncio.run(index.asearch(noise_images(1, size=(20, 20))[0], k=1))


def test_an_oversized_image_in_a_batched_image_search_is_named_by_its_place(clip_encoder) -> None:
    # D25: search_images names the image by its index in the list
    index = MatryoshkaIndex(_limited(clip_encoder, 100), coarse_dim=16)
    index.add_vectors(np.eye(48, dtype=np.float32)[:3], ids=["a", "b", "c"])
    small, large = noise_images(1, size=(8, 8))[0], noise_images(1, size=(20, 20))[0]
    with pytest.raises(ValueError, match=r"^images\[1\] .* 20x20 = 400 pixels, over the limit"):
        index.search_images([small, large], k=1)


def test_an_oversized_image_is_refused_by_add_images_and_nothing_is_stored(clip_encoder) -> None:
    # D25's companion on the write path: the image is named by its place, nothing is stored
    index = MatryoshkaIndex(_limited(clip_encoder, 100), coarse_dim=16)
    small, large = noise_images(1, size=(8, 8))[0], noise_images(1, size=(20, 20))[0]
    with pytest.raises(ValueError, match=r"^images\[1\] .* over the limit of 100 pixels"):
        index.add_images([small, large], ids=["s", "l"])
    assert len(index) == 0


def test_an_image_id_holding_nul_is_refused_before_any_image_is_read(image_index) -> None:
    # D10 on the image path: the id rule is the one of add_texts
    with pytest.raises(ValueError, match=r"ids\[0\] holds a NUL character \(U\+0000\) at position"):
        image_index.add_images(["/no/such/file.png"], ids=["a\x00b"])
