"""The ``matryoshka`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

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
    from .quantization import bytes_per_vector
    from .truncation import truncate

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    encoder = SentenceTransformerEncoder(args.model, show_progress_bar=not args.quiet)
    docs = python_docs(limit=args.limit)
    print(f"model: {encoder.model_name} ({encoder.full_dim} dims)")
    print(f"corpus: {len(docs)} docstrings of the Python standard library")

    start = time.perf_counter()
    doc_vectors = encoder.encode_documents([d.text for d in docs])
    query_vectors = encoder.encode_queries(list(DEMO_QUERIES))
    elapsed = time.perf_counter() - start
    print(f"encoded {len(docs) + len(DEMO_QUERIES)} texts in {elapsed:.1f}s\n")

    full = query_vectors @ doc_vectors.T
    full_top = np.argsort(-full, axis=1)[:, :10]
    dims = [d for d in args.dims if d < encoder.full_dim] + [encoder.full_dim]
    print(f"{'dims':>5}  {'bytes/vector':>12}  {'top-1 = full':>12}  {'top-10 overlap':>14}")
    for dim in dims:
        scores = truncate(query_vectors, dim) @ truncate(doc_vectors, dim).T
        top = np.argsort(-scores, axis=1)[:, :10]
        top1 = float(np.mean(top[:, 0] == full_top[:, 0]))
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, full_top, strict=True)])
        print(f"{dim:>5}  {bytes_per_vector(dim, 'float32'):>12}  {top1:>12.0%}  {overlap:>14.0%}")

    small = min(dims)
    print(f"\nbest match at {small} dims vs {encoder.full_dim} dims:")
    small_scores = truncate(query_vectors, small) @ truncate(doc_vectors, small).T
    for i, query in enumerate(DEMO_QUERIES[: args.show]):
        a, b = docs[int(np.argmax(small_scores[i]))], docs[int(full_top[i, 0])]
        print(f"  {query!r}\n    {small:>4}: {a.id}\n    {encoder.full_dim:>4}: {b.id}")
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
    demo.add_argument("--dims", type=_dims, default=[32, 64, 128, 256], help="prefix dims to test")
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
