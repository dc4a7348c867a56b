"""The backends: which engine and coarse stage serve each name, and what each can do.

This is the only place that knows backend names. Everything else asks it: the configuration
which precisions a backend takes, the facade which runtime options it accepts and where it
persists, the rotation and the tuner whether they reach it. A setting a backend does not
honour is refused here, naming the backend and the setting.

Example:
    >>> spec("postgres").capabilities.persists
    'server'
    >>> [name for name in names() if spec(name).capabilities.rotation]
    ['exact', 'hnsw', 'postgres']
    >>> spec("postgres").capabilities.trial_stages
    'server'
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BackendSpec",
    "Capabilities",
    "check_options",
    "check_settings",
    "check_precision",
    "coarse_stage_class",
    "engine_class",
    "for_location",
    "names",
    "spec",
]


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports.

    Attributes:
        precisions: Coarse precisions it can index.
        beam: Its coarse stage is a graph walked with a beam that ``ef_search`` sets, so the
            beam as well as the shortlist limits recall (the tuner sets both).
        rotation: It can index prefixes of a coarse rotation (``coarse_rotation=``).
        tunable: :meth:`MatryoshkaIndex.tune` can measure and set its funnel.
        builds_stages: ``tune(coarse=...)`` can build trial coarse stages of this kind from the
            stored vectors, in this process.
        trial_stages: Where ``tune(coarse=...)`` builds the trial stages of an index of this
            backend: ``"process"`` (of the backends that build stages in this process) or
            ``"server"`` (of this backend, on its server, from the stored vectors there).
        adaptive: Its search honours ``adaptive_margin`` (the tuner tries the adaptive rule).
        exact_scan: It honours ``exact_below`` (small indexes are scanned exactly).
        exact_scan_floats: ``exact_below="auto"`` scans exactly while the full vectors hold at
            most this many floats: where a scan costs about what the funnel does. In process a
            BLAS scan of 16 MiB does; a scan in SQL costs about 4 us a row of 384 dims (50
            queries/s over the 5,322 man pages), so on a server a few hundred rows do.
        persists: ``"folder"``: kept in this process and written by ``save(path)``;
            ``"server"``: every write is committed on a server, reopened by name.
        options: The runtime options (clients, connections) it takes besides the config.
        settings: The optional settings it honours (any other, set to other than its default,
            is refused rather than stored and ignored): the constructor's, and
            ``adaptive_margin`` (which ``tune`` sets and ``copy_index`` carries).
        location: For a server backend, how a location names it: URI schemes, and the
            option that names the index on the server (``load(dsn, table=...)``).
        precision_hints: Why a precision it does not take is refused (for the error).
    """

    precisions: tuple[str, ...]
    beam: bool = False
    rotation: bool = False
    tunable: bool = False
    builds_stages: bool = False
    trial_stages: Literal["process", "server"] = "process"
    adaptive: bool = True
    exact_scan: bool = True
    exact_scan_floats: int = 1 << 22
    persists: Literal["folder", "server"] = "folder"
    options: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    location: tuple[tuple[str, ...], str] | None = None
    precision_hints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendSpec:
    """One backend: its engine, its coarse stage (for an engine that holds one) and its
    capabilities."""

    name: str
    engine: tuple[str, str]
    coarse: tuple[str, str] | None
    capabilities: Capabilities


_LOCAL_ENGINE = ("engine", "LocalEngine")
_LOCAL_RERANK = ("torch_dtype", "max_resident_bytes")
_GRAPH = ("hnsw_m", "ef_construction", "ef_search")
_HALFVEC = {"float16": "is a halfvec prefix index of backend='postgres'"}

_REGISTRY: dict[str, BackendSpec] = {
    spec_.name: spec_
    for spec_ in (
        *(
            BackendSpec(
                name,
                _LOCAL_ENGINE,
                ("faiss_coarse", "FaissCoarse"),  # flat scan or HNSW graph, by the name
                Capabilities(
                    ("float32", "int8", "binary"),
                    beam=graph,
                    rotation=True,
                    tunable=True,
                    builds_stages=True,
                    settings=(
                        "exact_below",
                        "adaptive_margin",
                        "calibration",
                        *(_GRAPH if graph else ()),
                        *_LOCAL_RERANK,
                    ),
                    precision_hints=_HALFVEC,
                ),
            )
            for name, graph in (("exact", False), ("hnsw", True))
        ),
        BackendSpec(
            "chroma",
            _LOCAL_ENGINE,
            ("chroma_coarse", "ChromaCoarse"),
            Capabilities(
                ("float32",),
                tunable=True,
                options=("chroma_client",),
                settings=("collection", "exact_below", "adaptive_margin", *_LOCAL_RERANK),
                precision_hints={
                    **_HALFVEC,
                    "int8": "is not supported: backend='chroma' stores float32 prefixes",
                    "binary": "is not supported: backend='chroma' stores float32 prefixes",
                },
            ),
        ),
        BackendSpec(
            "postgres",
            ("postgres", "PostgresEngine"),
            None,
            Capabilities(
                ("float32", "float16", "binary"),
                beam=True,
                rotation=True,
                tunable=True,
                trial_stages="server",
                adaptive=False,
                persists="server",
                exact_scan_floats=1 << 17,
                options=("dsn", "table", "timeout"),
                settings=("exact_below", *_GRAPH),
                location=(("postgresql://", "postgres://"), "table"),
                precision_hints={"int8": "has no pgvector index type"},
            ),
        ),
    )
}


def names() -> tuple[str, ...]:
    """Every backend name, in the order they are documented."""
    return tuple(_REGISTRY)


def spec(backend: str) -> BackendSpec:
    """The registry entry of ``backend``.

    Raises:
        ValueError: For a name that is not a backend (naming the choices).
    """
    try:
        return _REGISTRY[backend]
    except (KeyError, TypeError):
        raise ValueError(
            f"backend={backend!r:.60} is not supported; choose one of {names()}"
        ) from None


def check_precision(backend: str, precision: str) -> None:
    """Raise if ``backend`` cannot index ``precision`` (naming both and what it takes)."""
    caps = spec(backend).capabilities
    if precision in caps.precisions:
        return
    hint = caps.precision_hints.get(precision, f"is not supported by backend={backend!r}")
    takes = " or ".join(repr(p) for p in caps.precisions)
    raise ValueError(f"precision={precision!r} {hint}; backend={backend!r} takes precision {takes}")


def check_options(backend: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime options of ``backend`` from ``given`` (those set, i.e. not ``None``).

    Raises:
        ValueError: For an option set that ``backend`` does not take, naming the option, the
            backend that takes it and this one.
    """
    accepted = spec(backend).capabilities.options
    foreign = [name for name, value in given.items() if value is not None and name not in accepted]
    if foreign:
        owners = sorted(
            {b for b in _REGISTRY if set(foreign) & set(_REGISTRY[b].capabilities.options)}
        )
        owner = " or ".join(f"backend={b!r}" for b in owners) or "no backend"
        listed = " and ".join(f"{name}=" for name in foreign)
        verb = "is" if len(foreign) == 1 else "are"
        raise ValueError(f"{listed} {verb} for {owner}; this index has backend={backend!r}")
    return {name: given.get(name) for name in accepted}


def for_location(location: Any, options: Mapping[str, Any]) -> BackendSpec | None:
    """The server backend a ``load`` location names (a URI of its scheme, or any location with
    the option that names its index), or ``None`` for a folder."""
    for entry in _REGISTRY.values():
        named = entry.capabilities.location
        if named is None:
            continue
        schemes, option = named
        if option in options or (isinstance(location, str) and location.startswith(schemes)):
            return entry
    return None


def check_settings(backend: str, given: Mapping[str, Any]) -> None:
    """Refuse a setting in ``given`` (those set to other than their default) that ``backend``
    does not honour, naming the setting, its value and the backends that take it.

    Example:
        >>> check_settings("exact", {"ef_search": 64})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: backend='exact' does not use ef_search= (got 64): leave it out, or use ...
    """
    honoured = spec(backend).capabilities.settings
    for name, value in given.items():
        if name not in honoured:
            takers = [b for b in _REGISTRY if name in _REGISTRY[b].capabilities.settings]
            raise ValueError(
                f"backend={backend!r} does not use {name}= (got {value!r:.40}): leave it out, "
                f"or use backend {' or '.join(map(repr, takers))}"
            )


def _load(where: tuple[str, str]) -> Any:
    module, name = where
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def coarse_stage_class(backend: str) -> Any:
    """The class implementing :class:`~.stores.CoarseStage` for ``backend`` (with ``create``
    and ``open`` class methods), imported when first needed.

    Raises:
        ValueError: For a backend whose engine holds no coarse stage of its own.
    """
    where = spec(backend).coarse
    if where is None:
        raise ValueError(
            f"backend={backend!r} keeps its prefix index on its server: it has no coarse stage "
            "this process can build"
        )
    return _load(where)


def engine_class(backend: str) -> Any:
    """The engine class that holds an index of ``backend`` (imported when first needed)."""
    return _load(spec(backend).engine)
