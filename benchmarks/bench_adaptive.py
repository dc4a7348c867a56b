"""Adaptive funnel against the best fixed shortlist, at the same recall target (man pages).

For each coarse dim the index is tuned twice: on held-out stored rows (no queries needed) and
on the even half of the real queries; each time the table shows the fixed shortlist and the
adaptive margin the tuner found, the candidates reranked per query and the measured ms/query on
the tuning queries, then the recall@10 and mean candidates of the adaptive funnel on the odd
half of the real queries (never seen by the tuner), against exact full-dim search.

Usage:
  python benchmarks/bench_adaptive.py [--target 0.99] [--dims 64,128]

Needs the man-page embeddings cached by ``benchmarks/bench_search.py --data manpages``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np

from matryoshka_retrieval import MatryoshkaIndex

CACHE = Path(__file__).resolve().parent / ".cache"
K = 10


def held_out_recall(index: MatryoshkaIndex, queries: np.ndarray, truth: np.ndarray) -> str:
    hits = index.search_vectors(queries, k=K)
    found = [len(set(h.ids) & set(map(str, t))) for h, t in zip(hits, truth, strict=True)]
    recall = np.mean(found) / K
    mean = np.mean([h.reranked for h in hits])
    return f"held-out queries: recall@10 {recall:.4f}, {mean:.0f} candidates reranked on average"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--dims", default="64,128")
    args = parser.parse_args()
    corpus = np.load(CACHE / "manpages-corpus.npy")
    queries = np.load(CACHE / "manpages-q.npy")
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, truth = faiss.knn(queries, corpus, K, faiss.METRIC_INNER_PRODUCT)
    print(f"man pages: {len(corpus)} docs, {len(queries)} queries, target recall@10 {args.target}")
    for dim in (int(d) for d in args.dims.split(",")):
        index = MatryoshkaIndex(coarse_dim=dim, device="cpu")
        index.add_vectors(corpus, ids=[str(i) for i in range(len(corpus))])
        for label, tuning in (("held-out rows", None), ("half the real queries", queries[::2])):
            result = index.tune(args.target, K, queries=tuning)
            print(f"\n### coarse_dim={dim}, tuned on {label} ({result.queries} queries)\n")
            print(result.table())
            print("\n" + held_out_recall(index, queries[1::2], truth[1::2]))


if __name__ == "__main__":
    main()
