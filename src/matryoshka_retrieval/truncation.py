"""Truncation of Matryoshka embeddings: the one place in the library that slices vectors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "as_float_matrix",
    "check_finite",
    "check_width",
    "l2_normalize",
    "prefix",
    "prefix_tensor",
    "truncate",
    "unit_rows",
]


def as_float_matrix(vectors: ArrayLike, *, name: str = "vectors") -> tuple[NDArray[Any], bool]:
    """Return ``vectors`` as a 2-D floating array, and whether the input was a single 1-D vector.

    The array keeps its own float dtype (float16, float32 or float64) so callers choose when to
    convert; integer input is accepted and read as float32.

    Raises:
        TypeError: If the input is not numeric.
        ValueError: If it is not 1-D or 2-D, or has no columns.
    """
    if (  # the common case, checked cheaply
        isinstance(vectors, np.ndarray)
        and vectors.dtype == np.float32
        and vectors.ndim == 2
        and (vectors.shape[1] > 0 or vectors.shape[0] == 0)
    ):
        return vectors, False
    array = np.asarray(vectors)
    if array.dtype == np.dtype(object) or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(
            f"{name} must hold real numbers (float16, float32 or float64), got dtype {array.dtype}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if array.ndim == 1:
        if array.shape[0] == 0:
            raise ValueError(f"{name} is an empty vector: it needs at least one dimension")
        return array[np.newaxis, :], True
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 1-D vector or a 2-D batch [n, dim], got {array.ndim} dimensions "
            f"with shape {array.shape}"
        )
    if array.shape[1] == 0 and array.shape[0] > 0:
        raise ValueError(f"{name} has shape {array.shape}: rows need at least one dimension")
    return array, False


def check_finite(matrix: NDArray[Any], *, name: str = "vectors") -> None:
    """Raise ValueError naming the first row of ``matrix`` that holds NaN or infinity."""
    if matrix.dtype != np.float64 and np.isfinite(matrix.sum(dtype=np.float64)):
        return  # fast path: a float64 sum of float16/32 values is finite iff every value is
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        bad = "NaN" if np.isnan(matrix[row]).any() else "infinity"
        raise ValueError(
            f"{name} row {row} contains {bad}; every value must be finite "
            f"({int((~finite).sum())} bad row(s) in all)"
        )


def check_width(matrix: NDArray[Any], dim: int | None, *, name: str) -> None:
    """Raise ValueError unless ``matrix`` has ``dim`` columns (any width when ``None``)."""
    if dim is not None and matrix.shape[1] != dim:
        what = "queries" if name.startswith("query") else "vectors"
        raise ValueError(
            f"{what} have {matrix.shape[1]} dims but this index stores {dim}-dim vectors"
        )


def unit_rows(matrix: NDArray[Any], dim: int | None, *, name: str) -> NDArray[np.float32]:
    """A float32 copy of a 2-D float ``matrix`` (from ``as_float_matrix``) with unit-length
    rows, checked for width and finite values (zero rows stay zero).

    The search path's one pass over its queries: a row's norm is finite exactly when the row
    is, so the values are only scanned one by one when a norm is not.

    Raises:
        ValueError: For the wrong width, or a row holding NaN or infinity (named).
    """
    check_width(matrix, dim, name=name)
    out: NDArray[np.float32]
    if matrix.dtype == np.float32:
        out = matrix.copy()
    else:
        with np.errstate(over="ignore"):  # values float32 cannot hold are refused below
            out = matrix.astype(np.float32)
    if out.shape[0] == 1:
        row = out[0].astype(np.float64)
        norm = math.sqrt(row @ row)
        if math.isfinite(norm):
            if norm > 0:
                out /= np.float32(norm)
            return out
    else:
        norms = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))[:, None]
        if np.isfinite(norms).all():
            np.divide(out, norms, out=out, where=norms > 0)
            return out
    check_finite(matrix, name=name)  # names the bad row
    too_big = np.abs(matrix).max(axis=1) > np.finfo(np.float32).max
    if too_big.any():  # finite float64 values that float32 cannot hold
        row = int(np.flatnonzero(too_big)[0])
        raise ValueError(f"{name} row {row} holds values beyond float32's range (3.4e38)")
    return prefix(matrix, matrix.shape[1])


_UNIT_SLACK = 2.0**-23
"""How far from 1 the norm of a row that is unit length to float32 precision can be: a row
this function scaled is within 0.8 x 2**-24 of it. Such a row is left as it is, so normalising
is idempotent and stored vectors added again (an index copied) keep every bit."""


def l2_normalize(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    """Scale each row (last axis) of a float32 array to unit L2 norm, in place; zero rows and
    rows already of unit norm (to float32 precision) stay as they are."""
    if matrix.ndim == 2 and matrix.shape[0] == 1:  # one query: a dot product, no temporaries
        row = matrix[0]
        squared = float(np.dot(row, row))
        if 0.0 < squared < math.inf and abs(squared - 1.0) > 4 * _UNIT_SLACK:
            row *= np.float32(1.0 / math.sqrt(squared))
            return matrix
    norms = np.sqrt(np.einsum("...i,...i->...", matrix, matrix, dtype=np.float64))[..., None]
    scaled = (norms > 0) & (np.abs(norms - 1.0) > _UNIT_SLACK)
    np.divide(matrix, norms, out=matrix, where=scaled, casting="unsafe")
    return matrix


def prefix(
    matrix: NDArray[Any], dim: int, out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """The first ``dim`` columns of each row, renormalised to unit length, as float32.

    The unchecked primitive behind :func:`truncate` and every stage of the index: no validation,
    one copy. ``matrix`` may have any number of leading axes; the last one is sliced.

    Args:
        matrix: A float array ``[..., D]`` with ``D >= dim``.
        dim: Number of leading dimensions to keep.
        out: A float32 array ``[..., dim]`` to write into (it may be ``matrix`` itself when
            ``dim == D``); a new array when omitted.

    Returns:
        ``out``, holding the renormalised prefixes.

    Example:
        >>> import numpy as np
        >>> prefix(np.array([[3.0, 4.0, 12.0]]), 2)
        array([[0.6, 0.8]], dtype=float32)
    """
    if out is None:
        out = np.array(matrix[..., :dim], dtype=np.float32, copy=True)
    elif out is not matrix:
        np.copyto(out, matrix[..., :dim], casting="same_kind")
    return l2_normalize(out)


def prefix_tensor(tensor: Any, dim: int) -> Any:
    """The torch twin of :func:`prefix`: the renormalised first ``dim`` entries of the last axis.

    Works on any device and keeps autograd; torch is imported only by the caller's tensor.
    """
    import torch.nn.functional as functional

    return functional.normalize(tensor[..., :dim], dim=-1)


def truncate(vectors: ArrayLike, dim: int, *, normalize: bool = True) -> NDArray[np.float32]:
    """Keep the first ``dim`` dimensions of Matryoshka embeddings, renormalised to unit length.

    This is :func:`prefix` with its input checked; encoders, indexes and evaluators all go
    through one of the two, so a prefix means the same thing everywhere.

    Args:
        vectors: One vector ``[D]`` or a batch ``[n, D]`` of float16, float32 or float64 values
            (a NumPy array or nested lists).
        dim: Number of leading dimensions to keep, an int from 1 to ``D``.
        normalize: Rescale each truncated row to unit L2 norm (all-zero rows stay zero). With
            ``False`` the prefix is returned as it is.

    Returns:
        A new float32 array of shape ``[dim]`` for a 1-D input or ``[n, dim]`` for a batch.

    Raises:
        ValueError: If ``dim`` is not an int in ``1..D``, or a row holds NaN or infinity.
        TypeError: If ``vectors`` is not numeric.

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import truncate
        >>> truncate(np.array([3.0, 4.0, 12.0]), 2)
        array([0.6, 0.8], dtype=float32)
    """
    matrix, single = as_float_matrix(vectors)
    full_dim = matrix.shape[1]
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise ValueError(
            f"dim must be an int between 1 and the vectors' dimension {full_dim}, "
            f"got {dim!r} of type {type(dim).__name__}"
        )
    if not 1 <= dim <= full_dim:
        raise ValueError(
            f"dim={dim} is out of range: it must be between 1 and the vectors' dimension {full_dim}"
        )
    check_finite(matrix)
    if normalize:
        out = prefix(matrix, int(dim))
    else:
        out = np.array(matrix[:, : int(dim)], dtype=np.float32, copy=True)
    return out[0] if single else out
