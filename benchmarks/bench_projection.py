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
    args = parser.parse_args(argv)
    if args.fit_vectors:
        return fit_time(args.fit_vectors, args.epochs)

    from matryoshka_retrieval.eval import evaluate_dims, load_beir
    from matryoshka_retrieval.projection import fit_projection

    data = load_beir(DATA)
    docs, queries = embeddings()
    rows = []
    reference = None
    for name in ("raw", "pca", "learned", "learned + corpus pairs"):
        start = time.perf_counter()
        if name == "raw":
            d, q = docs, queries
        else:
            method = "pca" if name == "pca" else "learned"
            pairs = corpus_pair_vectors(data) if "pairs" in name else None
            projection = fit_projection(docs, method=method, epochs=args.epochs, pairs=pairs)
            d, q = projection.apply(docs), projection.apply(queries)
        fit_s = time.perf_counter() - start
        results = evaluate_dims(
            (d, q),
            data.corpus,
            data.queries,
            data.qrels,
            dims=DIMS,
            precisions=["float32"],
            rescore=[10, 20],
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


if __name__ == "__main__":
    sys.exit(main())
