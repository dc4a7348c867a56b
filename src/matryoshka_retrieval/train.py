"""Fine-tune a sentence-transformers model into a Matryoshka model.

:func:`train_matryoshka` trains with sentence-transformers' ``MatryoshkaLoss`` wrapped around
``MultipleNegativesRankingLoss`` (in-batch negatives) on ``(query, positive)`` pairs, so that
every chosen prefix dim is trained as an embedding of its own. It measures every dim before and
after on an evaluation set and saves a model that
:class:`~matryoshka_retrieval.SentenceTransformerEncoder` loads.

Pairs come from a JSONL file (``{"query": ..., "positive": ...}`` a line) or a BEIR folder
(:func:`load_pairs`); :func:`split_beir` holds out part of a BEIR set's queries for evaluation.

Example:
    >>> from matryoshka_retrieval.train import split_beir
    >>> from matryoshka_retrieval.eval import BeirData
    >>> data = BeirData(
    ...     corpus={f"d{i}": f"text {i}" for i in range(10)},
    ...     queries={f"q{i}": f"query {i}" for i in range(10)},
    ...     qrels={f"q{i}": {f"d{i}": 1} for i in range(10)},
    ... )
    >>> train, test = split_beir(data, test_fraction=0.3)
    >>> len(train.queries), len(test.queries), len(test.corpus)
    (7, 3, 10)
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._distill import Schedule
from ._optional import require
from .eval import BeirData, EvalResults, evaluate_dims, load_beir, read_jsonl

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "load_pairs", "pairs_from_beir", "split_beir", "train_matryoshka"]

Pair = tuple[str, str]

_QUERY_KEYS = ("query", "anchor")
_POSITIVE_KEYS = ("positive", "document", "passage")
MANIFEST = "matryoshka.json"
"""File written next to a trained model: base model, dims, weights, settings and results."""


def pairs_from_beir(data: BeirData) -> list[Pair]:
    """``(query text, document text)`` for every qrel with a relevance above 0."""
    pairs = []
    for query_id, relevant in data.qrels.items():
        query = data.queries.get(query_id)
        if query is None:
            continue
        for doc_id, relevance in relevant.items():
            if relevance > 0 and doc_id in data.corpus:
                pairs.append((query, data.corpus[doc_id]))
    return pairs


def _field(record: dict[str, Any], keys: tuple[str, ...], where: str) -> str:
    for key in keys:
        value = record.get(key)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
            return value
    raise ValueError(f"{where} needs one of the keys {list(keys)}, got {sorted(record)}")


def load_pairs(path: str | Path, *, split: str = "train") -> list[Pair]:
    """Read ``(query, positive)`` training pairs.

    Args:
        path: A ``.jsonl`` / ``.jsonl.gz`` file with one object a line holding ``query`` (or
            ``anchor``) and ``positive`` (or ``document`` / ``passage``), or a BEIR folder, whose
            qrels of ``split`` with a relevance above 0 become pairs.
        split: The qrels file of a BEIR folder (``qrels/<split>.tsv``).

    Returns:
        The pairs, in file order.

    Raises:
        FileNotFoundError: If the path, or a file of the BEIR folder, does not exist.
        ValueError: For a line that is not JSON or lacks a field (the message names the line),
            or a source with no pairs.
    """
    source = Path(path)
    if source.is_dir():
        pairs = pairs_from_beir(load_beir(source, split=split))
    elif source.is_file():
        pairs = []
        for number, record in read_jsonl(source):
            where = f"{source}:{number}"
            if not isinstance(record, dict):
                raise ValueError(f"{where} must be a JSON object, got {type(record).__name__}")
            pairs.append(
                (_field(record, _QUERY_KEYS, where), _field(record, _POSITIVE_KEYS, where))
            )
    else:
        raise FileNotFoundError(f"no pairs file or BEIR folder at {source}")
    if not pairs:
        raise ValueError(f"{source} holds no (query, positive) pairs")
    return pairs


def split_beir(
    data: BeirData, *, test_fraction: float = 0.5, seed: int = 0
) -> tuple[BeirData, BeirData]:
    """Split a BEIR set by query into a training part and a held-out evaluation part.

    Both parts keep the whole corpus (the evaluation searches all of it); the queries and their
    qrels are divided at random, ``test_fraction`` of them held out. Queries with the same text
    are kept on the same side.

    Raises:
        ValueError: If ``test_fraction`` is not between 0 and 1, or a part would be empty.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    ids = sorted(q for q in data.queries if q in data.qrels)
    random.Random(seed).shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    # queries with the same text stay on one side, so no held-out query is trained on
    held_out_texts = {data.queries[q] for q in ids[:n_test]}
    test_ids = {q for q in ids if data.queries[q] in held_out_texts}
    if not test_ids or len(test_ids) == len(ids):
        raise ValueError(
            f"test_fraction={test_fraction} of {len(ids)} queries leaves one part empty"
        )
    parts = []
    for chosen in (set(ids) - test_ids, test_ids):
        parts.append(
            BeirData(
                corpus=data.corpus,
                queries={q: t for q, t in data.queries.items() if q in chosen},
                qrels={q: r for q, r in data.qrels.items() if q in chosen},
            )
        )
    return parts[0], parts[1]


@dataclass
class TrainResult:
    """What :func:`train_matryoshka` did: where the model is, and each dim before and after."""

    model_path: Path
    dims: list[int]
    weights: list[float]
    steps: int
    train_loss: float
    seconds: float
    before: EvalResults | None = None
    after: EvalResults | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON data (what ``matryoshka.json`` holds)."""
        return {
            "model_path": str(self.model_path),
            "dims": self.dims,
            "weights": self.weights,
            "steps": self.steps,
            "train_loss": self.train_loss,
            "seconds": self.seconds,
            "settings": self.settings,
            "before": self.before.to_list() if self.before else None,
            "after": self.after.to_list() if self.after else None,
        }

    def to_markdown(self) -> str:
        """nDCG@10 at each dim before and after, and as a share of the model's own full dim."""
        if self.before is None or self.after is None:
            return "(no evaluation set was given)"
        before = {r.dim: r.metrics["ndcg@10"] for r in self.before if not r.rerank}
        after = {r.dim: r.metrics["ndcg@10"] for r in self.after if not r.rerank}
        full_before, full_after = self.before.reference.dim, self.after.reference.dim
        lines = [
            "| dim | nDCG@10 before | % of full | nDCG@10 after | % of full | change |",
            "|---|---|---|---|---|---|",
        ]
        for dim in sorted(set(before) & set(after)):
            b, a = before[dim], after[dim]
            lines.append(
                f"| {dim} | {b:.4f} | {b / before[full_before]:.1%} | {a:.4f} | "
                f"{a / after[full_after]:.1%} | {a - b:+.4f} |"
            )
        return "\n".join(lines)


def _import_first(*names: str) -> Any:
    """The first of ``names`` that imports (sentence-transformers moved its modules in v6)."""
    for name in names[:-1]:
        try:
            return importlib.import_module(name)
        except ImportError:  # pragma: no cover - an older sentence-transformers
            continue
    return importlib.import_module(names[-1])


def _losses_module() -> Any:
    return _import_first(
        "sentence_transformers.sentence_transformer.losses", "sentence_transformers.losses"
    )


def _batch_samplers() -> Any:
    module = _import_first(
        "sentence_transformers.base.sampler", "sentence_transformers.training_args"
    )
    return module.BatchSamplers


def _check_dims(
    dims: Sequence[int] | None, weights: Sequence[float] | None, full: int
) -> tuple[list[int], list[float]]:
    if dims is None:
        dims = [full] + [2**i for i in range(11, 4, -1) if 2**i < full]
    dims = list(dims)
    if not dims:
        raise ValueError("dims must name at least one dim")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= full:
            raise ValueError(f"dims holds {d!r}; each dim must be an int between 1 and {full}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims {dims} repeats a dim")
    if full not in dims:
        logger.warning("dims %s leave out the full dim %d: it will not be trained", dims, full)
    if weights is None:
        weights = [1.0] * len(dims)
    weights = [float(w) for w in weights]
    if len(weights) != len(dims):
        raise ValueError(f"got {len(weights)} weights for {len(dims)} dims; give one per dim")
    for w in weights:
        if not (w > 0 and math.isfinite(w)):
            raise ValueError(f"weights holds {w}; each weight must be a positive number")
    order = sorted(range(len(dims)), key=lambda i: -dims[i])
    return [dims[i] for i in order], [weights[i] for i in order]


def _check_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    checked = []
    for number, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"pair {number} must be a (query, positive) pair, got {pair!r}")
        query, positive = pair
        for name, text in (("query", query), ("positive", positive)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"pair {number}: the {name} must be a non-empty string")
        checked.append((query, positive))
    return checked


def _device(device: str | None) -> str:
    if device is not None:
        return device
    torch = require("torch", "train")
    return "cuda" if torch.cuda.is_available() else "cpu"


def _evaluate(
    model: SentenceTransformer,
    data: BeirData,
    dims: Sequence[int],
    batch_size: int,
    show_progress_bar: bool,
) -> EvalResults:
    from .encoders import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(
        model, batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    return evaluate_dims(encoder, data.corpus, data.queries, data.qrels, dims=dims, rescore=())


Loss = Literal["mnrl", "distill"]


def _check_positive_int(name: str, value: Any, minimum: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int of at least {minimum}{why}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def _check_number(name: str, value: float) -> float:
    if isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return float(value)


def _check_settings(
    batch_size: int,
    epochs: float,
    learning_rate: float,
    warmup_ratio: float,
    max_seq_length: int | None,
) -> None:
    _check_positive_int("batch_size", batch_size, 2, " (in-batch negatives)")
    _check_number("epochs", epochs)
    _check_number("learning_rate", learning_rate)
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if max_seq_length is not None:
        _check_positive_int("max_seq_length", max_seq_length, 1)


def _check_loss(
    loss: str,
    pairs: list[Pair],
    corpus: Sequence[str] | None,
    schedule: str,
    temperature: float,
    pair_weight: float,
) -> list[str]:
    """The corpus texts of a ``distill`` run (none for ``mnrl``), after checking the loss."""
    if loss not in ("mnrl", "distill"):
        raise ValueError(f"loss={loss!r} is not supported; choose 'mnrl' or 'distill'")
    if schedule not in ("joint", "sequential"):
        raise ValueError(f"schedule={schedule!r} is not supported; choose 'joint' or 'sequential'")
    _check_number("temperature", temperature)
    _check_number("pair_weight", pair_weight)
    if loss == "mnrl":
        if corpus is not None:
            raise ValueError("corpus is used by loss='distill' only")
        if schedule != "joint":
            raise ValueError("schedule='sequential' is used by loss='distill' only")
        if len(pairs) < 2:
            raise ValueError(f"training needs at least 2 pairs, got {len(pairs)}")
        return []
    texts = []
    for number, text in enumerate(corpus or ()):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"corpus text {number} must be a non-empty string, got {text!r}")
        texts.append(text)
    if len(set(texts)) < 2 and len(pairs) < 2:
        raise ValueError(
            f"loss='distill' needs at least 2 corpus texts or 2 pairs, got {len(set(texts))} "
            f"and {len(pairs)}"
        )
    return texts


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace its contents")


def _load_model(
    model: str | Path | SentenceTransformer | None, device: str
) -> tuple[SentenceTransformer, str, int]:
    from .encoders.sentence_transformers import _load, model_full_dim

    base_name: str
    if model is None or isinstance(model, (str, Path)):
        st_model, base_name = _load(model, device)
    else:
        st_model = model
        card = getattr(model, "model_card_data", None)
        base_name = str(getattr(card, "base_model", None) or type(model).__name__)
    full = model_full_dim(st_model)
    if full is None:
        raise ValueError(f"model {base_name!r} does not report its embedding dimension")
    return st_model, base_name, full


def _check_eval_dims(eval_dims: Sequence[int] | None, dims: list[int], full: int) -> list[int]:
    for d in eval_dims or ():
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= full:
            raise ValueError(f"eval_dims holds {d!r}; each dim must be an int between 1 and {full}")
    return sorted(set(eval_dims or dims))


@dataclass(frozen=True)
class _Run:
    """What one training run needs besides the model and its texts."""

    dims: list[int]
    weights: list[float]
    epochs: float
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    device: str
    seed: int
    show_progress_bar: bool


def _fit_mnrl(st_model: SentenceTransformer, pairs: list[Pair], run: _Run) -> tuple[int, float]:
    """``MatryoshkaLoss(MultipleNegativesRankingLoss)`` with the sentence-transformers trainer."""
    datasets = require("datasets", "train")
    require("accelerate", "train")
    torch = require("torch", "train")
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    losses = _losses_module()
    loss = losses.MatryoshkaLoss(
        st_model,
        losses.MultipleNegativesRankingLoss(st_model),
        matryoshka_dims=run.dims,
        matryoshka_weights=run.weights,
    )
    train_dataset = datasets.Dataset.from_dict(
        {"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]}
    )
    total_steps = math.ceil(math.ceil(len(pairs) / run.batch_size) * run.epochs)
    on_gpu = run.device.startswith("cuda")
    bf16 = on_gpu and bool(torch.cuda.is_bf16_supported())
    with tempfile.TemporaryDirectory(prefix="matryoshka-train-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=run.epochs,
            per_device_train_batch_size=run.batch_size,
            learning_rate=run.learning_rate,
            warmup_steps=math.ceil(total_steps * run.warmup_ratio),
            batch_sampler=_batch_samplers().NO_DUPLICATES,
            save_strategy="no",
            report_to="none",
            logging_strategy="steps" if run.show_progress_bar else "no",
            logging_steps=max(1, total_steps // 20),
            disable_tqdm=not run.show_progress_bar,
            seed=run.seed,
            bf16=bf16,
            fp16=on_gpu and not bf16,
            use_cpu=not on_gpu and run.device == "cpu",
        )
        trainer = SentenceTransformerTrainer(
            model=st_model, args=args, train_dataset=train_dataset, loss=loss
        )
        output = trainer.train()
    return int(output.global_step), float(output.training_loss)


def train_matryoshka(
    pairs: Sequence[Pair],
    output_path: str | Path,
    *,
    model: str | Path | SentenceTransformer | None = None,
    loss: Loss = "mnrl",
    corpus: Sequence[str] | None = None,
    dims: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    epochs: float = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    warmup_ratio: float = 0.1,
    max_seq_length: int | None = None,
    schedule: Schedule = "joint",
    temperature: float = 0.05,
    pair_weight: float = 1.0,
    full_weight: float = 10.0,
    eval_data: BeirData | None = None,
    eval_dims: Sequence[int] | None = None,
    device: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    show_progress_bar: bool = True,
) -> TrainResult:
    """Fine-tune a sentence-transformers model into a Matryoshka model and save it.

    Two losses:

    - ``mnrl`` (default): ``MatryoshkaLoss(MultipleNegativesRankingLoss)``: for each dim in
      ``dims``, every query is scored against every positive in its batch on that prefix, its
      own positive the target; the per-dim losses are summed with ``weights``. Batches hold no
      duplicate texts, so no in-batch "negative" is a copy of the positive. Needs pairs.
    - ``distill``: self-distillation, no labels needed. The model as it is before training is
      the teacher: its full-dim vectors of ``corpus`` (and of the pairs' texts) are computed
      once. Each batch holds corpus texts with one of their ten nearest full-dim neighbours
      each, and pairs if given; at each prefix dim, each text's in-batch similarity
      distribution (softmax at ``temperature``) is trained to match the teacher's full-dim
      one (KL divergence), weighted by the dim's weight; the full dim's weight holds the
      student's full dim on the teacher (the same KL, plus ``full_weight`` times one minus the
      cosine of each text's student and teacher vectors and the squared difference of their
      in-batch similarities). Pairs (real ones or
      :func:`~matryoshka_retrieval.datasets.corpus_pairs`) add an in-batch ranking loss at
      each prefix dim, weighted by ``pair_weight``. With ``schedule="sequential"`` the run is
      cut into one stage per prefix dim, largest first, and each stage adds the next smaller
      dim to those trained (the full-dim term throughout); ``joint`` trains all from the start.

    Args:
        pairs: ``(query, positive)`` texts, from :func:`load_pairs` or your own; may be empty
            with ``loss="distill"`` and a ``corpus``.
        output_path: Folder to save the trained model in (a ``SentenceTransformer`` folder, plus
            ``matryoshka.json`` with the dims, settings and results).
        model: A model name or path, a loaded ``SentenceTransformer``, or ``None`` for the
            offline default model. A loaded model is trained in place (and moved to ``device``).
        loss: ``mnrl`` or ``distill`` (see above).
        corpus: Texts to distil on (``distill`` only): the documents the model will embed.
        dims: Prefix dims to train, the full dim among them; default: the full dim and the powers
            of two from 32 below it.
        weights: One loss weight per dim; default 1 each.
        epochs: Passes over the pairs (``mnrl``), or over the corpus texts as batch anchors
            (``distill``; over the pairs if that takes more steps).
        batch_size: Texts per step (``distill``), or pairs per step (``mnrl``; each query has
            ``batch_size - 1`` in-batch negatives).
        learning_rate: Peak AdamW learning rate (linear warm-up, then linear decay).
        warmup_ratio: Share of the steps spent warming up.
        max_seq_length: Truncate inputs to this many tokens while training and evaluating.
        schedule: ``joint`` or ``sequential`` (``distill`` only).
        temperature: Softmax temperature of the ``distill`` terms.
        pair_weight: Weight of the pair term of ``distill``.
        full_weight: Weight of the terms that hold the full dim on the teacher (``distill``).
        eval_data: A BEIR set to measure every dim on, before and after training (nDCG@10,
            recall, MRR); ``None`` skips the evaluation.
        eval_dims: Dims to evaluate; default: ``dims``.
        device: ``"cpu"``, ``"cuda"``, ...; default: a GPU when torch sees one, else the CPU.
        seed: Random seed for the order of batches and the initialisation.
        overwrite: Replace ``output_path`` and everything in it once training has succeeded;
            otherwise a non-empty folder is refused before anything is trained.
        show_progress_bar: Show progress bars for training and evaluation.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ImportError: Without the ``train`` extra.
        ValueError: For bad pairs, corpus, dims, weights or settings (nothing is trained or
            written); the message names the value.
        FileExistsError: If ``output_path`` holds files and ``overwrite`` is false.
    """
    checked = _check_pairs(pairs)
    _check_settings(batch_size, epochs, learning_rate, warmup_ratio, max_seq_length)
    texts = _check_loss(loss, checked, corpus, schedule, temperature, pair_weight)
    _check_number("full_weight", full_weight)
    out = Path(output_path)
    _check_output(out, overwrite)
    require("sentence_transformers", "train")
    device = _device(device)
    st_model, base_name, full = _load_model(model, device)
    dims, weights = _check_dims(dims, weights, full)
    eval_dims = _check_eval_dims(eval_dims, dims, full)
    run = _Run(
        dims, weights, epochs, batch_size, learning_rate, warmup_ratio, device, seed,
        show_progress_bar,
    )  # fmt: skip
    st_model.to(device)
    if max_seq_length is not None:
        st_model.max_seq_length = max_seq_length
    kept_truncate_dim = getattr(st_model, "truncate_dim", None)
    st_model.truncate_dim = None  # train, evaluate and save the full embedding
    try:
        before = None
        if eval_data is not None:
            logger.info("evaluating the model before training")
            before = _evaluate(st_model, eval_data, eval_dims, batch_size, show_progress_bar)
        start = time.perf_counter()
        if loss == "mnrl":
            steps, train_loss = _fit_mnrl(st_model, checked, run)
        else:
            steps, train_loss = _fit_distill(
                st_model,
                texts,
                checked,
                run,
                full,
                schedule,
                (temperature, pair_weight, full_weight),
            )
        seconds = time.perf_counter() - start
        if out.is_dir() and overwrite:
            shutil.rmtree(out)  # replaced only now that training has succeeded
        out.mkdir(parents=True, exist_ok=True)
        st_model.save(str(out))
        after = None
        if eval_data is not None:
            logger.info("evaluating the model after training")
            after = _evaluate(st_model, eval_data, eval_dims, batch_size, show_progress_bar)
    finally:
        st_model.truncate_dim = kept_truncate_dim
    settings: dict[str, Any] = {
        "base_model": base_name,
        "loss": _LOSS_NAMES[loss],
        "pairs": len(checked),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "max_seq_length": st_model.max_seq_length,
        "device": device,
        "seed": seed,
    }
    if loss == "distill":
        settings.update(
            corpus=len(texts),
            schedule=schedule,
            temperature=temperature,
            pair_weight=pair_weight,
            full_weight=full_weight,
        )
    result = TrainResult(
        model_path=out,
        dims=dims,
        weights=weights,
        steps=steps,
        train_loss=train_loss,
        seconds=seconds,
        before=before,
        after=after,
        settings=settings,
    )
    (out / MANIFEST).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


_LOSS_NAMES = {
    "mnrl": "MatryoshkaLoss(MultipleNegativesRankingLoss)",
    "distill": "self-distillation (full-dim teacher, KL at each prefix dim)",
}


def _fit_distill(
    st_model: SentenceTransformer,
    corpus: list[str],
    pairs: list[Pair],
    run: _Run,
    full: int,
    schedule: Schedule,
    weights: tuple[float, float, float],
) -> tuple[int, float]:
    """Self-distillation; ``weights`` are the temperature, pair weight and full-dim weight."""
    from ._distill import DistillSettings, distill

    temperature, pair_weight, full_weight = weights
    settings = DistillSettings(
        dims=run.dims,
        weights=run.weights,
        full_dim=full,
        epochs=run.epochs,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        warmup_ratio=run.warmup_ratio,
        temperature=temperature,
        pair_weight=pair_weight,
        full_weight=full_weight,
        schedule=schedule,
        seed=run.seed,
        show_progress_bar=run.show_progress_bar,
    )
    return distill(st_model, corpus, pairs, settings, run.device)
