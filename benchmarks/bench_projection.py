"""nDCG@10 by prefix dim for all-MiniLM-L6-v2 on the man-page corpus: raw, PCA, learned,
and the model fine-tuned with a Matryoshka loss.

The projections are fitted on the corpus only, never on queries or qrels: "learned" on the
corpus vectors, "learned + corpus pairs" also on pseudo query/document pairs made from the
corpus text (each page's first sentence and the rest of it, `datasets.corpus_pairs`). Each row is
measured by :func:`matryoshka_retrieval.eval.evaluate_dims`; the coarse-to-fine column is a
64-dim coarse stage with a 100-candidate shortlist and a full-dim rerank, as top-10 agreement
with exact full-dim search.

Fine-tuning (second table) uses two sources of (query, positive) pairs:
- held-out split: the man-page queries are split by query with seed 0, half for training and
  half held out; every row of that table, the original model's included, is measured on the
  held-out half over the whole corpus;
- stdlib: pairs from the Python standard library's docstrings (no man-page text), measured on
  all man-page queries.

Usage:
  python benchmarks/bench_projection.py [--epochs 20] [--finetune-epochs 3] [--no-finetune]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "manpages"
CACHE = HERE / ".cache"
DIMS = [32, 64, 128, 256]


def embeddings() -> tuple[np.ndarray, np.ndarray]:
    from matryoshka_retrieval import SentenceTransformerEncoder
    from matryoshka_retrieval.eval import load_beir

    CACHE.mkdir(exist_ok=True)
    docs_path, queries_path = CACHE / "manpages128-corpus.npy", CACHE / "manpages128-q.npy"
    if not (docs_path.exists() and queries_path.exists()):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        data = load_beir(DATA)
        encoder = SentenceTransformerEncoder(max_seq_length=128, batch_size=64)
        np.save(docs_path, encoder.encode_documents(list(data.corpus.values())))
        np.save(queries_path, encoder.encode_queries(list(data.queries.values())))
    return np.load(docs_path), np.load(queries_path)


def corpus_pair_vectors(data) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Pairs made from the corpus text alone (first sentence -> rest), embedded once."""
    from matryoshka_retrieval import SentenceTransformerEncoder
    from matryoshka_retrieval.datasets import corpus_pairs

    path = CACHE / "manpages128-corpus-pairs.npz"
    if not path.exists():
        pairs = corpus_pairs(data.corpus.values())
        encoder = SentenceTransformerEncoder(max_seq_length=128, batch_size=64)
        q = encoder.encode_queries([a for a, _ in pairs])
        d = encoder.encode_documents([b for _, b in pairs])
        np.savez(path, queries=q, documents=d)
    with np.load(path) as saved:
        return saved["queries"], saved["documents"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=float, default=3)
    parser.add_argument("--no-finetune", action="store_true")
    parser.add_argument(
        "--fit-vectors",
        type=int,
        default=0,
        help="only time the learned fit on this many vectors (corpus vectors plus noise)",
    )
    parser.add_argument(
        "--labelfree",
        action="store_true",
        help="issue 15: every dim 32-384, corpus-only and with-label fitting, adapter included",
    )
    parser.add_argument(
        "--distill",
        action="store_true",
        help="issue 15: fine-tuning without labels (mnrl on corpus pairs, distill joint and "
        "sequential) on a man-page subset",
    )
    parser.add_argument("--subset-queries", type=int, default=400)
    parser.add_argument("--subset-docs", type=int, default=1000)
    parser.add_argument("--distill-epochs", type=float, default=1)
    args = parser.parse_args(argv)
    if args.labelfree or args.distill:
        if args.labelfree:
            labelfree(args.epochs)
        if args.distill:
            distill_subset(args.subset_queries, args.subset_docs, args.distill_epochs)
        return 0
    if args.fit_vectors:
        return fit_time(args.fit_vectors, args.epochs)

    from matryoshka_retrieval.eval import load_beir

    data = load_beir(DATA)
    docs, queries = embeddings()
    rows = []
    reference = None
    for name in ("raw", "pca", "learned", "learned + corpus pairs"):
        method = None if name == "raw" else "pca" if name == "pca" else "learned"
        pairs = corpus_pair_vectors(data) if "pairs" in name else None
        _, results, fit_s = _fit_and_score(
            data, docs, queries, method, pairs, args.epochs, dims=DIMS, rescore=[10, 20]
        )
        cells, c2f = _cells(results)
        reference = reference or cells[-1]  # the original model's full-dim nDCG@10
        rows.append((name, cells, c2f, fit_s))
        print(f"  {name}: done in {fit_s:.0f}s", flush=True)
    assert reference is not None
    head = " | ".join(f"{d}d" for d in DIMS)
    agreement = "64d -> full rerank, top-10 agreement: shortlist 100 | shortlist 200"
    print(f"\n| embedding | {head} | full | {agreement} | fit s |")
    print("|---" * (len(DIMS) + 5) + "|")
    for name, cells, c2f, fit_s in rows:
        values = " | ".join(f"{v:.4f} ({v / reference:.0%})" for v in cells)
        print(f"| {name} | {values} | {c2f} | {fit_s:.0f} |")
    print(f"\n% = share of the original model's full-dim nDCG@10 ({reference:.4f})")
    if not args.no_finetune:
        finetune(data, docs, queries, args.finetune_epochs)
    return 0


def fit_time(n: int, epochs: int) -> int:
    """Seconds to fit the learned projection on ``n`` vectors (the man pages, resampled)."""
    from matryoshka_retrieval.projection import fit_projection

    docs, _ = embeddings()
    rng = np.random.default_rng(0)
    vectors = docs[rng.integers(0, len(docs), n)] + 0.02 * rng.normal(size=(n, docs.shape[1]))
    start = time.perf_counter()
    fit_projection(vectors.astype(np.float32), method="learned", epochs=epochs)
    seconds = time.perf_counter() - start
    print(f"learned projection: {n:,} x {docs.shape[1]} vectors, {epochs} epochs, {seconds:.0f}s")
    return 0


def _cells(results) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    by_name = {r.name: r for r in results}
    cells = [by_name[f"{dim}d float32"].metrics["ndcg@10"] for dim in DIMS]
    cells.append(results.reference.metrics["ndcg@10"])
    c2f = by_name["64d float32 -> rerank x10"].agreement_at_10
    if "64d float32 -> rerank x20" in by_name:
        return cells, f"{c2f:.3f} | {by_name['64d float32 -> rerank x20'].agreement_at_10:.3f}"
    return cells, f"{c2f:.3f}"


def finetune(data, docs, queries, epochs: float) -> None:  # type: ignore[no-untyped-def]
    """Fine-tune MiniLM with MatryoshkaLoss on pairs the evaluation does not see."""
    from matryoshka_retrieval import SentenceTransformerEncoder
    from matryoshka_retrieval.datasets import python_docs_task
    from matryoshka_retrieval.eval import evaluate_dims
    from matryoshka_retrieval.train import pairs_from_beir, split_beir, train_matryoshka

    settings = {
        "dims": [384, 256, 128, 64, 32],
        "weights": [1, 1, 1, 2, 2],
        "batch_size": 32,
        "learning_rate": 5e-5,
        "max_seq_length": 128,
        "device": "cpu",
        "show_progress_bar": False,
    }
    train, test = split_beir(data, test_fraction=0.5, seed=0)
    position = {q: i for i, q in enumerate(data.queries)}
    held_out = [position[q] for q in test.queries]

    def measure(source, part):  # type: ignore[no-untyped-def]
        return evaluate_dims(
            source, part.corpus, part.queries, part.qrels, dims=DIMS, precisions=["float32"]
        )

    runs = [
        (
            "original all-MiniLM-L6-v2",
            "held-out half",
            measure((docs, queries[held_out]), test),
            0.0,
        )
    ]
    for name, folder, pairs, part, part_name in (
        ("fine-tuned on the other half", "holdout", pairs_from_beir(train), test, "held-out half"),
        ("fine-tuned on stdlib pairs", "stdlib", pairs_from_beir(python_docs_task()), data, "all"),
    ):
        print(f"  {name}: training on {len(pairs)} pairs", flush=True)
        out = CACHE / f"finetuned-{folder}"
        result = train_matryoshka(pairs, out, overwrite=True, epochs=epochs, **settings)
        encoder = SentenceTransformerEncoder(out, batch_size=64, device="cpu")
        runs.append((name, part_name, measure(encoder, part), result.seconds))
        if part is test:
            runs.append(("original all-MiniLM-L6-v2", "all", measure((docs, queries), data), 0.0))

    head = " | ".join(f"{d}d" for d in DIMS)
    agreement = "64d -> full rerank, top-10 agreement"
    print(f"\n| model | evaluated on | {head} | full | {agreement} | train s |")
    print("|---" * (len(DIMS) + 5) + "|")
    for name, part_name, results, seconds in runs:
        cells, c2f = _cells(results)
        values = " | ".join(f"{v:.4f} ({v / cells[-1]:.0%})" for v in cells)
        print(f"| {name} | {part_name} | {values} | {c2f} | {seconds:.0f} |")
    print(
        "\n% = share of the same model's own full-dim nDCG@10. Settings: "
        f"{epochs:g} epochs, {settings}"
    )


# -- label-free Matryoshka (issue 15) -------------------------------------------------------------

LF_DIMS = [32, 48, 64, 96, 128, 192, 256]


def labelfree(epochs: int) -> None:
    """Projections fitted without labels (corpus only) and with the real pairs of half the
    queries, at every dim from 32 to 384, with full-dim top-10 agreement with the original."""
    from matryoshka_retrieval.eval import load_beir
    from matryoshka_retrieval.train import pairs_from_beir, split_beir

    data = load_beir(DATA)
    docs, queries = embeddings()
    pseudo = corpus_pair_vectors(data)
    methods = [
        ("raw", None, None),
        ("pca", "pca", None),
        ("learned", "learned", None),
        ("learned + corpus pairs", "learned", pseudo),
        ("adapter", "adapter", None),
        ("adapter + corpus pairs", "adapter", pseudo),
    ]
    print("\n## corpus only: no query text, no labels; all 2,294 queries", flush=True)
    _projection_table(data, docs, queries, methods, epochs)

    train, test = split_beir(data, test_fraction=0.5, seed=0)
    position = {q: i for i, q in enumerate(data.queries)}
    real = (
        queries[[position[q] for q in train.queries for _ in train.qrels[q]]],
        docs[[i for q in train.queries for i in _doc_rows(data, train.qrels[q])]],
    )
    assert len(real[0]) == len(real[1]) == len(pairs_from_beir(train))
    print("\n## with labels: the real pairs of half the queries; the other half scored", flush=True)
    held_out = queries[[position[q] for q in test.queries]]
    _projection_table(
        test,
        docs,
        held_out,
        [
            ("raw", None, None),
            ("learned + real pairs", "learned", real),
            ("adapter + real pairs", "adapter", real),
        ],
        epochs,
    )


def _doc_rows(data, relevant):  # type: ignore[no-untyped-def]
    ids = list(data.corpus)
    return [ids.index(d) for d, score in relevant.items() if score > 0]


def _projection_table(data, docs, queries, methods, epochs: int) -> None:  # type: ignore[no-untyped-def]
    from matryoshka_retrieval.projection import _agreement

    rows = []
    unit_docs, unit_queries = _unit(docs), _unit(queries)
    for name, method, pairs in methods:
        (d, q), results, seconds = _fit_and_score(
            data, docs, queries, method, pairs, epochs, dims=LF_DIMS, rescore=()
        )
        by_dim = {r.dim: r.metrics["ndcg@10"] for r in results if not r.rerank}
        agreement = _agreement(unit_queries, _unit(q), unit_docs, _unit(d), None, 10)
        rows.append((name, by_dim, agreement, seconds))
        print(f"  {name}: {seconds:.0f}s", flush=True)
    _print_rows(rows, reference=rows[0][1][docs.shape[1]])


def _fit_and_score(data, docs, queries, method, pairs, epochs, *, dims, rescore):  # type: ignore[no-untyped-def]
    """Fit a projection (none for ``method=None``) on the documents and evaluate it at ``dims``.

    Returns ``((docs, queries) as projected, the evaluation results, fit seconds)``.
    """
    from matryoshka_retrieval.eval import evaluate_dims
    from matryoshka_retrieval.projection import fit_projection

    start = time.perf_counter()
    d, q = docs, queries
    if method is not None:
        projection = fit_projection(
            docs, method=method, epochs=epochs, pairs=pairs, show_progress_bar=False
        )
        d, q = projection.apply(docs), projection.apply(queries)
    seconds = time.perf_counter() - start
    results = evaluate_dims(
        (d, q),
        data.corpus,
        data.queries,
        data.qrels,
        dims=dims,
        precisions=["float32"],
        rescore=rescore,
    )
    return (d, q), results, seconds


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _print_rows(rows, reference: float) -> None:  # type: ignore[no-untyped-def]
    dims = [*LF_DIMS, 384]
    head = " | ".join(f"{d}d" for d in dims)
    print(f"\n| embedding | {head} | full-dim top-10 agreement | fit/train s |")
    print("|---" * (len(dims) + 3) + "|")
    for name, by_dim, agreement, seconds in rows:
        cells = " | ".join(f"{by_dim[d]:.4f} ({by_dim[d] / reference:.1%})" for d in dims)
        print(f"| {name} | {cells} | {agreement:.3f} | {seconds:.0f} |")
    print(f"\n% = share of the original model's full-dim nDCG@10 ({reference:.4f})", flush=True)


def distill_subset(n_queries: int, n_docs: int, epochs: float) -> None:
    """Fine-tuning without labels on a man-page subset (CPU budget): the relevant pages of
    ``n_queries`` random queries plus other pages up to ``n_docs``; every method is fitted or
    trained on the subset's page text only and scored on those queries over the subset."""
    from matryoshka_retrieval import SentenceTransformerEncoder
    from matryoshka_retrieval.datasets import corpus_pairs
    from matryoshka_retrieval.eval import BeirData, load_beir
    from matryoshka_retrieval.train import train_matryoshka

    data = load_beir(DATA)
    docs, queries = embeddings()
    rng = np.random.default_rng(0)
    query_ids = [list(data.queries)[i] for i in rng.choice(len(data.queries), n_queries, False)]
    doc_ids = list(data.corpus)
    wanted = {d for q in query_ids for d in data.qrels.get(q, {})}
    others = [d for d in rng.permutation(doc_ids) if d not in wanted][: n_docs - len(wanted)]
    chosen = [d for d in doc_ids if d in wanted or d in set(others)]
    subset = BeirData(
        corpus={d: data.corpus[d] for d in chosen},
        queries={q: data.queries[q] for q in query_ids},
        qrels={q: data.qrels[q] for q in query_ids if q in data.qrels},
    )
    doc_rows = [doc_ids.index(d) for d in chosen]
    q_rows = [list(data.queries).index(q) for q in query_ids]
    sub_docs, sub_queries = docs[doc_rows], queries[q_rows]
    texts = list(subset.corpus.values())
    pairs = corpus_pairs(texts)
    print(f"\n## fine-tuning on {len(texts)} pages ({len(pairs)} corpus pairs)", flush=True)
    encoder = SentenceTransformerEncoder(max_seq_length=128, batch_size=64, device="cpu")
    pseudo = (
        encoder.encode_queries([a for a, _ in pairs]),
        encoder.encode_documents([b for _, b in pairs]),
    )
    rows = []
    _projection_rows(rows, subset, sub_docs, sub_queries, pseudo)
    settings = {
        "dims": [384, 256, 128, 64, 32],
        "weights": [1, 1, 1, 2, 2],
        "batch_size": 32,
        "max_seq_length": 64,
        "device": "cpu",
        "show_progress_bar": False,
        "overwrite": True,
        "epochs": epochs,
    }
    runs = [
        ("distill joint + corpus pairs", {"loss": "distill", "corpus": texts}),
        (
            "distill sequential + corpus pairs",
            {"loss": "distill", "corpus": texts, "schedule": "sequential"},
        ),
        ("train_matryoshka mnrl, corpus pairs", {"loss": "mnrl", "learning_rate": 5e-5}),
    ]
    for name, options in runs:
        out = CACHE / f"lf-{name.split(',')[0].split(' +')[0].replace(' ', '-')}"
        options.setdefault("learning_rate", 1e-4)
        result = train_matryoshka(pairs, out, **settings, **options)  # type: ignore[arg-type]
        trained = SentenceTransformerEncoder(out, max_seq_length=128, batch_size=64, device="cpu")
        d = trained.encode_documents(texts)
        q = trained.encode_queries(list(subset.queries.values()))
        rows.append(_measure(name, subset, d, q, sub_docs, sub_queries, result.seconds))
        print(f"  {name}: trained in {result.seconds:.0f}s", flush=True)
    _print_rows(rows, reference=rows[0][1][384])


def _projection_rows(rows, subset, docs, queries, pseudo) -> None:  # type: ignore[no-untyped-def]
    from matryoshka_retrieval.projection import fit_projection

    rows.append(_measure("raw (original model)", subset, docs, queries, docs, queries, 0.0))
    for name, method in (
        ("learned + corpus pairs", "learned"),
        ("adapter + corpus pairs", "adapter"),
    ):
        start = time.perf_counter()
        p = fit_projection(docs, method=method, pairs=pseudo, show_progress_bar=False)
        seconds = time.perf_counter() - start
        rows.append(_measure(name, subset, p.apply(docs), p.apply(queries), docs, queries, seconds))


def _measure(name, data, d, q, docs, queries, seconds):  # type: ignore[no-untyped-def]
    from matryoshka_retrieval.eval import evaluate_dims
    from matryoshka_retrieval.projection import _agreement

    results = evaluate_dims(
        (d, q), data.corpus, data.queries, data.qrels, dims=LF_DIMS, precisions=["float32"],
        rescore=(),
    )  # fmt: skip
    by_dim = {r.dim: r.metrics["ndcg@10"] for r in results if not r.rerank}
    agreement = _agreement(_unit(queries), _unit(q), _unit(docs), _unit(d), None, 10)
    return name, by_dim, agreement, seconds


if __name__ == "__main__":
    sys.exit(main())
