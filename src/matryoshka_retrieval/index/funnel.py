"""The search funnel: coarse shortlist on a prefix, optional middle stages, full-dim rerank.

One function over the store interfaces of :mod:`.stores`; it knows no backend.
"""

from __future__ import annotations

from typing import Any

import faiss as _faiss
import numpy as np
from numpy.typing import NDArray

from ..truncation import prefix
from .config import IndexConfig
from .filters import Filter
from .rerank import Reranker, top_k
from .stores import CoarseStage, FullVectorStore, Selector

faiss: Any = _faiss

__all__ = ["exact_search", "funnel_search"]

_BLOCK = 65536
Result = tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]


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
) -> Result:
    """The ``k`` best rows per query: ``(scores, rows, coarse_scores)``, rows -1 past the end.

    Args:
        queries: Unit-length full-dim queries ``[m, D]``.
        k: Hits per query.
        config: The stages and shortlist sizes.
        coarse: The coarse stage, or ``None`` for exact full-dim search.
        vectors: The full vectors.
        reranker: Scores shortlists against the full vectors (or their prefixes).
        allowed: The rows a hit may be (``None``: every row), for stages that filter by rows.
        where: The filter itself, for stages that evaluate it.
    """
    if coarse is None:
        scores, rows = exact_search(queries, k, vectors, allowed)
        return scores, rows, scores
    stages = config.funnel(k)
    dim, keep = stages[0]
    if coarse.filters_rows:
        coarse_scores, rows = coarse.search(prefix(queries, dim), keep, allowed=allowed)
    else:
        coarse_scores, rows = coarse.search(prefix(queries, dim), keep, where=where)
    candidates = rows
    for dim, keep in stages[1:]:
        _, candidates = reranker.rescore(prefix(queries, dim), candidates, keep, dim)
    scores, final = reranker.rescore(queries, candidates, k)
    return scores, final, _coarse_scores_of(final, rows, coarse_scores)


def _coarse_scores_of(
    final: NDArray[np.int64], rows: NDArray[np.int64], coarse_scores: NDArray[np.float32]
) -> NDArray[np.float32]:
    """The coarse score of each final row (NaN for empty slots)."""
    same = (final[:, :, None] == rows[:, None, :]) & (final[:, :, None] >= 0)
    found = same.any(axis=2)
    picked = np.take_along_axis(coarse_scores, same.argmax(axis=2), axis=1)
    return np.where(found, picked, np.float32(np.nan)).astype(np.float32, copy=False)


def exact_search(
    queries: NDArray[np.float32],
    k: int,
    vectors: FullVectorStore,
    allowed: Selector | None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Brute-force top-k over the stored full vectors (the allowed rows only, when given)."""
    best_scores = np.full((queries.shape[0], 0), -np.inf, dtype=np.float32)
    best_rows = np.full((queries.shape[0], 0), -1, dtype=np.int64)
    if allowed is None:
        parts = [
            (first, *faiss.knn(queries, block, min(k, block.shape[0]), faiss.METRIC_INNER_PRODUCT))
            for first, block in vectors.blocks(1 << 20)
            if block.shape[0]
        ]
        if len(parts) == 1:  # FAISS's answer is already the sorted top k
            first, scores, rows = parts[0]
            return scores.astype(np.float32, copy=False), rows.astype(np.int64) + first
        for first, scores, rows in parts:
            best_scores = np.concatenate([best_scores, scores.astype(np.float32)], axis=1)
            best_rows = np.concatenate([best_rows, rows.astype(np.int64) + first], axis=1)
        return top_k(best_scores, best_rows, k)
    rows_allowed = np.flatnonzero(allowed.mask)
    for start in range(0, rows_allowed.shape[0], _BLOCK):
        block_rows = rows_allowed[start : start + _BLOCK]
        scores = queries @ vectors.take(block_rows).T
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_rows = np.concatenate([best_rows, np.broadcast_to(block_rows, scores.shape)], axis=1)
        best_scores, best_rows = top_k(best_scores, best_rows, k)
    return top_k(best_scores, best_rows, k)
