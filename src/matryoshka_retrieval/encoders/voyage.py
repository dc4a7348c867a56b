"""Voyage AI embeddings (voyage-3.5, voyage-3-large, voyage-code-3, ...)."""

from __future__ import annotations

from typing import Any, ClassVar

from ._api import APIEncoder, ModelSpec
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
    }
    MATRYOSHKA_MODELS = frozenset(
        {"voyage-3.5", "voyage-3.5-lite", "voyage-3-large", "voyage-code-3"}
    )
    provider = "voyage"
    SDK = ("voyageai", "voyage", "Client", "AsyncClient")
    MAX_BATCH_SIZE = 1000
    DEFAULT_BATCH_SIZE = 128

    def _call(self, client: Any, texts: list[str], kind: InputKind) -> Any:
        # the connection settings (key, base URL, timeout) the client's own embed() sends
        connection = getattr(client, "_params", None)
        if not isinstance(connection, dict):
            raise TypeError(f"not a voyageai client: {type(client).__name__}")
        resource = self._sdk.Embedding
        create = resource.acreate if client is self.async_client else resource.create
        return create(
            input=texts,
            model=self.model_name,
            input_type=kind,
            truncation=True,
            output_dimension=self.request_dim,
            **connection,
        )

    def _rows(self, response: Any, n: int) -> list[Any]:
        try:
            items = response.data
        except (AttributeError, KeyError) as exc:
            raise self._malformed(exc) from exc
        return self._by_index(items, n)
