"""``matryoshka plan``: storage, RAM and scan cost of each prefix dim and precision."""

from __future__ import annotations

import argparse
from typing import Any

from . import _options as opt

DEFAULT_DIMS = (64, 128, 256, 512)
"""The prefix dims costed when ``--dims`` is not given (those up to ``--full-dim``)."""


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "plan", run, __doc__)
    parser.add_argument(
        "--docs", type=opt.int_arg(1), required=True, help="number of documents (10_000_000 too)"
    )
    parser.add_argument(
        "--full-dim", type=opt.int_arg(1), required=True, help="the model's embedding dimension"
    )
    parser.add_argument(
        "--dims",
        type=opt.dims,
        default=None,
        help=f"prefix dims to cost, each at most --full-dim (default: those of "
        f"{','.join(map(str, DEFAULT_DIMS))} that fit)",
    )
    opt.add_precisions(parser, list(opt.PRECISIONS))


def run(args: argparse.Namespace) -> int:
    from ..quantization import bytes_per_vector

    opt.check_precisions(args.precision)
    dims = prefix_dims(args.dims, args.full_dim)
    full_bytes = bytes_per_vector(args.full_dim, "float32")
    print(
        f"{args.docs:,} documents x {args.full_dim} dims: full vectors on disk "
        f"{args.docs * full_bytes / 2**30:,.1f} GiB (float32)"
    )
    print(f"{'coarse index':<22} {'bytes/vec':>10} {'RAM':>10} {'scan cost vs full f32':>22}")
    for dim in dims:
        for precision in args.precision:
            if precision == "binary" and dim % 8:
                continue
            size = bytes_per_vector(dim, precision)
            print(
                f"{f'{dim}d {precision}':<22} {size:>10,} {human_bytes(args.docs * size):>10} "
                f"{size / full_bytes:>21.1%}"
            )
    print(
        "\nscan cost: bytes read per query by a brute-force coarse scan, relative to scanning "
        "the full float32 vectors (the rerank adds k x rescore_multiplier full rows per query)"
    )
    return 0


def prefix_dims(dims: list[int] | None, full_dim: int) -> list[int]:
    """The dims to cost: ``dims`` as given, or the defaults that fit (the full dim if none).

    Raises:
        ValueError: For a given dim above ``full_dim`` (naming both).
    """
    if dims is None:
        return [d for d in DEFAULT_DIMS if d <= full_dim] or [full_dim]
    wider = [d for d in dims if d > full_dim]
    if wider:
        raise ValueError(
            f"--dims {','.join(map(str, wider))} is larger than --full-dim {full_dim}: a prefix "
            "can be at most the model's embedding dimension"
        )
    return dims


def human_bytes(size: float) -> str:
    """``size`` in B, KiB, MiB, GiB or TiB, one decimal."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TiB"
