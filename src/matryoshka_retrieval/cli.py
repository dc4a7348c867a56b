"""The ``matryoshka`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["main"]

DEMO_QUERIES = (
    "parse a JSON document into Python objects",
    "compute a secure hash digest of bytes",
    "copy a file and its permission bits",
    "create a temporary directory",
    "insert an item into a sorted list and keep it sorted",
    "split a shell command line into words",
    "decode base64 encoded data",
    "run a program and wait for it to finish",
    "compress data with the gzip format",
    "match a regular expression at the start of a string",
    "generate a random URL-safe token for passwords",
    "find the greatest common divisor of two integers",
)


def _demo(args: argparse.Namespace) -> int:
    from .datasets import python_docs
    from .encoders import SentenceTransformerEncoder
    from .index import MatryoshkaIndex
    from .quantization import Precision, bytes_per_vector
    from .truncation import truncate

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    encoder = SentenceTransformerEncoder(args.model, show_progress_bar=not args.quiet)
    docs = python_docs(limit=args.limit)
    print(f"model: {encoder.model_name} ({encoder.full_dim} dims)")
    print(f"corpus: {len(docs)} docstrings of the Python standard library")

    start = time.perf_counter()
    doc_vectors = encoder.encode_documents([d.text for d in docs])
    # the handwritten queries, then the opening words of some docstrings as extra queries
    extra = [" ".join(d.text.split()[:8]) for d in docs[:: max(1, len(docs) // 188)]][:188]
    query_texts = list(DEMO_QUERIES) + extra
    query_vectors = encoder.encode_queries(query_texts)
    elapsed = time.perf_counter() - start
    print(f"encoded {len(docs) + len(query_texts)} texts in {elapsed:.1f}s\n")

    full = query_vectors @ doc_vectors.T
    full_top = np.argsort(-full, axis=1)[:, :10]
    dims = [d for d in args.dims if d < encoder.full_dim] + [encoder.full_dim]
    print("1. a prefix alone: how often search on the first N dims agrees with the full dim")
    print(f"{'dims':>5}  {'bytes/vector':>12}  {'top-1 = full':>12}  {'top-10 overlap':>14}")
    for dim in dims:
        scores = truncate(query_vectors, dim) @ truncate(doc_vectors, dim).T
        top = np.argsort(-scores, axis=1)[:, :10]
        top1 = float(np.mean(top[:, 0] == full_top[:, 0]))
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, full_top, strict=True)])
        print(f"{dim:>5}  {bytes_per_vector(dim, 'float32'):>12}  {top1:>12.0%}  {overlap:>14.0%}")

    coarse = min(dims)
    configs: list[tuple[str, dict[str, Any]]] = [
        ("exact, full dim", {"coarse_dim": None}),
        (f"{coarse}d float32 -> rerank", {"coarse_dim": coarse}),
        (f"{coarse}d int8 -> rerank", {"coarse_dim": coarse, "precision": "int8"}),
    ]
    if coarse % 8 == 0 and 2 * coarse <= encoder.full_dim:
        binary = {"precision": "binary", "stages": [(2 * coarse, 200), (2 * coarse, 50)]}
        configs.append((f"{2 * coarse}d binary -> {2 * coarse}d -> rerank", binary))
    print("\n2. coarse-to-fine search: the prefix finds candidates, the full vectors rerank them")
    print(f"{'index':<28}  {'recall@10':>9}  {'ms/query':>8}  {'coarse bytes/vector':>19}")
    ids = [d.id for d in docs]
    showcase = None
    for name, options in configs:
        index = MatryoshkaIndex(encoder, device="cpu", **options)
        index.add_vectors(doc_vectors, ids=ids, texts=[d.text for d in docs])
        start = time.perf_counter()
        hits = [index.search_vectors(q, k=10)[0] for q in query_vectors]
        ms = 1000 * (time.perf_counter() - start) / len(query_vectors)
        found = [[ids.index(h.id) for h in hit] for hit in hits]
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, full_top, strict=True)])
        precision: Precision = options.get("precision", "float32")
        first_dim = options.get("coarse_dim", coarse)
        if "stages" in options:
            first_dim = 2 * coarse
        ram = bytes_per_vector(int(first_dim), precision) if first_dim else "full vectors"
        print(f"{name:<28}  {recall:>9.1%}  {ms:>8.2f}  {ram!s:>19}")
        if options.get("coarse_dim") == coarse and "precision" not in options:
            showcase = index
    assert showcase is not None
    print(f"\n3. top hits of the {coarse}d -> full-dim index (score: full dim; coarse: prefix)")
    for query in DEMO_QUERIES[: args.show]:
        print(f"  {query!r}")
        for hit in showcase.search(query, k=3):
            print(f"    {hit.score:.3f}  coarse {hit.coarse_score:.3f}  {hit.id}")
    print(
        "\nOn a corpus this small every search is fast; benchmarks/bench_search.py measures "
        "the speed-up at 1M vectors."
    )
    return 0


def _dims(value: str) -> list[int]:
    try:
        dims = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {value!r}") from None
    if not dims or dims[0] < 1:
        raise argparse.ArgumentTypeError(f"dims must be positive ints, got {value!r}")
    return dims


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``matryoshka`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="matryoshka",
        description="Matryoshka embeddings for retrieval: truncate, quantize, search.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="embed a real corpus offline and compare prefix dims with the full dim",
        description=(
            "Embed the docstrings of the Python standard library with the offline default "
            "model, then show how well short Matryoshka prefixes agree with full-dim search."
        ),
    )
    demo.add_argument("--model", default=None, help="model name or path (default: offline MiniLM)")
    demo.add_argument(
        "--dims",
        type=_dims,
        default=[64, 128, 256],
        help="prefix dims to compare; the smallest is the coarse dim (default: 64,128,256)",
    )
    demo.add_argument("--limit", type=int, default=None, help="use at most this many documents")
    demo.add_argument("--show", type=int, default=4, help="queries to print in full")
    demo.add_argument("-q", "--quiet", action="store_true", help="hide progress bars")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``matryoshka`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.handler(args))
    except (ImportError, ValueError, TypeError) as exc:
        print(f"matryoshka {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
