from __future__ import annotations

import re
from pathlib import Path

import pytest

from matryoshka_retrieval.cli import main


def test_demo_compares_prefix_dims_and_coarse_to_fine_search(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [
        "demo",
        "--limit",
        "150",
        "--dims",
        "32,64",
        "--show",
        "2",
        "-q",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "| exact, full dim | 384 |" in (tmp_path / "report.md").read_text()
    assert "4. how small can I go?" in out and "recommended:" in out
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
        for line in out.split("2. coarse-to-fine")[1].split("3. top hits")[0].splitlines()
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


PAGES = [
    {"_id": "ls", "text": "list directory contents", "section": 1},
    {"_id": "cp", "text": "copy files and directories", "section": 1},
    {"_id": "rm", "text": "remove files or directories", "section": 1},
    {"_id": "cal", "text": "display a calendar", "section": 1},
    {"_id": "fsck", "text": "check and repair a Linux filesystem", "section": 8},
]


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    import json

    folder = tmp_path_factory.mktemp("cli")
    source = folder / "pages.jsonl"
    source.write_text("\n".join(json.dumps(p) for p in PAGES))
    out = str(folder / "index")
    assert main(["index", str(source), "--out", out, "--coarse-dim", "32", "-q"]) == 0
    return out


def test_index_and_search_a_jsonl_file(
    saved_index: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["search", saved_index, "delete a file", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 hits in")
    assert lines[1].split()[3] == "rm"


def test_search_with_a_filter_as_json(saved_index: str, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    capsys.readouterr()
    assert (
        main(["search", saved_index, "delete a file", "--filter", '{"section": 8}', "--json"]) == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in hits] == ["fsck"] and hits[0]["metadata"] == {"section": 8}


def test_index_a_folder_of_text_files(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("how to bake bread at home")
    (docs / "sub" / "b.md").write_text("repairing a bicycle tyre")
    (docs / "ignored.bin").write_bytes(b"\x00\x01")
    assert main(["index", str(docs), "--out", str(tmp_path / "i"), "-q"]) == 0
    assert main(["search", str(tmp_path / "i"), "fix a flat tire", "-k", "1", "--json"]) == 0
    assert '"id": "sub/b.md"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "/nonexistent/file.jsonl", "--out", "/tmp/x"], "no file or folder at"),
        (["search", "/nonexistent/index", "q"], "no index at /nonexistent/index"),
    ],
)
def test_index_and_search_errors_are_one_line(argv, message, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_search_with_a_bad_filter_is_one_line(saved_index: str, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["search", saved_index, "x", "--filter", '{"section": {"$like": 1}}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("matryoshka search: error: unknown filter operator '$like'")
