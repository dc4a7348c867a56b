"""Chroma at a chosen dim: a collection of 64-dim Matryoshka prefixes, reranked with full vectors.

Run: python examples/chroma_coarse_to_fine.py
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import chromadb

from matryoshka_retrieval import MatryoshkaIndex, SentenceTransformerEncoder
from matryoshka_retrieval.chroma import MatryoshkaEmbeddingFunction, get_or_create_collection

PAGES = {
    "ls": ("list directory contents", 1),
    "cp": ("copy files and directories", 1),
    "rm": ("remove files or directories", 1),
    "df": ("report file system disk space usage", 1),
    "mount": ("mount a filesystem", 8),
    "fsck": ("check and repair a Linux filesystem", 8),
}


def main() -> None:
    encoder = SentenceTransformerEncoder()  # all-MiniLM-L6-v2, offline
    with tempfile.TemporaryDirectory() as folder:
        client = chromadb.PersistentClient(path=os.path.join(folder, "chroma"))

        # 1. Chroma alone, at 64 dims: documents and queries each embedded on their own side.
        pages = get_or_create_collection(
            client, "pages-64d", MatryoshkaEmbeddingFunction(encoder, truncate_dim=64)
        )
        pages.add(ids=list(PAGES), documents=[text for text, _ in PAGES.values()])
        found = pages.query(query_texts=["how full is my disk?"], n_results=2)
        print("Chroma at 64 dims:", found["ids"][0])

        # 2. Coarse-to-fine: Chroma holds the 64-dim prefixes (HNSW, where filters), the index
        #    keeps the full 384-dim vectors and reranks Chroma's shortlist with them.
        index = MatryoshkaIndex(
            encoder, backend="chroma", chroma_client=client, collection="pages-mrl", coarse_dim=64
        )
        index.add_texts(
            [text for text, _ in PAGES.values()],
            ids=list(PAGES),
            metadatas=[{"section": section} for _, section in PAGES.values()],
        )
        for hit in index.search("repair a damaged disk", k=2, filter={"section": 8}):
            print(
                f"coarse-to-fine: {hit.id:<6} score {hit.score:.3f} (coarse {hit.coarse_score:.3f})"
            )
        index.save(os.path.join(folder, "index"))
        reopened = MatryoshkaIndex.load(
            os.path.join(folder, "index"), chroma_client=client, encoder=encoder
        )
        print("reopened:", len(reopened), "pages;", reopened.search("delete a file", k=1).ids)


if __name__ == "__main__":
    main()
