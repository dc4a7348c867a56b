"""LangChain with images: add_images and image search on the vector store, embed_image."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document

from matryoshka_retrieval import truncate
from matryoshka_retrieval.langchain import MatryoshkaEmbeddings, MatryoshkaVectorStore


@pytest.fixture
def store(clip_encoder, image_files) -> MatryoshkaVectorStore:
    store = MatryoshkaVectorStore(clip_encoder, coarse_dim=16, rescore_multiplier=2)
    store.add_images(
        [str(p) for p in image_files],
        [{"even": i % 2 == 0} for i in range(len(image_files))],
        ids=[f"img{i}" for i in range(len(image_files))],
    )
    return store


def test_added_images_are_documents_holding_their_path(store, image_files) -> None:
    docs = store.get_by_ids(["img2"])
    assert docs == [Document(page_content=str(image_files[2]), metadata={"even": True}, id="img2")]


def test_an_image_finds_itself_first(store, image_files) -> None:
    for i in (0, 3, 6):
        (doc, score), *_ = store.similarity_search_by_image_with_relevance_score(
            str(image_files[i]), k=2
        )
        assert doc.id == f"img{i}" and score == pytest.approx(1.0, abs=1e-5)
    assert store.similarity_search_by_image(str(image_files[5]), k=1)[0].id == "img5"


def test_image_search_takes_a_filter(store, image_files) -> None:
    docs = store.similarity_search_by_image(str(image_files[1]), k=8, filter={"even": True})
    assert {d.id for d in docs} == {"img0", "img2", "img4", "img6"}


def test_a_text_query_searches_the_images(store, clip_encoder, image_files) -> None:
    docs = store.similarity_search_with_score("a diagram of a network", k=8)
    query = clip_encoder.encode_queries(["a diagram of a network"])[0]
    exact = {
        f"img{i}": float(v) for i, v in enumerate(clip_encoder.encode_images(image_files) @ query)
    }
    for doc, score in docs:
        assert score == pytest.approx(exact[doc.id], abs=1e-5)


def test_a_text_that_is_a_path_is_searched_as_text(store, image_files) -> None:
    as_text = store.similarity_search_with_score(str(image_files[0]), k=1)[0][1]
    assert as_text < 0.999  # the image search would score its own image 1.0


def test_a_bad_image_raises_and_keeps_the_store(store, image_files, tmp_path) -> None:
    missing = str(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"images\[1\]: no image file at '.*missing.png'"):
        store.add_images([str(image_files[0]), missing], ids=["new0", "new1"])
    assert store.get_by_ids(["new0", "new1"]) == [] and len(store.index) == len(image_files)


def test_add_images_refuses_a_single_path_and_unknown_options(store, image_files) -> None:
    with pytest.raises(TypeError, match="uris must be a list of image paths, got a single str"):
        store.add_images(str(image_files[0]))
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): \['batch'\]"):
        store.add_images([str(image_files[0])], batch=2)


def test_embed_image_matches_the_encoder(clip_encoder, image_files) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=clip_encoder, truncate_dim=16)
    vectors = embeddings.embed_image([str(p) for p in image_files[:2]])
    expected = truncate(clip_encoder.encode_images(image_files[:2]), 16)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert len(vectors[0]) == 16


def test_a_text_model_store_refuses_images(minilm_encoder, image_files) -> None:
    store = MatryoshkaVectorStore(minilm_encoder, coarse_dim=32)
    with pytest.raises(TypeError, match="embeds texts only"):
        store.add_images([str(image_files[0])])
    assert len(store.index) == 0
