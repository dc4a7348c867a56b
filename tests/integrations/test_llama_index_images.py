"""LlamaIndex with images: ImageNode / ImageDocument through the vector store and retriever,
and MatryoshkaEmbedding as the image_embed_model of LlamaIndex's own MultiModalVectorStoreIndex."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from matryoshka_retrieval import MatryoshkaIndex, truncate

pytest.importorskip("llama_index.core")

from llama_index.core import StorageContext
from llama_index.core.indices.multi_modal.base import MultiModalVectorStoreIndex
from llama_index.core.schema import ImageDocument, ImageNode, QueryBundle, TextNode

from matryoshka_retrieval.llama_index import (
    MatryoshkaEmbedding,
    MatryoshkaRetriever,
    MatryoshkaVectorStore,
)


def _image_nodes(paths) -> list[ImageNode]:
    return [
        ImageNode(id_=f"img{i}", image_path=str(path), metadata={"n": i})
        for i, path in enumerate(paths)
    ]


def test_image_nodes_are_embedded_by_their_image(clip_encoder, image_files) -> None:
    retriever = MatryoshkaRetriever.from_nodes(
        _image_nodes(image_files), clip_encoder, coarse_dim=16, similarity_top_k=1
    )
    stored = retriever.index.get(["img3"], include_vectors=True)[0].vector
    np.testing.assert_allclose(stored, clip_encoder.encode_images([image_files[3]])[0], atol=1e-5)
    found = retriever.retrieve(QueryBundle(query_str="", image_path=str(image_files[3])))
    assert [n.node_id for n in found] == ["img3"]
    node = found[0].node
    assert isinstance(node, ImageNode) and node.image_path == str(image_files[3])
    assert node.metadata["n"] == 3 and found[0].score == pytest.approx(1.0, abs=1e-5)


def test_a_base64_image_document_and_text_nodes_share_the_index(clip_encoder, image_files):
    encoded = base64.b64encode(image_files[5].read_bytes()).decode()
    nodes = [
        ImageDocument(id_="doc", image=encoded),
        TextNode(id_="caption", text="a caption about something"),
    ]
    retriever = MatryoshkaRetriever.from_nodes(nodes, clip_encoder, coarse_dim=16)
    by_image = retriever.retrieve(QueryBundle(query_str="", image_path=str(image_files[5])))
    assert by_image[0].node_id == "doc" and isinstance(by_image[0].node, ImageDocument)
    assert retriever.retrieve("a caption about something")[0].node_id == "caption"


def test_a_text_query_ranks_image_nodes_by_exact_cosine(clip_encoder, image_files) -> None:
    retriever = MatryoshkaRetriever.from_nodes(
        _image_nodes(image_files), clip_encoder, coarse_dim=48, similarity_top_k=3
    )
    found = retriever.retrieve("a photo of a mountain lake")
    query = clip_encoder.encode_queries(["a photo of a mountain lake"])[0]
    scores = clip_encoder.encode_images(image_files) @ query
    best = np.argsort(-scores, kind="stable")[:3]
    assert [n.node_id for n in found] == [f"img{i}" for i in best]
    np.testing.assert_allclose([n.score for n in found], scores[best], atol=1e-5)


def test_a_bad_image_node_is_named_and_nothing_is_stored(clip_encoder, image_files, tmp_path):
    index = MatryoshkaIndex(clip_encoder, coarse_dim=16)
    retriever = MatryoshkaRetriever(index)
    nodes = [
        *_image_nodes(image_files[:2]),
        ImageNode(id_="broken", image_path=str(tmp_path / "gone.png")),
    ]
    with pytest.raises(ValueError, match=r"texts\[2\]: no image file at '.*gone.png'"):
        retriever.add_nodes(nodes)
    with pytest.raises(ValueError, match=r"node 'b64' \(nodes\[0\]\): its image is not valid"):
        retriever.add_nodes([ImageNode(id_="b64", image="not base64!")])
    with pytest.raises(ValueError, match=r"node 'web' .*image_url 'https://x.org/a.png' is not"):
        retriever.add_nodes([ImageNode(id_="web", image_url="https://x.org/a.png")])
    assert len(index) == 0


def test_async_add_and_image_retrieval(clip_encoder, image_files) -> None:
    retriever = MatryoshkaRetriever(MatryoshkaIndex(clip_encoder, coarse_dim=16))

    async def run() -> list[str]:
        await retriever.aadd_nodes(_image_nodes(image_files[:4]))
        bundle = QueryBundle(query_str="", image_path=str(image_files[2]))
        return [n.node_id for n in await retriever.aretrieve(bundle)]

    assert asyncio.run(run())[0] == "img2"


def test_embedding_embeds_images_as_the_encoder(clip_encoder, image_files) -> None:
    embed_model = MatryoshkaEmbedding(clip_encoder, truncate_dim=16)
    vector = embed_model.get_image_embedding(str(image_files[0]))
    expected = truncate(clip_encoder.encode_images(image_files[:2]), 16)
    np.testing.assert_allclose(vector, expected[0], atol=1e-5)
    batch = asyncio.run(embed_model.aget_image_embedding_batch([str(p) for p in image_files[:2]]))
    np.testing.assert_allclose(batch, expected, atol=1e-5)


def test_multimodal_vector_store_index_over_two_matryoshka_stores(clip_encoder, image_files):
    embed_model = MatryoshkaEmbedding(clip_encoder)
    text_store = MatryoshkaVectorStore(coarse_dim=16)
    image_store = MatryoshkaVectorStore(coarse_dim=16)
    nodes = [*_image_nodes(image_files), TextNode(id_="note", text="a note on the pictures")]
    index = MultiModalVectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(
            vector_store=text_store, image_store=image_store
        ),
        embed_model=embed_model,
        image_embed_model=embed_model,
    )
    assert len(image_store.index) == len(image_files)
    assert len(text_store.index) == 1
    retriever = index.as_retriever(similarity_top_k=1, image_similarity_top_k=2)
    found = retriever.image_to_image_retrieve(str(image_files[6]))
    assert found[0].node.node_id == "img6" and found[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(retriever.text_to_image_retrieve("a cat on a sofa")) == 2
