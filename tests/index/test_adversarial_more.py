"""More of the adversarial user: the input limits every backend shares, and crafted manifests.

The rules are stated once (``_validation``: the int64 range, the filter depth, the id size, no
NUL in ids and texts) and each layer imports them; the local index applies them exactly as a
server must, so an index moves between backends intact. A refused call names the value and the
limit and leaves the index exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import CallableEncoder, IndexCorruptedError, MatryoshkaIndex

DIM = 16
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def index() -> MatryoshkaIndex:
    index = MatryoshkaIndex(coarse_dim=8, device="cpu")
    index.add_vectors(unit(20), ids=[f"r{i}" for i in range(20)], texts=["t"] * 20)
    return index


def snapshot(index: MatryoshkaIndex) -> tuple[Any, ...]:
    records = [(r.id, r.text, r.metadata) for r in index.get(index.ids())]
    return len(index), records, index.search_vectors(unit(2, seed=9), k=3)[0].ids


# -- D20: the int64 range, defined once ----------------------------------------------------------
def test_the_int64_extremes_are_stored_and_found_by_filters(tmp_path: Path) -> None:
    # D20: -2**63 was refused as metadata although filters accepted it
    index = MatryoshkaIndex(coarse_dim=8, device="cpu")
    index.add_vectors(
        unit(3),
        ids=["min", "max", "zero"],
        metadatas=[{"n": INT64_MIN}, {"n": INT64_MAX}, {"n": 0}],
    )
    for where, expected in [
        ({"n": INT64_MIN}, ["min"]),
        ({"n": INT64_MAX}, ["max"]),
        ({"n": {"$lte": INT64_MIN}}, ["min"]),
        ({"n": {"$gte": INT64_MAX}}, ["max"]),
        ({"n": {"$in": [INT64_MIN, INT64_MAX]}}, ["min", "max"]),
    ]:
        assert index.ids(filter=where) == expected, where
    index.save(tmp_path / "idx")
    loaded = MatryoshkaIndex.load(tmp_path / "idx", device="cpu")
    assert [r.metadata for r in loaded.get(["min", "max"])] == [{"n": INT64_MIN}, {"n": INT64_MAX}]
    assert loaded.ids(filter={"n": INT64_MIN}) == ["min"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(INT64_MIN - 1, "-9223372036854775809"), (INT64_MAX + 1, "9223372036854775808")],
    ids=["below INT64_MIN", "above INT64_MAX"],
)
def test_an_int_just_past_64_bits_is_refused_naming_it_and_the_range(
    index: MatryoshkaIndex, value: int, shown: str
) -> None:
    # D20: the limits are the int64 range, both ends included, and the message states it
    before = snapshot(index)
    with pytest.raises(
        ValueError,
        match=rf"metadatas\[0\]\['n'\] = {shown} is out of range: ints must fit in 64 bits "
        r"\(INT64_MIN = -2\*\*63 <= value <= INT64_MAX = 2\*\*63 - 1\)",
    ):
        index.add_vectors(unit(1, seed=3), ids=["new"], metadatas=[{"n": value}])
    assert snapshot(index) == before


@pytest.mark.parametrize("value", [INT64_MIN - 1, INT64_MAX + 1])
def test_a_filter_int_just_past_64_bits_is_refused_naming_it(
    index: MatryoshkaIndex, value: int
) -> None:
    # D20: the filter layer refuses exactly what the metadata layer refuses
    with pytest.raises(
        ValueError, match=rf"filter value {value} for 'n' \$lt is out of range: ints must fit in 64"
    ):
        index.search_vectors(unit(1), k=1, filter={"n": {"$lt": value}})


def test_a_huge_metadata_int_is_refused_without_printing_it(index: MatryoshkaIndex) -> None:
    # D20: an int of thousands of digits cannot be printed (Python refuses), so its size is named
    with pytest.raises(ValueError, match=r"= <an int of 16610 bits> is out of range"):
        index.add_vectors(unit(1, seed=3), ids=["new"], metadatas=[{"n": 10**5000}])


def test_each_limit_is_defined_once_and_shared_by_every_layer() -> None:
    # D20: filters, the CLI and the validation layer disagreed about -2**63
    from matryoshka_retrieval import _validation
    from matryoshka_retrieval.cli import _options
    from matryoshka_retrieval.index import filters

    assert (_validation.INT64_MIN, _validation.INT64_MAX) == (INT64_MIN, INT64_MAX)
    assert filters.MAX_FILTER_DEPTH is _validation.MAX_FILTER_DEPTH
    assert _options.MAX_FILTER_DEPTH is _validation.MAX_FILTER_DEPTH
    assert _options.where_filter(f'{{"n": {INT64_MIN}}}') == {"n": INT64_MIN}


# -- D10: NUL characters and the id size ---------------------------------------------------------
BAD_RECORDS: list[tuple[str, dict[str, Any], str]] = [
    (
        "NUL in an id",
        {"ids": ["ok", "a\x00b"]},
        r"ids\[1\] holds a NUL character \(U\+0000\) at position 1, which no backend can store",
    ),
    (
        "NUL in a text",
        {"ids": ["x", "y"], "texts": ["fine", "cut\x00here"]},
        r"texts\[1\] holds a NUL character \(U\+0000\) at position 3",
    ),
    (
        "a 3 MB id",
        {"ids": ["ok", "x" * 3_000_000]},
        r"ids\[1\] is 3,000,000 bytes long in UTF-8 \('xxxx.*: the limit is MAX_ID_BYTES = 2048",
    ),
    (
        "an id of 2049 bytes",
        {"ids": ["ok", "x" * 2049]},
        r"ids\[1\] is 2,049 bytes long .* the limit is MAX_ID_BYTES = 2048 bytes",
    ),
    (
        "an id of 1025 two-byte characters",
        {"ids": ["ok", "é" * 1025]},
        r"ids\[1\] is 2,050 bytes long in UTF-8",
    ),
]


@pytest.mark.parametrize(
    ("records", "message"), [c[1:] for c in BAD_RECORDS], ids=[c[0] for c in BAD_RECORDS]
)
def test_an_id_or_text_no_backend_can_store_is_refused_by_name(
    index: MatryoshkaIndex, records: dict[str, Any], message: str
) -> None:
    # D10: the local index stored these, a PostgreSQL server gave raw driver errors
    before = snapshot(index)
    with pytest.raises(ValueError, match=message):
        index.add_vectors(unit(2, seed=5), **records)
    assert snapshot(index) == before


def test_an_id_of_exactly_the_limit_is_stored_and_found(index: MatryoshkaIndex) -> None:
    # D10: the limit itself is allowed (2048 bytes, counted in UTF-8: 1024 two-byte characters)
    long_ids = ["x" * 2048, "é" * 1024]
    index.add_vectors(unit(2, seed=6), ids=long_ids)
    assert [r.id for r in index.get(long_ids)] == long_ids
    assert index.delete(long_ids) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda i: i.delete(["r1", "r\x002"], missing="ignore"), r"ids\[1\] holds a NUL character"),
        (lambda i: i.get(["y" * 5000]), r"ids\[0\] is 5,000 bytes long"),
    ],
    ids=["delete", "get"],
)
def test_lookups_refuse_an_id_no_record_can_have(index: MatryoshkaIndex, call, message) -> None:
    # D10: the same rule on every path that takes ids, so no call reaches a server with them
    before = snapshot(index)
    with pytest.raises(ValueError, match=message):
        call(index)
    assert snapshot(index) == before


def test_add_texts_refuses_a_nul_text_before_embedding_it() -> None:
    # D10 through add_texts: nothing is sent to the encoder, nothing is stored
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return unit(len(texts))

    index = MatryoshkaIndex(CallableEncoder(embed, dim=DIM), coarse_dim=8, device="cpu")
    with pytest.raises(ValueError, match=r"texts\[1\] holds a NUL character \(U\+0000\)"):
        index.add_texts(["fine", "bad\x00"], ids=["a", "b"])
    assert calls == [] and len(index) == 0


# -- D18: manifests nested past any recursion limit ----------------------------------------------
@pytest.fixture
def saved(tmp_path: Path) -> Path:
    index = MatryoshkaIndex(coarse_dim=8, device="cpu")
    index.add_vectors(unit(10), ids=[f"s{i}" for i in range(10)])
    index.save(tmp_path / "idx")
    return tmp_path / "idx"


def _nested_field(path: Path, field: str, opening: str, closing: str) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest[field] = "@NESTED@"
    text = json.dumps(manifest).replace('"@NESTED@"', opening * 100_000 + closing * 100_000)
    (path / "manifest.json").write_text(text)


def test_a_manifest_of_100k_nested_arrays_is_a_corrupted_index(saved: Path) -> None:
    # D18: a raw RecursionError came out of load
    (saved / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(IndexCorruptedError, match=r"manifest .*manifest.json is nested too deep"):
        MatryoshkaIndex.load(saved)


@pytest.mark.parametrize(
    ("field", "opening", "closing"),
    [("stages", "[", "]"), ("files", '{"a":', "}"), ("model_name", "[", "]")],
)
def test_a_deeply_nested_manifest_field_is_a_corrupted_index(
    saved: Path, field: str, opening: str, closing: str
) -> None:
    # D18: the nesting may sit inside any field, as arrays or objects
    _nested_field(saved, field, opening, closing)
    with pytest.raises(IndexCorruptedError, match=r"nested too deep to be a manifest"):
        MatryoshkaIndex.load(saved)


def test_a_manifest_nested_just_under_the_parser_limit_is_refused_by_its_checks(
    saved: Path,
) -> None:
    # D18: nesting the JSON parser can read still fails the manifest's own checks, by name
    nested: list[Any] = []
    for _ in range(500):
        nested = [nested]
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["stages"] = nested
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        IndexCorruptedError,
        match=r"the manifest .* is invalid: (a field is nested too deep|stages\[0\] must be a)",
    ):
        MatryoshkaIndex.load(saved)
