"""The whole index in PostgreSQL + pgvector: one table, one prefix index, one statement per search.

The parts, by job:

- :mod:`.engine`: :class:`PostgresEngine`, the engine of a ``backend="postgres"`` index;
- :mod:`.sql`: the statements of one index's table, pgvector's limits, the rule for its name;
- :mod:`.coarse`: the coarse column and its rotation (a waiting ``"pca"`` fitted once);
- :mod:`.searching`: one search: the exact-scan decision, the walk's beam, the statement run;
- :mod:`.tuning`: the tuner's trials, measured by the server's own searches, and adopting;
- :mod:`.registry`: the ``matryoshka_indexes`` table: manifests, identities, revisions, the
  rotation's bytes, dropping;
- :mod:`.connection`: connecting, reconnecting, timeouts, read replicas (a handle on a hot
  standby searches and refuses writes) and this library's errors for the driver's;
- :mod:`.filters`: ``where`` filters compiled to conditions on a ``jsonb`` column;
- :mod:`.rows`: what an add sends and what a search reads back;
- :mod:`.opening`: :func:`open_postgres_index` (``MatryoshkaIndex.load(dsn, table=...)``).

Example:
    >>> from matryoshka_retrieval.index.postgres import drop_index
    >>> drop_index("postgresql://localhost/db", "docs")  # doctest: +SKIP
    True
"""

from __future__ import annotations

from .connection import (
    MIN_PGVECTOR,
    ConnectionLostError,
    PostgresIndexError,
    ReadOnlyReplicaError,
    RefusedValueError,
    ServerError,
    ServerTimeoutError,
    StaleIndexError,
    WriteConflictError,
    WriteInDoubtError,
    connect,
    pgvector_version,
)
from .engine import RERANK_DEVICE, PostgresEngine, open_postgres_index, server_location
from .filters import compile_pg_filter
from .registry import drop_index, read_manifest
from .sql import META_TABLE, check_table
from .sql import _Sql as _Sql

_connect = connect  # the names of these before the package was split
_pgvector_version = pgvector_version

__all__ = [
    "META_TABLE",
    "MIN_PGVECTOR",
    "RERANK_DEVICE",
    "ConnectionLostError",
    "PostgresEngine",
    "PostgresIndexError",
    "ReadOnlyReplicaError",
    "RefusedValueError",
    "ServerError",
    "ServerTimeoutError",
    "StaleIndexError",
    "WriteConflictError",
    "WriteInDoubtError",
    "check_table",
    "compile_pg_filter",
    "drop_index",
    "open_postgres_index",
    "read_manifest",
    "server_location",
]
