"""Indexes saved by release 0.1.0 and by main before the engine protocol (7cf53c4) still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from matryoshka_retrieval import MatryoshkaIndex

DATA = Path(__file__).parent / "data"


def test_an_index_saved_by_the_previous_layout_loads_with_the_same_results(tmp_path: Path) -> None:
    folder = shutil.copytree(DATA / "index-0.1.0", tmp_path / "idx")
    facts = json.loads((DATA / "index-0.1.0.json").read_text())
    vectors = np.random.default_rng(facts["seed"]).normal(size=(60, 16)).astype(np.float32)
    index = MatryoshkaIndex.load(folder, device="cpu", verify=True)
    assert (len(index), index.coarse_dim, index.precision) == (59, 8, "int8")
    got = [h.ids for h in index.search_vectors(vectors[:5], k=4, filter={"g": 1})]
    assert got == facts["expected"]
    index.add_vectors(vectors[:1], ids=["new"])
    index.save(folder)  # saving again replaces the old generation and keeps the new one only
    assert len([p for p in folder.iterdir() if p.name.startswith("gen-")]) == 1
    assert len(MatryoshkaIndex.load(folder, device="cpu")) == 60


def test_an_index_saved_before_the_engine_protocol_loads_with_the_same_results(
    tmp_path: Path,
) -> None:
    # saved by main at 7cf53c4: an HNSW stage over a fitted PCA rotation, a deleted record
    folder = shutil.copytree(DATA / "index-main-7cf53c4", tmp_path / "idx")
    facts = json.loads((DATA / "index-main-7cf53c4.json").read_text())
    rng = np.random.default_rng(facts["seed"])
    scale = np.linspace(2, 0.2, 16, dtype=np.float32)
    rng.normal(size=(1030, 16))  # the stored vectors come first from the seed
    queries = rng.normal(size=(40, 16)).astype(np.float32) * scale
    index = MatryoshkaIndex.load(folder, device="cpu", verify=True)
    assert index.config.to_manifest() == facts["config"]
    assert len(index) == 1029 and index.get(["d5"]) == []
    assert index.coarse_rotation.fingerprint == index.manifest.coarse_rotation["fingerprint"]
    got = [h.ids for h in index.search_vectors(queries[30:], k=5, filter={"g": 1})]
    assert got == facts["expected"]
    scores = [list(h.scores) for h in index.search_vectors(queries[30:], k=5)]
    np.testing.assert_allclose(scores, facts["scores"], atol=1e-5)
    index.add_vectors(queries[:1], ids=["new"])
    index.save(folder)
    assert MatryoshkaIndex.load(folder, device="cpu").search_vectors(queries[:1], k=1)[0].ids == [
        "new"
    ]
