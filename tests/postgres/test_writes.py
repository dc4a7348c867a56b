"""Concurrent writers, deletes that count what they deleted, values past the driver's limits,
huge ``k``, exact scans of small tables and settings the server engine does not honour."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time

import numpy as np
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index.config import IndexConfig
from matryoshka_retrieval.index.postgres import (
    META_TABLE,
    RefusedValueError,
    WriteConflictError,
    open_postgres_index,
)
from matryoshka_retrieval.index.postgres.sql import _Sql, build_graph

from .test_postgres import table_count, unit_rows


def build(dsn: str, table: str, n: int, dim: int = 16, **options) -> MatryoshkaIndex:
    settings = {"coarse_dim": 8, **options}
    index = MatryoshkaIndex(backend="postgres", dsn=dsn, table=table, **settings)
    if n:
        index.add_vectors(unit_rows(n, dim), ids=[f"v{i:04d}" for i in range(n)])
    return index


def together(*calls):
    """Run ``calls`` at once, each in a thread of its own; returns each result or error."""
    barrier = threading.Barrier(len(calls))
    out: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return out


# -- deletes count what they deleted ---------------------------------------------------------
def test_two_clients_deleting_the_same_ids_count_each_row_once(pg_dsn, pg_table) -> None:  # D7
    build(pg_dsn, pg_table, n=1000, dim=8, coarse_dim=4)
    a, b = (MatryoshkaIndex.load(pg_dsn, table=pg_table) for _ in "ab")
    found = a._engine.rows_of([f"v{i:04d}" for i in range(1000)])
    counts = together(lambda: a._engine.remove(found), lambda: b._engine.remove(found))
    assert sorted(counts) in ([0, 1000], [1000, 0]) or sum(counts) == 1000
    assert all(isinstance(c, int) for c in counts) and table_count(pg_dsn, pg_table) == 0


def test_a_delete_counts_only_the_rows_another_client_had_not_deleted(pg_dsn, pg_table) -> None:
    index = build(pg_dsn, pg_table, n=10)  # D7
    found = index._engine.rows_of([f"v{i:04d}" for i in range(10)])
    other = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    assert other.delete([f"v{i:04d}" for i in range(4)]) == 4
    assert index._engine.remove(found) == 6
    assert index._engine.remove(found) == 0


# -- concurrent adds of the same new ids -----------------------------------------------------
def test_two_clients_adding_the_same_ids_in_opposite_orders_never_deadlock(
    pg_dsn, pg_table
) -> None:  # D9
    build(pg_dsn, pg_table, n=0, dim=8, coarse_dim=4).add_vectors(unit_rows(1, 8), ids=["seed"])
    a, b = (MatryoshkaIndex.load(pg_dsn, table=pg_table) for _ in "ab")
    ids = [f"n{i:05d}" for i in range(3000)]
    vectors = unit_rows(3000, 8, seed=2)
    results = together(
        lambda: a._engine.append(vectors, ids, [None] * 3000, [None] * 3000, []),
        lambda: b._engine.append(vectors[::-1], ids[::-1], [None] * 3000, [None] * 3000, []),
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1, results
    assert isinstance(errors[0], ValueError)
    assert "already in table" in str(errors[0]) and "nothing was stored" in str(errors[0])
    assert table_count(pg_dsn, pg_table) == 3001


def test_an_add_in_unsorted_id_order_keeps_its_order_oldest_first(pg_dsn, pg_table) -> None:
    index = build(pg_dsn, pg_table, n=0, dim=8, coarse_dim=4)  # D9: rows go in sorted by id
    index.add_vectors(unit_rows(4, 8), ids=["d", "b", "c", "a"])
    index.add_vectors(unit_rows(2, 8, seed=1), ids=["z", "0"])
    assert index.ids() == ["d", "b", "c", "a", "z", "0"]


def test_a_write_that_loses_a_real_deadlock_twice_is_the_librarys_error(
    pg_dsn, pg_table
) -> None:  # D9
    index = build(pg_dsn, pg_table, n=2)
    locks = f'"{pg_table}_locks"'
    with psycopg.connect(pg_dsn, autocommit=True) as setup:
        setup.execute(f"CREATE TABLE {locks} (k int PRIMARY KEY)")
        setup.execute(f"INSERT INTO {locks} VALUES (1), (2)")
    tries: list[int] = []

    def other_client(holds_two: threading.Event, waits: threading.Event) -> None:
        with psycopg.connect(pg_dsn) as other:  # loses no deadlock: its timeout is long
            other.execute("SET deadlock_timeout = '60s'")
            other.execute(f"UPDATE {locks} SET k = k WHERE k = 2")
            holds_two.set()
            waits.wait(30)
            time.sleep(0.3)  # the write waits first, so the write is the one rolled back
            other.execute(f"UPDATE {locks} SET k = k WHERE k = 1")

    def deadlocks(cur: object) -> None:
        tries.append(1)
        holds_two, waits = threading.Event(), threading.Event()
        thread = threading.Thread(target=other_client, args=(holds_two, waits))
        thread.start()
        holds_two.wait(30)
        cur.execute("SET LOCAL deadlock_timeout = '3s'")
        cur.execute(f"UPDATE {locks} SET k = k WHERE k = 1")
        waits.set()
        try:
            cur.execute(f"UPDATE {locks} SET k = k WHERE k = 2")
        finally:
            threading.Thread(target=thread.join).start()

    session = index._engine._session
    with pytest.raises(WriteConflictError, match=r"lost a conflict with another client twice"):
        session.write(lambda cur: None, deadlocks)
    assert len(tries) == 2 and len(index) == 2


# -- values the driver or the server cannot store --------------------------------------------
def add_raw(index: MatryoshkaIndex, ids: list[str], texts=None, metas=None) -> None:
    """Straight to the engine, past the facade's checks of ids and texts."""
    n = len(ids)
    index._engine.append(
        unit_rows(n, 16, seed=5), ids, texts or [None] * n, metas or [None] * n, []
    )


def test_a_nul_in_a_text_is_refused_naming_the_record_and_nothing_is_stored(
    pg_dsn, pg_table
) -> None:  # D10
    index = build(pg_dsn, pg_table, n=3)
    with pytest.raises(
        ValueError, match=r"cannot store the text of id 'bad' \(it holds a NUL character\)"
    ) as exc:
        add_raw(index, ["fine", "bad"], texts=["ok", "a\x00b"])
    assert isinstance(exc.value, RefusedValueError) and "nothing" in str(exc.value)
    assert table_count(pg_dsn, pg_table) == 3


def test_a_nul_in_an_id_is_refused_by_the_lookup_as_a_value_error(pg_dsn, pg_table) -> None:
    index = build(pg_dsn, pg_table, n=3)  # D10
    with pytest.raises(ValueError, match=r"PostgreSQL refused a value for index .*NUL"):
        index._engine.rows_of(["a\x00b"])
    with pytest.raises(ValueError, match=r"cannot store the id 'a\\x00b' \(it holds a NUL"):
        add_raw(index, ["a\x00b"])
    assert table_count(pg_dsn, pg_table) == 3


def test_a_nul_in_a_metadata_string_is_refused_and_nothing_is_stored(pg_dsn, pg_table) -> None:
    index = build(pg_dsn, pg_table, n=3)  # D10
    with pytest.raises(
        ValueError, match=r"the metadata of id 'm' \(a string in it holds a NUL character\)"
    ):
        add_raw(index, ["m"], metas=['{"note": "a\\u0000b"}'])
    assert table_count(pg_dsn, pg_table) == 3


def test_a_three_megabyte_id_is_refused_as_a_value_error_and_nothing_is_stored(
    pg_dsn, pg_table
) -> None:  # D10
    index = build(pg_dsn, pg_table, n=3)
    huge = secrets.token_hex(1_500_000)
    message = r"cannot store the id '[0-9a-f]{24}'\.\.\. of 3000000 bytes .*index row requires"
    with pytest.raises(ValueError, match=message) as exc:
        add_raw(index, ["small", huge])
    assert "nothing of this write was stored" in str(exc.value)
    assert table_count(pg_dsn, pg_table) == 3


# -- k past anything a table holds -----------------------------------------------------------
@pytest.mark.parametrize("exact_below", [0, "auto"])
def test_a_k_past_any_table_returns_every_row(pg_dsn, pg_table, exact_below) -> None:  # D14
    index = build(pg_dsn, pg_table, n=30, exact_below=exact_below)
    hits = index.search_vectors(unit_rows(2, 16, seed=3), 2**62)
    assert [len(h) for h in hits] == [30, 30]
    assert sorted(hits[0].ids) == [f"v{i:04d}" for i in range(30)]


# -- exact scans of small tables ---------------------------------------------------------------
def test_a_small_index_with_a_short_prefix_returns_the_exact_top_k(pg_dsn, pg_table) -> None:
    vectors = unit_rows(500, 256, seed=11)  # D5: 500 * 256 floats, under EXACT_SCAN_FLOATS
    index = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=64)
    index.add_vectors(vectors, ids=[f"v{i}" for i in range(500)])
    queries = unit_rows(20, 256, seed=12)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    hits = index.search_vectors(queries, k=10)
    assert [h.ids for h in hits] == [[f"v{i}" for i in row] for row in truth]


def test_exact_below_switches_to_the_funnel_right_after_the_handles_own_add(
    pg_dsn, pg_table
) -> None:  # D5
    index = build(pg_dsn, pg_table, n=40, exact_below=50)
    query = unit_rows(1, 16, seed=6)[0]
    exact = index.search(query, k=5)
    assert all(h.coarse_score == h.score for h in exact)  # one full-vector scan
    index.add_vectors(unit_rows(20, 16, seed=7), ids=[f"w{i}" for i in range(20)])
    funnel = index.search(query, k=5)
    assert any(h.coarse_score != h.score for h in funnel)  # scored by the 8-dim prefix first


# -- settings of a saved folder ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"full_vectors": "bogus"}, r"full_vectors='bogus' is a setting of a saved folder; "),
        ({"full_vectors": "mmap"}, r"backend='postgres' keeps the full vectors in its table"),
        ({"verify": True}, r"verify=True checks a saved folder's vectors file; backend="),
    ],
)
def test_load_settings_of_a_saved_folder_are_refused_naming_the_backend(
    pg_dsn, pg_table, setting, message
) -> None:  # D19
    build(pg_dsn, pg_table, n=2)
    arguments = {"encoder": None, "device": "auto", "rerank": "auto", "options": {}}
    with pytest.raises(ValueError, match=message):
        open_postgres_index(MatryoshkaIndex, pg_dsn, table=pg_table, **arguments, **setting)
    opened = open_postgres_index(
        MatryoshkaIndex, pg_dsn, table=pg_table, **arguments, full_vectors="auto", verify=False
    )
    assert len(opened) == 2


def graph_rows(dsn: str, table: str) -> float | None:
    """The rows the HNSW index of the prefixes was built over, or None if there is none."""
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", [f'"{table}_prefix"']
        ).fetchone()
    return None if found is None else float(found[0])


def no_autovacuum(dsn: str, table: str) -> None:
    """Keep the server from analysing ``table`` (which rewrites the index's row estimate)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')


def test_the_first_add_builds_the_prefix_graph_from_its_rows(pg_dsn, pg_table) -> None:
    index = MatryoshkaIndex(
        backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8, exact_below=0
    )
    vectors = unit_rows(3000, 32)
    index.add_vectors(vectors, ids=[f"v{i}" for i in range(3000)])  # makes the table too
    no_autovacuum(pg_dsn, pg_table)
    assert graph_rows(pg_dsn, pg_table) == 3000  # built from the loaded rows, not grown
    index.add_vectors(unit_rows(5, 32, seed=9), ids=[f"w{i}" for i in range(5)])
    assert graph_rows(pg_dsn, pg_table) == 3000  # later rows go into the graph, not a rebuild
    hits = index.search_vectors(np.vstack([vectors[:20], unit_rows(5, 32, seed=9)]), k=1)
    assert [h.ids[0] for h in hits] == [f"v{i}" for i in range(20)] + [f"w{i}" for i in range(5)]


def test_concurrent_first_adds_take_turns_and_keep_every_row(pg_dsn, pg_table) -> None:
    a, b = (
        MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8, exact_below=0)
        for _ in "ab"
    )
    rows = unit_rows(4000, 16, seed=3)
    results = together(
        lambda: a.add_vectors(rows[:2000], ids=[f"a{i}" for i in range(2000)]),
        lambda: b.add_vectors(rows[2000:], ids=[f"b{i}" for i in range(2000)]),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert table_count(pg_dsn, pg_table) == 4000
    assert graph_rows(pg_dsn, pg_table) in (2000, 4000)  # built once, by the first to commit
    hits = a.search_vectors(rows[1990:2010], k=1)
    assert [h.ids[0] for h in hits] == [f"a{i}" for i in range(1990, 2000)] + [
        f"b{i}" for i in range(10)
    ]


def test_an_index_made_with_its_dim_has_its_graph_and_takes_rows_from_a_writer_role(
    pg_dsn, pg_table
) -> None:
    # the graph comes with a table made ahead of its rows, so a role that may write rows but
    # does not own the table (and so could not build an index on it) loads it
    made = dict(backend="postgres", table=pg_table, coarse_dim=8, dim=16, exact_below=0)
    owner = MatryoshkaIndex(dsn=pg_dsn, **made)
    assert graph_rows(pg_dsn, pg_table) == 0
    role = f"{pg_table}_writer"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{pg_table}", {META_TABLE} TO "{role}"'
        )
        conn.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    parts = conninfo_to_dict(pg_dsn)
    writer = MatryoshkaIndex.load(make_conninfo(**{**parts, "user": role}), table=pg_table)
    rows = unit_rows(3000, 16, seed=4)
    writer.add_vectors(rows, ids=[f"r{i}" for i in range(3000)])
    assert [h.ids[0] for h in owner.search_vectors(rows[:10], k=1)] == [f"r{i}" for i in range(10)]


def test_the_graph_build_raises_the_servers_memory_and_never_lowers_it(pg_dsn, pg_table) -> None:
    sql = _Sql(pg_table, IndexConfig.create(backend="postgres", coarse_dim=8), 16, column=True)
    with psycopg.connect(pg_dsn) as conn:
        for setting, during in (("64MB", "512MB"), ("1GB", "1GB")):
            with conn.transaction():
                cur = conn.cursor()
                for statement in sql.create():
                    cur.execute(statement)
                cur.execute(f"SET LOCAL maintenance_work_mem = '{setting}'")
                build_graph(cur, sql)
                assert cur.execute("SHOW maintenance_work_mem").fetchone()[0] == during
                assert sql.has_graph(cur)
                raise psycopg.Rollback()


class _NoSharedMemory:
    """A cursor on a server whose parallel index builds cannot have their shared memory (a
    container's small /dev/shm), which cannot be made here: each parallel build fails."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.connection = self
        self.serial = False

    def transaction(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def execute(self, statement: str, params: object = None) -> _NoSharedMemory:
        self.statements.append(statement)
        self.serial |= "max_parallel_maintenance_workers" in statement
        if statement.startswith("CREATE INDEX") and not self.serial:
            raise psycopg.errors.DiskFull("could not resize shared memory segment")
        return self


def test_a_graph_build_without_shared_memory_runs_again_without_parallel_workers() -> None:
    sql = _Sql("docs", IndexConfig.create(backend="postgres", coarse_dim=8), 16, column=True)
    cur = _NoSharedMemory()
    build_graph(cur, sql)
    builds = [s for s in cur.statements if s.startswith("CREATE INDEX")]
    assert len(builds) == 2 and cur.serial
