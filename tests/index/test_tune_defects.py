"""The tuner's defects found by the adversarial run: each test failed before the engine protocol."""

from __future__ import annotations

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim))
    x = centres[rng.integers(0, 64, n)] + 0.9 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(index: MatryoshkaIndex, corpus: np.ndarray, queries: np.ndarray, k: int) -> float:
    top = np.argsort(-(queries @ corpus.T), axis=1)[:, :k]
    hits = index.search_vectors(queries, k=k)
    return float(
        np.mean(
            [
                len({int(i) for i in h.ids} & set(t.tolist())) / k
                for h, t in zip(hits, top, strict=True)
            ]
        )
    )


def test_tuning_on_held_out_rows_holds_its_target_on_fresh_queries() -> None:
    # D3: held-out rows were still nodes of the HNSW stage, so the walk from each found its
    # neighbours easily: on main before the engine protocol this data tuned to shortlist 10,
    # ef_search 16 with a bound of 0.97, which held 0.75 on fresh queries
    rng = np.random.default_rng(0)
    data = rng.normal(size=(8300, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    corpus, fresh = data[:8000], data[8000:]
    ids = [str(i) for i in range(len(corpus))]
    graph = {"coarse_dim": 32, "backend": "hnsw", "hnsw_m": 16, "exact_below": 0, "device": "cpu"}
    index = MatryoshkaIndex(ef_search=16, **graph)
    index.add_vectors(corpus, ids=ids)
    result = index.tune(0.95, k=10, sample=200)
    assert result.source == "held-out rows"
    fixed = next(row for row in result.rows if row["mode"] == "fixed")
    assert fixed["recall_low"] >= 0.95
    tuned = MatryoshkaIndex(
        rescore_multiplier=fixed["shortlist"] // 10, ef_search=fixed["ef_search"], **graph
    )
    tuned.add_vectors(corpus, ids=ids)
    assert _recall(tuned, corpus, fresh, 10) >= 0.95 - 0.02


def test_tuning_with_queries_says_its_estimate_comes_from_them(corpus, ids, queries) -> None:
    index = MatryoshkaIndex(coarse_dim=16, exact_below=0, device="cpu")
    index.add_vectors(corpus, ids=ids)
    assert index.tune(0.9, k=5, queries=queries).source == "queries"


def test_tuning_leaves_the_index_as_it_was_when_it_fails(corpus, ids, queries) -> None:
    index = MatryoshkaIndex(coarse_dim=16, rescore_multiplier=3, exact_below=0, device="cpu")
    index.add_vectors(corpus, ids=ids)
    before = index.config
    with pytest.raises(ValueError, match="out of reach"):
        index.tune(1.0, k=10, queries=queries, max_candidates=11)
    assert index.config == before


def test_k_at_or_above_max_candidates_is_refused_by_name(corpus, ids) -> None:
    # D8: tune(k=2999) with k above max_candidates raised IndexError
    index = MatryoshkaIndex(coarse_dim=16, exact_below=0, device="cpu")
    index.add_vectors(corpus, ids=ids)
    with pytest.raises(ValueError, match=r"k=2999 must be below max_candidates=2000"):
        index.tune(0.9, k=2999)


@pytest.mark.parametrize("value", ["0.9", True, float("nan"), None])
def test_a_target_that_is_not_a_number_is_refused_by_name(corpus, ids, value) -> None:
    # D21: tune(target_recall="0.9") said "'<' not supported"
    index = MatryoshkaIndex(coarse_dim=16, exact_below=0, device="cpu")
    index.add_vectors(corpus, ids=ids)
    with pytest.raises(ValueError, match=r"target_recall must be in \(0, 1\], got"):
        index.tune(value, k=5)


def test_a_negative_seed_is_refused_by_name(corpus, ids) -> None:
    index = MatryoshkaIndex(coarse_dim=16, exact_below=0, device="cpu")
    index.add_vectors(corpus, ids=ids)
    with pytest.raises(ValueError, match=r"seed must be an int of at least 0, got -1"):
        index.tune(0.9, k=5, seed=-1)


def test_a_server_backend_in_coarse_settings_is_refused_by_name(corpus, ids, queries) -> None:
    # D16: tune(coarse=[{"backend": "postgres"}]) raised KeyError
    index = MatryoshkaIndex(coarse_dim=16, exact_below=0, device="cpu")
    index.add_vectors(corpus, ids=ids)
    with pytest.raises(ValueError, match=r"backend='postgres' keeps its stage outside it"):
        index.tune(0.9, k=5, queries=queries, coarse=[{"backend": "postgres"}])
    with pytest.raises(ValueError, match=r"backend='nope' is not supported"):
        index.tune(0.9, k=5, queries=queries, coarse=[{"backend": "nope"}])


def test_stages_wider_than_the_vectors_are_reported_as_such(corpus, ids, queries) -> None:
    # D27: a stage skipped for being wider than the vectors was reported as one that
    # "reaches" no recall
    index = MatryoshkaIndex(coarse_dim=16, exact_below=0, device="cpu")
    index.add_vectors(corpus, ids=ids)
    dim = corpus.shape[1]
    with pytest.raises(ValueError, match=rf"coarse_dim {dim + 8} is wider than the {dim}-dim"):
        index.tune(0.9, k=5, queries=queries, coarse=[{"coarse_dim": dim + 8}])
    result = index.tune(
        0.9, k=5, queries=queries, coarse=[{"coarse_dim": 8}, {"coarse_dim": dim + 8}]
    )
    assert any(f"coarse_dim {dim + 8} is wider" in reason for reason in result.skipped)


def test_a_setting_the_backend_does_not_use_is_an_error_not_stored() -> None:
    with pytest.raises(ValueError, match=r"backend='exact' does not use ef_search= \(got 64\)"):
        MatryoshkaIndex(dim=8, coarse_dim=4, ef_search=64)
    with pytest.raises(ValueError, match=r"backend='hnsw' does not use collection="):
        MatryoshkaIndex(dim=8, coarse_dim=4, backend="hnsw", collection="docs")


def test_setting_a_base_encoder_on_a_projected_index_applies_the_projection(tmp_path) -> None:
    # D2: index.encoder = base_encoder skipped the projection, so a document's own text found
    # another document
    from matryoshka_retrieval import CallableEncoder
    from matryoshka_retrieval.projection import ProjectedEncoder, fit_projection

    rng = np.random.default_rng(3)
    table = {f"t{i}": v for i, v in enumerate(_clustered(300, 24, seed=3))}

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([table[t] for t in texts])

    base = CallableEncoder(embed, dim=24, model_name="table")
    projection = fit_projection(np.stack(list(table.values())), show_progress_bar=False)
    index = MatryoshkaIndex(ProjectedEncoder(base, projection), coarse_dim=8, device="cpu")
    texts = list(table)
    index.add_texts(texts, ids=texts)
    index.save(tmp_path / "idx")
    loaded = MatryoshkaIndex.load(tmp_path / "idx")
    loaded.encoder = base
    for text in rng.choice(texts, 20, replace=False).tolist():
        hit = loaded.search(text, k=1)[0]
        assert hit.id == text and hit.score == pytest.approx(1.0, abs=1e-5)


def test_an_int8_trial_stage_is_calibrated_on_its_own_rotated_rows() -> None:
    # a trial's int8 stage with a rotation of its own (or over a subset of rows) must be
    # calibrated and encoded from the prefixes it indexes, not from the engine's current ones
    rng = np.random.default_rng(5)
    scales = np.linspace(3.0, 0.05, 48)
    turn = np.linalg.qr(rng.normal(size=(48, 48)))[0]
    data = ((rng.normal(size=(3000, 48)) * scales) @ turn).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = MatryoshkaIndex(coarse_dim=8, exact_below=0, device="cpu")
    index.add_vectors(data, ids=[str(i) for i in range(len(data))])
    engine = index._engine
    exclude = np.arange(0, 3000, 15)
    exact = index.config.replace(precision="float32", coarse_dim=8)
    coded = exact.replace(precision="int8")
    for rows in (None, exclude):
        flat = engine.trial(exact, rotation="pca", exclude=rows).shortlist(data[:50], 10)[1]
        int8 = engine.trial(coded, rotation="pca", exclude=rows).shortlist(data[:50], 10)[1]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(flat, int8, strict=True)])
        assert overlap >= 0.8
