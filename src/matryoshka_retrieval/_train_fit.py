"""The model side of a training run: loading it, measuring it, and the ``mnrl`` fit with the
sentence-transformers trainer (the ``distill`` fit is :mod:`._distill`)."""

from __future__ import annotations

import importlib
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._optional import require
from ._train_data import Pair
from ._train_settings import Run
from .eval import BeirData, EvalResults, evaluate_dims

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


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


def pick_device(device: str | None) -> str:
    """``device``, or a GPU when torch sees one, else the CPU."""
    if device is not None:
        return device
    torch = require("torch", "train")
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    model: str | Path | SentenceTransformer | None, device: str
) -> tuple[SentenceTransformer, str, int]:
    """The model to train, its base model's name, and its full embedding dim."""
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


def evaluate(
    model: SentenceTransformer, data: BeirData, dims: Sequence[int], run: Run
) -> EvalResults:
    """Every dim of ``dims`` measured on ``data``, searching the full-dim vectors' prefixes."""
    from .encoders import SentenceTransformerEncoder

    settings = run.settings
    encoder = SentenceTransformerEncoder(
        model, batch_size=settings.batch_size, show_progress_bar=settings.show_progress_bar
    )
    return evaluate_dims(encoder, data.corpus, data.queries, data.qrels, dims=dims, rescore=())


def fit_mnrl(st_model: SentenceTransformer, pairs: list[Pair], run: Run) -> tuple[int, float]:
    """``MatryoshkaLoss(MultipleNegativesRankingLoss)`` with the sentence-transformers trainer."""
    datasets = require("datasets", "train")
    require("accelerate", "train")
    from sentence_transformers import SentenceTransformerTrainer

    settings = run.settings
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
    total_steps = math.ceil(math.ceil(len(pairs) / settings.batch_size) * settings.epochs)
    with tempfile.TemporaryDirectory(prefix="matryoshka-train-") as scratch:
        trainer = SentenceTransformerTrainer(
            model=st_model,
            args=_training_arguments(run, scratch, total_steps),
            train_dataset=train_dataset,
            loss=loss,
        )
        output = trainer.train()
    return int(output.global_step), float(output.training_loss)


def _training_arguments(run: Run, scratch: str, total_steps: int) -> Any:
    torch = require("torch", "train")
    from sentence_transformers import SentenceTransformerTrainingArguments

    settings = run.settings
    on_gpu = run.device.startswith("cuda")
    bf16 = on_gpu and bool(torch.cuda.is_bf16_supported())
    return SentenceTransformerTrainingArguments(
        output_dir=scratch,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=math.ceil(total_steps * settings.warmup_ratio),
        batch_sampler=_batch_samplers().NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        logging_strategy="steps" if settings.show_progress_bar else "no",
        logging_steps=max(1, total_steps // 20),
        disable_tqdm=not settings.show_progress_bar,
        seed=settings.seed,
        bf16=bf16,
        fp16=on_gpu and not bf16,
        use_cpu=not on_gpu and run.device == "cpu",
    )
