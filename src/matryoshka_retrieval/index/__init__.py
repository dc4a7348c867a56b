"""The coarse-to-fine index: prefix search, cascade stages, exact full-dim rescoring."""

from __future__ import annotations

from .config import Backend, CoarsePrecision, IndexConfig
from .copying import copy_index
from .filters import Filter, compile_filter
from .hits import Hit, Hits, Record
from .index import MatryoshkaIndex, UnknownIdError
from .manifest import IndexCorruptedError, Manifest

__all__ = [
    "Backend",
    "CoarsePrecision",
    "Filter",
    "Hit",
    "Hits",
    "IndexConfig",
    "IndexCorruptedError",
    "Manifest",
    "MatryoshkaIndex",
    "Record",
    "UnknownIdError",
    "compile_filter",
    "copy_index",
]
