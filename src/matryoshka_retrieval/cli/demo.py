"""``matryoshka demo``: embed a real corpus offline and compare prefix dims with the full dim.

Embed the docstrings of the Python standard library with the offline default model, then show how
well short Matryoshka prefixes agree with full-dim search.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _options as opt

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ..index import MatryoshkaIndex

QUERIES = (
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
#: Queries made from the opening words of docstrings, beside the handwritten ones.
EXTRA_QUERIES = 188


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "demo", run, __doc__)
    opt.add_model(parser, "offline MiniLM")
    parser.add_argument(
        "--dims",
        type=opt.dims,
        default=[64, 128, 256],
        help="prefix dims to compare; the smallest is the coarse dim (default: 64,128,256)",
    )
    parser.add_argument(
        "--limit", type=opt.int_arg(1), default=None, help="use at most this many documents"
    )
    parser.add_argument("--show", type=opt.int_arg(0), default=4, help="queries to print in full")
    opt.add_quiet(parser)
    parser.add_argument("--out", default="matryoshka-demo", help="folder for the report and plot")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation and plot")
    parser.add_argument(
        "--scale",
        type=opt.int_arg(0),
        default=100_000,
        help="vectors in the speed comparison against FAISS (0 skips it; default 100000)",
    )


def run(args: argparse.Namespace) -> int:
    from ..datasets import python_docs

    encoder = opt.encoder(args)
    docs = python_docs(limit=args.limit)
    print(f"model: {encoder.model_name} ({encoder.full_dim} dims)")
    print(f"corpus: {len(docs)} docstrings of the Python standard library")
    start = time.perf_counter()
    doc_vectors = encoder.encode_documents([d.text for d in docs])
    step = max(1, len(docs) // EXTRA_QUERIES)
    extra = [" ".join(d.text.split()[:8]) for d in docs[::step]][:EXTRA_QUERIES]
    query_texts = list(QUERIES) + extra
    query_vectors = encoder.encode_queries(query_texts)
    elapsed = time.perf_counter() - start
    print(f"encoded {len(docs) + len(query_texts)} texts in {elapsed:.1f}s\n")

    full_top = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, :10]
    dims = [d for d in args.dims if d < encoder.full_dim] + [encoder.full_dim]
    _prefix_agreement(doc_vectors, query_vectors, full_top, dims)
    texts = {d.id: d.text for d in docs}
    showcase = _coarse_to_fine(encoder, texts, doc_vectors, query_vectors, full_top, min(dims))
    print(f"\n3. top hits of the {min(dims)}d -> full-dim index (score: full dim; coarse: prefix)")
    for query in QUERIES[: args.show]:
        print(f"  {query!r}")
        for hit in showcase.search(query, k=3):
            print(f"    {hit.score:.3f}  coarse {hit.coarse_score:.3f}  {hit.id}")
    if args.scale:
        _speed_at_scale(args.scale, encoder.full_dim)
    if not args.no_eval:
        _evaluate(args, encoder, [d for d in dims if d < encoder.full_dim])
    return 0


def _speed_at_scale(n: int, dim: int) -> None:
    """Section 4: where the funnel matters, against FAISS at the same recall."""
    from . import _speed

    print(
        f"\n4. speed and memory at {n:,} vectors of {dim} dims (made here, variance decaying over "
        "the dims as in Matryoshka embeddings), each contender at its cheapest setting reaching "
        "recall@10 0.95 on 500 calibration queries, timed one query at a time on 500 others "
        "(the index searches exactly below 16 MiB of vectors: on the docstrings above a full "
        "scan is the fastest)"
    )
    start = time.perf_counter()
    print(_speed.table(_speed.compare(n, dim, 0.95)))
    print(
        f"({time.perf_counter() - start:.0f}s; RAM B/vec is what the index holds in memory: our "
        "full vectors can stay on disk, read per candidate; benchmarks/bench_recall.py measures "
        "this on real embeddings and at 0.99)"
    )


def _overlap(found: Any, exact: Any) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))


def _prefix_agreement(
    doc_vectors: NDArray[np.float32],
    query_vectors: NDArray[np.float32],
    full_top: NDArray[np.int64],
    dims: list[int],
) -> None:
    """Section 1: how often search on the first N dims alone agrees with the full dim."""
    from ..quantization import bytes_per_vector
    from ..truncation import truncate

    print("1. a prefix alone: how often search on the first N dims agrees with the full dim")
    print(f"{'dims':>5}  {'bytes/vector':>12}  {'top-1 = full':>12}  {'top-10 overlap':>14}")
    for dim in dims:
        scores = truncate(query_vectors, dim) @ truncate(doc_vectors, dim).T
        top = np.argsort(-scores, axis=1)[:, :10]
        top1 = float(np.mean(top[:, 0] == full_top[:, 0]))
        overlap = _overlap(top, full_top)
        print(f"{dim:>5}  {bytes_per_vector(dim, 'float32'):>12}  {top1:>12.0%}  {overlap:>14.0%}")


def _configs(coarse: int, full_dim: int) -> list[tuple[str, int | None, dict[str, Any]]]:
    """(name, first-stage dim or None for exact search, index options) of each index shown."""
    configs: list[tuple[str, int | None, dict[str, Any]]] = [
        ("exact, full dim", None, {"coarse_dim": None}),
        (f"{coarse}d float32 -> rerank", coarse, {"coarse_dim": coarse}),
        (f"{coarse}d int8 -> rerank", coarse, {"coarse_dim": coarse, "precision": "int8"}),
    ]
    if coarse % 8 == 0 and 2 * coarse <= full_dim:
        binary = {"precision": "binary", "stages": [(2 * coarse, 200), (2 * coarse, 50)]}
        configs.append((f"{2 * coarse}d binary -> {2 * coarse}d -> rerank", 2 * coarse, binary))
    return configs


def _coarse_to_fine(
    encoder: Any,
    texts: dict[str, str],
    doc_vectors: NDArray[np.float32],
    query_vectors: NDArray[np.float32],
    full_top: NDArray[np.int64],
    coarse: int,
) -> MatryoshkaIndex:
    """Section 2: recall and speed of each index; returns the float32 prefix index."""
    from ..index import MatryoshkaIndex
    from ..quantization import bytes_per_vector

    print("\n2. coarse-to-fine search: the prefix finds candidates, the full vectors rerank them")
    print(f"{'index':<28}  {'recall@10':>9}  {'ms/query':>8}  {'coarse bytes/vector':>19}")
    ids = list(texts)
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    indexes = []
    for name, first_dim, options in _configs(coarse, encoder.full_dim):
        index = MatryoshkaIndex(encoder, device="cpu", exact_below=0, **options)
        index.add_vectors(doc_vectors, ids=ids, texts=list(texts.values()))
        start = time.perf_counter()
        hits = [index.search_vectors(q, k=10)[0] for q in query_vectors]
        ms = 1000 * (time.perf_counter() - start) / len(query_vectors)
        recall = _overlap([[position[h.id] for h in hit] for hit in hits], full_top)
        precision = options.get("precision", "float32")
        ram = bytes_per_vector(first_dim, precision) if first_dim else "full vectors"
        print(f"{name:<28}  {recall:>9.1%}  {ms:>8.2f}  {ram!s:>19}")
        indexes.append(index)
    return indexes[1]


def _evaluate(args: argparse.Namespace, encoder: Any, dims: list[int]) -> None:
    """Section 5: the measured table, the recommendation, the report and its plot."""
    from ..datasets import python_docs_task
    from ..eval import evaluate_dims, recommend
    from ..report import write_report

    task = python_docs_task(limit=args.limit)
    print(
        f"\n5. how small can I go? {len(task.queries)} known-item queries (a docstring's first "
        f"sentence finds the rest of it) over {len(task.corpus)} documents"
    )
    results = evaluate_dims(
        encoder,
        task.corpus,
        task.queries,
        task.qrels,
        dims=dims,
        precisions=["float32", "int8", "binary"],
    )
    choice = recommend(results, min_quality=0.98)
    print(results.to_markdown())
    written = write_report(
        args.out,
        results,
        choice,
        title=encoder.model_name,
        heading=f"{encoder.model_name} on the Python standard library's docstrings",
        info={"model": encoder.model_name, "data": "python_docs_task"},
    )
    print(f"\nrecommended: {choice.reason}\nwrote " + ", ".join(str(p) for p in written))
