"""Bulk ingest on a local Ray cluster (2 CPUs): embed on an actor pool, write a local index from
the driver and a PostgreSQL index from the workers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import CallableEncoder, MatryoshkaIndex
from pg_server import pg

ray = pytest.importorskip("ray")  # the `ray` extra; installed by `dev`

DIM = 32


def _vectors(texts: list[str]) -> np.ndarray:
    """A deterministic embedding: each text's own vector, the same in every process."""
    rows = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        rows.append(np.random.default_rng(seed).normal(size=DIM))
    return np.asarray(rows, dtype=np.float32)


def make_encoder() -> Any:
    return CallableEncoder(_vectors, dim=DIM, model_name="hash-encoder")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # the workers import this module (its encoder) and the library from these folders
    tests, src = Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[2] / "src"
    path = os.pathsep.join([str(src), str(tests), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()


def texts_dataset(n: int) -> Any:
    rows = [
        {"id": f"d{i}", "text": f"document {i}", "meta": {"i": i, "odd": i % 2 == 1}}
        for i in range(n)
    ]
    return ray.data.from_items(rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_into_a_local_index_embeds_every_text_once(cluster, workers) -> None:
    from matryoshka_retrieval.ray import ingest

    index = MatryoshkaIndex(make_encoder(), coarse_dim=8)
    written = ingest(
        texts_dataset(300),
        index,
        make_encoder,
        workers=workers,
        batch_size=64,
        metadata_column="meta",
    )
    assert written == len(index) == 300
    hit = index.search("document 123", k=1)[0]
    assert (hit.id, hit.text, hit.metadata) == ("d123", "document 123", {"i": 123, "odd": True})
    np.testing.assert_allclose(
        index.get(["d7"], include_vectors=True)[0].vector,
        _vectors(["document 7"])[0] / np.linalg.norm(_vectors(["document 7"])[0]),
        atol=1e-6,
    )


def test_ingest_into_postgres_writes_from_the_workers(cluster) -> None:
    from matryoshka_retrieval.ray import ingest

    index = MatryoshkaIndex(make_encoder(), coarse_dim=8, **pg())
    written = ingest(
        texts_dataset(500), index, make_encoder, workers=2, batch_size=50, metadata_column="meta"
    )
    assert written == len(index) == 500
    assert len(index.ids(filter={"odd": True})) == 250
    assert index.search("document 42", k=1).ids == ["d42"]


def test_bad_pool_settings_are_refused(cluster) -> None:
    from matryoshka_retrieval.ray import embed

    with pytest.raises(ValueError, match=r"workers must be a positive int, got 0"):
        embed(texts_dataset(3), make_encoder, workers=0)
