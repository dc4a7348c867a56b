"""Shared machinery of the hosted-API encoders: batching, retries, dimension negotiation."""

from __future__ import annotations

import asyncio
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from .._optional import require
from ._retry import RetryPolicy, acall_with_retries, call_with_retries
from .base import Encoder, EncoderError, InputKind, check_truncate_dim

__all__ = ["APIEncoder", "ModelSpec"]

ModelSpec = tuple[int, tuple[int, ...] | None]
"""``(full_dim, dims the API can return)``; ``None`` means any dim up to full_dim, ``()`` none."""


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class APIEncoder(Encoder):
    """Base of the encoders for hosted embedding APIs.

    Splits input into request-sized batches, retries transient errors (see
    :class:`~matryoshka_retrieval.encoders.RetryPolicy`), keeps output in input order, and asks the
    API for a shorter output where it can (``dimensions`` / ``output_dimension``), truncating on
    the client otherwise. A call that fails returns nothing: no partial or misaligned result.
    """

    #: Known models: name -> (full dim, dims the API returns natively).
    MODELS: ClassVar[dict[str, ModelSpec]] = {}
    #: Models trained with a Matryoshka objective (prefixes are meaningful).
    MATRYOSHKA_MODELS: frozenset[str] = frozenset()
    #: Largest batch the API accepts in one request.
    MAX_BATCH_SIZE: int = 96
    #: Package and extra that provide the SDK.
    SDK: tuple[str, str] = ("", "")

    def __init__(
        self,
        model: str,
        *,
        truncate_dim: int | None,
        full_dim: int | None,
        native_dims: Sequence[int] | bool | None,
        batch_size: int,
        retry: RetryPolicy | None,
        max_concurrency: int,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model name, got {model!r}")
        require(*self.SDK)
        self.model_name = model
        spec = self.MODELS.get(model)
        if full_dim is None:
            if spec is None:
                raise ValueError(
                    f"unknown {self.provider} model {model!r}: pass full_dim= (its embedding "
                    f"dimension); known models are {sorted(self.MODELS)}"
                )
            full_dim = spec[0]
        self.full_dim = _positive_int("full_dim", full_dim)
        self.truncate_dim = check_truncate_dim(truncate_dim, self.full_dim, model)
        if native_dims is None:
            native = spec[1] if spec is not None else ()
        elif native_dims is True:
            native = None
        elif native_dims is False:
            native = ()
        else:
            native = tuple(sorted(int(d) for d in native_dims))
        self.native_dims: tuple[int, ...] | None = native
        self.batch_size = _positive_int("batch_size", batch_size)
        if self.batch_size > self.MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {self.provider} limit of "
                f"{self.MAX_BATCH_SIZE} texts per request"
            )
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_concurrency = _positive_int("max_concurrency", max_concurrency)
        if (
            spec is not None
            and self.truncate_dim is not None
            and model not in self.MATRYOSHKA_MODELS
        ):
            warnings.warn(
                f"{self.provider} model {model!r} is not Matryoshka-trained: its first "
                f"{self.truncate_dim} dimensions are truncated on the client and may lose much "
                "more quality than a Matryoshka model's prefix would",
                UserWarning,
                stacklevel=3,
            )

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

    # -- subclass hooks -------------------------------------------------------------------
    @abstractmethod
    def _request(self, texts: list[str], kind: InputKind) -> list[Any]:
        """Send one batch; return its vectors in input order."""

    @abstractmethod
    async def _arequest(self, texts: list[str], kind: InputKind) -> list[Any]:
        """Async twin of :meth:`_request`."""

    def _malformed(self, exc: Exception) -> EncoderError:
        return EncoderError(
            self.provider, f"returned a malformed response ({type(exc).__name__}: {exc})"
        )

    # -- batching -------------------------------------------------------------------------
    def _batches(self, texts: list[str]) -> list[list[str]]:
        size = self.batch_size
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    def _embed(self, texts: list[str], kind: InputKind) -> list[Any]:
        rows: list[Any] = []
        for batch in self._batches(texts):
            vectors = call_with_retries(
                lambda b=batch: self._request(b, kind),  # type: ignore[misc]
                policy=self.retry,
                provider=self.provider,
            )
            rows.extend(self._checked(vectors, len(batch)))
        return rows

    async def _aembed(self, texts: list[str], kind: InputKind) -> list[Any]:
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def run(batch: list[str]) -> list[Any]:
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
