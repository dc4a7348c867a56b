"""``matryoshka tune``: set a saved index's funnel (fixed, adaptive, exact) for a recall target."""

from __future__ import annotations

import argparse
from typing import Any

from . import _options as opt


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "tune", run, __doc__)
    parser.add_argument("index", help="folder given to `matryoshka index --out`")
    parser.add_argument(
        "--target-recall",
        type=opt.float_arg(0.0, 1.0, low_open=True),
        default=0.99,
        help="mean recall@k to reach, against exact full-dim search (default 0.99)",
    )
    parser.add_argument("-k", type=opt.int_arg(1), default=10, help="hits per query")
    parser.add_argument(
        "--sample", type=opt.int_arg(1), default=200, help="held-out stored rows used as queries"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument(
        "--confidence",
        type=opt.float_arg(0.5, 1.0, high_open=True),
        default=0.95,
        help="confidence that the mean recall meets the target on other queries (default 0.95;"
        " 0.5: the sample mean only)",
    )
    parser.add_argument(
        "--search-coarse",
        action="store_true",
        help="also build and try other coarse stages (int8 scans at 64/128 dims, HNSW graphs at "
        "64/128 dims, an int8 HNSW graph at 256), with and without a PCA rotation",
    )


def run(args: argparse.Namespace) -> int:
    from ..index import MatryoshkaIndex
    from ..index.tune import describe

    index = MatryoshkaIndex.load(args.index, device="cpu")
    coarse = "search" if args.search_coarse else None
    result = index.tune(
        args.target_recall,
        args.k,
        sample=args.sample,
        seed=args.seed,
        coarse=coarse,
        confidence=args.confidence,
    )
    print(result.table())
    index.save(args.index)
    chosen = result.chosen
    setting = {"adaptive": "adaptive ", "fixed": "fixed "}.get(chosen["mode"], "exact ")
    setting += describe(chosen) + (f" up to {len(index)} rows" if chosen["mode"] == "exact" else "")
    print(
        f"set: {setting}, {chosen['reranked_mean']:.0f} candidates reranked per query on "
        f"average, {chosen['ms_per_query']:.3f} ms/query (saved to {args.index})"
    )
    return 0
