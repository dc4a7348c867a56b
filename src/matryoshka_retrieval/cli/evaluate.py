"""``matryoshka eval``: measure retrieval quality at each prefix dim and precision.

Embed a BEIR-layout data set once at full dim, then measure nDCG@10, recall, MRR, top-10 agreement
with exact search, speed and bytes per vector for each prefix dim and precision, alone and with a
full-dim rerank. Writes report.json, report.md and curve.png, and recommends the cheapest
configuration that meets --min-quality.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _options as opt

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ..eval import BeirData, EvalResults

PROJECTIONS = ("pca", "learned", "learned+pairs")
Vectors = tuple["NDArray[np.float32]", "NDArray[np.float32]"]


def register(commands: Any) -> None:
    from ..eval import RECOMMEND_METRICS

    parser = opt.add_command(commands, "eval", run, __doc__)
    parser.add_argument("--data", required=True, help="folder with corpus, queries, qrels/")
    opt.add_model(parser)
    parser.add_argument(
        "--vectors", default=None, help="folder with docs.npy and queries.npy to use instead"
    )
    parser.add_argument(
        "--dims", type=opt.eval_dims, default=[32, 64, 128, 256], help="e.g. 32,64,128,256,full"
    )
    opt.add_precisions(parser, ["float32"])
    parser.add_argument(
        "--rescore", type=opt.int_arg(0), default=10, help="shortlist multiplier (0: off)"
    )
    opt.add_max_seq_length(parser)
    parser.add_argument(
        "--min-quality",
        type=opt.float_arg(0, 1.5, low_open=True),
        default=0.98,
        help="fraction of the full dim's quality to keep, in (0, 1.5] (default: 0.98)",
    )
    parser.add_argument(
        "--metric",
        choices=RECOMMEND_METRICS,
        default="ndcg@10",
        help="metric for the recommendation",
    )
    parser.add_argument(
        "--projections",
        type=opt.comma_list,
        default=[],
        help="also fit these projections on the documents and compare: pca,learned,"
        "learned+pairs (pairs made from the documents' text)",
    )
    parser.add_argument("--out", default="eval-report", help="output folder")
    opt.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from ..eval import load_beir, recommend
    from ..report import compare_table, write_report

    _check(args)
    data = load_beir(args.data)
    print(f"data: {len(data.corpus)} documents, {len(data.queries)} queries with qrels")
    encoder, vectors, model_name = _vectors(args, data)
    print(f"model: {model_name}")
    results = _measure(args, data, vectors, args.precision)
    choice = recommend(results, min_quality=args.min_quality, metric=args.metric)
    curves = {"raw": results}
    for method in args.projections:
        projected = _project(args, data, encoder, vectors, method)
        # the comparison is of float32 prefixes (and their full-dim rerank)
        curves[method] = _measure(args, data, projected, ["float32"])
    written = write_report(
        args.out,
        results,
        choice,
        title=model_name,
        heading=f"{model_name} on {args.data}",
        metric=args.metric,
        curves=curves,
        info={"model": model_name, "data": str(args.data)},
    )
    print(results.to_markdown())
    if len(curves) > 1:
        print(f"\n{compare_table(curves, args.metric)}")
    print(f"\nrecommended: {choice.reason}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _check(args: argparse.Namespace) -> None:
    opt.check_precisions(args.precision)
    for method in args.projections:
        if method not in PROJECTIONS:
            raise ValueError(f"unknown projection {method!r}: choose from {', '.join(PROJECTIONS)}")
    if "learned+pairs" in args.projections and args.vectors:
        raise ValueError("learned+pairs embeds pairs made from the documents: drop --vectors")


def _vectors(args: argparse.Namespace, data: BeirData) -> tuple[Any, Vectors, str]:
    """The encoder (``None`` with ``--vectors``), document and query vectors, the model name."""
    if args.vectors:
        folder = Path(args.vectors)
        docs = opt.read_npy(folder / "docs.npy", "--vectors")
        queries = opt.read_npy(folder / "queries.npy", "--vectors")
        return None, (docs, queries), str(folder)
    encoder = opt.encoder(args)
    too_big = [d for d in args.dims if d > encoder.full_dim]
    if too_big:
        raise ValueError(f"--dims {too_big[0]} is above the model's dimension {encoder.full_dim}")
    docs = encoder.encode_documents(list(data.corpus.values()))
    queries = encoder.encode_queries(list(data.queries.values()))
    return encoder, (docs, queries), encoder.model_name


def _measure(
    args: argparse.Namespace, data: BeirData, vectors: Vectors, precisions: list[str]
) -> EvalResults:
    from ..eval import evaluate_dims

    return evaluate_dims(
        vectors,
        data.corpus,
        data.queries,
        data.qrels,
        dims=args.dims,
        precisions=precisions,  # type: ignore[arg-type]
        rescore=[args.rescore] if args.rescore else [],
    )


def _project(
    args: argparse.Namespace, data: BeirData, encoder: Any, vectors: Vectors, method: str
) -> Vectors:
    """Fit a projection on the documents, save it next to the report, apply it to both sides."""
    from ..projection import fit_projection

    docs, queries = vectors
    pairs = None
    if method == "learned+pairs":  # pairs made from the documents' own text
        from ..datasets import corpus_pairs

        texts = corpus_pairs(data.corpus.values())
        if len(texts) < 2:
            raise ValueError(f"the documents give {len(texts)} pairs; learned+pairs needs 2")
        pairs = (
            encoder.encode_queries([q for q, _ in texts]),
            encoder.encode_documents([d for _, d in texts]),
        )
    start = time.perf_counter()
    projection = fit_projection(
        docs,
        method="pca" if method == "pca" else "learned",
        pairs=pairs,
        show_progress_bar=not args.quiet,
    )
    seconds = time.perf_counter() - start
    print(f"fitted a {method} projection on the {len(docs)} documents in {seconds:.1f}s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    projection.save(out / f"projection-{method.replace('+', '-')}.npz")
    return projection.apply(docs), projection.apply(queries)
