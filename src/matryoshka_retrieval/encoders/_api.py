"""Shared machinery of the hosted-API encoders: arguments, clients, batching, retries, order."""

from __future__ import annotations

import asyncio
import io
import warnings
from abc import abstractmethod
from base64 import b64encode
from collections.abc import Sequence
from typing import Any, ClassVar

from .._optional import require
from .._validation import positive_int
from ._retry import RetryPolicy, acall_with_retries, call_with_retries, check_seconds
from .base import Encoder, EncoderError, InputKind, batch_name, check_truncate_dim

__all__ = ["APIEncoder", "ImagePayload", "ModelSpec"]

ModelSpec = tuple[int, tuple[int, ...] | None]
"""``(full_dim, dims the API can return)``; ``None`` means any dim up to full_dim, ``()`` none."""


class ImagePayload:
    """An image as an API takes it: a base64 PNG, or a JPEG where the PNG is over the limit.

    Attributes:
        uri: The data URI (``data:image/png;base64,...``).
        base64: The base64 data without the ``data:`` prefix.
    """

    __slots__ = ("base64", "uri")

    def __init__(self, image: Any, where: str, max_bytes: int | None, provider: str) -> None:
        mime, data = "png", _encoded(image, "PNG")
        if max_bytes is not None and len(data) > max_bytes:
            mime, data = "jpeg", _encoded(image, "JPEG", quality=90)
        if max_bytes is not None and len(data) > max_bytes:
            width, height = image.size
            raise ValueError(
                f"{where} ({width}x{height}) is {len(data):,} bytes even as JPEG, over the "
                f"{provider} limit of {max_bytes:,} bytes per image; downscale it before embedding"
            )
        self.base64 = b64encode(data).decode("ascii")
        self.uri = f"data:image/{mime};base64,{self.base64}"


def _encoded(image: Any, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


class APIEncoder(Encoder):
    """Base of the encoders for hosted embedding APIs.

    Takes the arguments every provider shares, makes the SDK clients (with the SDK's own retries
    off), splits input into request-sized batches, retries transient errors (see
    :class:`~matryoshka_retrieval.encoders.RetryPolicy`), keeps output in input order, and asks the
    API for a shorter output where it can (``dimensions`` / ``output_dimension``), truncating on
    the client otherwise. A call that fails returns nothing: no partial or misaligned result.

    Args:
        model: Model name (default: the first of the provider's :attr:`MODELS`).
        truncate_dim: Output dimension, or ``None`` for the full dimension.
        client: A ready sync SDK client (its own retries are not used; ``retry`` applies).
        async_client: A ready async SDK client for the async methods. When only ``client`` is
            given, async calls run the sync client in a worker thread.
        api_key: API key (default: the SDK's environment variable), used when no client is given.
        base_url: API base URL, for proxies and compatible servers.
        full_dim: Embedding dimension, required for models this library does not know.
        native_dims: Output dims the API accepts for the model (``True`` for any, ``False`` for
            none); ``None`` looks the model up.
        batch_size: Texts per request, at most :attr:`MAX_BATCH_SIZE` (default:
            :attr:`DEFAULT_BATCH_SIZE`).
        retry: Retry policy for rate limits, 5xx and timeouts.
        timeout: Seconds before a request times out (and is retried).
        max_concurrency: Requests in flight at once in the async methods.
        images: Whether the model embeds images; ``None`` looks the model up
            (:attr:`IMAGE_MODELS`). Images are checked and encoded (PNG data URIs, within
            :attr:`MAX_IMAGE_BYTES` and ``max_image_pixels``) before any request.

    Raises:
        ValueError: For an unknown model without ``full_dim``, or a count, size or time out of
            range (the message names the argument and its limit).
        ImportError: When the provider's SDK is not installed (naming the extra).
    """

    #: Package and extra that provide the SDK, and the names of its sync and async clients.
    SDK: ClassVar[tuple[str, str, str, str]] = ("", "", "", "")
    #: Known models: name -> (full dim, dims the API returns natively); the first is the default.
    MODELS: ClassVar[dict[str, ModelSpec]] = {}
    #: Models trained with a Matryoshka objective (prefixes are meaningful).
    MATRYOSHKA_MODELS: frozenset[str] = frozenset()
    #: Largest batch the API accepts in one request.
    MAX_BATCH_SIZE: int = 96
    #: Texts per request unless ``batch_size`` is given.
    DEFAULT_BATCH_SIZE: ClassVar[int] = 96
    #: Models that embed images into the space of their texts.
    IMAGE_MODELS: frozenset[str] = frozenset()
    #: Largest image the API takes, in bytes (as the PNG sent).
    MAX_IMAGE_BYTES: ClassVar[int | None] = None

    def __init__(
        self,
        model: str | None = None,
        *,
        truncate_dim: int | None = None,
        client: Any = None,
        async_client: Any = None,
        api_key: str | None = None,
        base_url: str | None = None,
        full_dim: int | None = None,
        native_dims: Sequence[int] | bool | None = None,
        batch_size: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        max_concurrency: int = 4,
        images: bool | None = None,
    ) -> None:
        model = next(iter(self.MODELS)) if model is None else model
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model name, got {model!r}")
        self._sdk = require(*self.SDK[:2])
        self.model_name = model
        if images is not None and not isinstance(images, bool):
            raise TypeError(f"images must be a bool or None, got {type(images).__name__}")
        self._images = model in self.IMAGE_MODELS if images is None else images
        self._set_dims(full_dim, truncate_dim, native_dims)
        self.batch_size = self._check_batch_size(
            self.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_concurrency = positive_int("max_concurrency", max_concurrency)
        self.timeout = check_seconds("timeout", timeout, allow_zero=False)
        if client is None and async_client is None:
            client, async_client = self._make_clients(api_key, base_url)
        self.client = self._adopt(client) if client is not None else None
        self.async_client = self._adopt(async_client) if async_client is not None else None
        self._warn_if_not_matryoshka()

    def _set_dims(
        self,
        full_dim: int | None,
        truncate_dim: int | None,
        native_dims: Sequence[int] | bool | None,
    ) -> None:
        spec = self.MODELS.get(self.model_name)
        if full_dim is None:
            if spec is None:
                raise ValueError(
                    f"unknown {self.provider} model {self.model_name!r}: pass full_dim= (its "
                    f"embedding dimension); known models are {sorted(self.MODELS)}"
                )
            full_dim = spec[0]
        self.full_dim = positive_int("full_dim", full_dim)
        self.truncate_dim = check_truncate_dim(truncate_dim, self.full_dim, self.model_name)
        native: tuple[int, ...] | None
        if native_dims is None:
            native = spec[1] if spec is not None else ()
        elif native_dims is True:
            native = None
        elif native_dims is False:
            native = ()
        else:
            native = tuple(sorted(positive_int("native_dims item", d) for d in native_dims))
        self.native_dims = native

    def _check_batch_size(self, batch_size: int) -> int:
        size = positive_int("batch_size", batch_size)
        if size > self.MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {self.provider} limit of "
                f"{self.MAX_BATCH_SIZE} texts per request"
            )
        return size

    def _warn_if_not_matryoshka(self) -> None:
        known = self.model_name in self.MODELS
        if (
            known
            and self.truncate_dim is not None
            and self.model_name not in self.MATRYOSHKA_MODELS
        ):
            warnings.warn(
                f"{self.provider} model {self.model_name!r} is not Matryoshka-trained: its first "
                f"{self.truncate_dim} dimensions are truncated on the client and may lose much "
                "more quality than a Matryoshka model's prefix would",
                UserWarning,
                stacklevel=3,
            )

    @property
    def supports_images(self) -> bool:
        """Whether the model embeds images (a known multimodal model, or ``images=True``)."""
        return self._images

    @property
    def request_dim(self) -> int | None:
        """The output dimension asked of the API, or ``None`` to get the model's default."""
        if self.truncate_dim is None or self.truncate_dim == self.full_dim:
            return None
        if self.native_dims is None:
            return self.truncate_dim
        larger = [d for d in self.native_dims if d >= self.truncate_dim]
        return larger[0] if larger and larger[0] < self.full_dim else None

    @property
    def returned_dim(self) -> int:
        request = self.request_dim
        return request if request is not None else self.full_dim

    def _make_clients(self, api_key: str | None, base_url: str | None) -> tuple[Any, Any]:
        """The SDK's sync and async clients, with the SDK's own retries off; an unset key or
        URL is left to the SDK's default (its environment variable)."""
        options: dict[str, Any] = {"timeout": self.timeout, "max_retries": 0}
        if api_key is not None:
            options["api_key"] = api_key
        if base_url is not None:
            options["base_url"] = base_url
        sync, asynchronous = (getattr(self._sdk, name) for name in self.SDK[2:])
        return sync(**options), asynchronous(**options)

    # -- subclass hooks -------------------------------------------------------------------

    def _adopt(self, client: Any) -> Any:
        """Prepare a client for use (turn its own retries off where the SDK allows it)."""
        return client

    @abstractmethod
    def _call(self, client: Any, texts: list[str], kind: InputKind) -> Any:
        """Send one batch with ``client``: the SDK's response (an awaitable of it when
        ``client`` is :attr:`async_client`)."""

    @abstractmethod
    def _rows(self, response: Any, n: int) -> list[Any]:
        """The ``n`` vectors of a response, in input order."""

    def _call_images(self, client: Any, images: list[ImagePayload], kind: InputKind) -> Any:
        """Send one batch of images (only for a model that :attr:`supports_images`)."""
        raise NotImplementedError(f"{type(self).__name__} does not send images")

    # -- images: read, checked and encoded before any request --------------------------------
    def _check_batch(self, items: Any, paths: bool, kind: InputKind) -> list[Any]:
        checked = super()._check_batch(items, paths, kind)
        name = batch_name(kind, paths)
        limit = self.MAX_IMAGE_BYTES
        return [
            item
            if isinstance(item, str)
            else ImagePayload(item, f"{name}[{i}]", limit, self.provider)
            for i, item in enumerate(checked)
        ]

    # -- one request ----------------------------------------------------------------------
    def _send(self, client: Any, items: list[Any], kind: InputKind) -> Any:
        if items and isinstance(items[0], ImagePayload):
            return self._call_images(client, items, kind)
        return self._call(client, items, kind)

    def _request(self, texts: list[Any], kind: InputKind) -> list[Any]:
        if self.client is None:
            raise RuntimeError(
                f"this {type(self).__name__} has only an async client: use aencode_*"
            )
        return self._rows(self._send(self.client, texts, kind), len(texts))

    async def _arequest(self, texts: list[Any], kind: InputKind) -> list[Any]:
        if self.async_client is None:
            return await asyncio.to_thread(self._request, texts, kind)
        return self._rows(await self._send(self.async_client, texts, kind), len(texts))

    def _malformed(self, exc: Exception) -> EncoderError:
        return EncoderError(
            self.provider, f"returned a malformed response ({type(exc).__name__}: {exc})"
        )

    def _by_index(self, items: Any, n: int) -> list[Any]:
        """The ``embedding`` of each item in the order of its ``index``, which must be exactly
        ``0 .. n-1`` (each once): a server may answer in any order, never with gaps."""
        try:
            pairs = [(item.index, item.embedding) for item in items]
        except (AttributeError, TypeError) as exc:
            raise self._malformed(exc) from exc
        self._checked(pairs, n)
        seen: set[int] = set()
        for index, _ in pairs:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise EncoderError(
                    self.provider,
                    f"returned an embedding with index {index!r} for a batch of {n} texts "
                    f"(indexes must be 0..{n - 1})",
                )
            if index in seen:
                raise EncoderError(
                    self.provider, f"returned index {index} twice for a batch of {n} texts"
                )
            seen.add(index)
        return [embedding for _, embedding in sorted(pairs, key=lambda pair: pair[0])]

    # -- batching -------------------------------------------------------------------------
    def _batches(self, texts: list[Any]) -> list[list[Any]]:
        size = self.batch_size
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    def _embed_images(self, images: list[Any], kind: InputKind) -> list[Any]:
        return self._embed(images, kind)

    async def _aembed_images(self, images: list[Any], kind: InputKind) -> list[Any]:
        return await self._aembed(images, kind)

    def _embed(self, texts: list[Any], kind: InputKind) -> list[Any]:
        rows: list[Any] = []
        for batch in self._batches(texts):
            vectors = call_with_retries(
                lambda b=batch: self._request(b, kind),  # type: ignore[misc]
                policy=self.retry,
                provider=self.provider,
            )
            rows.extend(self._checked(vectors, len(batch)))
        return rows

    async def _aembed(self, texts: list[Any], kind: InputKind) -> list[Any]:
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def run(batch: list[Any]) -> list[Any]:
            async with semaphore:
                vectors = await acall_with_retries(
                    lambda: self._arequest(batch, kind),
                    policy=self.retry,
                    provider=self.provider,
                )
            return self._checked(vectors, len(batch))

        tasks = [asyncio.ensure_future(run(batch)) for batch in self._batches(texts)]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [row for batch_rows in results for row in batch_rows]

    def _checked(self, vectors: Any, n: int) -> list[Any]:
        if not isinstance(vectors, list) or len(vectors) != n:
            got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
            raise EncoderError(self.provider, f"returned {got} embeddings for a batch of {n} texts")
        return vectors
