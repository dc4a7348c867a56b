"""Which module implements the coarse stage of each backend; the only place that maps names."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["coarse_stage_class", "engine_class"]

_COARSE = {
    "exact": ("faiss_coarse", "FaissCoarse"),
    "hnsw": ("faiss_coarse", "FaissCoarse"),
    "chroma": ("chroma_coarse", "ChromaCoarse"),
}


def coarse_stage_class(backend: str) -> Any:
    """The class implementing :class:`~.stores.CoarseStage` for ``backend`` (with ``create``
    and ``open`` class methods), imported when first needed."""
    module, name = _COARSE[backend]
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


_ENGINES = {"postgres": ("postgres", "PostgresEngine")}


def engine_class(backend: str) -> type[Engine]:
    """The engine that holds an index of ``backend``: a server backend's own (PostgreSQL keeps
    every store in one table), else the local :class:`~.engine.Engine`."""
    module, name = _ENGINES.get(backend, ("engine", "Engine"))
    cls: type[Engine] = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    return cls
