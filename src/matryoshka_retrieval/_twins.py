"""One body for a sync method and its async twin, as the framework integrations need them.

A method that embeds and then reads or writes the index is written once, as a generator of
:class:`Step` objects (made by :func:`encode`, :func:`twin` and :func:`blocking`) that receives
each step's result and returns the method's. :func:`run` performs the steps in the calling
thread; :func:`arun` awaits the async side of each step (the encoder's async path, or a
framework method's async twin) and runs blocking work in a worker thread
(``asyncio.to_thread``), so the event loop is never blocked. A method that only blocks gets
its twin from :func:`in_thread`.

Example:
    >>> def doubled(x: int) -> Steps[int]:
    ...     y = yield blocking(abs, x)
    ...     return 2 * y
    >>> run(doubled(-2)), asyncio.run(arun(doubled(-2)))
    (4, 4)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from .encoders.base import Encoder

__all__ = [
    "EncodeKind",
    "Step",
    "Steps",
    "arun",
    "blocking",
    "encode",
    "in_thread",
    "run",
    "twin",
]

T = TypeVar("T")

EncodeKind = Literal["documents", "queries", "images"]
"""Which of the encoder's paths embeds the items."""


@dataclass(frozen=True)
class Step:
    """One call of a twin's body: ``call(*args, **kwargs)`` in the sync twin; in the async
    twin ``await acall(*args, **kwargs)``, or ``call`` in a worker thread when ``acall`` is
    ``None`` (blocking work)."""

    call: Callable[..., Any]
    acall: Callable[..., Awaitable[Any]] | None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def perform(self) -> Any:
        """The step's result in the sync twin."""
        return self.call(*self.args, **self.kwargs)

    async def aperform(self) -> Any:
        """The step's result in the async twin, without blocking the event loop."""
        if self.acall is None:
            return await asyncio.to_thread(self.call, *self.args, **self.kwargs)
        return await self.acall(*self.args, **self.kwargs)


Steps = Generator[Step, Any, T]
"""A twin's body: yields steps, receives each one's result, returns the method's result."""


def blocking(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Step:
    """A step of blocking work (index reads and writes): a worker thread runs it when async."""
    return Step(fn, None, args, kwargs)


def twin(
    call: Callable[..., Any], acall: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
) -> Step:
    """A step calling ``call`` in the sync twin and awaiting ``acall`` (its async twin, with
    the same arguments) in the async one."""
    return Step(call, acall, args, kwargs)


def encode(encoder: Encoder, kind: EncodeKind, items: Sequence[Any]) -> Step:
    """A step embedding ``items`` on the encoder's path for ``kind``, awaited when async.

    Raises:
        ValueError: If ``kind`` is not one of ``documents``, ``queries``, ``images``.
    """
    paths = {
        "documents": (encoder.encode_documents, encoder.aencode_documents),
        "queries": (encoder.encode_queries, encoder.aencode_queries),
        "images": (encoder.encode_images, encoder.aencode_images),
    }
    if kind not in paths:
        raise ValueError(f"kind must be one of {sorted(paths)}, got {kind!r}")
    return twin(*paths[kind], items)


def _advance(steps: Steps[T], reply: Any) -> tuple[Step | None, Any]:
    """Send ``reply`` into a twin's body: its next step, or ``None`` and its result."""
    try:
        return steps.send(reply), None
    except StopIteration as done:
        return None, done.value


def run(steps: Steps[T]) -> T:
    """Perform a twin's steps in the calling thread and return its result."""
    with contextlib.closing(steps):
        step, result = _advance(steps, None)
        while step is not None:
            step, result = _advance(steps, step.perform())
    returned: T = result
    return returned


async def arun(steps: Steps[T]) -> T:
    """Perform a twin's steps without blocking the event loop and return its result."""
    with contextlib.closing(steps):
        step, result = _advance(steps, None)
        while step is not None:
            step, result = _advance(steps, await step.aperform())
    returned: T = result
    return returned


def in_thread(method: Callable[..., T]) -> Callable[..., Coroutine[Any, Any, T]]:
    """The async twin of a blocking method: the same call, in a worker thread.

    The twin looks the method up on the instance by name, so a subclass's override is used.

    Example:
        >>> class Store:
        ...     def size(self, scale: int) -> int:
        ...         return 2 * scale
        ...     asize = in_thread(size)
        >>> asyncio.run(Store().asize(3))
        6
    """
    name = method.__name__

    async def offloaded(self: Any, /, *args: Any, **kwargs: Any) -> T:
        result: T = await asyncio.to_thread(getattr(self, name), *args, **kwargs)
        return result

    offloaded.__doc__ = f"Async twin of ``{name}``: the same call, in a worker thread."
    return offloaded
