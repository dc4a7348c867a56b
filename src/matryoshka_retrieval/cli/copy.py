"""``matryoshka copy``: copy an index between a saved folder and a PostgreSQL table.

SRC and DST are each a folder or a PostgreSQL DSN (``postgresql://...``); a DSN's table is
named with --source-table / --table. Records, full vectors, the configuration with its tuned
settings, the model name and the coarse rotation are copied; no model is loaded.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import _options as opt


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "copy", run, __doc__)
    parser.add_argument("source", metavar="SRC", help="the index: a folder or a PostgreSQL DSN")
    parser.add_argument(
        "destination", metavar="DST", help="a new or empty folder, or a PostgreSQL DSN"
    )
    parser.add_argument("--source-table", default=None, help="the source's table (SRC a DSN)")
    parser.add_argument("--table", default=None, help="the copy's table (DST a DSN)")
    parser.add_argument(
        "--batch-size", type=opt.int_arg(1), default=10_000, help="records per batch"
    )
    parser.add_argument(
        "--set",
        dest="settings",
        type=setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting to change in the copy, for example precision=float16, backend=hnsw, "
        "rescore_multiplier=20, adaptive_margin=none, stages=[[64,400],[256,100]] (repeatable)",
    )


def setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``: the value as JSON (a number, a list, ``null``), ``none`` as ``None``, or
    else as the text itself."""
    key, equals, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if value.strip().lower() == "none":
        return key, None
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value.strip()


def run(args: argparse.Namespace) -> int:
    from ..index import copy_index

    overrides = dict(args.settings)  # a key given twice: the last one
    copy = copy_index(
        args.source,
        args.destination,
        source_table=args.source_table,
        table=args.table,
        batch_size=args.batch_size,
        **overrides,
    )
    where = f"table {args.table!r}" if args.table else args.destination
    rotation = copy.coarse_rotation
    turned = getattr(rotation, "method", rotation) or "none"
    print(
        f"copied {len(copy)} records ({copy.dim} dims, model {copy.model_name or 'not recorded'}) "
        f"to {where}: coarse rotation {turned}"
    )
    print(f"config: {json.dumps(copy.config.to_manifest(), sort_keys=True)}")
    return 0
