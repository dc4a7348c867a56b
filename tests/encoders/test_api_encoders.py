"""The OpenAI, Cohere and Voyage encoders through their real SDKs, against a local HTTP server.

Every behaviour shared by the three is checked for each; what each request carried
(``dimensions`` / ``output_dimension`` / ``input_type``) is checked per provider.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fake_api import (
    Delay,
    Disconnect,
    FakeEmbeddingAPI,
    Fault,
    Malformed,
    NonFinite,
    Shuffle,
    WrongCount,
    WrongLength,
)
from matryoshka_retrieval import (
    CohereEncoder,
    EncoderError,
    OpenAIEncoder,
    RetryPolicy,
    VoyageEncoder,
    truncate,
)
from matryoshka_retrieval.encoders._api import APIEncoder

FAST_RETRY = RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.05)
TEXTS = ["list directory contents", "copy files", "print a calendar", "show disk usage", "find"]


@dataclass(frozen=True)
class Provider:
    name: str
    cls: type[APIEncoder]
    model: str
    full_dim: int
    url: Callable[[FakeEmbeddingAPI], str]


PROVIDERS = [
    Provider("openai", OpenAIEncoder, "text-embedding-3-small", 1536, lambda a: a.openai_base_url),
    Provider("cohere", CohereEncoder, "embed-v4.0", 1536, lambda a: a.cohere_base_url),
    Provider("voyage", VoyageEncoder, "voyage-3.5", 1024, lambda a: a.voyage_base_url),
]


@pytest.fixture(params=PROVIDERS, ids=[p.name for p in PROVIDERS])
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param


@pytest.fixture
def api(provider: Provider) -> Iterator[FakeEmbeddingAPI]:
    with FakeEmbeddingAPI(full_dim=provider.full_dim) as server:
        yield server


@pytest.fixture
def make(provider: Provider, api: FakeEmbeddingAPI) -> Callable[..., APIEncoder]:
    def build(**kwargs: Any) -> APIEncoder:
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("timeout", 5.0)
        model = kwargs.pop("model", provider.model)
        return provider.cls(model, api_key="test-key", base_url=provider.url(api), **kwargs)

    return build


def expected(api: FakeEmbeddingAPI, texts: list[str], returned: int, dim: int) -> np.ndarray:
    return truncate(np.array([api.vector_for(t, returned) for t in texts]), dim)


def embedding_requests(api: FakeEmbeddingAPI) -> list[dict[str, Any]]:
    return [r.json for r in api.requests if r.provider is not None]


def texts_of(body: dict[str, Any]) -> list[str]:
    return list(body.get("input") or body.get("texts") or [])


# -- shared behaviour -------------------------------------------------------------------------
def test_documents_come_back_truncated_in_input_order(make, api) -> None:
    encoder = make(truncate_dim=256)
    out = encoder.encode_documents(TEXTS)
    assert out.shape == (5, 256) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected(api, TEXTS, 256, 256), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_full_dim_when_not_truncating(make, api, provider) -> None:
    encoder = make()
    assert encoder.dim == provider.full_dim
    out = encoder.encode_queries(TEXTS[:2])
    np.testing.assert_allclose(
        out, expected(api, TEXTS[:2], provider.full_dim, provider.full_dim), atol=1e-6
    )


def test_requests_are_batched_and_reassembled_in_order(make, api) -> None:
    encoder = make(truncate_dim=256, batch_size=2)
    out = encoder.encode_documents(TEXTS)
    assert [texts_of(body) for body in embedding_requests(api)] == [
        TEXTS[0:2],
        TEXTS[2:4],
        TEXTS[4:5],
    ]
    np.testing.assert_allclose(out, expected(api, TEXTS, 256, 256), atol=1e-6)


def test_async_twins_batch_concurrently_and_keep_order(make, api) -> None:
    encoder = make(truncate_dim=256, batch_size=1, max_concurrency=3)
    # the first batch answers last: order must still follow the input
    api.queue(Delay(0.3))
    docs = asyncio.run(encoder.aencode_documents(TEXTS))
    np.testing.assert_allclose(docs, expected(api, TEXTS, 256, 256), atol=1e-6)
    assert sorted(len(texts_of(b)) for b in embedding_requests(api)) == [1] * 5
    queries = asyncio.run(encoder.aencode_queries(TEXTS[:2]))
    np.testing.assert_allclose(queries, expected(api, TEXTS[:2], 256, 256), atol=1e-6)


def test_rate_limit_is_retried_after_retry_after(make, api) -> None:
    api.queue(Fault(status=429, headers={"Retry-After": "0.4"}))
    encoder = make(truncate_dim=256, retry=RetryPolicy(max_retries=2, initial_backoff=0.0))
    start = time.monotonic()
    out = encoder.encode_documents(TEXTS[:2])
    assert time.monotonic() - start >= 0.4
    assert len(embedding_requests(api)) == 2
    np.testing.assert_allclose(out, expected(api, TEXTS[:2], 256, 256), atol=1e-6)


def test_rate_limit_is_retried_in_async_too(make, api) -> None:
    api.queue(Fault(status=429, headers={"Retry-After": "0.2"}))
    start = time.monotonic()
    out = asyncio.run(make(truncate_dim=256).aencode_queries(TEXTS[:1]))
    assert time.monotonic() - start >= 0.2
    assert len(embedding_requests(api)) == 2
    np.testing.assert_allclose(out, expected(api, TEXTS[:1], 256, 256), atol=1e-6)


def test_server_error_is_retried(make, api) -> None:
    api.queue(Fault(status=500), Fault(status=503))
    out = make(truncate_dim=256).encode_documents(TEXTS[:3])
    assert len(embedding_requests(api)) == 3
    np.testing.assert_allclose(out, expected(api, TEXTS[:3], 256, 256), atol=1e-6)


def test_retries_run_out_with_a_clear_error(make, api, provider) -> None:
    api.queue(Fault(status=500), Fault(status=500), Fault(status=500))
    with pytest.raises(EncoderError, match=rf"^{provider.name}: request failed after 3 attempt"):
        make().encode_documents(TEXTS[:1])
    assert len(embedding_requests(api)) == 3


def test_client_error_is_not_retried(make, api, provider) -> None:
    api.queue(Fault(status=400))
    with pytest.raises(EncoderError, match=rf"^{provider.name}: request failed: HTTP 400"):
        make().encode_documents(TEXTS[:1])
    assert len(embedding_requests(api)) == 1


def test_too_long_retry_after_stops_retrying(make, api) -> None:
    api.queue(Fault(status=429, headers={"Retry-After": "120"}))
    with pytest.raises(EncoderError, match=r"retry after 120.0s, more than max_retry_after"):
        make(retry=RetryPolicy(max_retry_after=5)).encode_documents(TEXTS[:1])


def test_timeout_is_retried(make, api) -> None:
    api.queue(Delay(2.0))
    out = make(truncate_dim=256, timeout=0.5).encode_documents(TEXTS[:2])
    np.testing.assert_allclose(out, expected(api, TEXTS[:2], 256, 256), atol=1e-6)
    assert len(embedding_requests(api)) == 2


def test_dropped_connection_is_retried(make, api) -> None:
    api.queue(Disconnect())
    out = make(truncate_dim=256).encode_documents(TEXTS[:2])
    np.testing.assert_allclose(out, expected(api, TEXTS[:2], 256, 256), atol=1e-6)


@pytest.mark.parametrize("valid_json", [True, False])
def test_malformed_body_is_a_clear_error(make, api, provider, valid_json: bool) -> None:
    api.queue(Malformed(valid_json=valid_json))
    with pytest.raises(EncoderError, match=rf"^{provider.name}: "):
        make(retry=RetryPolicy(max_retries=0)).encode_documents(TEXTS[:2])


def test_wrong_length_vector_names_provider_and_row(make, api, provider) -> None:
    api.queue(WrongLength(delta=-1))
    with pytest.raises(
        EncoderError, match=rf"^{provider.name}: .*length 255 in row 0, expected 256"
    ):
        make(truncate_dim=256).encode_documents(TEXTS[:2])


def test_wrong_vector_count_is_an_error(make, api, provider) -> None:
    api.queue(WrongCount(delta=-1))
    with pytest.raises(
        EncoderError, match=rf"^{provider.name}: returned 1 embeddings for a batch of 2"
    ):
        make().encode_documents(TEXTS[:2])


index_providers = pytest.mark.parametrize(
    "provider", [PROVIDERS[0], PROVIDERS[2]], ids=["openai", "voyage"]
)


@index_providers
def test_items_out_of_order_are_put_back_by_their_index(make, api) -> None:
    api.queue(Shuffle(), Shuffle(order=(2, 0, 1)))
    encoder = make(truncate_dim=256)
    np.testing.assert_allclose(
        encoder.encode_documents(TEXTS[:3]), expected(api, TEXTS[:3], 256, 256), atol=1e-6
    )
    np.testing.assert_allclose(
        asyncio.run(encoder.aencode_queries(TEXTS[:3])),
        expected(api, TEXTS[:3], 256, 256),
        atol=1e-6,
    )
    assert api.pending == 0


@index_providers
@pytest.mark.parametrize(
    ("indexes", "message"),
    [
        ((0, 0, 2), r"returned index 0 twice for a batch of 3 texts"),
        (
            (0, 1, 3),
            r"returned an embedding with index 3 for a batch of 3 texts \(indexes must be 0\.\.2\)",
        ),
        ((-1, 0, 1), r"returned an embedding with index -1 for a batch of 3"),
    ],
)
def test_indexes_that_are_not_each_position_once_are_an_error(
    make, api, provider, indexes, message
) -> None:
    api.queue(Shuffle(order=(0, 1, 2), indexes=indexes))
    with pytest.raises(EncoderError, match=rf"^{provider.name}: {message}"):
        make(retry=RetryPolicy(max_retries=0)).encode_documents(TEXTS[:3])


def test_non_finite_vector_names_provider_and_row(make, api, provider) -> None:
    api.queue(NonFinite(row=1, col=3))
    with pytest.raises(EncoderError, match=rf"^{provider.name}: .*non-finite.* row 1"):
        make(truncate_dim=256).encode_documents(TEXTS[:3])


def test_row_numbers_count_across_batches(make, api, provider) -> None:
    api.queue(Delay(0), NonFinite(row=0))
    with pytest.raises(EncoderError, match=rf"^{provider.name}: .*non-finite.* row 2"):
        make(batch_size=2).encode_documents(TEXTS[:4])


def test_a_failed_batch_fails_the_whole_call(make, api) -> None:
    api.queue(Delay(0), Fault(status=400))
    encoder = make(batch_size=2)
    with pytest.raises(EncoderError):
        encoder.encode_documents(TEXTS)
    assert len(embedding_requests(api)) == 2  # stopped at the failed batch

    api.queue(Delay(0), Fault(status=400))
    with pytest.raises(EncoderError):
        asyncio.run(encoder.aencode_documents(TEXTS))


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        (["fine", 7], TypeError, r"texts\[1\] must be a str, got int"),
        (["fine", ""], ValueError, r"texts\[1\] is an empty string"),
    ],
)
def test_bad_input_sends_no_request(make, api, texts, error, message) -> None:
    encoder = make()
    with pytest.raises(error, match=message):
        encoder.encode_documents(texts)
    # a query batch names its items as queries
    with pytest.raises(error, match=message.replace("texts", "queries")):
        asyncio.run(encoder.aencode_queries(texts))
    assert api.requests == []


def test_empty_list_sends_no_request(make, api) -> None:
    out = make(truncate_dim=64).encode_documents([])
    assert out.shape == (0, 64) and out.dtype == np.float32
    assert asyncio.run(make().aencode_queries([])).shape[0] == 0
    assert api.requests == []


def test_unknown_model_needs_full_dim(make) -> None:
    with pytest.raises(ValueError, match=r"unknown .* model 'my-model': pass full_dim="):
        make(model="my-model")


def test_truncate_dim_above_full_dim_names_the_limit(make, provider) -> None:
    with pytest.raises(ValueError, match=rf"truncate_dim=5000 .* dimension {provider.full_dim}"):
        make(truncate_dim=5000)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive int, got 0"),
        ({"max_concurrency": -2}, ValueError, r"max_concurrency must be a positive int, got -2"),
        ({"batch_size": 2.5}, ValueError, r"batch_size must be a positive int, got 2\.5"),
        ({"timeout": 0}, ValueError, r"timeout=0 must be a finite number of seconds, more than 0"),
        ({"timeout": float("nan")}, ValueError, r"timeout=nan must be a finite number"),
        ({"full_dim": 0, "model": "m"}, ValueError, r"full_dim must be a positive int, got 0"),
        ({"retry": 3}, TypeError, r"retry must be a RetryPolicy or None, got int"),
    ],
)
def test_constructor_arguments_are_checked_naming_the_value(make, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        make(**kwargs)


@pytest.mark.parametrize("field", ["initial_backoff", "max_backoff", "max_retry_after"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_retry_policy_refuses_nan_infinite_and_negative_seconds(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field}={value!r} must be a finite number of seconds"):
        RetryPolicy(**{field: value})


def test_retry_policy_refuses_a_non_number() -> None:
    with pytest.raises(TypeError, match=r"initial_backoff must be a number of seconds, got str"):
        RetryPolicy(initial_backoff="1")


def test_batch_size_above_the_api_limit_is_rejected(make, provider) -> None:
    limit = provider.cls.MAX_BATCH_SIZE
    with pytest.raises(ValueError, match=rf"batch_size={limit + 1} exceeds .* limit of {limit}"):
        make(batch_size=limit + 1)


# -- OpenAI -----------------------------------------------------------------------------------
openai_only = pytest.mark.parametrize("provider", [PROVIDERS[0]], ids=["openai"])


@openai_only
def test_openai_sends_dimensions_for_text_embedding_3(make, api) -> None:
    make(truncate_dim=300).encode_documents(TEXTS[:1])
    make().encode_documents(TEXTS[:1])
    first, second = embedding_requests(api)
    assert first["dimensions"] == 300 and first["model"] == "text-embedding-3-small"
    assert "dimensions" not in second


@openai_only
def test_openai_ada_is_truncated_on_the_client_with_a_warning(make, api) -> None:
    with pytest.warns(UserWarning, match=r"not Matryoshka-trained"):
        encoder = make(model="text-embedding-ada-002", truncate_dim=64)
    out = encoder.encode_documents(TEXTS[:2])
    (body,) = embedding_requests(api)
    assert "dimensions" not in body
    np.testing.assert_allclose(out, expected(api, TEXTS[:2], 1536, 64), atol=1e-6)


@openai_only
def test_openai_matryoshka_models_do_not_warn(make) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(truncate_dim=64)


@openai_only
def test_openai_accepts_a_ready_client(api) -> None:
    import openai

    client = openai.OpenAI(api_key="k", base_url=api.openai_base_url, max_retries=3)
    encoder = OpenAIEncoder(truncate_dim=128, client=client, retry=FAST_RETRY)
    api.queue(Fault(status=500))
    out = encoder.encode_documents(TEXTS[:1])
    assert len(embedding_requests(api)) == 2  # the client's own retries are off; ours apply
    np.testing.assert_allclose(out, expected(api, TEXTS[:1], 128, 128), atol=1e-6)
    # async with only a sync client runs it in a worker thread
    np.testing.assert_allclose(asyncio.run(encoder.aencode_queries(TEXTS[:1])), out, atol=1e-6)


@openai_only
def test_openai_compatible_server_with_custom_model(make, api) -> None:
    encoder = make(model="bge-m3", full_dim=1536, native_dims=False, truncate_dim=32)
    out = encoder.encode_documents(TEXTS[:1])
    assert "dimensions" not in embedding_requests(api)[0]
    np.testing.assert_allclose(out, expected(api, TEXTS[:1], 1536, 32), atol=1e-6)


# -- Cohere -----------------------------------------------------------------------------------
cohere_only = pytest.mark.parametrize("provider", [PROVIDERS[1]], ids=["cohere"])


@cohere_only
def test_cohere_sends_input_type_and_next_supported_dimension(make, api) -> None:
    encoder = make(truncate_dim=200)
    docs = encoder.encode_documents(TEXTS[:2])
    queries = asyncio.run(encoder.aencode_queries(TEXTS[:2]))
    doc_body, query_body = embedding_requests(api)
    assert doc_body["input_type"] == "search_document"
    assert query_body["input_type"] == "search_query"
    assert doc_body["output_dimension"] == query_body["output_dimension"] == 256
    assert doc_body["embedding_types"] == ["float"]
    assert docs.shape == (2, 200)
    np.testing.assert_allclose(docs, expected(api, TEXTS[:2], 256, 200), atol=1e-6)
    np.testing.assert_allclose(queries, docs, atol=1e-6)


# -- Voyage -----------------------------------------------------------------------------------
voyage_only = pytest.mark.parametrize("provider", [PROVIDERS[2]], ids=["voyage"])


@voyage_only
def test_voyage_sends_input_type_and_next_supported_dimension(make, api) -> None:
    encoder = make(truncate_dim=300)
    docs = encoder.encode_documents(TEXTS[:2])
    encoder.encode_queries(TEXTS[:2])
    doc_body, query_body = embedding_requests(api)
    assert doc_body["input_type"] == "document" and query_body["input_type"] == "query"
    assert doc_body["output_dimension"] == 512
    np.testing.assert_allclose(docs, expected(api, TEXTS[:2], 512, 300), atol=1e-6)


@voyage_only
def test_voyage_full_dim_sends_no_output_dimension(make, api) -> None:
    make(truncate_dim=1024).encode_documents(TEXTS[:1])
    assert embedding_requests(api)[0].get("output_dimension") is None


@voyage_only
def test_voyage_orders_a_ready_clients_answer_by_index(api) -> None:
    import voyageai

    client = voyageai.Client(api_key="k", base_url=api.voyage_base_url, max_retries=3)
    encoder = VoyageEncoder(truncate_dim=256, client=client, retry=FAST_RETRY)
    api.queue(Fault(status=500), Shuffle())
    out = encoder.encode_documents(TEXTS[:3])
    assert len(embedding_requests(api)) == 2  # the client's own retries are not used; ours are
    np.testing.assert_allclose(out, expected(api, TEXTS[:3], 256, 256), atol=1e-6)


FIXED_DIM_MODELS = {"cohere": ("embed-english-v3.0", 1024), "voyage": ("voyage-3-lite", 512)}


@pytest.mark.parametrize("provider", PROVIDERS[1:], ids=["cohere", "voyage"])
def test_a_fixed_dim_model_is_truncated_on_the_client(provider: Provider) -> None:
    model, full_dim = FIXED_DIM_MODELS[provider.name]
    with FakeEmbeddingAPI(full_dim=full_dim) as server:
        with pytest.warns(UserWarning, match=r"not Matryoshka-trained"):
            encoder = provider.cls(
                model, truncate_dim=64, api_key="k", base_url=provider.url(server)
            )
        out = encoder.encode_queries(TEXTS[:2])
        (body,) = embedding_requests(server)
        assert body.get("output_dimension") is None
        assert body["input_type"] in ("search_query", "query")
        np.testing.assert_allclose(out, expected(server, TEXTS[:2], full_dim, 64), atol=1e-6)


def test_a_projection_over_an_api_encoder_asks_for_full_vectors(
    make, api, provider, tmp_path
) -> None:
    from matryoshka_retrieval import MatryoshkaIndex
    from matryoshka_retrieval.projection import ProjectedEncoder, fit_projection

    corpus = [f"manual page {i} about {w}" for i in range(40) for w in ("files", "disks")]
    full = np.array([api.vector_for(t) for t in corpus], dtype=np.float32)
    projection = fit_projection(full, method="pca")
    encoder = ProjectedEncoder(make(truncate_dim=256), projection, truncate_dim=64)
    api.reset()
    out = encoder.encode_queries(corpus[:3])
    np.testing.assert_allclose(out, truncate(projection.apply(full[:3]), 64), atol=1e-5)
    for body in embedding_requests(api):  # the projection needs every dim: no server-side cut
        for key in ("dimensions", "output_dimension"):
            assert body.get(key) in (None, provider.full_dim), body
    # the index stores the full projected vectors and searches on their 32-dim prefix
    index = MatryoshkaIndex(ProjectedEncoder(make(), projection), coarse_dim=32, device="cpu")
    index.add_texts(corpus, ids=[str(i) for i in range(len(corpus))])
    assert index.search(corpus[7], k=1).ids == ["7"]
    index.save(tmp_path / "idx")
    reopened = MatryoshkaIndex.load(tmp_path / "idx", encoder=make())  # the bare API encoder
    assert isinstance(reopened.encoder, ProjectedEncoder)
    assert reopened.search(corpus[11], k=3).ids == index.search(corpus[11], k=3).ids
    assert provider.full_dim == projection.dim
