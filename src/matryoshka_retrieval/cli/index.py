"""``matryoshka index``: build and save a MatryoshkaIndex over a folder or a JSONL file."""

from __future__ import annotations

import argparse
import time
from typing import Any

from . import _options as opt


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "index", run, __doc__)
    parser.add_argument("input", help="a folder (.txt/.md files) or a JSONL file of documents")
    parser.add_argument("--out", required=True, help="folder to save the index to")
    opt.add_model(parser)
    parser.add_argument(
        "--coarse-dim", type=opt.int_arg(1), default=64, help="prefix dims of the scan"
    )
    parser.add_argument(
        "--precision", choices=opt.PRECISIONS, default="float32", help="prefix codes"
    )
    parser.add_argument(
        "--rescore-multiplier", type=opt.int_arg(1), default=10, help="shortlist per hit"
    )
    opt.add_fields(parser)
    opt.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from ..index import MatryoshkaIndex

    ids, texts, metas = opt.read_texts(args.input, args.id_field, args.text_field)
    encoder = opt.encoder(args)
    index = MatryoshkaIndex(
        encoder,
        coarse_dim=args.coarse_dim,
        precision=args.precision,
        rescore_multiplier=args.rescore_multiplier,
        device="cpu",
    )
    start = time.perf_counter()
    index.add_texts(texts, ids=ids, metadatas=metas)
    index.save(args.out)
    print(
        f"indexed {len(index)} documents with {encoder.model_name} in "
        f"{time.perf_counter() - start:.1f}s: {args.coarse_dim}d {args.precision} prefix, "
        f"full vectors {encoder.dim}d -> {args.out}"
    )
    return 0
