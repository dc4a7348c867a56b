"""``matryoshka search``: search a saved index."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import _options as opt


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "search", run, __doc__)
    parser.add_argument("index", help="folder given to `matryoshka index --out`")
    parser.add_argument("query", help="the query text")
    parser.add_argument("-k", type=opt.int_arg(1), default=10, help="number of hits")
    parser.add_argument(
        "--filter",
        type=opt.where_filter,
        default=None,
        help='a where filter as JSON: {"year": 2020}',
    )
    parser.add_argument("--model", default=None, help="model (default: the index's own)")
    parser.add_argument("--json", action="store_true", help="print hits as JSON")


def run(args: argparse.Namespace) -> int:
    from ..index import Manifest, MatryoshkaIndex

    manifest = Manifest.read(Path(args.index))
    encoder = opt.encoder(args, args.model or manifest.model_name, progress=False)
    index = MatryoshkaIndex.load(args.index, encoder=encoder, device="cpu")
    start = time.perf_counter()
    hits = index.search(args.query, k=args.k, filter=args.filter)
    elapsed = 1000 * (time.perf_counter() - start)
    if args.json:
        print(json.dumps(hits.to_list(), indent=2))
        return 0
    print(f"{len(hits)} hits in {elapsed:.1f} ms (score: full dim; coarse: prefix)")
    for hit in hits:
        text = (hit.text or "").replace("\n", " ")
        print(f"{hit.score:.3f}  coarse {hit.coarse_score:.3f}  {hit.id}  {text[:80]}")
    return 0
