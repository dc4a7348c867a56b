"""Opening a saved index: a folder, or an index on a server, becomes an engine."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import backends
from .engine import LocalEngine
from .protocol import Engine, EngineSettings

__all__ = ["LOAD_OPTIONS", "open_engine"]

LOAD_OPTIONS = ("ef_search", "torch_dtype", "max_resident_bytes")
"""The settings ``load`` takes as keywords besides its own arguments."""


def _folder_options(options: dict[str, Any], full_vectors: str) -> str:
    """Apply the deprecated ``mmap=`` spelling of 0.1; refuse unknown options."""
    if "mmap" in options:  # the 0.1 spelling: mapped and read with pread, or in RAM
        mmap = options.pop("mmap")
        warnings.warn(
            "load(mmap=...) is deprecated: use full_vectors='pread', 'mmap' or 'ram'",
            DeprecationWarning,
            stacklevel=4,
        )
        if mmap is not None:
            full_vectors = "pread" if mmap else "ram"
    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise TypeError(f"load() got unexpected options {unknown}; it takes {LOAD_OPTIONS}")
    return full_vectors


def open_engine(
    path: str | os.PathLike[str],
    *,
    full_vectors: str,
    verify: bool,
    settings: EngineSettings,
    options: dict[str, Any],
) -> Engine:
    """The engine of the index at ``path``: a folder given to ``save``, or a server location
    with the option naming the index (``load(dsn, table=...)``).

    Raises:
        FileNotFoundError: If there is no index there.
        IndexCorruptedError: If its files or its manifest are damaged.
        ValueError: For a setting the backend does not honour (naming both).
    """
    options = dict(options)
    server = backends.for_location(path, options)
    if server is not None:
        engine: Engine = backends.engine_class(server.name).open(
            path, settings, full_vectors=full_vectors, verify=verify, options=options
        )
        return engine
    full_vectors = _folder_options(options, full_vectors)
    runtime = {name: options.pop(name) for name in LOAD_OPTIONS[1:] if name in options}
    overrides = {name: options[name] for name in ("ef_search",) if name in options}
    settings = replace(settings, **runtime)
    return LocalEngine.open(
        Path(path), settings, full_vectors=full_vectors, verify=verify, overrides=overrides
    )
