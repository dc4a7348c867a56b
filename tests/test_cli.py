from __future__ import annotations

import pytest

from matryoshka_retrieval.cli import main


def test_demo_compares_prefix_dims_with_full_dim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--limit", "150", "--dims", "32,64", "--show", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2 (384 dims)" in out
    assert "corpus: 150 docstrings" in out
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line[:5].strip().isdigit()
    }
    assert set(rows) == {"32", "64", "384"}
    assert rows["384"][1:] == ["1536", "100%", "100%"]  # full dim agrees with itself
    assert rows["32"][1] == "128"
    assert "best match at 32 dims vs 384 dims" in out


def test_bad_dims_exit_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--dims", "a,b"])
    assert exc.value.code == 2
    assert "comma-separated ints" in capsys.readouterr().err


def test_help_lists_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out
