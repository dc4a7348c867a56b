from __future__ import annotations

import json
import random
import sqlite3
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index import compile_filter
from matryoshka_retrieval.index import filters as filters_module
from matryoshka_retrieval.index.filters import (
    MAX_FILTER_CONDITIONS,
    MAX_FILTER_DEPTH,
    Comparison,
    Logical,
    parse_filter,
)
from pg_server import pg

AWKWARD_KEYS = [
    "café",
    "e\u0301",  # "é" decomposed: a different key from the composed one
    "ключ",
    "键",
    "😀",
    'a"b',
    '"',
    "'",
    "a'b",
    "a\\b",
    "\\u00e9",
    "a.b",
    "a.b.c",
    "a[0]",
    "[0]",
    "0",
    "2020",
    "a b",
    " ",
    "a\tb",
    "\n",
    "\u2028",
    "\x7f",
    "a\x01b",
    "%",
    "_",
    "*",
    "x$",
    "null",
    "key",
    "value",
    "metadata",
]


@pytest.fixture(params=["exact", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each filter behaviour holds for the local index and for one on the PostgreSQL server."""
    return str(request.param)


def _index(
    metadatas: list[dict[str, Any] | None], coarse_dim: int | None = None, backend: str = "exact"
) -> MatryoshkaIndex:
    n = len(metadatas)
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    server = pg() if backend == "postgres" else {}
    index = MatryoshkaIndex(coarse_dim=coarse_dim, device="cpu", **server)
    index.add_vectors(vectors, ids=[f"r{i}" for i in range(n)], metadatas=metadatas)
    return index


def _found(index: MatryoshkaIndex, where: Any) -> set[str]:
    return set(index.search(np.ones(8), k=len(index), filter=where).ids)


@pytest.mark.parametrize("coarse_dim", [None, 4])
@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=ascii)
def test_any_storable_key_can_be_filtered(key: str, coarse_dim: int | None, backend: str) -> None:
    index = _index([{key: 1}, {key: 2}, {"other": 1}, {key + "x": 1}], coarse_dim, backend)
    assert _found(index, {key: 1}) == {"r0"}
    assert _found(index, {key: {"$in": [2, 3]}}) == {"r1"}
    assert _found(index, {key: {"$gte": 1}}) == {"r0", "r1"}
    assert _found(index, {key: {"$ne": 1}}) == {"r1", "r2", "r3"}


def test_keys_match_exactly_not_by_unicode_normalisation(backend: str) -> None:
    index = _index([{"caf\u00e9": 1}, {"cafe\u0301": 1}], backend=backend)
    assert _found(index, {"caf\u00e9": 1}) == {"r0"}
    assert _found(index, {"cafe\u0301": 1}) == {"r1"}


def test_every_awkward_key_in_one_record_is_found(backend: str) -> None:
    index = _index([{key: i for i, key in enumerate(AWKWARD_KEYS)}, {"other": 0}], backend=backend)
    for i, key in enumerate(AWKWARD_KEYS):
        assert _found(index, {key: i}) == {"r0"}, ascii(key)
        assert _found(index, {key: i + 1}) == set(), ascii(key)


MIXED = [
    {"x": True},  # r0
    {"x": 1},  # r1
    {"x": 1.0},  # r2
    {"x": "1"},  # r3
    {"x": "abc"},  # r4
    {"x": False},  # r5
    {"x": 0},  # r6
    {"x": None},  # r7
    {"y": 1},  # r8
    None,  # r9
]
ALL = {f"r{i}" for i in range(len(MIXED))}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"x": 1}, {"r1", "r2"}),
        ({"x": 1.0}, {"r1", "r2"}),
        ({"x": True}, {"r0"}),
        ({"x": False}, {"r5"}),
        ({"x": 0}, {"r6"}),
        ({"x": "1"}, {"r3"}),
        ({"x": {"$gt": 0}}, {"r1", "r2"}),
        ({"x": {"$gt": 5}}, set()),
        ({"x": {"$gte": 0}}, {"r1", "r2", "r6"}),
        ({"x": {"$lt": 1}}, {"r6"}),
        ({"x": {"$lte": 0.5}}, {"r6"}),
        ({"x": {"$gt": "1"}}, {"r4"}),
        ({"x": {"$lte": "1"}}, {"r3"}),
        ({"x": {"$in": [1, "abc"]}}, {"r1", "r2", "r4"}),
        ({"x": {"$in": [True]}}, {"r0"}),
        ({"x": {"$in": [0, False]}}, {"r5", "r6"}),
        ({"x": {"$in": ["0", 7.5]}}, set()),
    ],
    ids=str,
)
def test_comparisons_are_type_strict(where: Any, expected: set[str], backend: str) -> None:
    assert _found(_index(MIXED, backend=backend), where) == expected


@pytest.mark.parametrize(
    ("where", "excluded"),
    [
        ({"x": {"$ne": 1}}, {"r1", "r2"}),
        ({"x": {"$ne": True}}, {"r0"}),
        ({"x": {"$ne": "abc"}}, {"r4"}),
        ({"x": {"$nin": [1, True]}}, {"r0", "r1", "r2"}),
        ({"x": {"$nin": ["1", 0]}}, {"r3", "r6"}),
    ],
    ids=str,
)
def test_negations_match_other_types_null_and_missing_keys(
    where: Any, excluded: set[str], backend: str
) -> None:
    # $ne / $nin are the negations of $eq / $in: a value of another type is "not equal", and so
    # are a null value and a missing key.
    assert _found(_index(MIXED, backend=backend), where) == ALL - excluded


def test_huge_int_keeps_its_precision(backend: str) -> None:
    big = 2**63 - 1
    index = _index([{"n": big}, {"n": big - 1}, {"n": float(big)}], backend=backend)
    assert _found(index, {"n": big}) == {"r0"}
    assert _found(index, {"n": {"$in": [big - 1]}}) == {"r1"}
    assert _found(index, {"n": {"$gte": -(2**63)}}) == {"r0", "r1", "r2"}


def test_strings_compare_by_code_point_like_python(backend: str) -> None:
    words = ["a", "B", "é", "z", "😀", "ab", ""]
    index = _index([{"w": w} for w in words], backend=backend)
    for pivot in words:
        expected = {f"r{i}" for i, w in enumerate(words) if w > pivot}
        assert _found(index, {"w": {"$gt": pivot}}) == expected, pivot


def _nested(depth: int, leaf: Any) -> Any:
    where = leaf
    for _ in range(depth):
        where = {"$and": [where]}
    return where


def test_nesting_up_to_the_limit_works(backend: str) -> None:
    index = _index([{"k": 1}, {"k": 2}], backend=backend)
    assert _found(index, _nested(MAX_FILTER_DEPTH, {"k": 2})) == {"r1"}


def test_the_most_conditions_a_filter_may_hold_all_run_in_sqlite(backend: str) -> None:
    index = _index([{"k": 1}, {"k": 999}, {"k": 5000}], backend=backend)
    wide = {"$or": [{"k": i} for i in range(MAX_FILTER_CONDITIONS)]}
    assert _found(index, wide) == {"r0", "r1"}
    chain = {"$and": [{"k": {"$ne": i}} for i in range(MAX_FILTER_CONDITIONS)]}
    assert _found(index, chain) == {"r2"}


def test_long_in_lists_need_one_sql_parameter(backend: str) -> None:
    index = _index([{"k": 1}, {"k": 123_456}, {"k": "s99999"}, {"k": "other"}], backend=backend)
    values: list[Any] = list(range(100_000, 200_000)) + [f"s{i}" for i in range(100_000)]
    _, params = compile_filter({"k": {"$in": values}})
    assert len(params) == 3
    assert _found(index, {"k": {"$in": values}}) == {"r1", "r2"}
    assert _found(index, {"k": {"$nin": values}}) == {"r0", "r3"}


def test_parse_filter_gives_a_backend_neutral_tree() -> None:
    tree = parse_filter({"a": 1, "$or": [{"b": {"$in": ["x", True]}}, {"c": {"$ne": 2.5}}]})
    assert tree == Logical(
        "$and",
        (
            Comparison("a", "$eq", (1,)),
            Logical("$or", (Comparison("b", "$in", ("x", True)), Comparison("c", "$ne", (2.5,)))),
        ),
    )


def _cycle() -> Any:
    filters: list[Any] = []
    filters.append({"$or": filters})
    return {"$or": filters}


BAD_FILTERS = [
    ({"x": 2**64}, ValueError, r"18446744073709551616 .*must fit in 64 bits"),
    ({"x": -(2**63) - 1}, ValueError, r"-9223372036854775809 .*must fit in 64 bits"),
    ({"x": {"$in": [1, 10**5000]}}, ValueError, r"int of 16610 bits.*must fit in 64 bits"),
    ({"x": {"$gt": float("nan")}}, ValueError, r"'x' \$gt must be finite, got nan"),
    ({"x": float("-inf")}, ValueError, r"must be finite, got -inf"),
    (_nested(MAX_FILTER_DEPTH + 1, {"x": 1}), ValueError, r"at most 32 levels deep"),
    (_nested(300, {"x": 1}), ValueError, r"at most 32 levels deep.*\{'\$and': \["),
    (_nested(5000, {"x": 1}), ValueError, r"at most 32 levels deep"),
    (_cycle(), ValueError, r"at most 32 levels deep"),
    (
        {"$or": [{"x": i} for i in range(MAX_FILTER_CONDITIONS + 1)]},
        ValueError,
        r"at most 1000 conditions.*use \$in",
    ),
    ({f"k{i}": i for i in range(5000)}, ValueError, r"at most 1000 conditions.*at 'k1000'"),
    ({"x": {"$lt": True}}, TypeError, r"'x' \$lt needs a number or a str, got bool: True"),
    ({"x": None}, TypeError, r"for 'x' must be a str, int, float or bool, got NoneType: None"),
    ({"x": {"$in": [1, None]}}, TypeError, r"\$in on 'x' must be .* got NoneType"),
    ({"x": {"$nin": [[1]]}}, TypeError, r"\$nin on 'x' must be .* got list: \[1\]"),
    ({"x": np.int64(3)}, TypeError, r"got int64: (np\.int64\()?3"),
    ({"x": b"abc"}, TypeError, r"got bytes: b'abc'"),
    ({"x": {"$in": {1, 2}}}, ValueError, r"\$in on 'x' needs a non-empty list of values, got"),
    ({1: "a"}, TypeError, r"filter keys must be str, got int: 1"),
    ({"": 1}, ValueError, r"unknown filter operator ''"),
    ({"$x": 1}, ValueError, r"unknown filter operator '\$x'"),
    ({"x": {7: 1}}, ValueError, r"unknown filter operator 7 on 'x'"),
    ({"a\x00b": 1}, ValueError, r"filter key 'a\\x00b' holds U\+0000 at position 1"),
    ({"x": "ab\x00"}, ValueError, r"'ab\\x00' holds U\+0000 at position 2"),
    ({"x": "a\ud800"}, ValueError, r"'a\\ud800' is not valid Unicode.*position 1"),
    ({"\udfff": 1}, ValueError, r"filter key '\\udfff' is not valid Unicode"),
    ({"$and": [{"a": 1}, "b = 1"]}, TypeError, r"a filter must be a dict, got str: 'b = 1'"),
    ({"$or": {"a": 1}}, ValueError, r"\$or needs a list of filters, got \{'a': 1\}"),
    ({"x": {"$gt": 1, "$lt": 2}}, ValueError, r"'x' must hold exactly one operator"),
]


@pytest.fixture(scope="module")
def small_index() -> MatryoshkaIndex:
    return _index([{"x": i, "s": str(i)} for i in range(6)] + [{"x": True}, None], coarse_dim=4)


@pytest.mark.parametrize(("where", "error", "message"), BAD_FILTERS)
def test_bad_filters_raise_naming_the_value_and_leave_the_index_unchanged(
    small_index: MatryoshkaIndex, where: Any, error: type[Exception], message: str
) -> None:
    query = np.linspace(-1, 1, 8)
    before = (len(small_index), small_index.search(query, k=8).to_list())
    with pytest.raises(error, match=message):
        small_index.search(query, k=3, filter=where)
    with pytest.raises(error, match=message):
        compile_filter(where)
    assert (len(small_index), small_index.search(query, k=8).to_list()) == before
    assert _found(small_index, {"x": {"$gte": 4}}) == {"r4", "r5"}


def test_a_string_past_sqlites_length_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch, small_index: MatryoshkaIndex
) -> None:
    monkeypatch.setattr(filters_module, "MAX_VALUE_BYTES", 100)
    with pytest.raises(ValueError, match=r"'x' .* is 101 bytes long: the limit is 100 bytes"):
        small_index.search(np.ones(8), k=3, filter={"x": "é" * 50 + "a"})
    assert len(small_index) == 8


def test_an_in_list_past_sqlites_length_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch, small_index: MatryoshkaIndex
) -> None:
    monkeypatch.setattr(filters_module, "MAX_VALUE_BYTES", 100)
    with pytest.raises(ValueError, match=r"values of \$in on 'x' take 1\d\d bytes as JSON: the"):
        small_index.search(np.ones(8), k=3, filter={"x": {"$in": list(range(40))}})
    assert _found(small_index, {"x": {"$in": list(range(3))}}) == {"r0", "r1", "r2"}


# A reference evaluator in plain Python, for random filters over random metadata.


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else None


def _equal(stored: Any, value: Any) -> bool:
    return _kind(stored) is not None and _kind(stored) == _kind(value) and stored == value


def _condition(stored: Any, op: str, value: Any) -> bool:
    if op == "$eq":
        return _equal(stored, value)
    if op == "$ne":
        return not _equal(stored, value)
    if op == "$in":
        return any(_equal(stored, v) for v in value)
    if op == "$nin":
        return not any(_equal(stored, v) for v in value)
    if _kind(stored) != _kind(value) or _kind(stored) is None:
        return False
    return {"$gt": stored > value, "$gte": stored >= value, "$lt": stored < value}.get(
        op, stored <= value
    )


def _reference(where: dict[str, Any], meta: dict[str, Any]) -> bool:
    results = []
    for key, condition in where.items():
        if key in ("$and", "$or"):
            inner = [_reference(sub, meta) for sub in condition]
            results.append(all(inner) if key == "$and" else any(inner))
        else:
            ((op, value),) = (
                condition.items() if isinstance(condition, dict) else (("$eq", condition),)
            )
            results.append(_condition(meta.get(key), op, value))
    return all(results)


VALUES: list[Any] = [True, False, 0, 1, 2, -1, 1.0, 1.5, "", "1", "a", "b", "é"]
KEYS = ["k", 'k"', "ké", "k.k"]


def _random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    if depth < 3 and rng.random() < 0.3:
        return {rng.choice(["$and", "$or"]): [_random_filter(rng, depth + 1) for _ in range(3)]}
    op = rng.choice(["plain", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"])
    if op in ("$in", "$nin"):
        return {rng.choice(KEYS): {op: rng.sample(VALUES, rng.randint(1, 4))}}
    pool = [v for v in VALUES if not isinstance(v, bool)] if op[1:3] in ("gt", "lt") else VALUES
    value = rng.choice(pool)
    return {rng.choice(KEYS): value if op == "plain" else {op: value}}


def test_compiled_sql_agrees_with_a_python_reference_on_random_filters() -> None:
    rng = random.Random(14)
    metas: list[dict[str, Any]] = [
        {k: rng.choice([*VALUES, None]) for k in rng.sample(KEYS, rng.randint(0, len(KEYS)))}
        for _ in range(60)
    ]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE records (row INTEGER PRIMARY KEY, metadata TEXT)")
    conn.executemany(
        "INSERT INTO records VALUES (?, ?)",
        [(i, json.dumps(m, ensure_ascii=False) if m else None) for i, m in enumerate(metas)],
    )
    for _ in range(400):
        where = _random_filter(rng)
        sql, params = compile_filter(where)
        got = {r for (r,) in conn.execute(f"SELECT row FROM records WHERE {sql}", params)}
        assert got == {i for i, m in enumerate(metas) if _reference(where, m)}, where


def test_compiled_postgres_sql_agrees_with_the_python_reference_on_random_filters() -> None:
    import psycopg
    from psycopg.types.json import Jsonb

    from matryoshka_retrieval.index.postgres_filters import compile_pg_filter

    rng = random.Random(14)
    metas: list[dict[str, Any]] = [
        {k: rng.choice([*VALUES, None]) for k in rng.sample(KEYS, rng.randint(0, len(KEYS)))}
        for _ in range(60)
    ]
    table = pg()["table"]
    with psycopg.connect(pg()["dsn"]) as conn:
        conn.execute(f"CREATE TABLE {table} (row int PRIMARY KEY, metadata jsonb NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {table} VALUES (%s, %s)", [(i, Jsonb(m)) for i, m in enumerate(metas)]
            )
        for _ in range(400):
            where = _random_filter(rng)
            sql, params = compile_pg_filter(where)
            rows = conn.execute(f"SELECT row FROM {table} WHERE {sql}", params).fetchall()
            assert {r for (r,) in rows} == {i for i, m in enumerate(metas) if _reference(where, m)}
