"""The NumPy and the torch rerank paths agree (the torch path runs on the CPU device here)."""

from __future__ import annotations

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex
from matryoshka_retrieval.index.rerank import NumpyReranker, TorchReranker, pick, top_k
from matryoshka_retrieval.index.vectors import VectorStore

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def store(corpus) -> VectorStore:
    s = VectorStore(96, base=corpus[:2000])
    s.append(corpus[2000:])  # rows from both the base and the appended part
    return s


@pytest.fixture(scope="module")
def candidates(queries) -> np.ndarray:
    rng = np.random.default_rng(5)
    cand = np.stack([rng.choice(3000, 200, replace=False) for _ in range(len(queries))])
    cand[:, -7:] = -1  # empty slots, as a coarse stage short of candidates returns
    return cand.astype(np.int64)


@pytest.mark.parametrize("dims", [None, 48])
@pytest.mark.parametrize(
    "options",
    [
        {"dtype": "float32"},
        {"dtype": "float32", "max_resident_bytes": 0},  # streamed in chunks
        {"dtype": "float32", "max_resident_bytes": 0, "chunk_bytes": 96 * 4 * 200 * 3},
    ],
    ids=["resident", "streamed", "small-chunks"],
)
def test_torch_rescoring_equals_numpy(store, queries, candidates, options, dims) -> None:
    q = (
        queries
        if dims is None
        else queries[:, :dims] / np.linalg.norm(queries[:, :dims], axis=1, keepdims=True)
    )
    expected_scores, expected_rows = NumpyReranker(store).rescore(q, candidates, 10, dims)
    reranker = TorchReranker(store, device="cpu", **options)
    assert reranker.resident == ("max_resident_bytes" not in options)
    scores, rows = reranker.rescore(q, candidates, 10, dims)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert (rows != -1).all()


def test_numpy_rescoring_is_exact(store, queries, candidates) -> None:
    _scores, positions = NumpyReranker(store).rescore(queries, candidates, 5)
    rows = pick(candidates, positions)
    full = store.take(np.arange(3000))
    for i in range(len(queries)):
        valid = candidates[i][candidates[i] >= 0]
        exact = valid[np.argsort(-(full[valid] @ queries[i]), kind="stable")[:5]]
        assert rows[i].tolist() == exact.tolist()


@pytest.mark.parametrize("dims", [None, 48])
def test_numpy_rescoring_in_query_blocks_equals_one_block(store, queries, candidates, dims):
    q = queries if dims is None else queries[:, :dims]
    whole = NumpyReranker(store).rescore(q, candidates, 10, dims)
    small = NumpyReranker(store, chunk_bytes=4 * 200 * 96 * 3 + 1)  # three queries a block
    assert small.chunk_bytes // (4 * 200 * (dims or 96)) < len(queries)
    blocks = small.rescore(q, candidates, 10, dims)
    np.testing.assert_array_equal(blocks[1], whole[1])
    np.testing.assert_array_equal(blocks[0], whole[0])


def test_float16_resident_copy_keeps_the_ranking_close(store, queries, candidates) -> None:
    _, expected = NumpyReranker(store).rescore(queries, candidates, 10)
    _, rows = TorchReranker(store, device="cpu", dtype="float16").rescore(queries, candidates, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, expected, strict=False)])
    assert overlap >= 0.98


def test_resident_copy_follows_appends(corpus, queries) -> None:
    index = MatryoshkaIndex(coarse_dim=32, rerank="torch", device="cpu")
    index.add_vectors(corpus[:1000], ids=[f"a{i}" for i in range(1000)])
    index.search(queries[0], k=3)  # makes the resident copy
    index.add_vectors(corpus[1000:1001] * -1, ids=["flipped"])
    assert index.search(-corpus[1000], k=1)[0].id == "flipped"
    assert index.rerank_device == "torch:cpu"


def test_both_paths_return_the_same_ids_end_to_end(corpus, queries, ids) -> None:
    results = {}
    for rerank in ("numpy", "torch"):
        index = MatryoshkaIndex(stages=[(16, 300), (48, 60)], rerank=rerank, device="cpu")
        index.add_vectors(corpus, ids=ids)
        results[rerank] = [h.ids for h in index.search_vectors(queries, k=10)]
    assert results["numpy"] == results["torch"]


def test_numpy_rerank_on_a_gpu_device_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"rerank='numpy' runs on the CPU"):
        MatryoshkaIndex(dim=8, coarse_dim=4, rerank="numpy", device="cuda")


def test_auto_uses_numpy_without_a_gpu() -> None:
    index = MatryoshkaIndex(dim=8, coarse_dim=4)
    if not torch.cuda.is_available():
        assert index.rerank_device == "numpy:cpu"


def test_top_k_orders_and_marks_empty_slots() -> None:
    scores = np.array([[0.1, 0.9, -np.inf, 0.5]], dtype=np.float32)
    rows = np.array([[10, 11, 12, 13]])
    _s, r = top_k(scores, rows, 4)
    assert r.tolist() == [[11, 13, 10, -1]]
