"""Encoders over plain functions and over other frameworks' embedding objects."""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from .base import Encoder, InputKind, check_truncate_dim

__all__ = ["CallableEncoder", "LangChainEncoder", "LlamaIndexEncoder", "as_encoder"]

EmbedFn = Callable[[list[str]], Any]
AsyncEmbedFn = Callable[[list[str]], Awaitable[Any]]


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int (the function's output width), got {dim!r}")
    return dim


class CallableEncoder(Encoder):
    """Wrap any function that embeds a list of texts.

    Args:
        fn: ``fn(texts) -> array-like [len(texts), dim]`` for documents. May be ``async def``.
        dim: Width of the vectors ``fn`` returns (the model's full dimension).
        query_fn: Function for queries, if they are embedded differently; defaults to ``fn``.
        truncate_dim: Output dimension, or ``None`` for ``dim``.
        model_name: Name to record for the model.

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import CallableEncoder
        >>> encoder = CallableEncoder(lambda texts: np.ones((len(texts), 8)), dim=8, truncate_dim=2)
        >>> encoder.encode_documents(["a", "b"]).shape
        (2, 2)
    """

    provider = "callable"

    def __init__(
        self,
        fn: EmbedFn | AsyncEmbedFn,
        *,
        dim: int,
        query_fn: EmbedFn | AsyncEmbedFn | None = None,
        truncate_dim: int | None = None,
        model_name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if query_fn is not None and not callable(query_fn):
            raise TypeError(f"query_fn must be callable, got {type(query_fn).__name__}")
        self.fn = fn
        self.query_fn = query_fn
        self.full_dim = _check_dim(dim)
        self.model_name = model_name or str(getattr(fn, "__name__", type(fn).__name__))
        self.truncate_dim = check_truncate_dim(truncate_dim, self.full_dim, self.model_name)

    def _function(self, kind: InputKind) -> EmbedFn | AsyncEmbedFn:
        return self.query_fn if kind == "query" and self.query_fn is not None else self.fn

    def _embed(self, texts: list[str], kind: InputKind) -> Any:
        fn = self._function(kind)
        if inspect.iscoroutinefunction(fn):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(fn(texts))
            raise TypeError(
                f"{self.model_name!r} is an async function and an event loop is running: "
                "call aencode_documents / aencode_queries instead"
            )
        return fn(texts)

    async def _aembed(self, texts: list[str], kind: InputKind) -> Any:
        fn = self._function(kind)
        if inspect.iscoroutinefunction(fn):
            return await fn(texts)
        return await asyncio.to_thread(fn, texts)


_PROBE_TEXT = "dimension probe"


class _FrameworkEncoder(Encoder):
    """Base of the adapters of other frameworks' embedding objects.

    Args:
        obj: The framework's embedding object.
        dim: Its output width; when ``None``, one query is embedded to find it.
        truncate_dim: Output dimension, or ``None`` for ``dim``.
        model_name: Name to record (defaults to the object's :attr:`NAME_FIELD`, or its class).
    """

    #: The object's field that names its model.
    NAME_FIELD: ClassVar[str] = "model"
    #: The object's methods: one query, a batch of documents, and their async twins.
    METHODS: ClassVar[tuple[str, str, str, str]] = ("", "", "", "")

    def __init__(
        self,
        obj: Any,
        /,
        *,
        dim: int | None = None,
        truncate_dim: int | None = None,
        model_name: str | None = None,
    ) -> None:
        self.obj = obj
        self.model_name = model_name or str(
            getattr(obj, self.NAME_FIELD, None) or type(obj).__name__
        )
        if dim is None:
            dim = len(getattr(obj, self.METHODS[0])(_PROBE_TEXT))
        self.full_dim = _check_dim(dim)
        self.truncate_dim = check_truncate_dim(truncate_dim, self.full_dim, self.model_name)

    def _embed(self, texts: list[str], kind: InputKind) -> Any:
        query, documents, _, _ = self.METHODS
        if kind == "query":
            return [getattr(self.obj, query)(text) for text in texts]
        return getattr(self.obj, documents)(texts)

    async def _aembed(self, texts: list[str], kind: InputKind) -> Any:
        _, _, query, documents = self.METHODS
        if kind == "query":
            return list(await asyncio.gather(*(getattr(self.obj, query)(t) for t in texts)))
        return await getattr(self.obj, documents)(texts)


class LangChainEncoder(_FrameworkEncoder):
    """Adapt a LangChain ``Embeddings`` object (``embed_documents`` / ``embed_query``).

    Args:
        obj: The LangChain embeddings, for example ``OpenAIEmbeddings(...)``.
        dim: Its output width; when ``None``, one query is embedded to find it.
        truncate_dim: Output dimension, or ``None`` for ``dim``.
        model_name: Name to record (defaults to the object's ``model`` field or class name).
    """

    provider = "langchain"
    NAME_FIELD = "model"
    METHODS = ("embed_query", "embed_documents", "aembed_query", "aembed_documents")

    @property
    def embeddings(self) -> Any:
        """The LangChain embeddings."""
        return self.obj

    @property
    def supports_images(self) -> bool:
        """Whether the embeddings have LangChain's multimodal ``embed_image(uris)`` method."""
        return callable(getattr(self.obj, "embed_image", None))

    def _embed_images(self, images: list[Any], kind: InputKind) -> Any:
        # embed_image takes file paths: the checked images are written to a private folder
        with tempfile.TemporaryDirectory(prefix="matryoshka-images-") as folder:
            paths = [os.path.join(folder, f"{i}.png") for i in range(len(images))]
            for image, path in zip(images, paths, strict=True):
                image.save(path, format="PNG")
            return self.obj.embed_image(uris=paths)


class LlamaIndexEncoder(_FrameworkEncoder):
    """Adapt a LlamaIndex ``BaseEmbedding`` (text and query embeddings, batched).

    Args:
        obj: The LlamaIndex embedding model.
        dim: Its output width; when ``None``, one query is embedded to find it.
        truncate_dim: Output dimension, or ``None`` for ``dim``.
        model_name: Name to record (defaults to the model's ``model_name``).
    """

    provider = "llama-index"
    NAME_FIELD = "model_name"
    METHODS = (
        "get_query_embedding",
        "get_text_embedding_batch",
        "aget_query_embedding",
        "aget_text_embedding_batch",
    )

    @property
    def embed_model(self) -> Any:
        """The LlamaIndex embedding model."""
        return self.obj

    @property
    def supports_images(self) -> bool:
        """Whether the model is a LlamaIndex ``MultiModalEmbedding`` (it embeds images)."""
        return _instance_of(
            self.obj, "llama_index.core.embeddings.multi_modal_base", "MultiModalEmbedding"
        )

    def _embed_images(self, images: list[Any], kind: InputKind) -> Any:
        return self.obj.get_image_embedding_batch(_png_buffers(images))

    async def _aembed_images(self, images: list[Any], kind: InputKind) -> Any:
        return await self.obj.aget_image_embedding_batch(_png_buffers(images))


def _png_buffers(images: list[Any]) -> list[io.BytesIO]:
    """Read RGB images as PNG files in memory (LlamaIndex's ``ImageType`` takes a buffer)."""
    buffers = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        buffer.seek(0)
        buffers.append(buffer)
    return buffers


def _instance_of(obj: Any, module: str, name: str) -> bool:
    """``isinstance`` against a class of a framework, without importing the framework."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)


def as_encoder(
    obj: Any,
    *,
    truncate_dim: int | None = None,
    dim: int | None = None,
) -> Encoder:
    """Turn any supported embedder into an :class:`Encoder`.

    Accepts an :class:`Encoder` (returned as is, or as a copy at ``truncate_dim``), a
    ``SentenceTransformer``, a LangChain ``Embeddings``, a LlamaIndex ``BaseEmbedding``, or a
    plain function of a list of texts (which needs ``dim``).

    Args:
        obj: The embedder.
        truncate_dim: Output dimension of the returned encoder; ``None`` keeps the embedder's own.
        dim: Output width of ``obj`` for functions and framework objects; when ``None`` a
            framework object is probed with one query.

    Returns:
        An :class:`Encoder`.

    Raises:
        TypeError: If ``obj`` is none of the supported kinds.

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import as_encoder
        >>> encoder = as_encoder(lambda texts: np.eye(4)[: len(texts)], dim=4, truncate_dim=2)
        >>> encoder.dim
        2
    """
    if isinstance(obj, Encoder):
        return obj if truncate_dim is None else obj.with_truncate_dim(truncate_dim)
    if _instance_of(obj, "sentence_transformers", "SentenceTransformer"):
        from .sentence_transformers import SentenceTransformerEncoder

        return SentenceTransformerEncoder(obj, truncate_dim=truncate_dim)
    if _instance_of(obj, "langchain_core.embeddings", "Embeddings"):
        inner = getattr(obj, "encoder", None)
        if isinstance(inner, Encoder):  # one of our own LangChain wrappers
            return as_encoder(inner, truncate_dim=truncate_dim)
        return LangChainEncoder(obj, dim=dim, truncate_dim=truncate_dim)
    if _instance_of(obj, "llama_index.core.base.embeddings.base", "BaseEmbedding"):
        inner = getattr(obj, "encoder", None)
        if isinstance(inner, Encoder):  # our own LlamaIndex wrapper
            return as_encoder(inner, truncate_dim=truncate_dim)
        return LlamaIndexEncoder(obj, dim=dim, truncate_dim=truncate_dim)
    if callable(obj):
        if dim is None:
            raise TypeError(
                "as_encoder(fn) needs dim=, the width of the vectors the function returns"
            )
        return CallableEncoder(obj, dim=dim, truncate_dim=truncate_dim)
    raise TypeError(
        "as_encoder() takes an Encoder, a SentenceTransformer, a LangChain Embeddings, a "
        f"LlamaIndex BaseEmbedding or a function of texts; got {type(obj).__name__}"
    )
