from __future__ import annotations

import asyncio

import numpy as np
import pytest

from matryoshka_retrieval import DEFAULT_MODEL, SentenceTransformerEncoder, truncate

TEXTS = ["list directory contents", "copy files and directories", "print a calendar"]


def test_default_model_loads_offline(minilm_encoder: SentenceTransformerEncoder) -> None:
    assert minilm_encoder.model_name == DEFAULT_MODEL
    assert minilm_encoder.full_dim == 384
    assert minilm_encoder.dim == 384
    assert minilm_encoder.truncate_dim is None


def test_truncate_dim_equals_slicing_the_full_output(minilm_model) -> None:
    full = SentenceTransformerEncoder(minilm_model).encode_documents(TEXTS)
    short = SentenceTransformerEncoder(minilm_model, truncate_dim=64).encode_documents(TEXTS)
    reference = minilm_model.encode(TEXTS, convert_to_numpy=True)
    manual = reference[:, :64] / np.linalg.norm(reference[:, :64], axis=1, keepdims=True)
    assert short.shape == (3, 64)
    assert short.dtype == np.float32
    np.testing.assert_allclose(short, manual, atol=1e-5)
    np.testing.assert_allclose(short, truncate(full, 64), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)


def test_prompts_are_applied_to_their_side(minilm_model) -> None:
    encoder = SentenceTransformerEncoder(
        minilm_model, query_prompt="search_query: ", document_prompt="search_document: "
    )
    queries = encoder.encode_queries(TEXTS)
    documents = encoder.encode_documents(TEXTS)
    expected_q = minilm_model.encode(
        [f"search_query: {t}" for t in TEXTS], normalize_embeddings=True
    )
    expected_d = minilm_model.encode(
        [f"search_document: {t}" for t in TEXTS], normalize_embeddings=True
    )
    np.testing.assert_allclose(queries, expected_q, atol=1e-5)
    np.testing.assert_allclose(documents, expected_d, atol=1e-5)
    assert not np.allclose(queries, documents)


def test_model_prompts_are_used_by_default(minilm_model) -> None:
    saved = dict(minilm_model.prompts)
    minilm_model.prompts = {"query": "search_query: ", "document": "search_document: "}
    try:
        encoder = SentenceTransformerEncoder(minilm_model)
        assert encoder.query_prompt == "search_query: "
        assert encoder.document_prompt == "search_document: "
        expected = minilm_model.encode(["search_query: hello world"], normalize_embeddings=True)
        np.testing.assert_allclose(encoder.encode_queries(["hello world"]), expected, atol=1e-5)
    finally:
        minilm_model.prompts = saved


def test_no_prompt_means_plain_text(minilm_encoder: SentenceTransformerEncoder) -> None:
    np.testing.assert_allclose(
        minilm_encoder.encode_queries(TEXTS), minilm_encoder.encode_documents(TEXTS), atol=1e-6
    )


def test_async_twins_match_sync(minilm_encoder: SentenceTransformerEncoder) -> None:
    encoder = minilm_encoder.with_truncate_dim(128)

    async def run() -> tuple[np.ndarray, np.ndarray]:
        return await asyncio.gather(
            encoder.aencode_documents(TEXTS), encoder.aencode_queries(TEXTS)
        )

    docs, queries = asyncio.run(run())
    np.testing.assert_allclose(docs, encoder.encode_documents(TEXTS), atol=1e-6)
    np.testing.assert_allclose(queries, encoder.encode_queries(TEXTS), atol=1e-6)


def test_with_truncate_dim_shares_the_model(minilm_encoder: SentenceTransformerEncoder) -> None:
    short = minilm_encoder.with_truncate_dim(32)
    assert short.model is minilm_encoder.model
    assert short.dim == 32 and minilm_encoder.dim == 384


def test_model_truncate_dim_is_the_default(minilm_model) -> None:
    minilm_model.truncate_dim = 48
    try:
        encoder = SentenceTransformerEncoder(minilm_model)
        assert encoder.full_dim == 384
        assert encoder.encode_documents(TEXTS).shape == (3, 48)
    finally:
        minilm_model.truncate_dim = None


def test_truncate_dim_above_model_dim_names_the_limit(minilm_model) -> None:
    with pytest.raises(ValueError, match=r"truncate_dim=500 .* embedding dimension 384"):
        SentenceTransformerEncoder(minilm_model, truncate_dim=500)


def test_model_given_by_path(minilm_model) -> None:
    from matryoshka_retrieval.encoders import default_model_path

    path = default_model_path()
    assert path is not None
    encoder = SentenceTransformerEncoder(str(path), truncate_dim=16, device="cpu")
    assert encoder.model_name == str(path)
    np.testing.assert_allclose(
        encoder.encode_documents(TEXTS),
        truncate(minilm_model.encode(TEXTS), 16),
        atol=1e-5,
    )


def test_wrong_model_type_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"SentenceTransformer, got int"):
        SentenceTransformerEncoder(42)


def test_max_seq_length_truncates_long_inputs(minilm_model) -> None:
    saved = minilm_model.max_seq_length
    try:
        long_text = "files " * 300
        SentenceTransformerEncoder(minilm_model, max_seq_length=8)
        assert minilm_model.max_seq_length == 8
        short = minilm_model.encode(["files " * 20], normalize_embeddings=True)
        encoder = SentenceTransformerEncoder(minilm_model, max_seq_length=8)
        np.testing.assert_allclose(encoder.encode_documents([long_text]), short, atol=1e-5)
        with pytest.raises(ValueError, match=r"max_seq_length must be a positive int, got 0"):
            SentenceTransformerEncoder(minilm_model, max_seq_length=0)
    finally:
        minilm_model.max_seq_length = saved
