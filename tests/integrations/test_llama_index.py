"""The LlamaIndex integration against real LlamaIndex components and the real MiniLM model."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import CallableEncoder, MatryoshkaIndex, truncate

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import (
    IndexNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores import (
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.core.vector_stores.types import VectorStoreQueryMode
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from matryoshka_retrieval.llama_index import (
    NODE_STATE_KEY,
    MatryoshkaEmbedding,
    MatryoshkaRetriever,
    MatryoshkaVectorStore,
    metadata_filters_to_where,
)
from pg_server import pg

COARSE_DIM = 32

# Unix commands: distinct topics, so the right node for a question is unambiguous. "tar" has no
# "year", to show how records without a key behave under NE / NIN.
CORPUS: list[tuple[str, str, dict[str, Any]]] = [
    ("ls", "ls lists the files and folders in a directory.", {"section": "files", "year": 1971}),
    ("cp", "cp copies files and directories to a destination.", {"section": "files", "year": 1971}),
    ("df", "df reports how much free disk space each file system has.", {"section": "disk"}),
    ("du", "du estimates the disk space used by files and directories.", {"section": "disk"}),
    ("cal", "cal prints a calendar for a month or for a whole year.", {"section": "time"}),
    ("date", "date prints or sets the system date and time of day.", {"section": "time"}),
    ("grep", "grep searches text for lines matching a regular expression.", {"section": "text"}),
    ("tar", "tar bundles many files into one archive file.", {"section": "files"}),
]
YEARS = {"df": 1973, "du": 1974, "cal": 1975, "date": 1971, "grep": 1973}
RATINGS = {"ls": 4.5, "cp": 4.0, "df": 3.5, "du": 3.0, "cal": 2.5, "date": 4.8, "grep": 5.0}
ALL_IDS = {node_id for node_id, _, _ in CORPUS}
DISK_QUESTION = "How much free space is left on my hard disk?"


def make_nodes() -> list[TextNode]:
    nodes = []
    for node_id, text, meta in CORPUS:
        metadata = dict(meta)
        if node_id in YEARS:
            metadata["year"] = YEARS[node_id]
        if node_id in RATINGS:
            metadata["rating"] = RATINGS[node_id]
        nodes.append(TextNode(id_=node_id, text=text, metadata=metadata))
    return nodes


@pytest.fixture(scope="module")
def retriever(minilm_encoder: Any) -> MatryoshkaRetriever:
    """A retriever over the corpus that returns every node (for filter tests) unless changed."""
    return MatryoshkaRetriever.from_nodes(
        make_nodes(),
        minilm_encoder,
        coarse_dim=COARSE_DIM,
        exact_below=0,  # the funnel even on this small corpus: coarse scores are prefix cosines
        similarity_top_k=len(CORPUS),
    )


def retrieved_ids(nodes: list[NodeWithScore]) -> set[str]:
    return {n.node.node_id for n in nodes}


def cosine_to_query(encoder: Any, query: str, node: TextNode, dim: int | None = None) -> float:
    q = encoder.encode_queries([query])
    d = encoder.encode_documents([node.get_content(metadata_mode=MetadataMode.EMBED)])
    if dim is not None:
        q, d = truncate(q, dim), truncate(d, dim)
    return float((q @ d.T)[0, 0])


# -- the retriever inside a query engine -------------------------------------------------------
@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_query_engine_answers_from_the_right_node(minilm_encoder: Any, backend: str) -> None:
    server = pg() if backend == "postgres" else {}
    retriever = MatryoshkaRetriever.from_nodes(
        make_nodes(), minilm_encoder, coarse_dim=COARSE_DIM, similarity_top_k=1, **server
    )
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())

    response = engine.query(DISK_QUESTION)

    assert [n.node.node_id for n in response.source_nodes] == ["df"]
    answer = str(response)  # MockLLM answers with the prompt it was given
    assert "df reports how much free disk space each file system has." in answer
    assert DISK_QUESTION in answer
    assert "du estimates" not in answer and "ls lists" not in answer


def test_coarse_score_is_kept_out_of_the_llm_prompt(minilm_encoder: Any) -> None:
    retriever = MatryoshkaRetriever.from_nodes(
        make_nodes(), minilm_encoder, coarse_dim=COARSE_DIM, similarity_top_k=1
    )
    response = RetrieverQueryEngine.from_args(retriever, llm=MockLLM()).query(DISK_QUESTION)
    node = response.source_nodes[0].node
    assert "coarse_score" in node.metadata
    assert "section: disk" in str(response)  # ordinary metadata reaches the LLM
    assert "coarse_score" not in str(response)
    assert "coarse_score" not in node.get_content(metadata_mode=MetadataMode.EMBED)


async def test_query_engine_async(minilm_encoder: Any) -> None:
    retriever = MatryoshkaRetriever.from_nodes(
        make_nodes(), minilm_encoder, coarse_dim=COARSE_DIM, similarity_top_k=1
    )
    response = await RetrieverQueryEngine.from_args(retriever, llm=MockLLM()).aquery(
        "Which command searches text with a regular expression?"
    )
    assert [n.node.node_id for n in response.source_nodes] == ["grep"]
    assert "grep searches text" in str(response)


# -- scores, round trip ------------------------------------------------------------------------
def test_score_is_full_dim_cosine_and_coarse_score_is_the_prefix_cosine(
    retriever: MatryoshkaRetriever, minilm_encoder: Any
) -> None:
    results = retriever.retrieve(DISK_QUESTION)
    originals = {n.node_id: n for n in make_nodes()}
    assert results[0].node.node_id == "df"
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    for result in results[:3]:
        original = originals[result.node.node_id]
        full = cosine_to_query(minilm_encoder, DISK_QUESTION, original)
        coarse = cosine_to_query(minilm_encoder, DISK_QUESTION, original, COARSE_DIM)
        assert result.score == pytest.approx(full, abs=1e-5)
        assert result.node.metadata["coarse_score"] == pytest.approx(coarse, abs=1e-4)
        assert abs(full - coarse) > 1e-3  # the two scores really are different measures


def test_coarse_score_does_not_reach_the_stored_metadata(retriever: MatryoshkaRetriever) -> None:
    retriever.retrieve(DISK_QUESTION)
    (record,) = retriever.index.get(["df"])
    user_keys = {k: v for k, v in record.metadata.items() if k in {"section", "year", "rating"}}
    assert user_keys == {"section": "disk", "year": 1973, "rating": 3.5}
    assert "coarse_score" not in record.metadata
    assert "coarse_score" not in record.metadata[NODE_STATE_KEY]


def test_nodes_are_stored_with_llama_index_node_json(retriever: MatryoshkaRetriever) -> None:
    (record,) = retriever.index.get(["df"])
    node = metadata_dict_to_node(record.metadata, text=record.text)
    assert (node.node_id, node.get_content()) == ("df", CORPUS[2][1])
    assert node.metadata == {"section": "disk", "year": 1973, "rating": 3.5}


def test_coarse_score_key_can_be_renamed_or_left_out(minilm_encoder: Any) -> None:
    renamed = MatryoshkaRetriever.from_nodes(
        make_nodes(), minilm_encoder, similarity_top_k=1, coarse_score_key="mrl_coarse"
    )
    node = renamed.retrieve(DISK_QUESTION)[0].node
    assert "mrl_coarse" in node.metadata and "coarse_score" not in node.metadata
    assert "mrl_coarse" in node.excluded_llm_metadata_keys

    plain = MatryoshkaRetriever(renamed.index, similarity_top_k=1, coarse_score_key=None)
    assert plain.retrieve(DISK_QUESTION)[0].node.metadata == {
        "section": "disk",
        "year": 1973,
        "rating": 3.5,
    }


def test_nodes_are_embedded_as_llama_index_embeds_them(
    retriever: MatryoshkaRetriever, minilm_encoder: Any
) -> None:
    (record,) = retriever.index.get(["cal"], include_vectors=True)
    cal = next(n for n in make_nodes() if n.node_id == "cal")
    expected = minilm_encoder.encode_documents([cal.get_content(metadata_mode=MetadataMode.EMBED)])
    assert record.text == cal.text  # stored text is the plain text ...
    np.testing.assert_allclose(record.vector, expected[0], atol=1e-5)  # ... embedded with metadata


def test_id_text_metadata_and_node_state_round_trip(minilm_encoder: Any) -> None:
    node = TextNode(
        id_="backup-tool",
        text="restic makes encrypted, deduplicated backups of a directory.",
        metadata={
            "tags": ["backup", "crypto"],
            "limits": {"max_size": 10, "unit": "GB"},
            "pair": (1, 2),
            "count": np.int64(3),
            "ratio": np.float32(0.5),
            "author": None,
            "stable": True,
        },
        excluded_llm_metadata_keys=["limits"],
        excluded_embed_metadata_keys=["author"],
        start_char_idx=5,
        end_char_idx=62,
        relationships={
            NodeRelationship.SOURCE: RelatedNodeInfo(node_id="manual", hash="abc"),
            NodeRelationship.CHILD: [RelatedNodeInfo(node_id="c1"), RelatedNodeInfo(node_id="c2")],
        },
    )
    retriever = MatryoshkaRetriever.from_nodes([node], minilm_encoder, coarse_score_key=None)

    out = retriever.retrieve("encrypted backups")[0].node

    assert isinstance(out, TextNode)
    assert (out.node_id, out.text) == ("backup-tool", node.text)
    assert out.metadata == {
        "tags": ["backup", "crypto"],
        "limits": {"max_size": 10, "unit": "GB"},
        "pair": [1, 2],
        "count": 3,
        "ratio": 0.5,
        "author": None,
        "stable": True,
    }
    assert NODE_STATE_KEY not in out.metadata
    assert out.excluded_llm_metadata_keys == ["limits"]
    assert out.excluded_embed_metadata_keys == ["author"]
    assert (out.start_char_idx, out.end_char_idx) == (5, 62)
    assert out.ref_doc_id == "manual"
    assert out.relationships[NodeRelationship.SOURCE].hash == "abc"
    assert [c.node_id for c in out.child_nodes or []] == ["c1", "c2"]


def test_json_metadata_is_stored_as_strings_in_the_index(minilm_encoder: Any) -> None:
    node = TextNode(id_="n", text="a note about tags", metadata={"tags": ["x", "y"], "n": 1})
    retriever = MatryoshkaRetriever.from_nodes([node], minilm_encoder)
    (record,) = retriever.index.get(["n"])
    assert record.metadata["tags"] == '["x", "y"]'
    assert record.metadata["n"] == 1
    where = {"tags": '["x", "y"]'}  # filters see the JSON string
    assert retriever.index.search("tags", 1, filter=where).ids == ["n"]


def test_index_nodes_come_back_as_index_nodes_for_recursive_retrieval(
    minilm_encoder: Any,
) -> None:
    summary = IndexNode(
        id_="weather-summary", text="Weather reports and rain forecasts.", index_id="weather"
    )
    other = TextNode(id_="cooking", text="A recipe for tomato soup.")
    retriever = MatryoshkaRetriever.from_nodes([summary, other], minilm_encoder)
    answer = TextNode(id_="rain", text="Heavy rain expected tomorrow.")
    retriever.object_map = {"weather": answer}
    retriever.similarity_top_k = 1

    results = retriever.retrieve("will it rain tomorrow?")

    assert [r.node.node_id for r in results] == ["rain"]  # followed through the IndexNode


def test_from_documents_splits_and_keeps_the_source_document(minilm_encoder: Any) -> None:
    documents = [
        Document(
            id_="unix-notes",
            text="The df command reports free disk space. " * 20
            + "The cal command prints a calendar. " * 20,
            metadata={"source": "notes.txt"},
        ),
        Document(id_="cooking", text="Tomato soup needs tomatoes, onions and stock."),
    ]
    retriever = MatryoshkaRetriever.from_documents(
        documents,
        minilm_encoder,
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0)],
        similarity_top_k=1,
    )
    assert len(retriever.index) > len(documents)  # the documents were split

    node = retriever.retrieve("print a calendar")[0].node
    assert "cal command" in node.get_content()
    assert node.ref_doc_id == "unix-notes"
    assert node.metadata["source"] == "notes.txt"


def test_from_nodes_passes_index_options(minilm_encoder: Any) -> None:
    retriever = MatryoshkaRetriever.from_nodes(
        make_nodes(),
        minilm_encoder,
        precision="int8",
        stages=[(32, 6), (128, 3)],
        similarity_top_k=2,
    )
    index = retriever.index
    assert (index.coarse_dim, index.precision, index.stages) == (32, "int8", [(32, 6), (128, 3)])
    assert retriever.retrieve(DISK_QUESTION)[0].node.node_id == "df"


def test_constructor_wraps_an_existing_index(minilm_encoder: Any) -> None:
    index = MatryoshkaIndex(minilm_encoder, coarse_dim=64)
    index.add_texts(
        ["Paris is the capital of France.", "Tokyo is the capital of Japan."],
        ids=["paris", "tokyo"],
        metadatas=[{"continent": "europe"}, {"continent": "asia"}],
    )
    retriever = MatryoshkaRetriever(index, similarity_top_k=1)
    node = retriever.retrieve("What is Japan's capital city?")[0].node
    assert node.node_id == "tokyo"
    assert node.get_content() == "Tokyo is the capital of Japan."
    assert node.metadata["continent"] == "asia"


def test_add_nodes_extends_the_index(minilm_encoder: Any) -> None:
    retriever = MatryoshkaRetriever.from_nodes(make_nodes(), minilm_encoder, similarity_top_k=1)
    new = TextNode(id_="ping", text="ping checks whether a network host answers.")
    assert retriever.add_nodes([new]) == ["ping"]
    assert retriever.retrieve("is the server reachable on the network?")[0].node_id == "ping"
    with pytest.raises(ValueError, match="already in the index"):
        retriever.add_nodes([new])
    assert retriever.add_nodes([new], on_conflict="replace") == ["ping"]
    assert len(retriever.index) == len(CORPUS) + 1


def test_from_nodes_unwraps_a_matryoshka_embedding(minilm_encoder: Any) -> None:
    embed_model = MatryoshkaEmbedding(minilm_encoder, truncate_dim=128)
    retriever = MatryoshkaRetriever.from_nodes(make_nodes(), embed_model, coarse_dim=32)
    assert retriever.index.encoder is embed_model.encoder
    assert retriever.index.dim == 128


def test_from_nodes_defaults_to_settings_embed_model(
    minilm_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    embed_model = MatryoshkaEmbedding(minilm_encoder, truncate_dim=96)
    monkeypatch.setattr(Settings, "_embed_model", embed_model)
    retriever = MatryoshkaRetriever.from_nodes(make_nodes(), similarity_top_k=1)
    assert retriever.index.encoder is embed_model.encoder
    assert retriever.retrieve(DISK_QUESTION)[0].node.node_id == "df"


# -- the vector store inside LlamaIndex's own VectorStoreIndex ---------------------------------
def corpus_documents() -> list[Document]:
    return [Document(id_=n.node_id, text=n.text, metadata=n.metadata) for n in make_nodes()]


def vector_store_index(
    encoder: Any, **options: Any
) -> tuple[VectorStoreIndex, MatryoshkaVectorStore]:
    store = MatryoshkaVectorStore(coarse_dim=COARSE_DIM, **{"exact_below": 0, **options})
    index = VectorStoreIndex.from_documents(
        corpus_documents(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=MatryoshkaEmbedding(encoder),
    )
    return index, store


@pytest.fixture(scope="module")
def store_index(minilm_encoder: Any) -> VectorStoreIndex:
    """A VectorStoreIndex over a MatryoshkaVectorStore holding the corpus (read-only)."""
    return vector_store_index(minilm_encoder)[0]


def ref_doc_ids(nodes: list[NodeWithScore]) -> list[str | None]:
    return [n.node.ref_doc_id for n in nodes]


def test_vector_store_index_query_engine_answers_from_the_right_node(
    store_index: VectorStoreIndex,
) -> None:
    engine = store_index.as_query_engine(llm=MockLLM(), similarity_top_k=1)

    response = engine.query(DISK_QUESTION)

    assert ref_doc_ids(response.source_nodes) == ["df"]
    answer = str(response)  # MockLLM answers with the prompt it was given
    assert "df reports how much free disk space each file system has." in answer
    assert "section: disk" in answer and "coarse_score" not in answer
    assert "du estimates" not in answer and "ls lists" not in answer


def test_vector_store_index_on_postgres_answers_and_filters(minilm_encoder: Any) -> None:
    index, store = vector_store_index(minilm_encoder, **pg())
    assert store.index.backend == "postgres" and len(store.index) == len(CORPUS)
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=1).query(DISK_QUESTION)
    assert ref_doc_ids(response.source_nodes) == ["df"]
    assert "df reports how much free disk space each file system has." in str(response)
    filters = MetadataFilters(filters=[MetadataFilter(key="section", value="time")])
    nodes = index.as_retriever(similarity_top_k=5, filters=filters).retrieve(DISK_QUESTION)
    assert sorted(ref_doc_ids(nodes)) == ["cal", "date"]


async def test_vector_store_index_query_engine_async(store_index: VectorStoreIndex) -> None:
    engine = store_index.as_query_engine(llm=MockLLM(), similarity_top_k=1)
    response = await engine.aquery("Which command searches text with a regular expression?")
    assert ref_doc_ids(response.source_nodes) == ["grep"]


def test_vector_store_searches_coarse_to_fine(
    store_index: VectorStoreIndex, minilm_encoder: Any
) -> None:
    store = store_index.vector_store
    assert isinstance(store, MatryoshkaVectorStore)
    assert (store.index.dim, store.index.coarse_dim, len(store.index)) == (384, 32, len(CORPUS))
    results = store_index.as_retriever(similarity_top_k=3).retrieve(DISK_QUESTION)
    assert ref_doc_ids(results)[0] == "df"
    for result in results:
        node = result.node
        assert isinstance(node, TextNode)
        assert result.score == pytest.approx(
            cosine_to_query(minilm_encoder, DISK_QUESTION, node), abs=1e-5
        )
        coarse = cosine_to_query(minilm_encoder, DISK_QUESTION, node, COARSE_DIM)
        assert node.metadata["coarse_score"] == pytest.approx(coarse, abs=1e-4)


def test_vector_store_index_metadata_filters(store_index: VectorStoreIndex) -> None:
    time_only = MetadataFilters(filters=[f("section", "time")])
    results = store_index.as_retriever(similarity_top_k=len(CORPUS), filters=time_only).retrieve(
        DISK_QUESTION
    )
    assert set(ref_doc_ids(results)) == {"cal", "date"}
    newer = MetadataFilters(filters=[f("year", 1973, FilterOperator.GT)])
    results = store_index.as_retriever(similarity_top_k=1, filters=newer).retrieve(DISK_QUESTION)
    assert ref_doc_ids(results) == ["du"]


def test_vector_store_query_restricted_to_doc_ids(
    store_index: VectorStoreIndex, minilm_encoder: Any
) -> None:
    query = VectorStoreQuery(
        query_embedding=minilm_encoder.encode_queries([DISK_QUESTION])[0].tolist(),
        similarity_top_k=len(CORPUS),
        doc_ids=["ls", "cal"],
    )
    result = store_index.vector_store.query(query)
    assert {n.ref_doc_id for n in result.nodes or []} == {"ls", "cal"}


def test_vector_store_refuses_query_modes_it_cannot_serve(store_index: VectorStoreIndex) -> None:
    query = VectorStoreQuery(query_embedding=[0.1] * 384, mode=VectorStoreQueryMode.MMR)
    with pytest.raises(ValueError, match="serves dense queries"):
        store_index.vector_store.query(query)


def test_delete_ref_doc_removes_the_documents_nodes(minilm_encoder: Any) -> None:
    index, store = vector_store_index(minilm_encoder)
    index.delete_ref_doc("df")
    assert len(store.index) == len(CORPUS) - 1
    results = index.as_retriever(similarity_top_k=1).retrieve(DISK_QUESTION)
    assert ref_doc_ids(results) == ["du"]


def test_get_and_delete_nodes_by_filters_and_ids(minilm_encoder: Any) -> None:
    _, store = vector_store_index(minilm_encoder)
    disk = MetadataFilters(filters=[f("section", "disk")])
    nodes = store.get_nodes(filters=disk)
    assert {n.ref_doc_id for n in nodes} == {"df", "du"}
    assert [n.node_id for n in store.get_nodes([nodes[0].node_id])] == [nodes[0].node_id]
    store.delete_nodes([nodes[0].node_id, "not-stored"])
    assert len(store.index) == len(CORPUS) - 1
    store.delete_nodes(filters=disk)
    assert store.get_nodes(filters=disk) == []
    store.clear()
    assert len(store.index) == 0


def test_vector_store_over_an_existing_index(minilm_encoder: Any) -> None:
    index = MatryoshkaIndex(coarse_dim=16)
    store = MatryoshkaVectorStore(index, coarse_score_key=None)
    assert store.index is store.client is index
    with pytest.raises(TypeError, match=r"\['coarse_dim'\] cannot be combined with index="):
        MatryoshkaVectorStore(index, coarse_dim=32)


def test_retriever_vector_store_serves_a_vector_store_index(
    retriever: MatryoshkaRetriever,
) -> None:
    wrapped = VectorStoreIndex.from_vector_store(
        retriever.vector_store, embed_model=MatryoshkaEmbedding(retriever.index.encoder)
    )
    results = wrapped.as_retriever(similarity_top_k=1).retrieve(DISK_QUESTION)
    assert [r.node.node_id for r in results] == ["df"]


def test_vector_store_embeds_nodes_and_searches_with_a_where_filter(minilm_encoder: Any) -> None:
    store = MatryoshkaVectorStore(encoder=minilm_encoder, coarse_dim=COARSE_DIM)
    assert store.add_nodes(make_nodes()) == [n.node_id for n in make_nodes()]
    query = minilm_encoder.encode_queries([DISK_QUESTION])[0]

    result = store.search(query, 2, where={"section": {"$ne": "disk"}})

    assert len(result.ids or []) == 2 and not {"df", "du"} & set(result.ids or [])
    assert all("coarse_score" in node.metadata for node in result.nodes or [])
    assert store.search(query, 1).ids == ["df"]


def test_vector_store_add_nodes_replaces_stored_ids_unless_told_not_to(
    minilm_encoder: Any,
) -> None:
    store = MatryoshkaVectorStore(encoder=minilm_encoder, coarse_dim=COARSE_DIM)
    store.add_nodes(make_nodes())
    assert store.add_nodes([TextNode(id_="ls", text="ls shows a directory.")]) == ["ls"]
    assert len(store.index) == len(CORPUS)
    assert store.get_nodes(["ls"])[0].get_content() == "ls shows a directory."
    with pytest.raises(ValueError, match="already in the index"):
        store.add_nodes([TextNode(id_="ls", text="again")], on_conflict="error")


async def test_vector_store_async_twins_serve_the_same_nodes(minilm_model: Any) -> None:
    calls: list[str] = []
    store = MatryoshkaVectorStore(
        encoder=async_only_encoder(minilm_model, calls), coarse_dim=COARSE_DIM
    )
    assert await store.aadd_nodes(make_nodes()) == [n.node_id for n in make_nodes()]
    assert len(calls) == len(CORPUS)  # embedded on the encoder's async path

    disk = MetadataFilters(filters=[f("section", "disk")])
    assert {n.node_id for n in await store.aget_nodes(filters=disk)} == {"df", "du"}
    await store.adelete_nodes(["df"])
    assert {n.node_id for n in await store.aget_nodes(filters=disk)} == {"du"}
    await store.aclear()
    assert len(store.index) == 0


# -- query handling ----------------------------------------------------------------------------
def test_bundle_embedding_is_ignored_when_the_index_has_an_encoder(
    retriever: MatryoshkaRetriever, minilm_encoder: Any
) -> None:
    wrong = minilm_encoder.encode_queries(["print a calendar"])[0].tolist()
    bundle = QueryBundle(DISK_QUESTION, embedding=wrong)  # e.g. left by another retriever
    assert retriever.retrieve(bundle)[0].node.node_id == "df"


def test_bundle_embedding_is_searched_when_the_index_has_no_encoder(
    minilm_encoder: Any,
) -> None:
    nodes = make_nodes()
    vectors = minilm_encoder.encode_documents([n.get_content() for n in nodes])
    index = MatryoshkaIndex(coarse_dim=32)
    index.add_vectors(vectors, ids=[n.node_id for n in nodes], texts=[n.text for n in nodes])
    retriever = MatryoshkaRetriever(index, similarity_top_k=1)
    embedding = minilm_encoder.encode_queries(["print a calendar"])[0].tolist()

    assert retriever.retrieve(QueryBundle("ignored", embedding=embedding))[0].node_id == "cal"
    with pytest.raises(ValueError, match="needs an encoder"):
        retriever.retrieve("print a calendar")


def test_custom_embedding_strs_search_with_their_mean(
    retriever: MatryoshkaRetriever, minilm_encoder: Any
) -> None:
    strs = ["free disk space", "print a calendar for the month"]
    mean = minilm_encoder.encode_queries(strs).mean(axis=0)
    expected = retriever.index.search(mean, len(CORPUS))

    results = retriever.retrieve(QueryBundle("unused", custom_embedding_strs=strs))

    assert [r.node_id for r in results] == expected.ids
    assert [r.score for r in results] == pytest.approx(expected.scores, abs=1e-6)


def test_empty_query_is_rejected(retriever: MatryoshkaRetriever) -> None:
    with pytest.raises(ValueError, match="the query is empty"):
        retriever.retrieve("")


# -- async -------------------------------------------------------------------------------------
async def test_aretrieve_matches_retrieve(retriever: MatryoshkaRetriever) -> None:
    sync = retriever.retrieve(DISK_QUESTION)
    async_ = await retriever.aretrieve(DISK_QUESTION)
    assert [n.node_id for n in async_] == [n.node_id for n in sync]
    assert [n.score for n in async_] == pytest.approx([n.score for n in sync], abs=1e-6)
    assert [n.node.metadata for n in async_] == [n.node.metadata for n in sync]


def async_only_encoder(model: Any, calls: list[str]) -> CallableEncoder:
    """An encoder over the real model whose function is ``async def`` only.

    Its sync path refuses to run inside an event loop, so code under test that blocks on the
    sync path inside ``async def`` fails instead of passing.
    """

    async def embed(texts: list[str]) -> Any:
        calls.extend(texts)
        return await asyncio.to_thread(model.encode, texts)

    return CallableEncoder(embed, dim=384, model_name="minilm-async")


async def test_aretrieve_and_aadd_nodes_use_the_async_encoder_path(minilm_model: Any) -> None:
    calls: list[str] = []
    index = MatryoshkaIndex(async_only_encoder(minilm_model, calls), coarse_dim=32)
    retriever = MatryoshkaRetriever(index, similarity_top_k=1)

    assert await retriever.aadd_nodes(make_nodes()) == [n.node_id for n in make_nodes()]
    results = await retriever.aretrieve(DISK_QUESTION)

    assert results[0].node_id == "df"
    assert calls[-1] == DISK_QUESTION
    with pytest.raises(TypeError, match="call aencode_documents / aencode_queries instead"):
        retriever.retrieve(DISK_QUESTION)  # the sync path would have failed in the loop


async def test_async_custom_embedding_strs(retriever: MatryoshkaRetriever) -> None:
    bundle = QueryBundle("unused", custom_embedding_strs=["disk usage", "free disk space"])
    sync = retriever.retrieve(bundle)
    async_ = await retriever.aretrieve(bundle)
    assert [n.node_id for n in async_] == [n.node_id for n in sync]


# -- metadata filters --------------------------------------------------------------------------
def f(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


@pytest.mark.parametrize(
    ("metadata_filter", "expected"),
    [
        (f("section", "disk"), {"df", "du"}),
        (ExactMatchFilter(key="section", value="time"), {"cal", "date"}),
        (f("year", 1971, FilterOperator.NE), ALL_IDS - {"ls", "cp", "date"}),  # "tar" has no year
        (f("year", 1973, FilterOperator.GT), {"du", "cal"}),
        (f("year", 1973, FilterOperator.GTE), {"df", "du", "cal", "grep"}),
        (f("year", 1973, FilterOperator.LT), {"ls", "cp", "date"}),
        (f("year", 1971, FilterOperator.LTE), {"ls", "cp", "date"}),
        (f("rating", 4.5, FilterOperator.GTE), {"ls", "date", "grep"}),
        (f("section", ["time", "text"], FilterOperator.IN), {"cal", "date", "grep"}),
        (f("year", [1971, 1973], FilterOperator.NIN), {"du", "cal", "tar"}),
    ],
    ids=["eq", "exact-match", "ne", "gt", "gte", "lt", "lte", "float-gte", "in", "nin"],
)
def test_each_filter_operator(
    retriever: MatryoshkaRetriever, metadata_filter: MetadataFilter, expected: set[str]
) -> None:
    filtered = MatryoshkaRetriever(
        retriever.index,
        similarity_top_k=len(CORPUS),
        filters=MetadataFilters(filters=[metadata_filter]),
    )
    assert retrieved_ids(filtered.retrieve(DISK_QUESTION)) == expected


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (
            MetadataFilters(filters=[f("section", "files"), f("year", 1971)]),
            {"ls", "cp"},
        ),
        (
            MetadataFilters(
                filters=[f("section", "disk"), f("year", 1975)], condition=FilterCondition.OR
            ),
            {"df", "du", "cal"},
        ),
        (
            MetadataFilters(
                filters=[
                    f("rating", 4.0, FilterOperator.GTE),
                    MetadataFilters(
                        filters=[f("section", "time"), f("section", "text")],
                        condition=FilterCondition.OR,
                    ),
                ],
                condition=FilterCondition.AND,
            ),
            {"date", "grep"},
        ),
        (
            MetadataFilters(
                filters=[
                    MetadataFilters(filters=[f("section", "files"), f("year", 1971)]),
                    MetadataFilters(filters=[f("section", "disk"), f("year", 1974)]),
                ],
                condition=FilterCondition.OR,
            ),
            {"ls", "cp", "du"},
        ),
        (MetadataFilters(filters=[], condition=FilterCondition.OR), ALL_IDS),
    ],
    ids=["and", "or", "and-of-or", "or-of-and", "empty"],
)
def test_and_or_conditions(
    retriever: MatryoshkaRetriever, filters: MetadataFilters, expected: set[str]
) -> None:
    filtered = MatryoshkaRetriever(retriever.index, similarity_top_k=len(CORPUS), filters=filters)
    assert retrieved_ids(filtered.retrieve(DISK_QUESTION)) == expected


def test_filters_are_applied_before_the_shortlist_is_cut(retriever: MatryoshkaRetriever) -> None:
    filtered = MatryoshkaRetriever(
        retriever.index, similarity_top_k=1, filters=MetadataFilters(filters=[f("year", 1975)])
    )
    assert [n.node_id for n in filtered.retrieve(DISK_QUESTION)] == ["cal"]


async def test_filters_apply_to_aretrieve(retriever: MatryoshkaRetriever) -> None:
    filtered = MatryoshkaRetriever(
        retriever.index,
        similarity_top_k=len(CORPUS),
        filters=MetadataFilters(filters=[f("section", "time")]),
    )
    assert retrieved_ids(await filtered.aretrieve(DISK_QUESTION)) == {"cal", "date"}


def test_a_where_dict_is_accepted_as_filters(retriever: MatryoshkaRetriever) -> None:
    filtered = MatryoshkaRetriever(
        retriever.index, similarity_top_k=len(CORPUS), filters={"year": {"$lt": 1972}}
    )
    assert retrieved_ids(filtered.retrieve(DISK_QUESTION)) == {"ls", "cp", "date"}


def test_filters_can_be_replaced_after_construction(retriever: MatryoshkaRetriever) -> None:
    filtered = MatryoshkaRetriever(retriever.index, similarity_top_k=len(CORPUS))
    filtered.filters = MetadataFilters(filters=[f("section", "disk")])
    assert filtered.where == {"section": {"$eq": "disk"}}
    assert retrieved_ids(filtered.retrieve(DISK_QUESTION)) == {"df", "du"}
    filtered.filters = None
    assert retrieved_ids(filtered.retrieve(DISK_QUESTION)) == ALL_IDS


def test_a_bad_where_dict_is_rejected_at_construction(retriever: MatryoshkaRetriever) -> None:
    with pytest.raises(ValueError, match=r"unknown filter operator '\$like'"):
        MatryoshkaRetriever(retriever.index, filters={"section": {"$like": "d%"}})


def test_metadata_filters_translate_to_where_syntax() -> None:
    filters = MetadataFilters(
        filters=[
            f("a", 1),
            f("b", "x", FilterOperator.NE),
            MetadataFilters(
                filters=[f("c", 2.5, FilterOperator.LTE), f("d", ["p", "q"], FilterOperator.NIN)],
                condition=FilterCondition.OR,
            ),
        ]
    )
    assert metadata_filters_to_where(filters) == {
        "$and": [
            {"a": {"$eq": 1}},
            {"b": {"$ne": "x"}},
            {"$or": [{"c": {"$lte": 2.5}}, {"d": {"$nin": ["p", "q"]}}]},
        ]
    }
    assert metadata_filters_to_where(MetadataFilters(filters=[f("a", 1)])) == {"a": {"$eq": 1}}
    assert metadata_filters_to_where(None) is None


@pytest.mark.parametrize(
    "operator",
    [
        FilterOperator.ANY,
        FilterOperator.ALL,
        FilterOperator.CONTAINS,
        FilterOperator.TEXT_MATCH,
        FilterOperator.TEXT_MATCH_INSENSITIVE,
        FilterOperator.IS_EMPTY,
    ],
    ids=lambda op: op.name,
)
def test_unsupported_operator_is_named(
    retriever: MatryoshkaRetriever, operator: FilterOperator
) -> None:
    filters = MetadataFilters(filters=[f("section", "disk"), f("tags", "x", operator)])
    with pytest.raises(ValueError, match=rf"FilterOperator\.{operator.name} .* 'tags' is not"):
        MatryoshkaRetriever(retriever.index, filters=filters)


def test_unsupported_condition_is_named(retriever: MatryoshkaRetriever) -> None:
    filters = MetadataFilters(filters=[f("section", "disk")], condition=FilterCondition.NOT)
    with pytest.raises(ValueError, match=r"FilterCondition\.NOT .* not supported"):
        MatryoshkaRetriever(retriever.index, filters=filters)


@pytest.mark.parametrize(
    ("metadata_filter", "message"),
    [
        (f("section", "disk", FilterOperator.IN), "IN on key 'section' needs a non-empty list"),
        (f("section", [], FilterOperator.NIN), "NIN on key 'section' needs a non-empty list"),
        (f("year", [1971], FilterOperator.GT), "GT on key 'year' needs a single"),
        (f("year", None), "EQ on key 'year' needs a single"),
    ],
    ids=["in-scalar", "nin-empty", "gt-list", "eq-none"],
)
def test_bad_filter_values_are_rejected(metadata_filter: MetadataFilter, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metadata_filters_to_where(MetadataFilters(filters=[metadata_filter]))


def test_empty_nested_filters_are_rejected() -> None:
    filters = MetadataFilters(filters=[f("a", 1), MetadataFilters(filters=[])])
    with pytest.raises(ValueError, match=r"filters\.filters\[1\] holds no filters"):
        metadata_filters_to_where(filters)


def test_filters_of_the_wrong_type_are_rejected() -> None:
    with pytest.raises(TypeError, match="filters must be a llama_index MetadataFilters"):
        metadata_filters_to_where([f("a", 1)])


# -- errors ------------------------------------------------------------------------------------
def test_metadata_that_cannot_be_stored_is_rejected(minilm_encoder: Any) -> None:
    node = TextNode(id_="n1", text="text", metadata={"when": datetime.date(2024, 1, 1)})
    with pytest.raises(TypeError, match=r"node 'n1': metadata value 'when' is a date"):
        MatryoshkaRetriever.from_nodes([node], minilm_encoder)


def test_non_finite_metadata_is_rejected(minilm_encoder: Any) -> None:
    node = TextNode(id_="n1", text="text", metadata={"score": float("nan")})
    with pytest.raises(ValueError, match=r"node 'n1': metadata value 'score' must be finite"):
        MatryoshkaRetriever.from_nodes([node], minilm_encoder)


@pytest.mark.parametrize("key", ["coarse_score", NODE_STATE_KEY])
def test_reserved_metadata_keys_are_rejected(minilm_encoder: Any, key: str) -> None:
    node = TextNode(id_="n1", text="text", metadata={key: 1})
    with pytest.raises(ValueError, match=rf"metadata key '{key}' is reserved"):
        MatryoshkaRetriever.from_nodes([node], minilm_encoder)


def test_node_without_text_is_rejected(minilm_encoder: Any) -> None:
    nodes = [TextNode(id_="ok", text="fine"), TextNode(id_="blank", text="  ")]
    retriever = MatryoshkaRetriever.from_nodes([], minilm_encoder)
    with pytest.raises(ValueError, match=r"node 'blank' \(nodes\[1\]\) has no text"):
        retriever.add_nodes(nodes)
    assert len(retriever.index) == 0  # nothing from the failed call was stored


def test_add_nodes_needs_an_encoder() -> None:
    retriever = MatryoshkaRetriever(MatryoshkaIndex(dim=8, coarse_dim=4))
    with pytest.raises(ValueError, match="add_nodes needs an index with an encoder"):
        retriever.add_nodes([TextNode(text="x")])


def test_single_node_is_rejected(retriever: MatryoshkaRetriever) -> None:
    with pytest.raises(TypeError, match="got a single node; wrap it in a list"):
        retriever.add_nodes(TextNode(text="x"))


@pytest.mark.parametrize("k", [0, -1, True, 2.0])
def test_bad_similarity_top_k_is_rejected(retriever: MatryoshkaRetriever, k: Any) -> None:
    with pytest.raises(ValueError, match="similarity_top_k must be a positive int"):
        MatryoshkaRetriever(retriever.index, similarity_top_k=k)


def test_index_must_be_a_matryoshka_index() -> None:
    with pytest.raises(TypeError, match="index must be a MatryoshkaIndex, got list"):
        MatryoshkaRetriever([])


def test_bad_coarse_score_key_is_rejected(retriever: MatryoshkaRetriever) -> None:
    with pytest.raises(ValueError, match="coarse_score_key must be None or a non-empty str"):
        MatryoshkaRetriever(retriever.index, coarse_score_key=NODE_STATE_KEY)


def test_public_names() -> None:
    import matryoshka_retrieval.llama_index as module

    constants = {"DEFAULT_COARSE_SCORE_KEY", "NODE_STATE_KEY", "SUPPORTED_FILTER_OPERATORS"}
    classes = {"MatryoshkaEmbedding", "MatryoshkaRetriever", "MatryoshkaVectorStore"}
    assert set(module.__all__) == constants | classes | {"metadata_filters_to_where"}
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_missing_llama_index_names_the_extra() -> None:
    code = """
        import sys
        sys.modules["llama_index"] = None  # as if llama-index-core were not installed
        try:
            import matryoshka_retrieval.llama_index
        except ImportError as exc:
            print(exc)
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "matryoshka-retrieval[llama-index]"' in result.stdout


# -- MatryoshkaEmbedding -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def embed_model(minilm_encoder: Any) -> MatryoshkaEmbedding:
    return MatryoshkaEmbedding(minilm_encoder, truncate_dim=64)


def test_embedding_honours_truncate_dim_with_unit_norm(
    embed_model: MatryoshkaEmbedding, minilm_model: Any
) -> None:
    texts = ["ls lists files", "df reports disk space", "cal prints a calendar"]
    query = embed_model.get_query_embedding("free disk space")
    single = embed_model.get_text_embedding(texts[0])
    batch = embed_model.get_text_embedding_batch(texts)

    assert embed_model.dim == embed_model.truncate_dim == 64
    assert len(query) == len(single) == 64
    assert np.asarray(batch).shape == (3, 64)
    norms = np.linalg.norm(np.asarray([query, single, *batch]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, truncate(minilm_model.encode(texts), 64), atol=1e-5)


async def test_async_embeddings_equal_sync(embed_model: MatryoshkaEmbedding) -> None:
    texts = ["ls lists files", "df reports disk space"]
    np.testing.assert_allclose(
        await embed_model.aget_query_embedding("disk"),
        embed_model.get_query_embedding("disk"),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        await embed_model.aget_text_embedding(texts[0]),
        embed_model.get_text_embedding(texts[0]),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        await embed_model.aget_text_embedding_batch(texts),
        embed_model.get_text_embedding_batch(texts),
        atol=1e-6,
    )


def test_queries_and_texts_use_their_own_encoder_side(minilm_model: Any) -> None:
    from matryoshka_retrieval import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(
        minilm_model, query_prompt="query: ", document_prompt="passage: "
    )
    embed_model = MatryoshkaEmbedding(encoder, truncate_dim=32)
    np.testing.assert_allclose(
        embed_model.get_query_embedding("disk"),
        truncate(minilm_model.encode(["query: disk"]), 32)[0],
        atol=1e-5,
    )
    np.testing.assert_allclose(
        embed_model.get_text_embedding_batch(["disk"]),
        truncate(minilm_model.encode(["passage: disk"]), 32),
        atol=1e-5,
    )


def test_one_encoder_call_per_batch(minilm_model: Any) -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> Any:
        calls.append(len(texts))
        return minilm_model.encode(texts)

    embed_model = MatryoshkaEmbedding(embed, dim=384, truncate_dim=16, embed_batch_size=3)
    vectors = embed_model.get_text_embedding_batch([f"text number {i}" for i in range(7)])
    assert calls == [3, 3, 1]
    assert np.asarray(vectors).shape == (7, 16)


async def test_async_embedding_uses_the_encoder_async_path(minilm_model: Any) -> None:
    calls: list[str] = []
    embed_model = MatryoshkaEmbedding(async_only_encoder(minilm_model, calls), truncate_dim=48)

    query = await embed_model.aget_query_embedding("disk")
    batch = await embed_model.aget_text_embedding_batch(["a file", "a disk"])

    assert len(query) == 48 and np.asarray(batch).shape == (2, 48)
    assert calls == ["disk", "a file", "a disk"]


def test_embedding_accepts_a_llama_index_embedding() -> None:
    from llama_index.core.embeddings import MockEmbedding

    embed_model = MatryoshkaEmbedding(MockEmbedding(embed_dim=12), truncate_dim=4)
    assert len(embed_model.get_text_embedding("x")) == 4
    assert embed_model.encoder.full_dim == 12


def test_embedding_reports_its_model_and_class(embed_model: MatryoshkaEmbedding) -> None:
    assert embed_model.class_name() == "MatryoshkaEmbedding"
    assert embed_model.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert embed_model.to_dict()["truncate_dim"] == 64


def test_with_truncate_dim_shares_the_model(embed_model: MatryoshkaEmbedding) -> None:
    smaller = embed_model.with_truncate_dim(16)
    assert smaller.dim == 16 and embed_model.dim == 64
    assert smaller.encoder.model is embed_model.encoder.model
    np.testing.assert_allclose(
        smaller.get_query_embedding("disk"),
        truncate(np.asarray([embed_model.get_query_embedding("disk")]), 16)[0],
        atol=1e-5,
    )


def test_truncate_dim_cannot_be_reassigned(embed_model: MatryoshkaEmbedding) -> None:
    with pytest.raises(ValueError, match="frozen"):
        embed_model.truncate_dim = 8


def test_truncate_dim_beyond_the_model_is_rejected(minilm_encoder: Any) -> None:
    with pytest.raises(ValueError, match="truncate_dim=512 is out of range"):
        MatryoshkaEmbedding(minilm_encoder, truncate_dim=512)


def test_embedding_of_an_unsupported_object_is_rejected() -> None:
    with pytest.raises(TypeError, match="as_encoder\\(\\) takes an Encoder"):
        MatryoshkaEmbedding(42)


def test_vector_store_index_with_matryoshka_embedding(
    minilm_encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    embed_model = MatryoshkaEmbedding(minilm_encoder, truncate_dim=128)
    monkeypatch.setattr(Settings, "_embed_model", embed_model)
    documents = [Document(id_=i, text=text) for i, text, _ in CORPUS]

    index = VectorStoreIndex.from_documents(documents)  # embeds with Settings.embed_model
    results = index.as_retriever(similarity_top_k=1).retrieve(DISK_QUESTION)

    assert results[0].node.ref_doc_id == "df"
    stored = np.asarray(index.vector_store.get(results[0].node.node_id))
    assert stored.shape == (128,)
    assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-5)


def test_vector_store_index_with_explicit_embed_model(embed_model: MatryoshkaEmbedding) -> None:
    index = VectorStoreIndex(make_nodes(), embed_model=embed_model)
    results = index.as_retriever(similarity_top_k=1).retrieve("print a calendar for the year")
    assert results[0].node.node_id == "cal"
