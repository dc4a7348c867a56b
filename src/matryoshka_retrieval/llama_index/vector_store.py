"""LlamaIndex vector store over a :class:`~matryoshka_retrieval.MatryoshkaIndex`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from numpy.typing import ArrayLike

from .._adapter import index_from
from .._twins import Steps, arun, blocking, encode, in_thread, run
from .._validation import check_ids
from ..index.filters import Filter
from ..index.index import MatryoshkaIndex, OnConflict
from .filters import metadata_filters_to_where
from .nodes import (
    DEFAULT_COARSE_SCORE_KEY,
    Records,
    check_coarse_score_key,
    embed_inputs,
    hit_node,
    node_records,
    record_node,
)

__all__ = ["MatryoshkaVectorStore"]


class MatryoshkaVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    LlamaIndex embeds nodes and queries (with its ``embed_model``); each query scans a short
    prefix, then rescores with the full vectors. Adding a stored node id replaces it. Persist
    the index itself: ``store.index.save(path)``.

    Args:
        index: The index to store nodes in; ``None`` makes a new in-memory one.
        coarse_score_key: Metadata key of the coarse score on retrieved nodes; ``None`` omits it.
        **index_options: Options of a new :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Raises:
        ValueError: For a bad ``coarse_score_key`` or index configuration.
        TypeError: If ``index`` is not a ``MatryoshkaIndex``, or index options come with it.

    Example:
        >>> from llama_index.core import Document, StorageContext, VectorStoreIndex
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> from matryoshka_retrieval.llama_index import MatryoshkaEmbedding, MatryoshkaVectorStore
        >>> store = MatryoshkaVectorStore(coarse_dim=32)
        >>> index = VectorStoreIndex.from_documents(
        ...     [Document(id_="ls", text="ls lists the files in a directory."),
        ...      Document(id_="df", text="df reports free disk space on each file system.")],
        ...     storage_context=StorageContext.from_defaults(vector_store=store),
        ...     embed_model=MatryoshkaEmbedding(SentenceTransformerEncoder()),
        ... )
        >>> [n.node.ref_doc_id for n in index.as_retriever(similarity_top_k=1).retrieve("disk?")]
        ['df']
    """

    stores_text: bool = True
    coarse_score_key: str | None = Field(
        default=DEFAULT_COARSE_SCORE_KEY,
        description="Metadata key of the coarse score on retrieved nodes; None omits it.",
    )
    _index: MatryoshkaIndex = PrivateAttr()

    def __init__(
        self,
        index: MatryoshkaIndex | None = None,
        *,
        coarse_score_key: str | None = DEFAULT_COARSE_SCORE_KEY,
        **index_options: Any,
    ) -> None:
        key = check_coarse_score_key(coarse_score_key)
        fields: dict[str, Any] = {"coarse_score_key": key}  # a field the base does not know
        super().__init__(**fields)
        encoder = index_options.pop("encoder", None)
        self._index = index_from(encoder, index, index_options, "MatryoshkaVectorStore")

    @classmethod
    def class_name(cls) -> str:
        return "MatryoshkaVectorStore"

    @property
    def client(self) -> MatryoshkaIndex:
        """The index holding the nodes (LlamaIndex's name for a store's backend)."""
        return self._index

    @property
    def index(self) -> MatryoshkaIndex:
        """The index holding the nodes."""
        return self._index

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes with their embeddings, all or none (errors name the node and key)."""
        vectors = [node.get_embedding() for node in nodes]
        return self._write(node_records(nodes, self.coarse_score_key), vectors, "replace")

    async_add = in_thread(add)

    def add_nodes(
        self, nodes: Sequence[BaseNode], *, on_conflict: OnConflict = "replace"
    ) -> list[str]:
        """Embed nodes with the index's encoder (with metadata, as LlamaIndex does) and add them.

        Nodes with an image (``ImageNode``, ``ImageDocument``) are embedded by their image,
        which needs an encoder over a multimodal model.

        Args:
            nodes: The nodes; their own embeddings, if any, are not used.
            on_conflict: ``replace`` overwrites stored ids (as :meth:`add` does); ``error``
                rejects them.

        Returns:
            The node ids, in input order.

        Raises:
            ValueError: Without an encoder, for a node without text (or image), an image that
                cannot be read (named), a reserved metadata key,
                or duplicate / existing ids (with ``on_conflict="error"``); nothing is stored.
            TypeError: For metadata that cannot be stored (naming the node and key).
        """
        return run(self._adding(nodes, on_conflict))

    async def aadd_nodes(
        self, nodes: Sequence[BaseNode], *, on_conflict: OnConflict = "replace"
    ) -> list[str]:
        """Async twin of :meth:`add_nodes`: embeds with the encoder's async path, writes in a
        worker thread."""
        return await arun(self._adding(nodes, on_conflict))

    def _adding(self, nodes: Sequence[BaseNode], on_conflict: OnConflict) -> Steps[list[str]]:
        """The body of :meth:`add_nodes` and :meth:`aadd_nodes`: check, embed, write."""
        encoder = self._index.encoder
        if encoder is None:
            raise ValueError(
                "add_nodes needs an index with an encoder: build it with "
                "MatryoshkaIndex(encoder=...) or MatryoshkaRetriever.from_nodes(nodes, embed_model)"
            )
        inputs = embed_inputs(nodes)
        records = node_records(nodes, self.coarse_score_key)
        vectors = (yield encode(encoder, "documents", inputs)) if inputs else []
        ids: list[str] = yield blocking(self._write, records, vectors, on_conflict)
        return ids

    def _write(self, records: Records, vectors: ArrayLike, on_conflict: OnConflict) -> list[str]:
        ids, texts, metadatas = records
        if not ids:
            return []
        return self._index.add_vectors(
            vectors, ids=ids, texts=texts, metadatas=metadatas, on_conflict=on_conflict
        )

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node whose source document is ``ref_doc_id``."""
        self._index.delete(self._index.ids(filter={"ref_doc_id": ref_doc_id}), missing="ignore")

    adelete = in_thread(delete)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **_: Any
    ) -> None:
        """Delete the nodes in ``node_ids`` that match ``filters`` (``None``: no restriction)."""
        self._index.delete(self._selected(node_ids, filters), missing="ignore")

    adelete_nodes = in_thread(delete_nodes)

    def clear(self) -> None:
        """Delete every node."""
        self.delete_nodes()

    aclear = in_thread(clear)

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes in ``node_ids`` that match ``filters`` (``None``: no restriction)."""
        records = self._index.get(self._selected(node_ids, filters))
        return [record_node(rec.id, rec.text, rec.metadata) for rec in records]

    aget_nodes = in_thread(get_nodes)

    def _selected(self, node_ids: list[str] | None, filters: MetadataFilters | None) -> list[str]:
        where = metadata_filters_to_where(filters)
        if node_ids is None:
            return self._index.ids(filter=where)
        ids = check_ids(node_ids, unique=False)
        matching = None if where is None else set(self._index.ids(filter=where))
        return ids if matching is None else [id_ for id_ in ids if id_ in matching]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Dense search; ``filters`` and ``doc_ids`` apply before the shortlist is cut."""
        if query.mode != VectorStoreQueryMode.DEFAULT or query.node_ids:
            raise ValueError(
                f"MatryoshkaVectorStore serves dense queries without node_ids; got mode "
                f"{query.mode!r}, node_ids={query.node_ids!r}"
            )
        if query.query_embedding is None:
            raise ValueError("MatryoshkaVectorStore needs the query's query_embedding")
        where = metadata_filters_to_where(query.filters)
        if query.doc_ids:
            docs = {"ref_doc_id": {"$in": list(query.doc_ids)}}
            where = docs if where is None else {"$and": [where, docs]}
        return self.search(query.query_embedding, query.similarity_top_k, where=where)

    aquery = in_thread(query)

    def search(
        self, embedding: ArrayLike, k: int, *, where: Filter | None = None
    ) -> VectorStoreQueryResult:
        """The ``k`` nodes nearest to one query vector, with a filter in the index's syntax.

        Args:
            embedding: The query vector, of the index's dimension.
            k: Number of nodes to return.
            where: A Chroma-style ``where`` filter (see :func:`metadata_filters_to_where`),
                applied before the shortlist is cut; ``None`` for none.

        Returns:
            The nodes (the coarse score under ``coarse_score_key``), their full-dim cosine
            similarities and ids, best first.

        Raises:
            ValueError: For ``k < 1``, a vector of the wrong width, or a bad filter.
        """
        hits = self._index.search(np.asarray(embedding, dtype=np.float32), k, filter=where)
        nodes = [hit_node(hit, self.coarse_score_key) for hit in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=hits.scores, ids=hits.ids)
