"""The coarse rotation on the server: the table's coarse column holds the rotated, renormalised
prefix, written by the client once per row; queries are rotated on the client; the rerank and
every returned score stay those of the stored vectors."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import psycopg
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index.config import IndexConfig
from matryoshka_retrieval.index.engine import rotation_rows
from matryoshka_retrieval.index.postgres import META_TABLE
from matryoshka_retrieval.index.postgres.registry import create_entry
from matryoshka_retrieval.index.postgres.sql import _Sql
from matryoshka_retrieval.projection import fit_projection


def skewed(n: int, dim: int = 48, seed: int = 0) -> np.ndarray:
    """Unit rows whose variance sits in the last dims, as a model that was not trained with a
    Matryoshka loss leaves it: a short prefix ranks them badly, a PCA rotation's well."""
    rng = np.random.default_rng(seed)
    spread = np.linspace(0.05, 1.0, dim) ** 6
    x = (rng.normal(size=(n, dim)) * spread).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def coarse_column(dsn: str, table: str) -> dict[str, np.ndarray | None]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT id, coarse::text FROM "{table}"').fetchall()
    return {i: None if c is None else np.asarray(json.loads(c), np.float32) for i, c in rows}


def recall(index: MatryoshkaIndex, corpus: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    truth = np.argsort(-(queries @ corpus.T), axis=1)[:, :k]
    found = [hits.ids for hits in index.search_vectors(queries, k)]
    return float(
        np.mean([len({f"d{j}" for j in t} & set(f)) / k for t, f in zip(truth, found, strict=True)])
    )


def test_a_pca_rotation_makes_a_short_server_prefix_a_good_shortlister(pg_dsn, pg_table) -> None:
    corpus, queries = skewed(4000), skewed(100, seed=1)
    ids = [f"d{i}" for i in range(4000)]
    settings = {"coarse_dim": 8, "rescore_multiplier": 3, "exact_below": 0, "backend": "postgres"}
    plain = MatryoshkaIndex(dsn=pg_dsn, table=pg_table, **settings)
    turned = MatryoshkaIndex(dsn=pg_dsn, table=pg_table + "r", coarse_rotation="pca", **settings)
    plain.add_vectors(corpus, ids=ids)
    turned.add_vectors(corpus, ids=ids)
    low, high = recall(plain, corpus, queries), recall(turned, corpus, queries)
    assert high > 0.85 and low < 0.1, (low, high)  # an exact scan of the prefixes: 0.947
    # the rerank scores the stored vectors: returned scores are full-dim cosines
    hits = turned.search_vectors(queries[:1], 5)[0]
    expected = np.sort(queries[0] @ corpus.T)[::-1][:5]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)


def test_the_coarse_column_is_the_rotated_prefix_and_a_load_keeps_the_rotation(
    pg_dsn, pg_table
) -> None:
    corpus = skewed(600)
    rotation = fit_projection(corpus, method="pca", show_progress_bar=False)
    for precision in ("float32", "float16", "binary"):
        table = f"{pg_table}_{precision}"
        index = MatryoshkaIndex(
            backend="postgres", dsn=pg_dsn, table=table, coarse_dim=16, precision=precision,
            coarse_rotation=rotation, exact_below=0,
        )  # fmt: skip
        index.add_vectors(corpus, ids=[f"d{i}" for i in range(600)])
        turned = corpus @ rotation.rotation[:, :16]
        turned /= np.linalg.norm(turned, axis=1, keepdims=True)
        with psycopg.connect(pg_dsn) as conn:
            stored = dict(conn.execute(f'SELECT id, coarse::text FROM "{table}"').fetchall())
        for i in (0, 299, 599):
            if precision == "binary":
                assert stored[f"d{i}"] == "".join("1" if x > 0 else "0" for x in turned[i])
            else:
                tol = 1e-6 if precision == "float32" else 2e-3
                np.testing.assert_allclose(json.loads(stored[f"d{i}"]), turned[i], atol=tol)
        opened = MatryoshkaIndex.load(pg_dsn, table=table)
        assert (
            opened.coarse_dim == 16 and opened._engine.rotation.fingerprint == rotation.fingerprint
        )
        for q in corpus[:20]:
            assert opened.search(q, 5).ids == index.search(q, 5).ids
        # the coarse score a hit reports is the rotated prefixes' similarity
        hit = opened.search(corpus[7], 1)[0]
        if precision == "float32":
            assert hit.coarse_score == pytest.approx(float(turned[7] @ turned[7]), abs=1e-5)


def _adder(dsn: str, table: str, part: int, queue: multiprocessing.Queue) -> None:
    corpus = skewed(3000)
    index = MatryoshkaIndex(
        backend="postgres", dsn=dsn, table=table, coarse_dim=8, coarse_rotation="pca"
    )
    for start in range(part * 100, 3000, 200):  # interleaved batches of 100 rows
        index.add_vectors(
            corpus[start : start + 100], ids=[f"d{i}" for i in range(start, start + 100)]
        )
    queue.put(index.search_vectors(corpus[:5], 3) and part)


def test_a_waiting_rotation_is_fitted_once_and_every_row_rotated_once_from_two_processes(
    pg_dsn, pg_table
) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_adder, args=(pg_dsn, pg_table, p, queue)) for p in (0, 1)]
    for p in procs:
        p.start()
    assert sorted(queue.get(timeout=240) for _ in procs) == [0, 1]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    index = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    rotation = index._engine.rotation
    assert rotation.method == "pca" and len(index) == 3000
    # every row's coarse value is its stored vector rotated once by the stored rotation
    corpus = skewed(3000)
    turned = corpus @ rotation.rotation[:, :8]
    turned /= np.linalg.norm(turned, axis=1, keepdims=True)
    stored = coarse_column(pg_dsn, pg_table)
    assert all(v is not None for v in stored.values())
    got = np.stack([stored[f"d{i}"] for i in range(3000)])
    np.testing.assert_allclose(got, turned, atol=1e-5)
    # a single-batch build with the same rotation holds the same column and answers alike
    single = MatryoshkaIndex(
        backend="postgres", dsn=pg_dsn, table=pg_table + "s", coarse_dim=8, coarse_rotation=rotation
    )
    single.add_vectors(corpus, ids=[f"d{i}" for i in range(3000)])
    again = coarse_column(pg_dsn, pg_table + "s")
    for i in stored:  # equal up to the float rounding of a batched product
        np.testing.assert_allclose(again[i], stored[i], atol=1e-6)
    queries = skewed(30, seed=4)
    for a, b in zip(
        index.search_vectors(queries, 10), single.search_vectors(queries, 10), strict=True
    ):
        assert a.ids == b.ids


def test_a_handle_opened_while_the_rotation_waited_uses_it_once_another_fits_it(
    pg_dsn, pg_table
) -> None:
    corpus = skewed(rotation_rows(48) + 200)
    first = MatryoshkaIndex(
        backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8, coarse_rotation="pca",
        exact_below=0,
    )  # fmt: skip
    first.add_vectors(corpus[:100], ids=[f"d{i}" for i in range(100)])
    second = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    assert second._engine.rotation == "pca"
    assert second.search(corpus[3], 1).ids == ["d3"]  # exact while it waits
    first.add_vectors(corpus[100:], ids=[f"d{i}" for i in range(100, len(corpus))])
    assert first._engine.rotation != "pca"
    hits = second.search_vectors(corpus[:50], 1)  # its next statement sees the fitted rotation
    assert second._engine.rotation.fingerprint == first._engine.rotation.fingerprint
    assert [h.ids for h in hits] == [[f"d{i}"] for i in range(50)]
    assert hits[0].reranked < len(corpus)  # the funnel, not an exact scan
    second.add_vectors(skewed(5, seed=9), ids=[f"n{i}" for i in range(5)])
    assert all(v is not None for v in coarse_column(pg_dsn, pg_table).values())


def test_filters_keep_k_results_with_the_rotation(pg_dsn, pg_table) -> None:
    corpus = skewed(3000)
    index = MatryoshkaIndex(
        backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8, coarse_rotation="pca",
        exact_below=0,
    )  # fmt: skip
    metadatas = [{"tag": "rare" if i % 60 == 0 else "common"} for i in range(3000)]
    index.add_vectors(corpus, ids=[f"d{i}" for i in range(3000)], metadatas=metadatas)
    for q in skewed(10, seed=3):
        hits = index.search(q, 10, filter={"tag": "rare"})
        assert len(hits) == 10 and all(int(i[1:]) % 60 == 0 for i in hits.ids)


def test_a_table_made_before_the_coarse_column_still_opens_searches_and_takes_rows(
    pg_dsn, pg_table
) -> None:
    # the layout of earlier versions: the HNSW index on an expression of the full vector
    config = IndexConfig.create(backend="postgres", coarse_dim=8, exact_below=0)
    old = _Sql(pg_table, config, 48)
    manifest = {
        **config.to_manifest(), "full_dim": 48, "model_name": None, "normalized": True,
        "metric": "cosine", "projection": None, "calibration": None, "calibrated_on": None,
        "generation": f"postgres:{pg_table}", "format_version": 2,
    }  # fmt: skip
    from matryoshka_retrieval.index.manifest import FORMAT_VERSION

    manifest["format_version"] = FORMAT_VERSION
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        made = [*old.create(), old.index_statement()]  # the graph came with the table
        create_entry(conn.cursor(), pg_table, made, manifest)
    corpus = skewed(1000)
    index = MatryoshkaIndex.load(pg_dsn, table=pg_table)
    index.add_vectors(corpus, ids=[f"d{i}" for i in range(1000)])
    with psycopg.connect(pg_dsn) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
            [pg_table],
        )]  # fmt: skip
        registry = conn.execute(f"SELECT count(*) FROM {META_TABLE} WHERE name = %s", [pg_table])
        assert registry.fetchone()[0] == 1
    assert "coarse" not in columns
    hits = index.search_vectors(corpus[:20], 1)
    assert [h.ids for h in hits] == [[f"d{i}"] for i in range(20)]
    assert hits[0].reranked == index.rescore_multiplier  # the funnel ran (k=1)


def test_opening_a_table_with_another_rotation_is_refused(pg_dsn, pg_table) -> None:
    corpus = skewed(300)
    MatryoshkaIndex(
        backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8, coarse_rotation="pca"
    ).add_vectors(corpus, ids=[f"d{i}" for i in range(300)])
    with pytest.raises(ValueError, match=r"was made with coarse_rotation='pca'; this index has "):
        MatryoshkaIndex(backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8)
    other = fit_projection(skewed(300, seed=5), method="pca", show_progress_bar=False)
    with pytest.raises(ValueError, match=r"coarse_rotation=a pca Projection"):
        MatryoshkaIndex(
            backend="postgres", dsn=pg_dsn, table=pg_table, coarse_dim=8, coarse_rotation=other
        )
    with pytest.raises(ValueError, match=r"coarse_rotation maps 48-dim vectors but these "):
        index = MatryoshkaIndex(
            backend="postgres", dsn=pg_dsn, table=pg_table + "x", coarse_dim=8,
            coarse_rotation=other,
        )  # fmt: skip
        index.add_vectors(skewed(10, dim=32), ids=[f"e{i}" for i in range(10)])
