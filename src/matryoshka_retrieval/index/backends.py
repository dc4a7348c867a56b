"""Which module implements the coarse stage of each backend; the only place that maps names."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["coarse_stage_class"]

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
