"""Bulk ingest on a local Ray cluster (2 CPUs): embed on an actor pool, write a local index from
the driver and a PostgreSQL index from the workers."""

from __future__ import annotations

import hashlib
import json
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


# -- adversarial rows: every row is checked as add_vectors checks it, before anything is written --
def rows_dataset(bad: dict[str, Any], at: int = 150, n: int = 200) -> Any:
    """``n`` good rows with ``bad`` merged into row ``at`` (past the first batches)."""
    rows = [
        {"id": f"d{i}", "text": f"document {i}", "meta": json.dumps({"i": i})} for i in range(n)
    ]
    rows[at] = {**rows[at], **bad}
    return ray.data.from_items(rows)


BAD_ROWS = [
    # D6: an int id became the string "5"
    (
        [{"id": i, "text": f"t{i}", "meta": "{}"} for i in range(3)],
        TypeError,
        r"dataset row 0: column 'id' must be a str, got int64: .*0",
    ),
    # D6: a missing text became the text "None"
    ({"text": None}, TypeError, r"dataset row 150 \(id 'd150'\): column 'text' must be a str to "),
    (
        {"text": "   "},
        ValueError,
        r"dataset row 150 \(id 'd150'\): column 'text' is an empty string",
    ),
    ({"id": "d3"}, ValueError, r"duplicate id 'd3': dataset rows 3 and 150"),
    ({"id": ""}, ValueError, r"dataset row 150: column 'id' is an empty string"),
    # D10 through ingest: the id and text rules of add_texts
    ({"id": "d\x00150"}, ValueError, r"dataset row 150: column 'id' holds a NUL character"),
    ({"text": "a\x00b"}, ValueError, r"row 150 \(id 'd150'\): column 'text' holds a NUL character"),
    ({"id": "x" * 3000}, ValueError, r"dataset row 150: column 'id' is 3,000 bytes long"),
    (
        {"meta": "{not json"},
        ValueError,
        r"row 150 \(id 'd150'\): column 'meta' is not a JSON object",
    ),
    (
        {"meta": json.dumps({"k": [1, 2]})},
        TypeError,
        r"row 150 \(id 'd150'\): column 'meta'\['k'\] must be a str, int, float, bool or None",
    ),
    (
        {"meta": json.dumps({"k": 2**63})},
        ValueError,
        r"row 150 \(id 'd150'\): column 'meta'\['k'\] = 9223372036854775808 is out of range",
    ),
]


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    BAD_ROWS,
    ids=[
        "int ids",
        "None text",
        "blank text",
        "duplicate id",
        "empty id",
        "NUL id",
        "NUL text",
        "3 kB id",
        "bad JSON metadata",
        "list metadata",
        "int past 64 bits",
    ],
)
def test_a_bad_row_fails_the_ingest_naming_it_and_nothing_is_written(
    cluster, rows, error, message
) -> None:
    from matryoshka_retrieval.ray import ingest

    index = MatryoshkaIndex(make_encoder(), coarse_dim=8)
    dataset = ray.data.from_items(rows) if isinstance(rows, list) else rows_dataset(rows)
    with pytest.raises(error, match=message):
        ingest(dataset, index, make_encoder, batch_size=50, metadata_column="meta")
    assert len(index) == 0


def test_an_id_already_in_the_index_fails_the_ingest_before_any_write(cluster) -> None:
    # D6: the local add refuses an existing id; ingest refuses it before its first batch
    from matryoshka_retrieval.ray import ingest

    index = MatryoshkaIndex(make_encoder(), coarse_dim=8)
    index.add_texts(["kept"], ids=["d120"])
    with pytest.raises(ValueError, match=r"already in the index, for example \['d120'\] "):
        ingest(rows_dataset({}), index, make_encoder, batch_size=50, metadata_column="meta")
    assert index.ids() == ["d120"]


def test_a_bad_row_is_refused_before_a_postgres_index_is_written(cluster) -> None:
    # D6 on the server path: the workers never start writing
    from matryoshka_retrieval.ray import ingest

    index = MatryoshkaIndex(make_encoder(), coarse_dim=8, **pg())
    with pytest.raises(TypeError, match=r"row 150 \(id 'd150'\): column 'text' must be a str"):
        ingest(rows_dataset({"text": None}), index, make_encoder, workers=2, batch_size=50)
    assert len(index) == 0
