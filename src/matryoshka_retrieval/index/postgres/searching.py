"""One search of a PostgreSQL index: the exact-scan decision, the walk's beam, the statement.

The statement itself is built by :meth:`.sql._Sql.search`; here it is run once per query with
the session settings it needs: pgvector's iterative scan (a filtered search still fills its
shortlist) and ``hnsw.ef_search``, the HNSW walk's beam, from what the shortlist needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..config import DEFAULTS, IndexConfig
from ..hits import Hits
from .rows import hits_of
from .sql import _Sql

if TYPE_CHECKING:
    from .engine import PostgresEngine

__all__ = ["EF_PER_CANDIDATE", "ef_search_for", "guarded_search", "run_search"]

MAX_EF_SEARCH = 1000
"""The range of ``hnsw.ef_search`` is 1..1000."""
EF_PER_CANDIDATE = 2
"""The HNSW walk's beam per shortlisted candidate while ``ef_search`` is left at its default: a
walk whose beam is the shortlist itself can lose candidates that an exact scan of the prefixes
keeps (on 20,000 real documents, recall@10 0.71 on the server against 0.80 locally at 64 dims
and a shortlist of 100). An ``ef_search`` that was set (by the caller or by ``tune``, which
measures the beam it sets) is the beam, raised only to the shortlist."""
_COUNT_TTL = 2.0
"""Seconds a handle trusts its row count for the exact-scan decision (its own writes reset it)."""


def ef_search_for(config: IndexConfig, keep: int) -> int:
    """The beam of a walk for a shortlist of ``keep``: ``ef_search``, raised to the shortlist
    (to :data:`EF_PER_CANDIDATE` beams per shortlisted candidate while ``ef_search`` is at its
    default); at most :data:`MAX_EF_SEARCH`."""
    per = EF_PER_CANDIDATE if config.ef_search == DEFAULTS.ef_search else 1
    return min(max(config.ef_search, math.ceil(per * keep)), MAX_EF_SEARCH)


def run_search(
    engine: PostgresEngine,
    cur: Any,
    using: tuple[_Sql, IndexConfig, Any],
    queries: NDArray[np.float32],
    k: int,
    where: tuple[str, list[Any]],
) -> list[Hits]:
    """The search statement of table ``using[0]`` with configuration and rotation ``using[1:]``,
    executed (prepared) once per query; ``where``: the filter's condition and parameters.
    Each statement is guarded by the index's identity and revision (see :meth:`_Sql.search`):
    a query whose statement found the index changed gets no hits."""
    sql, config, rotation = using
    guard = (engine.table, engine._identity, engine._revision)
    exact = config.coarse_dim is None or rotation == "pca" or _exactly(engine, cur, sql, config)
    stages = [] if exact else config.funnel(k)
    statement, names = sql.search(stages, where[0])
    _set_gucs(engine, cur, stages, config)
    turned = None
    if stages and sql.column:
        turned = engine.coarse_prefix(queries, config.coarse_dim, rotation)
    out: list[Hits] = []
    for i, query in enumerate(queries):
        coarse = None if turned is None else turned[i]
        params = sql.query_params(query, stages, k, where[1], names, coarse, guard)
        out.append(hits_of(cur.execute(statement, params, prepare=True).fetchall()))
    return out


def _exactly(engine: PostgresEngine, cur: Any, sql: _Sql, config: IndexConfig) -> bool:
    """Whether the table is small enough for ``exact_below``: its rows counted up to the
    limit, at most every :data:`_COUNT_TTL` seconds; the server's live-row statistics or
    planner estimate far past the limit answer without a count (0.3 ms on 200,000 rows of
    384 dims, where the bounded count took 22 ms and a full ``count(*)`` 120 ms)."""
    assert engine.dim is not None
    below = config.exact_below
    limit = config.auto_exact_floats // engine.dim if below == "auto" else int(below)
    now, known = time.monotonic(), engine._count
    if known is None or known[0] != (sql.table, limit) or now - known[1] > _COUNT_TTL:
        statement = (
            "SELECT CASE WHEN greatest(reltuples, pg_stat_get_live_tuples(oid)) > 2 * %s "
            "THEN %s + 1 ELSE "
            f"({sql.count_upto()}) END FROM pg_class WHERE oid = %s::regclass"
        )
        row = cur.execute(statement, [limit, limit, limit + 1, sql.table]).fetchone()
        known = engine._count = ((sql.table, limit), now, int(row[0]))
    return config.searches_exactly(known[2], engine.dim)


def _set_gucs(
    engine: PostgresEngine, cur: Any, stages: list[tuple[int, int]], config: IndexConfig
) -> None:
    """Session settings of the handle's connection: iterative scans and the walk's beam (set
    only when it changes)."""
    ef = str(ef_search_for(config, stages[0][1] if stages else 0))
    settings = engine._session.settings
    if settings.get("hnsw.ef_search") != ef:
        cur.execute(
            "SELECT set_config('hnsw.ef_search', %s, false), "
            "set_config('hnsw.iterative_scan', 'relaxed_order', false)",
            [ef],
        )
        settings["hnsw.ef_search"] = ef


def guarded_search(
    engine: PostgresEngine,
    using: Callable[[], tuple[_Sql, IndexConfig, Any]],
    queries: NDArray[np.float32],
    k: int,
    where: tuple[str, list[Any]],
) -> list[Hits]:
    """:func:`run_search` in one round trip per query: the identity and revision are checked
    by each statement, and by a query of their own only when a statement came back empty or
    failed (a dropped or re-created table), to tell an index that changed (the search runs
    again with the registry's settings) or went (:class:`~.connection.StaleIndexError`) from an
    empty answer. ``using`` gives the table, configuration and rotation, read after a change."""
    from psycopg import errors

    def body(cur: Any) -> list[Hits]:
        for _ in range(3):
            revision = engine._revision
            try:
                found = run_search(engine, cur, using(), queries, k, where)
            except (errors.ProgrammingError, errors.DataError):
                engine._check(cur, "")  # raises for an index that went
                if engine._revision == revision:
                    raise
                continue
            if all(found_hits for found_hits in found):
                return found
            engine._check(cur, "")
            if engine._revision == revision:
                return found  # a genuinely empty answer
        raise AssertionError("the index changed three times during one search")

    return engine._session.read(body)
