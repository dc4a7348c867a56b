"""The LangChain integration: the official langchain-tests suites, LCEL, and our own behaviour."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from matryoshka_retrieval import Encoder, MatryoshkaIndex, as_encoder, truncate
from matryoshka_retrieval.langchain import (
    MatryoshkaEmbeddings,
    MatryoshkaRetriever,
    MatryoshkaVectorStore,
)
from pg_server import pg

UNIX = [
    ("ls", "List information about the files in the current directory.", "files", 1971),
    ("cp", "Copy files and directories from a source to a destination.", "files", 1971),
    ("cal", "Display a calendar for the current month.", "time", 1975),
    ("df", "Report file system disk space usage.", "disk", 1973),
    ("date", "Print or set the system date and time.", "time", 1971),
    ("du", "Estimate file space usage of each directory.", "disk", 1974),
]
UNIX_IDS = [id_ for id_, *_ in UNIX]
UNIX_TEXTS = [text for _, text, *_ in UNIX]
UNIX_METADATAS: list[dict[str, Any]] = [{"topic": t, "year": y} for *_, t, y in UNIX]
DISK_QUESTION = "how much free space is left on my disk?"


def unix_documents() -> list[Document]:
    return [
        Document(id=id_, page_content=text, metadata=dict(meta))
        for id_, text, meta in zip(UNIX_IDS, UNIX_TEXTS, UNIX_METADATAS, strict=True)
    ]


@pytest.fixture(scope="module")
def unix_index(minilm_encoder: Encoder) -> MatryoshkaIndex:
    """A read-only index of the UNIX corpus (full 384-dim vectors, 64-dim coarse stage)."""
    index = MatryoshkaIndex(minilm_encoder, coarse_dim=64, rescore_multiplier=2, exact_below=0)
    index.add_texts(UNIX_TEXTS, ids=UNIX_IDS, metadatas=UNIX_METADATAS)
    return index


@pytest.fixture
def unix_store(minilm_encoder: Encoder) -> MatryoshkaVectorStore:
    """A fresh vector store holding the UNIX corpus, for tests that change it."""
    store = MatryoshkaVectorStore(minilm_encoder, coarse_dim=64)
    store.add_documents(unix_documents())
    return store


# == the official langchain-tests suites ======================================================
class _MiniLMEmbeddingsParams:
    """MatryoshkaEmbeddings over the real offline all-MiniLM-L6-v2, truncated to 64 dims."""

    @pytest.fixture(autouse=True)
    def _bind_encoder(self, minilm_encoder: Encoder) -> None:
        # the suites build the model from properties, which cannot take fixtures
        self._encoder = minilm_encoder

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return MatryoshkaEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"encoder": self._encoder, "truncate_dim": 64}


class TestMatryoshkaEmbeddingsUnitStandard(_MiniLMEmbeddingsParams, EmbeddingsUnitTests):
    pass


class TestMatryoshkaEmbeddingsIntegrationStandard(
    _MiniLMEmbeddingsParams, EmbeddingsIntegrationTests
):
    pass


class TestMatryoshkaRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _bind_index(self, unix_index: MatryoshkaIndex) -> None:
        self._index = unix_index

    @property
    def retriever_constructor(self) -> type[MatryoshkaRetriever]:
        return MatryoshkaRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": self._index}

    @property
    def retriever_query_example(self) -> str:
        return DISK_QUESTION


class TestMatryoshkaVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        # The suite's embeddings have 6 dims, below the default coarse_dim of 64.
        yield MatryoshkaVectorStore(self.get_embeddings(), coarse_dim=4)


class TestMatryoshkaVectorStoreOnPostgres(VectorStoreIntegrationTests):
    """The same suite over an index kept on a real PostgreSQL + pgvector server."""

    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        yield MatryoshkaVectorStore(self.get_embeddings(), coarse_dim=4, **pg())


# == MatryoshkaEmbeddings =====================================================================
def test_embeddings_are_renormalised_prefixes_of_the_full_model(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=64)
    vectors = np.asarray(embeddings.embed_documents(UNIX_TEXTS[:3]))
    assert vectors.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    full = minilm_encoder.encode_documents(UNIX_TEXTS[:3])
    assert full.shape[1] == 384
    np.testing.assert_allclose(vectors, truncate(full, 64), atol=1e-5)


def test_embed_query_is_unit_norm_at_truncate_dim(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=32)
    vector = np.asarray(embeddings.embed_query(DISK_QUESTION))
    assert vector.shape == (32,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert embeddings.output_dim == 32


def test_truncate_dim_larger_than_the_model_names_the_limit(minilm_encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=r"truncate_dim=512 is out of range.*dimension 384"):
        MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=512)


def test_truncate_dim_must_be_an_int(minilm_encoder: Encoder) -> None:
    with pytest.raises(TypeError, match="truncate_dim must be an int or None, got float"):
        MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=64.0)


def test_dim_that_disagrees_with_the_encoder_is_rejected(minilm_encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="dim=768 does not match the width 384"):
        MatryoshkaEmbeddings(encoder=minilm_encoder, dim=768)


def test_a_function_needs_dim() -> None:
    with pytest.raises(TypeError, match="needs dim="):
        MatryoshkaEmbeddings(encoder=lambda texts: np.ones((len(texts), 8)))


def test_empty_text_is_rejected_naming_its_position(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=64)
    with pytest.raises(ValueError, match=r"texts\[1\] is an empty string"):
        embeddings.embed_documents(["fine", "  "])


def test_unknown_field_is_rejected(minilm_encoder: Encoder) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        MatryoshkaEmbeddings(encoder=minilm_encoder, model="all-MiniLM-L6-v2")


def test_as_encoder_unwraps_the_encoder(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=64)
    assert as_encoder(embeddings) is embeddings.encoder
    assert MatryoshkaIndex(embeddings, coarse_dim=32).dim == 64


def test_with_truncate_dim_copies_and_the_model_is_frozen(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=64)
    shorter = embeddings.with_truncate_dim(16)
    assert (shorter.truncate_dim, len(shorter.embed_query("x"))) == (16, 16)
    assert embeddings.truncate_dim == 64 and embeddings.encoder.dim == 64
    with pytest.raises(ValidationError, match="frozen"):
        embeddings.truncate_dim = 8


def test_wraps_another_langchain_embeddings() -> None:
    inner = DeterministicFakeEmbedding(size=32)
    embeddings = MatryoshkaEmbeddings(encoder=inner, truncate_dim=8)
    texts = ["alpha", "beta"]
    np.testing.assert_allclose(
        embeddings.embed_documents(texts), truncate(inner.embed_documents(texts), 8), atol=1e-6
    )
    np.testing.assert_allclose(
        embeddings.embed_query("gamma"), truncate(inner.embed_query("gamma"), 8), atol=1e-6
    )


class AsyncOnlyEmbeddings(Embeddings):
    """Fails on the sync path, so a passing async call proves no sync call was made."""

    def __init__(self) -> None:
        self.inner = DeterministicFakeEmbedding(size=16)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise AssertionError("the sync embed_documents was called")

    def embed_query(self, text: str) -> list[float]:
        raise AssertionError("the sync embed_query was called")

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


async def test_async_methods_use_the_wrapped_embedders_async_path() -> None:
    embeddings = MatryoshkaEmbeddings(encoder=AsyncOnlyEmbeddings(), dim=16, truncate_dim=4)
    documents = await embeddings.aembed_documents(["a", "b"])
    query = await embeddings.aembed_query("c")
    expected = truncate(DeterministicFakeEmbedding(size=16).embed_documents(["a", "b"]), 4)
    np.testing.assert_allclose(documents, expected, atol=1e-6)
    assert len(query) == 4
    with pytest.raises(AssertionError, match="sync embed_query was called"):
        embeddings.embed_query("c")


async def test_async_matches_sync(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=64)
    np.testing.assert_allclose(
        await embeddings.aembed_documents(UNIX_TEXTS[:2]),
        embeddings.embed_documents(UNIX_TEXTS[:2]),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        await embeddings.aembed_query(DISK_QUESTION),
        embeddings.embed_query(DISK_QUESTION),
        atol=1e-5,
    )


# == MatryoshkaRetriever ======================================================================
def test_retriever_documents_carry_ids_and_scores(
    unix_index: MatryoshkaIndex, minilm_encoder: Encoder
) -> None:
    docs = MatryoshkaRetriever(index=unix_index, k=3).invoke(DISK_QUESTION)
    assert docs[0].id == "df"
    assert [d.page_content for d in docs] == [UNIX_TEXTS[UNIX_IDS.index(d.id)] for d in docs]
    query = minilm_encoder.encode_queries([DISK_QUESTION])[0]
    vectors = minilm_encoder.encode_documents([d.page_content for d in docs])
    np.testing.assert_allclose([d.metadata["score"] for d in docs], vectors @ query, atol=1e-5)
    coarse = truncate(vectors, 64) @ truncate(query, 64)
    np.testing.assert_allclose([d.metadata["coarse_score"] for d in docs], coarse, atol=1e-5)
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert docs[0].metadata["topic"] == "disk"


def test_retriever_does_not_change_stored_metadata(unix_index: MatryoshkaIndex) -> None:
    MatryoshkaRetriever(index=unix_index, k=2).invoke(DISK_QUESTION)
    assert unix_index.get(["df"])[0].metadata == {"topic": "disk", "year": 1973}


def test_retriever_filter_field_and_per_call_override(unix_index: MatryoshkaIndex) -> None:
    retriever = MatryoshkaRetriever(index=unix_index, k=6, filter={"topic": "time"})
    assert {d.id for d in retriever.invoke(DISK_QUESTION)} == {"cal", "date"}
    newer = retriever.invoke(DISK_QUESTION, filter={"year": {"$gte": 1974}})
    assert {d.id for d in newer} == {"cal", "du"}


async def test_retriever_ainvoke_matches_invoke(unix_index: MatryoshkaIndex) -> None:
    retriever = MatryoshkaRetriever(index=unix_index, k=3, filter={"topic": {"$ne": "files"}})
    sync = retriever.invoke(DISK_QUESTION)
    result = await retriever.ainvoke(DISK_QUESTION, k=2)
    assert [d.id for d in result] == [d.id for d in sync[:2]]
    assert "files" not in {d.metadata["topic"] for d in sync}


def test_retriever_rejects_a_bad_filter(unix_index: MatryoshkaIndex) -> None:
    with pytest.raises(ValueError, match=r"unknown filter operator '\$regex'"):
        MatryoshkaRetriever(index=unix_index, filter={"topic": {"$regex": "d.*"}})
    retriever = MatryoshkaRetriever(index=unix_index)
    with pytest.raises(ValueError, match=r"\$in on 'topic' needs a non-empty list"):
        retriever.invoke(DISK_QUESTION, filter={"topic": {"$in": []}})


def test_retriever_rejects_bad_k(unix_index: MatryoshkaIndex) -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        MatryoshkaRetriever(index=unix_index, k=0)
    with pytest.raises(ValueError, match=r"k must be (an int of at least 1|a positive int), got 0"):
        MatryoshkaRetriever(index=unix_index).invoke(DISK_QUESTION, k=0)


def test_retriever_needs_an_index_with_an_encoder() -> None:
    with pytest.raises(ValueError, match="needs an index with an encoder"):
        MatryoshkaRetriever(index=MatryoshkaIndex(dim=8, coarse_dim=4))


def test_from_documents_keeps_ids_and_the_search_configuration(minilm_encoder: Encoder) -> None:
    docs = unix_documents()
    docs[0] = Document(page_content=docs[0].page_content, metadata=docs[0].metadata)  # no id
    retriever = MatryoshkaRetriever.from_documents(
        docs, minilm_encoder, coarse_dim=32, rescore_multiplier=3, precision="int8", k=2
    )
    index = retriever.index
    assert (index.coarse_dim, index.rescore_multiplier, index.precision) == (32, 3, "int8")
    assert len(index) == len(docs)
    assert [r.id for r in index.get(UNIX_IDS[1:])] == UNIX_IDS[1:]
    assert retriever.invoke(DISK_QUESTION)[0].id == "df"


def test_from_texts_adds_to_an_existing_index(unix_index: MatryoshkaIndex) -> None:
    index = MatryoshkaIndex(unix_index.encoder, coarse_dim=32)
    retriever = MatryoshkaRetriever.from_texts(
        UNIX_TEXTS, index=index, ids=UNIX_IDS, metadatas=UNIX_METADATAS, k=1
    )
    assert retriever.index is index and len(index) == len(UNIX_TEXTS)
    assert [d.id for d in retriever.invoke(DISK_QUESTION)] == ["df"]
    with pytest.raises(TypeError, match=r"\['rescore_multiplier'\] cannot be combined with index="):
        MatryoshkaRetriever.from_texts(UNIX_TEXTS, index=index, rescore_multiplier=2)


def test_from_texts_forwards_any_index_option(minilm_encoder: Encoder) -> None:
    retriever = MatryoshkaRetriever.from_texts(
        UNIX_TEXTS, minilm_encoder, ids=UNIX_IDS, backend="hnsw", ef_search=16, stages=[(32, 4)]
    )
    index = retriever.index
    assert (index.backend, index.config.ef_search, index.stages) == ("hnsw", 16, [(32, 4)])
    assert retriever.invoke(DISK_QUESTION)[0].id == "df"


def test_from_texts_with_truncated_embeddings_stores_prefixes(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=128)
    retriever = MatryoshkaRetriever.from_texts(
        UNIX_TEXTS, embeddings, ids=UNIX_IDS, metadatas=UNIX_METADATAS, coarse_dim=32, k=1
    )
    assert retriever.index.dim == 128
    (record,) = retriever.index.get(["df"], include_vectors=True)
    assert record.vector is not None and record.vector.shape == (128,)
    assert np.linalg.norm(record.vector) == pytest.approx(1.0, abs=1e-5)
    assert [d.id for d in retriever.invoke(DISK_QUESTION)] == ["df"]


def test_from_texts_coarse_dim_above_truncate_dim_names_the_limit(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=32)
    with pytest.raises(
        ValueError, match=r"coarse_dim / stage dim 64 is out of range.*dimension 32"
    ):
        MatryoshkaRetriever.from_texts(UNIX_TEXTS, embeddings, coarse_dim=64)


async def test_afrom_texts_builds_the_same_retriever(minilm_encoder: Encoder) -> None:
    retriever = await MatryoshkaRetriever.afrom_texts(
        UNIX_TEXTS, minilm_encoder, ids=UNIX_IDS, metadatas=UNIX_METADATAS, k=2
    )
    docs = await retriever.ainvoke(DISK_QUESTION)
    assert docs[0].id == "df" and len(docs) == 2
    from_docs = await MatryoshkaRetriever.afrom_documents(unix_documents(), minilm_encoder, k=1)
    assert [d.id for d in await from_docs.ainvoke(DISK_QUESTION)] == ["df"]


# == LCEL =====================================================================================
class _PromptCapture(BaseCallbackHandler):
    """Records the messages each chat model run received."""

    run_inline = True

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.prompts.extend(messages)


def _format_docs(docs: list[Document]) -> str:
    return "\n".join(f"[{doc.id}] {doc.page_content}" for doc in docs)


def _rag_chain(retriever: MatryoshkaRetriever, answer: str) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from this context only:\n{context}"), ("human", "{question}")]
    )
    llm = GenericFakeChatModel(messages=iter([AIMessage(content=answer)]))
    return (
        {"context": retriever | _format_docs, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )


def test_lcel_chain_puts_the_retrieved_context_in_the_prompt(unix_index: MatryoshkaIndex) -> None:
    capture = _PromptCapture()
    chain = _rag_chain(MatryoshkaRetriever(index=unix_index, k=2), "Run df -h.")
    answer = chain.invoke(DISK_QUESTION, config={"callbacks": [capture]})
    assert answer == "Run df -h."
    (messages,) = capture.prompts
    system, human = messages
    assert f"[df] {UNIX_TEXTS[UNIX_IDS.index('df')]}" in str(system.content)
    assert "calendar" not in str(system.content)
    assert human.content == DISK_QUESTION


async def test_lcel_chain_async(unix_index: MatryoshkaIndex) -> None:
    capture = _PromptCapture()
    retriever = MatryoshkaRetriever(index=unix_index, k=1, filter={"topic": "time"})
    chain = _rag_chain(retriever, "Use date.")
    answer = await chain.ainvoke("what time is it?", config={"callbacks": [capture]})
    assert answer == "Use date."
    (messages,) = capture.prompts
    context = str(messages[0].content)
    assert "[date]" in context or "[cal]" in context
    assert "disk" not in context


# == MatryoshkaVectorStore ====================================================================
def test_store_filter_in_chroma_syntax(unix_store: MatryoshkaVectorStore) -> None:
    docs = unix_store.similarity_search(DISK_QUESTION, k=6, filter={"topic": "time"})
    assert {d.id for d in docs} == {"cal", "date"}
    docs = unix_store.similarity_search(
        DISK_QUESTION, k=6, filter={"$and": [{"topic": "disk"}, {"year": {"$lt": 1974}}]}
    )
    assert [d.id for d in docs] == ["df"]


def test_store_scores_are_cosine_and_relevance_in_unit_interval(
    unix_store: MatryoshkaVectorStore, minilm_encoder: Encoder
) -> None:
    pairs = unix_store.similarity_search_with_score(DISK_QUESTION, k=6)
    query = minilm_encoder.encode_queries([DISK_QUESTION])[0]
    vectors = minilm_encoder.encode_documents([d.page_content for d, _ in pairs])
    np.testing.assert_allclose([s for _, s in pairs], vectors @ query, atol=1e-5)
    assert all("score" not in d.metadata for d, _ in pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LangChain warns for relevance outside [0, 1]
        relevance = unix_store.similarity_search_with_relevance_scores(DISK_QUESTION, k=6)
    np.testing.assert_allclose([r for _, r in relevance], [(s + 1) / 2 for _, s in pairs])


def test_store_custom_relevance_score_fn(minilm_encoder: Encoder) -> None:
    store = MatryoshkaVectorStore(
        minilm_encoder, relevance_score_fn=lambda s: max(s, 0.0), coarse_dim=64
    )
    store.add_texts(UNIX_TEXTS, UNIX_METADATAS, ids=UNIX_IDS)
    (pair,) = store.similarity_search_with_score(DISK_QUESTION, k=1)
    (relevant,) = store.similarity_search_with_relevance_scores(DISK_QUESTION, k=1)
    assert relevant[1] == pytest.approx(pair[1])


def test_store_score_threshold_retriever(unix_store: MatryoshkaVectorStore) -> None:
    relevance = unix_store.similarity_search_with_relevance_scores(DISK_QUESTION, k=6)
    threshold = (relevance[1][1] + relevance[2][1]) / 2
    retriever = unix_store.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"score_threshold": threshold, "k": 6},
    )
    assert [d.id for d in retriever.invoke(DISK_QUESTION)] == [d.id for d, _ in relevance[:2]]


def test_store_as_retriever_passes_k_and_filter(unix_store: MatryoshkaVectorStore) -> None:
    retriever = unix_store.as_retriever(search_kwargs={"k": 1, "filter": {"topic": "files"}})
    docs = retriever.invoke(DISK_QUESTION)
    assert len(docs) == 1 and docs[0].metadata["topic"] == "files"


@pytest.fixture
def duplicate_store(minilm_encoder: Encoder) -> MatryoshkaVectorStore:
    store = MatryoshkaVectorStore(minilm_encoder, coarse_dim=64)
    store.add_texts(
        [
            "The cat sat on the mat.",
            "The cat sat on the mat.",
            "A kitten sleeps on a rug.",
            "Stock markets fell sharply today.",
        ],
        ids=["cat1", "cat2", "kitten", "stocks"],
    )
    return store


def test_mmr_avoids_duplicates(duplicate_store: MatryoshkaVectorStore) -> None:
    query = "a cat sitting on a mat"
    plain = [d.id for d in duplicate_store.similarity_search(query, k=2)]
    assert set(plain) == {"cat1", "cat2"}
    mmr = [d.id for d in duplicate_store.max_marginal_relevance_search(query, k=2, fetch_k=4)]
    assert len(mmr) == 2 and len({"cat1", "cat2"} & set(mmr)) == 1
    embedding = duplicate_store.embeddings
    assert embedding is not None
    by_vector = duplicate_store.max_marginal_relevance_search_by_vector(
        embedding.embed_query(query), k=2, fetch_k=4
    )
    assert [d.id for d in by_vector] == mmr


async def test_mmr_async_matches_sync(duplicate_store: MatryoshkaVectorStore) -> None:
    query = "a cat sitting on a mat"
    sync = duplicate_store.max_marginal_relevance_search(query, k=3, fetch_k=4, lambda_mult=0.3)
    result = await duplicate_store.amax_marginal_relevance_search(
        query, k=3, fetch_k=4, lambda_mult=0.3
    )
    assert [d.id for d in result] == [d.id for d in sync]
    retriever = duplicate_store.as_retriever(
        search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4}
    )
    assert len({"cat1", "cat2"} & {d.id for d in await retriever.ainvoke(query)}) == 1


def test_mmr_validates_its_arguments(unix_store: MatryoshkaVectorStore) -> None:
    with pytest.raises(ValueError, match="fetch_k=2 must be at least k=3"):
        unix_store.max_marginal_relevance_search(DISK_QUESTION, k=3, fetch_k=2)
    with pytest.raises(ValueError, match=r"lambda_mult must be between 0 .*got 1\.5"):
        unix_store.max_marginal_relevance_search(DISK_QUESTION, lambda_mult=1.5)


def test_store_vector_search_checks_the_width(unix_store: MatryoshkaVectorStore) -> None:
    query = unix_store.index.encoder.encode_queries([DISK_QUESTION])[0]
    assert [d.id for d in unix_store.similarity_search_by_vector(query.tolist(), k=1)] == ["df"]
    with pytest.raises(ValueError, match="queries have 64 dims but this index stores 384-dim"):
        unix_store.similarity_search_by_vector(query[:64].tolist(), k=1)


async def test_store_async_vector_search(unix_store: MatryoshkaVectorStore) -> None:
    query = unix_store.index.encoder.encode_queries([DISK_QUESTION])[0]
    docs = await unix_store.asimilarity_search_by_vector(query.tolist(), k=2)
    assert [d.id for d in docs] == [d.id for d in unix_store.similarity_search(DISK_QUESTION, k=2)]


def test_store_rejects_unknown_keyword_arguments(unix_store: MatryoshkaVectorStore) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): \['where'\]"):
        unix_store.similarity_search(DISK_QUESTION, k=1, where={"topic": "disk"})


def test_store_rejects_nested_metadata_naming_the_key(unix_store: MatryoshkaVectorStore) -> None:
    doc = Document(page_content="Show running processes.", metadata={"tags": ["ps"]})
    with pytest.raises(TypeError, match=r"metadatas\[0\]\['tags'\] must be a str, int, float"):
        unix_store.add_documents([doc])


def test_store_delete_needs_ids_and_ignores_missing(unix_store: MatryoshkaVectorStore) -> None:
    with pytest.raises(ValueError, match="delete needs the ids"):
        unix_store.delete()
    assert unix_store.delete(["df", "no-such-id"]) is True
    assert unix_store.get_by_ids(["df", "du"]) == [
        Document(id="du", page_content=UNIX_TEXTS[5], metadata=UNIX_METADATAS[5])
    ]


@pytest.mark.parametrize("ids", [[5], ["df", 5]])
def test_store_delete_refuses_ids_that_are_not_strings(
    unix_store: MatryoshkaVectorStore, ids: list[Any]
) -> None:
    with pytest.raises(TypeError, match=r"ids\[\d\] must be a str, got int: 5"):
        unix_store.delete(ids)
    assert len(unix_store.index) == len(UNIX_IDS)  # "5" was not looked up, df not deleted


def test_store_add_refuses_ids_that_are_not_strings(unix_store: MatryoshkaVectorStore) -> None:
    with pytest.raises(TypeError, match=r"ids\[0\] must be a str, got int: 7"):
        unix_store.add_texts(["Show running processes."], ids=[7])


def test_store_from_texts_adds_to_an_existing_index(minilm_encoder: Encoder) -> None:
    index = MatryoshkaIndex(minilm_encoder, coarse_dim=64)
    store = MatryoshkaVectorStore.from_texts(
        UNIX_TEXTS, None, UNIX_METADATAS, ids=UNIX_IDS, index=index
    )
    assert store.index is index and len(index) == len(UNIX_IDS)


def test_store_over_an_existing_index(minilm_encoder: Encoder) -> None:
    index = MatryoshkaIndex(minilm_encoder, coarse_dim=64)
    index.add_texts(UNIX_TEXTS, ids=UNIX_IDS, metadatas=UNIX_METADATAS)
    store = MatryoshkaVectorStore(index=index)
    assert store.index is index
    assert [d.id for d in store.similarity_search(DISK_QUESTION, k=1)] == ["df"]
    embeddings = store.embeddings
    assert isinstance(embeddings, MatryoshkaEmbeddings) and embeddings.encoder is index.encoder
    with pytest.raises(TypeError, match=r"\['coarse_dim'\] cannot be combined with index="):
        MatryoshkaVectorStore(index=index, coarse_dim=32)


def test_store_needs_an_embedding_or_an_index() -> None:
    with pytest.raises(ValueError, match=r"needs embedding= .* or index="):
        MatryoshkaVectorStore()


def test_store_embeddings_is_the_langchain_object_given() -> None:
    fake = DeterministicFakeEmbedding(size=8)
    assert MatryoshkaVectorStore(fake, coarse_dim=4).embeddings is fake


def test_store_from_texts_honours_truncate_dim(minilm_encoder: Encoder) -> None:
    embeddings = MatryoshkaEmbeddings(encoder=minilm_encoder, truncate_dim=128)
    store = MatryoshkaVectorStore.from_texts(
        UNIX_TEXTS, embeddings, UNIX_METADATAS, ids=UNIX_IDS, coarse_dim=32
    )
    assert (store.index.dim, store.index.coarse_dim) == (128, 32)
    vectors = np.stack([r.vector for r in store.index.get(UNIX_IDS, include_vectors=True)])
    assert vectors.shape == (6, 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, embeddings.embed_documents(UNIX_TEXTS), atol=1e-5)


async def test_store_afrom_documents_keeps_ids(minilm_encoder: Encoder) -> None:
    store = await MatryoshkaVectorStore.afrom_documents(
        unix_documents(), minilm_encoder, coarse_dim=64
    )
    assert [d.id for d in await store.aget_by_ids(["du", "ls"])] == ["du", "ls"]
    pairs = await store.asimilarity_search_with_score(DISK_QUESTION, k=1)
    assert pairs[0][0].id == "df" and 0 < pairs[0][1] <= 1 + 1e-6


# == packaging ================================================================================
def test_missing_langchain_core_names_the_extra() -> None:
    code = """
        import sys
        sys.modules["langchain_core"] = None  # as if langchain-core were not installed
        try:
            import matryoshka_retrieval.langchain
        except ImportError as exc:
            print(exc)
        else:
            print("no error")
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "matryoshka-retrieval[langchain]"' in result.stdout


def test_public_names() -> None:
    import matryoshka_retrieval.langchain as module

    assert set(module.__all__) == {
        "MatryoshkaEmbeddings",
        "MatryoshkaRetriever",
        "MatryoshkaVectorStore",
    }
    assert all(isinstance(getattr(module, name), type) for name in module.__all__)
