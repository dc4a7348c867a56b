"""as_encoder over real LangChain and LlamaIndex embedding classes."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import as_encoder, truncate
from matryoshka_retrieval.encoders import LangChainEncoder, LlamaIndexEncoder

lc_embeddings = pytest.importorskip("langchain_core.embeddings")
li_base = pytest.importorskip("llama_index.core.base.embeddings.base")

TEXTS = ["list directory contents", "copy files", "show the calendar"]
QUERY_PREFIX = "query: "


class MiniLMLangChain(lc_embeddings.Embeddings):
    """A LangChain Embeddings over the real MiniLM model, with a query prefix."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[tuple[str, int]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(("documents", len(texts)))
        return self.model.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        self.calls.append(("query", 1))
        return self.model.encode([QUERY_PREFIX + text])[0].tolist()


class MiniLMLlamaIndex(li_base.BaseEmbedding):
    """A LlamaIndex BaseEmbedding over the real MiniLM model, with a query prefix."""

    def __init__(self, model: Any) -> None:
        super().__init__(model_name="minilm-li", embed_batch_size=2)
        self._model = model

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._model.encode([QUERY_PREFIX + query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model.encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(texts).tolist()


def _expected(model: Any, texts: list[str], dim: int, prefix: str = "") -> np.ndarray:
    return truncate(model.encode([prefix + t for t in texts]), dim)


def test_langchain_embeddings_are_probed_and_truncated(minilm_model) -> None:
    lc = MiniLMLangChain(minilm_model)
    encoder = as_encoder(lc, truncate_dim=64)
    assert isinstance(encoder, LangChainEncoder)
    assert encoder.full_dim == 384 and encoder.dim == 64
    np.testing.assert_allclose(
        encoder.encode_documents(TEXTS), _expected(minilm_model, TEXTS, 64), atol=1e-5
    )
    np.testing.assert_allclose(
        encoder.encode_queries(TEXTS), _expected(minilm_model, TEXTS, 64, QUERY_PREFIX), atol=1e-5
    )


def test_langchain_given_dim_skips_the_probe(minilm_model) -> None:
    lc = MiniLMLangChain(minilm_model)
    as_encoder(lc, dim=384)
    assert lc.calls == []


def test_langchain_async_path(minilm_model) -> None:
    encoder = as_encoder(MiniLMLangChain(minilm_model), dim=384, truncate_dim=32)
    docs = asyncio.run(encoder.aencode_documents(TEXTS))
    queries = asyncio.run(encoder.aencode_queries(TEXTS))
    np.testing.assert_allclose(docs, _expected(minilm_model, TEXTS, 32), atol=1e-5)
    np.testing.assert_allclose(queries, _expected(minilm_model, TEXTS, 32, QUERY_PREFIX), atol=1e-5)


def test_langchain_fake_embeddings_from_the_framework() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    fake = DeterministicFakeEmbedding(size=48)
    encoder = as_encoder(fake, truncate_dim=12)
    assert encoder.full_dim == 48
    np.testing.assert_allclose(
        encoder.encode_documents(TEXTS), truncate(fake.embed_documents(TEXTS), 12), atol=1e-6
    )


def test_llama_index_embedding_is_probed_and_truncated(minilm_model) -> None:
    li = MiniLMLlamaIndex(minilm_model)
    encoder = as_encoder(li, truncate_dim=64)
    assert isinstance(encoder, LlamaIndexEncoder)
    assert encoder.model_name == "minilm-li"
    assert encoder.full_dim == 384
    np.testing.assert_allclose(
        encoder.encode_documents(TEXTS), _expected(minilm_model, TEXTS, 64), atol=1e-5
    )
    np.testing.assert_allclose(
        encoder.encode_queries(TEXTS), _expected(minilm_model, TEXTS, 64, QUERY_PREFIX), atol=1e-5
    )


def test_llama_index_async_path(minilm_model) -> None:
    encoder = as_encoder(MiniLMLlamaIndex(minilm_model), truncate_dim=16)
    docs = asyncio.run(encoder.aencode_documents(TEXTS))
    queries = asyncio.run(encoder.aencode_queries(TEXTS))
    np.testing.assert_allclose(docs, _expected(minilm_model, TEXTS, 16), atol=1e-5)
    np.testing.assert_allclose(queries, _expected(minilm_model, TEXTS, 16, QUERY_PREFIX), atol=1e-5)


def test_llama_index_mock_embedding_from_the_framework() -> None:
    from llama_index.core.embeddings import MockEmbedding

    encoder = as_encoder(MockEmbedding(embed_dim=10), truncate_dim=5)
    out = encoder.encode_documents(TEXTS)
    assert out.shape == (3, 5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
