"""An adversarial user against the index: bad input, crafted files, crashes and races.

Every bad input must raise a clear error (its type, and a message naming the value) and leave
the index exactly as it was: the same length, records and search results, in memory and after
a reload from disk. Crash and race cases run in real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import IndexCorruptedError, MatryoshkaIndex, UnknownIdError

DIM = 32


def unit(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[MatryoshkaIndex, Path]:
    index = MatryoshkaIndex(coarse_dim=8, device="cpu")
    index.add_vectors(
        unit(200),
        ids=[str(i) for i in range(200)],
        texts=[f"text {i}" for i in range(200)],
        metadatas=[{"n": i, "even": i % 2 == 0} for i in range(200)],
    )
    index.save(tmp_path / "idx")
    return index, tmp_path / "idx"


def state(index: MatryoshkaIndex) -> tuple[Any, ...]:
    hits = [h.to_list() for h in index.search_vectors(unit(5, seed=7), k=5)]
    records = [(r.id, r.text, r.metadata) for r in index.get([str(i) for i in range(0, 200, 17)])]
    return len(index), records, hits


def assert_unchanged(index: MatryoshkaIndex, path: Path, before: tuple[Any, ...]) -> None:
    assert state(index) == before
    assert state(MatryoshkaIndex.load(path, device="cpu")) == before


def surrogate() -> str:
    return "bad\ud800id"


BAD_ADDS: list[tuple[str, Callable[[MatryoshkaIndex], Any], type[Exception], str]] = [
    ("int ids", lambda i: i.add_vectors(unit(2), ids=[1, 2]), TypeError, r"ids\[0\] .* int: 1"),
    ("one str as ids", lambda i: i.add_vectors(unit(2), ids="ab"), TypeError, r"single str"),
    ("empty id", lambda i: i.add_vectors(unit(1), ids=[""]), ValueError, r"ids\[0\] is an empty"),
    (
        "duplicate ids",
        lambda i: i.add_vectors(unit(2), ids=["x", "x"]),
        ValueError,
        r"duplicate id 'x'",
    ),
    (
        "existing id",
        lambda i: i.add_vectors(unit(1), ids=["3"]),
        ValueError,
        r"already in the index, for example \['3'\]",
    ),
    (
        "surrogate in id",
        lambda i: i.add_vectors(unit(1), ids=[surrogate()]),
        ValueError,
        r"ids\[0\] is not valid Unicode: .*surrogate",
    ),
    (
        "surrogate in text",
        lambda i: i.add_vectors(unit(1), ids=["new"], texts=[surrogate()]),
        ValueError,
        r"texts\[0\] is not valid Unicode",
    ),
    (
        "surrogate in metadata value",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=[{"k": surrogate()}]),
        ValueError,
        r"metadatas\[0\]\['k'\] is not valid Unicode",
    ),
    (
        "surrogate in metadata key",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=[{surrogate(): 1}]),
        ValueError,
        r"metadatas\[0\] key .* is not valid Unicode",
    ),
    (
        "int past 64 bits",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=[{"k": 2**64}]),
        ValueError,
        r"metadatas\[0\]\['k'\] = 18446744073709551616 is out of range",
    ),
    (
        "NaN metadata",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=[{"k": float("nan")}]),
        ValueError,
        r"metadatas\[0\]\['k'\] must be finite, got nan",
    ),
    (
        "operator key",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=[{"$and": 1}]),
        ValueError,
        r"key '\$and' must be a non-empty str not starting with '\$'",
    ),
    (
        "list metadata",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=[{"k": [1]}]),
        TypeError,
        r"metadatas\[0\]\['k'\] must be a str, int, float, bool or None, got list",
    ),
    (
        "NUL in metadata",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=[{"k": "a\x00b"}]),
        ValueError,
        r"metadatas\[0\]\['k'\] holds a NUL character",
    ),
    (
        "metadata not a dict",
        lambda i: i.add_vectors(unit(1), ids=["new"], metadatas=["k=1"]),
        TypeError,
        r"metadatas\[0\] must be a dict or None, got str",
    ),
    (
        "NaN vector",
        lambda i: i.add_vectors(np.full((2, DIM), np.nan), ids=["a", "b"]),
        ValueError,
        r"vectors row 0 contains NaN",
    ),
    (
        "wrong width",
        lambda i: i.add_vectors(unit(1, dim=DIM + 1), ids=["new"]),
        ValueError,
        r"vectors have 33 dims but this index stores 32-dim",
    ),
    (
        "strings as vectors",
        lambda i: i.add_vectors([["a"] * DIM], ids=["new"]),
        TypeError,
        r"vectors must hold real numbers",
    ),
    (
        "too few texts",
        lambda i: i.add_vectors(unit(2), ids=["a", "b"], texts=["one"]),
        ValueError,
        r"got 1 texts for 2 vectors",
    ),
    (
        "bad on_conflict",
        lambda i: i.add_vectors(unit(1), ids=["new"], on_conflict="merge"),
        ValueError,
        r"on_conflict='merge' must be 'error' or 'replace'",
    ),
    (
        "int id deletes nothing",
        lambda i: i.delete([5], missing="ignore"),
        TypeError,
        r"ids\[0\] must be a str, got int: 5",
    ),
    ("one str to delete", lambda i: i.delete("12"), TypeError, r"single str"),
    ("int id to get", lambda i: i.get([5]), TypeError, r"ids\[0\] must be a str, got int"),
    (
        "unknown id",
        lambda i: i.delete(["3", "ghost"]),
        UnknownIdError,
        r"1 id\(s\) not in the index, for example \['ghost'\]; nothing was deleted",
    ),
    ("bad missing", lambda i: i.delete(["3"], missing="skip"), ValueError, r"missing='skip'"),
    ("k zero", lambda i: i.search(unit(1)[0], k=0), ValueError, r"k must be a positive int, got 0"),
    ("k bool", lambda i: i.search(unit(1)[0], k=True), ValueError, r"got True"),
    ("k str", lambda i: i.search(unit(1)[0], k="3"), ValueError, r"got '3'"),
    (
        "query width",
        lambda i: i.search(unit(1, dim=8)[0]),
        ValueError,
        r"queries have 8 dims but this index stores 32-dim",
    ),
    (
        "query infinity",
        lambda i: i.search(np.full(DIM, np.inf)),
        ValueError,
        r"query_vectors row 0 contains infinity",
    ),
    (
        "filter int past 64 bits",
        lambda i: i.search(unit(1)[0], filter={"n": 2**64}),
        ValueError,
        r"64 bits",
    ),
    (
        "filter nested 300 deep",
        lambda i: i.search(unit(1)[0], filter=nested(300)),
        ValueError,
        r"nest",
    ),
    (
        "filter nested 5000 deep",
        lambda i: i.search(unit(1)[0], filter=nested(5000)),
        ValueError,
        r"nest",
    ),
]


def nested(depth: int) -> dict[str, Any]:
    where: dict[str, Any] = {"n": 1}
    for _ in range(depth):
        where = {"$or": [where, {"n": 2}]}
    return where


@pytest.mark.parametrize(
    ("call", "error", "message"), [c[1:] for c in BAD_ADDS], ids=[c[0] for c in BAD_ADDS]
)
def test_bad_input_raises_a_named_error_and_changes_nothing(
    saved: tuple[MatryoshkaIndex, Path], call: Any, error: type[Exception], message: str
) -> None:
    index, path = saved
    before = state(index)
    with pytest.raises(error, match=message):
        call(index)
    assert_unchanged(index, path, before)


def test_an_int_id_never_deletes_the_string_id(saved: tuple[MatryoshkaIndex, Path]) -> None:
    index, _ = saved
    with pytest.raises(TypeError):
        index.delete([5], missing="ignore")
    assert [r.id for r in index.get(["5"])] == ["5"]


BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"coarse_dim": True}, r"coarse_dim must be a positive int, got True"),
    ({"coarse_dim": "64"}, r"coarse_dim must be a positive int, got '64'"),
    ({"coarse_dim": 0}, r"coarse_dim must be a positive int, got 0"),
    ({"coarse_dim": 2.5}, r"coarse_dim must be a positive int, got 2.5"),
    ({"coarse_dim": 64, "stages": [(32, 100)]}, r"coarse_dim=64 disagrees with stages=\[\(32, 100"),
    ({"precision": "int4"}, r"precision='int4' is not supported"),
    ({"backend": "annoy"}, r"backend='annoy' is not supported"),
    ({"precision": "binary", "coarse_dim": 12}, r"coarse_dim=12 must be a multiple of 8"),
    ({"stages": "abc"}, r"stages\[0\] must be a \(dim, keep\) pair, got 'a'|stages must be a list"),
    ({"stages": []}, r"at least one \(dim, keep\) pair"),
    ({"rerank": "gpu"}, r"rerank='gpu' must be"),
    ({"hnsw_m": -4}, r"hnsw_m must be a positive int, got -4"),
    ({"ef_search": None}, r"ef_search must be a positive int, got None"),
    ({"dim": 0}, r"dim must be a positive int, got 0"),
    ({"coarse_dim": None, "precision": "int8"}, r"precision='int8' needs a coarse_dim"),
]


@pytest.mark.parametrize(("options", "message"), BAD_CONFIGS)
def test_bad_configuration_is_refused_naming_the_value(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        MatryoshkaIndex(**options)


def test_an_explicit_coarse_dim_equal_to_the_first_stage_is_accepted() -> None:
    index = MatryoshkaIndex(coarse_dim=64, stages=[(64, 100), (128, 20)])
    assert index.coarse_dim == 64 and index.stages == [(64, 100), (128, 20)]


def test_a_prefix_longer_than_the_vectors_is_refused_at_the_first_add() -> None:
    index = MatryoshkaIndex(coarse_dim=64)
    with pytest.raises(ValueError, match=r"stage dim 64 is out of range: .* dimension 32"):
        index.add_vectors(unit(3), ids=["a", "b", "c"])
    assert len(index) == 0 and index.dim is None


# -- int8 calibration does not depend on how the adds were batched --------------------------------
def self_recall(index: MatryoshkaIndex, vectors: np.ndarray) -> float:
    hits = index.search_vectors(vectors, k=1)
    return float(np.mean([h[0].id == str(i) for i, h in enumerate(hits)]))


@pytest.mark.parametrize("first", [1, 3])
def test_a_tiny_first_add_does_not_freeze_the_int8_calibration(first: int) -> None:
    vectors = unit(1000, seed=3, dim=64)
    index = MatryoshkaIndex(coarse_dim=16, precision="int8", rescore_multiplier=2, device="cpu")
    index.add_vectors(vectors[:first], ids=[str(i) for i in range(first)])
    index.add_vectors(vectors[first:], ids=[str(i) for i in range(first, 1000)])
    whole = MatryoshkaIndex(coarse_dim=16, precision="int8", rescore_multiplier=2, device="cpu")
    whole.add_vectors(vectors, ids=[str(i) for i in range(1000)])
    assert self_recall(index, vectors) >= 0.95
    assert abs(self_recall(index, vectors) - self_recall(whole, vectors)) <= 0.02


def test_the_int8_calibration_survives_a_reload_and_keeps_improving(tmp_path: Path) -> None:
    vectors = unit(1000, seed=4, dim=64)
    index = MatryoshkaIndex(coarse_dim=16, precision="int8", rescore_multiplier=2, device="cpu")
    index.add_vectors(vectors[:2], ids=["0", "1"])
    index.save(tmp_path / "idx")
    again = MatryoshkaIndex.load(tmp_path / "idx", device="cpu")
    assert again.manifest.calibrated_on == 2
    again.add_vectors(vectors[2:], ids=[str(i) for i in range(2, 1000)])
    assert again.manifest.calibrated_on == 1000
    assert self_recall(again, vectors) >= 0.95


def test_a_given_calibration_is_never_replaced() -> None:
    from matryoshka_retrieval.quantization import calibrate

    vectors = unit(300, seed=5, dim=64)
    given = calibrate(vectors[:, :16] / np.linalg.norm(vectors[:, :16], axis=1, keepdims=True))
    index = MatryoshkaIndex(coarse_dim=16, precision="int8", calibration=given, device="cpu")
    index.add_vectors(vectors[:1], ids=["0"])
    index.add_vectors(vectors[1:], ids=[str(i) for i in range(1, 300)])
    assert index.manifest.calibration == given.to_dict() and index.manifest.calibrated_on is None


# -- saving into a folder that is not ours --------------------------------------------------------
def test_save_refuses_a_folder_holding_other_data_and_touches_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "gen-2024-backup").mkdir(parents=True)
    (folder / "gen-2024-backup" / "data.csv").write_text("precious")
    (folder / "manifest.json").write_text('{"project": "mine"}')
    index = MatryoshkaIndex(coarse_dim=8)
    index.add_vectors(unit(3), ids=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"cannot save into .*mine: its manifest.json is not"):
        index.save(folder)
    assert (folder / "gen-2024-backup" / "data.csv").read_text() == "precious"
    assert json.loads((folder / "manifest.json").read_text()) == {"project": "mine"}


def test_save_refuses_a_non_empty_folder_without_an_index(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    index = MatryoshkaIndex(coarse_dim=8)
    index.add_vectors(unit(3), ids=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"not empty and holds no index .*notes.txt"):
        index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_saving_again_removes_only_the_index_own_generations(
    saved: tuple[MatryoshkaIndex, Path],
) -> None:
    index, path = saved
    (path / "gen-2024-backup").mkdir()
    index.save(path)  # an index of ours: allowed, and the user's folder stays
    gens = sorted(p.name for p in path.iterdir() if p.name.startswith("gen-"))
    assert "gen-2024-backup" in gens and len(gens) == 2


# -- crafted manifests ----------------------------------------------------------------------------
def craft(path: Path, **changes: Any) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


CRAFTED: list[tuple[dict[str, Any], str]] = [
    ({"generation": "../other/gen-1-abcdef"}, r"generation '../other/gen-1-abcdef' is not"),
    ({"files": {"../../etc/passwd": 1}}, r"files names '../../etc/passwd', which is not a plain"),
    ({"stages": "abc"}, r"stages must be a list|stages\[0\]"),
    ({"count": -1}, r"count must be an int of at least 0, got -1"),
    ({"full_dim": "32"}, r"full_dim must be an int of at least 1, got (str: )?'32'"),
    ({"normalized": False}, r"normalized=False"),
    ({"precision": "int4"}, r"precision='int4' is not supported"),
    ({"coarse_dim": 64}, r"stage dim 64 is out of range"),
    ({"surprise": 1}, r"unexpected fields: \['surprise'\]"),
]


@pytest.mark.parametrize(("changes", "message"), CRAFTED)
def test_a_crafted_manifest_is_refused_with_a_clear_error(
    saved: tuple[MatryoshkaIndex, Path], changes: dict[str, Any], message: str
) -> None:
    _, path = saved
    craft(path, **changes)
    with pytest.raises(IndexCorruptedError, match=message):
        MatryoshkaIndex.load(path)


def test_a_manifest_pointing_outside_the_folder_reveals_nothing(
    saved: tuple[MatryoshkaIndex, Path], tmp_path: Path
) -> None:
    _, path = saved
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"x" * 12345)
    craft(path, files={f"../../{secret.name}": 1})
    with pytest.raises(IndexCorruptedError) as raised:
        MatryoshkaIndex.load(path)
    assert "12345" not in str(raised.value)


# -- crashes and races, in real processes ---------------------------------------------------------
def run(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        stderr=subprocess.PIPE,
    )


SAVE_SCRIPT = """
import sys
import numpy as np
from matryoshka_retrieval import MatryoshkaIndex

path, seed, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(seed)
index = MatryoshkaIndex(coarse_dim=64, device="cpu")
index.add_vectors(rng.normal(size=(20000, 384)), ids=[f"s{seed}-{i}" for i in range(20000)])
import os, time
while not os.path.exists(go):
    time.sleep(0.001)
index.save(path)
"""


def test_two_processes_saving_to_one_folder_leave_one_whole_index(tmp_path: Path) -> None:
    path, go = tmp_path / "idx", tmp_path / "go"
    children = [run(SAVE_SCRIPT, path, seed, go) for seed in (1, 2)]
    time.sleep(0.5)
    go.touch()
    for child in children:
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()
    index = MatryoshkaIndex.load(path, device="cpu", verify=True)
    assert len(index) == 20000
    prefixes = {r.id.split("-")[0] for r in index.get([f"s1-{i}" for i in range(5)])} | {
        r.id.split("-")[0] for r in index.get([f"s2-{i}" for i in range(5)])
    }
    assert len(prefixes) == 1  # one save's index whole, not a mix
    assert len([p for p in path.iterdir() if p.name.startswith("gen-")]) == 1


LOOP_SAVE_SCRIPT = """
import sys
import numpy as np
from matryoshka_retrieval import MatryoshkaIndex

path, rounds = sys.argv[1], int(sys.argv[2])
index = MatryoshkaIndex.load(path, device="cpu")
rng = np.random.default_rng(0)
for r in range(rounds):
    index.add_vectors(rng.normal(size=(50, 32)), ids=[f"r{r}-{i}" for i in range(50)])
    index.save(path)
"""


def test_loads_racing_saves_see_the_old_or_the_new_index(
    saved: tuple[MatryoshkaIndex, Path],
) -> None:
    _, path = saved
    child = run(LOOP_SAVE_SCRIPT, path, 25)
    sizes: set[int] = set()
    loads = 0
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        sizes.add(len(MatryoshkaIndex.load(path, device="cpu")))  # never IndexCorruptedError
        loads += 1
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    assert loads >= 10 and len(sizes) >= 2, (loads, sizes)  # the loads really raced the saves
    assert all(s in range(200, 200 + 25 * 50 + 1, 50) for s in sizes), sizes
    assert len(MatryoshkaIndex.load(path, device="cpu")) == 200 + 25 * 50


KILLED_SCRIPT = """
import sys, time
import numpy as np
import matryoshka_retrieval.index.vectors as vectors
from matryoshka_retrieval import MatryoshkaIndex

path, signal_file = sys.argv[1], sys.argv[2]
index = MatryoshkaIndex.load(path, device="cpu")
index.add_vectors(np.random.default_rng(9).normal(size=(50, 32)), ids=[f"n{i}" for i in range(50)])
original = vectors.VectorStore.write_npy
def slow_write(self, file, rows=None):
    original(self, file, rows)
    open(signal_file, "w").close()
    time.sleep(60)
vectors.VectorStore.write_npy = slow_write
index.save(path)
"""


def test_a_killed_save_is_cleaned_up_by_the_next_load(
    saved: tuple[MatryoshkaIndex, Path], tmp_path: Path
) -> None:
    index, path = saved
    before = state(index)
    signal_file = tmp_path / "mid-save"
    child = run(KILLED_SCRIPT, path, signal_file)
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.communicate(timeout=30)
    assert list(path.glob("gen-*.tmp")), "the kill should have left a partial save"
    reloaded = MatryoshkaIndex.load(path, device="cpu")
    assert state(reloaded) == before
    assert not list(path.glob("gen-*.tmp"))
    assert len(list(path.glob("gen-*"))) == 1
