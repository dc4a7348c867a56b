"""Images through the hosted-API encoders (Cohere embed-v4.0, Voyage multimodal, Jina), with
their real clients against the local wire-format server: the request bodies each provider
documents, vectors in input order, and bad images refused before any request."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fake_api import FakeEmbeddingAPI, Fault, Malformed, image_key
from matryoshka_retrieval import (
    CohereEncoder,
    EncoderError,
    JinaEncoder,
    MatryoshkaIndex,
    RetryPolicy,
    VoyageEncoder,
    truncate,
)
from matryoshka_retrieval.encoders._api import APIEncoder

FAST_RETRY = RetryPolicy(max_retries=2, initial_backoff=0.01, max_backoff=0.05)


@dataclass(frozen=True)
class Provider:
    name: str
    cls: type[APIEncoder]
    model: str
    text_model: str  # a model of the same provider that embeds texts only
    full_dim: int
    truncate_dim: int
    url: Callable[[FakeEmbeddingAPI], str]
    path: str  # where images are sent


PROVIDERS = [
    Provider(
        "cohere", CohereEncoder, "embed-v4.0", "embed-english-v3.0", 1536, 256,
        lambda a: a.cohere_base_url, "/v2/embed",
    ),
    Provider(
        "voyage", VoyageEncoder, "voyage-multimodal-3.5", "voyage-3.5", 1024, 256,
        lambda a: a.voyage_base_url, "/v1/multimodalembeddings",
    ),
    Provider(
        "jina", JinaEncoder, "jina-clip-v2", "jina-embeddings-v3", 1024, 64,
        lambda a: f"{a.base_url}/v1", "/v1/embeddings",
    ),
]  # fmt: skip


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
        kwargs.setdefault("truncate_dim", provider.truncate_dim)
        model = kwargs.pop("model", provider.model)
        return provider.cls(model, api_key="test-key", base_url=provider.url(api), **kwargs)

    return build


def _png_base64(path: Path) -> str:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _expected(api: FakeEmbeddingAPI, provider: Provider, keys: list[str]) -> np.ndarray:
    dim = provider.truncate_dim
    return truncate(np.array([api.vector_for(key, dim) for key in keys], dtype=np.float32), dim)


def _image_parts(provider: Provider, body: dict[str, Any]) -> list[Any]:
    """The image part of each input of a request, in the provider's documented shape."""
    if provider.name == "jina":
        return body["input"]
    return [item["content"][0] for item in body["inputs"]]


def test_images_are_sent_as_each_provider_documents(make, api, provider, image_files) -> None:
    encoder = make()
    assert encoder.supports_images
    vectors = encoder.encode_images(image_files[:2])
    data = [_png_base64(p) for p in image_files[:2]]
    np.testing.assert_allclose(
        vectors, _expected(api, provider, [image_key(d) for d in data]), atol=1e-6
    )
    (request,) = api.requests
    assert request.path == provider.path
    body = request.json
    uris = [f"data:image/png;base64,{d}" for d in data]
    if provider.name == "cohere":
        assert _image_parts(provider, body) == [
            {"type": "image_url", "image_url": {"url": uri}} for uri in uris
        ]
        assert body["input_type"] == "search_document" and "texts" not in body
        assert body["output_dimension"] == 256
    elif provider.name == "voyage":
        assert _image_parts(provider, body) == [
            {"type": "image_base64", "image_base64": uri} for uri in uris
        ]
        assert body["input_type"] == "document" and body["output_dimension"] == 256
    else:
        assert _image_parts(provider, body) == [{"image": d} for d in data]
        assert body["task"] == "retrieval.passage" and body["dimensions"] == 64
        assert request.headers["authorization"] == "Bearer test-key"


def test_a_mixed_batch_sends_texts_and_images_and_keeps_order(
    make, api, provider, image_files
) -> None:
    encoder = make()
    vectors = encoder.encode_queries(["a red stamp", image_files[3], "an invoice"])
    keys = ["a red stamp", image_key(_png_base64(image_files[3])), "an invoice"]
    np.testing.assert_allclose(vectors, _expected(api, provider, keys), atol=1e-6)
    texts, images = api.requests
    if provider.name == "cohere":
        assert texts.json["texts"] == ["a red stamp", "an invoice"]
        assert {texts.json["input_type"], images.json["input_type"]} == {"search_query"}
    elif provider.name == "voyage":  # a multimodal model embeds its texts on the same endpoint
        assert texts.path == provider.path
        assert texts.json["inputs"][0] == {"content": [{"type": "text", "text": "a red stamp"}]}
        assert {texts.json["input_type"], images.json["input_type"]} == {"query"}
    else:
        assert texts.json["input"] == [{"text": "a red stamp"}, {"text": "an invoice"}]
        assert {texts.json["task"], images.json["task"]} == {"retrieval.query"}


def test_text_and_image_queries_search_one_index_of_images(make, image_files) -> None:
    index = MatryoshkaIndex(make(), coarse_dim=32)
    index.add_images(image_files, ids=[f"img{i}" for i in range(len(image_files))])
    assert index.search(image_files[5], k=1)[0].id == "img5"
    assert index.search(image_files[5], k=1)[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(index.search("a scanned receipt", k=3)) == 3


def test_an_image_over_the_byte_limit_is_refused_before_any_request(
    make, api, provider, image_files, monkeypatch
) -> None:
    monkeypatch.setattr(provider.cls, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(ValueError, match=r"images\[1\] \(48x40\) is .* bytes even as JPEG, over"):
        make().encode_images([Image.new("RGB", (2, 2)), image_files[0]])
    assert api.requests == []


def test_an_image_too_large_as_png_is_sent_as_jpeg(
    make, api, provider, image_files, monkeypatch
) -> None:
    png = len(base64.b64decode(_png_base64(image_files[0])))
    monkeypatch.setattr(provider.cls, "MAX_IMAGE_BYTES", png - 1)
    buffer = io.BytesIO()
    Image.open(image_files[0]).convert("RGB").save(buffer, format="JPEG", quality=90)
    assert len(buffer.getvalue()) < png - 1  # so the JPEG fits
    jpeg = base64.b64encode(buffer.getvalue()).decode("ascii")
    vectors = make().encode_images([image_files[0]])
    np.testing.assert_allclose(vectors, _expected(api, provider, [image_key(jpeg)]), atol=1e-6)
    part = _image_parts(provider, api.requests[0].json)[0]
    sent = part.get("image") or part.get("image_base64") or part["image_url"]["url"]
    assert sent in (jpeg, f"data:image/jpeg;base64,{jpeg}")


def test_an_image_over_the_pixel_limit_is_refused_before_any_request(
    make, api, image_files
) -> None:
    encoder = make()
    encoder.max_image_pixels = 1000
    with pytest.raises(ValueError, match=r"images\[0\] .* 48x40 = 1,920 pixels, over the limit"):
        encoder.encode_images([image_files[0]])
    assert api.requests == []


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (b"\x89PNG but not really", ValueError, r"images\[1\] .* is not an image Pillow can read"),
        (Path("/no/such/scan.png"), ValueError, r"images\[1\]: no image file at"),
        (None, TypeError, r"images\[1\] must be an image"),
    ],
)
def test_a_bad_image_is_named_and_nothing_is_sent(
    make, api, image_files, bad, error, match
) -> None:
    with pytest.raises(error, match=match):
        make().encode_images([image_files[0], bad])
    assert api.requests == []


def test_a_text_only_model_refuses_images_before_any_request(make, api, provider, image_files):
    encoder = make(model=provider.text_model, truncate_dim=None)
    assert not encoder.supports_images
    with pytest.raises(TypeError, match=r"texts\[0\] is an image .*embeds texts only"):
        encoder.encode_documents([image_files[0]])
    assert api.requests == []


def test_async_image_encoding_matches_sync(make, image_files) -> None:
    encoder = make()
    sync = encoder.encode_images(image_files[:3])
    np.testing.assert_allclose(asyncio.run(encoder.aencode_images(image_files[:3])), sync)


def test_images_are_batched_within_batch_size(make, api, image_files) -> None:
    vectors = make(batch_size=3).encode_images(image_files)
    assert len(api.requests) == 3 and vectors.shape[0] == len(image_files)


def test_jina_needs_an_api_key(monkeypatch) -> None:
    monkeypatch.delenv("JINA_API_KEY", raising=False)
    with pytest.raises(ValueError, match="JinaEncoder needs an API key"):
        JinaEncoder("jina-clip-v2")


def test_jina_texts_use_the_query_and_passage_tasks() -> None:
    with FakeEmbeddingAPI(full_dim=1024) as api:
        encoder = JinaEncoder("jina-embeddings-v3", api_key="k", base_url=f"{api.base_url}/v1")
        vectors = encoder.encode_queries(["where is my parcel?"])
        body = api.requests[0].json
        assert body["task"] == "retrieval.query" and "dimensions" not in body
        assert body["model"] == "jina-embeddings-v3" and body["normalized"] is True
        np.testing.assert_allclose(vectors[0], api.vector_for("where is my parcel?"), atol=1e-6)
        encoder.encode_documents(["the parcel is at the depot"])
        assert api.requests[1].json["task"] == "retrieval.passage"


def test_jina_retries_a_rate_limit_and_refuses_a_malformed_answer() -> None:
    with FakeEmbeddingAPI(full_dim=1024) as api:
        encoder = JinaEncoder(
            "jina-clip-v2", api_key="k", base_url=f"{api.base_url}/v1", retry=FAST_RETRY
        )
        api.queue(Fault(429, headers={"Retry-After": "0"}))
        assert encoder.encode_queries(["x"]).shape == (1, 1024)
        assert len(api.requests) == 2
        api.queue(Malformed())
        with pytest.raises(EncoderError, match="jina: returned a malformed response"):
            encoder.encode_queries(["x"])
        api.queue(Fault(400))
        with pytest.raises(EncoderError, match=r"jina: request failed: .*400"):
            asyncio.run(encoder.aencode_queries(["x"]))
