"""A handle on a streaming replica (a real hot standby of the test server, made with
``pg_basebackup -R``) searches as the primary does once the primary's writes are replayed, and
refuses every write with one error naming the replica, before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index.postgres import (
    PostgresIndexError,
    ReadOnlyReplicaError,
    drop_index,
)
from pg_server import Standby, fresh_table

from .test_postgres import one_line, table_count, unit_rows

DIM = 32
REPLICA = (
    r"this connection is a read replica \(hot standby, pg_is_in_recovery\(\)\); "
    r"index '{}' is searched here but written on the primary"
)


@pytest.fixture(scope="module")
def standby(pg_dsn: str) -> Iterator[Standby]:
    """A hot standby of the test server, streaming its WAL; stopped (and deleted) at the end."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    replica = Standby.start()
    try:
        yield replica
    finally:
        replica.stop()


def build(dsn: str, table: str, n: int = 300) -> MatryoshkaIndex:
    """An index on the primary that searches by its HNSW prefix index (no exact scan)."""
    index = MatryoshkaIndex(backend="postgres", dsn=dsn, table=table, coarse_dim=8, exact_below=0)
    metadata = [{"part": i % 3} for i in range(n)]
    index.add_vectors(unit_rows(n, DIM), ids=[f"v{i}" for i in range(n)], metadatas=metadata)
    return index


def hit_lists(index: MatryoshkaIndex, queries: np.ndarray, **options) -> list:
    return [
        [(h.id, h.score, h.coarse_score) for h in hits]
        for hits in index.search_vectors(queries, k=10, **options)
    ]


def test_the_replica_searches_as_the_primary_once_it_has_replayed(pg_dsn, standby) -> None:
    table = fresh_table()
    primary = build(pg_dsn, table)
    standby.replay()
    replica = MatryoshkaIndex.load(standby.dsn, table=table)
    queries = unit_rows(25, DIM, seed=7)
    assert replica.read_only and not primary.read_only
    assert hit_lists(replica, queries) == hit_lists(primary, queries)
    assert hit_lists(replica, queries, filter={"part": 1}) == hit_lists(
        primary, queries, filter={"part": 1}
    )
    assert len(replica) == len(primary) == 300
    assert replica.ids() == primary.ids()
    assert [r.id for r in replica.get(["v5", "v9", "nope"])] == ["v5", "v9"]
    assert "read-only transaction" not in standby.log()  # no read tried to write


def test_a_replica_handle_sees_the_primarys_later_writes_once_replayed(pg_dsn, standby) -> None:
    table = fresh_table()
    primary = build(pg_dsn, table, n=50)
    standby.replay()
    replica = MatryoshkaIndex.load(standby.dsn, table=table)
    extra = unit_rows(5, DIM, seed=3)
    primary.add_vectors(extra, ids=[f"new{i}" for i in range(5)])
    primary.delete(["v0"])
    standby.replay()
    assert len(replica) == 54 and "v0" not in replica.ids()
    assert replica.search_vectors(extra[2:3], k=1)[0][0].id == "new2"


def test_a_write_through_the_replica_is_one_error_naming_it_and_stores_nothing(
    pg_dsn, standby
) -> None:
    table = fresh_table()
    build(pg_dsn, table, n=20)
    standby.replay()
    replica = MatryoshkaIndex.load(standby.dsn, table=table)
    with pytest.raises(ReadOnlyReplicaError, match=REPLICA.format(table)) as added:
        replica.add_vectors(unit_rows(2, DIM, seed=5), ids=["stray0", "stray1"])
    with pytest.raises(ReadOnlyReplicaError, match=REPLICA.format(table)) as deleted:
        replica.delete(["v1"])
    for exc in (added, deleted):
        one_line(exc)
        assert isinstance(exc.value, PermissionError) and isinstance(exc.value, PostgresIndexError)
        assert exc.value.__cause__ is None  # refused here, not by the server
    standby.replay()
    assert table_count(pg_dsn, table) == table_count(standby.dsn, table) == 20
    assert replica.get(["stray0", "v1"])[0].id == "v1"


def test_a_new_index_or_a_drop_on_the_replica_is_refused_naming_it(pg_dsn, standby) -> None:
    table = fresh_table()
    with pytest.raises(ReadOnlyReplicaError, match=REPLICA.format(table)):
        MatryoshkaIndex(backend="postgres", dsn=standby.dsn, table=table, coarse_dim=8)
    build(pg_dsn, table, n=10)
    standby.replay()
    with pytest.raises(ReadOnlyReplicaError, match=REPLICA.format(table)):
        drop_index(standby.dsn, table)
    assert table_count(pg_dsn, table) == 10


def test_opening_on_a_replica_never_creates_the_vector_extension(pg_dsn, standby) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS replica_plain")
        conn.execute("CREATE DATABASE replica_plain")
    standby.replay()
    dsn = psycopg.conninfo.make_conninfo(standby.dsn, dbname="replica_plain")
    with pytest.raises(
        ValueError, match=r"found no vector extension on this read replica: .* on the primary"
    ) as exc:
        MatryoshkaIndex.load(dsn, table="docs")
    one_line(exc)
    assert "CREATE EXTENSION" not in standby.log()


def test_a_write_the_server_refuses_as_read_only_names_the_primary(pg_dsn, pg_table) -> None:
    build(pg_dsn, pg_table, n=10)
    read_only = psycopg.conninfo.make_conninfo(
        pg_dsn, options="-c default_transaction_read_only=on"
    )
    index = MatryoshkaIndex.load(read_only, table=pg_table)
    assert not index._engine.read_only
    with pytest.raises(ReadOnlyReplicaError, match=r"refused a write .* as read-only") as exc:
        index.add_vectors(unit_rows(1, DIM, seed=4), ids=["stray"])
    one_line(exc)
    assert table_count(pg_dsn, pg_table) == 10
