"""The tuner on the server: trials of a PostgreSQL index, measured by the server's own searches.

A trial is the index's search statement run with another configuration. The shortlist,
``ef_search`` and ``exact_below`` need nothing built: a trial of them searches the index's own
table. A trial that leaves held-out rows out (``tune()`` without ``queries``), or that tries
another coarse stage (prefix dim, precision, rotation), runs on a copy of the table made for it
(unlogged, without those rows, with its own coarse column and HNSW graph), so that a held-out
row is not a node of the graph its own search walks. The copies are dropped when the tuner
ends. Adopting a trial writes its settings to the registry, where every handle reads them at
its next statement; adopting another coarse stage also rewrites the index's coarse column and
rebuilds its HNSW index, in one transaction (searches wait for it).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..config import IndexConfig
from ..hits import Hits
from .coarse import column_values, fill_column, fit_rotation, rotation_bytes, vector_of
from .registry import read_entry, update_entry
from .searching import guarded_search
from .sql import MAX_LIMIT, _Sql, bits, build_graph

if TYPE_CHECKING:
    from .engine import PostgresEngine

__all__ = [
    "PostgresTrial",
    "adopt",
    "build_trial",
    "drop_trials",
    "exact_rows",
    "make_trial",
    "same_stage",
    "sample_rows",
]


def same_stage(config: IndexConfig, rotation: Any, other: IndexConfig, other_rotation: Any) -> bool:
    """Whether two configurations index the same coarse column (dim, precision, rotation and
    the graph's build settings)."""
    stage = ("coarse_dim", "precision", "hnsw_m", "ef_construction")
    if any(getattr(config, name) != getattr(other, name) for name in stage):
        return False
    mine = getattr(rotation, "fingerprint", rotation)
    return bool(mine == getattr(other_rotation, "fingerprint", other_rotation))


class PostgresTrial:
    """A configuration of a :class:`~.engine.PostgresEngine` measured by the tuner, searching
    ``sql.table``: the index's own table, or a copy made for the trial."""

    def __init__(
        self, engine: PostgresEngine, config: IndexConfig, rotation: Any, sql: _Sql
    ) -> None:
        self.engine, self.config, self.rotation, self.sql = engine, config, rotation, sql
        self._seq: dict[str, int] | None = None

    def using(self, config: IndexConfig) -> PostgresTrial:
        """The same table searched with another shortlist, ``ef_search`` or ``exact_below``."""
        trial = PostgresTrial(self.engine, config, self.rotation, self.sql)
        trial._seq = self._seq
        return trial

    def search(self, queries: NDArray[np.float32], k: int) -> list[Hits]:
        """The index's search statement with this configuration (what the tuner times)."""
        using = (self.sql, self.config, self.rotation)
        return guarded_search(self.engine, lambda: using, queries, k, ("true", []))

    def top_rows(self, queries: NDArray[np.float32], k: int) -> NDArray[np.int64]:
        """``seq`` of each query's ``k`` hits through the funnel (-1 past the last)."""
        if self._seq is None:
            rows = self.engine._read(
                lambda cur: cur.execute(f"SELECT id, seq FROM {self.sql.table}").fetchall()
            )
            self._seq = {id_: int(seq) for id_, seq in rows}
        out = np.full((queries.shape[0], k), -1, dtype=np.int64)
        for i, hits in enumerate(self.search(queries, k)):
            found = [self._seq[hit.id] for hit in hits]
            out[i, : len(found)] = found
        return out

    def shortlist(
        self, queries: NDArray[np.float32], n: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``n`` best ``(coarse scores, seq)`` per query by an exact scan of the coarse
        column (what the graph's walk approximates)."""
        sql, config = self.sql, self.config
        assert config.coarse_dim is not None
        turned = self.engine.coarse_prefix(queries, config.coarse_dim, self.rotation)
        score = sql.coarse_score()
        statement = (
            f"SELECT seq, {score} FROM {sql.table} ORDER BY ({sql.prefix_expr} {sql.op} "
            f"{sql.query_cast}) + 0 LIMIT %s"
        )
        scores = np.full((queries.shape[0], n), -np.inf, dtype=np.float32)
        rows = np.full((queries.shape[0], n), -1, dtype=np.int64)

        def scan(cur: Any) -> None:
            for i, query in enumerate(turned):
                value = _query_value(query, config.precision)
                found = cur.execute(statement, [value, value, min(n, MAX_LIMIT)]).fetchall()
                rows[i, : len(found)] = [r[0] for r in found]
                scores[i, : len(found)] = [r[1] for r in found]

        self.engine._read(scan)
        return scores, rows


def _query_value(query: NDArray[np.float32], precision: str) -> Any:
    if precision == "binary":
        return bits(query)
    return query


def sample_rows(
    engine: PostgresEngine, sample: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Up to ``sample`` stored rows of the index, picked by a hash of their id and ``seed``:
    ``(vectors, seq)``."""
    statement = (
        f"SELECT seq, embedding FROM {engine._table} ORDER BY hashtext(id || %s), id LIMIT %s"
    )
    rows = engine._read(lambda cur: cur.execute(statement, [str(seed), sample]).fetchall())
    vectors = np.stack([vector_of(r[1]) for r in rows])
    return vectors, np.asarray([r[0] for r in rows], dtype=np.int64)


def exact_rows(
    engine: PostgresEngine, queries: NDArray[np.float32], k: int, exclude: NDArray[np.int64] | None
) -> NDArray[np.int64]:
    """``seq`` of each query's exact full-dim top ``k`` (a scan on the server), leaving the rows
    ``exclude`` out."""
    statement = (
        f"SELECT seq FROM {engine._table} WHERE NOT (seq = ANY(%s)) "
        "ORDER BY embedding <#> %s LIMIT %s"
    )
    left_out = [] if exclude is None else exclude.tolist()
    out = np.full((queries.shape[0], k), -1, dtype=np.int64)

    def scan(cur: Any) -> None:
        for i, query in enumerate(queries):
            found = [r[0] for r in cur.execute(statement, [left_out, query, k]).fetchall()]
            out[i, : len(found)] = found

    engine._read(scan)
    return out


def make_trial(
    engine: PostgresEngine, config: IndexConfig, rotation: Any, exclude: NDArray[np.int64] | None
) -> PostgresTrial:
    """See :meth:`~.engine.PostgresEngine.trial`."""
    if rotation is ...:
        rotation = engine.rotation
    elif rotation == "pca":
        if engine._pca is None:
            engine._pca = engine._read(
                lambda cur: fit_rotation(cur, engine._table, engine.dim or 0)
            )
        rotation = engine._pca
    assert engine._sql is not None
    own = same_stage(config, rotation, engine.config, engine.rotation)
    if exclude is None and engine._sql.column and own:
        return PostgresTrial(engine, config, rotation, engine._sql)
    return build_trial(engine, config, rotation, exclude)


def build_trial(
    engine: PostgresEngine, config: IndexConfig, rotation: Any, exclude: NDArray[np.int64] | None
) -> PostgresTrial:
    """A copy of the index's table for a trial: every row but ``exclude`` (``seq``), with the
    coarse column of ``config`` and ``rotation`` and its own HNSW index."""
    assert engine.dim is not None and engine._sql is not None
    name = f"{engine.table[:40]}__trial_{uuid.uuid4().hex[:8]}"  # with "_prefix": 63 bytes
    sql = _Sql(name, config, engine.dim, column=True, identity=engine._identity_sql)
    source = engine._sql
    reuse = source.column and same_stage(config, rotation, engine.config, engine.rotation)
    t = sql.table
    statements = [
        s.replace("CREATE TABLE", "CREATE UNLOGGED TABLE", 1)
        for s in sql.create()
        if "USING gin" not in s
    ]
    copied = "id, seq, text, metadata, embedding" + (", coarse" if reuse else "")

    def make(cur: Any) -> None:
        for statement in statements:
            cur.execute(statement)
        cur.execute(
            f"INSERT INTO {t} ({copied}) OVERRIDING SYSTEM VALUE SELECT {copied} FROM "
            f"{source.table} WHERE NOT (seq = ANY(%s))",
            [[] if exclude is None else exclude.tolist()],
        )
        _build_stage(cur, engine, sql, rotation, fill=not reuse)
        cur.execute(f"ANALYZE {t}")

    engine._trials.append(name)
    engine._write(make)
    return PostgresTrial(engine, config, rotation, sql)


def _build_stage(cur: Any, engine: PostgresEngine, sql: _Sql, rotation: Any, fill: bool) -> None:
    """In the caller's transaction: write every row's coarse column of ``sql``'s table with its
    configuration and ``rotation`` (unless ``fill`` is false: the values were copied), then
    build its HNSW index with the memory the graph needs."""
    config = sql.config
    if fill:
        turn, precision = engine.coarse_prefix, config.precision
        fill_column(
            cur,
            sql,
            lambda m: column_values(turn(m, config.coarse_dim, rotation), precision),
            "all",
        )
    build_graph(cur, sql)


def adopt(engine: PostgresEngine, trial: PostgresTrial) -> None:
    """Put ``trial``'s configuration in force for every handle: its settings in the registry
    and, for another coarse stage, the index's coarse column rewritten and its HNSW index
    rebuilt (one transaction; writes and searches wait for it)."""
    assert engine.dim is not None and engine._sql is not None
    config, rotation = trial.config, trial.rotation
    restage = not (
        engine._sql.column and same_stage(config, rotation, engine.config, engine.rotation)
    )
    sql = _Sql(engine.table, config, engine.dim, column=True, identity=engine._identity_sql)

    def write(cur: Any) -> None:
        if restage:
            old = engine._sql
            assert old is not None
            cur.execute(f"DROP INDEX IF EXISTS {old.index_name('prefix')}")
            if old.column:
                cur.execute(f"ALTER TABLE {sql.table} DROP COLUMN coarse")
            cur.execute(f"ALTER TABLE {sql.table} ADD COLUMN coarse {sql.coarse_type}")
            for statement in sql.storage():
                cur.execute(statement)
            _build_stage(cur, engine, sql, rotation, fill=True)
        entry = read_entry(cur, engine.table)
        assert entry is not None
        manifest = {
            **entry[0],
            **config.to_manifest(),
            "coarse_column": True,
            "coarse_rotation": getattr(rotation, "to_manifest", lambda: rotation)(),
        }
        engine._revision = update_entry(cur, engine.table, manifest, rotation_bytes(rotation))
        engine.config, engine.rotation, engine._sql = config, rotation, sql

    engine._write(write, "update")


def drop_trials(engine: PostgresEngine) -> None:
    """Drop the tables the trials of ``engine`` made (the tuner's end, met or not)."""
    names, engine._trials = engine._trials, []
    if names:
        tables = ", ".join(f'"{name}"' for name in names)
        statement = f"DROP TABLE IF EXISTS {tables}"
        engine._session.write(lambda cur: None, lambda cur: cur.execute(statement))
