from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from matryoshka_retrieval import CallableEncoder, IndexCorruptedError, MatryoshkaIndex


@pytest.fixture
def saved(tmp_path, corpus, ids, metadatas, queries):
    index = MatryoshkaIndex(coarse_dim=32, precision="int8", device="cpu")
    index.add_vectors(
        corpus, ids=ids, texts=[f"t{i}" for i in range(len(ids))], metadatas=metadatas
    )
    expected = [h.to_list() for h in index.search_vectors(queries, k=5, filter={"group": "a"})]
    index.save(tmp_path / "idx")
    return tmp_path / "idx", expected


def generation(path: Path) -> Path:
    return path / json.loads((path / "manifest.json").read_text())["generation"]


@pytest.mark.parametrize("full_vectors", ["ram", "mmap", "pread", "auto"])
def test_round_trip_gives_the_same_results(saved, queries, full_vectors) -> None:
    path, expected = saved
    index = MatryoshkaIndex.load(path, full_vectors=full_vectors, device="cpu")
    assert len(index) == 3000 and index.precision == "int8" and index.coarse_dim == 32
    got = [h.to_list() for h in index.search_vectors(queries, k=5, filter={"group": "a"})]
    assert got == expected
    mode = "ram" if full_vectors == "auto" else full_vectors  # 1.1 MB fits the RAM budget
    assert index._engine.vectors.mode == mode
    assert isinstance(index._engine.vectors.base, np.memmap) == (mode != "ram")
    assert index._engine.vectors.base.ctypes.data % 64 == 0  # cache-line aligned rows
    index.add_vectors(-queries[:3], ids=["n0", "n1", "n2"])  # rows past the saved base
    assert index.search_vectors(-queries[:3], k=1)[2][0].id == "n2"


def test_a_folder_name_with_uri_characters_saves_and_loads(tmp_path, corpus, ids) -> None:
    folder = tmp_path / "my index?v=1#a %20 b"
    index = MatryoshkaIndex(coarse_dim=32, device="cpu")
    index.add_vectors(corpus[:50], ids=ids[:50], texts=[f"t{i}" for i in range(50)])
    index.save(folder)
    loaded = MatryoshkaIndex.load(folder, device="cpu")
    assert loaded.search(corpus[7], k=1)[0].text == "t7"
    assert loaded.get([ids[3]])[0].text == "t3"


def test_an_exact_index_in_two_parts_searches_both(tmp_path, corpus, ids, queries) -> None:
    index = MatryoshkaIndex(coarse_dim=None, device="cpu")
    index.add_vectors(corpus[:100], ids=ids[:100])
    index.save(tmp_path / "e")
    loaded = MatryoshkaIndex.load(tmp_path / "e", device="cpu")
    loaded.add_vectors(corpus[100:200], ids=ids[100:200])  # appended past the saved base
    assert loaded.search(corpus[150], k=1)[0].id == ids[150]
    assert loaded.search(corpus[50], k=1)[0].id == ids[50]


def test_the_old_mmap_option_still_loads(saved) -> None:
    path, _ = saved
    with pytest.warns(DeprecationWarning, match="full_vectors"):
        index = MatryoshkaIndex.load(path, mmap=True, device="cpu")
    assert index._engine.vectors.mode == "pread"


def test_an_unknown_full_vectors_mode_is_refused(saved) -> None:
    path, _ = saved
    with pytest.raises(ValueError, match="full_vectors"):
        MatryoshkaIndex.load(path, full_vectors="gpu", device="cpu")


def test_manifest_describes_the_index(saved) -> None:
    path, _ = saved
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["full_dim"] == 96 and manifest["coarse_dim"] == 32
    assert manifest["precision"] == "int8" and manifest["count"] == 3000
    assert len(manifest["calibration"]["lower"]) == 32
    assert manifest["format_version"] == 1 and manifest["metric"] == "cosine"
    assert set(manifest["files"]) == {"vectors.npy", "records.sqlite", "coarse.faiss"}


def test_nothing_is_pickled(saved) -> None:
    path, _ = saved
    data = np.load(generation(path) / "vectors.npy", allow_pickle=False)
    assert data.shape == (3000, 96)


@pytest.mark.parametrize("resident", [True, False])
def test_loaded_records_are_held_in_ram_up_to_a_size(saved, queries, monkeypatch, resident):
    import matryoshka_retrieval.index.records as records_module

    path, expected = saved
    if not resident:
        monkeypatch.setattr(records_module, "RESIDENT_BYTES", 0)
    index = MatryoshkaIndex.load(path, device="cpu")
    assert (index._engine.records.resident is not None) == resident
    hits = index.search_vectors(queries, k=5, filter={"group": "a"})
    assert [h.to_list() for h in hits] == expected
    hits[0][0].metadata["group"] = "changed"  # a hit's metadata is its own copy
    assert index.search_vectors(queries[:1], k=5, filter={"group": "a"})[0][0].metadata == {
        **hits[0][0].metadata,
        "group": "a",
    }
    assert [(r.id, r.text) for r in index.get(["doc3", "nope", "doc1"])] == [
        ("doc3", "t3"),
        ("doc1", "t1"),
    ]


def test_a_write_after_load_drops_the_resident_records(saved, corpus) -> None:
    path, _ = saved
    index = MatryoshkaIndex.load(path, device="cpu")
    assert index._engine.records.resident is not None
    first = index.search(corpus[7], k=1)[0]
    assert (first.id, first.text) == ("doc7", "t7")
    index.delete(["doc7"])
    assert index._engine.records.resident is None
    assert index.search(corpus[7], k=1)[0].id != "doc7"
    index.add_vectors(corpus[7:8], ids=["new7"], texts=["fresh"], metadatas=[{"group": "z"}])
    hit = index.search(corpus[7], k=1)[0]
    assert (hit.id, hit.text, hit.metadata) == ("new7", "fresh", {"group": "z"})
    index.save(path)  # the saved generation is opened again, and held in RAM again
    assert index._engine.records.resident is not None
    assert index.search(corpus[7], k=1)[0].text == "fresh"


def test_add_and_delete_after_load_then_save_again(saved, corpus, queries) -> None:
    path, _ = saved
    index = MatryoshkaIndex.load(path, device="cpu")
    index.add_vectors(corpus[:2] * -1, ids=["neg0", "neg1"], metadatas=[{"group": "n"}] * 2)
    index.delete(["doc5", "doc6"])
    assert index.search(-corpus[0], k=1)[0].id == "neg0"
    # the saved copy on disk is untouched until save
    assert len(MatryoshkaIndex.load(path, device="cpu")) == 3000
    index.save(path)
    reopened = MatryoshkaIndex.load(path, device="cpu")
    assert len(reopened) == 3000 and reopened.get(["doc5"]) == []
    assert reopened.search(-corpus[1], k=1)[0].id == "neg1"
    assert [h.ids for h in reopened.search_vectors(queries, k=5)] == [
        h.ids for h in index.search_vectors(queries, k=5)
    ]
    assert len(list(path.glob("gen-*"))) == 1  # older generations are cleaned up


def test_save_compacts_deleted_rows(tmp_path, corpus, ids) -> None:
    index = MatryoshkaIndex(coarse_dim=32, backend="hnsw", device="cpu")
    index.add_vectors(corpus[:200], ids=ids[:200])
    index.delete(ids[:100])
    index.save(tmp_path / "c")
    assert np.load(generation(tmp_path / "c") / "vectors.npy").shape == (100, 96)
    reopened = MatryoshkaIndex.load(tmp_path / "c", device="cpu")
    assert reopened.search(corpus[150], k=1)[0].id == "doc150"
    assert index.search(corpus[150], k=1)[0].id == "doc150"  # the open index still works


def test_encoder_must_match_the_manifest(tmp_path, corpus) -> None:
    table = {f"t{i}": corpus[i] for i in range(10)}
    enc = CallableEncoder(lambda t: np.stack([table[x] for x in t]), dim=96, model_name="m-a")
    index = MatryoshkaIndex(enc, coarse_dim=32, device="cpu")
    index.add_texts(list(table))
    index.save(tmp_path / "e")
    other_model = CallableEncoder(enc.fn, dim=96, model_name="m-b")
    with pytest.raises(
        ValueError, match=r"model 'm-b' is not the model this index was built with \('m-a'\)"
    ):
        MatryoshkaIndex.load(tmp_path / "e", encoder=other_model)
    narrower = CallableEncoder(enc.fn, dim=96, truncate_dim=48, model_name="m-a")
    with pytest.raises(ValueError, match=r"outputs 48-dim vectors but this index stores 96-dim"):
        MatryoshkaIndex.load(tmp_path / "e", encoder=narrower)
    assert MatryoshkaIndex.load(tmp_path / "e", encoder=enc).search("t3", k=1)[0].text == "t3"


def test_missing_index_is_file_not_found(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no index at .*manifest.json is missing"):
        MatryoshkaIndex.load(tmp_path / "nothing")


def test_saving_an_empty_index_without_dim_fails(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"add vectors first"):
        MatryoshkaIndex(device="cpu").save(tmp_path / "x")


def _corrupt_truncate(path: Path) -> None:
    file = generation(path) / "vectors.npy"
    with open(file, "r+b") as handle:
        handle.truncate(file.stat().st_size // 2)


def _corrupt_sqlite(path: Path) -> None:
    file = generation(path) / "records.sqlite"
    data = bytearray(file.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    file.write_bytes(bytes(data))


def _corrupt_coarse(path: Path) -> None:
    file = generation(path) / "coarse.faiss"
    data = bytearray(file.read_bytes())
    data[:16] = b"garbage-garbage!"
    file.write_bytes(bytes(data))


def _corrupt_manifest(path: Path) -> None:
    (path / "manifest.json").write_text("{not json")


def _missing_file(path: Path) -> None:
    (generation(path) / "records.sqlite").unlink()


def _wrong_version(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            _corrupt_truncate,
            r"vectors.npy .* is truncated or damaged: expected \d+ bytes, found \d+",
        ),
        (_corrupt_sqlite, r"records database .* is damaged"),
        (_corrupt_coarse, r"coarse index .* is damaged"),
        (_corrupt_manifest, r"manifest .* is not valid JSON"),
        (_missing_file, r"is missing records.sqlite"),
        (_wrong_version, r"format version 99; this library reads version 1"),
    ],
)
def test_damaged_index_raises_a_clear_error(saved, damage, message) -> None:
    path, _ = saved
    damage(path)
    with pytest.raises(IndexCorruptedError, match=message):
        MatryoshkaIndex.load(path, device="cpu")


def test_verify_catches_changed_vector_bytes(saved) -> None:
    path, _ = saved
    file = generation(path) / "vectors.npy"
    data = bytearray(file.read_bytes())
    data[-5] ^= 0xFF  # same size, different content
    file.write_bytes(bytes(data))
    MatryoshkaIndex.load(path, device="cpu")  # size checks pass
    with pytest.raises(IndexCorruptedError, match=r"fail their checksum"):
        MatryoshkaIndex.load(path, device="cpu", verify=True)


KILL_SCRIPT = """
import os, sys, time
import numpy as np
import matryoshka_retrieval.index.vectors as storage
from matryoshka_retrieval import MatryoshkaIndex

path, signal_file = sys.argv[1], sys.argv[2]
index = MatryoshkaIndex.load(path, device="cpu")
extra = np.random.default_rng(9).normal(size=(50, 96))
index.add_vectors(extra, ids=[f"new{i}" for i in range(50)])
index.delete(["doc0"])

original = storage.VectorStore.write_npy
def slow_write(self, file, rows=None):
    original(self, file, rows)
    open(signal_file, "w").close()  # half-way through the save: vectors written, rest not
    time.sleep(60)
storage.VectorStore.write_npy = slow_write
index.save(path)
"""


def test_process_killed_during_save_leaves_the_last_save_loadable(saved, tmp_path, queries) -> None:
    path, expected = saved
    signal_file = tmp_path / "mid-save"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILL_SCRIPT), str(path), str(signal_file)]
    )
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert child.poll() is None, "the child exited before reaching the save"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert list(path.glob("*.tmp")), "the kill should have left a partial save behind"
    index = MatryoshkaIndex.load(path, device="cpu", verify=True)
    assert len(index) == 3000 and index.get(["new0"]) == [] and index.get(["doc0"])
    got = [h.to_list() for h in index.search_vectors(queries, k=5, filter={"group": "a"})]
    assert got == expected
    # the next save cleans up what the killed one left
    index.save(path)
    assert not list(path.glob("*.tmp")) and len(list(path.glob("gen-*"))) == 1


def test_sqlite_store_is_a_real_database(saved) -> None:
    path, _ = saved
    conn = sqlite3.connect(generation(path) / "records.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 3000
    conn.close()


def test_a_closed_index_says_so_on_every_use_and_closes_once(saved, queries) -> None:
    path, expected = saved
    with MatryoshkaIndex.load(path) as index:
        hits = index.search_vectors(queries, k=5, filter={"group": "a"})
        assert [h.to_list() for h in hits] == expected
    assert repr(index) == "MatryoshkaIndex(closed)"
    for use in (
        lambda: index.search_vectors(queries, k=5),
        lambda: index.add_vectors(queries[:1], ids=["new"]),
        lambda: len(index),
        lambda: index.dim,
    ):
        with pytest.raises(ValueError, match=r"index was closed: open a saved or server index"):
            use()
    index.close()  # again: nothing
    again = MatryoshkaIndex.load(path)  # the folder is untouched by the close
    assert [h.to_list() for h in again.search_vectors(queries, k=5, filter={"group": "a"})] == (
        expected
    )


def test_closing_releases_the_record_store_even_when_the_block_fails(corpus, ids) -> None:
    with (
        pytest.raises(RuntimeError, match="inside"),
        MatryoshkaIndex(coarse_dim=32, device="cpu") as index,
    ):
        index.add_vectors(corpus, ids=ids)
        records = index._engine.records.conn
        raise RuntimeError("inside")
    with pytest.raises(sqlite3.ProgrammingError):  # the store's connection itself is closed
        records.execute("SELECT 1")


def test_a_closed_index_embeds_nothing_before_saying_it_was_closed() -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))  # with a paid API every call is billed
        return np.ones((len(texts), 8), dtype=np.float32)

    index = MatryoshkaIndex(CallableEncoder(embed, dim=8), coarse_dim=4, device="cpu")
    index.close()
    for use in (
        lambda: index.add_texts(["a"]),
        lambda: index.search("a"),
        lambda: index.search_texts(["a", "b"]),
    ):
        with pytest.raises(ValueError, match=r"the index was closed"):
            use()
    assert calls == []
