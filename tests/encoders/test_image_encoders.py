"""Images through the encoders: a tiny random CLIP model loaded by sentence-transformers."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matryoshka_retrieval import SentenceTransformerEncoder, as_encoder, truncate
from matryoshka_retrieval.images import load_image
from matryoshka_retrieval.projection import ProjectedEncoder, fit_projection
from tiny_clip import PROJECTION_DIM, noise_images

TEXTS = ["a photo of a cat", "a screenshot of a terminal"]


def _png(image: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    return buffer.getvalue()


def test_a_clip_model_embeds_texts_and_images_into_one_space(clip_encoder) -> None:
    assert clip_encoder.supports_images
    images = clip_encoder.encode_images(noise_images(3))
    texts = clip_encoder.encode_queries(TEXTS)
    assert images.shape == (3, PROJECTION_DIM) and texts.shape == (2, PROJECTION_DIM)
    assert images.dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_image_vectors_equal_the_model_own_output(clip_encoder) -> None:
    images = noise_images(2)
    reference = clip_encoder.model.encode(images, convert_to_numpy=True)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(clip_encoder.encode_images(images), reference, atol=1e-5)


def test_truncated_image_vectors_are_the_renormalised_prefix(clip_encoder) -> None:
    images = noise_images(3)
    full = clip_encoder.encode_images(images)
    short = clip_encoder.with_truncate_dim(16).encode_images(images)
    assert short.shape == (3, 16)
    np.testing.assert_allclose(short, truncate(full, 16), atol=1e-6)


def test_a_path_bytes_a_file_and_a_pil_image_give_one_vector(clip_encoder, image_files) -> None:
    path = image_files[0]
    data = path.read_bytes()
    with path.open("rb") as handle:
        vectors = clip_encoder.encode_images(
            [path, str(path), data, io.BytesIO(data), handle, Image.open(path)]
        )
    np.testing.assert_allclose(vectors, np.repeat(vectors[:1], 6, axis=0), atol=1e-5)


def test_a_mixed_batch_keeps_input_order(clip_encoder, image_files) -> None:
    mixed = clip_encoder.encode_documents([TEXTS[0], image_files[0], TEXTS[1], image_files[1]])
    texts = clip_encoder.encode_documents(TEXTS)
    images = clip_encoder.encode_images(image_files[:2])
    np.testing.assert_allclose(mixed[[0, 2]], texts, atol=1e-5)
    np.testing.assert_allclose(mixed[[1, 3]], images, atol=1e-5)


def test_a_text_that_looks_like_an_image_path_stays_a_text(clip_encoder, image_files) -> None:
    as_text = clip_encoder.encode_documents([str(image_files[0])])
    as_image = clip_encoder.encode_images([str(image_files[0])])
    reference = clip_encoder.model.encode([{"text": str(image_files[0])}])
    np.testing.assert_allclose(as_text[0], reference[0] / np.linalg.norm(reference[0]), atol=1e-5)
    assert not np.allclose(as_text, as_image, atol=1e-3)


def test_async_image_encoding_matches_sync(clip_encoder, image_files) -> None:
    sync = clip_encoder.encode_queries([image_files[2], "a cat"])
    result = asyncio.run(clip_encoder.aencode_queries([image_files[2], "a cat"]))
    np.testing.assert_allclose(result, sync, atol=1e-5)
    images = asyncio.run(clip_encoder.aencode_images([image_files[2]]))
    np.testing.assert_allclose(images[0], sync[0], atol=1e-5)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (b"not an image at all", ValueError, r"images\[1\] \(19 bytes starting b'not an"),
        (b"", ValueError, r"images\[1\] is empty"),
        (Path("/no/such/picture.png"), ValueError, r"images\[1\]: no image file at"),
        (3.5, TypeError, r"images\[1\] must be an image .* got float: 3.5"),
    ],
)
def test_a_bad_image_is_named_before_anything_is_embedded(
    clip_encoder, image_files, bad, error, match
) -> None:
    calls: list[int] = []
    original = clip_encoder.model.encode
    clip_encoder.model.encode = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with pytest.raises(error, match=match):
            clip_encoder.encode_images([image_files[0], bad])
    finally:
        clip_encoder.model.encode = original
    assert calls == []


def test_a_truncated_file_is_refused(clip_encoder, image_files, tmp_path) -> None:
    cut = tmp_path / "cut.png"
    cut.write_bytes(image_files[0].read_bytes()[:200])
    with pytest.raises(ValueError, match=r"images\[0\] .*cut.png.* is not an image Pillow can"):
        clip_encoder.encode_images([cut])


def test_an_image_over_the_pixel_limit_is_refused(clip_path, image_files) -> None:
    encoder = SentenceTransformerEncoder(clip_path, device="cpu")
    encoder.max_image_pixels = 100
    with pytest.raises(ValueError, match=r"48x40 = 1,920 pixels, over the limit of 100"):
        encoder.encode_images([image_files[0]])


def test_a_text_model_refuses_an_image_by_name(minilm_encoder, image_files) -> None:
    assert not minilm_encoder.supports_images
    with pytest.raises(TypeError, match=r"texts\[1\] is an image .*embeds texts only"):
        minilm_encoder.encode_documents(["fine", image_files[0]])
    with pytest.raises(TypeError, match=r"images\[0\] is an image .*embeds texts only"):
        minilm_encoder.encode_images([image_files[0]])


def test_a_single_image_must_be_wrapped_in_a_list(clip_encoder, image_files) -> None:
    with pytest.raises(TypeError, match="got a single PngImageFile; wrap it in a list"):
        clip_encoder.encode_images(Image.open(image_files[0]))
    with pytest.raises(TypeError, match="got a single bytes; wrap it in a list"):
        clip_encoder.encode_images(image_files[0].read_bytes())


def test_load_image_converts_to_rgb() -> None:
    image = load_image(_png(Image.new("RGBA", (5, 4), (255, 0, 0, 128))), "x")
    assert image.mode == "RGB" and image.size == (5, 4)


def test_a_projected_clip_encoder_projects_images_too(clip_encoder) -> None:
    sample = np.vstack(
        [
            clip_encoder.encode_images(noise_images(40, seed=3)),
            clip_encoder.encode_documents([f"caption number {i}" for i in range(40)]),
        ]
    )
    projection = fit_projection(sample, method="pca")
    projected = ProjectedEncoder(clip_encoder, projection, truncate_dim=8)
    images = noise_images(2, seed=4)
    expected = truncate(projection.apply(clip_encoder.encode_images(images)), 8)
    assert projected.supports_images
    np.testing.assert_allclose(projected.encode_images(images), expected, atol=1e-5)


def test_a_llama_index_multimodal_embedding_embeds_images_through_as_encoder(
    clip_encoder, image_files
) -> None:
    from llama_index.core.embeddings import MultiModalEmbedding
    from PIL import Image as PILImage

    model = clip_encoder.model

    class ClipModel(MultiModalEmbedding):
        """A LlamaIndex multimodal embedding over the tiny CLIP model (paths or buffers)."""

        def _get_query_embedding(self, query: str) -> list[float]:
            return model.encode([{"text": query}])[0].tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_query_embedding(text)

        def _get_image_embedding(self, img_file_path) -> list[float]:
            return model.encode([PILImage.open(img_file_path).convert("RGB")])[0].tolist()

        async def _aget_image_embedding(self, img_file_path) -> list[float]:
            return self._get_image_embedding(img_file_path)

    encoder = as_encoder(ClipModel(model_name="clip"), truncate_dim=16)
    assert encoder.supports_images
    vectors = encoder.encode_documents([image_files[0], "a caption"])
    expected = truncate(clip_encoder.encode_documents([image_files[0], "a caption"]), 16)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    images = asyncio.run(encoder.aencode_images(image_files[:2]))
    np.testing.assert_allclose(
        images, truncate(clip_encoder.encode_images(image_files[:2]), 16), atol=1e-5
    )


def test_a_text_only_llama_index_embedding_refuses_images(image_files) -> None:
    from llama_index.core.embeddings import MockEmbedding

    encoder = as_encoder(MockEmbedding(embed_dim=8))
    assert not encoder.supports_images
    with pytest.raises(TypeError, match=r"images\[0\] is an image .*embeds texts only"):
        encoder.encode_images(image_files[:1])


def test_langchain_embeddings_with_embed_image_embed_images_through_as_encoder(
    clip_encoder, image_files
) -> None:
    from langchain_core.embeddings import Embeddings
    from PIL import Image as PILImage

    model = clip_encoder.model
    seen: list[str] = []

    class ClipEmbeddings(Embeddings):
        """LangChain embeddings with the multimodal ``embed_image(uris)`` method."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.encode([{"text": t} for t in texts]).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

        def embed_image(self, uris: list[str]) -> list[list[float]]:
            seen.extend(uris)
            return model.encode([PILImage.open(u).convert("RGB") for u in uris]).tolist()

    encoder = as_encoder(ClipEmbeddings(), truncate_dim=16)
    assert encoder.supports_images
    vectors = encoder.encode_queries(["a caption", image_files[2]])
    expected = truncate(clip_encoder.encode_queries(["a caption", image_files[2]]), 16)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert len(seen) == 1 and not Path(seen[0]).exists()  # the temporary file is gone
