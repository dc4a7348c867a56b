"""A handle stays bound to the index it opened: a drop, a re-creation, a restart of the server,
a frozen server or a lost connection each give one clear error of this library (or, for a read
after a restart, the right answer), never a raw driver error or a write into another index."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index.postgres import (
    META_TABLE,
    ConnectionLostError,
    ServerTimeoutError,
    StaleIndexError,
    WriteInDoubtError,
    drop_index,
)
from pg_server import restart_server

from .test_postgres import one_line, table_count, unit_rows

STALE = (
    r"index '{}' was dropped \(or dropped and re-created\) since this handle opened it; "
    "open it again"
)


def build(dsn: str, table: str, n: int = 20, dim: int = 16, **options) -> MatryoshkaIndex:
    index = MatryoshkaIndex(backend="postgres", dsn=dsn, table=table, coarse_dim=8, **options)
    index.add_vectors(unit_rows(n, dim), ids=[f"v{i}" for i in range(n)])
    return index


def end_other_sessions(dsn: str) -> int:
    """End every other client session of the database, as an administrator would."""
    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
        "current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute(query).fetchone()[0])


def locked(dsn: str, table: str) -> psycopg.Connection:
    """A connection holding an exclusive lock on ``table`` until it is closed: a server
    that answers nothing on that table (a frozen one, to the client)."""
    conn = psycopg.connect(dsn)
    conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
    return conn


# -- a dropped or re-created index -----------------------------------------------------------
def test_a_handle_refuses_to_write_into_an_index_made_again_under_its_name(
    pg_dsn, pg_table
) -> None:  # D4
    old = build(pg_dsn, pg_table)
    drop_index(pg_dsn, pg_table)
    new = build(pg_dsn, pg_table, n=3)
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)) as exc:
        old.add_vectors(unit_rows(2, 16, seed=9), ids=["stray0", "stray1"])
    one_line(exc)
    assert isinstance(exc.value, RuntimeError)
    assert new.ids() == ["v0", "v1", "v2"]


def test_a_handle_refuses_to_search_an_index_made_again_under_its_name(
    pg_dsn, pg_table
) -> None:  # D4
    old = build(pg_dsn, pg_table)
    drop_index(pg_dsn, pg_table)
    build(pg_dsn, pg_table, n=3)
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)):
        old.search(unit_rows(1, 16)[0], k=2)


def test_a_handle_refuses_to_delete_from_an_index_made_again_under_its_name(
    pg_dsn, pg_table
) -> None:  # D4
    old = build(pg_dsn, pg_table)
    drop_index(pg_dsn, pg_table)
    build(pg_dsn, pg_table, n=3)
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)):
        old._engine.remove({"v0": 1})
    assert table_count(pg_dsn, pg_table) == 3


def test_a_handle_whose_table_was_dropped_gets_the_clear_error_on_search(
    pg_dsn, pg_table
) -> None:  # D12
    index = build(pg_dsn, pg_table)
    drop_index(pg_dsn, pg_table)
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)) as exc:
        index.search(unit_rows(1, 16)[0], k=2)
    one_line(exc)


def test_the_length_of_a_dropped_index_is_the_clear_error(pg_dsn, pg_table) -> None:  # D12
    index = build(pg_dsn, pg_table)
    drop_index(pg_dsn, pg_table)
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)):
        len(index)


def test_a_table_dropped_by_hand_under_a_handle_gives_the_clear_error(
    pg_dsn, pg_table
) -> None:  # D12
    index = build(pg_dsn, pg_table)
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f'DROP TABLE "{pg_table}"')  # the registry row stays: UndefinedTable
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)):
        index.ids()
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)):
        index.add_vectors(unit_rows(1, 16), ids=["late"])


def test_an_index_made_again_with_other_dims_gives_the_clear_error_not_a_data_error(
    pg_dsn, pg_table
) -> None:  # D12
    old = build(pg_dsn, pg_table, dim=16)
    drop_index(pg_dsn, pg_table)
    build(pg_dsn, pg_table, n=3, dim=32)
    with pytest.raises(StaleIndexError, match=STALE.format(pg_table)):
        old.get(["v0"], include_vectors=True)
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).dim == 32


# -- names that are not an index's -----------------------------------------------------------
def test_drop_index_refuses_the_shared_registry_by_name(pg_dsn, pg_table) -> None:  # D1
    build(pg_dsn, pg_table, n=2)
    with pytest.raises(ValueError, match=rf"table='{META_TABLE}' is the registry of every index"):
        drop_index(pg_dsn, META_TABLE)
    assert len(MatryoshkaIndex.load(pg_dsn, table=pg_table)) == 2


def test_the_registry_cannot_be_opened_as_an_index(pg_dsn) -> None:  # D1
    with pytest.raises(ValueError, match=r"is the registry of every index in this database"):
        MatryoshkaIndex.load(pg_dsn, table=META_TABLE)


@pytest.mark.parametrize("name", ["pg_class", "pg_mine"])
def test_a_name_in_the_system_catalogs_prefix_is_refused_on_create(pg_dsn, name) -> None:  # D15
    with pytest.raises(ValueError, match=rf"table='{name}' starts with 'pg_'") as exc:
        MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=name, dim=8, coarse_dim=4)
    one_line(exc)


def test_a_name_in_the_system_catalogs_prefix_is_refused_on_load_and_drop(pg_dsn) -> None:  # D15
    with pytest.raises(ValueError, match=r"table='pg_class' starts with 'pg_', which PostgreSQL"):
        MatryoshkaIndex.load(pg_dsn, table="pg_class")
    with pytest.raises(ValueError, match=r"table='pg_class' starts with 'pg_'"):
        drop_index(pg_dsn, "pg_class")


# -- timeouts: a frozen server ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (0, ValueError, r"timeout=0 must be a positive number of seconds"),
        (-1.5, ValueError, r"timeout=-1\.5 must be a positive number"),
        (float("inf"), ValueError, r"timeout=inf must be a positive number"),
        ("5", TypeError, r"timeout='5' must be a number of seconds or None, not str"),
        (True, TypeError, r"timeout=True must be a number of seconds or None, not bool"),
    ],
)
def test_a_bad_timeout_is_refused_naming_it(pg_dsn, pg_table, timeout, error, message) -> None:
    build(pg_dsn, pg_table, n=2)
    with pytest.raises(error, match=message):
        MatryoshkaIndex.load(pg_dsn, table=pg_table, timeout=timeout)


def test_a_search_on_a_frozen_server_stops_at_the_timeout_with_the_librarys_error(
    pg_dsn, pg_table
) -> None:  # D11
    build(pg_dsn, pg_table)
    index = MatryoshkaIndex.load(pg_dsn, table=pg_table, timeout=0.5)
    blocker = locked(pg_dsn, pg_table)
    try:
        started = time.monotonic()
        with pytest.raises(ServerTimeoutError, match=r"ran past timeout=0\.5s") as exc:
            index.search(unit_rows(1, 16)[0], k=3)
        assert time.monotonic() - started < 10
        assert isinstance(exc.value, TimeoutError)
    finally:
        blocker.close()
    assert len(index.search(unit_rows(1, 16)[0], k=3)) == 3


def test_a_write_on_a_frozen_server_stops_at_the_timeout_and_stores_nothing(
    pg_dsn, pg_table
) -> None:  # D11
    build(pg_dsn, pg_table)
    index = MatryoshkaIndex.load(pg_dsn, table=pg_table, timeout=0.5)
    blocker = locked(pg_dsn, pg_table)
    try:
        with pytest.raises(ServerTimeoutError, match=r"nothing of a cancelled write is stored"):
            index._engine.append(unit_rows(2, 16), ["w0", "w1"], [None, None], [None, None], [])
    finally:
        blocker.close()
    assert len(index) == 20 and index.get(["w0", "w1"]) == []


def test_a_statement_past_the_timeout_is_cancelled_by_the_server(pg_dsn, pg_table) -> None:
    build(pg_dsn, pg_table, n=2)
    index = MatryoshkaIndex.load(pg_dsn, table=pg_table, timeout=0.2)
    session = index._engine._session
    with pytest.raises(ServerTimeoutError, match=r"canceling statement due to statement timeout"):
        session.read(lambda cur: cur.execute("SELECT pg_sleep(5)").fetchall())


# -- lost connections and restarts ------------------------------------------------------------
def test_a_read_after_the_server_ended_the_session_connects_again(pg_dsn, pg_table) -> None:
    index = build(pg_dsn, pg_table)  # D11
    vectors = unit_rows(20, 16)
    assert end_other_sessions(pg_dsn) >= 1
    assert index.search(vectors[4], k=1).ids == ["v4"]
    assert len(index) == 20


def test_a_write_after_the_server_ended_the_session_connects_again_and_commits_once(
    pg_dsn, pg_table
) -> None:  # D11
    index = build(pg_dsn, pg_table)
    end_other_sessions(pg_dsn)
    index._engine.append(unit_rows(2, 16, seed=3), ["n0", "n1"], ["a", "b"], [None, None], [])
    assert table_count(pg_dsn, pg_table) == 22


def test_a_write_whose_connection_is_lost_midway_says_it_may_have_committed(
    pg_dsn, pg_table
) -> None:  # D11
    index = build(pg_dsn, pg_table)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            index._engine.append(unit_rows(2, 16, seed=3), ["n0", "n1"], [None] * 2, [None] * 2, [])
        except BaseException as exc:
            failure.append(exc)

    blocker = locked(pg_dsn, pg_table)
    writer = threading.Thread(target=write)
    writer.start()
    waiting = (
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'COPY%'"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        deadline = time.monotonic() + 30
        while not (row := admin.execute(waiting).fetchone()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert row is not None
        admin.execute("SELECT pg_terminate_backend(%s)", [row[0]])
    writer.join(timeout=30)
    blocker.close()
    assert len(failure) == 1 and isinstance(failure[0], WriteInDoubtError)
    assert "the write may or may not have committed" in str(failure[0])
    assert isinstance(failure[0], ConnectionError)
    assert len(index) == 20  # the next call connects again


def test_the_same_handle_reads_and_writes_after_the_server_restarts(pg_dsn, pg_table) -> None:
    index = build(pg_dsn, pg_table)  # D11
    restart_server()
    assert index.search(unit_rows(20, 16)[7], k=1).ids == ["v7"]
    index.add_vectors(unit_rows(1, 16, seed=8), ids=["after"])
    assert len(index) == 21


def test_a_closed_handle_says_so_and_closing_again_is_nothing(pg_dsn, pg_table) -> None:
    index = build(pg_dsn, pg_table)
    index._engine.close()
    index._engine.close()
    with pytest.raises(ConnectionLostError, match=rf"the handle of index '{pg_table}' was closed"):
        index.search(np.ones(16), k=1)


# -- the package keeps the single module's names -------------------------------------------------
def test_the_names_of_the_former_modules_still_import_and_the_engine_stands_alone() -> None:
    from matryoshka_retrieval.index import postgres, postgres_filters
    from matryoshka_retrieval.index.engine import Engine

    old = ["META_TABLE", "MIN_PGVECTOR", "PostgresEngine", "drop_index", "open_postgres_index"]
    old += ["read_manifest", "server_location", "check_table", "_Sql", "_connect"]
    assert [name for name in old if not hasattr(postgres, name)] == []
    assert postgres_filters.compile_pg_filter is postgres.compile_pg_filter
    assert not issubclass(postgres.PostgresEngine, Engine)
    assert issubclass(postgres.RefusedValueError, ValueError)
    assert issubclass(postgres.ServerTimeoutError, TimeoutError)
    assert issubclass(postgres.WriteInDoubtError, ConnectionError)


def test_closing_a_handle_ends_its_server_session_and_later_use_says_so(pg_dsn, pg_table) -> None:
    build(pg_dsn, pg_table).close()
    with MatryoshkaIndex.load(pg_dsn, table=pg_table) as index:
        assert len(index) == 20
        pid = index._engine._session._conn.info.backend_pid
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        deadline = time.monotonic() + 5
        while conn.execute(alive, [pid]).fetchone()[0]:
            assert time.monotonic() < deadline, "the closed handle's session is still open"
            time.sleep(0.05)
    with pytest.raises(ValueError, match=r"the index was closed"):
        index.search_vectors(unit_rows(1, 16), k=3)
    assert len(MatryoshkaIndex.load(pg_dsn, table=pg_table)) == 20  # the table is untouched
