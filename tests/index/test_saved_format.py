"""An index saved by release 0.1.0 (before the engine was split into stores) still loads."""

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
