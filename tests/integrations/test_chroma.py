"""Chroma: the embedding function, dim checks, and the Chroma coarse backend of the index.

Chroma runs for real: embedded (PersistentClient) and as a ``chroma run`` server on loopback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex, SentenceTransformerEncoder, truncate

chromadb = pytest.importorskip("chromadb")
from matryoshka_retrieval.chroma import (  # noqa: E402
    MatryoshkaEmbeddingFunction,
    get_or_create_collection,
)

DOCS = {
    "ls": "list directory contents",
    "cp": "copy files and directories",
    "rm": "remove files or directories",
    "cal": "display a calendar",
    "df": "report file system disk space usage",
    "ps": "report a snapshot of the current processes",
}
SECTIONS = {"ls": 1, "cp": 1, "rm": 1, "cal": 1, "df": 1, "ps": 8}


@pytest.fixture(scope="module")
def encoder(minilm_model: Any) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(
        minilm_model, query_prompt="query: ", document_prompt="passage: ", model_name="minilm"
    )


# -- the embedding function -----------------------------------------------------------------------
def test_embedding_function_uses_document_and_query_sides(encoder, tmp_path) -> None:
    ef = MatryoshkaEmbeddingFunction(encoder, truncate_dim=64)
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    docs = get_or_create_collection(client, "docs", ef)
    docs.add(ids=list(DOCS), documents=list(DOCS.values()))
    stored = docs.get(ids=["cp"], include=["embeddings"])["embeddings"][0]
    np.testing.assert_allclose(
        stored, encoder.with_truncate_dim(64).encode_documents([DOCS["cp"]])[0], atol=1e-5
    )
    assert len(stored) == 64
    query = ef.embed_query(["duplicate a file"])[0]
    np.testing.assert_allclose(
        query, truncate(encoder.encode_queries(["duplicate a file"]), 64)[0], atol=1e-5
    )
    assert docs.query(query_texts=["duplicate a file"], n_results=1)["ids"] == [["cp"]]


def test_persisted_collection_reopens_with_its_embedding_function(encoder, tmp_path) -> None:
    path = str(tmp_path / "db")
    client = chromadb.PersistentClient(path=path)
    get_or_create_collection(client, "docs", MatryoshkaEmbeddingFunction(truncate_dim=48)).add(
        ids=list(DOCS), documents=list(DOCS.values())
    )
    del client
    reopened = chromadb.PersistentClient(path=path).get_collection("docs")
    stored = reopened.configuration_json["embedding_function"]
    assert stored["name"] == "matryoshka_retrieval" and stored["config"]["dim"] == 48
    assert reopened.query(query_texts=["print this month's calendar"], n_results=1)["ids"] == [
        ["cal"]
    ]


def test_config_round_trip_builds_lazily() -> None:
    config = MatryoshkaEmbeddingFunction(truncate_dim=32).get_config()
    rebuilt = MatryoshkaEmbeddingFunction.build_from_config(config)
    assert rebuilt._encoder is None  # nothing loaded until it embeds
    assert rebuilt.dim == 32 and rebuilt.get_config() == config
    assert len(rebuilt(["hello"])[0]) == 32
    assert not rebuilt.is_legacy() and rebuilt.default_space() == "cosine"


def test_custom_encoder_config_asks_for_the_encoder() -> None:
    ef = MatryoshkaEmbeddingFunction(lambda t: np.ones((len(t), 8)), dim=8, truncate_dim=4)
    config = ef.get_config()
    assert config["encoder"]["type"] == "custom" and config["dim"] == 4
    with pytest.raises(ValueError, match=r"custom encoder .* pass embedding_function="):
        MatryoshkaEmbeddingFunction.build_from_config(config).encoder  # noqa: B018


def test_reopening_at_another_dim_names_both_dims(encoder, tmp_path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    made = get_or_create_collection(
        client, "docs", MatryoshkaEmbeddingFunction(encoder, truncate_dim=256)
    )
    made.add(ids=["ls"], documents=[DOCS["ls"]])
    with pytest.raises(ValueError, match=r"holds 256-dim embeddings .* gives 64-dim embeddings"):
        get_or_create_collection(
            client, "docs", MatryoshkaEmbeddingFunction(encoder, truncate_dim=64)
        )
    other = SentenceTransformerEncoder(encoder.model, model_name="another-model", truncate_dim=256)
    with pytest.raises(ValueError, match=r"embedded with model 'minilm', not 'another-model'"):
        get_or_create_collection(client, "docs", MatryoshkaEmbeddingFunction(other))
    assert made.count() == 1


def test_foreign_collection_of_another_dim_is_caught(encoder, tmp_path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    client.create_collection("raw", embedding_function=None).add(ids=["a"], embeddings=[[0.1] * 16])
    with pytest.raises(
        ValueError, match=r"holds 16-dim embeddings, but the embedding function gives 64"
    ):
        get_or_create_collection(
            client, "raw", MatryoshkaEmbeddingFunction(encoder, truncate_dim=64)
        )


# -- the Chroma coarse backend ------------------------------------------------------------------
def build(client: Any, encoder: SentenceTransformerEncoder, name: str = "mrl") -> MatryoshkaIndex:
    index = MatryoshkaIndex(
        encoder,
        backend="chroma",
        chroma_client=client,
        collection=name,
        coarse_dim=64,
        device="cpu",
    )
    index.add_texts(
        list(DOCS.values()), ids=list(DOCS), metadatas=[{"section": SECTIONS[i]} for i in DOCS]
    )
    return index


def check_serves(index: MatryoshkaIndex) -> None:
    hits = index.search("delete a file", k=2)
    assert hits[0].id == "rm" and hits[0].text == DOCS["rm"] and hits[0].metadata == {"section": 1}
    assert hits[0].score == pytest.approx(
        float(
            index.encoder.encode_queries(["delete a file"])[0]
            @ index.get(["rm"], include_vectors=True)[0].vector
        ),
        abs=1e-5,
    )
    assert index.search("delete a file", k=3, filter={"section": {"$gte": 2}}).ids == ["ps"]


def test_chroma_backend_embedded(encoder, tmp_path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    index = build(client, encoder)
    check_serves(index)
    collection = client.get_collection("mrl", embedding_function=None)
    assert collection.count() == 6
    assert len(collection.get(ids=["ls"], include=["embeddings"])["embeddings"][0]) == 64
    index.delete(["rm"])
    assert collection.count() == 5 and "rm" not in index.search("delete a file", k=5).ids
    with pytest.raises(ValueError, match=r"unknown filter operator '\$like'"):
        index.search("x", filter={"section": {"$like": 1}})


def test_chroma_backend_survives_reopening_the_persistent_path(encoder, tmp_path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    build(client, encoder).save(tmp_path / "idx")
    del client
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    index = MatryoshkaIndex.load(tmp_path / "idx", chroma_client=client, encoder=encoder)
    assert len(index) == 6
    check_serves(index)


def test_unsaved_changes_in_chroma_are_reconciled_on_load(encoder, tmp_path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    index = build(client, encoder)
    index.save(tmp_path / "idx")
    index.add_texts(["an unsaved page"], ids=["unsaved"])  # reaches Chroma, never saved
    collection = client.get_collection("mrl", embedding_function=None)
    collection.delete(ids=["cal"])  # and a prefix lost on the Chroma side
    reopened = MatryoshkaIndex.load(tmp_path / "idx", chroma_client=client, encoder=encoder)
    assert sorted(collection.get(include=[])["ids"]) == sorted(DOCS)
    assert reopened.search("show a calendar", k=1).ids == ["cal"]


def test_chroma_backend_refuses_a_collection_of_another_dim(encoder, tmp_path) -> None:
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    build(client, encoder).save(tmp_path / "idx")
    with pytest.raises(
        ValueError, match=r"holds 64-dim prefix vectors, but this index uses coarse_dim=32"
    ):
        MatryoshkaIndex(
            encoder, backend="chroma", chroma_client=client, collection="mrl", coarse_dim=32
        )
    with pytest.raises(ValueError, match=r"already holds 6 vectors"):
        MatryoshkaIndex(
            encoder, backend="chroma", chroma_client=client, collection="mrl", coarse_dim=64
        )
    with pytest.raises(ValueError, match=r"pass chroma_client= to load it"):
        MatryoshkaIndex.load(tmp_path / "idx")


def test_chroma_backend_needs_a_client() -> None:
    with pytest.raises(ValueError, match=r"backend='chroma' needs chroma_client="):
        MatryoshkaIndex(backend="chroma", dim=8, coarse_dim=4)
    with pytest.raises(ValueError, match=r"stores float32 prefixes"):
        MatryoshkaIndex(backend="chroma", chroma_client=object(), collection="c", precision="int8")


# -- a real `chroma run` server ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Start ``chroma run`` on a free loopback port; the yielded function (re)starts it."""
    executable = shutil.which("chroma")
    if executable is None:  # pragma: no cover - the chroma extra installs it
        pytest.fail("the chroma command is not installed (pip install chromadb)")
    port, path = _free_port(), tmp_path / "server-data"
    state: dict[str, Any] = {}

    def stop() -> None:
        process = state.pop("process", None)
        if process is not None:
            process.terminate()
            process.wait(timeout=30)

    def start() -> Any:
        stop()
        log = open(tmp_path / "server.log", "ab")  # noqa: SIM115 - closed with the process
        state["process"] = subprocess.Popen(
            [executable, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                client = chromadb.HttpClient(host="127.0.0.1", port=port)
                client.heartbeat()
                return client
            except Exception:
                if state["process"].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "server.log").read_text()[-2000:]) from None
                time.sleep(0.2)

    try:
        yield start
    finally:
        stop()


def test_chroma_backend_over_a_server_survives_a_restart(encoder, tmp_path, chroma_server) -> None:
    client = chroma_server()
    index = build(client, encoder, name="served")
    check_serves(index)
    index.save(tmp_path / "idx")
    client = chroma_server()  # stop and start the server on the same data
    reopened = MatryoshkaIndex.load(tmp_path / "idx", chroma_client=client, encoder=encoder)
    assert len(reopened) == 6
    assert client.get_collection("served", embedding_function=None).count() == 6
    check_serves(reopened)


def test_embedding_function_over_a_server(encoder, chroma_server) -> None:
    client = chroma_server()
    ef = MatryoshkaEmbeddingFunction(encoder, truncate_dim=64)
    get_or_create_collection(client, "docs", ef).add(ids=list(DOCS), documents=list(DOCS.values()))
    client = chroma_server()
    docs = get_or_create_collection(client, "docs", ef)
    assert docs.count() == 6
    assert docs.query(query_texts=["what processes are running"], n_results=1)["ids"] == [["ps"]]
    with pytest.raises(ValueError, match=r"holds 64-dim embeddings"):
        get_or_create_collection(
            client, "docs", MatryoshkaEmbeddingFunction(encoder, truncate_dim=128)
        )
