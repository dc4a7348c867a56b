"""`matryoshka index DOCS --ray local`: the same index as without Ray, embedded on a Ray actor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.cli import main

pytest.importorskip("ray")

PAGES = [
    {"_id": "rm", "text": "remove files or directories", "section": 1},
    {"_id": "cp", "text": "copy files and directories", "section": 1},
    {"_id": "df", "text": "report file system disk space usage", "section": 1},
    {"_id": "fsck", "text": "check and repair a Linux filesystem", "section": 8},
]


def test_index_with_ray_equals_the_index_without(tmp_path, capsys) -> None:
    source = tmp_path / "pages.jsonl"
    source.write_text("\n".join(json.dumps(p) for p in PAGES))
    plain, on_ray = str(tmp_path / "plain"), str(tmp_path / "ray")
    assert main(["index", str(source), "--out", plain, "--coarse-dim", "32", "-q"]) == 0
    argv = ["index", str(source), "--out", on_ray, "--coarse-dim", "32", "--ray", "local", "-q"]
    assert main(argv) == 0
    assert "indexed 4 documents" in capsys.readouterr().out
    a, b = MatryoshkaIndex.load(plain), MatryoshkaIndex.load(on_ray)
    assert sorted(a.ids()) == sorted(b.ids()) == ["cp", "df", "fsck", "rm"]
    ra, rb = a.get(["fsck"], include_vectors=True)[0], b.get(["fsck"], include_vectors=True)[0]
    assert rb.metadata == ra.metadata == {"section": 8} and rb.text == ra.text
    np.testing.assert_allclose(rb.vector, ra.vector, atol=1e-5)
