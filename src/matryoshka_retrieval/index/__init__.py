"""The coarse-to-fine index: prefix search, cascade stages, exact full-dim rescoring."""

from __future__ import annotations

from .filters import Filter, compile_filter
from .hits import Hit, Hits, Record
from .index import MatryoshkaIndex, UnknownIdError
from .manifest import IndexCorruptedError, Manifest

__all__ = [
    "Filter",
    "Hit",
    "Hits",
    "IndexCorruptedError",
    "Manifest",
    "MatryoshkaIndex",
    "Record",
    "UnknownIdError",
    "compile_filter",
]
