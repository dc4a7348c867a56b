"""Cohere embeddings (embed-v4.0, embed-*-v3.0)."""

from __future__ import annotations

from typing import Any, ClassVar

from ._api import APIEncoder, ImagePayload, ModelSpec
from .base import InputKind

__all__ = ["CohereEncoder"]

_V4_DIMS = (256, 512, 1024, 1536)


class CohereEncoder(APIEncoder):
    """Embeddings from the Cohere v2 embed API, truncated to a Matryoshka prefix.

    Documents are sent with ``input_type="search_document"`` and queries with
    ``"search_query"``. On models with flexible output (embed-v4.0) the API's ``output_dimension``
    is sent: the smallest supported size at or above ``truncate_dim``, then the client cuts the
    rest. Other models are truncated on the client with a warning. Cohere's answer carries no
    per-item index: its rows are in input order by position, and their count is checked.

    embed-v4.0 embeds images into the space of its texts: they are sent in the API's ``inputs``
    form, one PNG data URI (at most 5 MB) per input, with the same ``input_type`` and
    ``output_dimension`` as texts.

    Takes the arguments of :class:`~matryoshka_retrieval.encoders._api.APIEncoder`: ``model``
    (default ``embed-v4.0``), ``truncate_dim``, ``client`` / ``async_client``
    (``cohere.ClientV2`` / ``cohere.AsyncClientV2``; their own retries are not used),
    ``api_key`` (default ``CO_API_KEY``), ``base_url``, ``full_dim``, ``native_dims``,
    ``batch_size`` (default and at most 96), ``retry``, ``timeout`` and ``max_concurrency``.

    Example:
        >>> from matryoshka_retrieval import CohereEncoder
        >>> encoder = CohereEncoder("embed-v4.0", truncate_dim=256)  # doctest: +SKIP
        >>> encoder.encode_queries(["what is a matryoshka doll?"]).shape  # doctest: +SKIP
        (1, 256)
        >>> encoder.encode_images(["scan.png"]).shape  # doctest: +SKIP
        (1, 256)
    """

    provider = "cohere"
    MODELS: ClassVar[dict[str, ModelSpec]] = {
        "embed-v4.0": (1536, _V4_DIMS),
        "embed-english-v3.0": (1024, ()),
        "embed-multilingual-v3.0": (1024, ()),
        "embed-english-light-v3.0": (384, ()),
        "embed-multilingual-light-v3.0": (384, ()),
    }
    MATRYOSHKA_MODELS = frozenset({"embed-v4.0"})
    IMAGE_MODELS = frozenset({"embed-v4.0"})
    MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Cohere's limit per image
    SDK = ("cohere", "cohere", "ClientV2", "AsyncClientV2")
    MAX_BATCH_SIZE = 96
    DEFAULT_BATCH_SIZE = 96
    INPUT_TYPES: ClassVar[dict[InputKind, str]] = {
        "document": "search_document",
        "query": "search_query",
    }

    def _call(self, client: Any, texts: list[str], kind: InputKind) -> Any:
        return client.embed(texts=texts, **self._params(kind))

    def _call_images(self, client: Any, images: list[ImagePayload], kind: InputKind) -> Any:
        inputs = [
            {"content": [{"type": "image_url", "image_url": {"url": image.uri}}]}
            for image in images
        ]
        return client.embed(inputs=inputs, **self._params(kind))

    def _params(self, kind: InputKind) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_name,
            "input_type": self.INPUT_TYPES[kind],
            "embedding_types": ["float"],
            "request_options": {"max_retries": 0},
        }
        if self.request_dim is not None:
            params["output_dimension"] = self.request_dim
        return params

    def _rows(self, response: Any, n: int) -> list[Any]:
        try:
            rows = response.embeddings.float_
        except AttributeError as exc:
            raise self._malformed(exc) from exc
        if not isinstance(rows, list):
            raise self._malformed(TypeError(f"no float embeddings in the response: {rows!r:.80}"))
        return self._checked(rows, n)
