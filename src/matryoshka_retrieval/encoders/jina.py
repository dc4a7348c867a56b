"""Jina AI embeddings (jina-clip-v2, jina-embeddings-v4, jina-embeddings-v3), texts and images."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from ._api import APIEncoder, ImagePayload, ModelSpec
from .base import EncoderError, InputKind

__all__ = ["JinaEncoder"]

DEFAULT_BASE_URL = "https://api.jina.ai/v1"


class JinaEncoder(APIEncoder):
    """Embeddings from Jina AI's embeddings API, truncated to a Matryoshka prefix.

    The request asks for ``dimensions`` (Jina's Matryoshka models return any prefix length) and
    ``task`` ``retrieval.passage`` for documents, ``retrieval.query`` for queries. jina-clip-v2,
    jina-clip-v1 and jina-embeddings-v4 embed images into the space of their texts: an image is
    sent as ``{"image": <base64 PNG>}``, a text as ``{"text": ...}``. Rows come back with an
    ``index`` and are put in its order. The HTTP client is ``httpx`` (extra ``jina``).

    Takes the arguments of :class:`~matryoshka_retrieval.encoders._api.APIEncoder`: ``model``
    (default ``jina-clip-v2``), ``truncate_dim``, ``client`` / ``async_client`` (an
    ``httpx.Client`` / ``httpx.AsyncClient`` with the base URL and the ``Authorization`` header
    set), ``api_key`` (default ``JINA_API_KEY``), ``base_url`` (default
    ``https://api.jina.ai/v1``), ``full_dim``, ``native_dims``, ``batch_size`` (default 32, at
    most 512 here), ``retry``, ``timeout``, ``max_concurrency`` and ``images``.

    Raises:
        ValueError: Without an API key (argument or ``JINA_API_KEY``) or a client.

    Example:
        >>> from matryoshka_retrieval.encoders import JinaEncoder
        >>> encoder = JinaEncoder("jina-clip-v2", truncate_dim=256)  # doctest: +SKIP
        >>> encoder.encode_images(["photo.jpg"]).shape  # doctest: +SKIP
        (1, 256)
    """

    provider = "jina"
    MODELS: ClassVar[dict[str, ModelSpec]] = {
        "jina-clip-v2": (1024, None),
        "jina-embeddings-v4": (2048, None),
        "jina-embeddings-v3": (1024, None),
        "jina-clip-v1": (768, ()),
    }
    MATRYOSHKA_MODELS = frozenset({"jina-clip-v2", "jina-embeddings-v4", "jina-embeddings-v3"})
    IMAGE_MODELS = frozenset({"jina-clip-v2", "jina-clip-v1", "jina-embeddings-v4"})
    SDK = ("httpx", "jina", "Client", "AsyncClient")
    MAX_BATCH_SIZE = 512
    DEFAULT_BATCH_SIZE = 32
    TASKS: ClassVar[dict[InputKind, str]] = {
        "document": "retrieval.passage",
        "query": "retrieval.query",
    }

    def _make_clients(self, api_key: str | None, base_url: str | None) -> tuple[Any, Any]:
        key = api_key if api_key is not None else os.environ.get("JINA_API_KEY")
        if not key:
            raise ValueError(
                "JinaEncoder needs an API key: pass api_key= or set JINA_API_KEY (or pass "
                "client= / async_client=)"
            )
        options: dict[str, Any] = {
            "base_url": base_url or DEFAULT_BASE_URL,
            "headers": {"Authorization": f"Bearer {key}"},
            "timeout": self.timeout,
        }
        return self._sdk.Client(**options), self._sdk.AsyncClient(**options)

    def _call(self, client: Any, texts: list[str], kind: InputKind) -> Any:
        return self._post(client, [{"text": text} for text in texts], kind)

    def _call_images(self, client: Any, images: list[ImagePayload], kind: InputKind) -> Any:
        return self._post(client, [{"image": image.base64} for image in images], kind)

    def _body(self, inputs: list[dict[str, str]], kind: InputKind) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "input": inputs,
            "embedding_type": "float",
            "normalized": True,
        }
        if self.model_name != "jina-clip-v1":  # the one model without tasks
            body["task"] = self.TASKS[kind]
        if self.request_dim is not None:
            body["dimensions"] = self.request_dim
        return body

    def _post(self, client: Any, inputs: list[dict[str, str]], kind: InputKind) -> Any:
        body = self._body(inputs, kind)
        if client is self.async_client:
            return self._apost(client, body)
        response = client.post("embeddings", json=body)
        response.raise_for_status()
        return response.json()

    async def _apost(self, client: Any, body: dict[str, Any]) -> Any:
        response = await client.post("embeddings", json=body)
        response.raise_for_status()
        return response.json()

    def _rows(self, response: Any, n: int) -> list[Any]:
        if not isinstance(response, dict) or not isinstance(response.get("data"), list):
            raise EncoderError(
                self.provider, f"returned a malformed response (no data list): {response!r:.80}"
            )
        try:
            items = [_Item(item) for item in response["data"]]
        except TypeError as exc:
            raise self._malformed(exc) from exc
        return self._by_index(items, n)


class _Item:
    """One ``data`` entry of a response, read as ``index`` / ``embedding`` attributes."""

    __slots__ = ("embedding", "index")

    def __init__(self, item: Any) -> None:
        if not isinstance(item, dict):
            raise TypeError(f"a data item is a {type(item).__name__}, not an object")
        self.index, self.embedding = item.get("index"), item.get("embedding")
