"""``matryoshka train``: fine-tune a sentence-transformers model with a Matryoshka loss.

Fine-tune with MatryoshkaLoss over MultipleNegativesRankingLoss (or self-distillation, --loss
distill) on (query, positive) pairs from a JSONL file or a BEIR folder, measure every dim before
and after, and save a model that SentenceTransformerEncoder loads. Every training option is a
field of TrainSettings, with its default and its range.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import Field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._train_settings import Limit, TrainSettings
from . import _options as opt

if TYPE_CHECKING:
    from ..eval import BeirData


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "train", run, __doc__)
    parser.add_argument(
        "--data", required=True, help='JSONL of {"query", "positive"} or BEIR folder'
    )
    parser.add_argument("--out", required=True, help="folder to save the trained model to")
    opt.add_model(parser)
    parser.add_argument("--eval", default=None, help="BEIR folder to evaluate before and after")
    parser.add_argument(
        "--holdout",
        type=opt.float_arg(0, 1, low_open=True, high_open=True),
        default=None,
        help="hold out this share of a BEIR folder's queries for the evaluation (e.g. 0.5)",
    )
    parser.add_argument(
        "--split",
        default=None,
        help="qrels file of a BEIR --data folder (default: train; with --holdout, test if "
        "there is no train)",
    )
    for spec in fields(TrainSettings):
        if spec.name not in _NOT_OPTIONS:
            _add_setting(parser, spec)
    opt.add_quiet(parser)


#: Settings that are no option of their own: ``-q`` hides the progress bars.
_NOT_OPTIONS = frozenset({"show_progress_bar"})


def _add_setting(parser: argparse.ArgumentParser, spec: Field[Any]) -> None:
    """The option ``--NAME`` of one field of :class:`TrainSettings`: its default, its help, and
    an argument type that refuses what the field refuses."""
    flag = "--" + spec.name.replace("_", "-")
    about = spec.metadata
    if about["kind"] is bool:
        parser.add_argument(flag, action="store_true", default=spec.default, help=about["help"])
        return
    shown = "" if spec.default is None else f" (default: {spec.default})"
    parser.add_argument(
        flag,
        type=_argument_type(about["limit"], about["items"]),
        choices=about["choices"] or None,
        default=spec.default,
        help=about["help"] + shown,
    )


def _argument_type(limit: Limit | None, items: Limit | None) -> Callable[[str], Any]:
    """The argparse type of a setting with this range (or, for a list, this range of items)."""
    if items is not None:
        return opt.dim_list if items.kind is int else opt.weights
    if limit is None:
        return str
    if limit.kind is int:
        high = None if limit.high is None else int(limit.high)
        return opt.int_arg(int(limit.low), high)
    return opt.float_arg(limit.low, limit.high, low_open=limit.low_open, high_open=limit.high_open)


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """The :class:`TrainSettings` of the parsed options."""
    given = {
        spec.name: getattr(args, spec.name)
        for spec in fields(TrainSettings)
        if spec.name not in _NOT_OPTIONS
    }
    return TrainSettings(**given, show_progress_bar=not args.quiet)


def run(args: argparse.Namespace) -> int:
    from ..train import train_matryoshka

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = settings_from(args)
    pairs, eval_data = _data(args)
    print(f"training on {len(pairs)} (query, positive) pairs")
    result = train_matryoshka(
        pairs, args.out, model=args.model, eval_data=eval_data, settings=settings
    )
    print(
        f"trained dims {result.dims} for {result.steps} steps in {result.seconds:.0f}s "
        f"(mean loss {result.train_loss:.3f}); saved to {result.model_path}"
    )
    if eval_data is not None:
        print(result.to_markdown())
    print(json.dumps({"model": str(result.model_path)}))
    return 0


def _data(args: argparse.Namespace) -> tuple[list[tuple[str, str]], BeirData | None]:
    """The training pairs, and the evaluation data of ``--holdout`` or ``--eval``, if any."""
    from ..eval import load_beir
    from ..train import load_pairs, pairs_from_beir, split_beir

    source = Path(args.data)
    if args.holdout is not None and args.eval:
        raise ValueError("give --eval or --holdout, not both")
    if args.holdout is None:
        pairs = load_pairs(source, split=args.split or "train")
        return pairs, load_beir(args.eval) if args.eval else None
    if not source.is_dir():
        raise ValueError("--holdout splits a BEIR folder; --data is not a folder")
    split = args.split or ("train" if (source / "qrels" / "train.tsv").is_file() else "test")
    train_part, held_out = split_beir(
        load_beir(source, split=split), test_fraction=args.holdout, seed=args.seed
    )
    print(
        f"split {source} (qrels/{split}.tsv) by query with seed {args.seed}: "
        f"{len(train_part.queries)} for training, {len(held_out.queries)} held out"
    )
    return pairs_from_beir(train_part), held_out
