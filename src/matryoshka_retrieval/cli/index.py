"""``matryoshka index``: build and save a MatryoshkaIndex over a folder or a JSONL file."""

from __future__ import annotations

import argparse
import functools
import json
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
    parser.add_argument(
        "--coarse-rotation",
        choices=["none", "pca"],
        default="none",
        help="scan prefixes of a PCA rotation fitted to the documents (for models that were "
        "not Matryoshka-trained); the rerank uses the vectors as they are",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="embed on a Ray cluster (`local` starts one here): needs the `ray` extra",
    )
    parser.add_argument(
        "--ray-workers", type=opt.int_arg(1), default=1, help="embedding actors (with --ray)"
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
        coarse_rotation=None if args.coarse_rotation == "none" else args.coarse_rotation,
    )
    start = time.perf_counter()
    if args.ray:
        _ingest_on_ray(args, index, ids, texts, metas)
    else:
        index.add_texts(texts, ids=ids, metadatas=metas)
    index.save(args.out)
    print(
        f"indexed {len(index)} documents with {encoder.model_name} in "
        f"{time.perf_counter() - start:.1f}s: {args.coarse_dim}d {args.precision} prefix, "
        f"full vectors {encoder.dim}d -> {args.out}"
    )
    return 0


def _ingest_on_ray(
    args: argparse.Namespace, index: Any, ids: list[str], texts: list[str], metas: list[Any]
) -> None:
    """Embed on Ray (each actor loads the model itself) and add the vectors to ``index``."""
    from .._optional import require
    from ..ray import ingest

    ray = require("ray", "ray")
    ray.init(address=None if args.ray == "local" else args.ray, log_to_driver=False)
    try:
        rows = [
            {"id": i, "text": t, "meta": json.dumps(m or None)}
            for i, t, m in zip(ids, texts, metas, strict=True)
        ]
        factory = functools.partial(opt.encoder, args, progress=False)
        ingest(
            ray.data.from_items(rows),
            index,
            factory,
            workers=args.ray_workers,
            metadata_column="meta",
        )
    finally:
        ray.shutdown()
