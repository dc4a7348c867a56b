"""Voyage AI embeddings (voyage-3.5, voyage-3-large, voyage-code-3, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from .._optional import require
from ._api import APIEncoder, ModelSpec
from ._retry import RetryPolicy
from .base import InputKind

__all__ = ["VoyageEncoder"]

_FLEXIBLE_DIMS = (256, 512, 1024, 2048)


class VoyageEncoder(APIEncoder):
    """Embeddings from the Voyage AI API, truncated to a Matryoshka prefix.

    Documents are sent with ``input_type="document"`` and queries with ``"query"``. Models with
    flexible dimensions (voyage-3.5, voyage-3.5-lite, voyage-3-large, voyage-code-3) get the API's
    ``output_dimension``: the smallest supported size at or above ``truncate_dim``, then the client
    cuts the rest. Other models are truncated on the client with a warning.

    Args:
        model: Model name.
        truncate_dim: Output dimension, or ``None`` for the full dimension.
        client: A ``voyageai.Client`` (its own retries are not used; ``retry`` applies).
        async_client: A ``voyageai.AsyncClient`` for the async methods.
        api_key: API key (defaults to ``VOYAGE_API_KEY``), used when no client is given.
        base_url: API base URL.
        full_dim: Embedding dimension, required for models this library does not know.
        native_dims: Output dims the model accepts (``True`` for any, ``False`` for none);
            ``None`` looks the model up.
        batch_size: Texts per request (the API takes at most 1000).
        retry: Retry policy for rate limits, 5xx and timeouts.
        timeout: Seconds before a request times out (and is retried).
        max_concurrency: Requests in flight at once in the async methods.

    Example:
        >>> from matryoshka_retrieval import VoyageEncoder
        >>> encoder = VoyageEncoder("voyage-3.5", truncate_dim=256)  # doctest: +SKIP
        >>> encoder.encode_documents(["hello"]).shape  # doctest: +SKIP
        (1, 256)
    """

    provider = "voyage"
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
    }
    MATRYOSHKA_MODELS = frozenset(
        {"voyage-3.5", "voyage-3.5-lite", "voyage-3-large", "voyage-code-3"}
    )
    MAX_BATCH_SIZE = 1000
    SDK = ("voyageai", "voyage")

    def __init__(
        self,
        model: str = "voyage-3.5",
        *,
        truncate_dim: int | None = None,
        client: Any = None,
        async_client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        full_dim: int | None = None,
        native_dims: Sequence[int] | bool | None = None,
        batch_size: int = 128,
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
        voyageai = require("voyageai", "voyage")
        if client is None and async_client is None:
            options = {
                "api_key": api_key,
                "timeout": timeout,
                "max_retries": 0,
                "base_url": base_url,
            }
            client = voyageai.Client(**options)
            async_client = voyageai.AsyncClient(**options)
        self.client = client
        self.async_client = async_client

    def _params(self, texts: list[str], kind: InputKind) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model_name, "input_type": kind}
        if self.request_dim is not None:
            params["output_dimension"] = self.request_dim
        return params

    def _rows(self, response: Any) -> list[Any]:
        try:
            rows = response.embeddings
        except AttributeError as exc:
            raise self._malformed(exc) from exc
        if not isinstance(rows, list):
            raise self._malformed(TypeError(f"no embeddings in the response: {rows!r:.80}"))
        return rows

    def _request(self, texts: list[str], kind: InputKind) -> list[Any]:
        if self.client is None:
            raise RuntimeError("this VoyageEncoder has only an async client: use aencode_*")
        return self._rows(self.client.embed(texts, **self._params(texts, kind)))

    async def _arequest(self, texts: list[str], kind: InputKind) -> list[Any]:
        if self.async_client is None:
            return await asyncio.to_thread(self._request, texts, kind)
        return self._rows(await self.async_client.embed(texts, **self._params(texts, kind)))
