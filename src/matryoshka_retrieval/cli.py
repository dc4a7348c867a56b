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

PROJECTIONS = ("pca", "learned", "learned+pairs")

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
    from .index import MatryoshkaIndex
    from .quantization import Precision, bytes_per_vector
    from .truncation import truncate

    encoder = _encoder(args)
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
    if args.no_eval:
        return 0

    from pathlib import Path

    from .datasets import python_docs_task
    from .eval import evaluate_dims, recommend

    task = python_docs_task(limit=args.limit)
    print(
        f"\n4. how small can I go? {len(task.queries)} known-item queries (a docstring's first "
        f"sentence finds the rest of it) over {len(task.corpus)} documents"
    )
    results = evaluate_dims(
        encoder,
        task.corpus,
        task.queries,
        task.qrels,
        dims=[d for d in dims if d < encoder.full_dim],
        precisions=["float32", "int8", "binary"],
    )
    choice = recommend(results, min_quality=0.98)
    print(results.to_markdown())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(
        results.to_markdown() + f"\n\n**Recommended:** {choice.reason}\n"
    )
    _plot(results, choice.row, out / "curve.png", "ndcg@10", encoder.model_name)
    print(f"\nrecommended: {choice.reason}\nwrote {out / 'report.md'} and {out / 'curve.png'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .eval import evaluate_dims, load_beir, recommend

    _check_precisions(args.precision)
    for method in args.projections:
        if method not in PROJECTIONS:
            raise ValueError(f"unknown projection {method!r}: choose from {', '.join(PROJECTIONS)}")
    if "learned+pairs" in args.projections and args.vectors:
        raise ValueError("learned+pairs embeds pairs made from the documents: drop --vectors")
    data = load_beir(args.data)
    print(f"data: {len(data.corpus)} documents, {len(data.queries)} queries with qrels")
    if args.vectors:
        folder = Path(args.vectors)
        docs, queries = np.load(folder / "docs.npy"), np.load(folder / "queries.npy")
        model_name = str(folder)
    else:
        encoder = _encoder(args)
        model_name = encoder.model_name
        too_big = [d for d in args.dims if d > encoder.full_dim]
        if too_big:
            raise ValueError(
                f"--dims {too_big[0]} is above the model's dimension {encoder.full_dim}"
            )
        docs = encoder.encode_documents(list(data.corpus.values()))
        queries = encoder.encode_queries(list(data.queries.values()))
    print(f"model: {model_name}")

    def measure(vectors: tuple[Any, Any], precisions: Any) -> Any:
        return evaluate_dims(
            vectors,
            data.corpus,
            data.queries,
            data.qrels,
            dims=args.dims,
            precisions=precisions,
            rescore=[args.rescore] if args.rescore else [],
        )

    results = measure((docs, queries), args.precision)
    choice = recommend(results, min_quality=args.min_quality, metric=args.metric)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves = {"raw": results}
    for method in args.projections:
        from .projection import fit_projection

        pairs = None
        if method == "learned+pairs":  # pairs made from the documents' own text
            from .datasets import corpus_pairs

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
        projection.save(out / f"projection-{method.replace('+', '-')}.npz")
        # the comparison is of float32 prefixes (and their full-dim rerank)
        curves[method] = measure((projection.apply(docs), projection.apply(queries)), ["float32"])
    report = {
        "model": model_name,
        "data": str(args.data),
        "rows": results.to_list(),
        "recommendation": {"name": choice.row.name, "reason": choice.reason},
    }
    table = results.to_markdown()
    text = f"# {model_name} on {args.data}\n\n{table}\n\n**Recommended:** {choice.reason}\n"
    written = [out / "report.json", out / "report.md", out / "curve.png"]
    if len(curves) > 1:
        report["projections"] = {m: r.to_list() for m, r in curves.items() if m != "raw"}
        comparison = _compare_table(curves, args.metric)
        text += (
            f"\n## Raw truncation and projections (fitted on the documents only)\n\n{comparison}\n"
        )
        _plot_curves(curves, out / "projections.png", args.metric, model_name)
        written.append(out / "projections.png")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(text)
    _plot(results, choice.row, out / "curve.png", args.metric, model_name)
    print(table)
    if len(curves) > 1:
        print(f"\n{comparison}")
    print(f"\nrecommended: {choice.reason}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _metric(row: Any, metric: str) -> float:
    return float(row.agreement_at_10 if metric == "agreement@10" else row.metrics[metric])


def _single_stage(results: Any) -> list[Any]:
    """The float32 rows without a rerank, by dim, the full-dim reference last."""
    rows = [r for r in results.rows[1:] if r.precision == "float32" and not r.rerank]
    return [*sorted(rows, key=lambda r: r.dim), results.reference]


def _compare_table(curves: dict[str, Any], metric: str) -> str:
    """One row per dim, one column per curve: the metric and its share of the raw full dim."""
    full = _metric(curves["raw"].reference, metric)
    names = list(curves)
    lines = [
        "| dim | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    by_name = {n: {r.dim: _metric(r, metric) for r in _single_stage(c)} for n, c in curves.items()}
    for dim in sorted(by_name["raw"]):
        cells = [f"{by_name[n][dim]:.4f} ({by_name[n][dim] / full:.0%})" for n in names]
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_curves(curves: dict[str, Any], path: Any, metric: str, title: str) -> None:
    """Single-stage quality by prefix dim, one line per curve (raw truncation, projections)."""
    from ._optional import require

    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    for name, results in curves.items():
        rows = _single_stage(results)
        axis.plot([r.dim for r in rows], [_metric(r, metric) for r in rows], "-o", label=name)
    reference = _metric(curves["raw"].reference, metric)
    axis.axhline(reference, color="black", linewidth=1, label=f"full dim ({reference:.3f})")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("prefix dims")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{title}: raw truncation vs projections")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(results: Any, chosen: Any, path: Any, metric: str, title: str) -> None:
    """Quality against dims and against bytes per vector, full-dim line, recommended point."""
    from ._optional import require

    matplotlib = require("matplotlib", "eval")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(row: Any) -> float:
        return _metric(row, metric)

    fig, (by_dim, by_bytes) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[Any]] = {}
    for row in results.rows[1:]:
        label = f"{row.precision}{' + full-dim rerank' if row.rerank else ''}"
        series.setdefault(label, []).append(row)
    for label, rows in sorted(series.items()):
        rows.sort(key=lambda r: r.dim)
        style = "-o" if "rerank" in label else "--s"
        by_dim.plot([r.dim for r in rows], [value(r) for r in rows], style, label=label)
        by_bytes.plot(
            [r.bytes_per_vector for r in rows], [value(r) for r in rows], style, label=label
        )
    reference = value(results.reference)
    for axis in (by_dim, by_bytes):
        axis.axhline(reference, color="black", linewidth=1, label=f"full dim ({reference:.3f})")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.set_xscale("log", base=2)
    by_dim.plot([chosen.dim], [value(chosen)], "r*", markersize=16, label="recommended")
    by_bytes.plot([chosen.bytes_per_vector], [value(chosen)], "r*", markersize=16)
    by_dim.set_xlabel("prefix dims")
    by_bytes.set_xlabel("bytes per vector in the coarse index")
    by_dim.legend(fontsize=8)
    fig.suptitle(f"{title}: {metric} by prefix length and precision")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plan(args: argparse.Namespace) -> int:
    from .quantization import bytes_per_vector

    _check_precisions(args.precision)
    full_bytes = bytes_per_vector(args.full_dim, "float32")
    print(
        f"{args.docs:,} documents x {args.full_dim} dims: full vectors on disk "
        f"{args.docs * full_bytes / 2**30:,.1f} GiB (float32)"
    )
    print(f"{'coarse index':<22} {'bytes/vec':>10} {'RAM':>10} {'scan cost vs full f32':>22}")
    dims = [d for d in args.dims if d <= args.full_dim] or [args.full_dim]
    for dim in dims:
        for precision in args.precision:
            if precision == "binary" and dim % 8:
                continue
            size = bytes_per_vector(dim, precision)
            ram = args.docs * size
            print(
                f"{f'{dim}d {precision}':<22} {size:>10,} {_human(ram):>10} "
                f"{size / full_bytes:>21.1%}"
            )
    print(
        "\nscan cost: bytes read per query by a brute-force coarse scan, relative to scanning "
        "the full float32 vectors (the rerank adds k x rescore_multiplier full rows per query)"
    )
    return 0


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TiB"  # pragma: no cover


def _encoder(args: argparse.Namespace, model: str | None = None, *, progress: bool = True) -> Any:
    """The command's sentence-transformers encoder: ``--model`` (or ``model``), offline by
    default, with ``--max-seq-length`` where the command has it."""
    from .encoders import SentenceTransformerEncoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return SentenceTransformerEncoder(
        model or args.model,
        max_seq_length=getattr(args, "max_seq_length", None),
        show_progress_bar=progress and not getattr(args, "quiet", False),
    )


def _read_texts(
    source: str, id_field: str, text_field: str
) -> tuple[list[str], list[str], list[Any]]:
    """Documents from a JSONL file (one object a line, ``.gz`` too) or a folder of text files."""
    from pathlib import Path

    from .eval import read_jsonl

    path = Path(source)
    ids: list[str] = []
    texts: list[str] = []
    metas: list[Any] = []
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            if file.suffix.lower() not in (".txt", ".md", ".rst", ".text"):
                continue
            text = file.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                ids.append(str(file.relative_to(path)))
                texts.append(text)
                metas.append({"path": str(file.relative_to(path))})
    elif path.is_file():
        for number, record in read_jsonl(path):
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} must be a JSON object")
            text = f"{record.get('title') or ''} {record.get(text_field) or ''}".strip()
            if not text:
                raise ValueError(f"{path}:{number} has no {text_field!r} text")
            ids.append(str(record.get(id_field, record.get("id", number))))
            texts.append(text)
            skip = {id_field, "id", text_field, "title"}
            metas.append(
                {
                    k: v
                    for k, v in record.items()
                    if k not in skip and isinstance(v, (str, int, float, bool))
                }
            )
    else:
        raise FileNotFoundError(f"no file or folder at {path}")
    if not texts:
        raise ValueError(f"found no documents in {path} (.txt/.md files, or JSONL lines)")
    return ids, texts, metas


def _index(args: argparse.Namespace) -> int:
    from .index import MatryoshkaIndex

    ids, texts, metas = _read_texts(args.input, args.id_field, args.text_field)
    encoder = _encoder(args)
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


def _search(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .index import Manifest, MatryoshkaIndex

    manifest = Manifest.read(Path(args.index))
    encoder = _encoder(args, args.model or manifest.model_name, progress=False)
    index = MatryoshkaIndex.load(args.index, encoder=encoder, device="cpu")
    where = json.loads(args.filter) if args.filter else None
    start = time.perf_counter()
    hits = index.search(args.query, k=args.k, filter=where)
    elapsed = 1000 * (time.perf_counter() - start)
    if args.json:
        print(json.dumps(hits.to_list(), indent=2))
        return 0
    print(f"{len(hits)} hits in {elapsed:.1f} ms (score: full dim; coarse: prefix)")
    for hit in hits:
        text = (hit.text or "").replace("\n", " ")
        print(f"{hit.score:.3f}  coarse {hit.coarse_score:.3f}  {hit.id}  {text[:80]}")
    return 0


def _fit_projection(args: argparse.Namespace) -> int:
    from .projection import fit_projection

    texts: list[str] = []
    if args.vectors:
        vectors = np.load(args.vectors, allow_pickle=False)
        source = args.vectors
    elif not args.input:
        raise ValueError("give a folder or JSONL file of documents, or --vectors FILE.npy")
    else:
        _, texts, _ = _read_texts(args.input, args.id_field, args.text_field)
    if (args.pairs or args.corpus_pairs) and args.method == "pca":
        raise ValueError("--pairs and --corpus-pairs need --method learned or adapter")
    if args.corpus_pairs and not texts:
        raise ValueError("--corpus-pairs makes pairs from the documents' text: give the documents")
    pair_texts: list[tuple[str, str]] = []
    if args.pairs or args.corpus_pairs:  # read before anything is embedded
        from .datasets import corpus_pairs
        from .train import load_pairs

        pair_texts = load_pairs(args.pairs) if args.pairs else corpus_pairs(texts)
        if len(pair_texts) < 2:
            raise ValueError(f"found {len(pair_texts)} pairs; the pair loss needs at least 2")
    encoder = _encoder(args) if texts or args.pairs else None
    if texts:
        assert encoder is not None
        vectors = encoder.encode_documents(texts)
        source = f"{len(texts)} documents of {args.input} embedded with {encoder.model_name}"
    pairs = None
    if pair_texts:
        assert encoder is not None
        pairs = (
            encoder.encode_queries([q for q, _ in pair_texts]),
            encoder.encode_documents([d for _, d in pair_texts]),
        )
        source += f", with {len(pair_texts)} query/document pairs"
    start = time.perf_counter()
    projection = fit_projection(
        vectors,
        method=args.method,
        epochs=args.epochs,
        pairs=pairs,
        show_progress_bar=not args.quiet,
    )
    projection.save(args.out)
    print(
        f"fitted a {args.method} projection of {projection.dim} dims on {source} in "
        f"{time.perf_counter() - start:.1f}s -> {args.out} (fingerprint "
        f"{projection.fingerprint[:12]})"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .eval import load_beir
    from .train import load_pairs, pairs_from_beir, split_beir, train_matryoshka

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = Path(args.data)
    eval_data = None
    if args.holdout is not None:
        if not source.is_dir():
            raise ValueError("--holdout splits a BEIR folder; --data is not a folder")
        split = args.split or ("train" if (source / "qrels" / "train.tsv").is_file() else "test")
        train_part, eval_data = split_beir(
            load_beir(source, split=split), test_fraction=args.holdout, seed=args.seed
        )
        pairs = pairs_from_beir(train_part)
        print(
            f"split {source} (qrels/{split}.tsv) by query with seed {args.seed}: "
            f"{len(train_part.queries)} for training, {len(eval_data.queries)} held out"
        )
    else:
        pairs = load_pairs(source, split=args.split or "train")
    if args.eval:
        if eval_data is not None:
            raise ValueError("give --eval or --holdout, not both")
        eval_data = load_beir(args.eval)
    print(f"training on {len(pairs)} (query, positive) pairs")
    result = train_matryoshka(
        pairs,
        args.out,
        model=args.model,
        dims=args.dims,
        weights=args.weights,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_seq_length=args.max_seq_length,
        eval_data=eval_data,
        device=args.device,
        seed=args.seed,
        overwrite=args.overwrite,
        show_progress_bar=not args.quiet,
    )
    print(
        f"trained dims {result.dims} for {result.steps} steps in {result.seconds:.0f}s "
        f"(mean loss {result.train_loss:.3f}); saved to {result.model_path}"
    )
    if eval_data is not None:
        print(result.to_markdown())
    print(json.dumps({"model": str(result.model_path)}))
    return 0


def _numbers(value: str, kind: type[float] | type[int]) -> list[Any]:
    """A comma list of ints or floats, in the order given."""
    try:
        return [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        name = "ints" if kind is int else "numbers"
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {name}, got {value!r}"
        ) from None


def _dim_list(value: str) -> list[int]:
    """Dims in the order given (repeats are left for the library to refuse)."""
    return _numbers(value, int)


def _weights(value: str) -> list[float]:
    return _numbers(value, float)


def _comma_list(value: str) -> list[str]:
    """Split a comma list; the names are checked by the command, which reports one line."""
    return [p.strip() for p in value.split(",") if p.strip()]


def _check_precisions(items: list[str]) -> None:
    for item in items:
        if item not in ("float32", "int8", "binary"):
            raise ValueError(f"unknown precision {item!r}: choose from float32, int8, binary")


def _eval_dims(value: str) -> list[int]:
    return _dims(",".join(p for p in value.split(",") if p.strip() != "full"))


def _dims(value: str) -> list[int]:
    """Distinct positive dims, smallest first."""
    dims = sorted(set(_numbers(value, int)))
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
    demo.add_argument("--out", default="matryoshka-demo", help="folder for the report and plot")
    demo.add_argument("--no-eval", action="store_true", help="skip the evaluation and plot")
    demo.set_defaults(handler=_demo)

    evaluate = commands.add_parser(
        "eval",
        help="measure retrieval quality at each prefix dim and precision on BEIR-layout data",
        description=(
            "Embed a BEIR-layout data set once at full dim, then measure nDCG@10, recall, MRR, "
            "top-10 agreement with exact search, speed and bytes per vector for each prefix dim "
            "and precision, alone and with a full-dim rerank. Writes report.json, report.md and "
            "curve.png, and recommends the cheapest configuration that meets --min-quality."
        ),
    )
    evaluate.add_argument("--data", required=True, help="folder with corpus, queries, qrels/")
    evaluate.add_argument("--model", default=None, help="model name or path (default: MiniLM)")
    evaluate.add_argument(
        "--vectors", default=None, help="folder with docs.npy and queries.npy to use instead"
    )
    evaluate.add_argument(
        "--dims", type=_eval_dims, default=[32, 64, 128, 256], help="e.g. 32,64,128,256,full"
    )
    evaluate.add_argument(
        "--precision", type=_comma_list, default=["float32"], help="float32,int8,binary"
    )
    evaluate.add_argument("--rescore", type=int, default=10, help="shortlist multiplier (0: off)")
    evaluate.add_argument("--max-seq-length", type=int, default=None, help="tokens per text")
    evaluate.add_argument("--min-quality", type=float, default=0.98, help="fraction of full dim")
    evaluate.add_argument("--metric", default="ndcg@10", help="metric for the recommendation")
    evaluate.add_argument(
        "--projections",
        type=_comma_list,
        default=[],
        help="also fit these projections on the documents and compare: pca,learned,"
        "learned+pairs (pairs made from the documents' text)",
    )
    evaluate.add_argument("--out", default="eval-report", help="output folder")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="hide progress bars")
    evaluate.set_defaults(handler=_eval)

    plan = commands.add_parser(
        "plan",
        help="storage, RAM and scan cost of each prefix dim and precision, before you build",
    )
    plan.add_argument("--docs", type=lambda v: int(v.replace("_", "")), required=True)
    plan.add_argument("--full-dim", type=int, required=True)
    plan.add_argument("--dims", type=_dims, default=[64, 128, 256, 512])
    plan.add_argument("--precision", type=_comma_list, default=["float32", "int8", "binary"])
    plan.set_defaults(handler=_plan)

    index = commands.add_parser(
        "index",
        help="build and save a MatryoshkaIndex over a folder of text files or a JSONL file",
    )
    index.add_argument("input", help="a folder (.txt/.md files) or a JSONL file of documents")
    index.add_argument("--out", required=True, help="folder to save the index to")
    index.add_argument("--model", default=None, help="model name or path (default: MiniLM)")
    index.add_argument("--coarse-dim", type=int, default=64, help="prefix dims of the scan")
    index.add_argument(
        "--precision", choices=["float32", "int8", "binary"], default="float32", help="prefix codes"
    )
    index.add_argument("--rescore-multiplier", type=int, default=10, help="shortlist per hit")
    index.add_argument("--id-field", default="_id", help="JSONL field with the id")
    index.add_argument("--text-field", default="text", help="JSONL field with the text")
    index.add_argument("-q", "--quiet", action="store_true", help="hide progress bars")
    index.set_defaults(handler=_index)

    fit = commands.add_parser(
        "fit-projection",
        help="fit a PCA or learned rotation, or an adapter, that makes a model's prefixes "
        "carry more",
        description=(
            "Embed a corpus (a folder of text files or a JSONL file) or read its vectors, fit a "
            "projection on the documents only, and save it (.npz). Use it with "
            "matryoshka_retrieval.projection.ProjectedEncoder."
        ),
    )
    fit.add_argument("input", nargs="?", help="a folder or JSONL file of documents")
    fit.add_argument("--vectors", default=None, help="a .npy file of document vectors instead")
    fit.add_argument("--out", required=True, help="where to write the projection (.npz)")
    fit.add_argument(
        "--method",
        choices=["pca", "learned", "adapter"],
        default="pca",
        help="pca or learned (rotations: full-dim scores unchanged), or adapter (a rotation and "
        "a residual MLP, scaled to keep >= 0.99 of the fitted vectors' full-dim top-10)",
    )
    fit.add_argument("--epochs", type=int, default=20, help="training passes (learned)")
    fit.add_argument(
        "--pairs",
        default=None,
        help='JSONL of {"query", "positive"} pairs, or a BEIR folder; embedded with --model, '
        "which must be the model of the documents",
    )
    fit.add_argument(
        "--corpus-pairs",
        action="store_true",
        help="make pairs from the documents: each one's first sentence and the rest of it",
    )
    fit.add_argument("--model", default=None, help="model name or path (default: MiniLM)")
    fit.add_argument("--max-seq-length", type=int, default=None, help="tokens per text")
    fit.add_argument("--id-field", default="_id", help="JSONL field with the id")
    fit.add_argument("--text-field", default="text", help="JSONL field with the text")
    fit.add_argument("-q", "--quiet", action="store_true", help="hide progress bars")
    fit.set_defaults(handler=_fit_projection)

    train = commands.add_parser(
        "train",
        help="fine-tune a sentence-transformers model with a Matryoshka loss",
        description=(
            "Fine-tune with MatryoshkaLoss over MultipleNegativesRankingLoss on (query, positive) "
            "pairs from a JSONL file or a BEIR folder, measure every dim before and after, and "
            "save a model that SentenceTransformerEncoder loads."
        ),
    )
    train.add_argument(
        "--data", required=True, help='JSONL of {"query", "positive"} or BEIR folder'
    )
    train.add_argument("--out", required=True, help="folder to save the trained model to")
    train.add_argument("--model", default=None, help="model name or path (default: MiniLM)")
    train.add_argument(
        "--dims",
        type=_dim_list,
        default=None,
        help="dims to train, in the order of --weights (default: full, 512, ..., 32)",
    )
    train.add_argument("--weights", type=_weights, default=None, help="one loss weight per dim")
    train.add_argument("--epochs", type=float, default=1, help="passes over the pairs")
    train.add_argument("--batch-size", type=int, default=32, help="pairs per step")
    train.add_argument("--learning-rate", type=float, default=2e-5, help="peak learning rate")
    train.add_argument("--max-seq-length", type=int, default=None, help="tokens per text")
    train.add_argument("--eval", default=None, help="BEIR folder to evaluate before and after")
    train.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="hold out this share of a BEIR folder's queries for the evaluation (e.g. 0.5)",
    )
    train.add_argument(
        "--split",
        default=None,
        help="qrels file of a BEIR --data folder (default: train; with --holdout, test if "
        "there is no train)",
    )
    train.add_argument("--device", default=None, help="cpu, cuda, ... (default: GPU if present)")
    train.add_argument("--seed", type=int, default=0, help="random seed (and holdout split)")
    train.add_argument(
        "--overwrite", action="store_true", help="replace the --out folder once training succeeds"
    )
    train.add_argument("-q", "--quiet", action="store_true", help="hide progress bars")
    train.set_defaults(handler=_train)

    search = commands.add_parser("search", help="search a saved index")
    search.add_argument("index", help="folder given to `matryoshka index --out`")
    search.add_argument("query", help="the query text")
    search.add_argument("-k", type=int, default=10, help="number of hits")
    search.add_argument("--filter", default=None, help='a where filter as JSON: {"year": 2020}')
    search.add_argument("--model", default=None, help="model (default: the index's own)")
    search.add_argument("--json", action="store_true", help="print hits as JSON")
    search.set_defaults(handler=_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``matryoshka`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.handler(args))
    except (ImportError, ValueError, TypeError, OSError, KeyError) as exc:
        print(f"matryoshka {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
