"""The encoder interface every embedder is adapted to."""

from __future__ import annotations

import asyncio
import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from numpy.typing import NDArray

from ..images import is_image, load_image
from ..truncation import as_float_matrix, prefix

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "Encoder",
    "EncoderError",
    "InputKind",
    "Item",
    "batch_name",
    "check_items",
    "check_texts",
    "check_truncate_dim",
]

InputKind = Literal["document", "query"]
Item = Union[str, "PILImage"]
"""One checked input: a text, or an image read into an RGB ``PIL.Image``."""


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
    return [str(item) for item in check_items(texts, images=False)]


def batch_name(kind: InputKind, paths: bool) -> str:
    """How a batch's items are named in errors: ``images[i]``, ``queries[i]`` or ``texts[i]``.

    Example:
        >>> batch_name("query", paths=False)
        'queries'
    """
    return "images" if paths else "queries" if kind == "query" else "texts"


def check_items(
    items: Sequence[Any],
    *,
    images: bool,
    paths: bool = False,
    max_pixels: int | None = None,
    model: str = "this encoder",
    name: str | None = None,
) -> list[Item]:
    """Validate a batch of texts and images before any request is made; read every image.

    Args:
        items: The batch: a ``str`` is a text, anything :func:`~matryoshka_retrieval.images.
            is_image` accepts is an image.
        images: Whether images are accepted (the encoder's model embeds them).
        paths: Every item is an image and a ``str`` is its path (``encode_images``).
        max_pixels: Largest image (width x height) accepted.
        model: The model's name, for the message that refuses images.
        name: What to call the items in errors (``"queries"`` names ``queries[0]``); by
            default ``images`` with ``paths``, else ``texts``.

    Returns:
        The texts as given and the images as RGB ``PIL.Image`` objects, in input order.

    Raises:
        TypeError: For a bare item instead of a list, or an item of another type, or an image
            given to a text-only model (naming its index).
        ValueError: For an empty text, or an image that cannot be read or is too large.
    """
    name = name or batch_name("document", paths)
    kind = "images" if paths else "strings or images" if images else "strings"
    if isinstance(items, (str, bytes)) or is_image(items):
        raise TypeError(
            f"{name} must be a list of {kind}, got a single {type(items).__name__}; "
            "wrap it in a list: [item]"
        )
    try:
        listed = list(items)
    except TypeError:
        raise TypeError(f"{name} must be a list of {kind}, got {type(items).__name__}") from None
    return [
        _check_item(
            item, f"{name}[{i}]", images=images, paths=paths, max_pixels=max_pixels, model=model
        )
        for i, item in enumerate(listed)
    ]


def _check_item(
    item: Any, where: str, *, images: bool, paths: bool, max_pixels: int | None, model: str
) -> Item:
    if isinstance(item, str) and not paths:
        if not item.strip():
            raise ValueError(f"{where} is an empty string; every text must have content")
        return item
    # bytes are an image only where images are taken; to a text model they are a wrong type
    named_image = is_image(item) and not isinstance(item, (bytes, bytearray, memoryview))
    if not images and (named_image or (paths and (isinstance(item, str) or is_image(item)))):
        raise TypeError(
            f"{where} is an image ({type(item).__name__}), but {model} embeds texts only; use an "
            "encoder over a multimodal model (for example a CLIP model in "
            "SentenceTransformerEncoder)"
        )
    if not paths and not (images and is_image(item)):
        also = "; or an image (a PIL.Image, a path, or bytes)" if images else ""
        raise TypeError(f"{where} must be a str, got {type(item).__name__}: {item!r:.60}{also}")
    return load_image(item, where, max_pixels=max_pixels)


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
    max_image_pixels: int | None = None
    """Largest image (width x height) the model or API accepts; ``None``: no limit of ours."""

    @property
    def supports_images(self) -> bool:
        """Whether the model embeds images (into the same space as texts)."""
        return False

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

    def _embed_images(self, images: list[PILImage], kind: InputKind) -> Any:
        """Embed a non-empty batch of read RGB images (only if :attr:`supports_images`)."""
        raise NotImplementedError(f"{type(self).__name__} does not embed images")

    async def _aembed_images(self, images: list[PILImage], kind: InputKind) -> Any:
        """Async twin of :meth:`_embed_images`; by default runs it in a worker thread."""
        return await asyncio.to_thread(self._embed_images, images, kind)

    # -- public API -----------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[Any]) -> NDArray[np.float32]:
        """Embed documents (passages) for storage.

        Args:
            texts: The documents: non-empty strings, and on a model that
                :attr:`supports_images`, images (a ``PIL.Image``, a ``pathlib.Path``, bytes),
                mixed in any order. A ``str`` is always a text here: see :meth:`encode_images`.

        Returns:
            Float32 array ``[len(texts), dim]`` with unit-norm rows, in input order.

        Raises:
            TypeError: If an item is not a string or an image, or is an image and the model
                embeds texts only.
            ValueError: If a text is empty or an image cannot be read or is too large (every
                item is checked before any is embedded).
            EncoderError: If the backend fails or returns unusable vectors.
        """
        return self._encode(texts, "document")

    def encode_queries(self, texts: Sequence[Any]) -> NDArray[np.float32]:
        """Embed search queries (texts or images); same contract as :meth:`encode_documents`."""
        return self._encode(texts, "query")

    def encode_images(self, images: Sequence[Any]) -> NDArray[np.float32]:
        """Embed images for storage; here a ``str`` is an image's path.

        Args:
            images: ``PIL.Image`` objects, paths (``str`` or ``os.PathLike``), bytes or binary
                files.

        Returns:
            Float32 array ``[len(images), dim]`` with unit-norm rows, in input order.

        Raises:
            TypeError: If the model embeds texts only, or an item is not an image (named).
            ValueError: For a missing file, data that is not an image, or an image over
                :attr:`max_image_pixels` (named; nothing is embedded).
        """
        return self._encode(images, "document", paths=True)

    async def aencode_documents(self, texts: Sequence[Any]) -> NDArray[np.float32]:
        """Async twin of :meth:`encode_documents`."""
        return await self._aencode(texts, "document")

    async def aencode_queries(self, texts: Sequence[Any]) -> NDArray[np.float32]:
        """Async twin of :meth:`encode_queries`."""
        return await self._aencode(texts, "query")

    async def aencode_images(self, images: Sequence[Any]) -> NDArray[np.float32]:
        """Async twin of :meth:`encode_images`."""
        return await self._aencode(images, "document", paths=True)

    def _check_batch(self, items: Sequence[Any], paths: bool, kind: InputKind) -> list[Item]:
        return check_items(
            items,
            images=self.supports_images,
            paths=paths,
            max_pixels=self.max_image_pixels,
            model=f"model {self.model_name!r}",
            name=batch_name(kind, paths),
        )

    def _encode(
        self, texts: Sequence[Any], kind: InputKind, *, paths: bool = False
    ) -> NDArray[np.float32]:
        items = self._check_batch(texts, paths, kind)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for rows, batch in _by_modality(items):
            embed = self._embed if isinstance(batch[0], str) else self._embed_images
            out[rows] = self._finish(embed(batch, kind), len(batch))
        return out

    async def _aencode(
        self, texts: Sequence[Any], kind: InputKind, *, paths: bool = False
    ) -> NDArray[np.float32]:
        items = self._check_batch(texts, paths, kind)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for rows, batch in _by_modality(items):
            embed = self._aembed if isinstance(batch[0], str) else self._aembed_images
            out[rows] = self._finish(await embed(batch, kind), len(batch))
        return out

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


def _by_modality(items: list[Item]) -> list[tuple[list[int], list[Any]]]:
    """The rows and items of the texts, then of the images (each group only if present)."""
    texts = [i for i, item in enumerate(items) if isinstance(item, str)]
    images = [i for i, item in enumerate(items) if not isinstance(item, str)]
    return [(rows, [items[i] for i in rows]) for rows in (texts, images) if rows]
