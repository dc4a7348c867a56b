"""LlamaIndex query engines over a Matryoshka index: coarse 64-dim search, full-dim rescore.

Two ways in: LlamaIndex's own VectorStoreIndex over a MatryoshkaVectorStore, and a
RetrieverQueryEngine over a MatryoshkaRetriever (no VectorStoreIndex needed).

Uses the offline default model (all-MiniLM-L6-v2) and LlamaIndex's MockLLM, which answers with
the prompt it was given, so the retrieved context is visible and nothing needs an API key.

Run: python examples/llama_index_query_engine.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters

from matryoshka_retrieval import SentenceTransformerEncoder
from matryoshka_retrieval.llama_index import (
    MatryoshkaEmbedding,
    MatryoshkaRetriever,
    MatryoshkaVectorStore,
)

documents = [
    Document(
        id_="ls",
        text="ls lists the files and folders in a directory.",
        metadata={"section": "files"},
    ),
    Document(
        id_="cp",
        text="cp copies files and directories to a destination.",
        metadata={"section": "files"},
    ),
    Document(
        id_="df",
        text="df reports how much free disk space each mounted file system has.",
        metadata={"section": "disk"},
    ),
    Document(
        id_="du",
        text="du estimates the disk space used by files and directories.",
        metadata={"section": "disk"},
    ),
    Document(
        id_="cal",
        text="cal prints a calendar for a month or for a whole year.",
        metadata={"section": "time"},
    ),
]


def main() -> None:
    encoder = SentenceTransformerEncoder()  # all-MiniLM-L6-v2, 384 dims, loaded offline
    retriever = MatryoshkaRetriever.from_documents(
        documents, encoder, coarse_dim=64, rescore_multiplier=4, similarity_top_k=1
    )
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())

    question = "How much free space is left on my disk?"
    response = engine.query(question)
    source = response.source_nodes[0]
    print(f"question: {question!r}")
    print(
        f"retrieved: {source.node.ref_doc_id} (full-dim score {source.score:.3f}, "
        f"{retriever.index.coarse_dim}-dim coarse score {source.node.metadata['coarse_score']:.3f})"
    )
    print(f"  {source.node.get_content()!r}")
    print("response (MockLLM echoes its prompt):")
    print(str(response).strip())

    only_time = MatryoshkaRetriever(
        retriever.index,
        similarity_top_k=1,
        filters=MetadataFilters(filters=[MetadataFilter(key="section", value="time")]),
    )
    best = only_time.retrieve(question)[0]
    print(f"\nsame question, only section == 'time': {best.node.ref_doc_id} ({best.score:.3f})")

    store = MatryoshkaVectorStore(coarse_dim=64, rescore_multiplier=4)
    index = VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=MatryoshkaEmbedding(encoder),
    )
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=1).query(question)
    source = response.source_nodes[0]
    print(
        f"\nVectorStoreIndex over MatryoshkaVectorStore ({len(store.index)} nodes): "
        f"{source.node.ref_doc_id} ({source.score:.3f})"
    )


if __name__ == "__main__":
    main()
