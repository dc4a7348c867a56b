from __future__ import annotations

import numpy as np
import pytest

from conftest import exact_top
from matryoshka_retrieval import CallableEncoder, Hit, Hits, MatryoshkaIndex, truncate
from pg_server import pg

CONFIGS = {
    "float32": {"coarse_dim": 32},
    "int8": {"coarse_dim": 32, "precision": "int8"},
    "binary": {"coarse_dim": 32, "precision": "binary"},
    "cascade": {"stages": [(16, 400), (48, 100)]},
    "exact": {"coarse_dim": None},
    "hnsw": {"coarse_dim": 32, "backend": "hnsw"},
    "hnsw-int8": {"coarse_dim": 32, "backend": "hnsw", "precision": "int8"},
    "hnsw-binary": {"coarse_dim": 32, "backend": "hnsw", "precision": "binary"},
    "torch-cpu": {"coarse_dim": 32, "rerank": "torch", "device": "cpu"},
    "postgres": {"coarse_dim": 32, "backend": "postgres"},
    "postgres-float16": {"coarse_dim": 32, "backend": "postgres", "precision": "float16"},
    "postgres-binary": {"coarse_dim": 32, "backend": "postgres", "precision": "binary"},
    "postgres-cascade": {"stages": [(16, 400), (48, 100)], "backend": "postgres"},
    "postgres-exact": {"coarse_dim": None, "backend": "postgres"},
}


def build(corpus, ids, metadatas=None, **options):
    options.setdefault("device", "cpu")
    if options.get("backend") == "postgres":
        options = pg(**options)  # a real server, a table of its own
    index = MatryoshkaIndex(**options)
    index.add_vectors(corpus, ids=ids, metadatas=metadatas)
    return index


def ids_of(hits: list[Hits]) -> list[list[int]]:
    return [[int(h.id[3:]) for h in hit] for hit in hits]


@pytest.mark.parametrize("name", CONFIGS)
def test_wide_shortlist_equals_exact_full_dim_search(name, corpus, queries, ids) -> None:
    options = dict(CONFIGS[name])
    if "stages" not in options and options.get("coarse_dim") is not None:
        options["rescore_multiplier"] = 300  # the whole corpus is the shortlist
    if "stages" in options:
        options["stages"] = [(16, 3000), (48, 3000)]
    index = build(corpus, ids, **options)
    hits = index.search_vectors(queries, k=10)
    top, scores = exact_top(corpus, queries, 10)
    assert ids_of(hits) == top.tolist()
    np.testing.assert_allclose([h.scores for h in hits], scores, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["float32", "int8", "cascade", "torch-cpu", "postgres", "postgres-cascade"]
)
def test_default_shortlist_has_high_recall(name, corpus, queries, ids) -> None:
    index = build(corpus, ids, **CONFIGS[name])
    hits = index.search_vectors(queries, k=10)
    top, _ = exact_top(corpus, queries, 10)
    pairs = zip(ids_of(hits), top.tolist(), strict=True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in pairs])
    assert recall >= 0.97


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_scores_are_full_dim_and_coarse_scores_prefix_cosines(
    corpus, queries, ids, backend
) -> None:
    index = build(corpus, ids, coarse_dim=24, backend=backend, exact_below=0)
    hit = index.search(queries[0], k=3)[0]
    row = int(hit.id[3:])
    assert hit.score == pytest.approx(float(corpus[row] @ queries[0]), abs=1e-5)
    prefix_cos = float(truncate(corpus[row], 24) @ truncate(queries[0], 24))
    assert hit.coarse_score == pytest.approx(prefix_cos, abs=1e-5)


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_binary_coarse_score_is_sign_agreement(corpus, queries, ids, backend) -> None:
    index = build(corpus, ids, coarse_dim=32, precision="binary", backend=backend, exact_below=0)
    hit = index.search(queries[0], k=1)[0]
    row = int(hit.id[3:])
    agree = np.mean((corpus[row, :32] > 0) == (queries[0, :32] > 0))
    assert hit.coarse_score == pytest.approx(2 * agree - 1)


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_unnormalised_input_is_normalised(corpus, queries, ids, backend) -> None:
    index = build(corpus * 7.0, ids, coarse_dim=32, backend=backend)
    hits = index.search_vectors(queries * 0.1, k=5)
    top, scores = exact_top(corpus, queries, 5)
    assert ids_of(hits)[0] == top[0].tolist()
    assert hits[0][0].score == pytest.approx(float(scores[0, 0]), abs=1e-5)


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_hits_api(corpus, queries, ids, metadatas, backend) -> None:
    index = build(corpus, ids, metadatas, coarse_dim=32, backend=backend)
    hits = index.search(queries[0], k=4)
    assert isinstance(hits, Hits) and len(hits) == 4
    assert isinstance(hits[0], Hit) and [h.id for h in hits] == hits.ids
    assert isinstance(hits[1:3], Hits) and len(hits[1:3]) == 2
    assert hits.scores == sorted(hits.scores, reverse=True)
    as_list = hits.to_list()
    assert as_list[0]["id"] == hits[0].id and as_list[0]["metadata"] == hits[0].metadata
    assert set(as_list[0]) == {"id", "score", "coarse_score", "text", "metadata"}


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_batched_search_gives_one_hits_per_row(corpus, queries, ids, backend) -> None:
    index = build(corpus, ids, coarse_dim=32, backend=backend)
    batch = index.search_vectors(queries[:7], k=3)
    assert len(batch) == 7
    assert [h.ids for h in batch] == [index.search(q, k=3).ids for q in queries[:7]]


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_k_larger_than_the_corpus_returns_everything(corpus, ids, backend) -> None:
    index = build(corpus[:5], ids[:5], coarse_dim=32, backend=backend)
    assert len(index.search(corpus[0], k=50)) == 5


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_empty_index_returns_no_hits(backend) -> None:
    options = pg() if backend == "postgres" else {}
    index = MatryoshkaIndex(dim=8, coarse_dim=4, device="cpu", **options)
    assert len(index) == 0
    assert index.search(np.ones(8), k=3) == Hits()


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_text_search_with_an_encoder(minilm_encoder, stdlib_texts, backend) -> None:
    docs = stdlib_texts[:300]
    options = pg() if backend == "postgres" else {}
    index = MatryoshkaIndex(minilm_encoder, coarse_dim=64, device="cpu", **options)
    ids = index.add_texts(docs, metadatas=[{"n": i} for i in range(300)])
    hits = index.search(docs[17], k=3)
    assert hits[0].id == ids[17] and hits[0].text == docs[17] and hits[0].metadata == {"n": 17}
    assert index.search_texts([docs[3], docs[5]], k=1)[1][0].id == ids[5]
    assert index.manifest.model_name == minilm_encoder.model_name


@pytest.mark.parametrize("backend", ["exact", "postgres"])
def test_async_add_and_search(backend) -> None:
    import asyncio

    rng = np.random.default_rng(3)
    table = {f"t{i}": rng.normal(size=16) for i in range(50)}
    encoder = CallableEncoder(lambda texts: np.stack([table[t] for t in texts]), dim=16)
    index = MatryoshkaIndex(
        encoder, coarse_dim=8, device="cpu", **(pg() if backend == "postgres" else {})
    )

    async def run() -> Hits:
        await index.aadd_texts(list(table), ids=list(table))
        return await index.asearch("t7", k=1)

    assert asyncio.run(run())[0].id == "t7"


def test_add_texts_needs_an_encoder(corpus) -> None:
    index = MatryoshkaIndex(coarse_dim=32, device="cpu")
    with pytest.raises(ValueError, match=r"add_texts needs an encoder"):
        index.add_texts(["hello"])
    index.add_vectors(corpus[:10])
    with pytest.raises(ValueError, match=r"needs an encoder"):
        index.search("hello")


def test_a_small_index_searches_exactly_by_default(corpus, queries, ids) -> None:
    auto = build(corpus, ids, coarse_dim=8, rescore_multiplier=1)  # 3000 x 96: 288k floats
    funnel = build(corpus, ids, coarse_dim=8, rescore_multiplier=1, exact_below=0)
    exact = build(corpus, ids, coarse_dim=None)
    got, expected = auto.search_vectors(queries, k=10), exact.search_vectors(queries, k=10)
    assert [h.ids for h in got] == [h.ids for h in expected]
    assert {h.reranked for h in got} == {len(corpus)}
    coarse = funnel.search_vectors(queries, k=10)
    assert {h.reranked for h in coarse} == {10}  # the funnel, with its shortlist of k
    assert [h.ids for h in coarse] != [h.ids for h in expected]
    assert auto._engine.vectors.whole().ctypes.data % 64 == 0  # appended rows, aligned too


def test_exact_below_counts_live_rows_and_is_saved(corpus, queries, ids, tmp_path) -> None:
    index = build(corpus[:100], ids[:100], coarse_dim=8, rescore_multiplier=1, exact_below=99)
    assert index.search_vectors(queries[:1], k=3)[0].reranked == 3  # 100 rows: the funnel
    index.delete(["doc0"])
    assert index.search_vectors(queries[:1], k=3)[0].reranked == 99  # 99 rows: exact
    index.save(tmp_path / "i")
    loaded = MatryoshkaIndex.load(tmp_path / "i")
    assert loaded.config.exact_below == 99 and loaded.manifest.config.exact_below == 99


@pytest.mark.parametrize("bad", [-1, "always", 1.5, True])
def test_a_bad_exact_below_is_refused(bad) -> None:
    with pytest.raises(ValueError, match=f"exact_below must be 'auto' or an int >= 0, got {bad!r}"):
        MatryoshkaIndex(exact_below=bad)


@pytest.mark.parametrize("m", [1, 3, 8, 40])
@pytest.mark.parametrize("scan_floats", [1 << 22, 1500])  # one part, or parts merged
def test_the_exact_scan_equals_brute_force(corpus, queries, monkeypatch, m, scan_floats) -> None:
    from matryoshka_retrieval.index import funnel

    monkeypatch.setattr(funnel, "_SCAN_FLOATS", scan_floats)
    q = np.concatenate([queries] * 2)[:m]
    truth, _ = exact_top(corpus, q, 10)
    scores, rows = funnel.scan(q, corpus, 10)
    assert rows.shape == (m, 10)
    assert rows.tolist() == truth.tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(q @ corpus.T, rows, 1), rtol=1e-6)
    few_scores, few = funnel.scan(q, corpus[:4], 10)  # k past the rows: all of them, sorted
    assert few.shape == (m, 4)
    assert (np.diff(few_scores, axis=1) <= 0).all() and sorted(few[0].tolist()) == [0, 1, 2, 3]


def test_the_exact_scan_takes_no_queries_and_float64_queries(corpus, queries) -> None:
    from matryoshka_retrieval.index.funnel import scan

    scores, rows = scan(np.zeros((0, 96), np.float32), corpus, 10)
    assert scores.shape == rows.shape == (0, 10)
    scores, rows = scan(queries[:3].astype(np.float64), corpus, 10)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    assert rows.tolist() == scan(queries[:3], corpus, 10)[1].tolist()
