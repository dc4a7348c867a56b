"""Scalar (int8 / uint8) and binary quantization of embeddings, with reusable calibration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .truncation import as_float_matrix, check_finite

__all__ = [
    "Calibration",
    "Precision",
    "bytes_per_vector",
    "calibrate",
    "dequantize",
    "int8_scores",
    "quantize",
]

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_LEVELS = 255  # an 8-bit code has 256 values, so 255 steps between the calibrated bounds


@dataclass(frozen=True)
class Calibration:
    """Per-dimension value ranges that map floats to 8-bit codes.

    Compute it once from a representative sample (:func:`calibrate`), store it with
    :meth:`to_dict` (plain JSON, fit for an index manifest) and pass the same object to every
    :func:`quantize` call so that codes made at different times are comparable.

    Attributes:
        lower: Float32 array ``[dim]``: the value that maps to the lowest code.
        upper: Float32 array ``[dim]``: the value that maps to the highest code.

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import calibrate, quantize
        >>> sample = np.random.default_rng(0).normal(size=(1000, 8))
        >>> cal = calibrate(sample)
        >>> codes = quantize(sample[:5], "int8", calibration=cal)
        >>> codes.dtype, codes.shape
        (dtype('int8'), (5, 8))
        >>> type(cal).from_dict(cal.to_dict()) == cal
        True
    """

    lower: NDArray[np.float32]
    upper: NDArray[np.float32]

    def __post_init__(self) -> None:
        lower = np.asarray(self.lower, dtype=np.float32).reshape(-1)
        upper = np.asarray(self.upper, dtype=np.float32).reshape(-1)
        if lower.shape != upper.shape or lower.size == 0:
            raise ValueError(
                f"calibration bounds must be two non-empty vectors of one length, got lower "
                f"{lower.shape} and upper {upper.shape}"
            )
        if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
            raise ValueError("calibration bounds must be finite")
        if (upper < lower).any():
            dim = int(np.flatnonzero(upper < lower)[0])
            raise ValueError(
                f"calibration upper bound {upper[dim]} is below lower bound {lower[dim]} "
                f"at dimension {dim}"
            )
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)

    @property
    def dim(self) -> int:
        """Number of dimensions the calibration covers."""
        return int(self.lower.shape[0])

    @property
    def step(self) -> NDArray[np.float32]:
        """Width of one code step per dimension (never zero)."""
        width = self.upper - self.lower
        return np.where(width > 0, width / _LEVELS, np.float32(1.0)).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain-JSON form: ``{"lower": [...], "upper": [...]}``."""
        return {"lower": self.lower.tolist(), "upper": self.upper.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild a calibration from :meth:`to_dict` output."""
        missing = {"lower", "upper"} - set(data)
        if missing:
            raise ValueError(f"calibration dict lacks {sorted(missing)}; it has {sorted(data)}")
        return cls(lower=np.asarray(data["lower"]), upper=np.asarray(data["upper"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return bool(
            np.array_equal(self.lower, other.lower) and np.array_equal(self.upper, other.upper)
        )

    def __hash__(self) -> int:
        return hash((self.lower.tobytes(), self.upper.tobytes()))


def calibrate(vectors: ArrayLike, *, quantile: float = 1.0, symmetric: bool = False) -> Calibration:
    """Compute per-dimension ranges for int8 / uint8 quantization from a sample of embeddings.

    Args:
        vectors: A ``[n, dim]`` sample, ideally drawn from the corpus that will be quantized.
        quantile: Keep this central fraction of each dimension's values inside the range and clip
            the rest; ``1.0`` uses the minimum and maximum, ``0.999`` ignores the 0.05% extreme
            values at each end (a tighter range gives finer steps for the bulk of the values).
        symmetric: Use one range ``[-m, m]`` for every dimension, ``m`` the largest absolute
            value. Integer dot products of two such code vectors are then proportional to the
            float dot products, so choose it when queries are quantized too and scored with
            integer arithmetic. The default, a ``[min, max]`` range per dimension, gives finer
            steps; score it with :func:`int8_scores` (float queries against codes).

    Returns:
        A :class:`Calibration` to pass to :func:`quantize` and to store with the index.

    Raises:
        ValueError: If the sample is empty, holds NaN / infinity, or ``quantile`` is not in
            ``(0.5, 1.0]``.
    """
    matrix, _ = as_float_matrix(vectors)
    if matrix.shape[0] == 0:
        raise ValueError("cannot calibrate on an empty sample: pass at least one vector")
    if not 0.5 < quantile <= 1.0:
        raise ValueError(f"quantile={quantile} is out of range: it must be in (0.5, 1.0]")
    check_finite(matrix)
    if symmetric:
        bound = float(np.quantile(np.abs(matrix), quantile)) if quantile < 1.0 else 0.0
        bound = bound or float(np.abs(matrix).max())
        full = np.full(matrix.shape[1], bound, dtype=np.float32)
        return Calibration(lower=-full, upper=full)
    if quantile == 1.0:
        lower, upper = matrix.min(axis=0), matrix.max(axis=0)
    else:
        tail = (1.0 - quantile) / 2
        lower, upper = np.quantile(matrix, [tail, 1.0 - tail], axis=0)
    return Calibration(lower=lower, upper=upper)


def _as_calibration(calibration: Calibration | Mapping[str, Any]) -> Calibration:
    if isinstance(calibration, Calibration):
        return calibration
    if isinstance(calibration, Mapping):
        return Calibration.from_dict(calibration)
    raise TypeError(
        f"calibration must be a Calibration or its to_dict() form, got {type(calibration).__name__}"
    )


def quantize(
    vectors: ArrayLike,
    precision: Precision,
    *,
    calibration: Calibration | Mapping[str, Any] | None = None,
) -> NDArray[Any]:
    """Quantize embeddings to 8-bit scalar codes or packed sign bits.

    Args:
        vectors: One vector ``[dim]`` or a batch ``[n, dim]``.
        precision: ``"float32"`` (a float32 copy), ``"int8"`` (codes -128..127), ``"uint8"``
            (codes 0..255), ``"binary"`` (sign bits packed 8 to a byte, stored as int8 offset by
            -128) or ``"ubinary"`` (the same bits as uint8). Binary output has ``ceil(dim / 8)``
            bytes per vector; a positive value gives a 1 bit.
        calibration: For int8 / uint8: the ranges from :func:`calibrate` (or their ``to_dict()``
            form). Reuse one calibration for a corpus and its queries; without one, ranges are
            computed from ``vectors`` themselves, which is only right for a one-off batch.

    Returns:
        The codes, with the same leading shape as the input (1-D in, 1-D out).

    Raises:
        ValueError: For an unknown precision, NaN / infinity, or a calibration of another dim.

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import quantize
        >>> quantize(np.array([0.5, -0.1, 0.2, -0.7, 0.1, 0.3, -0.2, 0.9, 0.4]), "ubinary")
        array([173, 128], dtype=uint8)
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {PRECISIONS}")
    matrix, single = as_float_matrix(vectors)
    check_finite(matrix)
    out: NDArray[Any]
    if precision == "float32":
        out = np.array(matrix, dtype=np.float32, copy=True)
    elif precision in ("binary", "ubinary"):
        packed = np.packbits(matrix > 0, axis=-1)
        out = packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    else:
        cal = _as_calibration(calibration) if calibration is not None else calibrate(matrix)
        if cal.dim != matrix.shape[1]:
            raise ValueError(
                f"calibration covers {cal.dim} dimensions but the vectors have {matrix.shape[1]}"
            )
        levels = np.rint((matrix.astype(np.float32) - cal.lower) / cal.step)
        levels = np.clip(levels, 0, _LEVELS)
        out = (levels - 128).astype(np.int8) if precision == "int8" else levels.astype(np.uint8)
    return out[0] if single else out


def dequantize(
    codes: ArrayLike,
    precision: Literal["int8", "uint8"],
    *,
    calibration: Calibration | Mapping[str, Any],
) -> NDArray[np.float32]:
    """Map int8 / uint8 codes back to approximate float32 values (the centre of each step).

    Scoring float queries against dequantized codes ranks like scoring against the original
    vectors, up to the quantization error of half a step per dimension.

    Raises:
        ValueError: For a precision other than int8 / uint8 or a calibration of another dim.
    """
    if precision not in ("int8", "uint8"):
        raise ValueError(f"dequantize supports 'int8' and 'uint8', got precision={precision!r}")
    cal = _as_calibration(calibration)
    array = np.asarray(codes)
    if array.shape[-1] != cal.dim:
        raise ValueError(
            f"codes have {array.shape[-1]} dimensions but the calibration covers {cal.dim}"
        )
    levels = array.astype(np.float32)
    if precision == "int8":
        levels += 128
    return (cal.lower + levels * cal.step).astype(np.float32)


def int8_scores(
    queries: ArrayLike,
    codes: ArrayLike,
    precision: Literal["int8", "uint8"] = "int8",
    *,
    calibration: Calibration | Mapping[str, Any],
) -> NDArray[np.float32]:
    """Dot products of float queries with 8-bit codes, computed on the codes.

    Equal to ``queries @ dequantize(codes).T`` without building the dequantized matrix: the
    query is scaled by the step size once, then multiplied with the codes. This is asymmetric
    scoring: only the stored side loses precision, so the ranking stays close to float scoring.

    Args:
        queries: ``[dim]`` or ``[m, dim]`` float queries.
        codes: ``[n, dim]`` codes from :func:`quantize` with the same calibration.
        precision: The codes' precision, ``"int8"`` or ``"uint8"``.
        calibration: The calibration the codes were made with.

    Returns:
        Float32 scores ``[m, n]`` (``[n]`` for a 1-D query).

    Raises:
        ValueError: If the dims of queries, codes and calibration differ.
    """
    if precision not in ("int8", "uint8"):
        raise ValueError(f"int8_scores supports 'int8' and 'uint8', got precision={precision!r}")
    cal = _as_calibration(calibration)
    matrix, single = as_float_matrix(queries, name="queries")
    code_matrix = np.asarray(codes)
    if code_matrix.ndim != 2 or code_matrix.shape[1] != cal.dim or matrix.shape[1] != cal.dim:
        raise ValueError(
            f"queries have {matrix.shape[1]} dimensions and codes have shape "
            f"{code_matrix.shape}, but the calibration covers {cal.dim} dimensions"
        )
    query = matrix.astype(np.float32)
    offset = cal.lower + (128.0 if precision == "int8" else 0.0) * cal.step
    scores: NDArray[np.float32] = (query * cal.step) @ code_matrix.astype(np.float32).T
    scores += (query @ offset)[:, None]
    return scores[0] if single else scores


def bytes_per_vector(dim: int, precision: Precision) -> int:
    """Bytes one vector of ``dim`` dimensions takes at ``precision``.

    Example:
        >>> [bytes_per_vector(768, p) for p in ("float32", "int8", "binary")]
        [3072, 768, 96]
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {PRECISIONS}")
    if precision == "float32":
        return 4 * dim
    if precision in ("int8", "uint8"):
        return dim
    return (dim + 7) // 8
