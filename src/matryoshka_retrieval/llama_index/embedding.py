"""LlamaIndex embedding model: renormalised Matryoshka prefixes of any encoder."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import ImageType
from typing_extensions import Self

from .._adapter import EncoderAdapter, adapt_encoder
from ..encoders.base import Encoder

__all__ = ["MatryoshkaEmbedding"]


class MatryoshkaEmbedding(EncoderAdapter, MultiModalEmbedding):
    """A LlamaIndex embedding model: renormalised ``truncate_dim`` prefixes of an encoder.

    Texts and queries take the encoder's own paths (and prompts); a batch is one encoder call.
    It is a ``MultiModalEmbedding``: over a model that embeds images (a CLIP model in
    ``SentenceTransformerEncoder``) it serves as a ``MultiModalVectorStoreIndex``'s
    ``image_embed_model``, embedding image paths and buffers into the texts' space.

    Args:
        encoder: Anything :func:`~matryoshka_retrieval.as_encoder` accepts.
        truncate_dim: Output dimension; ``None`` keeps the encoder's own ``truncate_dim``.
        dim: Output width of ``encoder`` when it is a function or a framework object.
        model_name: Name to report; defaults to the encoder's ``model_name``.
        embed_batch_size, **kwargs: ``BaseEmbedding`` fields.

    Raises:
        TypeError: If ``encoder`` is not an embedder ``as_encoder`` accepts.
        ValueError: If ``truncate_dim`` exceeds the model's dimension.

    Example:
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> from matryoshka_retrieval.llama_index import MatryoshkaEmbedding
        >>> embed_model = MatryoshkaEmbedding(SentenceTransformerEncoder(), truncate_dim=64)
        >>> vector = embed_model.get_query_embedding("how do I list files?")
        >>> len(vector), embed_model.dim, embed_model.class_name()
        (64, 64, 'MatryoshkaEmbedding')
    """

    truncate_dim: int | None = Field(
        default=None, description="Dimension of the returned vectors.", frozen=True
    )
    _encoder: Encoder = PrivateAttr()

    def __init__(
        self,
        encoder: Any,
        *,
        truncate_dim: int | None = None,
        dim: int | None = None,
        model_name: str | None = None,
        embed_batch_size: int = 256,
        **kwargs: Any,
    ) -> None:
        enc = adapt_encoder(encoder, truncate_dim=truncate_dim, dim=dim)
        fields: dict[str, Any] = {"model_name": model_name or enc.model_name}
        fields["truncate_dim"] = enc.truncate_dim  # a field of ours, unknown to BaseEmbedding
        super().__init__(**fields, embed_batch_size=embed_batch_size, **kwargs)
        self._encoder = enc

    @classmethod
    def class_name(cls) -> str:
        return "MatryoshkaEmbedding"

    @property
    def encoder(self) -> Encoder:
        """The :class:`~matryoshka_retrieval.Encoder` that computes the embeddings."""
        return self._encoder

    @property
    def dim(self) -> int:
        """Length of the returned vectors."""
        return self._encoder.dim

    def _current_encoder(self) -> Encoder:
        return self._encoder

    def _with_encoder(self, encoder: Encoder) -> Self:
        fields = ("model_name", "embed_batch_size", "callback_manager", "num_workers")
        return type(self)(encoder, **{name: getattr(self, name) for name in fields})

    # Each single-item hook embeds a batch of one; each batch is one call on the encoder's
    # path, its async twin awaiting the encoder's async path (see EncoderAdapter._embedding).
    def _get_query_embedding(self, query: str) -> Embedding:
        return self._vectors([query], "queries")[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._avectors([query], "queries"))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._vectors(texts, "documents")

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._avectors(texts, "documents")

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return self._get_image_embeddings([img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return (await self._aget_image_embeddings([img_file_path]))[0]

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return self._vectors(img_file_paths, "images")

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return await self._avectors(img_file_paths, "images")
