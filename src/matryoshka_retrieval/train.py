"""Fine-tune a sentence-transformers model into a Matryoshka model.

:func:`train_matryoshka` trains with sentence-transformers' ``MatryoshkaLoss`` wrapped around
``MultipleNegativesRankingLoss`` (in-batch negatives) on ``(query, positive)`` pairs, so that
every chosen prefix dim is trained as an embedding of its own. It measures every dim before and
after on an evaluation set and saves a model that
:class:`~matryoshka_retrieval.SentenceTransformerEncoder` loads.

Pairs come from a JSONL file (``{"query": ..., "positive": ...}`` a line) or a BEIR folder
(:func:`load_pairs`); :func:`split_beir` holds out part of a BEIR set's queries for evaluation.
Every setting of a run is a field of :class:`TrainSettings`, given as keywords or at once.

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

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._optional import require
from ._train_data import Pair, check_pairs, check_texts, load_pairs, pairs_from_beir, split_beir
from ._train_fit import evaluate, fit_mnrl, load_model, pick_device
from ._train_settings import Loss, Run, Schedule, TrainSettings, merge, setting_names
from .eval import BeirData, EvalResults

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = [
    "TrainResult",
    "TrainSettings",
    "load_pairs",
    "pairs_from_beir",
    "split_beir",
    "train_matryoshka",
]

MANIFEST = "matryoshka.json"
"""File written next to a trained model: base model, dims, weights, settings and results."""

_DEFAULT = TrainSettings()
_SETTING_NAMES = frozenset(setting_names())
_LOSS_NAMES = {
    "mnrl": "MatryoshkaLoss(MultipleNegativesRankingLoss)",
    "distill": "self-distillation (full-dim teacher, KL at each prefix dim)",
}
_RECORDED = ("epochs", "batch_size", "learning_rate", "warmup_ratio", "max_seq_length")
_RECORDED_DISTILL = ("schedule", "temperature", "pair_weight", "full_weight")


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


def train_matryoshka(
    pairs: Sequence[Pair],
    output_path: str | Path,
    *,
    model: str | Path | SentenceTransformer | None = None,
    loss: Loss = _DEFAULT.loss,
    corpus: Sequence[str] | None = None,
    dims: Sequence[int] | None = _DEFAULT.dims,
    weights: Sequence[float] | None = _DEFAULT.weights,
    epochs: float = _DEFAULT.epochs,
    batch_size: int = _DEFAULT.batch_size,
    learning_rate: float = _DEFAULT.learning_rate,
    warmup_ratio: float = _DEFAULT.warmup_ratio,
    max_seq_length: int | None = _DEFAULT.max_seq_length,
    schedule: Schedule = _DEFAULT.schedule,
    temperature: float = _DEFAULT.temperature,
    pair_weight: float = _DEFAULT.pair_weight,
    full_weight: float = _DEFAULT.full_weight,
    eval_data: BeirData | None = None,
    eval_dims: Sequence[int] | None = _DEFAULT.eval_dims,
    device: str | None = _DEFAULT.device,
    seed: int = _DEFAULT.seed,
    overwrite: bool = _DEFAULT.overwrite,
    show_progress_bar: bool = _DEFAULT.show_progress_bar,
    settings: TrainSettings | None = None,
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
            offline default model. A loaded model is trained in place (and moved to the device).
        corpus: Texts to distil on (``distill`` only): the documents the model will embed.
        eval_data: A BEIR set to measure every dim on, before and after training (nDCG@10,
            recall, MRR); ``None`` skips the evaluation.
        settings: Every setting at once, as a :class:`TrainSettings`; the keywords below are
            then left at their defaults.
        loss: The loss; it and every keyword after it (``dims``, ``weights``, ``epochs``,
            ``batch_size``, ``learning_rate``, ``warmup_ratio``, ``max_seq_length``,
            ``schedule``, ``temperature``, ``pair_weight``, ``full_weight``, ``eval_dims``,
            ``device``, ``seed``, ``overwrite``, ``show_progress_bar``) is one setting, as
            :class:`TrainSettings` describes it, with its default.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ImportError: Without the ``train`` extra.
        ValueError: For bad pairs, corpus, dims, weights or settings (nothing is trained or
            written); the message names the value and its limit.
        TypeError: For ``settings`` that is not a :class:`TrainSettings`, or ``settings``
            given with a keyword setting that is not at its default.
        FileExistsError: If ``output_path`` holds files and ``overwrite`` is false.
    """
    chosen = merge(settings, {k: v for k, v in locals().items() if k in _SETTING_NAMES})
    checked = check_pairs(pairs)
    texts = check_texts(chosen.loss, checked, corpus)
    out = Path(output_path)
    _check_output(out, chosen.overwrite)
    require("sentence_transformers", "train")
    device = pick_device(chosen.device)
    st_model, base_name, full = load_model(model, device)
    run = Run(replace(chosen, device=device).for_model(full), full)
    result = _fit_and_save(st_model, checked, texts, run, eval_data, out)
    result.settings = _recorded(run, base_name, len(checked), len(texts), st_model.max_seq_length)
    (out / MANIFEST).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


def _recorded(
    run: Run, base_name: str, n_pairs: int, n_texts: int, max_seq_length: int | None
) -> dict[str, Any]:
    """The settings written to the manifest (and :attr:`TrainResult.settings`)."""
    settings = run.settings
    recorded = {"base_model": base_name, "loss": _LOSS_NAMES[settings.loss], "pairs": n_pairs}
    recorded.update({name: getattr(settings, name) for name in _RECORDED})
    recorded.update(max_seq_length=max_seq_length, device=run.device, seed=settings.seed)
    if settings.loss == "distill":
        recorded["corpus"] = n_texts
        recorded.update({name: getattr(settings, name) for name in _RECORDED_DISTILL})
    return recorded


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace its contents")


def _fit_and_save(
    st_model: SentenceTransformer,
    pairs: list[Pair],
    texts: list[str],
    run: Run,
    eval_data: BeirData | None,
    out: Path,
) -> TrainResult:
    """Measure, train, save and measure again; the full embedding throughout (a
    ``truncate_dim`` the model had is put back afterwards)."""
    from ._distill import distill

    settings = run.settings
    st_model.to(run.device)
    if settings.max_seq_length is not None:
        st_model.max_seq_length = settings.max_seq_length
    kept_truncate_dim = getattr(st_model, "truncate_dim", None)
    st_model.truncate_dim = None  # train, evaluate and save the full embedding
    try:
        before = _measure(st_model, eval_data, run, "before")
        start = time.perf_counter()
        if settings.loss == "mnrl":
            steps, train_loss = fit_mnrl(st_model, pairs, run)
        else:
            steps, train_loss = distill(st_model, texts, pairs, run)
        seconds = time.perf_counter() - start
        if out.is_dir() and settings.overwrite:
            shutil.rmtree(out)  # replaced only now that training has succeeded
        out.mkdir(parents=True, exist_ok=True)
        st_model.save(str(out))
        after = _measure(st_model, eval_data, run, "after")
    finally:
        st_model.truncate_dim = kept_truncate_dim
    return TrainResult(
        model_path=out,
        dims=run.dims,
        weights=run.weights,
        steps=steps,
        train_loss=train_loss,
        seconds=seconds,
        before=before,
        after=after,
    )


def _measure(
    st_model: SentenceTransformer, eval_data: BeirData | None, run: Run, when: str
) -> EvalResults | None:
    if eval_data is None:
        return None
    logger.info("evaluating the model %s training", when)
    return evaluate(st_model, eval_data, run.settings.eval_dims or run.dims, run)
