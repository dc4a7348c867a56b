from __future__ import annotations

import re

import pytest

from matryoshka_retrieval.cli import main


def test_demo_compares_prefix_dims_and_coarse_to_fine_search(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--limit", "150", "--dims", "32,64", "--show", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2 (384 dims)" in out
    assert "corpus: 150 docstrings" in out
    rows = {
        m.group(1): m.group(0).split()
        for m in re.finditer(r"^\s*(\d+)\s+\d+\s+\d+%\s+\d+%$", out, re.MULTILINE)
    }
    assert set(rows) == {"32", "64", "384"}
    assert rows["384"][1:] == ["1536", "100%", "100%"]  # full dim agrees with itself
    assert rows["32"][1] == "128"
    index_rows = {
        line[:28].strip(): line[28:].split()
        for line in out.splitlines()
        if "->" in line[:28] and "%" in line
    }
    assert set(index_rows) == {
        "32d float32 -> rerank",
        "32d int8 -> rerank",
        "64d binary -> 64d -> rerank",
    }
    exact = next(line for line in out.splitlines() if line.startswith("exact, full dim"))
    assert "100.0%" in exact
    for name, cells in index_rows.items():
        assert 50.0 <= float(cells[0].rstrip("%")) <= 100.0, name
    assert index_rows["32d int8 -> rerank"][-1] == "32"  # bytes per vector of the prefix
    assert "3. top hits of the 32d -> full-dim index" in out
    showcase = re.findall(r"^\s+(\d\.\d{3})  coarse (-?\d\.\d{3})  \S+$", out, re.MULTILINE)
    assert len(showcase) == 6  # two queries, three hits each
    first = [float(score) for score, _ in showcase[:3]]
    assert first == sorted(first, reverse=True)


def test_bad_dims_exit_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dims", "a,b"])
    assert exc.value.code == 2
    assert "comma-separated ints" in capsys.readouterr().err


def test_help_lists_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out
