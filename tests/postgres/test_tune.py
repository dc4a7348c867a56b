"""tune() on the server: the same contract as locally, measured by the server's own searches,
saved in the registry so that every client that opens the table uses it."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index.postgres import META_TABLE


def clustered(n: int, dim: int = 64, seed: int = 0, late: bool = False) -> np.ndarray:
    """Unit rows around 40 centres (the same for every seed). Their spread falls with the
    dim, as a Matryoshka model's does, or (``late``) rises, as a model's that was not trained
    so: then a short prefix shortlists badly and a PCA rotation's well."""
    spread = np.linspace(1.0, 0.15, dim) ** 2
    if late:
        spread = spread[::-1]
    centres = np.random.default_rng(123).normal(size=(40, dim)) * spread
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 40, n)] + 0.7 * rng.normal(size=(n, dim)) * spread
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(index: MatryoshkaIndex, corpus: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    truth = np.argsort(-(queries @ corpus.T), axis=1)[:, :k]
    found = [hits.ids for hits in index.search_vectors(queries, k)]
    return float(
        np.mean([len({f"d{j}" for j in t} & set(f)) / k for t, f in zip(truth, found, strict=True)])
    )


def trial_tables(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE %s", [f"{table}__trial%"]
        ).fetchall()
    return [r[0] for r in rows]


def stored_manifest(dsn: str, table: str) -> dict:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT manifest FROM {META_TABLE} WHERE name = %s", [table])
        return dict(row.fetchone()[0])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return clustered(4000), clustered(200, seed=1), clustered(200, seed=2)


def server_index(dsn: str, table: str, corpus: np.ndarray, **settings) -> MatryoshkaIndex:
    settings = {"exact_below": 0, **settings}
    index = MatryoshkaIndex(backend="postgres", dsn=dsn, table=table, **settings)
    index.add_vectors(corpus, ids=[f"d{i}" for i in range(len(corpus))])
    return index


def test_tune_with_queries_holds_its_target_on_other_queries_and_every_client_uses_it(
    pg_dsn, pg_table, data
) -> None:
    corpus, tuning, held = data
    index = server_index(pg_dsn, pg_table, corpus, coarse_dim=8, rescore_multiplier=1)
    before = recall(index, corpus, held)
    other = MatryoshkaIndex.load(pg_dsn, table=pg_table)  # opened before the tune
    result = index.tune(0.95, k=10, queries=tuning)
    assert result.source == "queries"
    assert {row["mode"] for row in result} == {"fixed", "exact"}  # no adaptive rule on the server
    assert result.chosen["recall_low"] >= 0.95
    after = recall(index, corpus, held)
    assert before < 0.9 and after >= 0.93, (before, after)
    chosen = index.config
    stored = stored_manifest(pg_dsn, pg_table)
    assert stored["rescore_multiplier"] == chosen.rescore_multiplier
    assert stored["hnsw"]["ef_search"] == chosen.ef_search
    assert stored["exact_below"] == chosen.exact_below
    # a handle opened before sees the tuned settings at its next search; a new one loads them
    assert other.search_vectors(held[:20], 10) == index.search_vectors(held[:20], 10)
    assert other.config == chosen
    assert MatryoshkaIndex.load(pg_dsn, table=pg_table).config == chosen
    assert trial_tables(pg_dsn, pg_table) == []


def test_tune_without_queries_measures_held_out_rows_left_out_of_the_graph(
    pg_dsn, pg_table, data
) -> None:
    corpus, _, _ = data
    index = server_index(pg_dsn, pg_table, corpus, coarse_dim=8)
    engine = index._engine
    seen: list[tuple[str, int]] = []
    made = engine.trial

    def trial(*args, **kwargs):
        out = made(*args, **kwargs)
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(f"SELECT count(*) FROM {out.sql.table}").fetchone()[0]
        seen.append((out.sql.table, rows))
        return out

    engine.trial = trial
    result = index.tune(0.9, k=10, sample=100)
    assert result.source == "held-out rows"
    # the trial searched a copy of the table without the 100 held-out rows, with its own graph
    assert len(seen) == 1 and seen[0][0] != f'"{pg_table}"' and seen[0][1] == 4000 - 100
    assert trial_tables(pg_dsn, pg_table) == []  # dropped when the tuner ended
    assert len(index) == 4000


def test_tune_coarse_search_on_the_server_adopts_a_rotated_stage_for_every_client(
    pg_dsn, pg_table
) -> None:
    corpus, tuning = clustered(3000, late=True), clustered(150, seed=1, late=True)
    held = clustered(150, seed=2, late=True)
    index = server_index(pg_dsn, pg_table, corpus, coarse_dim=8)
    other = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    result = index.tune(0.95, k=10, queries=tuning, coarse=[{"coarse_dim": 8, "rotation": "pca"}])
    assert {row["coarse"] for row in result} == {"backend=postgres, coarse_dim=8, rotation=pca"}
    assert result.chosen["recall_low"] >= 0.95
    rotation = index._engine.rotation
    assert rotation.method == "pca" and index.coarse_dim == 8
    # the index's own coarse column now holds the rotated prefixes, and its graph is rebuilt
    with psycopg.connect(pg_dsn) as conn:
        value = conn.execute(f'SELECT coarse::text FROM "{pg_table}" WHERE id = %s', ["d5"])
        stored = np.asarray(json.loads(value.fetchone()[0]), np.float32)
    turned = corpus[5] @ rotation.rotation[:, :8]
    np.testing.assert_allclose(stored, turned / np.linalg.norm(turned), atol=2e-3)
    assert recall(index, corpus, held) >= 0.9
    hits = other.search_vectors(held[:20], 10)  # the other handle takes the new stage
    assert other._engine.rotation.fingerprint == rotation.fingerprint
    assert hits == index.search_vectors(held[:20], 10)
    reopened = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    assert reopened._engine.rotation.fingerprint == rotation.fingerprint
    assert trial_tables(pg_dsn, pg_table) == []
    # rows added after the tune get the new stage's coarse value
    index.add_vectors(held[:3], ids=["n0", "n1", "n2"])
    assert index.search_vectors(held[:3], 1)[0].ids == ["n0"]


def test_a_failed_tune_changes_nothing_and_leaves_no_trial_tables(pg_dsn, pg_table, data) -> None:
    corpus, tuning, _ = data
    index = server_index(pg_dsn, pg_table, corpus, coarse_dim=8, rescore_multiplier=2)
    before = stored_manifest(pg_dsn, pg_table)
    with pytest.raises(ValueError, match=r"reaches recall@10 0.999 within 20 candidates"):
        index.tune(0.999, k=10, queries=tuning, max_candidates=20, coarse=[{"coarse_dim": 8}])
    with pytest.raises(ValueError, match=r"built on its server, of its own backend; got "):
        index.tune(0.9, k=10, queries=tuning, coarse=[{"backend": "hnsw", "coarse_dim": 8}])
    assert stored_manifest(pg_dsn, pg_table) == before
    assert index.rescore_multiplier == 2
    assert trial_tables(pg_dsn, pg_table) == []


def test_a_fixed_configuration_reaches_the_local_recall_on_the_server(
    pg_dsn, pg_table, data
) -> None:
    # the walk's beam comes from the shortlist it must fill, not the shortlist itself
    corpus, queries, _ = data
    for coarse_dim, multiplier in ((8, 3), (16, 2)):
        settings = {"coarse_dim": coarse_dim, "rescore_multiplier": multiplier, "exact_below": 0}
        local = MatryoshkaIndex(**settings)
        local.add_vectors(corpus, ids=[f"d{i}" for i in range(len(corpus))])
        server = server_index(pg_dsn, f"{pg_table}_{coarse_dim}", corpus, **settings)
        here, there = recall(local, corpus, queries), recall(server, corpus, queries)
        assert abs(here - there) <= 0.02, (coarse_dim, here, there)


def beam_of(index: MatryoshkaIndex, query: np.ndarray) -> int:
    """The ``hnsw.ef_search`` a search of ``index`` ran with, as its server session holds it."""
    index.search_vectors(query[None, :], 10)
    session = index._engine._session
    return int(session.read(lambda cur: cur.execute("SHOW hnsw.ef_search").fetchone()[0]))


def test_a_set_ef_search_is_the_beam_and_the_default_walks_twice_the_shortlist(
    pg_dsn, pg_table, data
) -> None:
    corpus, queries, _ = data
    index = server_index(pg_dsn, pg_table, corpus[:1000], coarse_dim=8, rescore_multiplier=10)
    assert index.config.ef_search == 128 and beam_of(index, queries[0]) == 200  # 2 x 100
    # set: raised to the shortlist only, and never past pgvector's limit of 1000
    for ef_search, beam in ((50, 100), (150, 150), (2000, 1000)):
        opened = MatryoshkaIndex.load(pg_dsn, table=pg_table, ef_search=ef_search)
        assert beam_of(opened, queries[0]) == beam, ef_search
