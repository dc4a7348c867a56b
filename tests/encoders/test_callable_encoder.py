from __future__ import annotations

import asyncio

import numpy as np
import pytest

from matryoshka_retrieval import CallableEncoder, Encoder, EncoderError, as_encoder, truncate


class Recorder:
    """An embedding function that records its calls and returns distinct vectors per text."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def vector(self, text: str) -> np.ndarray:
        seed = sum(ord(c) * (i + 1) for i, c in enumerate(text))
        return np.random.default_rng(seed).normal(size=self.dim)

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts])


def test_callable_output_is_truncated_in_input_order() -> None:
    fn = Recorder()
    encoder = CallableEncoder(fn, dim=8, truncate_dim=3)
    out = encoder.encode_documents(["b", "a", "c"])
    np.testing.assert_allclose(out, truncate(np.stack([fn.vector(t) for t in "bac"]), 3), atol=1e-6)


def test_query_fn_is_used_for_queries() -> None:
    docs, queries = Recorder(), Recorder()
    encoder = CallableEncoder(docs, dim=8, query_fn=queries)
    encoder.encode_queries(["q"])
    encoder.encode_documents(["d"])
    assert queries.calls == [["q"]] and docs.calls == [["d"]]


def test_async_function_is_awaited() -> None:
    fn = Recorder()

    async def afn(texts: list[str]) -> np.ndarray:
        await asyncio.sleep(0)
        return fn(texts)

    encoder = CallableEncoder(afn, dim=8)
    out = asyncio.run(encoder.aencode_documents(["x", "y"]))
    np.testing.assert_allclose(out, encoder.encode_documents(["x", "y"]), atol=1e-6)


def test_sync_function_runs_off_the_event_loop() -> None:
    import threading

    seen: list[str] = []

    def fn(texts: list[str]) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return np.ones((len(texts), 4))

    asyncio.run(CallableEncoder(fn, dim=4).aencode_queries(["x"]))
    assert seen and seen[0] != threading.main_thread().name


# -- bad input: rejected before the function is called ----------------------------------------
@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["ok", 3], TypeError, r"texts\[1\] must be a str, got int"),
        (["ok", None], TypeError, r"texts\[1\] must be a str, got NoneType"),
        (["ok", "fine", ""], ValueError, r"texts\[2\] is an empty string"),
        (["  "], ValueError, r"texts\[0\] is an empty string"),
        ("just a string", TypeError, r"list of strings, got a single str"),
        (42, TypeError, r"list of strings, got int"),
    ],
)
def test_bad_input_is_rejected_before_any_call(texts: object, error: type, message: str) -> None:
    fn = Recorder()
    encoder = CallableEncoder(fn, dim=8)
    with pytest.raises(error, match=message):
        encoder.encode_documents(texts)
    # a query batch names its items as queries
    with pytest.raises(error, match=message.replace("texts", "queries")):
        asyncio.run(encoder.aencode_queries(texts))
    assert fn.calls == []


def test_empty_list_returns_empty_array_without_a_call() -> None:
    fn = Recorder()
    encoder = CallableEncoder(fn, dim=8, truncate_dim=4)
    out = encoder.encode_documents([])
    assert out.shape == (0, 4) and out.dtype == np.float32
    assert asyncio.run(encoder.aencode_queries([])).shape == (0, 4)
    assert fn.calls == []


# -- unusable output ---------------------------------------------------------------------------
def test_wrong_width_output_names_provider_and_row() -> None:
    encoder = CallableEncoder(lambda texts: [[1.0] * 8, [1.0] * 7], dim=8, model_name="mine")
    with pytest.raises(EncoderError, match=r"callable: .*length 7 in row 1, expected 8"):
        encoder.encode_documents(["a", "b"])


def test_wrong_row_count_is_an_error() -> None:
    encoder = CallableEncoder(lambda texts: np.ones((1, 8)), dim=8)
    with pytest.raises(EncoderError, match=r"returned 1 embeddings for 2 input texts"):
        encoder.encode_documents(["a", "b"])


def test_non_finite_output_names_the_row() -> None:
    def fn(texts: list[str]) -> np.ndarray:
        out = np.ones((len(texts), 8))
        out[2, 5] = np.nan
        return out

    with pytest.raises(EncoderError, match=r"callable: .*non-finite .* row 2"):
        CallableEncoder(fn, dim=8).encode_documents(["a", "b", "c"])


def test_bad_dims_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"dim must be a positive int .* got 0"):
        CallableEncoder(Recorder(), dim=0)
    with pytest.raises(ValueError, match=r"truncate_dim=9 is out of range.*dimension 8"):
        CallableEncoder(Recorder(), dim=8, truncate_dim=9)


# -- as_encoder ------------------------------------------------------------------------------
def test_as_encoder_returns_an_encoder_unchanged() -> None:
    encoder = CallableEncoder(Recorder(), dim=8)
    assert as_encoder(encoder) is encoder
    short = as_encoder(encoder, truncate_dim=2)
    assert short is not encoder and short.dim == 2 and encoder.dim == 8


def test_as_encoder_wraps_a_function_with_dim() -> None:
    encoder = as_encoder(Recorder(), dim=8, truncate_dim=4)
    assert isinstance(encoder, CallableEncoder)
    assert encoder.encode_queries(["x"]).shape == (1, 4)


def test_as_encoder_needs_dim_for_a_function() -> None:
    with pytest.raises(TypeError, match=r"needs dim="):
        as_encoder(Recorder())


def test_as_encoder_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match=r"got int"):
        as_encoder(5)


def test_as_encoder_wraps_a_sentence_transformer(minilm_model) -> None:
    encoder = as_encoder(minilm_model, truncate_dim=32)
    assert isinstance(encoder, Encoder)
    assert encoder.full_dim == 384 and encoder.dim == 32
    np.testing.assert_allclose(
        encoder.encode_documents(["hello"]), truncate(minilm_model.encode(["hello"]), 32), atol=1e-5
    )
