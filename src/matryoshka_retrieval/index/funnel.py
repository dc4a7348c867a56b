"""The search funnel: coarse shortlist on a prefix, optional middle stages, full-dim rerank.

One function over the store interfaces of :mod:`.stores`; it knows no backend.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from ..truncation import prefix
from .config import IndexConfig
from .filters import Filter
from .rerank import Reranker, pick, top_k, top_positions
from .stores import CoarseStage, FullVectorStore, Selector

__all__ = ["exact_search", "funnel_search", "scan"]

_BLOCK = 65536
_SCAN_FLOATS = 1 << 22  # scores an exact scan holds at once (16 MiB)
_GEMM_ROWS = 8
Result = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]


def funnel_search(
    queries: NDArray[np.float32],
    k: int,
    *,
    config: IndexConfig,
    coarse: CoarseStage | None,
    vectors: FullVectorStore,
    reranker: Reranker,
    allowed: Selector | None,
    where: Filter | None,
    coarse_prefix: Callable[[NDArray[np.float32], int], NDArray[np.float32]] = prefix,
) -> Result:
    """The ``k`` best rows per query: ``(scores, rows, coarse_scores, reranked)``.

    Rows are -1 past the end; ``reranked`` counts the candidates each query scored with the
    full vectors.

    Args:
        queries: Unit-length full-dim queries ``[m, D]``.
        k: Hits per query.
        config: The stages and shortlist sizes.
        coarse: The coarse stage, or ``None`` for exact full-dim search.
        vectors: The full vectors.
        reranker: Scores shortlists against the full vectors (or their prefixes).
        allowed: The rows a hit may be (``None``: every row), for stages that filter by rows.
        where: The filter itself, for stages that evaluate it.
        coarse_prefix: The coarse stage's view of the queries (the engine's, which applies a
            coarse rotation); the renormalised prefix by default.
    """
    if coarse is None:
        scores, rows = exact_search(queries, k, vectors, allowed)
        scanned = len(vectors) if allowed is None else allowed.count
        return scores, rows, scores, np.full(queries.shape[0], scanned, dtype=np.int64)
    stages = config.funnel(k)
    dim, keep = stages[0]
    if coarse.filters_rows:
        coarse_scores, rows = coarse.search(coarse_prefix(queries, dim), keep, allowed=allowed)
    else:
        coarse_scores, rows = coarse.search(coarse_prefix(queries, dim), keep, where=where)
    if config.adaptive_margin is not None:
        rows = adaptive_cut(coarse_scores, rows, k, config.adaptive_margin)
        coarse_scores = coarse_scores[:, : rows.shape[1]]
    for dim, keep in stages[1:]:
        _, positions = reranker.rescore(prefix(queries, dim), rows, keep, dim)
        rows, coarse_scores = pick(rows, positions), pick(coarse_scores, positions, np.nan)
    reranked = (rows >= 0).sum(axis=1)
    scores, positions = reranker.rescore(queries, rows, k)
    final_coarse = pick(coarse_scores, positions, np.nan).astype(np.float32, copy=False)
    return scores, pick(rows, positions), final_coarse, reranked


def adaptive_cut(
    scores: NDArray[np.float32], rows: NDArray[np.int64], k: int, margin: float
) -> NDArray[np.int64]:
    """Keep, per query, the candidates scoring within ``margin`` of its ``k``-th coarse score.

    ``scores`` are sorted best first (as every coarse stage returns them); at least ``k``
    candidates stay. The result is cut to the widest query's count, -1 past each one's own.

    Example:
        >>> s = np.array([[0.9, 0.8, 0.5, 0.4], [0.9, 0.88, 0.87, 0.8]], dtype=np.float32)
        >>> adaptive_cut(s, np.arange(8).reshape(2, 4), k=1, margin=0.05).tolist()
        [[0, -1, -1], [4, 5, 6]]
    """
    valid = rows >= 0
    kth = scores[:, min(k, scores.shape[1]) - 1]
    keep = valid & (scores >= (kth - np.float32(margin))[:, None])
    keep[:, :k] |= valid[:, :k]
    width = max(int(keep.sum(axis=1).max()), 1)
    return np.where(keep, rows, -1)[:, :width]


def scan(
    queries: NDArray[np.float32], block: NDArray[np.float32], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact top ``k`` by inner product of each query over the rows of ``block``, best first
    (``-inf`` / -1 past the end).

    BLAS scores the rows (``np.dot``, which runs on every core BLAS may use; FAISS's flat scan
    runs one thread per query, so a single query scans on one core), ``_SCAN_FLOATS`` scores
    at a time. Fewer than ``_GEMM_ROWS`` queries are scored one matrix-vector product each:
    BLAS's matrix product is slow for a handful of rows.
    """
    block = np.asarray(block)  # a mapped file's rows too, without np.memmap's wrappers
    queries = np.asarray(queries, dtype=np.float32)
    m, n = queries.shape[0], block.shape[0]
    if m == 0:
        return np.empty((0, min(k, n)), np.float32), np.empty((0, min(k, n)), np.int64)
    step = max(_SCAN_FLOATS // m, 1024)
    if m == 1 and 0 < n <= step:  # one query, one part: the batch-1 path, kept lean
        one = block @ queries[0]
        cut = n - min(k, n)
        best = np.argpartition(one, cut)[cut:] if cut else np.arange(n)
        best = best[np.argsort(-one[best], kind="stable")]
        return one[best][None, :], best[None, :].astype(np.int64, copy=False)
    found = []
    for start in range(0, n, step):
        part = block[start : start + step]
        scores = np.stack([part @ q for q in queries]) if m < _GEMM_ROWS else queries @ part.T
        top, positions = top_positions(scores, k)
        found.append((top, np.where(positions >= 0, positions + start, -1)))
    return _merge(found, m, k)


def _merge(
    found: list[tuple[NDArray[np.float32], NDArray[np.int64]]], m: int, k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The best ``k`` per query of several parts' ``(scores, rows)`` (one part as it is)."""
    if len(found) == 1:
        return found[0]
    if not found:
        return np.empty((m, 0), np.float32), np.empty((m, 0), np.int64)
    scores = np.concatenate([s for s, _ in found], axis=1)
    return top_k(scores, np.concatenate([r for _, r in found], axis=1), k)


def exact_search(
    queries: NDArray[np.float32],
    k: int,
    vectors: FullVectorStore,
    allowed: Selector | None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Brute-force top-k over the stored full vectors (the allowed rows only, when given)."""
    whole = vectors.whole() if allowed is None else None
    if whole is not None:  # one array (RAM or mapped)
        return scan(queries, whole, k)
    found = []
    if allowed is None:  # the saved base and the rows appended since
        for first, block in vectors.blocks(1 << 20):
            scores, rows = scan(queries, block, k)
            found.append((scores, np.where(rows >= 0, rows + first, -1)))
    else:  # the allowed rows, gathered a block at a time
        picked = np.flatnonzero(allowed.mask)
        for start in range(0, picked.shape[0], _BLOCK):
            block_rows = picked[start : start + _BLOCK]
            scores, positions = scan(queries, vectors.take(block_rows), k)
            found.append((scores, np.where(positions >= 0, block_rows[positions], -1)))
    return _merge(found, queries.shape[0], k)
