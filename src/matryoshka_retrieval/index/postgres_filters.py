"""The old home of :func:`compile_pg_filter`, kept so that its import path keeps working."""

from __future__ import annotations

from .postgres.filters import compile_pg_filter

__all__ = ["compile_pg_filter"]
