from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from beir_files import write_beir, write_jsonl
from matryoshka_retrieval import SentenceTransformerEncoder
from matryoshka_retrieval.cli import main
from matryoshka_retrieval.datasets import python_docs_task
from matryoshka_retrieval.eval import BeirData
from matryoshka_retrieval.train import (
    MANIFEST,
    TrainSettings,
    load_pairs,
    pairs_from_beir,
    split_beir,
    train_matryoshka,
)

pytest.importorskip("datasets", reason="the train extra is part of the test set-up")


@pytest.fixture(scope="module")
def task() -> BeirData:
    """Real known-item pairs: a stdlib docstring's first sentence and the rest of it."""
    return python_docs_task()


# -- reading pairs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.jsonl.gz"])
def test_load_pairs_from_jsonl(tmp_path: Path, name: str) -> None:
    path = write_jsonl(
        tmp_path / name,
        [
            {"query": "list files", "positive": "ls lists directory contents"},
            {"anchor": "copy files", "positive": "cp copies files", "extra": 1},
            {"query": "free space", "document": "df reports disk space"},
        ],
    )
    assert load_pairs(path) == [
        ("list files", "ls lists directory contents"),
        ("copy files", "cp copies files"),
        ("free space", "df reports disk space"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "q"}', r"pairs.jsonl:2 needs one of the keys \['positive'"),
        ('{"query": "", "positive": "p"}', r"pairs.jsonl:2: 'query' must be a non-empty string"),
        ('{"query": 3, "positive": "p"}', r"'query' must be a non-empty string, got 3"),
        ("[1, 2]", r"pairs.jsonl:2 must be a JSON object, got list"),
        ("{not json", r"pairs.jsonl:2 is not JSON"),
    ],
)
def test_load_pairs_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_pairs(path)


def test_load_pairs_errors_for_missing_or_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no pairs file or BEIR folder at"):
        load_pairs(tmp_path / "nothing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no"):
        load_pairs(tmp_path / "empty.jsonl")


def test_load_pairs_from_a_beir_folder_keeps_relevant_qrels_only(tmp_path: Path) -> None:
    data = BeirData(
        corpus={"d1": "one", "d2": "two", "d3": "three"},
        queries={"q1": "first", "q2": "second", "q3": "third"},
        qrels={"q1": {"d1": 1, "d2": 0}, "q2": {"d2": 2, "d3": 1}, "q3": {"gone": 1}},
    )
    folder = write_beir(tmp_path / "beir", data, split="train")
    assert load_pairs(folder) == [("first", "one"), ("second", "two"), ("second", "three")]
    with pytest.raises(FileNotFoundError, match=r"qrels/test.tsv"):
        load_pairs(folder, split="test")


def test_split_beir_divides_queries_and_keeps_the_corpus(task: BeirData) -> None:
    train, test = split_beir(task, test_fraction=0.25, seed=3)
    assert set(train.queries).isdisjoint(test.queries)
    assert set(train.queries) | set(test.queries) == set(task.queries)
    wanted = round(len(task.queries) * 0.25)  # a few more when a held-out text repeats
    assert wanted <= len(test.queries) <= wanted + 10
    assert train.corpus is task.corpus and test.corpus is task.corpus
    assert set(test.qrels) == set(test.queries)
    again, _ = split_beir(task, test_fraction=0.25, seed=3)
    other, _ = split_beir(task, test_fraction=0.25, seed=4)
    assert again.queries == train.queries and other.queries != train.queries
    for fraction in (0, 1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            split_beir(task, test_fraction=fraction)


def test_split_beir_keeps_queries_with_the_same_text_on_one_side() -> None:
    data = BeirData(
        corpus={f"d{i}": f"doc {i}" for i in range(40)},
        queries={f"q{i}": f"query {i % 10}" for i in range(40)},  # each text four times
        qrels={f"q{i}": {f"d{i}": 1} for i in range(40)},
    )
    for seed in range(5):
        train, test = split_beir(data, test_fraction=0.3, seed=seed)
        assert set(train.queries.values()).isdisjoint(test.queries.values())
        assert len(train.queries) + len(test.queries) == 40 and len(test.queries) % 4 == 0


# -- training ----------------------------------------------------------------------------------


def test_bad_settings_fail_before_anything_is_trained_or_written(
    minilm_model: Any, tmp_path: Path
) -> None:
    pairs = [("list files", "ls lists files"), ("copy files", "cp copies files")]
    before = minilm_model.encode(["list files"])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"dims": [384, 0]}, "dims holds 0; each dim must be an int between 1 and 384"),
        ({"dims": [512]}, "dims holds 512"),
        ({"dims": [384, 64, 64]}, "repeats a dim"),
        ({"dims": [384, 64], "weights": [1.0]}, "got 1 weights for 2 dims"),
        ({"dims": [384, 64], "weights": [1.0, -2]}, "weights holds -2.0"),
        ({"batch_size": 1}, "batch_size must be an int of at least 2"),
        ({"epochs": 0}, "epochs must be a positive number, got 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive number"),
        ({"max_seq_length": 0}, "max_seq_length must be a positive int, got 0"),
        (
            {"eval_dims": [64, 999]},
            "eval_dims holds 999; each dim must be an int between 1 and 384",
        ),
    ]
    minilm_model.truncate_dim = 64  # the full dim is still the model's own, not its cut
    try:
        with pytest.raises(ValueError, match="got 1 weights for 2 dims"):
            train_matryoshka(pairs, tmp_path / "m", model=minilm_model, dims=[384, 64], weights=[1])
    finally:
        minilm_model.truncate_dim = None
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            train_matryoshka(pairs, tmp_path / "m", model=minilm_model, **options)
    with pytest.raises(ValueError, match="pair 1: the positive must be a non-empty string"):
        train_matryoshka([("a", "b"), ("c", " ")], tmp_path / "m", model=minilm_model)
    with pytest.raises(ValueError, match="at least 2 pairs, got 1"):
        train_matryoshka(pairs[:1], tmp_path / "m", model=minilm_model)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty; pass overwrite=True"):
        train_matryoshka(pairs, taken, model=minilm_model)
    assert (taken / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "m").exists()
    np.testing.assert_array_equal(minilm_model.encode(["list files"]), before)


@pytest.fixture(scope="module")
def trained(task: BeirData, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A short real CPU run: 96 stdlib pairs, dims 384 and 32, evaluated on those pairs."""
    queries = sorted(task.queries)[:96]
    relevant = {doc for q in queries for doc in task.qrels[q]}
    distractors = [d for d in task.corpus if d not in relevant][:200]
    subset = BeirData(
        corpus={d: task.corpus[d] for d in [*sorted(relevant), *distractors]},
        queries={q: task.queries[q] for q in queries},
        qrels={q: task.qrels[q] for q in queries},
    )
    out = tmp_path_factory.mktemp("train") / "model"
    result = train_matryoshka(
        pairs_from_beir(subset),
        out,
        dims=[384, 32],
        weights=[1, 2],
        epochs=4,
        batch_size=16,
        learning_rate=1e-4,
        max_seq_length=64,
        eval_data=subset,
        device="cpu",
        show_progress_bar=False,
    )
    return result, subset


def test_training_improves_the_trained_prefix_on_its_pairs_and_records_before_and_after(
    trained: Any,
) -> None:
    result, _ = trained
    assert result.dims == [384, 32] and result.weights == [1.0, 2.0]
    assert result.steps == 4 * 6  # 96 pairs / 16 a batch, 4 epochs
    before = {r.dim: r.metrics["ndcg@10"] for r in result.before}
    after = {r.dim: r.metrics["ndcg@10"] for r in result.after}
    assert set(before) == set(after) == {32, 384}
    assert after[32] > before[32] + 0.05, (before, after)
    assert after[384] >= before[384] - 0.02, (before, after)
    table = result.to_markdown()
    assert "| 32 |" in table and "| 384 |" in table and "% of full" in table


def test_the_saved_model_loads_in_the_encoder(trained: Any) -> None:
    result, subset = trained
    saved = json.loads((result.model_path / MANIFEST).read_text())
    assert saved["dims"] == [384, 32] and saved["settings"]["pairs"] == 96
    assert saved["before"][0]["dim"] == 384 and saved["after"][0]["dim"] == 384
    assert saved["settings"]["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    encoder = SentenceTransformerEncoder(result.model_path, truncate_dim=32, device="cpu")
    assert encoder.full_dim == 384 and encoder.model.max_seq_length == 64
    texts = list(subset.queries.values())[:4]
    original = SentenceTransformerEncoder(truncate_dim=32, device="cpu")
    assert not np.allclose(encoder.encode_queries(texts), original.encode_queries(texts))
    vectors = encoder.encode_queries(texts)
    assert vectors.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_cli_train_on_a_held_out_split(
    task: BeirData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = sorted(task.queries)[:40]
    data = BeirData(
        corpus={d: task.corpus[d] for q in queries for d in task.qrels[q]},
        queries={q: task.queries[q] for q in queries},
        qrels={q: task.qrels[q] for q in queries},
    )
    folder = write_beir(tmp_path / "beir", data)
    out = tmp_path / "model"
    argv = ["train", "--data", str(folder), "--out", str(out), "--holdout", "0.5"]
    argv += ["--dims", "64,384", "--weights", "3,1", "--batch-size", "8"]
    argv += ["--max-seq-length", "32", "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "20 for training, 20 held out" in printed and "training on 20" in printed
    assert "| 64 |" in printed and "| 384 |" in printed
    saved = json.loads((out / MANIFEST).read_text())
    assert saved["steps"] == 3
    assert saved["dims"] == [384, 64] and saved["weights"] == [1.0, 3.0]  # each weight its dim
    (out / "stray.txt").write_text("from before")
    assert main(argv) == 2  # the folder now holds a model: refused, kept
    assert "is not empty; pass overwrite=True" in capsys.readouterr().err
    assert (out / MANIFEST).exists() and (out / "stray.txt").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert (out / MANIFEST).exists() and not (out / "stray.txt").exists()


def test_cli_train_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"query": "a", "positive": "b"}] * 3)
    cases = [
        (["--data", str(pairs), "--holdout", "0.5"], "--holdout splits a BEIR folder"),
        (["--data", str(tmp_path / "none")], "no pairs file or BEIR folder at"),
        (["--data", str(pairs), "--dims", "384,64", "--weights", "1"], "got 1 weights for 2"),
    ]
    for argv, message in cases:
        assert main(["train", *argv, "--out", str(tmp_path / "o")]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("matryoshka train: error: "), errors
        assert message in errors[0]


# -- self-distillation (loss="distill"): no labels ----------------------------------------------


def test_bad_distill_settings_are_named(minilm_model: Any, tmp_path: Path) -> None:
    pairs = [("list files", "ls lists files"), ("copy files", "cp copies files")]
    cases: list[tuple[Sequence[Any], dict[str, Any], str]] = [
        (pairs, {"loss": "kl"}, r"loss='kl' is not supported; choose 'mnrl' or 'distill'"),
        (pairs, {"corpus": ["a text"]}, r"corpus is used by loss='distill' only"),
        (pairs, {"schedule": "sequential"}, r"schedule='sequential' is used by loss='distill'"),
        ([], {"loss": "distill", "schedule": "random"}, r"schedule='random' is not supported"),
        ([], {"loss": "distill"}, r"needs at least 2 corpus texts or 2 pairs, got 0 and 0"),
        ([], {"loss": "distill", "corpus": ["one", "one"]}, r"got 1 and 0"),
        ([], {"loss": "distill", "corpus": ["one", " "]}, r"corpus text 1 must be a non-empty"),
        (pairs, {"loss": "distill", "temperature": 0}, r"temperature must be a positive number"),
        (pairs, {"loss": "distill", "pair_weight": -1}, r"pair_weight must be a positive number"),
        (pairs, {"loss": "distill", "full_weight": 0}, r"full_weight must be a positive number"),
    ]
    for given, options, message in cases:
        with pytest.raises(ValueError, match=message):
            train_matryoshka(given, tmp_path / "m", model=minilm_model, **options)
    assert not (tmp_path / "m").exists()


def test_a_sequential_schedule_adds_smaller_dims_stage_by_stage() -> None:
    from matryoshka_retrieval._distill import _active_dims
    from matryoshka_retrieval._train_settings import Run

    settings = TrainSettings(
        loss="distill", dims=[384, 128, 64, 32], epochs=1, batch_size=8, learning_rate=1e-4,
        schedule="sequential", show_progress_bar=False,
    )  # fmt: skip
    run = Run(settings.for_model(384), full_dim=384)
    stages = [_active_dims(run, p) for p in (0.0, 0.4, 0.7, 0.99)]
    assert stages == [[128], [128, 64], [128, 64, 32], [128, 64, 32]]
    joint = Run(replace(run.settings, schedule="joint"), full_dim=384)
    assert _active_dims(joint, 0.0) == [128, 64, 32]


def _neighbours(vectors: np.ndarray, dim: int) -> np.ndarray:
    unit = vectors[:, :dim] / np.linalg.norm(vectors[:, :dim], axis=1, keepdims=True)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :10]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]))


def test_distillation_moves_the_full_dim_neighbours_into_the_prefix(
    stdlib_texts: list[str], tmp_path: Path
) -> None:
    """A short real CPU run on 64 docstrings, no pairs or labels: the 32-dim prefix agrees more
    with the original full-dim neighbours, and the full dim stays on them."""
    from matryoshka_retrieval.encoders.sentence_transformers import _load

    texts = stdlib_texts[:64]
    model, _ = _load(None, "cpu")
    model.max_seq_length = 32
    teacher = model.encode(texts, normalize_embeddings=True)
    result = train_matryoshka(
        [],
        tmp_path / "distilled",
        model=model,
        loss="distill",
        corpus=texts,
        dims=[384, 32],
        weights=[1, 2],
        epochs=2,
        batch_size=16,
        learning_rate=1e-4,
        device="cpu",
        show_progress_bar=False,
    )
    student = model.encode(texts, normalize_embeddings=True)
    truth = _neighbours(teacher, 384)
    before, after = (
        _overlap(_neighbours(teacher, 32), truth),
        _overlap(_neighbours(student, 32), truth),
    )
    assert after > before + 0.05, (before, after)
    kept = _overlap(_neighbours(student, 384), truth)
    assert kept >= 0.85, kept
    assert result.steps == 2 * 8  # 64 texts, 8 anchors (and a neighbour each) a step
    saved = json.loads((result.model_path / MANIFEST).read_text())
    assert saved["settings"]["loss"].startswith("self-distillation")
    assert saved["settings"]["corpus"] == 64 and saved["settings"]["schedule"] == "joint"
