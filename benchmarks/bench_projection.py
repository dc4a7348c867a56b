"""nDCG@10 by prefix dim for all-MiniLM-L6-v2 on the man-page corpus: raw, PCA, learned.

The projections are fitted on the corpus vectors only (never on queries or qrels). Each row is
measured by :func:`matryoshka_retrieval.eval.evaluate_dims`; the coarse-to-fine column is a
64-dim coarse stage with a 100-candidate shortlist and a full-dim rerank over the projected
index, as top-10 agreement with exact full-dim search.

Usage:
  python benchmarks/bench_projection.py [--epochs 20]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)

    from matryoshka_retrieval.eval import evaluate_dims, load_beir
    from matryoshka_retrieval.projection import fit_projection

    data = load_beir(DATA)
    docs, queries = embeddings()
    rows = []
    reference = None
    for name in ("raw", "pca", "learned"):
        start = time.perf_counter()
        if name == "raw":
            d, q = docs, queries
        else:
            projection = fit_projection(docs, method=name, epochs=args.epochs)  # corpus only
            d, q = projection.apply(docs), projection.apply(queries)
        fit_s = time.perf_counter() - start
        results = evaluate_dims(
            (d, q), data.corpus, data.queries, data.qrels, dims=DIMS, precisions=["float32"]
        )
        by_name = {r.name: r for r in results}
        full = results.reference.metrics["ndcg@10"]
        reference = reference or full  # the original model's full-dim nDCG@10
        cells = [by_name[f"{dim}d float32"].metrics["ndcg@10"] for dim in DIMS] + [full]
        c2f = by_name["64d float32 -> rerank x10"].agreement_at_10
        rows.append((name, cells, c2f, fit_s))
        print(f"  {name}: done in {fit_s:.0f}s", flush=True)
    assert reference is not None
    head = " | ".join(f"{d}d" for d in DIMS)
    print(f"\n| embedding | {head} | full | 64d -> full rerank, top-10 agreement | fit s |")
    print("|---" * (len(DIMS) + 4) + "|")
    for name, cells, c2f, fit_s in rows:
        values = " | ".join(f"{v:.4f} ({v / reference:.0%})" for v in cells)
        print(f"| {name} | {values} | {c2f:.3f} | {fit_s:.0f} |")
    print(f"\n% = share of the original model's full-dim nDCG@10 ({reference:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
