"""The coarse rotation: a corpus-fitted rotation that only the coarse stage sees."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matryoshka_retrieval import IndexCorruptedError, MatryoshkaIndex
from matryoshka_retrieval.projection import Projection, fit_projection


@pytest.fixture(scope="module")
def scrambled() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Vectors whose variance is spread over every dim (a model not trained for prefixes)."""
    rng = np.random.default_rng(7)
    turn, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    std = np.arange(1, 65) ** -0.55  # variance decaying over the dims, then turned
    centroids = rng.normal(size=(40, 64)) * std
    x = centroids[rng.integers(0, 40, 2000)] + 0.6 * rng.normal(size=(2000, 64)) * std
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    corpus = (x @ turn).astype(np.float32)
    picks = rng.choice(2000, 60, replace=False)
    queries = corpus[picks] + 0.05 * rng.normal(size=(60, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return corpus, queries, [f"d{i}" for i in range(2000)]


def recall(index: MatryoshkaIndex, corpus: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    truth = np.argsort(-(queries @ corpus.T), axis=1)[:, :k]
    hits = index.search_vectors(queries, k=k)
    return float(
        np.mean(
            [
                len({int(i[1:]) for i in h.ids} & set(t)) / k
                for h, t in zip(hits, truth, strict=True)
            ]
        )
    )


def build(corpus, ids, **options) -> MatryoshkaIndex:
    options = {"coarse_dim": 8, "rescore_multiplier": 3, "exact_below": 0, **options}
    index = MatryoshkaIndex(**options)
    index.add_vectors(corpus, ids=ids)
    return index


def test_a_pca_rotation_makes_a_short_prefix_shortlist_better(scrambled) -> None:
    corpus, queries, ids = scrambled
    plain, rotated = build(corpus, ids), build(corpus, ids, coarse_rotation="pca")
    assert recall(rotated, corpus, queries) > recall(plain, corpus, queries) + 0.1
    hit = rotated.search_vectors(queries[:1], k=1)[0][0]
    row = int(hit.id[1:])
    assert hit.score == pytest.approx(float(queries[0] @ corpus[row]), abs=1e-5)  # full scores
    stored = rotated.get([hit.id], include_vectors=True)[0].vector
    np.testing.assert_allclose(stored, corpus[row], atol=1e-6)  # stored as given


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_the_rotation_is_saved_and_loaded_with_the_index(scrambled, tmp_path, backend) -> None:
    corpus, queries, ids = scrambled
    index = build(corpus, ids, coarse_rotation="pca", backend=backend)
    index.delete(ids[:10])  # a compacting save rebuilds the coarse stage from rotated prefixes
    before = index.search_vectors(queries, k=5)
    index.save(tmp_path / "i")
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert manifest["coarse_rotation"]["method"] == "pca"
    assert (tmp_path / "i" / manifest["generation"] / "coarse_rotation.npz").is_file()
    loaded = MatryoshkaIndex.load(tmp_path / "i")
    after = loaded.search_vectors(queries, k=5)
    assert [h.ids for h in after] == [h.ids for h in before]
    np.testing.assert_array_equal([h.scores for h in after], [h.scores for h in before])
    # the saved rotated prefixes are recomputed in other batches: BLAS may round the last bit
    np.testing.assert_allclose(
        [[x.coarse_score for x in h] for h in after],
        [[x.coarse_score for x in h] for h in before],
        atol=1e-6,
    )
    loaded.add_vectors(-queries[:2], ids=["n0", "n1"])  # new rows go through the same rotation
    assert loaded.search_vectors(-queries[1:2], k=1)[0][0].id == "n1"


def test_an_index_without_rotation_writes_no_rotation_field(scrambled, tmp_path) -> None:
    corpus, _, ids = scrambled
    build(corpus[:50], ids[:50]).save(tmp_path / "i")
    assert "coarse_rotation" not in json.loads((tmp_path / "i" / "manifest.json").read_text())


def test_a_damaged_rotation_file_is_a_clear_error(scrambled, tmp_path) -> None:
    corpus, _, ids = scrambled
    build(corpus[:200], ids[:200], coarse_rotation="pca").save(tmp_path / "i")
    gen = json.loads((tmp_path / "i" / "manifest.json").read_text())["generation"]
    path = tmp_path / "i" / gen / "coarse_rotation.npz"
    saved = Projection.load(path)
    size = path.stat().st_size
    Projection(saved.method, -saved.rotation, saved.info).save(path)
    assert path.stat().st_size == size  # same size: only the fingerprint can tell
    with pytest.raises(IndexCorruptedError, match="does not match the manifest"):
        MatryoshkaIndex.load(tmp_path / "i")


def test_a_fitted_projection_can_be_given(scrambled) -> None:
    corpus, queries, ids = scrambled
    projection = fit_projection(corpus, method="pca", show_progress_bar=False)
    given = build(corpus, ids, coarse_rotation=projection)
    fitted = build(corpus, ids, coarse_rotation="pca")
    assert [h.ids for h in given.search_vectors(queries, k=5)] == [
        h.ids for h in fitted.search_vectors(queries, k=5)
    ]


def test_a_pca_rotation_waits_for_enough_rows_and_searches_exactly_meanwhile(scrambled) -> None:
    corpus, queries, ids = scrambled
    index = MatryoshkaIndex(coarse_dim=8, coarse_rotation="pca", exact_below=0)
    index.add_vectors(corpus[:1], ids=ids[:1])  # one row: nothing to fit yet
    assert index._engine.rotation == "pca"
    for start in range(1, 1100, 100):
        index.add_vectors(corpus[start : start + 100], ids=ids[start : start + 100])
        if len(index) < 1024:
            assert index._engine.rotation == "pca"
            assert index.search_vectors(queries[:1], k=3)[0].reranked == len(index)  # exact
    assert index._engine.rotation.method == "pca" and index._engine.coarse.ntotal == 1101
    index.add_vectors(corpus[1101:], ids=ids[1101:])
    assert index._engine.coarse.ntotal == 2000
    assert recall(index, corpus, queries) > 0.9


def test_saving_fits_a_waiting_rotation(scrambled, tmp_path) -> None:
    corpus, _, ids = scrambled
    index = MatryoshkaIndex(coarse_dim=8, coarse_rotation="pca", exact_below=0, dim=64)
    index.save(tmp_path / "empty")  # nothing stored: still waiting, and saved so
    assert MatryoshkaIndex.load(tmp_path / "empty")._engine.rotation == "pca"
    index.add_vectors(corpus[:300], ids=ids[:300])
    index.save(tmp_path / "i")
    loaded = MatryoshkaIndex.load(tmp_path / "i")
    assert loaded._engine.rotation.method == "pca" and loaded._engine.coarse.ntotal == 300
    assert loaded.search(corpus[7], k=1)[0].id == ids[7]


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_quantized_coarse_stages_scan_rotated_prefixes(scrambled, precision) -> None:
    corpus, queries, ids = scrambled
    plain = build(corpus, ids, precision=precision, coarse_dim=16)
    rotated = build(corpus, ids, precision=precision, coarse_dim=16, coarse_rotation="pca")
    assert recall(rotated, corpus, queries) > recall(plain, corpus, queries)


def test_a_corrupted_rotation_file_is_a_clear_error(scrambled, tmp_path) -> None:
    corpus, _, ids = scrambled
    build(corpus[:200], ids[:200], coarse_rotation="pca").save(tmp_path / "i")
    gen = json.loads((tmp_path / "i" / "manifest.json").read_text())["generation"]
    path = tmp_path / "i" / gen / "coarse_rotation.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match=r"coarse_rotation.npz cannot be read"):
        MatryoshkaIndex.load(tmp_path / "i")


def test_a_calibration_is_refused_with_a_rotation() -> None:
    with pytest.raises(ValueError, match="calibration= ranges are of stored prefixes"):
        MatryoshkaIndex(
            coarse_dim=8,
            precision="int8",
            coarse_rotation="pca",
            calibration={"lower": [0.0] * 8, "upper": [1.0] * 8},
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"coarse_rotation": "svd"}, r"coarse_rotation must be None, 'pca' or a fitted Projection"),
        ({"coarse_rotation": "pca", "coarse_dim": None}, r"needs a coarse stage"),
        ({"coarse_rotation": "pca", "stages": [(8, 100), (16, 20)]}, r"coarse stage only"),
        (
            {"coarse_rotation": "pca", "backend": "chroma"},
            r"works with backend in \('exact', 'hnsw', 'postgres'\), not backend='chroma'",
        ),
        (
            {
                "coarse_rotation": fit_projection(
                    np.eye(32, dtype=np.float32), show_progress_bar=False
                ),
                "dim": 64,
            },
            r"maps 32-dim vectors but this index stores 64-dim",
        ),
    ],
)
def test_a_rotation_the_index_cannot_use_is_refused(options, message) -> None:
    options = {"coarse_dim": 8, **options}
    with pytest.raises(ValueError, match=message):
        MatryoshkaIndex(**options)


def test_tune_tries_the_rotation_and_keeps_it_when_it_is_faster(scrambled, tmp_path) -> None:
    corpus, queries, ids = scrambled
    index = build(corpus, ids)
    settings = [{"coarse_dim": 8}, {"coarse_dim": 8, "rotation": "pca", "backend": "hnsw"}]
    result = index.tune(0.95, k=10, queries=queries, coarse=settings)
    by_stage: dict[str, dict] = {}  # each stage's first fixed row: its shortest shortlist
    for row in result.rows:
        if row["mode"] == "fixed":
            by_stage.setdefault(row["coarse"], row)
    rotated = by_stage["backend=hnsw, precision=float32, coarse_dim=8, rotation=pca"]
    plain = by_stage["backend=exact, precision=float32, coarse_dim=8"]
    assert rotated["shortlist"] < plain["shortlist"]  # the rotation needs a shorter shortlist
    engine = index._engine
    assert engine.coarse.config == index.config  # the chosen stage carries the chosen config
    chose_rotation = "rotation=pca" in result.chosen["coarse"]
    assert (engine.rotation is not None) == chose_rotation == (index.backend == "hnsw")
    before = [h.ids for h in index.search_vectors(queries, k=10)]
    index.save(tmp_path / "i")
    loaded = MatryoshkaIndex.load(tmp_path / "i")
    assert (loaded._engine.rotation is not None) == chose_rotation
    assert [h.ids for h in loaded.search_vectors(queries, k=10)] == before
    assert recall(index, corpus, queries) >= 0.9


def test_a_failed_tune_leaves_the_index_as_it_was(scrambled) -> None:
    corpus, queries, ids = scrambled
    index = build(corpus, ids, precision="binary", coarse_dim=16)
    before = [h.ids for h in index.search_vectors(queries, k=5)]
    settings = [{"coarse_dim": 16}, {"coarse_dim": 4, "precision": "binary"}]  # 4: not bytes
    with pytest.raises(ValueError, match="multiple of 8"):
        index.tune(0.9, k=10, queries=queries, coarse=settings)
    assert index._engine.coarse.config == index.config and index.precision == "binary"
    assert [h.ids for h in index.search_vectors(queries, k=5)] == before
    index.add_vectors(-queries[:1], ids=["new"])
    assert index.search_vectors(-queries[:1], k=1)[0][0].id == "new"


def test_an_int8_stage_built_by_tune_over_many_rows_holds_each_row_once() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(70_000, 16)).astype(np.float32)
    index = MatryoshkaIndex(coarse_dim=8, exact_below=0)
    index.add_vectors(vectors, ids=[str(i) for i in range(70_000)])
    index.tune(0.8, k=5, sample=50, coarse=[{"coarse_dim": 8, "precision": "int8"}])
    assert index.precision == "int8" and index._engine.coarse.ntotal == 70_000


def test_a_rotation_of_another_dim_is_refused_at_the_first_add(scrambled) -> None:
    corpus, _, ids = scrambled
    rotation = fit_projection(corpus[:, :32], show_progress_bar=False)
    index = MatryoshkaIndex(coarse_dim=8, coarse_rotation=rotation)
    with pytest.raises(ValueError, match="coarse_rotation maps 32-dim vectors but these vectors"):
        index.add_vectors(corpus[:5], ids=ids[:5])
    assert len(index) == 0 and index.dim is None


@pytest.mark.parametrize("rows", [1, 5, 64, 5000])
def test_the_rotation_product_in_row_blocks_equals_one_product(rows) -> None:
    from matryoshka_retrieval.index.engine import one_thread_product

    rng = np.random.default_rng(rows)
    matrix = rng.normal(size=(rows, 96)).astype(np.float32)
    turn = np.linalg.qr(rng.normal(size=(96, 96)))[0][:, :48].astype(np.float32)
    got = one_thread_product(matrix, turn)
    assert got.shape == (rows, 48) and got.dtype == np.float32
    np.testing.assert_allclose(got, matrix @ turn, rtol=1e-5, atol=1e-6)
