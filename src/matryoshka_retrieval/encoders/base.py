"""The encoder interface every embedder is adapted to."""

from __future__ import annotations

import asyncio
import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..truncation import as_float_matrix, prefix

__all__ = ["Encoder", "EncoderError", "InputKind", "check_texts", "check_truncate_dim"]

InputKind = Literal["document", "query"]


class EncoderError(RuntimeError):
    """An embedding provider failed, or answered with vectors that cannot be used.

    Attributes:
        provider: Name of the provider or encoder that failed (``"openai"``, ...).
    """

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a batch of input texts before any request is made.

    Raises:
        TypeError: If ``texts`` is a bare string or an item is not a string (naming its index).
        ValueError: If an item is empty or only whitespace (naming its index).
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            f"texts must be a list of strings, got a single {type(texts).__name__}; "
            "wrap it in a list: [text]"
        )
    try:
        items = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}: {text!r:.60}")
        if not text.strip():
            raise ValueError(f"texts[{i}] is an empty string; every text must have content")
    return items


def check_truncate_dim(truncate_dim: int | None, full_dim: int, model_name: str) -> int | None:
    """Validate ``truncate_dim`` against a model's output dimension."""
    if truncate_dim is None:
        return None
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, (int, np.integer)):
        raise TypeError(f"truncate_dim must be an int or None, got {type(truncate_dim).__name__}")
    if not 1 <= truncate_dim <= full_dim:
        raise ValueError(
            f"truncate_dim={truncate_dim} is out of range: it must be between 1 and the "
            f"embedding dimension {full_dim} of model {model_name!r}"
        )
    return int(truncate_dim)


class Encoder(ABC):
    """Turns texts into L2-normalised float32 Matryoshka embeddings at a chosen dimension.

    Subclasses implement :meth:`_embed` (and, where the backend has a native async client,
    :meth:`_aembed`); this class validates input, skips empty batches, checks what the backend
    returned and truncates it with :func:`~matryoshka_retrieval.truncate`.

    Attributes:
        model_name: Name of the underlying model.
        full_dim: The model's native embedding dimension.
        truncate_dim: The prefix length the encoder returns, or ``None`` for the full dimension.
    """

    model_name: str
    full_dim: int
    truncate_dim: int | None
    provider: str = "encoder"

    @property
    def dim(self) -> int:
        """Dimension of the vectors this encoder returns (``truncate_dim`` or ``full_dim``)."""
        return self.truncate_dim if self.truncate_dim is not None else self.full_dim

    @property
    def returned_dim(self) -> int:
        """Width of the vectors :meth:`_embed` returns: the full dim unless the backend cuts it."""
        return self.full_dim

    def with_truncate_dim(self, truncate_dim: int | None) -> Encoder:
        """Return a copy of this encoder that outputs ``truncate_dim`` dimensions.

        The copy shares the model or client, so it costs nothing to make.
        """
        clone = copy.copy(self)
        clone.truncate_dim = check_truncate_dim(truncate_dim, self.full_dim, self.model_name)
        return clone

    # -- subclass hooks -------------------------------------------------------------------
    @abstractmethod
    def _embed(self, texts: list[str], kind: InputKind) -> Any:
        """Embed a non-empty, validated batch; return an array-like ``[len(texts), width]``."""

    async def _aembed(self, texts: list[str], kind: InputKind) -> Any:
        """Async twin of :meth:`_embed`; by default runs it in a worker thread."""
        return await asyncio.to_thread(self._embed, texts, kind)

    # -- public API -----------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed documents (passages) for storage.

        Args:
            texts: The documents; each must be a non-empty string.

        Returns:
            Float32 array ``[len(texts), dim]`` with unit-norm rows, in input order.

        Raises:
            TypeError: If an item is not a string.
            ValueError: If an item is empty.
            EncoderError: If the backend fails or returns unusable vectors.
        """
        return self._encode(texts, "document")

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed search queries; same contract as :meth:`encode_documents`."""
        return self._encode(texts, "query")

    async def aencode_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Async twin of :meth:`encode_documents`."""
        return await self._aencode(texts, "document")

    async def aencode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Async twin of :meth:`encode_queries`."""
        return await self._aencode(texts, "query")

    def _encode(self, texts: Sequence[str], kind: InputKind) -> NDArray[np.float32]:
        items = check_texts(texts)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._finish(self._embed(items, kind), len(items))

    async def _aencode(self, texts: Sequence[str], kind: InputKind) -> NDArray[np.float32]:
        items = check_texts(texts)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._finish(await self._aembed(items, kind), len(items))

    def _finish(self, raw: Any, n: int) -> NDArray[np.float32]:
        """Check the backend's vectors (count, width, finiteness) and truncate them."""
        expected = self.returned_dim
        if isinstance(raw, (list, tuple)):
            if len(raw) != n:
                raise EncoderError(
                    self.provider, f"returned {len(raw)} embeddings for {n} input texts"
                )
            for row, vector in enumerate(raw):
                length = len(vector) if hasattr(vector, "__len__") else -1
                if length != expected:
                    raise EncoderError(
                        self.provider,
                        f"returned an embedding of length {length} in row {row}, expected "
                        f"{expected} for model {self.model_name!r}",
                    )
        try:
            matrix, _ = as_float_matrix(raw, name=f"{self.provider} embeddings")
        except (TypeError, ValueError) as exc:
            raise EncoderError(self.provider, f"returned unusable embeddings: {exc}") from exc
        if matrix.shape[0] != n:
            raise EncoderError(
                self.provider,
                f"returned {matrix.shape[0]} embeddings for {n} input texts",
            )
        if matrix.shape[1] != expected:
            raise EncoderError(
                self.provider,
                f"returned embeddings of length {matrix.shape[1]} (row 0), expected {expected} "
                f"for model {self.model_name!r}",
            )
        bad = ~np.isfinite(matrix).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise EncoderError(
                self.provider, f"returned a non-finite value (NaN or infinity) in row {row}"
            )
        return prefix(matrix, self.dim)  # checked above: finite, at least self.dim wide

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_name={self.model_name!r}, full_dim={self.full_dim}, "
            f"truncate_dim={self.truncate_dim})"
        )
