from __future__ import annotations

import numpy as np
import pytest

from conftest import exact_top
from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index import compile_filter
from pg_server import pg

BACKENDS = {
    "float32": {"coarse_dim": 32},
    "int8": {"coarse_dim": 32, "precision": "int8"},
    "binary": {"coarse_dim": 32, "precision": "binary"},
    "exact": {"coarse_dim": None},
    "hnsw": {"coarse_dim": 32, "backend": "hnsw"},
    "cascade": {"stages": [(16, 100), (48, 30)]},
    "torch-cpu": {"coarse_dim": 32, "rerank": "torch", "device": "cpu"},
    "postgres": {"coarse_dim": 32, "backend": "postgres"},
    "postgres-binary": {"coarse_dim": 32, "backend": "postgres", "precision": "binary"},
    "postgres-exact": {"coarse_dim": None, "backend": "postgres"},
}


@pytest.fixture(scope="module")
def indexes(corpus, ids, metadatas):
    built = {}
    for name, options in BACKENDS.items():
        if options.get("backend") == "postgres":
            options = pg(**options)
        index = MatryoshkaIndex(**{"device": "cpu", **options})
        index.add_vectors(corpus, ids=ids, metadatas=metadatas)
        built[name] = index
    return built


def _server(backend: str) -> dict[str, object]:
    """The options that put an index on the test server (none for a local backend)."""
    return pg() if backend == "postgres" else {}


def mask(metadatas, predicate):
    return np.array([predicate(m) for m in metadatas])


CASES = [
    ({"group": "b"}, lambda m: m["group"] == "b"),
    ({"group": {"$eq": "b"}}, lambda m: m["group"] == "b"),
    ({"group": {"$ne": "b"}}, lambda m: m["group"] != "b"),
    ({"year": {"$gt": 2015}}, lambda m: m["year"] > 2015),
    ({"year": {"$gte": 2015}}, lambda m: m["year"] >= 2015),
    ({"year": {"$lt": 1993}}, lambda m: m["year"] < 1993),
    ({"year": {"$lte": 1993}}, lambda m: m["year"] <= 1993),
    ({"group": {"$in": ["a", "c"]}}, lambda m: m["group"] in ("a", "c")),
    ({"group": {"$nin": ["a", "c"]}}, lambda m: m["group"] not in ("a", "c")),
    (
        {"$and": [{"group": "a"}, {"year": {"$gte": 2000}}]},
        lambda m: m["group"] == "a" and m["year"] >= 2000,
    ),
    ({"$or": [{"group": "a"}, {"year": 1991}]}, lambda m: m["group"] == "a" or m["year"] == 1991),
    ({"group": "c", "year": {"$lt": 2000}}, lambda m: m["group"] == "c" and m["year"] < 2000),
    ({"rare": True}, lambda m: m["rare"] is True),
]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(("where", "predicate"), CASES, ids=[str(c[0]) for c in CASES])
def test_filtered_search_matches_only_and_fills_k(
    indexes, name, where, predicate, corpus, queries, metadatas
) -> None:
    allowed = mask(metadatas, predicate)
    hits = indexes[name].search_vectors(queries[:5], k=10, filter=where)
    for hit_list in hits:
        assert len(hit_list) == min(10, int(allowed.sum()))  # k hits whenever k records match
        for hit in hit_list:
            assert predicate(hit.metadata), (hit.id, hit.metadata)
    if name in ("exact", "postgres-exact"):
        top, _ = exact_top(corpus, queries[:5], 10, allowed)
        assert [[int(h.id[3:]) for h in hl] for hl in hits] == top.tolist()


def test_rare_filter_finds_every_match_even_far_from_the_query(indexes, queries, metadatas) -> None:
    rare = {f"doc{i}" for i, m in enumerate(metadatas) if m["rare"]}
    assert len(rare) == 12
    for name in BACKENDS:
        hits = indexes[name].search(queries[0], k=12, filter={"rare": True})
        assert set(hits.ids) == rare, name


@pytest.mark.parametrize("name", ["float32", "postgres"])
def test_filter_matching_nothing_returns_no_hits(indexes, queries, name) -> None:
    assert len(indexes[name].search(queries[0], k=5, filter={"group": "zzz"})) == 0


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_missing_key_matches_only_negations(backend) -> None:
    index = MatryoshkaIndex(dim=4, coarse_dim=2, device="cpu", **_server(backend))
    index.add_vectors(np.eye(4), ids=list("abcd"), metadatas=[{"k": 1}, {"k": 2}, {}, None])
    q = np.ones(4)
    assert set(index.search(q, k=4, filter={"k": {"$ne": 1}}).ids) == {"b", "c", "d"}
    assert set(index.search(q, k=4, filter={"k": {"$nin": [2]}}).ids) == {"a", "c", "d"}
    assert set(index.search(q, k=4, filter={"k": {"$gte": 1}}).ids) == {"a", "b"}


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_comparisons_are_type_strict(backend) -> None:
    index = MatryoshkaIndex(dim=4, coarse_dim=2, device="cpu", **_server(backend))
    index.add_vectors(np.eye(4)[:2], ids=["num", "str"], metadatas=[{"v": 5}, {"v": "5"}])
    assert index.search(np.ones(4), k=2, filter={"v": 5}).ids == ["num"]
    assert index.search(np.ones(4), k=2, filter={"v": "5"}).ids == ["str"]


@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        ({"year": {"$regex": "x"}}, ValueError, r"unknown filter operator '\$regex' on 'year'"),
        ({"$not": [{"a": 1}]}, ValueError, r"unknown filter operator '\$not'"),
        ({"year": {"$gt": 1, "$lt": 5}}, ValueError, r"exactly one operator"),
        ({"year": {"$in": []}}, ValueError, r"\$in on 'year' needs a non-empty list"),
        ({"year": {"$in": "abc"}}, ValueError, r"needs a non-empty list"),
        ({"$and": {"a": 1}}, ValueError, r"\$and needs a list of filters"),
        ({"$or": []}, ValueError, r"\$or needs at least one filter"),
        ({}, ValueError, r"must not be empty"),
        ({"year": [1, 2]}, TypeError, r"filter value for 'year' must be a str, int, float or bool"),
        ("year = 1", TypeError, r"a filter must be a dict"),
    ],
)
@pytest.mark.parametrize("name", ["float32", "postgres"])
def test_bad_filters_raise_clear_errors(indexes, queries, where, error, message, name) -> None:
    index = indexes[name]
    before = (len(index), index.search(queries[0], k=5, filter={"group": "a"}).to_list())
    with pytest.raises(error, match=message):
        index.search(queries[0], k=5, filter=where)
    assert (len(index), index.search(queries[0], k=5, filter={"group": "a"}).to_list()) == before


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_filter_on_a_non_ascii_key_finds_its_record(backend) -> None:
    index = MatryoshkaIndex(coarse_dim=None, **_server(backend))
    v = np.eye(4)
    index.add_vectors(v[:2], ids=["a", "b"], metadatas=[{"café": 1}, {"café": 2}])
    assert index.search(v[0], k=2, filter={"café": 1}).ids == ["a"]


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_true_is_not_one_and_numbers_are_not_strings(backend) -> None:
    index = MatryoshkaIndex(coarse_dim=None, **_server(backend))
    index.add_vectors(
        np.eye(4)[:3], ids=["t", "one", "s"], metadatas=[{"x": True}, {"x": 1}, {"x": "abc"}]
    )
    assert index.search(np.ones(4), k=3, filter={"x": 1}).ids == ["one"]
    assert index.search(np.ones(4), k=3, filter={"x": {"$gt": 0}}).ids == ["one"]
    assert index.search(np.ones(4), k=3, filter={"x": {"$gt": "a"}}).ids == ["s"]


def test_compile_filter_is_parameterised() -> None:
    sql, params = compile_filter({"name": "x'; DROP TABLE records; --"})
    assert "DROP" not in sql and params[1] == "x'; DROP TABLE records; --"
