"""The demo's speed section: the funnel against FAISS at equal recall, at a scale where it matters.

The vectors are made here (no download): clustered points whose per-dimension variance decays
as a power law, the shape Matryoshka embeddings (and PCA-rotated ones) have. Every contender is
set to its cheapest setting that reaches the recall target on calibration queries (by the
tuner's rule: the lower 95% confidence bound of the mean), then timed at batch 1 on other
queries; recall@10 is measured against exact search on those.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np
from numpy.typing import NDArray

faiss: Any = _faiss

K = 10
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def vectors(n: int, dim: int, queries: int, seed: int = 0) -> tuple[NDArray[Any], NDArray[Any]]:
    """``n`` unit vectors and ``queries`` nearby unit queries, variance decaying over dims."""
    rng = np.random.default_rng(seed)
    std = (np.arange(1, dim + 1, dtype=np.float64) ** -0.55).astype(np.float32)
    centroids = rng.standard_normal((max(16, n // 500), dim), dtype=np.float32) * std
    members = rng.integers(0, centroids.shape[0], n)
    corpus = centroids[members] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32) * std
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    picks = rng.choice(n, queries, replace=False)
    q = corpus[picks] + 0.3 * rng.standard_normal((queries, dim), dtype=np.float32) * std
    return corpus, q / np.linalg.norm(q, axis=1, keepdims=True)


def _per_query(found: NDArray[Any], truth: NDArray[Any]) -> NDArray[Any]:
    return np.array([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])


def _recall(found: NDArray[Any], truth: NDArray[Any]) -> float:
    return float(_per_query(found, truth).mean())


def _per_second(search: Callable[[NDArray[Any]], Any], queries: NDArray[Any]) -> float:
    search(queries[:1])
    start = time.perf_counter()
    for i in range(queries.shape[0]):
        search(queries[i : i + 1])
    return float(queries.shape[0] / (time.perf_counter() - start))


def compare(n: int, dim: int, target: float, *, seed: int = 0) -> list[dict[str, Any]]:
    """Rows ``name, setting, recall, qps, ram_bytes (per vector), build_s`` of each contender."""
    from ..index import MatryoshkaIndex
    from ..index.tune import describe, lower_bound

    corpus, queries = vectors(n, dim, 1000, seed)
    cal, ev = queries[:500], queries[500:]
    truth_cal = faiss.knn(cal, corpus, K, faiss.METRIC_INNER_PRODUCT)[1]
    truth_ev = faiss.knn(ev, corpus, K, faiss.METRIC_INNER_PRODUCT)[1]
    rows = []

    start = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(corpus)
    built = time.perf_counter() - start
    qps = _per_second(lambda q: flat.search(q, K), ev)
    rows.append(_row("FAISS IndexFlatIP", "exact", 1.0, qps, 4 * dim, built))

    start = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 40
    hnsw.add(corpus)
    built = time.perf_counter() - start
    for ef in EF_SWEEP:  # reaching the target by the tuner's rule (its confidence bound)
        hnsw.hnsw.efSearch = ef
        if lower_bound(_per_query(hnsw.search(cal, K)[1], truth_cal)) >= target:
            break
    recall = _recall(hnsw.search(ev, K)[1], truth_ev)
    qps = _per_second(lambda q: hnsw.search(q, K), ev)
    size = faiss.serialize_index(hnsw).nbytes / n
    rows.append(_row("FAISS HNSW, full vectors", f"M=16, efSearch={ef}", recall, qps, size, built))

    ids = [str(i) for i in range(n)]
    candidates: tuple[dict[str, Any], ...] = (
        {"coarse_dim": 64, "backend": "hnsw", "ef_search": 16},
        {"coarse_dim": 128, "backend": "hnsw", "ef_search": 16},
    )
    for options in candidates:
        start = time.perf_counter()
        index = MatryoshkaIndex(device="cpu", exact_below=0, **options)
        index.add_vectors(corpus, ids=ids)
        built = time.perf_counter() - start
        chosen = index.tune(target_recall=target, k=K, queries=cal).chosen
        found = [[int(i) for i in h.ids] for h in index.search_vectors(ev, K)]
        recall = _recall(np.asarray(found), truth_ev)
        qps = _per_second(index.search_vectors, ev)
        setting = describe(chosen)
        with tempfile.TemporaryDirectory() as folder:
            index.save(folder)
            graph = sum(p.stat().st_size for p in Path(folder).glob("gen-*/coarse.faiss")) / n
        name = f"ours: HNSW on {options['coarse_dim']}d prefix"
        rows.append(_row(name, setting, recall, qps, graph, built))
    return rows


def _row(
    name: str, setting: str, recall: float, qps: float, ram: float, built: float
) -> dict[str, Any]:
    return {"name": name, "setting": setting, "recall": recall, "qps": qps, "ram": ram,
            "build_s": built}  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text, with speed relative to the first (IndexFlatIP)."""
    base = rows[0]["qps"]
    lines = [
        f"{'contender':<28} {'setting':<24} {'recall@10':>9} {'q/s':>7} {'x flat':>6} "
        f"{'RAM B/vec':>9} {'build s':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['name']:<28} {r['setting']:<24} {r['recall']:>9.3f} {r['qps']:>7,.0f} "
            f"{r['qps'] / base:>6.1f} {r['ram']:>9,.0f} {r['build_s']:>7.1f}"
        )
    return "\n".join(lines)
