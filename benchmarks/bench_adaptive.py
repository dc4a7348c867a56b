"""Adaptive funnel against the best fixed shortlist, at the same recall target (man pages).

For each coarse dim the index is tuned twice: on held-out stored rows (no queries needed) and
on the even half of the real queries; each time the table shows the fixed shortlist and the
adaptive margin the tuner found, the candidates reranked per query and the measured ms/query on
the tuning queries, then the recall@10 and mean candidates of the adaptive funnel on the odd
half of the real queries (never seen by the tuner), against exact full-dim search.

With ``--bound`` it asks instead how far any per-query rule could go: for each coarse dim, on
the stored prefixes and on a PCA rotation of them, the best fixed shortlist reaching the target
on all the queries, the margin rule and a "patience" rule (rerank in chunks of 32, stop after
``p`` chunks that changed no top-10 entry; the best ``p``), each tuned on all the queries (so
optimistic), and the oracle: the least mean shortlist any per-query allocation could reach the
target with, knowing where each query's exact hits lie.

Usage:
  python benchmarks/bench_adaptive.py [--target 0.99] [--dims 64,128]
  python benchmarks/bench_adaptive.py --bound [--data docstrings]

Needs the man-page embeddings cached by ``benchmarks/bench_search.py --data manpages``.
"""

from __future__ import annotations

import argparse
import heapq
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


WIDTH = 3000  # candidates examined per query
CHUNK = 32


def _ranks(coarse: np.ndarray, corpus_c: np.ndarray, truth: np.ndarray):
    """Per query: the coarse rank of each exact hit, the best ``WIDTH`` candidates (rows) and
    their coarse scores, best first."""
    ranks, rows, scores = [], [], []
    for s in range(0, coarse.shape[0], 256):
        c = coarse[s : s + 256] @ corpus_c.T
        hit = np.take_along_axis(c, truth[s : s + 256], axis=1)
        ranks.append((c[:, None, :] > hit[:, :, None]).sum(axis=2))
        top = np.argpartition(-c, WIDTH - 1, axis=1)[:, :WIDTH]
        order = np.argsort(-np.take_along_axis(c, top, axis=1), axis=1)
        rows.append(np.take_along_axis(top, order, axis=1))
        scores.append(np.take_along_axis(c, rows[-1], axis=1))
    return np.concatenate(ranks), np.concatenate(rows), np.concatenate(scores)


def _oracle(ranks: np.ndarray, target: float) -> float:
    """The least mean shortlist reaching ``target``: each query takes the ``j`` exact hits it
    can hold with a shortlist of its ``j``-th hit's rank + 1 (``K`` at least), ``j`` chosen
    per query by one price per hit (a Lagrangian sweep)."""
    cost = np.concatenate([np.full((len(ranks), 1), K), np.maximum(np.sort(ranks, 1) + 1, K)], 1)
    best = np.inf
    for price in np.geomspace(1e-2, 1e5, 400):
        take = (cost - price * np.arange(K + 1)).argmin(axis=1)
        if take.mean() / K >= target:
            best = min(best, float(cost[np.arange(len(cost)), take].mean()))
    return best


def _patience(full: np.ndarray, ranks: np.ndarray, target: float) -> tuple[float, int]:
    """The patience rule's least mean shortlist reaching ``target`` (and its patience)."""
    last_entry = np.zeros((len(full), WIDTH // CHUNK), dtype=np.int64)  # per chunk end
    for q, row in enumerate(full):
        heap: list[float] = []
        last = 0
        for i, value in enumerate(row.tolist()):
            if len(heap) < K or value > heap[0]:
                (heapq.heappush if len(heap) < K else heapq.heapreplace)(heap, value)
                last = i
            if (i + 1) % CHUNK == 0:
                last_entry[q, (i + 1) // CHUNK - 1] = last
    ends = np.arange(1, WIDTH // CHUNK + 1) * CHUNK
    for patience in range(1, WIDTH // CHUNK):
        quiet = last_entry < (ends - patience * CHUNK)[None, :]
        quiet[:, : patience - 1] = False
        n = np.where(quiet.any(1), ends[quiet.argmax(1)], WIDTH)
        if (ranks < n[:, None]).mean() >= target:
            return float(n.mean()), patience
    return float(WIDTH), 0


def bound(corpus: np.ndarray, queries: np.ndarray, dims: list[int], target: float) -> None:
    from matryoshka_retrieval.projection import fit_projection
    from matryoshka_retrieval.truncation import prefix

    _, truth = faiss.knn(queries, corpus, K, faiss.METRIC_INNER_PRODUCT)
    pca = fit_projection(corpus, method="pca", show_progress_bar=False)
    print(f"target recall@10 {target}; candidates reranked per query on average\n")
    print("| coarse | fixed shortlist | margin rule | patience rule | oracle | "
          "fixed / margin | fixed / patience | fixed / oracle |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, c_corpus, c_queries in (
        ("", corpus, queries),
        (" pca", pca.apply(corpus), pca.apply(queries)),
    ):
        for dim in dims:
            ranks, rows, scores = _ranks(prefix(c_queries, dim), prefix(c_corpus, dim), truth)
            ordered = np.sort(ranks.reshape(-1))
            fixed = int(ordered[int(np.ceil(target * ordered.size)) - 1]) + 1
            kth = scores[:, K - 1 : K]
            padded = np.concatenate([scores, np.full((len(scores), 1), -np.inf)], axis=1)
            item = np.take_along_axis(padded, np.minimum(ranks, WIDTH), axis=1)
            need = np.sort(np.where(ranks < K, 0.0, kth - item).reshape(-1))  # inf: past WIDTH
            margin = need[int(np.ceil(target * need.size)) - 1]
            margin_mean = float((scores >= kth - margin).sum(axis=1).clip(K).mean())
            full = np.concatenate([
                np.einsum("qcd,qd->qc", corpus[rows[s : s + 64]], queries[s : s + 64])
                for s in range(0, len(rows), 64)
            ])  # fmt: skip
            patience_mean, _ = _patience(full, ranks, target)
            oracle = _oracle(ranks, target)
            print(f"| {dim}d{name} | {fixed} | {margin_mean:.0f} | {patience_mean:.0f} | "
                  f"{oracle:.0f} | {fixed / margin_mean:.2f}x | {fixed / patience_mean:.2f}x | "
                  f"{fixed / oracle:.2f}x |", flush=True)  # fmt: skip


def load(data: str) -> tuple[np.ndarray, np.ndarray]:
    if data == "docstrings":
        from docstrings import docstrings

        path, queries, _ = docstrings()
        corpus = np.load(path)
    else:
        corpus = np.load(CACHE / "manpages-corpus.npy")
        queries = np.load(CACHE / "manpages-q.npy")
    corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    return corpus.astype(np.float32), queries / np.linalg.norm(queries, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--bound", action="store_true", help="how far any per-query rule goes")
    parser.add_argument("--data", choices=["manpages", "docstrings"], default="manpages")
    args = parser.parse_args()
    corpus, queries = load(args.data)
    if args.bound:
        bound(corpus, queries, [int(d) for d in args.dims.split(",")], args.target)
        return
    _, truth = faiss.knn(queries, corpus, K, faiss.METRIC_INNER_PRODUCT)
    print(f"{args.data}: {len(corpus)} docs, {len(queries)} queries, target {args.target}")
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
