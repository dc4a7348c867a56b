"""LlamaIndex retriever over a :class:`~matryoshka_retrieval.MatryoshkaIndex`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from inspect import signature
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.schema import (
    BaseNode,
    IndexNode,
    NodeWithScore,
    QueryBundle,
    TransformComponent,
)
from llama_index.core.vector_stores.types import MetadataFilters
from numpy.typing import ArrayLike

from .._adapter import index_from
from .._twins import Steps, arun, blocking, encode, run
from .._validation import positive_int
from ..encoders.base import Encoder
from ..index.filters import compile_filter
from ..index.index import MatryoshkaIndex, OnConflict
from .filters import metadata_filters_to_where
from .nodes import DEFAULT_COARSE_SCORE_KEY
from .vector_store import MatryoshkaVectorStore

__all__ = ["MatryoshkaRetriever"]


class MatryoshkaRetriever(BaseRetriever):
    """A LlamaIndex retriever over a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Searches a :class:`MatryoshkaVectorStore`, embedding queries with the index's encoder (so
    no ``embed_model`` is needed) and several ``custom_embedding_strs`` by their mean. Without
    an encoder the ``QueryBundle``'s own embedding is searched; with one it is ignored. With an
    encoder over a multimodal model, an ``ImageNode`` (or ``ImageDocument``) is embedded by its
    image (``image``, base64, or ``image_path``), and ``QueryBundle(query_str="",
    image_path=...)`` searches by an image.

    Args:
        index: The index to search; it needs an encoder for text queries and :meth:`add_nodes`.
        similarity_top_k: Nodes returned per query.
        filters: ``MetadataFilters`` (or a ``where`` dict) applied before the shortlist is cut.
        coarse_score_key, callback_manager, object_map, objects, verbose: As in
            :class:`MatryoshkaVectorStore` and LlamaIndex's ``BaseRetriever``.

    Raises:
        ValueError: For ``similarity_top_k < 1`` or an unsupported filter operator (named).
        TypeError: If ``index`` is not a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Example:
        >>> from llama_index.core.schema import TextNode
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> from matryoshka_retrieval.llama_index import MatryoshkaRetriever
        >>> nodes = [
        ...     TextNode(id_="ls", text="ls lists the files in a directory."),
        ...     TextNode(id_="df", text="df reports free disk space on each file system."),
        ...     TextNode(id_="cal", text="cal prints a calendar of the month."),
        ... ]
        >>> retriever = MatryoshkaRetriever.from_nodes(
        ...     nodes, SentenceTransformerEncoder(), coarse_dim=32, similarity_top_k=1
        ... )
        >>> [n.node_id for n in retriever.retrieve("how much space is left on my disk?")]
        ['df']
    """

    def __init__(
        self,
        index: MatryoshkaIndex,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        filters: MetadataFilters | Mapping[str, Any] | None = None,
        coarse_score_key: str | None = DEFAULT_COARSE_SCORE_KEY,
        callback_manager: CallbackManager | None = None,
        object_map: dict[str, Any] | None = None,
        objects: list[IndexNode] | None = None,
        verbose: bool = False,
    ) -> None:
        self._store = MatryoshkaVectorStore(index, coarse_score_key=coarse_score_key)
        self.similarity_top_k = positive_int("similarity_top_k", similarity_top_k)
        self.filters = filters  # validated and translated by the setter
        super().__init__(callback_manager, object_map=object_map, objects=objects, verbose=verbose)

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name of this class."""
        return "MatryoshkaRetriever"

    @property
    def index(self) -> MatryoshkaIndex:
        """The index this retriever searches."""
        return self._store.index

    @property
    def vector_store(self) -> MatryoshkaVectorStore:
        """The vector store this retriever searches (usable in a ``VectorStoreIndex``)."""
        return self._store

    @property
    def coarse_score_key(self) -> str | None:
        """Metadata key of the coarse score on retrieved nodes (``None``: omitted)."""
        return self._store.coarse_score_key

    @property
    def filters(self) -> MetadataFilters | Mapping[str, Any] | None:
        """The filters applied to every query; setting them validates and translates them."""
        return self._filters

    @filters.setter
    def filters(self, filters: MetadataFilters | Mapping[str, Any] | None) -> None:
        where = metadata_filters_to_where(filters)
        if where is not None:
            compile_filter(where)  # reject a bad filter now, not at the first query
        self._filters, self._where = filters, where

    @property
    def where(self) -> dict[str, Any] | None:
        """The ``where`` filter ``filters`` translates to (``None`` for no filter)."""
        return self._where

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        embed_model: Any = None,
        *,
        index: MatryoshkaIndex | None = None,
        **kwargs: Any,
    ) -> MatryoshkaRetriever:
        """Embed nodes into an index (a new in-memory one by default) and return a retriever.

        Args:
            nodes: The nodes, with unique ids.
            embed_model: Anything :func:`~matryoshka_retrieval.as_encoder` accepts; ``None``
                keeps the encoder of ``index``, or takes ``Settings.embed_model``.
            index: An existing index to add the nodes to.
            **kwargs: The constructor's keyword arguments, or options of a new index.

        Raises:
            ValueError, TypeError: As :meth:`add_nodes`, or for a bad index configuration.
        """
        if embed_model is None and index is None:
            from llama_index.core.settings import Settings

            embed_model = Settings.embed_model
        own = {key: kwargs.pop(key) for key in signature(cls).parameters if key in kwargs}
        retriever = cls(index_from(embed_model, index, kwargs, "MatryoshkaRetriever"), **own)
        retriever.add_nodes(nodes)
        return retriever

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[BaseNode],
        embed_model: Any = None,
        *,
        transformations: Sequence[TransformComponent] | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> MatryoshkaRetriever:
        """Split documents with ``transformations`` (default: ``Settings.transformations``),
        then build as :meth:`from_nodes` does."""
        from llama_index.core.ingestion import run_transformations
        from llama_index.core.settings import Settings

        steps = list(transformations) if transformations is not None else Settings.transformations
        nodes = run_transformations(list(documents), steps, show_progress=show_progress)
        return cls.from_nodes(nodes, embed_model, **kwargs)

    def add_nodes(
        self, nodes: Sequence[BaseNode], *, on_conflict: OnConflict = "error"
    ) -> list[str]:
        """Embed nodes with the index's encoder (with metadata, as LlamaIndex does) and add them.

        Raises:
            ValueError: Without an encoder, for a node without text (or image), an image that
                cannot be read (named), a reserved metadata key,
                or duplicate / existing ids (unless ``on_conflict="replace"``); nothing is stored.
            TypeError: For metadata that cannot be stored (naming the node and key).
        """
        return self._store.add_nodes(nodes, on_conflict=on_conflict)

    async def aadd_nodes(
        self, nodes: Sequence[BaseNode], *, on_conflict: OnConflict = "error"
    ) -> list[str]:
        """Async twin of :meth:`add_nodes`: embeds with the encoder's async path."""
        return await self._store.aadd_nodes(nodes, on_conflict=on_conflict)

    def _query_inputs(self, query_bundle: QueryBundle) -> tuple[Encoder | None, list[Any]]:
        """The encoder and what to embed (the bundle's ``image_path`` as an image, else its
        texts); no encoder: search the bundle's embedding."""
        encoder = self.index.encoder
        if encoder is None and query_bundle.embedding is not None:
            return None, []
        if query_bundle.image_path is not None and encoder is not None:
            return encoder, [Path(query_bundle.image_path)]
        if not query_bundle.embedding_strs:
            raise ValueError("the query is empty: give a query string or custom_embedding_strs")
        if encoder is None:
            raise ValueError(
                "MatryoshkaRetriever needs an encoder to embed a text query: give the index one "
                "(MatryoshkaIndex(encoder=...)) or pass a QueryBundle with its embedding"
            )
        return encoder, list(query_bundle.embedding_strs)

    def _retrieving(self, query_bundle: QueryBundle) -> Steps[list[NodeWithScore]]:
        """The body of :meth:`_retrieve` and :meth:`_aretrieve`: embed the query (the mean of
        several texts), then search the store."""
        encoder, inputs = self._query_inputs(query_bundle)
        vector: ArrayLike = query_bundle.embedding or []
        if encoder is not None:
            vector = (yield encode(encoder, "queries", inputs)).mean(axis=0)
        store = self._store
        result = yield blocking(store.search, vector, self.similarity_top_k, where=self._where)
        pairs = zip(result.nodes or [], result.similarities or [], strict=True)
        return [NodeWithScore(node=node, score=score) for node, score in pairs]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return run(self._retrieving(query_bundle))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await arun(self._retrieving(query_bundle))
