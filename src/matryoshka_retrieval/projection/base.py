"""The :class:`Projection` itself: a map applied to full vectors before truncation, with its
optional residual MLP; applied, fingerprinted, recorded in a manifest and saved to ``.npz``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..truncation import as_float_matrix, check_finite, l2_normalize

__all__ = ["Projection", "Residual"]

_RESIDUAL_NAMES = ("w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class Residual:
    """The residual MLP of an ``adapter`` projection: ``y + relu(y @ w1 + b1) @ w2 + b2``.

    Attributes:
        w1: ``[dim, hidden]`` input weights.
        b1: ``[hidden]`` input bias.
        w2: ``[hidden, dim]`` output weights.
        b2: ``[dim]`` output bias.
    """

    w1: NDArray[np.float32]
    b1: NDArray[np.float32]
    w2: NDArray[np.float32]
    b2: NDArray[np.float32]

    def __call__(self, y: NDArray[np.float32]) -> NDArray[np.float32]:
        hidden = np.maximum(y @ self.w1 + self.b1, 0)
        return np.asarray(y + hidden @ self.w2 + self.b2, dtype=np.float32)

    def arrays(self) -> dict[str, NDArray[np.float32]]:
        """The four arrays by name (``residual_w1``, ...), as saved."""
        return {f"residual_{name}": getattr(self, name) for name in _RESIDUAL_NAMES}

    def scaled(self, alpha: float) -> Residual:
        """The same MLP with its output (``w2``, ``b2``) multiplied by ``alpha``."""
        return Residual(
            self.w1,
            self.b1,
            (self.w2 * alpha).astype(np.float32),
            (self.b2 * alpha).astype(np.float32),
        )


@dataclass
class Projection:
    """A map applied to full vectors before truncation.

    Attributes:
        method: ``pca``, ``learned`` or ``adapter``.
        rotation: Orthogonal ``[dim, dim]`` matrix applied as ``vectors @ rotation``.
        info: What it was fitted on, for the record.
        residual: The residual MLP applied after the rotation (``adapter`` only).

    Example:
        >>> import numpy as np
        >>> flip = Projection("pca", np.eye(4, dtype=np.float32)[::-1].copy())
        >>> [round(float(v), 2) for v in flip.apply([3.0, 0.0, 0.0, 4.0])]
        [0.8, 0.0, 0.0, 0.6]
    """

    method: str
    rotation: NDArray[np.float32]
    info: dict[str, Any] = field(default_factory=dict)
    residual: Residual | None = None

    @property
    def dim(self) -> int:
        """Dimension of the vectors the projection takes and returns."""
        return int(self.rotation.shape[0])

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the parameters: two projections with equal fingerprints map alike."""
        digest = hashlib.sha256(self.method.encode())
        digest.update(np.ascontiguousarray(self.rotation).tobytes())
        if self.residual is not None:  # a rotation alone keeps the fingerprint it always had
            for array in self.residual.arrays().values():
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def apply(self, vectors: ArrayLike) -> NDArray[np.float32]:
        """Map full vectors ``[n, dim]`` (or one ``[dim]``); returns unit-norm float32 rows."""
        matrix, single = as_float_matrix(vectors)
        if matrix.shape[1] != self.dim:
            raise ValueError(
                f"vectors have {matrix.shape[1]} dims but this projection maps {self.dim}-dim "
                "vectors"
            )
        check_finite(matrix)
        x = l2_normalize(np.array(matrix, dtype=np.float32, copy=True)) @ self.rotation
        if self.residual is not None:
            x = self.residual(x)
        out = l2_normalize(np.ascontiguousarray(x, dtype=np.float32))
        return out[0] if single else out

    def to_manifest(self) -> dict[str, Any]:
        """What an index manifest records about the projection."""
        return {"method": self.method, "dim": self.dim, "fingerprint": self.fingerprint}

    def save(self, path: str | Path | IO[bytes]) -> None:
        """Write to ``.npz`` (arrays and a JSON header; nothing pickled)."""
        version = 1 if self.residual is None else 2
        header = {"method": self.method, "info": self.info, "format_version": version}
        arrays = {"rotation": self.rotation, "header": np.array(json.dumps(header))}
        if self.residual is not None:
            arrays.update(self.residual.arrays())
        if not isinstance(path, (str, Path)):
            np.savez(path, **arrays)  # type: ignore[arg-type]
            return
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path | IO[bytes]) -> Projection:
        """Read a projection written by :meth:`save`.

        Raises:
            ValueError: If the file is not a projection of this library.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                rotation = data["rotation"].astype(np.float32)
                residual = None
                if "residual_w1" in data:
                    residual = Residual(
                        *(data[f"residual_{n}"].astype(np.float32) for n in _RESIDUAL_NAMES)
                    )
        except (KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a saved projection: {exc}") from exc
        return cls(header["method"], rotation, header.get("info", {}), residual)
