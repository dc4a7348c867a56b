"""The coarse rotation: which indexes may have one, and what it may be."""

from __future__ import annotations

from typing import Any

from . import backends
from .config import IndexConfig

__all__ = ["ROTATING_BACKENDS", "check_rotation"]

ROTATING_BACKENDS = tuple(
    name for name in backends.names() if backends.spec(name).capabilities.rotation
)
"""Backends that can index prefixes of a coarse rotation (their ``rotation`` capability)."""


def check_rotation(rotation: Any, config: IndexConfig, dim: int | None) -> Any:
    """``rotation`` (``None``, ``"pca"`` or an orthogonal ``Projection``) if ``config`` can
    use it.

    Raises:
        ValueError: For another value, a projection with an adapter or of another dim, an
            exact index, a cascade or a backend that is not in :data:`ROTATING_BACKENDS`.
    """
    from ..projection import Projection

    if rotation is None:
        return None
    if rotation != "pca" and not isinstance(rotation, Projection):
        raise ValueError(
            f"coarse_rotation must be None, 'pca' or a fitted Projection, got {rotation!r:.60}"
        )
    if isinstance(rotation, Projection):
        if rotation.residual is not None:
            raise ValueError(
                f"coarse_rotation takes a rotation; this projection ({rotation.method}) also "
                "has a residual adapter"
            )
        if dim is not None and rotation.dim != dim:
            raise ValueError(
                f"coarse_rotation maps {rotation.dim}-dim vectors but this index stores "
                f"{dim}-dim vectors"
            )
    if config.coarse_dim is None:
        raise ValueError("coarse_rotation needs a coarse stage: this index is exact")
    if config.stages:
        raise ValueError(
            f"coarse_rotation rotates the coarse stage only; the middle stages of "
            f"stages={list(config.stages)} read the stored prefixes: use two stages"
        )
    if not backends.spec(config.backend).capabilities.rotation:
        raise ValueError(
            f"coarse_rotation works with backend in {ROTATING_BACKENDS}, not "
            f"backend={config.backend!r}"
        )
    return rotation
