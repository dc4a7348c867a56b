"""copy_index and ``matryoshka copy``: an index moves between a saved folder and a PostgreSQL
table, with its records, full vectors, configuration, model name and coarse rotation, and a
copy that cannot be made, or fails midway, leaves nothing behind."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from matryoshka_retrieval import CallableEncoder, MatryoshkaIndex, copy_index
from matryoshka_retrieval.cli import main
from matryoshka_retrieval.projection import ProjectedEncoder, fit_projection

DIM, ROWS, QUERIES = 64, 2000, 300
MODEL = "synthetic-64"


def corpus(n: int = ROWS, seed: int = 0) -> np.ndarray:
    """Unit vectors whose variance falls along the dims, so a short prefix shortlists well."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)) * np.exp(-np.arange(DIM) / 12)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def queries(vectors: np.ndarray, seed: int = 1) -> np.ndarray:
    """Stored rows with noise: queries with clear neighbours."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.choice(vectors.shape[0], QUERIES, replace=False)]
    return picked + rng.normal(scale=0.05, size=picked.shape).astype(np.float32)


def encoder() -> CallableEncoder:
    return CallableEncoder(lambda texts: corpus(len(texts), seed=9), dim=DIM, model_name=MODEL)


def saved(folder: Path, vectors: np.ndarray, **settings: Any) -> MatryoshkaIndex:
    """A saved folder of ``vectors`` whose insertion order is not the ids' order, with a
    replaced and a deleted record, texts and metadata (some absent)."""
    index = MatryoshkaIndex(encoder(), **settings)
    n = vectors.shape[0]
    ids = [f"doc-{(i * 7919) % n:05d}" for i in range(n)]
    texts = [None if i % 5 == 0 else f"text {i}" for i in range(n)]
    metas = [None if i % 3 == 0 else {"i": i, "even": i % 2 == 0, "w": i / 7} for i in range(n)]
    index.add_vectors(vectors, ids=ids, texts=texts, metadatas=metas)
    index.add_vectors(vectors[:1], ids=[ids[5]], texts=["replaced"], on_conflict="replace")
    index.delete([ids[7]])
    index.save(folder)
    return MatryoshkaIndex.load(folder, chroma_client=settings.get("chroma_client"))


def contents(index: MatryoshkaIndex) -> tuple[list[str], list[Any], np.ndarray]:
    """Ids in the index's order, (text, metadata) of each, and the full vectors."""
    ids = index.ids()
    records = index.get(ids, include_vectors=True)
    return ids, [(r.text, r.metadata) for r in records], np.stack([r.vector for r in records])


def hits(index: MatryoshkaIndex, query_vectors: np.ndarray, k: int = 10) -> list[Any]:
    return [h.to_list() for h in index.search_vectors(query_vectors, k=k)]


def registered(dsn: str, table: str) -> bool:
    try:
        MatryoshkaIndex.load(dsn, table=table)
    except FileNotFoundError:
        return False
    return True


def table_exists(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass(%s)", [table]).fetchone()[0] is not None


FUNNEL = {"coarse_dim": 16, "rescore_multiplier": 3, "exact_below": 0}
EXACT = {"coarse_dim": 16, "rescore_multiplier": 3, "exact_below": 5000}


# -- folder -> table -> folder ------------------------------------------------------------------
def test_a_folder_copied_to_a_table_and_back_keeps_every_record_in_order(
    pg_dsn, pg_table, tmp_path
) -> None:
    original = saved(tmp_path / "a", corpus(), **FUNNEL)

    on_server = copy_index(tmp_path / "a", pg_dsn, table=pg_table, batch_size=700)
    back = copy_index(pg_dsn, tmp_path / "b", source_table=pg_table, batch_size=300)

    ids, records, vectors = contents(original)
    assert len(ids) == ROWS - 1 and ids != sorted(ids)
    assert ids[-1] == f"doc-{5 * 7919 % ROWS:05d}"  # the replaced record: now the newest
    for copy in (on_server, MatryoshkaIndex.load(pg_dsn, table=pg_table), back):
        copied_ids, copied_records, copied_vectors = contents(copy)
        assert copied_ids == ids
        assert copied_records == records
        assert copied_vectors.tobytes() == vectors.tobytes()
        assert (copy.dim, copy.model_name) == (DIM, MODEL)
    assert MatryoshkaIndex.load(tmp_path / "b").model_name == MODEL


@pytest.mark.parametrize("settings", [FUNNEL, EXACT], ids=["funnel", "exact"])
def test_a_folder_copied_to_a_table_and_back_keeps_its_config_and_its_hits(
    pg_dsn, pg_table, tmp_path, settings
) -> None:
    vectors = corpus()
    original = saved(tmp_path / "a", vectors, **settings)

    on_server = copy_index(tmp_path / "a", pg_dsn, table=pg_table)
    back = copy_index(pg_dsn, tmp_path / "b", source_table=pg_table)

    assert on_server.config == original.config.replace(backend="postgres")
    assert back.config == original.config
    assert MatryoshkaIndex.load(tmp_path / "b").config == original.config
    wanted = queries(vectors)
    assert hits(MatryoshkaIndex.load(tmp_path / "b"), wanted) == hits(original, wanted)


def test_tuned_graph_settings_go_to_the_table_and_back(pg_dsn, pg_table, tmp_path) -> None:
    settings = {"hnsw_m": 12, "ef_construction": 60, "ef_search": 96, "rescore_multiplier": 7}
    original = saved(tmp_path / "a", corpus(), backend="hnsw", coarse_dim=16, **settings)

    on_server = copy_index(tmp_path / "a", pg_dsn, table=pg_table)
    back = copy_index(pg_dsn, tmp_path / "b", source_table=pg_table, backend="hnsw")

    assert on_server.hnsw == {"m": 12, "ef_construction": 60, "ef_search": 96}
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).config == on_server.config
    assert back.config == original.config
    assert MatryoshkaIndex.load(tmp_path / "b").hnsw == original.hnsw


def test_a_table_copied_to_a_folder_gets_the_exact_backend_and_default_graph_settings(
    pg_dsn, pg_table, tmp_path
) -> None:
    table = MatryoshkaIndex(
        backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=16, ef_search=64
    )
    table.add_vectors(corpus(200), ids=[f"r{i}" for i in range(200)])

    copy = copy_index(pg_dsn, tmp_path / "c", source_table=pg_table)

    assert (copy.backend, copy.hnsw["ef_search"], copy.coarse_dim) == ("exact", 128, 16)
    assert copy.ids() == table.ids()


# -- table -> folder: the same hits ---------------------------------------------------------------
def test_a_small_table_and_its_folder_copy_both_scan_exactly_and_agree(
    pg_dsn, pg_table, tmp_path
) -> None:
    vectors = corpus()
    table = MatryoshkaIndex(
        backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=16, exact_below=5000
    )
    table.add_vectors(vectors, ids=[f"r{i}" for i in range(ROWS)])

    copy = copy_index(pg_dsn, tmp_path / "c", source_table=pg_table)

    wanted = queries(vectors)
    for ours, theirs in zip(
        copy.search_vectors(wanted, k=10), table.search_vectors(wanted, k=10), strict=True
    ):
        assert ours.ids == theirs.ids
        assert ours.scores == pytest.approx(theirs.scores, abs=1e-6)


def test_a_table_searched_through_its_funnel_and_its_folder_copy_find_the_same_hits(
    pg_dsn, pg_table, tmp_path
) -> None:
    vectors = corpus()
    table = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, **FUNNEL)
    table.add_vectors(vectors, ids=[f"r{i}" for i in range(ROWS)])

    copy = copy_index(pg_dsn, tmp_path / "c", source_table=pg_table)

    wanted = queries(vectors)
    ours, theirs = copy.search_vectors(wanted, k=10), table.search_vectors(wanted, k=10)
    overlap = np.mean(
        [len(set(a.ids) & set(b.ids)) / 10 for a, b in zip(ours, theirs, strict=True)]
    )
    # The server's HNSW graph and the folder's flat scan shortlist apart; both rerank exactly.
    assert overlap >= 0.97


# -- the coarse rotation ------------------------------------------------------------------------
def rotation_of(kind: str, vectors: np.ndarray) -> Any:
    return (
        fit_projection(vectors, method="pca", show_progress_bar=False) if kind == "fitted" else kind
    )


@pytest.mark.parametrize("kind", ["fitted", "pca"])
def test_a_rotated_folder_copied_to_a_folder_keeps_its_rotation_and_hits(tmp_path, kind) -> None:
    vectors = corpus()
    original = saved(tmp_path / "a", vectors, coarse_rotation=rotation_of(kind, vectors), **FUNNEL)

    copy_index(tmp_path / "a", tmp_path / "b")

    back = MatryoshkaIndex.load(tmp_path / "b")
    assert back.coarse_rotation.rotation.tobytes() == original.coarse_rotation.rotation.tobytes()
    wanted = queries(vectors)
    assert hits(back, wanted) == hits(original, wanted)


@pytest.mark.parametrize("kind", ["fitted", "pca"])
def test_a_rotated_folder_copied_to_a_table_and_back_keeps_its_rotation(
    pg_dsn, pg_table, tmp_path, kind
) -> None:
    vectors = corpus()
    original = saved(tmp_path / "a", vectors, coarse_rotation=rotation_of(kind, vectors), **FUNNEL)
    turn = original.coarse_rotation.rotation.tobytes()

    on_server = copy_index(tmp_path / "a", pg_dsn, table=pg_table)
    copy_index(pg_dsn, tmp_path / "b", source_table=pg_table)

    assert on_server.coarse_rotation.rotation.tobytes() == turn
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).coarse_rotation.rotation.tobytes() == turn
    back = MatryoshkaIndex.load(tmp_path / "b")
    assert back.coarse_rotation.rotation.tobytes() == turn
    wanted = queries(vectors)
    assert hits(back, wanted) == hits(original, wanted)


# -- what is refused, with nothing written ------------------------------------------------------
def test_a_folder_that_holds_an_index_is_not_overwritten(tmp_path) -> None:
    saved(tmp_path / "a", corpus(300), coarse_dim=16)
    saved(tmp_path / "b", corpus(100, seed=3), coarse_dim=16)
    manifest = (tmp_path / "b" / "manifest.json").read_bytes()

    with pytest.raises(ValueError, match=r"folder '.*b' is not empty \(it holds an index\)"):
        copy_index(tmp_path / "a", tmp_path / "b")

    assert (tmp_path / "b" / "manifest.json").read_bytes() == manifest
    assert len(MatryoshkaIndex.load(tmp_path / "b")) == 99


def test_a_folder_holding_other_files_is_not_written_into(tmp_path) -> None:
    saved(tmp_path / "a", corpus(300), coarse_dim=16)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")

    with pytest.raises(ValueError, match=r"folder '.*b' is not empty; a copy goes to a new place"):
        copy_index(tmp_path / "a", tmp_path / "b")

    assert [p.name for p in (tmp_path / "b").iterdir()] == ["notes.txt"]


def test_a_table_that_holds_an_index_is_not_written_into(pg_dsn, pg_table, tmp_path) -> None:
    saved(tmp_path / "a", corpus(300), coarse_dim=16)
    there = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=16)
    there.add_vectors(corpus(10, seed=4), ids=[f"x{i}" for i in range(10)])

    with pytest.raises(ValueError, match=rf"postgres table '{pg_table}' holds an index already"):
        copy_index(tmp_path / "a", pg_dsn, table=pg_table)

    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).ids() == [f"x{i}" for i in range(10)]


def test_an_index_is_not_copied_onto_itself(pg_dsn, pg_table, tmp_path) -> None:
    saved(tmp_path / "a", corpus(300), coarse_dim=16)
    copy_index(tmp_path / "a", pg_dsn, table=pg_table)

    with pytest.raises(ValueError, match=r"one index \(folder '.*a'\): nothing to copy"):
        copy_index(tmp_path / "a", tmp_path / "a" / ".." / "a")
    with pytest.raises(ValueError, match=rf"one index \(postgres table '{pg_table}'\)"):
        copy_index(pg_dsn, pg_dsn, source_table=pg_table, table=pg_table)

    assert len(MatryoshkaIndex.load(tmp_path / "a")) == 299
    assert len(MatryoshkaIndex.load(pg_dsn, table=pg_table)) == 299


def test_a_projection_is_not_copied_to_a_server_that_would_drop_it(
    pg_dsn, pg_table, tmp_path
) -> None:
    pca = fit_projection(corpus(), method="pca", show_progress_bar=False)
    index = MatryoshkaIndex(ProjectedEncoder(encoder(), pca), coarse_dim=16)
    index.add_texts([f"text {i}" for i in range(300)])
    index.save(tmp_path / "a")

    with pytest.raises(ValueError, match=r"went through a projection \(pca, fingerprint \w{12}\)"):
        copy_index(tmp_path / "a", pg_dsn, table=pg_table)

    assert not registered(pg_dsn, pg_table) and not table_exists(pg_dsn, pg_table)
    kept = copy_index(tmp_path / "a", tmp_path / "b")  # a folder stores it
    assert kept.manifest.projection == index.manifest.projection


def test_an_int8_prefix_goes_to_a_table_only_with_a_precision_it_takes(
    pg_dsn, pg_table, tmp_path
) -> None:
    original = saved(tmp_path / "a", corpus(300), coarse_dim=16, precision="int8")

    message = r"precision='int8' has no pgvector index type.*precision='float16'"
    with pytest.raises(ValueError, match=message):
        copy_index(tmp_path / "a", pg_dsn, table=pg_table)
    assert not registered(pg_dsn, pg_table) and not table_exists(pg_dsn, pg_table)

    copy = copy_index(tmp_path / "a", pg_dsn, table=pg_table, precision="float16")
    assert copy.config == original.config.replace(backend="postgres", precision="float16")


def test_an_adaptive_shortlist_goes_to_a_table_only_when_dropped(
    pg_dsn, pg_table, tmp_path
) -> None:
    saved(tmp_path / "a", corpus(300), coarse_dim=16, exact_below=0)
    manifest = tmp_path / "a" / "manifest.json"
    fields = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**fields, "adaptive_margin": 0.05}))  # as tune sets it

    with pytest.raises(ValueError, match=r"adaptive_margin=0.05 .* copy with adaptive_margin=None"):
        copy_index(tmp_path / "a", pg_dsn, table=pg_table)
    assert not table_exists(pg_dsn, pg_table)

    copy_index(tmp_path / "a", pg_dsn, table=pg_table, adaptive_margin=None)
    assert copy_index(tmp_path / "a", tmp_path / "b").config.adaptive_margin == 0.05


def delete_once_copying(dsn: str, source: str, destination: str, doomed: str) -> threading.Thread:
    """Another client: once the copy has written its first batch, it deletes ``doomed`` from
    the source (a record the copy has listed but not read yet)."""

    def run() -> None:
        deadline = time.time() + 60
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.time() < deadline:
                made = conn.execute("SELECT to_regclass(%s)", [destination]).fetchone()[0]
                if made and conn.execute(f"SELECT count(*) FROM {destination}").fetchone()[0]:
                    conn.execute(f"DELETE FROM {source} WHERE id = %s", [doomed])
                    return
                time.sleep(0.005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_copy_that_fails_midway_drops_the_table_it_made(pg_dsn, pg_table) -> None:
    source = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=f"{pg_table}s", coarse_dim=16)
    source.add_vectors(corpus(400), ids=[f"r{i}" for i in range(400)])
    deleter = delete_once_copying(pg_dsn, f"{pg_table}s", pg_table, "r399")

    with pytest.raises(ValueError, match=r"1 record\(s\) of the source were deleted .*'r399'"):
        copy_index(pg_dsn, pg_dsn, source_table=f"{pg_table}s", table=pg_table, batch_size=10)

    deleter.join()
    assert not registered(pg_dsn, pg_table) and not table_exists(pg_dsn, pg_table)
    assert len(source) == 399


def test_a_copy_that_fails_midway_writes_no_folder(pg_dsn, pg_table, tmp_path) -> None:
    table = MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=16)
    table.add_vectors(corpus(), ids=[f"r{i}" for i in range(ROWS)])
    with psycopg.connect(pg_dsn) as conn:  # written by another tool: a nested value
        nested = "UPDATE {} SET metadata = '{{\"a\": {{\"b\": 1}}}}' WHERE id = 'r1502'"
        conn.execute(nested.format(pg_table))

    message = r"records 1500 to 1999 \('r1500' to 'r1999'.*metadatas\[2\]\['a'\] must be a str"
    with pytest.raises(TypeError, match=message):
        copy_index(pg_dsn, tmp_path / "c", source_table=pg_table, batch_size=500)

    assert not (tmp_path / "c").exists()


def test_an_override_that_is_not_a_setting_is_refused(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"unexpected settings \['coarse_dims'\]"):
        copy_index(tmp_path / "a", tmp_path / "b", coarse_dims=32)


def test_a_dsn_needs_its_table_and_a_folder_takes_none(pg_dsn, tmp_path) -> None:
    saved(tmp_path / "a", corpus(100), coarse_dim=16)
    with pytest.raises(ValueError, match=r"the destination is a postgres DSN: name its table"):
        copy_index(tmp_path / "a", pg_dsn)
    with pytest.raises(ValueError, match=r"table='t' names an index on a server, but .* a path"):
        copy_index(tmp_path / "a", tmp_path / "a", table="t")
    with pytest.raises(ValueError, match=r"backend='postgres' keeps its index on a server"):
        copy_index(tmp_path / "a", tmp_path / "b", backend="postgres")


def test_an_empty_index_is_copied_with_its_dimension(pg_dsn, pg_table, tmp_path) -> None:
    MatryoshkaIndex(coarse_dim=16, dim=DIM).save(tmp_path / "a")

    copy = copy_index(tmp_path / "a", pg_dsn, table=pg_table)

    assert (len(copy), copy.dim) == (0, DIM)
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).dim == DIM


def test_a_folder_whose_prefixes_live_in_chroma_is_copied_with_its_client(tmp_path) -> None:
    chromadb = pytest.importorskip("chromadb")
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    original = saved(
        tmp_path / "a", corpus(300), backend="chroma", chroma_client=client, collection="docs"
    )
    with pytest.raises(ValueError, match=r"collection 'docs' already holds 299 vectors"):
        copy_index(tmp_path / "a", tmp_path / "b", chroma_client=client)
    assert not (tmp_path / "b").exists()

    same = copy_index(tmp_path / "a", tmp_path / "b", chroma_client=client, collection="docs2")
    flat = copy_index(tmp_path / "a", tmp_path / "c", chroma_client=client, backend="exact")

    assert same.config == original.config.replace(collection="docs2")
    assert (flat.backend, flat.config.collection) == ("exact", None)
    assert contents(same)[0] == contents(flat)[0] == contents(original)[0]
    assert client.get_collection("docs2").count() == 299


# -- the command line -----------------------------------------------------------------------------
def test_matryoshka_copy_moves_a_folder_to_a_table_and_back(
    pg_dsn, pg_table, tmp_path, capsys
) -> None:
    original = saved(tmp_path / "a", corpus(500), **FUNNEL)

    assert main(["copy", str(tmp_path / "a"), pg_dsn, "--table", pg_table]) == 0
    out = capsys.readouterr().out
    assert f"copied 499 records (64 dims, model {MODEL}) to table '{pg_table}'" in out
    assert '"backend": "postgres"' in out and '"rescore_multiplier": 3' in out
    assert pg_dsn not in out
    argv = ["copy", pg_dsn, str(tmp_path / "b"), "--source-table", pg_table, "--batch-size", "100"]
    assert main([*argv, "--set", "backend=hnsw", "--set", "ef_search=200"]) == 0

    back = MatryoshkaIndex.load(tmp_path / "b")
    assert back.config == original.config.replace(backend="hnsw", ef_search=200)
    assert contents(back)[0] == contents(original)[0]


def test_matryoshka_copy_exits_with_the_library_message(pg_dsn, pg_table, tmp_path, capsys) -> None:
    saved(tmp_path / "a", corpus(300), coarse_dim=16, precision="int8")

    assert main(["copy", str(tmp_path / "a"), pg_dsn, "--table", pg_table]) == 2

    err = capsys.readouterr().err
    assert err.startswith("matryoshka copy: error: the copy cannot keep the source's precision")
    assert "precision='int8' has no pgvector index type" in err
    assert "--set precision=float16" in err and len(err.splitlines()) == 1
    assert not table_exists(pg_dsn, pg_table)
    with pytest.raises(SystemExit, match="2"):
        main(["copy", str(tmp_path / "a"), pg_dsn, "--table", pg_table, "--set", "x"])
    assert "--set: expected KEY=VALUE, got 'x'" in capsys.readouterr().err
