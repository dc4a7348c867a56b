"""Adding, replacing, deleting; bad input is rejected and leaves the index as it was."""

from __future__ import annotations

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex, UnknownIdError
from pg_server import pg


@pytest.fixture(params=["exact", "postgres"])
def index(request, corpus, ids, metadatas):
    """500 records, in a local index and in one on the PostgreSQL test server."""
    server = pg() if request.param == "postgres" else {}
    built = MatryoshkaIndex(coarse_dim=32, device="cpu", **server)
    built.add_vectors(
        corpus[:500],
        ids=ids[:500],
        texts=[f"text {i}" for i in range(500)],
        metadatas=metadatas[:500],
    )
    return built


def snapshot(index, queries):
    return len(index), [h.ids for h in index.search_vectors(queries[:5], k=5)]


def test_generated_ids_are_returned_and_unique(corpus) -> None:
    index = MatryoshkaIndex(coarse_dim=32, device="cpu")
    ids = index.add_vectors(corpus[:20])
    assert len(ids) == len(set(ids)) == 20 and len(index) == 20
    assert index.get(ids[:2])[1].id == ids[1]


def test_get_returns_records_in_order_and_skips_unknown(index, corpus) -> None:
    records = index.get(["doc3", "nope", "doc1"], include_vectors=True)
    assert [r.id for r in records] == ["doc3", "doc1"]
    assert records[0].text == "text 3" and records[0].metadata["year"] == 1993
    np.testing.assert_allclose(records[1].vector, corpus[1], atol=1e-6)


def test_delete_removes_from_search_and_len(index, queries) -> None:
    top = index.search(queries[0], k=3).ids
    index.delete(top[:2])
    assert len(index) == 498
    after = index.search(queries[0], k=3).ids
    assert not set(top[:2]) & set(after) and after[0] == top[2]
    assert index.get(top[:2]) == []


def test_deleted_id_can_be_added_again(index, corpus) -> None:
    index.delete(["doc0"])
    index.add_vectors(corpus[:1], ids=["doc0"])
    assert index.search(corpus[0], k=1)[0].id == "doc0" and len(index) == 500


def test_replace_overwrites_vector_text_and_metadata(index, corpus) -> None:
    index.add_vectors(
        corpus[600:601], ids=["doc5"], texts=["new"], metadatas=[{"v": 2}], on_conflict="replace"
    )
    assert len(index) == 500
    hit = index.search(corpus[600], k=1)[0]
    assert (hit.id, hit.text, hit.metadata) == ("doc5", "new", {"v": 2})
    assert "doc5" not in index.search(corpus[5], k=3).ids[:1]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda i, c: i.add_vectors(c[:3, :50]),
            ValueError,
            r"vectors have 50 dims but this index stores 96-dim",
        ),
        (
            lambda i, c: i.add_vectors(np.vstack([c[:2], np.full((1, 96), np.nan)])),
            ValueError,
            r"row 2 contains NaN",
        ),
        (
            lambda i, c: i.add_vectors(np.vstack([c[:1], np.full((1, 96), np.inf)])),
            ValueError,
            r"row 1 contains infinity",
        ),
        (
            lambda i, c: i.add_vectors(c[:3], ids=["x", "y", "x"]),
            ValueError,
            r"duplicate id 'x' in this batch \(ids\[2\]\)",
        ),
        (
            lambda i, c: i.add_vectors(c[:2], ids=["new1", "doc7"]),
            ValueError,
            r"already in the index, for example \['doc7'\].*on_conflict='replace'",
        ),
        (lambda i, c: i.add_vectors(c[:2], ids=["a"]), ValueError, r"got 1 ids for 2 vectors"),
        (
            lambda i, c: i.add_vectors(c[:2], ids=["a", 3]),
            TypeError,
            r"ids\[1\] must be a str, got int",
        ),
        (
            lambda i, c: i.add_vectors(c[:1], metadatas=[{"k": [1]}]),
            TypeError,
            r"metadatas\[0\]\['k'\] must be a str, int, float, bool or None",
        ),
        (
            lambda i, c: i.add_vectors(c[:1], metadatas=[{"$k": 1}]),
            ValueError,
            r"metadatas\[0\] key '\$k'",
        ),
        (lambda i, c: i.add_vectors(c[:2], texts=["a"]), ValueError, r"got 1 texts for 2 vectors"),
        (
            lambda i, c: i.add_vectors(c[:1], on_conflict="skip"),
            ValueError,
            r"on_conflict='skip' must be",
        ),
        (
            lambda i, c: i.delete(["doc1", "ghost"]),
            UnknownIdError,
            r"1 id\(s\) not in the index, for example \['ghost'\]; nothing was deleted",
        ),
        (lambda i, c: i.search(c[0], k=0), ValueError, r"k must be a positive int, got 0"),
        (
            lambda i, c: i.search(c[0], k=2.5),
            ValueError,
            r"k must be a positive int, got 2.5",
        ),
        (
            lambda i, c: i.search(c[0, :10], k=3),
            ValueError,
            r"queries have 10 dims but this index stores 96-dim",
        ),
        (
            lambda i, c: i.search_vectors(np.full((2, 96), np.nan)),
            ValueError,
            r"query_vectors row 0 contains NaN",
        ),
    ],
)
def test_bad_input_raises_and_changes_nothing(index, corpus, queries, call, error, message) -> None:
    before = snapshot(index, queries)
    with pytest.raises(error, match=message):
        call(index, corpus)
    assert snapshot(index, queries) == before
    assert index.get(["doc1"])[0].id == "doc1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"coarse_dim": 200}, r"coarse_dim / stage dim 200 is out of range.*dimension 96"),
        ({"coarse_dim": 30, "precision": "binary"}, r"coarse_dim=30 must be a multiple of 8"),
        ({"precision": "int4"}, r"precision='int4' is not supported"),
        ({"backend": "ivf"}, r"backend='ivf' is not supported"),
        ({"rescore_multiplier": 0}, r"rescore_multiplier must be a positive int, got 0"),
        ({"stages": [(32, 100), (16, 50)]}, r"stage dims must not decrease"),
        ({"stages": [(16, 100), (32, 200)]}, r"cannot keep more candidates than it receives"),
        (
            {"stages": [(16, 100)], "coarse_dim": 8},
            r"coarse_dim=8 disagrees with stages=\[\(16, 100\)\]",
        ),
        ({"coarse_dim": None, "precision": "int8"}, r"needs a coarse_dim"),
    ],
)
def test_bad_configuration_is_rejected(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        MatryoshkaIndex(dim=96, device="cpu", **options)


def test_configuration_is_checked_at_first_add_without_dim(corpus) -> None:
    index = MatryoshkaIndex(coarse_dim=128, device="cpu")
    with pytest.raises(ValueError, match=r"128 is out of range.*dimension 96"):
        index.add_vectors(corpus[:2])
    assert len(index) == 0


def test_encoder_of_another_width_is_rejected(corpus) -> None:
    from matryoshka_retrieval import CallableEncoder

    index = MatryoshkaIndex(coarse_dim=32, device="cpu")
    index.add_vectors(corpus[:3])
    with pytest.raises(ValueError, match=r"outputs 64-dim vectors but this index stores 96-dim"):
        index.encoder = CallableEncoder(lambda t: np.ones((len(t), 64)), dim=64)


def test_delete_can_ignore_unknown_ids(index) -> None:
    assert index.delete(["doc1", "ghost"], missing="ignore") == 1
    assert len(index) == 499 and index.get(["doc1"]) == []
    assert index.delete(["ghost"], missing="ignore") == 0
    with pytest.raises(ValueError, match=r"missing='skip' must be 'error' or 'ignore'"):
        index.delete(["doc2"], missing="skip")


def test_ids_lists_the_live_records_in_the_order_they_were_added(index) -> None:
    index.delete(["doc1", "doc3"])
    ids = index.ids()
    assert len(ids) == len(index) and ids[:3] == ["doc0", "doc2", "doc4"]


def test_ids_takes_a_filter_and_checks_it(index) -> None:
    index.add_vectors(np.ones((2, index.dim)), ids=["m1", "m2"], metadatas=[{"t": 1}, {"t": 2}])
    assert index.ids(filter={"t": {"$gte": 1}}) == ["m1", "m2"]
    with pytest.raises(ValueError, match=r"unknown filter operator '\$like'"):
        index.ids(filter={"t": {"$like": 1}})
