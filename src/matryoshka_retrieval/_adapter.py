"""What the framework integrations share: the embedding adapter base and the index builder.

LangChain's ``MatryoshkaEmbeddings``, LlamaIndex's ``MatryoshkaEmbedding`` and Chroma's
``MatryoshkaEmbeddingFunction`` are thin shells over :class:`EncoderAdapter`: each keeps its
encoder where its framework wants it and answers its framework's calls through the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ._twins import EncodeKind, Steps, arun, encode, run
from .encoders.base import Encoder
from .encoders.callable import as_encoder
from .index import MatryoshkaIndex

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["EncoderAdapter", "adapt_encoder", "index_from"]


def adapt_encoder(embedder: Any, *, truncate_dim: int | None, dim: int | None) -> Encoder:
    """``embedder`` as an :class:`Encoder` at ``truncate_dim`` (see ``as_encoder``).

    Raises:
        ValueError: If ``dim`` is given and is not the width of the embedder's vectors.
    """
    encoder = as_encoder(embedder, truncate_dim=truncate_dim, dim=dim)
    if dim is not None and encoder.full_dim != dim:
        raise ValueError(
            f"dim={dim} does not match the width {encoder.full_dim} of the encoder "
            f"{encoder.model_name!r}"
        )
    return encoder


def index_from(
    embedding: Any, index: MatryoshkaIndex | None, options: Mapping[str, Any], owner: str
) -> MatryoshkaIndex:
    """The index an integration works on: ``index`` as given, or a new one from ``options``.

    Args:
        embedding: The embedder; with ``index`` it replaces the index's encoder (which checks
            that it fits the index).
        index: An existing index, or ``None`` for a new one.
        options: Keyword arguments of a new :class:`MatryoshkaIndex`.
        owner: The class or method asking, for messages.

    Raises:
        TypeError: If ``index`` is not a ``MatryoshkaIndex``, or options come with it.
    """
    if index is None:
        return MatryoshkaIndex(embedding, **options)
    if not isinstance(index, MatryoshkaIndex):
        raise TypeError(f"{owner}: index must be a MatryoshkaIndex, got {type(index).__name__}")
    if options:
        raise TypeError(
            f"{owner}: index options {sorted(options)} cannot be combined with index=: the "
            "index was configured when it was made"
        )
    if embedding is not None:
        index.encoder = embedding
    return index


class EncoderAdapter:
    """Base of the framework embedding classes: an :class:`Encoder` answers every call.

    A subclass says where it keeps its encoder (:meth:`_current_encoder`) and how to copy
    itself around another one (:meth:`_with_encoder`); documents and queries go through the
    encoder's own document, query and image paths, sync or async, from one body.
    """

    def _current_encoder(self) -> Encoder:
        raise NotImplementedError

    def _with_encoder(self, encoder: Encoder) -> Self:
        raise NotImplementedError

    @property
    def output_dim(self) -> int:
        """Length of the returned vectors (``truncate_dim``, or the model's full dimension)."""
        return self._current_encoder().dim

    def with_truncate_dim(self, truncate_dim: int | None) -> Self:
        """A copy that returns ``truncate_dim`` dimensions; it shares the model or client.

        Raises:
            ValueError: If ``truncate_dim`` exceeds the model's dimension.
        """
        return self._with_encoder(self._current_encoder().with_truncate_dim(truncate_dim))

    def _matrix(self, texts: Sequence[str], *, query: bool) -> NDArray[np.float32]:
        encoder = self._current_encoder()
        return encoder.encode_queries(texts) if query else encoder.encode_documents(texts)

    def _embedding(self, items: Sequence[Any], kind: EncodeKind) -> Steps[list[list[float]]]:
        """The body of :meth:`_vectors` and :meth:`_avectors`: one encoder call for a batch."""
        matrix = yield encode(self._current_encoder(), kind, items)
        vectors: list[list[float]] = matrix.tolist()
        return vectors

    def _vectors(self, items: Sequence[Any], kind: EncodeKind) -> list[list[float]]:
        return run(self._embedding(items, kind))

    async def _avectors(self, items: Sequence[Any], kind: EncodeKind) -> list[list[float]]:
        return await arun(self._embedding(items, kind))
