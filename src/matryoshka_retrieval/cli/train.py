"""``matryoshka train``: fine-tune a sentence-transformers model with a Matryoshka loss.

Fine-tune with MatryoshkaLoss over MultipleNegativesRankingLoss on (query, positive) pairs from a
JSONL file or a BEIR folder, measure every dim before and after, and save a model that
SentenceTransformerEncoder loads.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    parser.add_argument(
        "--dims",
        type=opt.dim_list,
        default=None,
        help="dims to train, in the order of --weights (default: full, 512, ..., 32)",
    )
    parser.add_argument("--weights", type=opt.weights, default=None, help="one loss weight per dim")
    parser.add_argument(
        "--epochs", type=opt.float_arg(0, low_open=True), default=1, help="passes over the pairs"
    )
    parser.add_argument(
        "--batch-size", type=opt.int_arg(2), default=32, help="pairs per step (at least 2)"
    )
    parser.add_argument(
        "--learning-rate",
        type=opt.float_arg(0, low_open=True),
        default=2e-5,
        help="peak learning rate",
    )
    opt.add_max_seq_length(parser)
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
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: GPU if present)")
    parser.add_argument(
        "--seed", type=opt.int_arg(0), default=0, help="random seed (and holdout split)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the --out folder once training succeeds"
    )
    opt.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from ..train import train_matryoshka

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pairs, eval_data = _data(args)
    print(f"training on {len(pairs)} (query, positive) pairs")
    result = train_matryoshka(
        pairs,
        args.out,
        model=args.model,
        dims=args.dims,
        weights=args.weights,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_seq_length=args.max_seq_length,
        eval_data=eval_data,
        device=args.device,
        seed=args.seed,
        overwrite=args.overwrite,
        show_progress_bar=not args.quiet,
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
