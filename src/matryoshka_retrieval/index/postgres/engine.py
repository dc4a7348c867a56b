"""The engine of a ``backend="postgres"`` index: the whole index in one PostgreSQL table.

The table and its indexes are described in :mod:`.sql`, the coarse column and its rotation in
:mod:`.coarse`, the registry row in :mod:`.registry`, the tuner's trials in :mod:`.tuning`.
A search is one SQL statement: the coarse shortlist from the prefix index (with the filter, and
pgvector's iterative scan so a filtered search still fills its shortlist), each middle stage a
further subquery that re-sorts by a longer prefix, and the rerank by the full vectors; a table
small enough for ``exact_below`` is scanned exactly instead. Writes are transactions; several
processes can share one index, and a handle is bound to the index it opened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ...truncation import prefix
from ..config import IndexConfig
from ..filters import Filter
from ..hits import Hits, Record
from ..manifest import Manifest
from ..protocol import EngineSettings
from .coarse import (
    check_rotation_matches,
    column_values,
    fit_waiting,
    rotation_bytes,
    stored_rotation,
)
from .connection import (
    RefusedValueError,
    Session,
    check_timeout,
    first_line,
    no_check,
    replica_error,
    stale_error,
)
from .filters import compile_pg_filter
from .opening import open_postgres_index, stored_index
from .registry import (
    check_identity,
    create_entry,
    identity_column,
    read_entry,
)
from .rows import array_of, culprit, jsonb, reserve
from .searching import guarded_search
from .sql import META_TABLE, _Sql, build_graph, check_limits, check_table
from .tuning import PostgresTrial, adopt, drop_trials, exact_rows, make_trial, sample_rows

__all__ = ["RERANK_DEVICE", "PostgresEngine", "open_postgres_index", "server_location"]

RERANK_DEVICE = "postgres:server"
"""Where a PostgreSQL index reranks: inside its search statement, on the server."""
_STRUCTURE = ("full_dim", "coarse_dim", "precision", "model_name")

T = TypeVar("T")


class PostgresEngine:
    """The engine of a ``backend="postgres"`` index: every store is one PostgreSQL table.

    Made by :meth:`create` (a new index, or one the table already holds) or :meth:`open`
    (``MatryoshkaIndex.load(dsn, table=...)``); it implements :class:`~..protocol.Engine`.

    Args:
        config: The index configuration.
        model_name: The model that made the vectors, when known.
        dsn: A libpq connection string or URI.
        table: The index's table name.
        timeout: Seconds any one statement may run (``None``: no limit).

    Example:
        >>> engine = PostgresEngine(IndexConfig.create(backend="postgres"), model_name=None,
        ...                         dsn=DSN, table="docs")  # doctest: +SKIP
        >>> engine.rerank_device  # doctest: +SKIP
        'postgres:server'
    """

    rerank_device = RERANK_DEVICE
    saved_projection = None
    """A projection is not stored on the server: give the index its ``ProjectedEncoder``."""

    def __init__(
        self,
        config: IndexConfig,
        *,
        model_name: str | None,
        dsn: str | None = None,
        table: str | None = None,
        timeout: float | None = None,
        rotation: Any = ...,
    ) -> None:
        if not dsn or not isinstance(dsn, str):
            raise ValueError(
                f"backend='postgres' needs dsn= (a PostgreSQL connection string), got {dsn!r:.40}"
            )
        self.config = config
        self.model_name = model_name
        self.table = check_table(table)
        self.dsn = dsn  # kept in memory only: the manifest never holds it
        self.dim: int | None = None
        self._sql: _Sql | None = None
        self._identity: str | None = None
        self._count: tuple[tuple[str, int], float, int] | None = None
        """((table, limit), when, rows counted up to the limit) of the last exact-scan check."""
        self.rotation: Any = None if rotation is ... else rotation
        """The coarse rotation: ``None``, ``"pca"`` (fitted on the stored rows once the table
        holds :func:`~..engine.rotation_rows` of them; exact scans until then) or a fitted
        ``Projection``, kept in the registry with the index."""
        self._given_rotation = rotation
        self._identity_sql = "m.identity"  # see registry.identity_column
        self._trials: list[str] = []  # tables the tuner's trials made, dropped when it ends
        self._pca: Any = None  # a PCA rotation fitted for the tuner's trials
        self._revision: str | None = None
        self._graph = False  # the table's HNSW index was seen (see _graph_pending)
        self._turn: tuple[Any, int, NDArray[np.float32]] | None = None
        self._ef_search: int | None = None  # given to load(), kept over the registry's
        self._session = Session(dsn, name=self.table, timeout=check_timeout(timeout))
        try:
            entry = self._session.read(self._entry)
            if entry is not None:
                self._adopt(*entry)
            elif self._session.read_only:
                raise replica_error(self.table)  # a new index is made on the primary
        except BaseException:
            self._session.close()  # a refused table leaves no connection behind
            raise

    @classmethod
    def create(
        cls,
        config: IndexConfig,
        settings: EngineSettings,
        *,
        dim: int | None = None,
        rotation: Any = None,
        calibration: Any = None,
    ) -> PostgresEngine:
        """The engine of table ``settings.options["table"]`` at its ``dsn``, made with its first
        add (or now, when ``dim`` is known); a table that holds an index already is checked
        against ``config`` (and ``rotation``). The registry refuses ``calibration`` before this."""
        options = settings.options
        engine = cls(
            config,
            model_name=settings.model_name,
            dsn=options.get("dsn"),
            table=options.get("table"),
            timeout=options.get("timeout"),
            rotation=rotation,
        )
        if dim is not None:  # made now, by whoever made the index: its graph comes with it
            engine.init_dim(dim)
            engine._write(engine._graph_now)
        return engine

    @classmethod
    def open(
        cls,
        location: Any,
        settings: EngineSettings,
        *,
        full_vectors: str,
        verify: bool,
        options: dict[str, Any],
    ) -> PostgresEngine:
        """The index named ``options["table"]`` in the database at ``location`` (a DSN), as
        its registry row describes it; ``options`` may also hold ``ef_search`` and ``timeout``.

        Raises:
            FileNotFoundError: If the database holds no index named so.
            ValueError: For a setting of a saved folder (``full_vectors``, ``verify``), which
                the server engine does not honour, naming it.
            TypeError: For an option this engine does not take.
        """
        table, stored, options = stored_index(location, options, full_vectors, verify)
        config = IndexConfig.from_manifest(stored)
        if "ef_search" in options:
            config = config.replace(ef_search=options["ef_search"])
        model, timeout = stored.get("model_name"), options.get("timeout")
        engine = cls(config, model_name=model, dsn=location, table=table, timeout=timeout)
        if "ef_search" in options:
            engine._ef_search = config.ef_search
        return engine

    def count(self) -> int:
        """The number of records (a count on the server)."""
        return self.n_alive

    @property
    def read_only(self) -> bool:
        """Whether this handle is on a read replica (a hot standby): it searches, and every
        write raises :class:`~.connection.ReadOnlyReplicaError` before anything is sent."""
        return self._session.read_only

    def close(self) -> None:
        """Close the connection; the handle cannot be used afterwards (closing again: nothing)."""
        self._session.close()

    # -- the stored manifest ----------------------------------------------------------------------
    def _entry(self, cur: Any) -> tuple[dict[str, Any], str | None, Any] | None:
        """``(manifest, identity, rotation)`` of the index named so, or ``None``."""
        entry = read_entry(cur, self.table)
        if entry is None:
            return None
        stored, identity = entry
        self._identity_sql = identity_column(cur)
        return stored, identity, stored_rotation(cur, self.table, stored.get("coarse_rotation"))

    def _adopt(self, stored: dict[str, Any], identity: str | None, rotation: Any) -> None:
        """Use the stored index: refuse one made with another model, dims, prefix index or
        coarse rotation (naming both), else take its dim, model, rotation and identity."""
        check_rotation_matches(self.table, self._given_rotation, rotation)
        mine = {**self.config.to_manifest(), "model_name": self.model_name}
        for name in _STRUCTURE[1:]:
            theirs, ours = stored.get(name), mine.get(name)
            if name == "model_name" and (ours is None or theirs is None):
                continue
            if theirs != ours:
                raise ValueError(
                    f"table {self.table!r} was made with {name}={theirs!r}; this index has "
                    f"{name}={ours!r}: open it with MatryoshkaIndex.load(dsn, table=...) or "
                    "choose another table"
                )
        graph = stored.get("hnsw") or {}  # the table's graph is built (or was) with these
        self.config = self.config.replace(
            hnsw_m=graph.get("m", self.config.hnsw_m),
            ef_construction=graph.get("ef_construction", self.config.ef_construction),
        )
        self.model_name = stored.get("model_name")
        self._identity = identity
        self._given_rotation = ...  # checked once: later changes come from the registry
        self._use(stored, rotation)

    def _use(self, stored: dict[str, Any], rotation: Any) -> None:
        """Take the stored state: full dim, layout, rotation and revision."""
        self.dim = int(stored["full_dim"])
        self.rotation = rotation
        self._revision = stored.get("revision")
        column = bool(stored.get("coarse_column"))  # absent: a table of an earlier version
        self._sql = _Sql(
            self.table, self.config, self.dim, column=column, identity=self._identity_sql
        )

    def _refresh(self, cur: Any) -> None:
        """The registry's row changed since this handle read it (a fitted rotation, a tuned
        funnel): take its settings, kept over by an ``ef_search`` given to ``load``."""
        entry = self._entry(cur)
        if entry is None or entry[1] != self._identity:
            raise stale_error(self.table)
        stored, _, rotation = entry
        config = IndexConfig.from_manifest(stored)
        if self._ef_search is not None:
            config = config.replace(ef_search=self._ef_search)
        self.config = config
        self._count = None
        self._use(stored, rotation)

    def init_dim(self, dim: int) -> None:
        """Fix the full dimension: create the table (the prefix graph is built with its first
        rows, see :meth:`_graph_pending`), or check the stored one."""
        self.config.check_full_dim(dim)
        rotation_dim = getattr(self.rotation, "dim", dim)
        if rotation_dim != dim:
            raise ValueError(
                f"coarse_rotation maps {rotation_dim}-dim vectors but these vectors have {dim} dims"
            )
        if self.dim is not None:
            if dim != self.dim:
                raise ValueError(
                    f"table {self.table!r} stores {self.dim}-dim vectors; this index was given "
                    f"{dim}-dim ones"
                )
            return
        check_limits(self.config, dim)
        statements = _Sql(self.table, self.config, dim, column=True).create()
        manifest = self._manifest(None, full_dim=dim, count=0).to_dict()
        for transient in ("count", "files", "vectors_sha256"):
            manifest.pop(transient)
        manifest["coarse_column"] = True
        saved = rotation_bytes(self.rotation)
        duplicate = _errors().DuplicateTable

        def create(cur: Any) -> tuple[dict[str, Any], str | None, Any] | str:
            try:
                made = create_entry(cur, self.table, statements, manifest, saved)
            except duplicate:
                raise ValueError(
                    f"table {self.table!r} exists and holds no index of this library (it is "
                    f"not in {META_TABLE}); it was left as it is: choose another table"
                ) from None
            if isinstance(made, str):
                return made
            entry = self._entry(cur)  # another client made it meanwhile
            assert entry is not None
            return entry

        made = self._session.write(no_check, create)
        if isinstance(made, str):
            self._adopt(manifest, made, self.rotation)
            return
        self._adopt(*made)
        self.init_dim(dim)

    def manifest(self, projection: Any) -> Manifest:
        """The manifest of this index (what the registry holds, and the count)."""
        return self._manifest(projection, full_dim=self.dim or 0, count=self.n_alive)

    def _manifest(self, projection: Any, *, full_dim: int, count: int) -> Manifest:
        return Manifest.build(
            self.config,
            model_name=self.model_name,
            projection=projection.to_manifest() if projection else None,
            coarse_rotation=getattr(self.rotation, "to_manifest", lambda: self.rotation)(),
            generation=f"postgres:{self.table}",
            full_dim=full_dim,
            count=count,
        )

    @property
    def n_alive(self) -> int:
        """The number of records (a count on the server)."""
        if self.dim is None:
            return 0
        return self._read(
            lambda cur: int(cur.execute(f"SELECT count(*) FROM {self._table}").fetchone()[0])
        )

    # -- statements -------------------------------------------------------------------------------
    @property
    def _table(self) -> str:
        assert self._sql is not None
        return self._sql.table

    def _check(self, cur: Any, lock: str) -> None:
        """Check that the table is still the index this handle opened, and take the registry's
        settings if they changed since this handle last read them (one statement)."""
        column = self._identity_sql
        if (
            check_identity(cur, self.table, self._identity, lock=lock, column=column)
            != self._revision
        ):
            self._refresh(cur)

    def _read(self, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` after :meth:`_check`."""

        def checked(cur: Any) -> T:
            self._check(cur, "")
            return body(cur)

        return self._session.read(checked)

    def _write(self, body: Callable[[Any], T], lock: str = "share") -> T:
        """``body(cursor)`` in a transaction that first checks (and locks) the index's identity;
        ``lock="update"`` also holds off every other write (a change of the rotation)."""
        self._count = None
        try:
            return self._session.write(lambda cur: self._check(cur, lock), body)
        finally:
            self._count = None

    # -- writing ----------------------------------------------------------------------------------
    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """``{id: seq}`` of the ids that exist."""
        if self.dim is None or not ids:
            return {}
        query = f"SELECT id, seq FROM {self._table} WHERE id = ANY(%s)"
        rows = self._read(lambda cur: cur.execute(query, [list(ids)]).fetchall())
        return {id_: int(seq) for id_, seq in rows}

    def append(
        self,
        matrix: NDArray[Any],
        ids: list[str],
        texts: list[str | None],
        meta_json: list[str | None],
        replaced: list[int],
    ) -> None:
        """Insert the rows (replacing ``replaced``) in one transaction, by binary COPY.

        The rows go in sorted by id, so that two clients adding the same ids lock them in the
        same order (the second waits, then finds them taken); their ``seq`` still follows the
        input order.
        """
        assert self.dim is not None
        full = prefix(np.asarray(matrix, dtype=np.float32), self.dim)
        order = sorted(range(len(ids)), key=ids.__getitem__)
        unique = _errors().UniqueViolation
        refused = (_errors().DataError, _errors().ProgramLimitExceeded)

        def body(cur: Any) -> None:
            table = self._table  # after the check: the registry's state, if it changed
            graph = self._graph_pending(cur)  # before any row lock: first adds take turns
            if replaced:
                cur.execute(f"DELETE FROM {table} WHERE seq = ANY(%s)", [sorted(replaced)])
            seqs = reserve(cur, table, len(ids))
            coarse = self._coarse_column(full)
            assert self._sql is not None
            copy_sql, types = self._sql.copy()
            try:
                with cur.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for i in order:
                        metadata = jsonb(meta_json[i] or "{}")
                        row = [ids[i], seqs[i], texts[i], metadata, full[i]]
                        copy.write_row(row if coarse is None else [*row, coarse[i]])
            except unique as exc:
                raise ValueError(
                    f"an id of this add is already in table {self.table!r} (another client "
                    f"added it meanwhile): {exc.diag.message_detail}; nothing was stored"
                ) from None
            except refused as exc:
                value = culprit(ids, texts, meta_json) or "a value"
                raise RefusedValueError(
                    f"PostgreSQL cannot store {value} in index {self.table!r} "
                    f"({first_line(exc)}); nothing of this write was stored"
                ) from None
            if self.rotation == "pca" and self._sql.column:
                from ..engine import rotation_rows

                fit_waiting(self, cur, rotation_rows(self.dim or 0))
            if graph and self.rotation != "pca":  # a waiting rotation: the add that fits it
                build_graph(cur, self._sql)

        # while a rotation waits, writes take turns: the one that fits it fills every row
        self._write(body, "update" if self.rotation == "pca" else "share")

    def _graph_pending(self, cur: Any) -> bool:
        """Whether this add builds the coarse stage's HNSW index after loading its rows: the
        first add into a table made by this version (pgvector builds a graph from the rows
        about twice as fast as it inserts them one by one). First adds take turns (a lock that
        searches do not wait for); one that finds the graph built once waiting adds to it."""
        sql = self._sql
        if self._graph or sql is None or not sql.prefix_expr:
            return False
        if not sql.has_graph(cur):
            cur.execute(f"LOCK TABLE {sql.table} IN SHARE ROW EXCLUSIVE MODE")
            if not sql.has_graph(cur):
                return True
        self._graph = True
        return False

    def _graph_now(self, cur: Any) -> None:
        """Build the prefix graph of a table made ahead of its rows (unless another did)."""
        if self._graph_pending(cur):
            assert self._sql is not None
            build_graph(cur, self._sql)

    def remove(self, found: dict[str, int]) -> int:
        """Delete the records ``{id: seq}`` in one transaction; returns how many this call
        deleted (a record another client deleted first is not counted)."""
        if self.dim is None or not found:
            return 0
        statement = f"DELETE FROM {self._table} WHERE id = ANY(%s)"
        return self._write(lambda cur: int(cur.execute(statement, [sorted(found)]).rowcount))

    # -- reading ----------------------------------------------------------------------------------
    def get(self, ids: Sequence[str], include_vectors: bool) -> list[Record]:
        """The records of the ids that exist, in input order."""
        if self.dim is None or not ids:
            return []
        vector = ", embedding" if include_vectors else ", NULL"
        query = f"SELECT id, text, metadata{vector} FROM {self._table} WHERE id = ANY(%s)"
        rows = self._read(lambda cur: cur.execute(query, [list(ids)]).fetchall())
        found = {row[0]: row for row in rows}
        return [
            Record(i, found[i][1], dict(found[i][2]), array_of(found[i][3]))
            for i in ids
            if i in found
        ]

    def ids(self, where: Filter | None) -> list[str]:
        """The ids matching ``where`` (all when ``None``), oldest first."""
        condition, params = compile_pg_filter(where) if where is not None else ("true", [])
        if self.dim is None:
            return []
        query = f"SELECT id FROM {self._table} WHERE {condition} ORDER BY seq"
        return [r[0] for r in self._read(lambda cur: cur.execute(query, params).fetchall())]

    def search(self, queries: NDArray[np.float32], k: int, where: Filter | None) -> list[Hits]:
        """The ``k`` best records per unit-length query, one statement per query."""
        condition, filter_params = compile_pg_filter(where) if where is not None else ("true", [])
        if self.dim is None or queries.shape[0] == 0:
            return [Hits() for _ in range(queries.shape[0])]

        def using() -> tuple[_Sql, IndexConfig, Any]:
            assert self._sql is not None  # read again after a change of the registry's row
            return self._sql, self.config, self.rotation

        return guarded_search(self, using, queries, k, (condition, filter_params))

    # -- the coarse column and its rotation ------------------------------------------------------
    def coarse_prefix(
        self, matrix: NDArray[np.float32], dim: int | None = None, rotation: Any = ...
    ) -> NDArray[np.float32]:
        """What the coarse stage sees of full vectors (or queries): the renormalised
        ``dim``-prefix (the index's coarse dim), after the coarse rotation (the index's, unless
        ``rotation`` is given) when there is one (the rerank scores the stored vectors)."""
        d = self.config.coarse_dim if dim is None else dim
        rotation = self.rotation if rotation is ... else rotation
        assert d is not None and not isinstance(rotation, str)
        if rotation is None:
            return prefix(matrix, d)
        cached = self._turn
        if cached is None or cached[0] is not rotation or cached[1] != d:
            turn = np.ascontiguousarray(rotation.rotation[:, :d])
            cached = self._turn = (rotation, d, turn)
        turned = np.asarray(matrix, dtype=np.float32) @ cached[2]
        return prefix(turned, d, out=turned)

    def _coarse_column(self, full: NDArray[np.float32]) -> list[Any] | None:
        """The coarse column's values of new rows (``None``: a table without the column;
        NULLs while a rotation waits, filled when it is fitted)."""
        assert self._sql is not None
        if not self._sql.column:
            return None
        if self.rotation == "pca":
            return [None] * full.shape[0]
        return column_values(self.coarse_prefix(full), self.config.precision)

    # -- the tuner's seam (TunableEngine) ---------------------------------------------------------
    def sample_rows(self, sample: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Up to ``sample`` stored rows, picked by a hash of their id and ``seed``:
        ``(vectors, seq)``."""
        return sample_rows(self, sample, seed)

    def exact_rows(
        self, queries: NDArray[np.float32], k: int, exclude: NDArray[np.int64] | None
    ) -> NDArray[np.int64]:
        """``seq`` of each query's exact full-dim top ``k`` (a scan on the server), leaving the
        rows ``exclude`` out."""
        return exact_rows(self, queries, k, exclude)

    def trial(
        self,
        config: IndexConfig,
        *,
        rotation: Any = ...,
        exclude: NDArray[np.int64] | None = None,
        seed: int = 0,
    ) -> PostgresTrial:
        """``config`` (and ``rotation``: ``None``, ``"pca"``, a ``Projection``, or ``...`` for
        the index's) as a trial: on the index's own table when nothing is left out and the
        coarse stage is the index's, else on a copy of the table made for it (see
        :mod:`.tuning`)."""
        return make_trial(self, config, rotation, exclude)

    def adopt(self, trial: PostgresTrial) -> None:
        """Put ``trial``'s configuration in force for every handle (see :func:`.tuning.adopt`)."""
        adopt(self, trial)

    def end_trials(self) -> None:
        """Drop the tables the trials made."""
        drop_trials(self)

    def settle(self) -> None:
        """Fit a waiting ``"pca"`` rotation on the rows there are (at least two), now."""
        if self.rotation == "pca" and self.dim is not None:
            self._write(lambda cur: fit_waiting(self, cur, 0), "update")


def _errors() -> Any:
    from psycopg import errors

    return errors


def server_location(index: Any) -> tuple[str, str] | None:
    """``(dsn, table)`` of an index kept on PostgreSQL (for workers that open it themselves),
    or ``None`` for a local index."""
    engine = index._engine
    return (engine.dsn, engine.table) if isinstance(engine, PostgresEngine) else None
