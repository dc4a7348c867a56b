"""What only a server index does: reopening from the DSN, refusing a mismatched table, clear
errors for a server without pgvector, several processes on one index, a killed writer."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from matryoshka_retrieval import CallableEncoder, MatryoshkaIndex
from matryoshka_retrieval.index.postgres import META_TABLE, drop_index
from matryoshka_retrieval.index.postgres_filters import compile_pg_filter

SRC = str(Path(__file__).resolve().parents[2] / "src")


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def table_count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def copying(dsn: str, table: str, timeout: float) -> bool:
    """Wait until a COPY into ``table`` has sent rows to the server (True), or time out."""
    query = (
        "SELECT count(*) FROM pg_stat_progress_copy "
        "WHERE relid = %s::regclass AND tuples_processed > 0"
    )
    deadline = time.time() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.time() < deadline:
            if conn.execute(query, [table]).fetchone()[0]:
                return True
            time.sleep(0.05)
    return False


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# -- the index lives in the database ---------------------------------------------------------
def test_load_with_the_dsn_alone_reopens_the_index_and_its_configuration(pg_dsn, pg_table) -> None:
    vectors = unit_rows(400, 48)
    built = MatryoshkaIndex(
        backend="postgres",
        dsn=pg_dsn,
        table=pg_table,
        stages=[(16, 120), (32, 40)],
        precision="float16",
        ef_search=64,
    )
    built.add_vectors(vectors, ids=[f"v{i}" for i in range(400)], texts=["t"] * 400)
    before = [h.to_list() for h in built.search_vectors(vectors[:5], k=5)]

    opened = MatryoshkaIndex.load(pg_dsn, table=pg_table)

    assert (opened.dim, len(opened), opened.stages) == (48, 400, [(16, 120), (32, 40)])
    assert (opened.precision, opened.backend, opened.hnsw["ef_search"]) == (
        "float16",
        "postgres",
        64,
    )
    assert [h.to_list() for h in opened.search_vectors(vectors[:5], k=5)] == before
    assert opened.rerank_device == "postgres:server"


def test_a_write_from_one_client_is_seen_by_another(pg_dsn, pg_table) -> None:
    vectors = unit_rows(60, 16)
    writer = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8)
    writer.add_vectors(vectors[:50], ids=[f"a{i}" for i in range(50)])
    reader = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    writer.add_vectors(vectors[50:], ids=[f"b{i}" for i in range(10)])
    writer.delete(["a0"])
    assert len(reader) == 59
    assert reader.search(vectors[55], k=1).ids == ["b5"]
    assert reader.get(["a0"]) == []


def test_load_of_a_table_that_holds_no_index_names_it(pg_dsn) -> None:
    with pytest.raises(FileNotFoundError, match=r"no index named 'nothing_here'"):
        MatryoshkaIndex.load(pg_dsn, table="nothing_here")


def test_load_takes_the_dsn_as_a_str_with_a_table(pg_dsn) -> None:
    with pytest.raises(ValueError, match=r"table= its table name, got str and table=None"):
        MatryoshkaIndex.load(pg_dsn)
    with pytest.raises(TypeError, match=r"unexpected options \['mmap_size'\]"):
        MatryoshkaIndex.load(pg_dsn, table="x", mmap_size=3)


def test_the_encoder_is_checked_against_the_stored_model(pg_dsn, pg_table) -> None:
    encoder = CallableEncoder(lambda t: unit_rows(len(t), 16), dim=16, model_name="model-a")
    index = MatryoshkaIndex(encoder, backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8)
    index.add_texts(["one", "two"])
    other = CallableEncoder(lambda t: unit_rows(len(t), 16), dim=16, model_name="model-b")
    with pytest.raises(ValueError, match=r"model 'model-b' is not the model .*'model-a'"):
        MatryoshkaIndex.load(pg_dsn, table=pg_table, encoder=other)
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).model_name == "model-a"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"coarse_dim": 4}, r"made with coarse_dim=8; this index has coarse_dim=4"),
        (
            {"coarse_dim": 8, "precision": "binary"},
            r"made with precision='float32'; this index has precision='binary'",
        ),
        ({"coarse_dim": 8, "dim": 32}, r"stores 16-dim vectors; this index was given 32-dim"),
        (
            {"encoder": CallableEncoder(np.ones, dim=16, model_name="other"), "coarse_dim": 8},
            r"made with model_name='model-a'; this index has model_name='other'",
        ),
    ],
)
def test_a_table_made_with_another_model_or_dims_is_refused_naming_both(
    pg_dsn, pg_table, options, message
) -> None:
    encoder = CallableEncoder(lambda t: unit_rows(len(t), 16), dim=16, model_name="model-a")
    first = MatryoshkaIndex(encoder, backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8)
    first.add_texts(["kept"], ids=["kept"])
    with pytest.raises(ValueError, match=message) as exc:
        MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, **options)
    one_line(exc)
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).ids() == ["kept"]


# -- configuration and server errors ---------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "int8"}, r"precision='int8' has no pgvector index type"),
        ({"table": "Bad-Name"}, r"table='Bad-Name' is not a usable table name"),
        ({"table": "x" * 49}, r"1 to 48 lower-case letters"),
        ({"dsn": None}, r"backend='postgres' needs dsn="),
        ({"coarse_dim": 2048, "dim": 3000}, r"coarse_dim=2048 is past pgvector's HNSW limit"),
        ({"dim": 16001, "coarse_dim": 8}, r"16001-dim vectors do not fit .* 16000 dims"),
        ({"hnsw_m": 50, "ef_construction": 80, "coarse_dim": 8}, r"2 \* m <= ef_construction"),
    ],
)
def test_bad_postgres_configuration_names_the_value_and_limit(pg_dsn, options, message) -> None:
    settings = {"backend": "postgres", "dsn": pg_dsn, "table": "never_made", "dim": 16, **options}
    with pytest.raises(ValueError, match=message):
        MatryoshkaIndex(**settings)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('never_made')").fetchone()[0] is None


def test_float16_is_a_postgres_precision_and_dsn_a_postgres_option(pg_dsn) -> None:
    with pytest.raises(ValueError, match=r"precision='float16' is a halfvec prefix index"):
        MatryoshkaIndex(precision="float16")
    with pytest.raises(ValueError, match=r"dsn= and table= are for backend='postgres'"):
        MatryoshkaIndex(dsn=pg_dsn, table="t")


def test_an_unreachable_server_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"cannot connect to PostgreSQL") as exc:
        MatryoshkaIndex(
            backend="postgres", dsn="postgresql://nobody@/x?host=/nonexistent", table="t"
        )
    one_line(exc)


def test_a_database_without_the_vector_extension_gets_one_line_naming_both(pg_dsn) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS plain_db")
        conn.execute("DROP ROLE IF EXISTS plain_user")
        conn.execute("CREATE ROLE plain_user LOGIN")
        conn.execute("CREATE DATABASE plain_db OWNER plain_user")
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname="plain_db", user="plain_user")
    with pytest.raises(ValueError, match=r"needs pgvector >= 0\.8\.0.*found no vector extension"):
        MatryoshkaIndex(backend="postgres", dsn=dsn, table="docs", dim=8, coarse_dim=4)


def test_save_and_a_tune_without_enough_rows_explain_what_to_do_instead(
    pg_dsn, pg_table, tmp_path
) -> None:
    index = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8)
    index.add_vectors(unit_rows(50, 16))
    with pytest.raises(ValueError, match=r"stored in table .* as it is written"):
        index.save(tmp_path / "copy")
    with pytest.raises(ValueError, match=r"besides its 50 held-out samples; the index holds 50"):
        index.tune()
    assert not (tmp_path / "copy").exists() and len(index) == 50


def test_an_opened_table_tunes_on_the_server(pg_dsn, pg_table) -> None:
    # D13: load(dsn, table=...).tune() raised AttributeError: 'PostgresEngine' has no 'rotation'
    index = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8)
    index.add_vectors(unit_rows(400, 16))
    opened = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    result = opened.tune(0.9, k=5, sample=50)  # measured on the server, kept in the registry
    assert result.chosen["recall_low"] >= 0.9
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).config == opened.config
    with pytest.raises(ValueError, match=r"does not use calibration="):
        MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table="other", calibration={"lo": [0]})


# -- filters: SQL text never holds a key or a value -----------------------------------------
def test_filter_keys_and_values_never_reach_the_sql_text(pg_dsn, pg_table) -> None:
    key = "k'); DROP TABLE matryoshka_indexes; --"
    value = "v'; DELETE FROM pg_class; --"
    sql, params = compile_pg_filter({"$or": [{key: value}, {key: {"$gt": value}}]})
    assert "DROP" not in sql and "DELETE" not in sql and key in params
    index = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=4)
    index.add_vectors(unit_rows(3, 8), ids=["a", "b", "c"], metadatas=[{key: value}, {}, None])
    assert index.search(np.ones(8), k=3, filter={key: value}).ids == ["a"]
    assert index.ids(filter={key: {"$ne": value}}) == ["b", "c"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass(%s)", [META_TABLE]).fetchone()[0] is not None


def test_a_filtered_search_past_ef_search_still_fills_k(pg_dsn, pg_table) -> None:
    vectors = unit_rows(3000, 32, seed=4)
    metadatas = [{"tag": "rare" if i % 400 == 7 else "common"} for i in range(3000)]
    index = MatryoshkaIndex(
        backend="postgres",
        dsn=pg_dsn,
        table=pg_table,
        coarse_dim=8,
        rescore_multiplier=1,
        ef_search=10,
    )
    index.add_vectors(vectors, ids=[f"d{i}" for i in range(3000)], metadatas=metadatas)
    hits = index.search(vectors[0], k=8, filter={"tag": "rare"})
    assert sorted(hits.ids) == sorted(f"d{i}" for i in range(3000) if i % 400 == 7)


# -- several processes on one index ----------------------------------------------------------
def _writer(dsn: str, table: str, name: str, rounds: int, queue: multiprocessing.Queue) -> None:
    index = MatryoshkaIndex(backend="postgres", dsn=dsn, table=table, coarse_dim=8)
    seed = 1 if name == "a" else 2
    vectors = unit_rows(rounds * 100, 16, seed=seed)
    misses = 0
    for r in range(rounds):
        batch = slice(r * 100, (r + 1) * 100)
        ids = [f"{name}{i}" for i in range(batch.start, batch.stop)]
        index.add_vectors(vectors[batch], ids=ids, metadatas=[{"writer": name}] * 100)
        for i in (batch.start, batch.stop - 1):
            hit = index.search(vectors[i], k=1, filter={"writer": name})
            misses += hit.ids != [f"{name}{i}"]
        index.delete([f"{name}{batch.start}"])
    queue.put((name, misses, len(index)))


def test_two_processes_write_and_search_one_index_at_once(pg_dsn, pg_table) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(pg_dsn, pg_table, n, 6, queue)) for n in "ab"]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [(name, misses) for name, misses, _ in results] == [("a", 0), ("b", 0)]
    index = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    assert len(index) == 2 * (600 - 6)
    assert len(index.ids(filter={"writer": "a"})) == 594
    assert index.get(["a0", "a1", "b100", "b599"])[0].id == "a1"


def test_a_client_killed_in_the_middle_of_an_add_leaves_the_table_as_before(
    pg_dsn, pg_table
) -> None:
    index = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=16)
    kept = unit_rows(100, 64)
    index.add_vectors(kept, ids=[f"k{i}" for i in range(100)])
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from matryoshka_retrieval import MatryoshkaIndex
        index = MatryoshkaIndex.load({pg_dsn!r}, table={pg_table!r})
        vectors = np.random.default_rng(5).normal(size=(400_000, 64)).astype(np.float32)
        print("adding", flush=True)
        index.add_vectors(vectors, ids=[f"big{{i}}" for i in range(len(vectors))])
        print("done", flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "adding"
    assert copying(pg_dsn, pg_table, timeout=120)  # the server has taken rows of the COPY
    child.kill()
    assert child.wait(timeout=30) == -9
    deadline = time.time() + 30
    while table_count(pg_dsn, pg_table) != 100 and time.time() < deadline:
        time.sleep(0.2)  # the server notices the lost client and rolls back
    assert table_count(pg_dsn, pg_table) == 100
    assert index.search(kept[7], k=1).ids == ["k7"] and len(index) == 100
    index.add_vectors(kept[:1], ids=["big0"])  # the id of the lost add is free
    assert len(index) == 101


def test_drop_index_removes_the_table_and_its_manifest(pg_dsn, pg_table) -> None:
    MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, dim=8, coarse_dim=4)
    assert drop_index(pg_dsn, pg_table) is True
    assert drop_index(pg_dsn, pg_table) is False
    with pytest.raises(FileNotFoundError):
        MatryoshkaIndex.load(pg_dsn, table=pg_table)


def test_full_vectors_up_to_1500_dims_stay_in_their_row(pg_dsn, pg_table) -> None:
    vectors = unit_rows(20, 768)
    index = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=64)
    index.add_vectors(vectors, ids=[f"v{i}" for i in range(20)])
    query = (
        "SELECT a.attstorage, pg_relation_size(c.reltoastrelid) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname = %s AND a.attname = 'embedding'"
    )
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(query, [pg_table]).fetchone() == ("p", 0)
    assert index.search(vectors[3], k=1).ids == ["v3"]


def test_a_table_that_is_not_an_index_is_refused_and_left_alone(pg_dsn, pg_table) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(f'CREATE TABLE "{pg_table}" (note text)')
        conn.execute(f"INSERT INTO \"{pg_table}\" VALUES ('mine')")
    with pytest.raises(ValueError, match=r"exists and holds no index of this library"):
        MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, dim=8, coarse_dim=4)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f'SELECT note FROM "{pg_table}"').fetchall() == [("mine",)]
