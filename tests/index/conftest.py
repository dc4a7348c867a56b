from __future__ import annotations

import numpy as np
import pytest


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors whose variance decays over the dims, like Matryoshka embeddings."""
    rng = np.random.default_rng(seed)
    std = np.arange(1, dim + 1) ** -0.55
    centroids = rng.normal(size=(max(4, n // 50), dim)) * std
    x = centroids[rng.integers(0, len(centroids), n)] + 0.6 * rng.normal(size=(n, dim)) * std
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def corpus() -> np.ndarray:
    return clustered(3000, 96)


@pytest.fixture(scope="session")
def queries(corpus: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    q = corpus[rng.choice(len(corpus), 40, replace=False)] + 0.05 * rng.normal(size=(40, 96))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="session")
def ids(corpus: np.ndarray) -> list[str]:
    return [f"doc{i}" for i in range(len(corpus))]


@pytest.fixture(scope="session")
def metadatas(corpus: np.ndarray) -> list[dict[str, object]]:
    return [
        {"group": ["a", "b", "c"][i % 3], "year": 1990 + i % 30, "rare": i % 250 == 0}
        for i in range(len(corpus))
    ]


def exact_top(corpus: np.ndarray, queries: np.ndarray, k: int, allowed=None):
    scores = queries @ corpus.T
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, axis=1)
