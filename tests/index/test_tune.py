"""The adaptive funnel and its tuner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex


@pytest.fixture
def built(corpus: np.ndarray, ids: list[str]) -> MatryoshkaIndex:
    index = MatryoshkaIndex(coarse_dim=16, rescore_multiplier=10, device="cpu", exact_below=0)
    index.add_vectors(corpus, ids=ids)
    return index


def test_a_fixed_funnel_reports_its_shortlist_as_reranked(built, queries) -> None:
    hits = built.search_vectors(queries, k=5)
    assert {h.reranked for h in hits} == {50}


def test_tune_meets_the_target_on_its_samples_and_sets_the_adaptive_rule(built, queries) -> None:
    result = built.tune(target_recall=0.95, k=10, queries=queries)
    fixed, adaptive, exact = result.rows
    assert [row["mode"] for row in result.rows] == ["fixed", "adaptive", "exact"]
    assert adaptive["recall_low"] >= 0.95 and fixed["recall_low"] >= 0.95
    assert exact["recall"] == exact["recall_low"] == 1.0
    reaching = [row for row in result.rows if row["recall_low"] >= 0.95]
    assert result.chosen["ms_per_query"] == min(row["ms_per_query"] for row in reaching)
    if result.chosen is exact:
        assert built.config.exact_below == len(built)
        assert built.search_vectors(queries[:1], k=3)[0].reranked == len(built)
    elif result.chosen is adaptive:
        assert built.config.adaptive_margin == adaptive["margin"]
        assert built.config.exact_below == 0
    else:
        assert built.config.adaptive_margin is None
        assert built.config.rescore_multiplier * 10 == fixed["shortlist"]
    assert "| adaptive | margin" in result.table()


def test_adaptive_funnel_reranks_per_query_and_keeps_recall(built, corpus, queries, ids) -> None:
    built.tune(target_recall=0.99, k=10, queries=queries)
    margin = built.tune(target_recall=0.99, k=10, queries=queries).rows[1]["margin"]
    built._engine.config = built.config.replace(adaptive_margin=margin, exact_below=0)
    hits = built.search_vectors(queries, k=10)
    counts = [h.reranked for h in hits]
    assert len(set(counts)) > 1  # easy and hard queries rerank different numbers
    top = np.argsort(-(queries @ corpus.T), axis=1)[:, :10]
    truth = [[ids[i] for i in row] for row in top]
    recall = np.mean([len(set(h.ids) & set(t)) / 10 for h, t in zip(hits, truth, strict=True)])
    assert recall >= 0.98


def test_a_higher_confidence_tunes_a_deeper_shortlist_that_holds_better(
    corpus, ids, queries
) -> None:
    rng = np.random.default_rng(3)
    more = corpus[rng.choice(len(corpus), 600, replace=False)] + 0.4 * rng.normal(
        size=(600, corpus.shape[1])
    ).astype(np.float32)
    more /= np.linalg.norm(more, axis=1, keepdims=True)
    tune_q, check_q = more[:150], more[150:]
    truth = np.argsort(-(check_q @ corpus.T), axis=1)[:, :10]
    shortlists, recalls = {}, {}
    for confidence in (0.5, 0.99):
        index = MatryoshkaIndex(coarse_dim=16, device="cpu", exact_below=0)
        index.add_vectors(corpus, ids=ids)
        fixed = index.tune(0.9, k=10, queries=tune_q, confidence=confidence).rows[0]
        assert fixed["recall_low"] >= 0.9
        if confidence == 0.5:
            assert fixed["recall_low"] == pytest.approx(fixed["recall"])
        index._engine.config = index.config.replace(
            adaptive_margin=None, exact_below=0, rescore_multiplier=fixed["shortlist"] // 10
        )
        hits = index.search_vectors(check_q, k=10)
        found = [[int(i[3:]) for i in h.ids] for h in hits]
        recalls[confidence] = np.mean(
            [len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]
        )
        shortlists[confidence] = fixed["shortlist"]
    assert shortlists[0.99] > shortlists[0.5]  # the bound asks for a deeper shortlist
    assert recalls[0.99] > recalls[0.5]  # and so holds better on queries it never saw


@pytest.mark.parametrize("confidence", [0.4, 1.0, True])
def test_a_confidence_outside_its_range_is_refused(built, confidence) -> None:
    with pytest.raises(ValueError, match=f"confidence must be in \\[0.5, 1\\), got {confidence}"):
        built.tune(0.9, k=5, sample=20, confidence=confidence)


def test_tuning_on_held_out_rows_needs_no_queries(built) -> None:
    result = built.tune(target_recall=0.9, k=5, sample=50)
    assert result.queries == 50 and result.chosen["recall"] >= 0.9


def test_the_tuned_rule_is_saved_with_the_index(built, queries, tmp_path: Path) -> None:
    built.tune(target_recall=0.95, k=10, queries=queries)
    built.save(tmp_path / "idx")
    again = MatryoshkaIndex.load(tmp_path / "idx", device="cpu")
    assert again.config == built.config
    assert again.search_vectors(queries, k=10) == built.search_vectors(queries, k=10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_recall": 1.5}, r"target_recall must be in \(0, 1\], got 1.5"),
        ({"target_recall": 0.9, "k": 0}, r"k must be a positive int, got 0"),
        ({"target_recall": 0.9, "sample": -1}, r"sample must be a positive int, got -1"),
        ({"target_recall": 0.9, "queries": np.ones((2, 5))}, r"queries have 5 dims"),
        ({"queries": np.ones((0, 96))}, r"at least 2 sample queries .*; got 0"),
        ({"queries": np.ones((1, 96))}, r"at least 2 sample queries .*; got 1"),
    ],
)
def test_bad_tuning_arguments_are_refused_and_change_nothing(built, options, message) -> None:
    before = built.config
    with pytest.raises(ValueError, match=message):
        built.tune(**options)
    assert built.config == before


def test_an_exact_index_has_nothing_to_tune(corpus, ids) -> None:
    index = MatryoshkaIndex(coarse_dim=None)
    index.add_vectors(corpus[:100], ids=ids[:100])
    with pytest.raises(ValueError, match=r"tune needs a coarse stage"):
        index.tune()


def test_a_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError, match=r"adaptive_margin must be a finite number >= 0"):
        MatryoshkaIndex(coarse_dim=16).config.replace(adaptive_margin=-0.1)


def test_tune_can_choose_the_coarse_stage(built, corpus, queries, tmp_path) -> None:
    candidates = [{"coarse_dim": 8, "precision": "int8"}, {"coarse_dim": 32, "backend": "hnsw"}]
    result = built.tune(target_recall=0.95, k=10, queries=queries, coarse=candidates)
    labels = {row["coarse"] for row in result.rows}
    assert labels == {
        "backend=exact, precision=int8, coarse_dim=8",
        "backend=hnsw, precision=float32, coarse_dim=32",
    }
    reaching = [row for row in result.rows if row["recall_low"] >= 0.95]
    assert result.chosen["ms_per_query"] == min(row["ms_per_query"] for row in reaching)
    chosen = dict(item.split("=") for item in result.chosen["coarse"].split(", "))
    assert (str(built.coarse_dim), built.backend, built.precision) == (
        chosen["coarse_dim"],
        chosen["backend"],
        chosen["precision"],
    )
    assert "| coarse stage | mode |" in result.table()
    exact = np.argsort(-(queries @ corpus.T), axis=1)[:, :10]
    found = [[int(i[3:]) for i in h.ids] for h in built.search_vectors(queries, k=10)]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.9  # the calibration queries themselves, one stage rebuilt from storage
    built.save(tmp_path / "i")
    loaded = MatryoshkaIndex.load(tmp_path / "i")
    assert (loaded.coarse_dim, loaded.backend) == (built.coarse_dim, built.backend)
    again = [h.ids for h in loaded.search_vectors(queries, k=10)]
    assert again == [h.ids for h in built.search_vectors(queries, k=10)]


def test_tune_refuses_an_unknown_coarse_search(built, queries) -> None:
    before = built.config
    with pytest.raises(ValueError, match="coarse must be 'search' or a list of settings"):
        built.tune(target_recall=0.9, queries=queries, coarse="everything")
    with pytest.raises(ValueError, match=r"no coarse stage of .* reaches recall@10 0\.99"):
        built.tune(target_recall=0.99, queries=queries, coarse=[{"coarse_dim": 2}],
                   max_candidates=11)  # fmt: skip
    assert built.config == before


def test_an_hnsw_stage_trades_shortlist_against_beam_and_keeps_the_fastest(
    corpus, ids, queries
) -> None:
    index = MatryoshkaIndex(
        coarse_dim=16, backend="hnsw", ef_search=16, device="cpu", exact_below=0
    )
    index.add_vectors(corpus, ids=ids)
    result = index.tune(target_recall=0.95, k=10, queries=queries)
    fixed = [row for row in result.rows if row["mode"] == "fixed"]
    assert len(fixed) >= 2 and [r["shortlist"] for r in fixed] == sorted(
        r["shortlist"] for r in fixed
    )
    for row in fixed:
        assert row["recall_low"] >= 0.95 or row["ef_search"] >= 2000
        assert row["ef_search"] >= row["shortlist"]
        assert f"shortlist {row['shortlist']}, ef_search {row['ef_search']}" in result.table()
    reaching = [row for row in result.rows if row["recall_low"] >= 0.95]
    assert result.chosen["ms_per_query"] == min(row["ms_per_query"] for row in reaching)
    if result.chosen["mode"] == "fixed":
        assert index.config.rescore_multiplier * 10 == result.chosen["shortlist"]
        assert index.config.ef_search == result.chosen["ef_search"]
        assert index.config.adaptive_margin is None and index.config.exact_below == 0


def test_a_coarse_candidate_builds_its_graph_with_its_degree_and_beam(
    built, queries, tmp_path
) -> None:
    graph = {"coarse_dim": 32, "backend": "hnsw", "precision": "int8", "ef_search": 16}
    graph |= {"hnsw_m": 16, "ef_construction": 200}
    result = built.tune(target_recall=0.9, k=10, queries=queries, coarse=[graph])
    assert result.chosen["coarse"] == (
        "backend=hnsw, precision=int8, coarse_dim=32, ef_search=16, hnsw_m=16, ef_construction=200"
    )
    faiss_index = built._engine.coarse.index
    assert (faiss_index.hnsw.efConstruction, faiss_index.hnsw.nb_neighbors(1)) == (200, 16)
    built.save(tmp_path / "i")
    loaded = MatryoshkaIndex.load(tmp_path / "i")
    assert (loaded.config.hnsw_m, loaded.config.ef_construction) == (16, 200)
    assert loaded._engine.coarse.index.hnsw.nb_neighbors(1) == 16


def test_the_coarse_search_tries_a_wide_int8_graph_and_skips_stages_wider_than_the_vectors(
    corpus, ids, queries
) -> None:
    from matryoshka_retrieval.index.tune import COARSE_CANDIDATES

    wide = [c for c in COARSE_CANDIDATES if c["coarse_dim"] == 256]
    assert {c["rotation"] for c in wide} == {None, "pca"}
    assert all(c["precision"] == "int8" and c["backend"] == "hnsw" for c in wide)
    index = MatryoshkaIndex(coarse_dim=16, device="cpu", exact_below=0)
    index.add_vectors(
        corpus[:, :64] / np.linalg.norm(corpus[:, :64], axis=1, keepdims=True), ids=ids
    )
    result = index.tune(target_recall=0.9, k=10, queries=queries[:, :64], coarse="search")
    tried = {row["coarse"].split("coarse_dim=")[1].split(",")[0] for row in result.rows}
    assert tried <= {"64"} and index.coarse_dim == 64  # 128 and 256 dims left out
