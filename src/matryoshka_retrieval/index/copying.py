"""Copying an index to another place: a saved folder to a PostgreSQL table, a table to a folder
(and folder to folder, table to table).

The copy reads the stored records and full vectors, so it needs no encoder: every live record
in insertion order (ids, texts, metadata, full vectors), the configuration with its tuned
settings, the model name and the coarse rotation. A folder is written once, at the end; a
table this call made is dropped again if the copy fails, so a failed copy leaves no
half-written destination behind.

Example:
    >>> from matryoshka_retrieval import copy_index
    >>> copy_index("my-index", DSN, table="docs")  # doctest: +SKIP
    MatryoshkaIndex(n=2000, dim=384, ...)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from .._validation import positive_int
from ..quantization import Calibration
from . import backends
from .config import DEFAULTS, UNSET, IndexConfig
from .index import MatryoshkaIndex

if TYPE_CHECKING:
    from ..projection import Projection

__all__ = ["copy_index"]

logger = logging.getLogger(__name__)

OVERRIDES = (*(f.name for f in fields(IndexConfig)), "coarse_rotation")
"""The settings a copy may change: the configuration's, and the coarse rotation."""

_PART_SETTINGS = ("hnsw_m", "ef_construction", "ef_search", "collection")
"""Settings of a part that a backend may not have (an HNSW graph, a Chroma collection): where
the destination has no such part, the copy leaves them at their defaults (they change nothing
there); any other setting the destination backend does not honour is refused."""


@dataclass(frozen=True)
class _Place:
    """Where an index is: a folder, or an index named ``name`` on a server (``server``)."""

    location: Any
    name: str | None
    server: backends.BackendSpec | None

    @classmethod
    def of(cls, location: Any, name: str | None, option: str) -> _Place:
        """The place of ``location`` (with ``name``, given as ``option``).

        Raises:
            ValueError: For a server location without a name, or a name with a folder.
            TypeError: For a location that is neither a path nor a str.
        """
        if not isinstance(location, (str, os.PathLike)):
            raise TypeError(
                f"an index's location is a folder path or a PostgreSQL DSN, got "
                f"{type(location).__name__}"
            )
        server = backends.for_location(location, {} if name is None else {"table": name})
        if server is None:
            return cls(Path(location), None, None)
        if not isinstance(location, str) or Path(location).exists():
            raise ValueError(
                f"{option}={name!r} names an index on a server, but {str(location)!r} is a path: "
                "give the server's DSN as a str, or leave the table out for a folder"
            )
        if not isinstance(name, str):
            raise ValueError(
                f"the {'source' if option.startswith('source') else 'destination'} is a "
                f"{server.name} DSN: name its table with {option}=..., got {name!r}"
            )
        return cls(location, name, server)

    def __str__(self) -> str:
        if self.server is None:
            return f"folder {str(self.location)!r}"
        return f"{self.server.name} table {self.name!r}"  # never the DSN: it may hold a password

    def same_as(self, other: _Place) -> bool:
        """Whether both name one index (the same folder, or one table at one DSN)."""
        if (self.server is None) != (other.server is None):
            return False
        if self.server is None:
            return bool(Path(self.location).resolve() == Path(other.location).resolve())
        return bool(self.location == other.location and self.name == other.name)

    def open(self, chroma_client: Any) -> MatryoshkaIndex:
        """The index here, opened to be read."""
        if self.server is not None:
            return MatryoshkaIndex.load(self.location, table=self.name)
        return MatryoshkaIndex.load(
            self.location, device="cpu", rerank="numpy", chroma_client=chroma_client
        )

    def check_free(self) -> None:
        """Raise if an index, or anything else, is here already (nothing is written).

        Raises:
            ValueError: Naming the place and what it holds.
        """
        held = self._held()
        if held:
            raise ValueError(
                f"the destination {self} {held}; a copy goes to a new place: choose another "
                "(nothing was written)"
            )

    def _held(self) -> str:
        if self.server is not None:
            try:
                self.open(None)._engine.close()
            except FileNotFoundError:
                return ""
            return "holds an index already"
        folder = Path(self.location)
        if folder.exists() and not folder.is_dir():
            return "is a file"
        if folder.is_dir() and any(folder.iterdir()):
            return "is not empty" + (
                " (it holds an index)" if (folder / "manifest.json").exists() else ""
            )
        return ""


@dataclass(frozen=True)
class _Plan:
    """What the destination is made with."""

    config: IndexConfig
    rotation: Any
    calibration: Calibration | None
    projection: Projection | None
    model_name: str | None
    dim: int | None

    def constructor_options(self) -> dict[str, Any]:
        """The ``MatryoshkaIndex`` arguments of :attr:`config` (but ``adaptive_margin``, which
        the constructor does not take)."""
        c = self.config
        return {
            "coarse_dim": c.coarse_dim,
            "stages": list(c.stages) or None,
            "rescore_multiplier": c.rescore_multiplier,
            "precision": c.precision,
            "backend": c.backend,
            "hnsw_m": c.hnsw_m,
            "ef_construction": c.ef_construction,
            "ef_search": c.ef_search,
            "collection": c.collection,
            "exact_below": c.exact_below,
            "coarse_rotation": self.rotation,
            "calibration": self.calibration,
        }


def copy_index(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    source_table: str | None = None,
    table: str | None = None,
    batch_size: int = 10_000,
    chroma_client: Any = None,
    **overrides: Any,
) -> MatryoshkaIndex:
    """Copy an index to a new place: a saved folder into a PostgreSQL table, a table into a
    folder, a folder to a folder or a table to a table.

    Every live record is copied in insertion order (ids, texts, metadata and full vectors,
    ``batch_size`` records at a time, so memory stays bounded), with the configuration
    (prefix dims, stages, precision, shortlist, ``exact_below``, ``adaptive_margin``, HNSW
    settings), the model name, the coarse rotation and, to a folder, a saved projection. No
    encoder is needed. Copy a source that no client is writing: records added during the copy
    are not copied, and one deleted during it fails the copy.

    The destination keeps the source's backend where it can: ``postgres`` on a server; in a
    folder the source's local backend, or ``exact`` for a source on a server. HNSW settings
    and a Chroma collection name are left at their defaults where the destination has no
    graph or collection; any other setting it does not take (``precision="int8"`` on
    PostgreSQL, an ``adaptive_margin`` there) is refused, naming the override to pass.

    Args:
        source: The index to copy: a folder given to ``save``, or a PostgreSQL DSN.
        destination: Where the copy goes: a new or empty folder, or a PostgreSQL DSN.
        source_table: The source's table name, for a source on PostgreSQL.
        table: The destination's table name, for a destination on PostgreSQL; the database
            must hold no index of that name.
        batch_size: Records read and written at a time (on PostgreSQL, one transaction each).
        chroma_client: The ``chromadb`` client of a source or destination with
            ``backend="chroma"``.
        **overrides: Settings to change in the copy: any :class:`IndexConfig` field
            (``precision="float16"``, ``backend="hnsw"``, ``rescore_multiplier=20``, ...) or
            ``coarse_rotation`` (``None``, ``"pca"`` or a fitted ``Projection``).

    Returns:
        The destination index, open (with no encoder: set ``index.encoder`` to search texts).

    Raises:
        ValueError: If the destination holds an index (or anything) already, is the source,
            cannot take a setting of the source (naming it and the override), or is a server
            and the source has a projection (which only a folder stores); nothing is written.
            A failure during the copy drops the table this call made, and is raised.
        TypeError: For an override that is not a setting.
        FileNotFoundError: If there is no index at ``source``.

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import MatryoshkaIndex, copy_index
        >>> index = MatryoshkaIndex(coarse_dim=16, rescore_multiplier=5)
        >>> ids = index.add_vectors(np.eye(64, dtype=np.float32), ids=[f"e{i}" for i in range(64)])
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     index.save(f"{folder}/original")
        ...     copy = copy_index(f"{folder}/original", f"{folder}/copy", backend="hnsw")
        ...     len(copy), copy.backend, copy.rescore_multiplier
        (64, 'hnsw', 5)
    """
    batch_size = positive_int("batch_size", batch_size)
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"copy_index() got unexpected settings {unknown}; it takes {OVERRIDES}")
    here = _Place.of(source, source_table, "source_table")
    there = _Place.of(destination, table, "table")
    if here.same_as(there):
        raise ValueError(f"the source and the destination are one index ({here}): nothing to copy")
    there.check_free()
    original = here.open(chroma_client)
    try:
        plan = _plan(original, here, there, overrides)
        return _write(original, plan, there, batch_size, chroma_client)
    finally:
        original._engine.close()


def _plan(source: MatryoshkaIndex, here: _Place, there: _Place, overrides: dict[str, Any]) -> _Plan:
    """The destination's settings: the source's, moved to the destination's backend, with the
    caller's ``overrides``.

    Raises:
        ValueError: For a setting the destination cannot take (naming it and the override), or
            a projection going to a server.
    """
    projection = source._engine.saved_projection
    if projection is not None and there.server is not None:
        raise ValueError(
            f"the {here} stores vectors that went through a projection ({projection.method}, "
            f"fingerprint {projection.fingerprint[:12]}), and every query must go through it "
            f"too; backend={there.server.name!r} does not store projections, so the copy would "
            "be searched with unprojected queries: keep this index in a folder (nothing was "
            "written)"
        )
    overrides = dict(overrides)
    backend = _backend(source, there, overrides.pop("backend", None))
    rotation = overrides.pop("coarse_rotation", source.coarse_rotation)
    config = _config(source.config, backend, overrides)
    return _Plan(
        config=config,
        rotation=rotation,
        calibration=_calibration(source, config, rotation),
        projection=projection,
        model_name=source.model_name,
        dim=source.dim,
    )


def _backend(source: MatryoshkaIndex, there: _Place, asked: str | None) -> str:
    """The destination's backend: ``asked``, or the source's where the destination keeps it."""
    if there.server is not None:
        if asked not in (None, there.server.name):
            raise ValueError(
                f"the destination {there} is a {there.server.name} index: backend={asked!r} "
                f"cannot be kept there; leave backend out (it is {there.server.name!r})"
            )
        return there.server.name
    if asked is None:
        kept = backends.spec(source.backend).capabilities.persists == "folder"
        return str(source.backend) if kept else DEFAULTS.backend
    if backends.spec(asked).capabilities.persists != "folder":
        raise ValueError(
            f"backend={asked!r} keeps its index on a server, but the destination is a "
            f"{there}: copy to a DSN with table=..."
        )
    return asked


def _config(config: IndexConfig, backend: str, overrides: dict[str, Any]) -> IndexConfig:
    """``config`` on ``backend`` with ``overrides`` (checked as a new index's)."""
    honoured = backends.spec(backend).capabilities.settings
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    for name in _PART_SETTINGS:
        if name not in honoured and values[name] != getattr(DEFAULTS, name):
            logger.info(
                "%s=%r is left at its default: backend=%r has no use for it",
                name,
                values[name],
                backend,
            )
            values[name] = getattr(DEFAULTS, name)
    kept = {**values, "backend": backend, **overrides}
    _check_precision(backend, kept["precision"], "precision" in overrides)
    margin = kept["adaptive_margin"]
    if margin is not None and "adaptive_margin" not in honoured:
        raise ValueError(
            f"adaptive_margin={margin!r} (the adaptive shortlist of the source's funnel) is "
            f"not applied by backend={backend!r}, which keeps a fixed shortlist of k x "
            f"rescore_multiplier: copy with adaptive_margin=None (matryoshka copy --set "
            f"adaptive_margin=none), and rescore_multiplier={kept['rescore_multiplier']} "
            "or another (nothing was written)"
        )
    stages = kept.pop("stages")
    coarse_dim = kept.pop("coarse_dim")
    if "stages" in overrides and stages and "coarse_dim" not in overrides:
        coarse_dim = UNSET  # the first stage's
    return IndexConfig.create(coarse_dim=coarse_dim, stages=stages or None, **kept)


def _check_precision(backend: str, precision: str, overridden: bool) -> None:
    """Refuse a precision ``backend`` cannot index, naming the override to pass."""
    try:
        backends.check_precision(backend, precision)
    except ValueError as exc:
        if overridden:
            raise
        takes = backends.spec(backend).capabilities.precisions
        other = "float16" if "float16" in takes else "float32"
        raise ValueError(
            f"the copy cannot keep the source's precision: {exc}; copy with precision= one of "
            "those, for example "
            f"copy_index(..., precision={other!r}) or matryoshka copy --set precision={other} "
            "(nothing was written)"
        ) from None


def _calibration(source: MatryoshkaIndex, config: IndexConfig, rotation: Any) -> Calibration | None:
    """The source's int8 ranges where they were given (final) and the copy's prefix is the same;
    ranges computed from the rows are computed again by the copy, from the same rows."""
    manifest = source.manifest
    same = (
        rotation is None
        and config.precision == source.precision == "int8"
        and config.coarse_dim == source.coarse_dim
    )
    if not same or manifest.calibration is None or manifest.calibrated_on is not None:
        return None
    return Calibration.from_dict(manifest.calibration)


def _write(
    source: MatryoshkaIndex, plan: _Plan, there: _Place, batch_size: int, chroma_client: Any
) -> MatryoshkaIndex:
    """Make the destination of ``plan`` at ``there`` and fill it from ``source``; a folder is
    saved at the end, a table this call made is dropped if the copy fails."""
    location: dict[str, Any] = {}
    if there.server is not None:
        location = {"dsn": there.location, "table": there.name}
    elif "chroma_client" in backends.spec(plan.config.backend).capabilities.options:
        location = {"chroma_client": chroma_client}
    copy = MatryoshkaIndex(**plan.constructor_options(), **location)
    try:
        engine = copy._engine  # what the constructor does not take: set before the first row
        engine.model_name = plan.model_name
        engine.config = engine.config.replace(adaptive_margin=plan.config.adaptive_margin)
        if plan.dim is not None:
            engine.init_dim(plan.dim)
        _fill(source, copy, batch_size)
        if there.server is None:
            engine.saved_projection = plan.projection
            copy.save(there.location)
    except BaseException:
        _undo(copy, there, chroma_client)
        raise
    logger.info("copied %d records to the %s", len(copy), there)
    return copy


def _fill(source: MatryoshkaIndex, copy: MatryoshkaIndex, batch_size: int) -> None:
    """Add ``source``'s live records to ``copy`` in insertion order, ``batch_size`` at a time.

    Raises:
        ValueError: If records of the source were deleted during the copy.
        ValueError, TypeError: For a record the copy does not take (a table written by another
            tool may hold metadata an index refuses), naming the batch.
    """
    ids = source.ids()
    for start in range(0, len(ids), batch_size):
        wanted = ids[start : start + batch_size]
        records = source.get(wanted, include_vectors=True)
        if len(records) != len(wanted):
            gone = sorted(set(wanted) - {r.id for r in records})
            raise ValueError(
                f"{len(gone)} record(s) of the source were deleted during the copy, for example "
                f"{gone[:5]}: copy an index that no client is writing"
            )
        try:
            copy.add_vectors(
                np.stack(cast(list[NDArray[np.float32]], [r.vector for r in records])),
                ids=wanted,
                texts=[r.text for r in records],
                metadatas=[r.metadata or None for r in records],
            )
        except (ValueError, TypeError) as exc:
            if type(exc) not in (ValueError, TypeError):
                raise  # an error of its own kind says what it is
            stop = start + len(wanted) - 1
            raise type(exc)(
                f"the copy stopped at the source's records {start} to {stop} ({wanted[0]!r} to "
                f"{wanted[-1]!r}; the positions below count from record {start}): {exc}"
            ) from exc
        logger.info("copied %d of %d records", start + len(wanted), len(ids))


def _undo(copy: MatryoshkaIndex, there: _Place, chroma_client: Any) -> None:
    """After a failed copy: drop the table, or the Chroma collection, this call filled (a
    folder is written only at the end, so it holds nothing of the copy)."""
    copy._engine.close()
    try:
        if there.server is not None and copy.dim is not None:  # the table is made with the dim
            from .postgres.registry import drop_index

            drop_index(there.location, str(there.name))
        elif "chroma_client" in backends.spec(copy.backend).capabilities.options:
            # its collection was empty when the copy began
            chroma_client.delete_collection(copy.config.collection)
    except Exception:  # the copy's own error is the one to raise
        logger.exception("the half-written copy in the %s could not be removed", there)
