from __future__ import annotations

import re
from pathlib import Path

import pytest

from matryoshka_retrieval.cli import main
from matryoshka_retrieval.encoders import EncoderError


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
        "--scale",
        "3000",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "| exact, full dim | 384 |" in (tmp_path / "report.md").read_text()
    assert "5. how small can I go?" in out and "recommended:" in out
    speed = out.split("4. speed and memory at 3,000 vectors of 384 dims")[1].split("5. how")[0]
    contenders = {line[:28].strip(): line[28:].split() for line in speed.splitlines()[1:]}
    assert {"FAISS IndexFlatIP", "FAISS HNSW, full vectors", "ours: HNSW on 64d prefix"} <= set(
        contenders
    )
    assert contenders["FAISS IndexFlatIP"][1:3] == ["1.000", contenders["FAISS IndexFlatIP"][2]]
    ours = contenders["ours: HNSW on 64d prefix"]
    assert 0.85 <= float(next(c for c in ours if c.startswith(("0.", "1.0")))) <= 1.0
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


def test_index_a_folder_of_text_files(tmp_path, capsys) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("how to bake bread at home")
    (docs / "sub" / "b.md").write_text("repairing a bicycle tyre")
    (docs / "ignored.bin").write_bytes(b"\x00\x01")
    assert main(["index", str(docs), "--out", str(tmp_path / "i"), "-q"]) == 0
    assert main(["search", str(tmp_path / "i"), "fix a flat tire", "-k", "1", "--json"]) == 0
    assert '"id": "sub/b.md"' in capsys.readouterr().out


def test_index_with_a_coarse_rotation_saves_it(tmp_path, capsys) -> None:
    import json

    source = tmp_path / "pages.jsonl"
    source.write_text("\n".join(json.dumps(p) for p in PAGES))
    out = tmp_path / "index"
    argv = ["index", str(source), "--out", str(out), "--coarse-dim", "32", "--coarse-rotation"]
    assert main([*argv, "pca", "-q"]) == 0
    assert json.loads((out / "manifest.json").read_text())["coarse_rotation"]["method"] == "pca"
    capsys.readouterr()
    assert main(["search", str(out), "delete a file", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "rm"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "/nonexistent/file.jsonl", "--out", "/tmp/x"], "no file or folder at"),
        (["search", "/nonexistent/index", "q"], "no index at /nonexistent/index"),
    ],
)
def test_index_and_search_errors_are_one_line(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_search_with_a_bad_filter_is_one_line(saved_index: str, capsys) -> None:
    assert main(["search", saved_index, "x", "--filter", '{"section": {"$like": 1}}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("matryoshka search: error: unknown filter operator '$like'")


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["demo"],
        ["eval"],
        ["plan"],
        ["index"],
        ["search"],
        ["copy"],
        ["fit-projection"],
        ["train"],
    ],
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: matryoshka {' '.join(command)}".rstrip())


OUT_OF_RANGE = [
    ("plan --docs 5 --full-dim 0", "--full-dim: 0 is out of range: it must be at least 1"),
    ("plan --docs 5 --full-dim -768", "--full-dim: -768 is out of range"),
    ("plan --docs -1 --full-dim 8", "--docs: -1 is out of range: it must be at least 1"),
    ("plan --docs 5 --full-dim 8 --dims 0,4", "--dims: expected comma-separated ints: 0 is out"),
    ("search i q -k 0", "-k: 0 is out of range: it must be at least 1"),
    ("index d --out o --coarse-dim -4", "--coarse-dim: -4 is out of range"),
    ("index d --out o --rescore-multiplier 0", "--rescore-multiplier: 0 is out of range"),
    ("copy a b --batch-size 0", "--batch-size: 0 is out of range: it must be at least 1"),
    ("eval --data d --min-quality nan", "--min-quality: nan is out of range: it must be a finite"),
    (
        "eval --data d --min-quality 2",
        "--min-quality: 2 is out of range: it must be a finite number above 0 and at most 1.5",
    ),
    ("eval --data d --rescore -1", "--rescore: -1 is out of range: it must be at least 0"),
    ("eval --data d --max-seq-length 0", "--max-seq-length: 0 is out of range"),
    ("demo --limit 0", "--limit: 0 is out of range: it must be at least 1"),
    ("demo --show -2", "--show: -2 is out of range: it must be at least 0"),
    ("fit-projection --out p --epochs 0", "--epochs: 0 is out of range"),
    (
        "train --data d --out o --holdout 1",
        "--holdout: 1 is out of range: it must be a finite number above 0 and below 1",
    ),
    ("train --data d --out o --learning-rate inf", "--learning-rate: inf is out of range"),
    ("train --data d --out o --epochs -1", "--epochs: -1 is out of range"),
    (
        "train --data d --out o --batch-size 1",
        "--batch-size: 1 is out of range: it must be at least 2",
    ),
    ("train --data d --out o --seed -1", "--seed: -1 is out of range"),
    (
        "train --data d --out o --weights 1,nan",
        "--weights: expected comma-separated numbers: nan is",
    ),
    ("train --data d --out o --dims 64,-8", "--dims: expected comma-separated ints: -8 is out of"),
]


@pytest.mark.parametrize(("argv", "message"), OUT_OF_RANGE)
def test_numeric_options_out_of_range_name_the_value_and_the_limit(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv.split())
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"matryoshka {argv.split()[0]}: error: argument {message}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            '{"section": 18446744073709551616}',
            "18446744073709551616 is out of range: ints must fit in 64 bits",
        ),
        (
            '{"section": -9223372036854775809}',
            "-9223372036854775809 is out of range: ints must fit in 64 bits (INT64_MIN = -2**63",
        ),
        (
            '{"$and": [' * 300 + '{"section": 1}' + "]}" * 300,
            "the filter is nested more than 32 levels deep",
        ),
        ("[" * 100_000 + "]" * 100_000, "the filter is nested too deep: the limit is 32 levels"),
        ('["section"]', "a filter is a JSON object, got list"),
        ("{section: 1}", "not JSON"),
    ],
)
def test_a_filter_the_store_cannot_take_is_refused_naming_it(where, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["search", "no-index-needed", "q", "--filter", where])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"matryoshka search: error: argument --filter: {message}" in err
    assert "Traceback" not in err


def test_a_corrupted_index_is_one_line(saved_index: str, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(saved_index, copy)
    (copy / "manifest.json").write_text("{not json")
    assert main(["search", str(copy), "q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("matryoshka search: error: ")
    assert "manifest" in err[0]


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (ValueError("bad value 7"), 2, "matryoshka plan: error: bad value 7"),
        (TypeError("got a str"), 2, "matryoshka plan: error: got a str"),
        (FileNotFoundError("no file at x"), 2, "matryoshka plan: error: no file at x"),
        (OverflowError("int too large"), 2, "matryoshka plan: error: int too large"),
        (RecursionError("too deep"), 2, "matryoshka plan: error: too deep"),
        (
            EncoderError("openai", "request failed:\nHTTP 500"),
            1,
            "matryoshka plan: error: openai: request failed: HTTP 500",
        ),
    ],
)
def test_library_errors_become_one_line_and_an_exit_status(
    monkeypatch, capsys, error, status, line
) -> None:
    from matryoshka_retrieval.cli import plan

    def fail(args):
        raise error

    monkeypatch.setattr(plan, "run", fail)
    assert main(["plan", "--docs", "1", "--full-dim", "8"]) == status
    assert capsys.readouterr().err.splitlines() == [line]


def test_tune_sets_the_adaptive_funnel_and_saves_it(tmp_path, capsys) -> None:
    import numpy as np

    from matryoshka_retrieval import MatryoshkaIndex

    vectors = np.random.default_rng(0).normal(size=(400, 32)).astype(np.float32)
    index = MatryoshkaIndex(coarse_dim=8, device="cpu")
    index.add_vectors(vectors, ids=[str(i) for i in range(400)])
    index.save(tmp_path / "idx")
    argv = ["tune", str(tmp_path / "idx"), "--target-recall", "0.9", "-k", "5"]
    assert main([*argv, "--confidence", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "| fixed | shortlist" in out and "| adaptive | margin" in out and "set: " in out
    assert "| exact | full scan | 1.0000 | 1.0000 | 400.0 |" in out
    config = MatryoshkaIndex.load(tmp_path / "idx").config
    assert (config.adaptive_margin is not None) == ("set: adaptive margin" in out)
    assert (config.exact_below == 400) == ("set: exact full scan up to 400 rows" in out)


@pytest.mark.parametrize("target", ["0", "1.5", "nan"])
def test_tune_refuses_a_target_outside_0_to_1(tmp_path, capsys, target: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(tmp_path), "--target-recall", target])
    assert exc.value.code == 2 and "--target-recall" in capsys.readouterr().err


def test_tune_can_search_the_coarse_stage(tmp_path, capsys) -> None:
    import numpy as np

    from matryoshka_retrieval import MatryoshkaIndex

    vectors = np.random.default_rng(0).normal(size=(3000, 160)).astype(np.float32)
    index = MatryoshkaIndex(coarse_dim=8, device="cpu", exact_below=0)
    index.add_vectors(vectors, ids=[str(i) for i in range(3000)])
    index.save(tmp_path / "idx")
    args = ["tune", str(tmp_path / "idx"), "--target-recall", "0.8", "--search-coarse"]
    assert main([*args, "--sample", "50"]) == 0
    out = capsys.readouterr().out
    for label in ("coarse_dim=64", "coarse_dim=128", "backend=hnsw", "precision=int8"):
        assert label in out
    loaded = MatryoshkaIndex.load(tmp_path / "idx")
    assert loaded.coarse_dim in (64, 128)  # the 8-dim stage was not among those tried


# -- plan: dims larger than the model's ------------------------------------------------------------
@pytest.mark.parametrize(
    ("dims", "named"), [("999", "999"), ("64,999", "999"), ("400,512,64", "400,512")]
)
def test_plan_refuses_a_dim_larger_than_the_full_dim_naming_both(dims, named, capsys) -> None:
    # D23: `plan --dims 999 --full-dim 384` printed 384d as if asked for it
    assert main(["plan", "--docs", "1000", "--full-dim", "384", "--dims", dims]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"matryoshka plan: error: --dims {named} is larger than --full-dim 384: a prefix can be "
        "at most the model's embedding dimension"
    ]
    assert captured.out == "" and "Traceback" not in captured.err


def test_plan_without_dims_costs_the_default_dims_that_fit(capsys) -> None:
    # D23: the defaults (64,128,256,512) are trimmed to the full dim, never an error
    assert main(["plan", "--docs", "1000", "--full-dim", "384", "--precision", "int8"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if "d int8" in line]
    assert rows == ["64d", "128d", "256d"]


def test_plan_accepts_the_full_dim_itself(capsys) -> None:
    # D23: a prefix of exactly the full dim is allowed
    assert (
        main(["plan", "--docs", "10", "--full-dim", "384", "--dims", "384", "--precision", "int8"])
        == 0
    )
    assert "384d int8" in capsys.readouterr().out
