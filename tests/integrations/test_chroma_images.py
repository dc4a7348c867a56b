"""Chroma with images: the embedding function over a tiny random CLIP model, real Chroma."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matryoshka_retrieval import MatryoshkaIndex, SentenceTransformerEncoder, truncate

chromadb = pytest.importorskip("chromadb")
from chromadb.utils.data_loaders import ImageLoader  # noqa: E402

from matryoshka_retrieval.chroma import (  # noqa: E402
    MatryoshkaEmbeddingFunction,
    get_or_create_collection,
)


def _arrays(paths: list[Path]) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def test_images_are_added_and_queried_by_image_and_by_text(
    clip_encoder, image_files, tmp_path
) -> None:
    ef = MatryoshkaEmbeddingFunction(clip_encoder, truncate_dim=16)
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    photos = get_or_create_collection(client, "photos", ef)
    ids = [f"img{i}" for i in range(len(image_files))]
    photos.add(ids=ids, images=_arrays(image_files))
    stored = photos.get(ids=["img3"], include=["embeddings"])["embeddings"][0]
    expected = truncate(clip_encoder.encode_images([image_files[3]]), 16)[0]
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    found = photos.query(query_images=_arrays(image_files[:3]), n_results=1)["ids"]
    assert found == [["img0"], ["img1"], ["img2"]]
    by_text = photos.query(query_texts=["a photo of a dog"], n_results=3)
    query = truncate(clip_encoder.encode_queries(["a photo of a dog"]), 16)[0]
    best = np.argsort(-(truncate(clip_encoder.encode_images(image_files), 16) @ query))[:3]
    assert by_text["ids"] == [[ids[i] for i in best]]


def test_uris_go_through_chroma_image_loader(clip_encoder, image_files, tmp_path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    photos = client.create_collection(
        "photos",
        embedding_function=MatryoshkaEmbeddingFunction(clip_encoder),
        data_loader=ImageLoader(),
        metadata={"hnsw:space": "cosine"},
    )
    photos.add(ids=["a", "b", "c"], uris=[str(p) for p in image_files[:3]])
    result = photos.query(query_uris=[str(image_files[1])], n_results=1, include=["uris"])
    assert result["ids"] == [["b"]] and result["uris"] == [[str(image_files[1])]]


def test_grayscale_and_single_channel_arrays_are_images(clip_encoder) -> None:
    ef = MatryoshkaEmbeddingFunction(clip_encoder)
    gray = np.arange(32 * 40, dtype=np.uint8).reshape(32, 40) % 251
    vectors = ef([gray, gray[:, :, None].astype(np.int64)])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_allclose(ef([rgb])[0], vectors[0], atol=1e-5)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.full((8, 8, 3), 300, dtype=np.int64), r"images\[0\] has values outside 0..255"),
        (np.zeros((8, 8, 2), dtype=np.uint8), r"images\[0\] has shape \(8, 8, 2\)"),
        (np.full((8, 8, 3), np.nan), r"images\[0\] has values outside 0..255"),
    ],
)
def test_a_bad_image_array_is_named_and_nothing_is_added(
    clip_encoder, image_files, tmp_path, array, match
) -> None:
    photos = get_or_create_collection(
        chromadb.PersistentClient(path=str(tmp_path / "db")),
        "photos",
        MatryoshkaEmbeddingFunction(clip_encoder),
    )
    photos.add(ids=["kept"], images=_arrays(image_files[:1]))
    with pytest.raises(ValueError, match=match):
        photos.add(ids=["bad"], images=[array])
    assert photos.get()["ids"] == ["kept"]


def test_a_text_model_refuses_chroma_images(minilm_encoder) -> None:
    ef = MatryoshkaEmbeddingFunction(minilm_encoder)
    with pytest.raises(TypeError, match=r"texts\[0\] is an image .*embeds texts only"):
        ef([np.zeros((8, 8, 3), dtype=np.uint8)])


def test_a_persisted_image_collection_reopens_with_the_clip_model(
    clip_path, image_files, tmp_path
) -> None:
    encoder = SentenceTransformerEncoder(str(clip_path), device="cpu")
    path = str(tmp_path / "db")
    photos = get_or_create_collection(
        chromadb.PersistentClient(path=path), "photos", MatryoshkaEmbeddingFunction(encoder)
    )
    photos.add(ids=["a", "b"], images=_arrays(image_files[:2]))
    reopened = chromadb.PersistentClient(path=path).get_collection("photos")
    assert reopened.query(query_images=_arrays(image_files[1:2]), n_results=1)["ids"] == [["b"]]


def test_the_index_chroma_backend_holds_image_prefixes(clip_encoder, image_files, tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    index = MatryoshkaIndex(
        clip_encoder, coarse_dim=16, backend="chroma", chroma_client=client, collection="photos"
    )
    index.add_images(image_files, metadatas=[{"n": i} for i in range(len(image_files))])
    hits = index.search(image_files[4], k=2, filter={"n": {"$gte": 3}})
    assert hits[0].text == str(image_files[4])
    assert all(h.metadata["n"] >= 3 for h in hits)
