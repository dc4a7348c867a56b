from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from beir_files import write_beir as write_beir_data
from matryoshka_retrieval import eval as eval_module
from matryoshka_retrieval.cli import main
from matryoshka_retrieval.eval import BeirData, _metrics, evaluate_dims, load_beir, recommend

DOCS = {
    "ls": "ls lists directory contents",
    "cp": "cp copies files and directories",
    "rm": "rm removes files or directories",
    "df": "df reports file system disk space usage",
    "cal": "cal displays a calendar",
    "ps": "ps reports a snapshot of the current processes",
}
QUERIES = {"q1": "list the files in a folder", "q2": "free disk space", "q3": "no qrels"}
QRELS = {"q1": {"ls": 1}, "q2": {"df": 1}}


@pytest.fixture(autouse=True)
def quick_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speeds are not asserted here (but for the timing rule itself): time each row briefly."""
    monkeypatch.setattr(eval_module, "MIN_TIMED_SECONDS", 0.01)


def write_beir(folder: Path, *, gz: bool = False, qrels: bool = True) -> Path:
    return write_beir_data(folder, BeirData(DOCS, QUERIES, QRELS), gz=gz, qrels=qrels)


@pytest.mark.parametrize("gz", [False, True])
def test_load_beir_reads_both_layouts(tmp_path: Path, gz: bool) -> None:
    data = load_beir(write_beir(tmp_path / "d", gz=gz))
    assert data.corpus == DOCS
    assert data.queries == {"q1": QUERIES["q1"], "q2": QUERIES["q2"]}  # q3 has no qrels
    assert data.qrels == QRELS


def test_load_beir_without_qrels_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"has no qrels/test.tsv"):
        load_beir(write_beir(tmp_path / "d", qrels=False))


def test_metrics_match_a_hand_computed_case() -> None:
    doc_ids = list(DOCS)  # ls=0, cp=1, rm=2, df=3
    rows = np.array([[0, 1, 2], [1, 2, 3]])  # q1: relevant at rank 1; q2: relevant at rank 3
    scores = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], dtype=np.float32)
    m = _metrics(QRELS, ["q1", "q2"], doc_ids, rows, scores)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 2)
    assert m["mrr@10"] == pytest.approx((1.0 + 1.0 / 3) / 2)
    assert m["recall@10"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    std = np.arange(1, 65) ** -0.55
    docs = rng.normal(size=(400, 64)) * std
    queries = docs[:60] + 0.2 * rng.normal(size=(60, 64)) * std
    corpus = {f"d{i}": f"doc {i}" for i in range(400)}
    qs = {f"q{i}": f"query {i}" for i in range(60)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(60)}
    return (docs, queries), corpus, qs, qrels


def test_evaluate_dims_on_precomputed_vectors(synthetic) -> None:
    vectors, corpus, queries, qrels = synthetic
    results = evaluate_dims(
        vectors, corpus, queries, qrels, dims=[8, 16, 32], precisions=["float32", "int8", "binary"]
    )
    ref = results.reference
    assert (ref.name, ref.dim, ref.bytes_per_vector, ref.agreement_at_10) == (
        "exact, full dim",
        64,
        256,
        1.0,
    )
    names = [r.name for r in results]
    assert "16d int8" in names and "32d binary -> rerank x10" in names
    by_name = {r.name: r for r in results}
    assert by_name["8d binary"].bytes_per_vector == 1 and by_name["32d int8"].bytes_per_vector == 32
    for dim in (8, 16, 32):
        single, rerank = by_name[f"{dim}d float32"], by_name[f"{dim}d float32 -> rerank x10"]
        assert rerank.agreement_at_10 >= single.agreement_at_10
    assert by_name["32d float32 -> rerank x10"].metrics["ndcg@10"] >= 0.9 * ref.metrics["ndcg@10"]
    assert "| exact, full dim | 64 |" in results.to_markdown()


def test_recommend_picks_the_cheapest_that_meets_the_bar(synthetic) -> None:
    vectors, corpus, queries, qrels = synthetic
    results = evaluate_dims(
        vectors, corpus, queries, qrels, dims=[8, 16, 32], precisions=["float32", "binary"]
    )
    choice = recommend(results, min_quality=0.95)
    bar = 0.95 * results.reference.metrics["ndcg@10"]
    passing = [r for r in results if r.metrics["ndcg@10"] >= bar]
    assert choice.row.metrics["ndcg@10"] >= bar
    assert choice.row.bytes_per_vector == min(r.bytes_per_vector for r in passing)
    assert "of the reference" in choice.reason
    with pytest.raises(ValueError, match=r"metric='map' is not one of"):
        recommend(results, metric="map")


def test_speed_is_measured_warm_over_enough_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def search() -> str:
        calls.append(time.perf_counter())
        return "hits"

    monkeypatch.setattr(eval_module, "MIN_TIMED_SECONDS", 0.5)
    result, per_second = eval_module._timed(search, 30)
    assert result == "hits"
    # one warm-up call, then at least 200 queries (7 calls of 30) and half a second (the clock
    # starts just before calls[1], and a loaded machine may stretch that gap)
    assert len(calls) - 1 >= 7 and calls[-1] - calls[1] >= 0.5 - 0.05
    assert per_second == pytest.approx((len(calls) - 1) * 30 / (calls[-1] - calls[1]), rel=0.2)
    monkeypatch.setattr(eval_module, "MIN_TIMED_SECONDS", 0.0)
    calls.clear()
    eval_module._timed(search, 500)
    assert len(calls) == 2  # the warm-up and one timed pass of 500 queries


def test_evaluate_dims_rejects_bad_arguments(synthetic) -> None:
    vectors, corpus, queries, qrels = synthetic
    with pytest.raises(ValueError, match=r"dim 100 is out of range.*full dim 64"):
        evaluate_dims(vectors, corpus, queries, qrels, dims=[100])
    with pytest.raises(ValueError, match=r"precision 'int4' is not supported"):
        evaluate_dims(vectors, corpus, queries, qrels, precisions=["int4"])


def test_cli_eval_writes_report_table_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_beir(tmp_path / "d")
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--data",
            str(data),
            "--dims",
            "32,64,full",
            "--precision",
            "float32,binary",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["rows"][0]["name"] == "exact, full dim" and report["rows"][0]["dim"] == 384
    assert {r["name"] for r in report["rows"]} >= {"32d float32", "64d binary -> rerank x10"}
    assert "recommendation" in report and "| configuration |" in (out / "report.md").read_text()
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "recommended:" in capsys.readouterr().out


def test_cli_eval_unknown_precision_is_one_line(tmp_path: Path, capsys) -> None:
    data = write_beir(tmp_path / "d")
    assert main(["eval", "--data", str(data), "--precision", "int4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "matryoshka eval: error: unknown precision 'int4': choose from float32, int8, binary"
    ]


def test_cli_eval_dim_above_the_model_is_one_line(tmp_path: Path, capsys) -> None:
    data = write_beir(tmp_path / "d")
    assert main(["eval", "--data", str(data), "--dims", "64,999", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("matryoshka eval: error")]
    assert errors == ["matryoshka eval: error: --dims 999 is above the model's dimension 384"]
    assert "Traceback" not in err


def test_cli_eval_without_qrels_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_beir(tmp_path / "d", qrels=False)
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no qrels/test.tsv" in err[0]


def test_cli_plan_prints_storage_and_scan_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--docs", "10_000_000", "--full-dim", "3072", "--dims", "256,1024"]) == 0
    out = capsys.readouterr().out
    assert "10,000,000 documents x 3072 dims" in out and "114.4 GiB" in out
    assert "256d binary" in out and "1024d int8" in out
    line = next(row for row in out.splitlines() if row.startswith("256d float32"))
    assert line.split()[-1] == "8.3%"  # 1024 of 12288 bytes


def test_cli_eval_compares_raw_pca_and_learned_on_one_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    std = np.arange(1, 49)[::-1] ** -0.7  # the information sits in the last dims
    docs = rng.normal(size=(300, 48)) * std
    queries = docs[:40] + 0.3 * rng.normal(size=(40, 48))  # the same noise on every dim
    folder = write_beir_data(
        tmp_path / "data",
        BeirData(
            corpus={f"d{i}": f"doc {i}" for i in range(300)},
            queries={f"q{i}": f"query {i}" for i in range(40)},
            qrels={f"q{i}": {f"d{i}": 1} for i in range(40)},
        ),
    )
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    np.save(vectors / "docs.npy", docs.astype(np.float32))
    np.save(vectors / "queries.npy", queries.astype(np.float32))
    out = tmp_path / "out"
    argv = ["eval", "--data", str(folder), "--vectors", str(vectors), "--dims", "4,8,16"]
    assert main([*argv, "--projections", "pca,learned", "--out", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["projections"]) == {"pca", "learned"}

    def ndcg(rows: list[dict[str, object]], dim: int) -> float:
        row = next(r for r in rows if r["dim"] == dim and not r["rerank"])
        return float(row["metrics"]["ndcg@10"])

    raw, pca = report["rows"], report["projections"]["pca"]
    assert ndcg(pca, 8) > ndcg(raw, 8) + 0.1  # the rotation moves the information forward
    for rows in report["projections"].values():  # orthogonal: the full dim is unchanged
        assert ndcg(rows, 48) == pytest.approx(ndcg(raw, 48), abs=1e-6)
    assert (out / "projections.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "projection-learned.npz").exists()
    assert "| dim | raw | pca | learned |" in (out / "report.md").read_text()
    assert "| 8 |" in capsys.readouterr().out
    assert main([*argv, "--projections", "svd", "--out", str(out)]) == 2
    assert "unknown projection 'svd'" in capsys.readouterr().err


def test_cli_eval_learned_with_pairs_made_from_the_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from matryoshka_retrieval.datasets import python_docs_task
    from matryoshka_retrieval.projection import Projection

    pytest.importorskip("torch")
    task = python_docs_task()
    queries = sorted(task.queries)[:20]
    doc_ids = sorted({d for q in queries for d in task.qrels[q]} | set(list(task.corpus)[:60]))
    folder = write_beir_data(
        tmp_path / "data",
        BeirData(
            corpus={d: task.corpus[d] for d in doc_ids},
            queries={q: task.queries[q] for q in queries},
            qrels={q: task.qrels[q] for q in queries},
        ),
    )
    out = tmp_path / "out"
    argv = ["eval", "--data", str(folder), "--dims", "32,64", "--out", str(out), "-q"]
    assert main([*argv, "--projections", "learned,learned+pairs"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["projections"]) == {"learned", "learned+pairs"}
    fitted = Projection.load(out / "projection-learned-pairs.npz")
    assert fitted.method == "learned" and fitted.info["pairs"] >= 2
    assert "| dim | raw | learned | learned+pairs |" in (out / "report.md").read_text()
    capsys.readouterr()
    np.save(tmp_path / "docs.npy", np.eye(len(doc_ids), 8, dtype=np.float32))
    np.save(tmp_path / "queries.npy", np.eye(20, 8, dtype=np.float32))
    vectors = ["--vectors", str(tmp_path), "--projections", "learned+pairs"]
    assert main([*argv, *vectors]) == 2
    assert "learned+pairs embeds pairs made from the documents" in capsys.readouterr().err
