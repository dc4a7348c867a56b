"""How far a map keeps neighbourhoods: the share of each row's nearest rows it still finds."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import int_at_least, positive_int
from ..truncation import as_float_matrix, l2_normalize

__all__ = ["top_k_agreement"]


def top_k_agreement(
    reference: ArrayLike,
    mapped: ArrayLike,
    *,
    queries: int | None = 1000,
    k: int = 10,
    seed: int = 0,
) -> float:
    """Share of each row's ``k`` nearest other rows that two embeddings of the same items share.

    Row ``i`` of ``reference`` and of ``mapped`` are one item before and after a map (a
    projection applied to full vectors, say). ``queries`` rows picked at random (all rows with
    ``None``) each search all the other rows, by inner product of unit rows; the result is the
    mean overlap of their top ``k`` in the two embeddings.

    Args:
        reference: ``[n, d]`` rows before the map.
        mapped: ``[n, d']`` the same rows after it (any width).
        queries: How many rows search, an int of at least 1; ``None`` for all of them.
        k: Neighbours compared per query, an int of at least 1.
        seed: Seed of the random pick of query rows, an int of at least 0.

    Returns:
        The mean share of the top ``k`` the two embeddings agree on, between 0 and 1.

    Raises:
        TypeError: If ``seed`` is not an int.
        ValueError: If the two hold different numbers of rows, or no more than ``k``; or if
            ``k`` or ``queries`` is not a positive int, or ``seed`` is negative.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(200, 16))
        >>> top_k_agreement(x, x * 3.0)
        1.0
    """
    k = positive_int("k", k)
    if queries is not None:
        queries = positive_int("queries", queries)
    seed = int_at_least("seed", seed, 0)
    a = l2_normalize(np.array(as_float_matrix(reference)[0], dtype=np.float32, copy=True))
    b = l2_normalize(np.array(as_float_matrix(mapped)[0], dtype=np.float32, copy=True))
    if a.shape[0] != b.shape[0] or a.shape[0] <= k:
        raise ValueError(
            f"top_k_agreement needs the same number of rows in both, more than k={k}; got "
            f"{a.shape[0]} and {b.shape[0]}"
        )
    rows = np.arange(len(a))
    if queries is not None and queries < len(a):
        rows = np.sort(np.random.default_rng(seed).choice(len(a), queries, replace=False))
    return _agreement(a[rows], b[rows], a, b, rows, k)


def _agreement(
    query_before: NDArray[np.float32],
    query_after: NDArray[np.float32],
    before: NDArray[np.float32],
    after: NDArray[np.float32],
    self_rows: NDArray[np.int64] | None,
    k: int,
) -> float:
    """Mean top-``k`` overlap of the queries' searches before and after; query ``i`` skips row
    ``self_rows[i]`` (itself) where that is ``>= 0``."""
    shared = []
    for start in range(0, len(query_before), 256):  # blocks of queries bound the score memory
        block = slice(start, start + 256)
        found = []
        for queries, rows in ((query_before[block], before), (query_after[block], after)):
            scores = queries @ rows.T
            if self_rows is not None:
                own = np.flatnonzero(self_rows[block] >= 0)
                scores[own, self_rows[block][own]] = -np.inf
            found.append(np.argpartition(-scores, k - 1, axis=1)[:, :k])
        shared += [len(np.intersect1d(p, q)) for p, q in zip(found[0], found[1], strict=True)]
    return float(np.mean(shared)) / k
