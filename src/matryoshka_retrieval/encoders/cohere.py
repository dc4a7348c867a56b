"""Cohere embeddings (embed-v4.0, embed-*-v3.0)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from .._optional import require
from ._api import APIEncoder, ModelSpec
from ._retry import RetryPolicy
from .base import InputKind

__all__ = ["CohereEncoder"]

_V4_DIMS = (256, 512, 1024, 1536)


class CohereEncoder(APIEncoder):
    """Embeddings from the Cohere v2 embed API, truncated to a Matryoshka prefix.

    Documents are sent with ``input_type="search_document"`` and queries with
    ``"search_query"``. On models with flexible output (embed-v4.0) the API's ``output_dimension``
    is sent: the smallest supported size at or above ``truncate_dim``, then the client cuts the
    rest. Other models are truncated on the client with a warning.

    Args:
        model: Model name.
        truncate_dim: Output dimension, or ``None`` for the full dimension.
        client: A ``cohere.ClientV2`` (its own retries are not used; ``retry`` applies).
        async_client: A ``cohere.AsyncClientV2`` for the async methods.
        api_key: API key (defaults to ``CO_API_KEY``), used when no client is given.
        base_url: API base URL.
        full_dim: Embedding dimension, required for models this library does not know.
        native_dims: Output dims the model accepts (``True`` for any, ``False`` for none);
            ``None`` looks the model up.
        batch_size: Texts per request (the API takes at most 96).
        retry: Retry policy for rate limits, 5xx and timeouts.
        timeout: Seconds before a request times out (and is retried).
        max_concurrency: Requests in flight at once in the async methods.

    Example:
        >>> from matryoshka_retrieval import CohereEncoder
        >>> encoder = CohereEncoder("embed-v4.0", truncate_dim=256)  # doctest: +SKIP
        >>> encoder.encode_queries(["what is a matryoshka doll?"]).shape  # doctest: +SKIP
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
    MAX_BATCH_SIZE = 96
    SDK = ("cohere", "cohere")
    INPUT_TYPES: ClassVar[dict[InputKind, str]] = {
        "document": "search_document",
        "query": "search_query",
    }

    def __init__(
        self,
        model: str = "embed-v4.0",
        *,
        truncate_dim: int | None = None,
        client: Any = None,
        async_client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        full_dim: int | None = None,
        native_dims: Sequence[int] | bool | None = None,
        batch_size: int = 96,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 4,
    ) -> None:
        super().__init__(
            model,
            truncate_dim=truncate_dim,
            full_dim=full_dim,
            native_dims=native_dims,
            batch_size=batch_size,
            retry=retry,
            max_concurrency=max_concurrency,
        )
        cohere = require("cohere", "cohere")
        if client is None and async_client is None:
            options: dict[str, Any] = {"api_key": api_key, "timeout": timeout, "max_retries": 0}
            if base_url is not None:
                options["base_url"] = base_url
            client = cohere.ClientV2(**options)
            async_client = cohere.AsyncClientV2(**options)
        self.client = client
        self.async_client = async_client

    def _params(self, texts: list[str], kind: InputKind) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_name,
            "texts": texts,
            "input_type": self.INPUT_TYPES[kind],
            "embedding_types": ["float"],
            "request_options": {"max_retries": 0},
        }
        if self.request_dim is not None:
            params["output_dimension"] = self.request_dim
        return params

    def _rows(self, response: Any) -> list[Any]:
        try:
            rows = response.embeddings.float_
        except AttributeError as exc:
            raise self._malformed(exc) from exc
        if not isinstance(rows, list):
            raise self._malformed(TypeError(f"no float embeddings in the response: {rows!r:.80}"))
        return rows

    def _request(self, texts: list[str], kind: InputKind) -> list[Any]:
        if self.client is None:
            raise RuntimeError("this CohereEncoder has only an async client: use aencode_*")
        return self._rows(self.client.embed(**self._params(texts, kind)))

    async def _arequest(self, texts: list[str], kind: InputKind) -> list[Any]:
        if self.async_client is None:
            return await asyncio.to_thread(self._request, texts, kind)
        return self._rows(await self.async_client.embed(**self._params(texts, kind)))
