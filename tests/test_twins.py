"""One body for a sync method and its async twin: ``run``, ``arun``, the steps, ``in_thread``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from matryoshka_retrieval import CallableEncoder
from matryoshka_retrieval._twins import Steps, arun, blocking, encode, in_thread, run, twin


def _recording(threads: list[int]) -> Any:
    def add_one(x: int) -> int:
        threads.append(threading.get_ident())
        return x + 1

    return add_one


def _two_steps(fn: Any, x: int) -> Steps[int]:
    y = yield blocking(fn, x)
    z = yield blocking(fn, y)
    return 10 * z


def test_run_performs_each_step_in_the_calling_thread_and_returns_the_result() -> None:
    threads: list[int] = []
    assert run(_two_steps(_recording(threads), 1)) == 30
    assert threads == [threading.get_ident()] * 2


async def test_arun_runs_blocking_steps_in_a_worker_thread() -> None:
    threads: list[int] = []
    assert await arun(_two_steps(_recording(threads), 1)) == 30
    assert len(threads) == 2
    assert threading.get_ident() not in threads


async def test_arun_leaves_the_event_loop_free_during_blocking_work() -> None:
    released = threading.Event()

    def wait_for_release() -> Steps[bool]:
        got: bool = yield blocking(released.wait, timeout=5)
        return got

    async def release() -> None:
        released.set()

    # run inside the loop, the wait would time out before release() could run
    waited, _ = await asyncio.gather(arun(wait_for_release()), release())
    assert waited is True


async def test_run_calls_the_sync_side_and_arun_awaits_the_async_twin() -> None:
    calls: list[tuple[str, int]] = []

    def sync(x: int) -> int:
        calls.append(("sync", x))
        return x

    async def asynced(x: int) -> int:
        calls.append(("async", x))
        return -x

    def body() -> Steps[int]:
        result: int = yield twin(sync, asynced, 3)
        return result

    assert run(body()) == 3
    assert await arun(body()) == -3
    assert calls == [("sync", 3), ("async", 3)]


def _embedded(encoder: CallableEncoder, kind: Any) -> Steps[Any]:
    matrix = yield encode(encoder, kind, ["a", "b"])
    return matrix


def test_encode_takes_the_encoders_document_or_query_path() -> None:
    encoder = CallableEncoder(
        lambda texts: np.tile([1.0, 0.0], (len(texts), 1)),
        dim=2,
        query_fn=lambda texts: np.tile([0.0, 1.0], (len(texts), 1)),
    )
    np.testing.assert_allclose(run(_embedded(encoder, "documents")), [[1, 0], [1, 0]])
    np.testing.assert_allclose(run(_embedded(encoder, "queries")), [[0, 1], [0, 1]])


async def test_encode_awaits_the_encoders_async_path() -> None:
    seen: list[str] = []

    async def embed(texts: list[str]) -> Any:
        seen.extend(texts)
        return np.tile([0.6, 0.8], (len(texts), 1))

    encoder = CallableEncoder(embed, dim=2)
    np.testing.assert_allclose(await arun(_embedded(encoder, "documents")), [[0.6, 0.8]] * 2)
    assert seen == ["a", "b"]
    with pytest.raises(TypeError, match="aencode_documents"):
        run(_embedded(encoder, "documents"))  # the sync path refuses to block the loop


def test_encode_rejects_an_unknown_kind() -> None:
    encoder = CallableEncoder(lambda texts: np.ones((len(texts), 2)), dim=2)
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'passages'"):
        encode(encoder, "passages", ["a"])  # type: ignore[arg-type]


def _failing(closed: list[bool]) -> Steps[None]:
    try:
        yield blocking(int, "not a number")
    finally:
        closed.append(True)


async def test_an_error_in_a_step_reaches_the_caller_and_closes_the_body() -> None:
    closed: list[bool] = []
    with pytest.raises(ValueError, match="invalid literal"):
        run(_failing(closed))
    with pytest.raises(ValueError, match="invalid literal"):
        await arun(_failing(closed))
    assert closed == [True, True]


class _Store:
    def size(self, scale: int) -> tuple[int, int]:
        return threading.get_ident(), 2 * scale

    asize = in_thread(size)


class _BiggerStore(_Store):
    def size(self, scale: int) -> tuple[int, int]:
        return threading.get_ident(), 3 * scale


async def test_in_thread_calls_the_instances_own_method_in_a_worker_thread() -> None:
    thread, value = await _BiggerStore().asize(scale=2)
    assert value == 6  # the subclass's override, not the method in_thread was given
    assert thread != threading.get_ident()
    assert (await _Store().asize(2))[1] == 4
