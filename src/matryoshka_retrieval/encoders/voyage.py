"""Voyage AI embeddings (voyage-3.5, voyage-3-large, voyage-code-3, ...)."""

from __future__ import annotations

from typing import Any, ClassVar

from ._api import APIEncoder, ImagePayload, ModelSpec
from .base import InputKind

__all__ = ["VoyageEncoder"]

_FLEXIBLE_DIMS = (256, 512, 1024, 2048)


class VoyageEncoder(APIEncoder):
    """Embeddings from the Voyage AI API, truncated to a Matryoshka prefix.

    Documents are sent with ``input_type="document"`` and queries with ``"query"``. Models with
    flexible dimensions (voyage-3.5, voyage-3.5-lite, voyage-3-large, voyage-code-3) get the API's
    ``output_dimension``: the smallest supported size at or above ``truncate_dim``, then the client
    cuts the rest. Other models are truncated on the client with a warning.

    Requests go through the SDK's ``voyageai.Embedding`` resource with the client's connection
    settings, because ``Client.embed`` drops each item's ``index``: rows are put in the order of
    their ``index``, which must be exactly ``0 .. n-1``.

    The multimodal models (voyage-multimodal-3.5, with ``output_dimension``, and
    voyage-multimodal-3) embed texts and images through the multimodal endpoint
    (``multimodal_embed``), one input per text or image; an image is sent as a PNG data URI and
    must be within Voyage's limits (16 million pixels, 20 MB), checked before any request.

    Takes the arguments of :class:`~matryoshka_retrieval.encoders._api.APIEncoder`: ``model``
    (default ``voyage-3.5``), ``truncate_dim``, ``client`` / ``async_client``
    (``voyageai.Client`` / ``voyageai.AsyncClient``; their own retries are not used),
    ``api_key`` (default ``VOYAGE_API_KEY``), ``base_url``, ``full_dim``, ``native_dims``,
    ``batch_size`` (default 128, at most 1000), ``retry``, ``timeout`` and ``max_concurrency``.

    Example:
        >>> from matryoshka_retrieval import VoyageEncoder
        >>> encoder = VoyageEncoder("voyage-3.5", truncate_dim=300)  # doctest: +SKIP
        >>> encoder.request_dim, encoder.dim  # asks for 512 dims, keeps 300  # doctest: +SKIP
        (512, 300)
    """

    MODELS: ClassVar[dict[str, ModelSpec]] = {
        "voyage-3.5": (1024, _FLEXIBLE_DIMS),
        "voyage-3.5-lite": (1024, _FLEXIBLE_DIMS),
        "voyage-3-large": (1024, _FLEXIBLE_DIMS),
        "voyage-code-3": (1024, _FLEXIBLE_DIMS),
        "voyage-3": (1024, ()),
        "voyage-3-lite": (512, ()),
        "voyage-finance-2": (1024, ()),
        "voyage-law-2": (1024, ()),
        "voyage-code-2": (1536, ()),
        "voyage-multilingual-2": (1024, ()),
        "voyage-multimodal-3.5": (1024, _FLEXIBLE_DIMS),
        "voyage-multimodal-3": (1024, ()),
    }
    MATRYOSHKA_MODELS = frozenset(
        {
            "voyage-3.5",
            "voyage-3.5-lite",
            "voyage-3-large",
            "voyage-code-3",
            "voyage-multimodal-3.5",
        }
    )
    IMAGE_MODELS = frozenset({"voyage-multimodal-3.5", "voyage-multimodal-3"})
    MAX_IMAGE_BYTES = 20 * 1024 * 1024  # Voyage's limits per image: 20 MB, 16 million pixels
    max_image_pixels = 16_000_000
    provider = "voyage"
    SDK = ("voyageai", "voyage", "Client", "AsyncClient")
    MAX_BATCH_SIZE = 1000
    DEFAULT_BATCH_SIZE = 128

    def _call(self, client: Any, texts: list[str], kind: InputKind) -> Any:
        if self.supports_images:  # a multimodal model embeds texts on its own endpoint too
            segments = [{"type": "text", "text": text} for text in texts]
            return self._multimodal(client, segments, kind)
        resource = self._sdk.Embedding
        create = resource.acreate if client is self.async_client else resource.create
        return create(
            input=texts,
            model=self.model_name,
            input_type=kind,
            truncation=True,
            output_dimension=self.request_dim,
            **self._connection(client),
        )

    def _call_images(self, client: Any, images: list[ImagePayload], kind: InputKind) -> Any:
        segments = [{"type": "image_base64", "image_base64": image.uri} for image in images]
        return self._multimodal(client, segments, kind)

    def _multimodal(self, client: Any, segments: list[dict[str, str]], kind: InputKind) -> Any:
        """One request to the multimodal endpoint: one input per segment."""
        resource = self._sdk.MultimodalEmbedding
        create = resource.acreate if client is self.async_client else resource.create
        return create(
            inputs=[{"content": [segment]} for segment in segments],
            model=self.model_name,
            input_type=kind,
            truncation=True,
            output_dimension=self.request_dim,
            **self._connection(client),
        )

    @staticmethod
    def _connection(client: Any) -> dict[str, Any]:
        """The connection settings (key, base URL, timeout) the client's own calls send."""
        connection = getattr(client, "_params", None)
        if not isinstance(connection, dict):
            raise TypeError(f"not a voyageai client: {type(client).__name__}")
        return connection

    def _rows(self, response: Any, n: int) -> list[Any]:
        try:
            items = response.data
        except (AttributeError, KeyError) as exc:
            raise self._malformed(exc) from exc
        return self._by_index(items, n)
