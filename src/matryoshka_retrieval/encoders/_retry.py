"""Retrying transient provider errors (rate limits, 5xx, timeouts) with backoff."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .base import EncoderError

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["RetryPolicy", "acall_with_retries", "call_with_retries", "check_seconds", "transient"]


def check_seconds(name: str, value: Any, *, allow_zero: bool = True) -> float:
    """``value`` as a finite number of seconds: 0 or more (more than 0 with ``allow_zero=False``).

    Raises:
        TypeError: For a bool or a non-number, naming ``name``.
        ValueError: For NaN, an infinity or a value below the limit, naming ``name`` and it.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    limit = "0 or more" if allow_zero else "more than 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}={value!r} must be a finite number of seconds, {limit}")
    return float(value)


@dataclass(frozen=True)
class RetryPolicy:
    """How API encoders retry transient failures.

    Attributes:
        max_retries: Retries after the first attempt (0 disables retrying).
        initial_backoff: Seconds to wait before the first retry; doubled for each next one.
        max_backoff: Longest wait between two attempts, in seconds.
        max_retry_after: Longest ``Retry-After`` the encoder honours, in seconds; a server that
            asks for more ends the retries with an error instead of stalling the caller.
    """

    max_retries: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 20.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError(f"max_retries must be an int, got {type(self.max_retries).__name__}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be 0 or more")
        for name in ("initial_backoff", "max_backoff", "max_retry_after"):
            check_seconds(name, getattr(self, name))

    def backoff(self, attempt: int) -> float:
        """Wait before retry number ``attempt`` (0-based): exponential with jitter."""
        base = min(self.max_backoff, self.initial_backoff * (2**attempt))
        return float(base * (0.5 + random.random() / 2))


def _status(exc: BaseException) -> int | None:
    for owner in (exc, getattr(exc, "response", None)):
        if owner is None:
            continue
        for attr in ("status_code", "http_status", "status"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _headers(exc: BaseException) -> Mapping[str, Any]:
    for owner in (exc, getattr(exc, "response", None)):
        if owner is None:
            continue
        for attr in ("headers", "http_headers"):
            value = getattr(owner, attr, None)
            if value is not None and hasattr(value, "get"):
                return value  # type: ignore[no-any-return]
    return {}


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    def get(name: str) -> Any:
        value = headers.get(name)
        if value is None:
            value = headers.get(name.title())
        return value

    millis = get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(str(value)) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


_TRANSIENT_NAMES = ("Timeout", "Connection", "TransportError", "ServiceUnavailable", "TryAgain")


def transient(exc: BaseException) -> tuple[bool, float | None]:
    """Classify an exception raised by a provider SDK.

    Returns:
        ``(retryable, retry_after)``: whether a retry can succeed (HTTP 408 / 409 / 429 / 5xx,
        timeouts, dropped connections) and the wait the server asked for, if any.
    """
    status = _status(exc)
    if status is not None:
        retryable = status in (408, 409, 429) or status >= 500
        return retryable, _retry_after(_headers(exc)) if retryable else None
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True, None
    names = [cls.__name__ for cls in type(exc).__mro__]
    return any(part in name for name in names for part in _TRANSIENT_NAMES), None


def _next_delay(exc: Exception, attempt: int, policy: RetryPolicy, provider: str) -> float:
    """Seconds to wait before retrying after ``exc``, or raise the final EncoderError."""
    retryable, retry_after = transient(exc)
    if not retryable:
        raise EncoderError(provider, f"request failed: {_describe(exc)}") from exc
    if attempt >= policy.max_retries:
        raise EncoderError(
            provider, f"request failed after {attempt + 1} attempt(s): {_describe(exc)}"
        ) from exc
    if retry_after is None:
        delay = policy.backoff(attempt)
    elif retry_after > policy.max_retry_after:
        raise EncoderError(
            provider,
            f"the server asked to retry after {retry_after:.1f}s, more than max_retry_after="
            f"{policy.max_retry_after}s ({_describe(exc)})",
        ) from exc
    else:
        delay = retry_after
    logger.warning(
        "%s: transient error (%s); retry %d/%d in %.2fs",
        provider,
        _describe(exc),
        attempt + 1,
        policy.max_retries,
        delay,
    )
    return delay


def call_with_retries(fn: Callable[[], T], *, policy: RetryPolicy, provider: str) -> T:
    """Call ``fn``, retrying transient errors per ``policy``; wrap the final failure.

    Raises:
        EncoderError: When the error is not transient, or retries are exhausted; the SDK's
            exception is its ``__cause__``.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except EncoderError:
            raise
        except Exception as exc:
            time.sleep(_next_delay(exc, attempt, policy, provider))
            attempt += 1


async def acall_with_retries(
    fn: Callable[[], Awaitable[T]], *, policy: RetryPolicy, provider: str
) -> T:
    """Async twin of :func:`call_with_retries`; waits with ``asyncio.sleep``."""
    attempt = 0
    while True:
        try:
            return await fn()
        except EncoderError:
            raise
        except Exception as exc:
            await asyncio.sleep(_next_delay(exc, attempt, policy, provider))
            attempt += 1


def _describe(exc: BaseException) -> str:
    status = _status(exc)
    text = str(exc).strip() or type(exc).__name__
    text = text if len(text) <= 300 else text[:300] + "..."
    prefix = f"HTTP {status} " if status is not None else ""
    return f"{prefix}{type(exc).__name__}: {text}"
