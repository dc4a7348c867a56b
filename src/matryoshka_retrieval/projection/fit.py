"""Fitting a projection: checks the settings, fits the PCA rotation, and hands the learned
rotation and the adapter to their trainers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import int_at_least, positive_number
from ..truncation import as_float_matrix, check_finite, l2_normalize
from .adapter import _calibrate, _train_adapter
from .base import Projection
from .learned import _Settings, _train_rotation

__all__ = ["fit_projection"]

Method = Literal["pca", "learned", "adapter"]
_METHODS = ("pca", "learned", "adapter")


def _pca_rotation(x: NDArray[np.float32]) -> NDArray[np.float32]:
    centered = x - x.mean(axis=0)
    covariance = centered.T.astype(np.float64) @ centered / max(1, len(x) - 1)
    _, vectors = np.linalg.eigh(covariance)
    return np.ascontiguousarray(vectors[:, ::-1], dtype=np.float32)


def fit_projection(
    vectors: ArrayLike,
    *,
    method: Method = "pca",
    dims: Sequence[int] | None = None,
    epochs: int = 20,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    temperature: float = 0.05,
    pairs: tuple[ArrayLike, ArrayLike] | None = None,
    pair_weight: float = 1.0,
    hidden: int | None = None,
    full_weight: float = 4.0,
    min_agreement: float = 0.99,
    seed: int = 0,
    show_progress_bar: bool = True,
) -> Projection:
    """Fit a projection on a sample of corpus embeddings (no queries or labels needed).

    With ``pairs`` (``learned`` and ``adapter``), the map also learns from query/document pairs:
    at each prefix dim, every query of a batch of pairs should score its own document above the
    others (an in-batch softmax loss), which moves what queries and documents share to the
    front. Pairs need not be labelled: :func:`~matryoshka_retrieval.datasets.corpus_pairs`
    makes them from the documents' own text. A ``learned`` projection is still a rotation, so
    full-dim scores stay unchanged; the prefixes then rank for retrieval rather than copy the
    full-dim ranking.

    An ``adapter`` is that rotation followed by a residual MLP, trained for the prefixes with
    in-batch neighbour-distribution losses (each batch holds every vector's nearest full-dim
    neighbours) and, with weight ``full_weight``, for the full dim to keep the original
    similarities; the pairs' queries also learn to keep their own full-dim neighbourhood among
    the documents. The residual is then scaled down where needed, so that full-dim top-10
    search over ``vectors`` (and the pairs' queries) agrees with the original on at least
    ``min_agreement`` of the neighbours (measured for up to 2,000 of them, drawn at random).

    Args:
        vectors: ``[n, dim]`` full embeddings of the corpus (or a sample of it).
        method: ``pca`` (a rotation onto the principal axes), ``learned`` (that rotation
            followed by a learned orthogonal rotation, trained with torch; both orthogonal, so
            full-dim scores are unchanged) or ``adapter`` (the learned rotation and a residual
            MLP, for embedders whose weights you cannot train).
        dims: Prefix dims the learned map is trained for; default: the powers of two from
            16 below the full dim (from 2, for a full dim of 16 or less).
        epochs: Passes over ``vectors`` (``learned``, ``adapter``).
        batch_size: Vectors per step; each step compares all pairs within the batch.
        learning_rate: Adam step size.
        temperature: Softmax temperature of the neighbour-ranking and pair terms.
        pairs: ``(query_vectors, document_vectors)``, row ``i`` of each a pair, embedded with
            the same model as ``vectors`` (queries as queries, documents as documents).
        pair_weight: Weight of the pair term against the neighbour-preserving terms.
        hidden: Hidden width of the adapter's MLP; default: the full dim.
        full_weight: Weight of the adapter's full-dim preservation term.
        min_agreement: Least full-dim top-10 agreement with the original vectors that the
            adapter keeps (between 0 and 1).
        seed: Random seed, an int of at least 0 (the ``learned`` and ``adapter`` training).
        show_progress_bar: Show a progress bar while training.

    Returns:
        The fitted :class:`Projection`.

    Raises:
        ValueError: For an unknown method, too few vectors, dims outside ``1..dim``, pairs
            that are not two equal-length ``[m, dim]`` arrays (or given with ``pca``), or an
            out-of-range setting such as a negative ``seed`` (the message names it).
        TypeError: For a count, weight or ``seed`` of the wrong type (the message names it).
    """
    matrix, _ = as_float_matrix(vectors)
    check_finite(matrix)
    x = l2_normalize(np.array(matrix, dtype=np.float32, copy=True))
    n, dim = x.shape
    if method not in _METHODS:
        raise ValueError(
            f"method={method!r} is not supported; choose 'pca', 'learned' or 'adapter'"
        )
    if n < 2:
        raise ValueError(f"fit_projection needs at least 2 vectors, got {n}")
    chosen_dims = _check_fit_dims(dims, dim, method)
    pair_vectors = None
    if pairs is not None:
        if method == "pca":
            raise ValueError("pairs are used by method='learned' or 'adapter' only")
        pair_vectors = _check_pairs(pairs, dim)
        positive_number("pair_weight", pair_weight)
    settings = _Settings(
        dims=chosen_dims,
        epochs=int_at_least("epochs", epochs, 1),
        batch_size=int_at_least("batch_size", batch_size, 2),
        learning_rate=positive_number("learning_rate", learning_rate),
        temperature=positive_number("temperature", temperature),
        pair_weight=pair_weight,
        full_weight=positive_number("full_weight", full_weight),
        hidden=dim if hidden is None else int_at_least("hidden", hidden, 1),
        seed=int_at_least("seed", seed, 0),
        show_progress_bar=show_progress_bar,
    )
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be between 0 and 1, got {min_agreement}")
    rotation = _pca_rotation(x)
    info: dict[str, Any] = {"vectors": n, "dim": dim}
    if method == "pca":
        return Projection("pca", rotation, info)
    rotated_pairs = None
    if pair_vectors is not None:
        rotated_pairs = (pair_vectors[0] @ rotation, pair_vectors[1] @ rotation)
        info["pairs"] = len(pair_vectors[0])
    info.update({"dims": chosen_dims, "epochs": epochs})
    if method == "learned":
        learned = _train_rotation(x @ rotation, settings, pairs=rotated_pairs)
        return Projection("learned", _chain(rotation, learned), info)
    learned, residual = _train_adapter(x @ rotation, settings, pairs=rotated_pairs)
    projection = Projection("adapter", _chain(rotation, learned), info, residual)
    extra = None if pair_vectors is None else pair_vectors[0]
    return _calibrate(projection, x, extra, min_agreement)


def _check_fit_dims(dims: Sequence[int] | None, dim: int, method: str) -> list[int]:
    """The prefix dims a learned map trains at: ``dims`` checked, or the default for ``dim``."""
    if dims is None:
        chosen = [2**i for i in range(4, 12) if 2**i < dim]
        chosen = chosen or [2**i for i in range(1, 4) if 2**i < dim]  # a full dim of 16 or less
    else:
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= dim:
                raise ValueError(f"dims holds {d}, out of range 1..{dim}")
        chosen = sorted({int(d) for d in dims})
    if not chosen and method != "pca":
        raise ValueError(
            f"method={method!r} trains at prefix dims, but dims holds none (give some in 1..{dim})"
        )
    return chosen


def _chain(first: NDArray[np.float32], second: NDArray[np.float32]) -> NDArray[np.float32]:
    combined = first.astype(np.float64) @ second.astype(np.float64)
    return np.ascontiguousarray(combined, dtype=np.float32)


def _check_pairs(
    pairs: tuple[ArrayLike, ArrayLike], dim: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
        raise ValueError("pairs must be (query_vectors, document_vectors)")
    checked = []
    for name, part in zip(("query", "document"), pairs, strict=True):
        matrix, single = as_float_matrix(part)
        if single or matrix.shape[1] != dim:
            raise ValueError(
                f"pairs: the {name} vectors must be [m, {dim}], got shape {np.shape(part)}"
            )
        check_finite(matrix)
        checked.append(l2_normalize(np.array(matrix, dtype=np.float32, copy=True)))
    if len(checked[0]) != len(checked[1]) or len(checked[0]) < 2:
        raise ValueError(
            f"pairs need as many query as document vectors, at least 2; got "
            f"{len(checked[0])} and {len(checked[1])}"
        )
    return checked[0], checked[1]
