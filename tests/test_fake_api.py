"""Smoke tests: the real OpenAI, Cohere and Voyage SDKs parse what ``fake_api`` serves.

They also pin down, per SDK, which exception surfaces for each scripted fault and where its
status code and ``Retry-After`` header live, which the encoders rely on.
"""

from __future__ import annotations

import base64
import inspect
import json
import math
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import cohere
import httpx
import openai
import pytest
import voyageai.error
from cohere import EmbeddingType
from cohere.core.api_error import ApiError as CohereApiError
from voyageai.client import Client as VoyageClient
from voyageai.client_async import AsyncClient as VoyageAsyncClient

from fake_api import (
    Delay,
    Disconnect,
    Dtype,
    FakeEmbeddingAPI,
    Fault,
    Malformed,
    NonFinite,
    Script,
    Shuffle,
    WrongCount,
    WrongLength,
)

TEXTS = ["the quick brown fox", "jumps over", "the lazy dog"]
DIM = 256
OPENAI_MODEL = "text-embedding-3-small"
COHERE_MODEL = "embed-v4.0"
VOYAGE_MODEL = "voyage-3.5"
KEY = "test-key"

Vectors = list[list[Any]]
Embed = Callable[[FakeEmbeddingAPI, float], Vectors | Awaitable[Vectors]]


# --------------------------------------------------------------------------- SDK adapters
# Each embeds TEXTS at DIM with SDK retries disabled and returns the vectors in order.


def openai_sync(api: FakeEmbeddingAPI, timeout: float = 10.0) -> Vectors:
    client = openai.OpenAI(
        api_key=KEY, base_url=api.openai_base_url, max_retries=0, timeout=timeout
    )
    response = client.embeddings.create(model=OPENAI_MODEL, input=TEXTS, dimensions=DIM)
    return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]


async def openai_async(api: FakeEmbeddingAPI, timeout: float = 10.0) -> Vectors:
    client = openai.AsyncOpenAI(
        api_key=KEY, base_url=api.openai_base_url, max_retries=0, timeout=timeout
    )
    response = await client.embeddings.create(model=OPENAI_MODEL, input=TEXTS, dimensions=DIM)
    return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]


COHERE_REQUEST: dict[str, Any] = {
    "texts": TEXTS,
    "model": COHERE_MODEL,
    "input_type": "search_document",
    "embedding_types": ["float"],
    "output_dimension": DIM,
}


def cohere_sync(api: FakeEmbeddingAPI, timeout: float = 10.0) -> Vectors:
    client = cohere.ClientV2(
        api_key=KEY, base_url=api.cohere_base_url, max_retries=0, timeout=timeout
    )
    return client.embed(**COHERE_REQUEST).embeddings.float_ or []


async def cohere_async(api: FakeEmbeddingAPI, timeout: float = 10.0) -> Vectors:
    client = cohere.AsyncClientV2(
        api_key=KEY, base_url=api.cohere_base_url, max_retries=0, timeout=timeout
    )
    return (await client.embed(**COHERE_REQUEST)).embeddings.float_ or []


def voyage_sync(api: FakeEmbeddingAPI, timeout: float = 10.0) -> Vectors:
    client = VoyageClient(api_key=KEY, base_url=api.voyage_base_url, max_retries=0, timeout=timeout)
    result = client.embed(TEXTS, model=VOYAGE_MODEL, input_type="document", output_dimension=DIM)
    return result.embeddings


async def voyage_async(api: FakeEmbeddingAPI, timeout: float = 10.0) -> Vectors:
    client = VoyageAsyncClient(
        api_key=KEY, base_url=api.voyage_base_url, max_retries=0, timeout=timeout
    )
    result = await client.embed(
        TEXTS, model=VOYAGE_MODEL, input_type="document", output_dimension=DIM
    )
    return result.embeddings


ADAPTERS: dict[str, Embed] = {
    "openai": openai_sync,
    "openai-async": openai_async,
    "cohere": cohere_sync,
    "cohere-async": cohere_async,
    "voyage": voyage_sync,
    "voyage-async": voyage_async,
}


async def call(name: str, api: FakeEmbeddingAPI, timeout: float = 10.0) -> Vectors:
    result = ADAPTERS[name](api, timeout)
    if inspect.isawaitable(result):
        return await result
    return result


def sdk_of(name: str) -> str:
    return name.removesuffix("-async")


def expected(api: FakeEmbeddingAPI, dim: int | None = DIM) -> Vectors:
    return [api.vector_for(text, dim) for text in TEXTS]


# --------------------------------------------------------------------------- the fake itself


def test_vector_for_is_deterministic_unit_norm_and_matryoshka() -> None:
    api = FakeEmbeddingAPI(full_dim=64)
    full = api.vector_for("hello")
    assert full == FakeEmbeddingAPI(full_dim=64).vector_for("hello")
    assert full != api.vector_for("hello!")
    assert full != FakeEmbeddingAPI(full_dim=64, seed=1).vector_for("hello")
    assert len(full) == 64
    assert math.isclose(math.fsum(v * v for v in full), 1.0, rel_tol=1e-6)
    short = api.vector_for("hello", 16)
    assert math.isclose(math.fsum(v * v for v in short), 1.0, rel_tol=1e-6)
    scale = short[0] / full[0]
    assert short == pytest.approx([v * scale for v in full[:16]], rel=1e-6)
    assert list(struct.unpack("<16f", struct.pack("<16f", *short))) == short  # float32-exact
    with pytest.raises(ValueError):
        api.vector_for("hello", 65)


def test_quantized_for() -> None:
    api = FakeEmbeddingAPI(full_dim=20)
    vector = api.vector_for("x")
    int8 = api.quantized_for("x", dtype="int8")
    assert max(abs(i) for i in int8) == 127
    assert all((i > 0) == (v > 0) for i, v in zip(int8, vector, strict=True) if i)
    assert api.quantized_for("x", dtype="uint8") == [i + 128 for i in int8]
    ubinary = api.quantized_for("x", dtype="ubinary")
    assert len(ubinary) == 3  # 20 bits padded to 3 bytes
    assert ubinary[0] >> 7 == (vector[0] > 0)
    assert api.quantized_for("x", dtype="binary") == [b - 128 for b in ubinary]


def test_records_requests_and_queues_in_fifo_order(fake_api: FakeEmbeddingAPI) -> None:
    fake_api.queue(Fault(503), Fault(429))
    assert fake_api.pending == 2
    statuses = []
    for _ in range(3):
        response = httpx.post(
            f"{fake_api.base_url}/v1/embeddings",
            json={"model": "m", "input": ["a"], "encoding_format": "float"},
            headers={"Authorization": "Bearer abc"},
        )
        statuses.append(response.status_code)
    assert statuses == [503, 429, 200]
    assert fake_api.pending == 0
    first = fake_api.requests[0]
    assert (first.method, first.path, first.provider) == ("POST", "/v1/embeddings", "openai")
    assert first.headers["authorization"] == "Bearer abc"
    assert first.json == {"model": "m", "input": ["a"], "encoding_format": "float"}
    assert httpx.post(f"{fake_api.base_url}/nowhere", json={}).status_code == 404
    fake_api.reset()
    assert fake_api.requests == []


def test_invalid_requests_get_400(fake_api: FakeEmbeddingAPI) -> None:
    url = f"{fake_api.base_url}/v1/embeddings"
    assert httpx.post(url, json={"model": "m", "input": []}).status_code == 400
    assert httpx.post(url, json={"model": "m", "input": "a", "dimensions": 4096}).status_code == 400
    cohere_url = f"{fake_api.base_url}/v2/embed"
    body = {"model": "m", "texts": ["a"], "input_type": "search_query", "embedding_types": ["f"]}
    assert httpx.post(cohere_url, json=body).status_code == 400


def test_stop_ends_a_delay_early() -> None:
    api = FakeEmbeddingAPI().start()
    api.queue(Delay(30))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        openai_sync(api, timeout=0.2)
    api.stop()
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- OpenAI


@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_openai_sync(fake_api: FakeEmbeddingAPI, encoding_format: Literal["float"] | None) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=fake_api.openai_base_url, max_retries=0)
    response = client.embeddings.create(
        model=OPENAI_MODEL,
        input=TEXTS,
        dimensions=DIM,
        encoding_format=encoding_format or openai.omit,
    )
    assert [item.embedding for item in response.data] == expected(fake_api)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert response.model == OPENAI_MODEL
    assert response.usage.total_tokens > 0
    request = fake_api.requests[-1]
    assert request.path == "/v1/embeddings"
    assert request.provider == "openai"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["input"] == TEXTS
    assert request.json["dimensions"] == DIM
    # The SDK asks for base64 unless told otherwise, and decodes it transparently.
    assert request.json["encoding_format"] == (encoding_format or "base64")


def test_openai_explicit_base64_is_left_encoded(fake_api: FakeEmbeddingAPI) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=fake_api.openai_base_url, max_retries=0)
    response = client.embeddings.create(
        model=OPENAI_MODEL, input=TEXTS, dimensions=DIM, encoding_format="base64"
    )
    raw = response.data[0].embedding
    assert isinstance(raw, str)
    assert list(struct.unpack(f"<{DIM}f", base64.b64decode(raw))) == fake_api.vector_for(
        TEXTS[0], DIM
    )


@pytest.mark.asyncio
async def test_openai_async(fake_api: FakeEmbeddingAPI) -> None:
    assert await openai_async(fake_api) == expected(fake_api)
    assert fake_api.requests[-1].json["dimensions"] == DIM


# --------------------------------------------------------------------------- Cohere


def test_cohere_v2_sync_all_embedding_types(fake_api: FakeEmbeddingAPI) -> None:
    client = cohere.ClientV2(api_key=KEY, base_url=fake_api.cohere_base_url, max_retries=0)
    types: list[EmbeddingType] = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    response = client.embed(
        texts=TEXTS,
        model=COHERE_MODEL,
        input_type="search_query",
        embedding_types=types,
        output_dimension=DIM,
    )
    embeddings = response.embeddings
    assert embeddings.float_ == expected(fake_api)
    kinds: list[Dtype] = ["int8", "uint8", "binary", "ubinary"]
    for kind in kinds:
        got = getattr(embeddings, kind)
        assert got == [fake_api.quantized_for(t, DIM, kind) for t in TEXTS]
    assert embeddings.base64 is not None
    decoded = struct.unpack(f"<{DIM}f", base64.b64decode(embeddings.base64[0]))
    assert list(decoded) == fake_api.vector_for(TEXTS[0], DIM)
    assert response.texts == TEXTS
    assert response.meta is not None and response.meta.billed_units is not None
    request = fake_api.requests[-1]
    assert (request.path, request.provider) == ("/v2/embed", "cohere-v2")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["texts"] == TEXTS
    assert request.json["model"] == COHERE_MODEL
    assert request.json["input_type"] == "search_query"
    assert request.json["embedding_types"] == types
    assert request.json["output_dimension"] == DIM


@pytest.mark.asyncio
async def test_cohere_v2_async(fake_api: FakeEmbeddingAPI) -> None:
    assert await cohere_async(fake_api) == expected(fake_api)
    assert fake_api.requests[-1].json["input_type"] == "search_document"
    assert fake_api.requests[-1].json["output_dimension"] == DIM


def test_cohere_v1_sync(fake_api: FakeEmbeddingAPI) -> None:
    client = cohere.Client(api_key=KEY, base_url=fake_api.cohere_base_url, max_retries=0)
    response = client.embed(texts=TEXTS, model="embed-english-v3.0", input_type="search_document")
    assert response.response_type == "embeddings_floats"
    assert response.embeddings == expected(fake_api, None)
    request = fake_api.requests[-1]
    assert (request.path, request.provider) == ("/v1/embed", "cohere-v1")
    assert request.json["input_type"] == "search_document"


# --------------------------------------------------------------------------- Voyage


def test_voyage_sync(fake_api: FakeEmbeddingAPI) -> None:
    assert voyage_sync(fake_api) == expected(fake_api)
    request = fake_api.requests[-1]
    assert (request.path, request.provider) == ("/v1/embeddings", "voyage")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json == {
        "input": TEXTS,
        "model": VOYAGE_MODEL,
        "input_type": "document",
        "truncation": True,
        "output_dtype": None,
        "output_dimension": DIM,
        "encoding_format": "base64",  # always asked for by the SDK, decoded transparently
    }


@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_voyage_output_dtypes(fake_api: FakeEmbeddingAPI, dtype: Dtype) -> None:
    client = VoyageClient(api_key=KEY, base_url=fake_api.voyage_base_url, max_retries=0)
    result = client.embed(TEXTS, model=VOYAGE_MODEL, output_dtype=dtype, output_dimension=DIM)
    assert result.embeddings == [fake_api.quantized_for(t, DIM, dtype) for t in TEXTS]
    assert result.total_tokens > 0


@pytest.mark.asyncio
async def test_voyage_async(fake_api: FakeEmbeddingAPI) -> None:
    assert await voyage_async(fake_api) == expected(fake_api)
    assert fake_api.requests[-1].json["output_dimension"] == DIM
    assert fake_api.requests[-1].json["input_type"] == "document"


# --------------------------------------------------------------------------- faults


def retry_after(sdk: str, exc: BaseException) -> str | None:
    """Where each SDK keeps the response headers on its HTTP error."""
    if sdk == "openai":
        assert isinstance(exc, openai.APIStatusError)
        return exc.response.headers.get("retry-after")  # httpx2.Headers, case-insensitive
    if sdk == "cohere":
        assert isinstance(exc, CohereApiError) and exc.headers is not None
        return exc.headers.get("retry-after")  # plain dict, lower-cased names only
    assert isinstance(exc, voyageai.error.VoyageError)
    return exc.headers.get("Retry-After")  # requests/aiohttp mapping, case-insensitive


def status_of(sdk: str, exc: BaseException) -> int | None:
    attribute = "http_status" if sdk == "voyage" else "status_code"
    status: int | None = getattr(exc, attribute)
    return status


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ADAPTERS)
async def test_rate_limit_surfaces_with_retry_after(fake_api: FakeEmbeddingAPI, name: str) -> None:
    exceptions = {
        "openai": openai.RateLimitError,
        "cohere": cohere.TooManyRequestsError,
        "voyage": voyageai.error.RateLimitError,
    }
    sdk = sdk_of(name)
    fake_api.queue(Fault(429, headers={"Retry-After": "0.2"}))
    with pytest.raises(exceptions[sdk]) as info:
        await call(name, fake_api)
    assert status_of(sdk, info.value) == 429
    assert retry_after(sdk, info.value) == "0.2"
    assert len(fake_api.requests) == 1  # SDK retries are off
    assert await call(name, fake_api) == expected(fake_api)  # and then it recovers


# What each SDK raises for each fault, with its retries disabled.
FAULT_EXCEPTIONS: dict[str, dict[str, type[BaseException]]] = {
    "openai": {
        "500": openai.InternalServerError,
        "503": openai.InternalServerError,
        "timeout": openai.APITimeoutError,
        "disconnect": openai.APIConnectionError,
        "not_json": json.JSONDecodeError,
    },
    "cohere": {
        "500": cohere.InternalServerError,
        "503": cohere.ServiceUnavailableError,
        "timeout": httpx.ReadTimeout,
        "disconnect": httpx.RemoteProtocolError,
        "not_json": CohereApiError,
    },
    "voyage": {
        "500": voyageai.error.ServerError,
        "503": voyageai.error.ServiceUnavailableError,
        "timeout": voyageai.error.Timeout,
        "disconnect": voyageai.error.APIConnectionError,
        "not_json": voyageai.error.APIError,
    },
}
FAULTS: dict[str, Script] = {
    "500": Fault(500),
    "503": Fault(503),
    "timeout": Delay(2.0),
    "disconnect": Disconnect(),
    "not_json": Malformed(valid_json=False),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", ADAPTERS)
async def test_fault_exceptions(fake_api: FakeEmbeddingAPI, name: str, fault: str) -> None:
    sdk = sdk_of(name)
    fake_api.queue(FAULTS[fault])
    with pytest.raises(FAULT_EXCEPTIONS[sdk][fault]) as info:
        await call(name, fake_api, timeout=0.3)
    if fault in ("500", "503"):
        assert status_of(sdk, info.value) == int(fault)
    if fault == "not_json" and sdk != "openai":
        assert status_of(sdk, info.value) == 200
    assert len(fake_api.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ADAPTERS)
async def test_connection_refused(name: str) -> None:
    exceptions = {
        "openai": openai.APIConnectionError,
        "cohere": httpx.ConnectError,
        "voyage": voyageai.error.APIConnectionError,
    }
    api = FakeEmbeddingAPI().start()
    api.stop()  # its URLs now point at a closed port
    with pytest.raises(exceptions[sdk_of(name)]):
        await call(name, api, timeout=2.0)


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["openai", "openai-async", "voyage", "voyage-async"])
async def test_missing_embeddings(fake_api: FakeEmbeddingAPI, name: str) -> None:
    """A 200 JSON body without embeddings raises no API error, only a plain Python one."""
    fake_api.queue(Malformed())
    # OpenAI: raised by the SDK's base64 post-parser (only when encoding_format was defaulted;
    # with an explicit "float" it returns a response whose `data` is None).
    # Voyage: EmbeddingsObject reads `response.data` and raises AttributeError("data").
    error = ValueError if sdk_of(name) == "openai" else AttributeError
    with pytest.raises(error):
        await call(name, fake_api)


def test_missing_embeddings_cohere(fake_api: FakeEmbeddingAPI) -> None:
    """Cohere parses leniently: v2 returns ``embeddings=None``; v1's batch merge hits TypeError."""
    fake_api.queue(Malformed(), Malformed())
    v2 = cohere.ClientV2(api_key=KEY, base_url=fake_api.cohere_base_url, max_retries=0)
    response = v2.embed(texts=TEXTS, model=COHERE_MODEL, input_type="search_query")
    assert response.embeddings is None
    v1 = cohere.Client(api_key=KEY, base_url=fake_api.cohere_base_url, max_retries=0)
    with pytest.raises(TypeError):
        v1.embed(texts=TEXTS, model=COHERE_MODEL, input_type="search_query")


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ADAPTERS)
async def test_bad_vectors_pass_through_sdks(fake_api: FakeEmbeddingAPI, name: str) -> None:
    fake_api.queue(WrongLength(), WrongCount(), NonFinite(math.inf, row=1, col=5), NonFinite())
    assert [len(v) for v in await call(name, fake_api)] == [DIM - 1] * len(TEXTS)
    assert len(await call(name, fake_api)) == len(TEXTS) - 1
    vectors = await call(name, fake_api)
    assert vectors[1][5] == math.inf
    assert vectors[0] == fake_api.vector_for(TEXTS[0], DIM)
    assert math.isnan((await call(name, fake_api))[0][0])


def test_shuffle_reorders_items_and_keeps_or_relabels_their_index(
    fake_api: FakeEmbeddingAPI,
) -> None:
    """The Voyage SDK's ``embed`` drops ``index``: a shuffled answer comes back misaligned."""
    fake_api.queue(Shuffle(), Shuffle(order=(1, 0, 2), indexes=(0, 0, 2)))
    client = VoyageClient(api_key=KEY, base_url=fake_api.voyage_base_url, max_retries=0)
    result = client.embed(TEXTS, model=VOYAGE_MODEL, input_type="document", output_dimension=DIM)
    assert result.embeddings == expected(fake_api)[::-1]
    body = httpx.post(
        f"{fake_api.base_url}/v1/embeddings",
        json={"model": "m", "input": TEXTS, "dimensions": DIM},
    ).json()
    assert [item["index"] for item in body["data"]] == [0, 0, 2]
    assert body["data"][0]["embedding"] == fake_api.vector_for(TEXTS[1], DIM)
