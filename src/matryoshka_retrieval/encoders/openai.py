"""OpenAI embeddings (text-embedding-3-*, ada-002) and OpenAI-compatible servers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from .._optional import require
from ._api import APIEncoder, ModelSpec
from ._retry import RetryPolicy
from .base import InputKind

__all__ = ["OpenAIEncoder"]


class OpenAIEncoder(APIEncoder):
    """Embeddings from the OpenAI API, truncated to a Matryoshka prefix.

    For text-embedding-3 models the API's ``dimensions`` parameter is sent, so the server returns
    the shortened vector; for others (ada-002) the full vector is truncated on the client, with a
    warning that the model is not Matryoshka-trained.

    Args:
        model: Model name.
        truncate_dim: Output dimension, or ``None`` for the full dimension.
        client: An ``openai.OpenAI`` client to use (its own retries are turned off; this
            encoder's ``retry`` policy applies).
        async_client: An ``openai.AsyncOpenAI`` client for the async methods. When only
            ``client`` is given, async calls run the sync client in a worker thread.
        api_key: API key (defaults to ``OPENAI_API_KEY``), used when no client is given.
        base_url: API base URL, for Azure-style proxies or OpenAI-compatible servers.
        full_dim: Embedding dimension, required for models this library does not know.
        native_dims: Whether the server honours ``dimensions`` (``True`` / ``False``), or the
            dims it accepts; ``None`` looks the model up.
        batch_size: Texts per request (the API takes at most 2048).
        retry: Retry policy for rate limits, 5xx and timeouts.
        timeout: Seconds before a request times out (and is retried).
        max_concurrency: Requests in flight at once in the async methods.

    Example:
        >>> from matryoshka_retrieval import OpenAIEncoder
        >>> encoder = OpenAIEncoder("text-embedding-3-large", truncate_dim=256)  # doctest: +SKIP
        >>> encoder.encode_documents(["hello"]).shape  # doctest: +SKIP
        (1, 256)
    """

    provider = "openai"
    MODELS: ClassVar[dict[str, ModelSpec]] = {
        "text-embedding-3-small": (1536, None),
        "text-embedding-3-large": (3072, None),
        "text-embedding-ada-002": (1536, ()),
    }
    MATRYOSHKA_MODELS = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
    MAX_BATCH_SIZE = 2048
    SDK = ("openai", "openai")

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        truncate_dim: int | None = None,
        client: Any = None,
        async_client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        full_dim: int | None = None,
        native_dims: Sequence[int] | bool | None = None,
        batch_size: int = 512,
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
        openai = require("openai", "openai")
        if client is None and async_client is None:
            options = {"api_key": api_key, "base_url": base_url, "timeout": timeout}
            client = openai.OpenAI(max_retries=0, **options)
            async_client = openai.AsyncOpenAI(max_retries=0, **options)
        self.client = client.with_options(max_retries=0) if client is not None else None
        self.async_client = (
            async_client.with_options(max_retries=0) if async_client is not None else None
        )

    def _params(self, texts: list[str]) -> dict[str, Any]:
        params: dict[str, Any] = {"input": texts, "model": self.model_name}
        if self.request_dim is not None:
            params["dimensions"] = self.request_dim
        return params

    def _rows(self, response: Any) -> list[Any]:
        try:
            items = sorted(response.data, key=lambda item: item.index)
            return [item.embedding for item in items]
        except (AttributeError, TypeError) as exc:
            raise self._malformed(exc) from exc

    def _request(self, texts: list[str], kind: InputKind) -> list[Any]:
        if self.client is None:
            raise RuntimeError("this OpenAIEncoder has only an async client: use aencode_*")
        return self._rows(self.client.embeddings.create(**self._params(texts)))

    async def _arequest(self, texts: list[str], kind: InputKind) -> list[Any]:
        if self.async_client is None:
            return await asyncio.to_thread(self._request, texts, kind)
        return self._rows(await self.async_client.embeddings.create(**self._params(texts)))
