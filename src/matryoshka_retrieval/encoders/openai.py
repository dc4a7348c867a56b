"""OpenAI embeddings (text-embedding-3-*, ada-002) and OpenAI-compatible servers."""

from __future__ import annotations

from typing import Any, ClassVar

from ._api import APIEncoder, ModelSpec
from .base import InputKind

__all__ = ["OpenAIEncoder"]


class OpenAIEncoder(APIEncoder):
    """Embeddings from the OpenAI API, truncated to a Matryoshka prefix.

    For text-embedding-3 models the API's ``dimensions`` parameter is sent, so the server returns
    the shortened vector; for others (ada-002) the full vector is truncated on the client, with a
    warning that the model is not Matryoshka-trained. Rows follow each item's ``index``.

    Takes the arguments of :class:`~matryoshka_retrieval.encoders._api.APIEncoder`: ``model``
    (default ``text-embedding-3-small``), ``truncate_dim``, ``client`` / ``async_client``
    (``openai.OpenAI`` / ``openai.AsyncOpenAI``; their own retries are turned off), ``api_key``
    (default ``OPENAI_API_KEY``), ``base_url`` (Azure-style proxies, OpenAI-compatible servers),
    ``full_dim``, ``native_dims`` (whether the server honours ``dimensions``), ``batch_size``
    (default 512, at most 2048), ``retry``, ``timeout`` and ``max_concurrency``.

    Example:
        >>> from matryoshka_retrieval import OpenAIEncoder
        >>> encoder = OpenAIEncoder("text-embedding-3-large", truncate_dim=256)  # doctest: +SKIP
        >>> encoder.request_dim  # sent as ``dimensions``  # doctest: +SKIP
        256
        >>> encoder.encode_documents(["hello"]).shape  # doctest: +SKIP
        (1, 256)
    """

    provider = "openai"
    SDK = ("openai", "openai", "OpenAI", "AsyncOpenAI")
    MODELS: ClassVar[dict[str, ModelSpec]] = {
        "text-embedding-3-small": (1536, None),
        "text-embedding-3-large": (3072, None),
        "text-embedding-ada-002": (1536, ()),
    }
    MATRYOSHKA_MODELS = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
    MAX_BATCH_SIZE = 2048
    DEFAULT_BATCH_SIZE = 512

    def _adopt(self, client: Any) -> Any:
        return client.with_options(max_retries=0)

    def _call(self, client: Any, texts: list[str], kind: InputKind) -> Any:
        params: dict[str, Any] = {"input": texts, "model": self.model_name}
        if self.request_dim is not None:
            params["dimensions"] = self.request_dim
        return client.embeddings.create(**params)

    def _rows(self, response: Any, n: int) -> list[Any]:
        try:
            items = response.data
        except AttributeError as exc:
            raise self._malformed(exc) from exc
        return self._by_index(items, n)
