"""Images in the index: add them and search by them through the same funnel as texts.

:class:`ImageMethods` is a base of :class:`~matryoshka_retrieval.MatryoshkaIndex`; it embeds
with the index's encoder (a model that :attr:`~matryoshka_retrieval.Encoder.supports_images`)
and hands the vectors to ``add_vectors`` / ``search_vectors``, so the manifest checks, filters,
all-or-nothing writes and persistence are those of texts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._twins import Steps, arun, blocking, encode, run
from .._validation import check_records
from ..images import image_source

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..encoders.base import Encoder
    from .filters import Filter
    from .hits import Hits
    from .index import OnConflict

__all__ = ["ImageMethods"]


def _image_records(
    images: Sequence[Any],
    ids: Sequence[str] | None,
    texts: Sequence[str | None] | None,
    metadatas: Sequence[Mapping[str, Any] | None] | None,
) -> tuple[list[Any], dict[str, Any]]:
    """The images as a list, and the checked ``add_vectors`` arguments for them."""
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise TypeError(
            f"images must be a list of images (paths, PIL images or bytes), got a single "
            f"{type(images).__name__}; wrap it in a list: [image]"
        )
    items = list(images)
    if texts is None:
        texts = [image_source(item) for item in items]  # the path or URI, where there is one
    check_records(len(items), ids, texts, metadatas)  # fail before reading any image
    return items, {"ids": ids, "texts": texts, "metadatas": metadatas}


class _Index(Protocol):
    """What the image methods use of the index."""

    def _require_encoder(self, method: str) -> Encoder: ...

    def _adding_images(
        self,
        method: str,
        images: Sequence[Any],
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        texts: Sequence[str | None] | None,
        on_conflict: OnConflict,
    ) -> Steps[list[str]]: ...

    def add_vectors(
        self,
        vectors: ArrayLike,
        *,
        ids: Sequence[str] | None = None,
        texts: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        on_conflict: OnConflict = "error",
    ) -> list[str]: ...

    def search_vectors(
        self, query_vectors: ArrayLike, k: int = 10, *, filter: Filter | None = None
    ) -> list[Hits]: ...


class ImageMethods:
    """``add_images`` / ``search_images`` of :class:`~matryoshka_retrieval.MatryoshkaIndex`."""

    def add_images(
        self: _Index,
        images: Sequence[Any],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        on_conflict: OnConflict = "error",
    ) -> list[str]:
        """Embed images with the encoder (a multimodal model) and add them.

        Args:
            images: Paths (``str`` or ``os.PathLike``), ``PIL.Image`` objects, bytes or binary
                files.
            ids: One unique id per image; generated (UUID4 hex) when omitted.
            metadatas: One metadata dict (or ``None``) per image, for filters.
            texts: The text stored with each image and returned with hits; by default its
                path (or a PIL image's file name), ``None`` for bytes.
            on_conflict: ``error`` rejects ids already in the index; ``replace`` overwrites them.

        Returns:
            The ids, in input order.

        Raises:
            ValueError: Without an encoder; for bad ids or metadata; for a missing file, data
                that is not an image, or an image over the encoder's limit (naming it).
                Every image is read before any is embedded, and nothing from a failed call
                is stored.
            TypeError: If the encoder's model embeds texts only, or an item is not an image.
        """
        return run(self._adding_images("add_images", images, ids, metadatas, texts, on_conflict))

    async def aadd_images(
        self: _Index,
        images: Sequence[Any],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        on_conflict: OnConflict = "error",
    ) -> list[str]:
        """Async twin of :meth:`add_images`: embeds with the encoder's async path."""
        body = self._adding_images("aadd_images", images, ids, metadatas, texts, on_conflict)
        return await arun(body)

    def _adding_images(
        self: _Index,
        method: str,
        images: Sequence[Any],
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        texts: Sequence[str | None] | None,
        on_conflict: OnConflict,
    ) -> Steps[list[str]]:
        """The body of :meth:`add_images` and its async twin: read, embed, add."""
        encoder = self._require_encoder(method)
        items, records = _image_records(images, ids, texts, metadatas)
        vectors = yield encode(encoder, "images", items)
        added: list[str] = yield blocking(
            self.add_vectors, vectors, **records, on_conflict=on_conflict
        )
        return added

    def search_images(
        self: _Index, images: Sequence[Any], k: int = 10, *, filter: Filter | None = None
    ) -> list[Hits]:
        """Batched search by images (a ``str`` is a path here): one :class:`Hits` per image.

        A single image (a ``PIL.Image``, ``pathlib.Path`` or bytes) can also be given to
        :meth:`search` directly.

        Raises:
            ValueError, TypeError: As :meth:`add_images` for the images; ``k < 1`` or a bad
                filter as :meth:`search_vectors`.
        """
        vectors = self._require_encoder("search_images").encode_images(images)
        return self.search_vectors(vectors, k, filter=filter)
