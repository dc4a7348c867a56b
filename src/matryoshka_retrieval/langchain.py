"""LangChain integration: Matryoshka embeddings, a coarse-to-fine retriever and a vector store.

Each is a drop-in for its LangChain interface. The search configuration belongs to the
:class:`~matryoshka_retrieval.MatryoshkaIndex`: the builders take an existing one as ``index=``,
or forward their other keyword arguments (``coarse_dim``, ``rescore_multiplier``, ``stages``,
``backend``, ...) to ``MatryoshkaIndex(...)``. It needs
``pip install "matryoshka-retrieval[langchain]"``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._adapter import EncoderAdapter, adapt_encoder, index_from
from ._optional import require
from ._validation import check_ids, positive_int
from .encoders.base import Encoder
from .index import Hit, MatryoshkaIndex, compile_filter
from .index.filters import Filter

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
    from typing_extensions import Self
except ImportError:  # pragma: no cover - only without langchain-core (tested in a subprocess)
    require("langchain_core", "langchain")  # raises with the install command when it is missing
    raise

__all__ = ["MatryoshkaEmbeddings", "MatryoshkaRetriever", "MatryoshkaVectorStore"]


# -- helpers ----------------------------------------------------------------------------------
def _records(
    texts: Iterable[str], metadatas: Iterable[Any] | None, ids: Sequence[str | None] | None
) -> tuple[list[str], dict[str, Any]]:
    """The texts and ``add_texts``'s ``ids`` / ``metadatas``: a ``None`` id becomes a UUID4
    hex, and ids are never converted (``5`` is refused, not stored as ``"5"``)."""
    items = list(texts)
    if ids is not None and not isinstance(ids, (str, bytes)):
        ids = [uuid.uuid4().hex if id_ is None else id_ for id_ in ids]
    checked = None if ids is None else check_ids(ids, len(items))
    return items, {"ids": checked, "metadatas": None if metadatas is None else list(metadatas)}


def _unpack(
    documents: Iterable[Document], ids: Sequence[str | None] | None
) -> tuple[list[str], list[dict[str, Any]], Sequence[str | None]]:
    """Texts, metadatas and ids of ``Document`` objects; ``ids`` override the documents' own."""
    docs = list(documents)
    chosen = ids if ids is not None else [doc.id for doc in docs]
    return [doc.page_content for doc in docs], [doc.metadata for doc in docs], chosen


def _document(hit: Hit, *, with_scores: bool = False) -> Document:
    """A ``Document`` for a hit, on a copy of the stored metadata."""
    scores = {"score": hit.score, "coarse_score": hit.coarse_score} if with_scores else {}
    return Document(page_content=hit.text or "", metadata={**hit.metadata, **scores}, id=hit.id)


def _no_extra_kwargs(kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"got unexpected keyword argument(s): {sorted(kwargs)}")


def _unit_interval(score: float) -> float:
    """Map a cosine similarity in [-1, 1] to a relevance score in [0, 1], monotonically."""
    return min(1.0, max(0.0, (score + 1.0) / 2.0))


def _check_mmr(k: int, fetch_k: int, lambda_mult: float) -> None:
    if positive_int("fetch_k", fetch_k) < positive_int("k", k):
        raise ValueError(
            f"fetch_k={fetch_k} must be at least k={k}: maximal marginal relevance picks k "
            "documents from the fetch_k nearest"
        )
    if isinstance(lambda_mult, bool) or not 0.0 <= lambda_mult <= 1.0:
        raise ValueError(
            f"lambda_mult must be between 0 (most diverse) and 1 (most relevant), "
            f"got {lambda_mult!r}"
        )


def _single_vector(embedding: ArrayLike) -> NDArray[np.float32]:
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"embedding must be one vector [dim], got shape {vector.shape}")
    return vector


# -- embeddings -------------------------------------------------------------------------------
class MatryoshkaEmbeddings(EncoderAdapter, BaseModel, Embeddings):
    """LangChain ``Embeddings`` that return renormalised Matryoshka prefixes of any embedder.

    Wraps anything :func:`~matryoshka_retrieval.as_encoder` accepts and returns its first
    ``truncate_dim`` dimensions at unit length, documents and queries each on the encoder's own
    path (async on its async path). Immutable: :meth:`with_truncate_dim` makes a copy.

    Raises:
        ValueError: If ``truncate_dim`` is out of range (naming the model's dimension), or
            ``dim`` disagrees with an encoder's width.
        TypeError: If ``encoder`` is not an embedder, or a function comes without ``dim``.

    Example:
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> from matryoshka_retrieval.langchain import MatryoshkaEmbeddings
        >>> embeddings = MatryoshkaEmbeddings(encoder=SentenceTransformerEncoder(), truncate_dim=64)
        >>> vector = embeddings.embed_query("how do I list files?")
        >>> len(vector), round(sum(x * x for x in vector), 4)
        (64, 1.0)
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    encoder: Encoder
    """The embedder (any ``as_encoder`` accepts), kept as the ``Encoder`` at ``truncate_dim``."""

    truncate_dim: int | None = None
    """Length of the returned prefix; ``None`` keeps the encoder's own ``truncate_dim``."""

    dim: int | None = None
    """Width of the wrapped embedder's vectors: needed for a function; a framework embedder is
    probed with one query when it is ``None``."""

    @model_validator(mode="before")
    @classmethod
    def _adapt_encoder(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "encoder" not in data:
            return data
        values = dict(data)
        encoder = adapt_encoder(
            values["encoder"], truncate_dim=values.get("truncate_dim"), dim=values.get("dim")
        )
        return {**values, "encoder": encoder, "truncate_dim": encoder.truncate_dim}

    def _current_encoder(self) -> Encoder:
        return self.encoder

    def _with_encoder(self, encoder: Encoder) -> Self:
        return type(self)(encoder=encoder, dim=self.dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Unit-norm vectors of length :attr:`output_dim`; an empty text is named and refused."""
        return self._vectors(texts, query=False)

    def embed_query(self, text: str) -> list[float]:
        """One unit-norm query vector of length :attr:`output_dim`."""
        return self._vectors([text], query=True)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async twin of :meth:`embed_documents`, on the encoder's async path."""
        return await self._avectors(texts, query=False)

    async def aembed_query(self, text: str) -> list[float]:
        """Async twin of :meth:`embed_query`, on the encoder's async path."""
        return (await self._avectors([text], query=True))[0]


# -- retriever --------------------------------------------------------------------------------
class MatryoshkaRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    A short renormalised prefix finds a shortlist, the full vectors rescore it exactly. Each
    ``Document`` carries the record's ``id`` and a copy of its metadata with ``score``
    (full-dim cosine) and ``coarse_score`` (the coarse stage's) added. ``k`` and ``filter``
    can also be given per call: ``retriever.invoke(query, k=10, filter={...})``.

    Raises:
        ValueError: If the index has no encoder, ``k`` is below 1, or ``filter`` is malformed.

    Example:
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> from matryoshka_retrieval.langchain import MatryoshkaRetriever
        >>> retriever = MatryoshkaRetriever.from_texts(
        ...     ["Copy files and directories.", "Display a calendar.", "Report disk space usage."],
        ...     SentenceTransformerEncoder(),
        ...     metadatas=[{"tool": "cp"}, {"tool": "cal"}, {"tool": "df"}],
        ...     coarse_dim=64,
        ...     k=1,
        ... )
        >>> [doc.metadata["tool"] for doc in retriever.invoke("how much free space is on my disk?")]
        ['df']
    """

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True
    )

    index: MatryoshkaIndex
    """The index to search; it must have an encoder for text queries."""

    k: int = Field(default=4, ge=1, strict=True)
    """Number of documents to return."""

    filter: dict[str, Any] | None = None
    """Metadata filter in Chroma's ``where`` syntax, for example ``{"year": {"$gte": 2020}}``."""

    @field_validator("index")
    @classmethod
    def _index_has_encoder(cls, index: MatryoshkaIndex) -> MatryoshkaIndex:
        if index.encoder is None:
            raise ValueError(
                "MatryoshkaRetriever needs an index with an encoder to embed queries: create it "
                "with MatryoshkaIndex(encoder=...) or set index.encoder"
            )
        return index

    @field_validator("filter")
    @classmethod
    def _filter_compiles(cls, where: dict[str, Any] | None) -> dict[str, Any] | None:
        if where is not None:
            compile_filter(where)  # raises, naming the bad operator or value
        return where

    @classmethod
    def _build(
        cls, texts: Iterable[str], embedding: Any, options: dict[str, Any]
    ) -> tuple[MatryoshkaRetriever, list[str], dict[str, Any]]:
        """The retriever (index made, ``k`` and ``filter`` checked) and the records to add."""
        metadatas, ids = options.pop("metadatas", None), options.pop("ids", None)
        k, where = options.pop("k", 4), options.pop("filter", None)
        index = index_from(embedding, options.pop("index", None), options, "MatryoshkaRetriever")
        retriever = cls(index=index, k=k, filter=None if where is None else dict(where))
        return retriever, *_records(texts, metadatas, ids)

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        embedding: Any = None,
        *,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str | None] | None = None,
        k: int = 4,
        filter: Filter | None = None,
        index: MatryoshkaIndex | None = None,
        **index_options: Any,
    ) -> MatryoshkaRetriever:
        """Embed texts into an index and return a retriever over it.

        Args:
            texts: The documents.
            embedding: The embedder (anything :func:`~matryoshka_retrieval.as_encoder` takes);
                with ``index`` it replaces the index's encoder, ``None`` keeps it.
            metadatas, ids: One metadata dict and one id per text (``None`` ids: UUID4 hex).
            k, filter: The retriever's fields.
            index: An existing index to add to, instead of a new in-memory one.
            **index_options: Options of the new :class:`~matryoshka_retrieval.MatryoshkaIndex`.

        Raises:
            ValueError: For a bad configuration, ids or metadata; nothing is embedded then.
            TypeError: For index options given with ``index``, or ids that are not str.
        """
        options = {"metadatas": metadatas, "ids": ids, "k": k, "filter": filter, "index": index}
        retriever, items, records = cls._build(texts, embedding, {**options, **index_options})
        retriever.index.add_texts(items, **records)
        return retriever

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        embedding: Any = None,
        *,
        ids: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> MatryoshkaRetriever:
        """:meth:`from_texts` for ``Document`` objects, keeping their ids (``ids`` override)."""
        texts, metadatas, doc_ids = _unpack(documents, ids)
        return cls.from_texts(texts, embedding, metadatas=metadatas, ids=doc_ids, **kwargs)

    @classmethod
    async def afrom_texts(
        cls, texts: Iterable[str], embedding: Any = None, **kwargs: Any
    ) -> MatryoshkaRetriever:
        """Async twin of :meth:`from_texts` (same arguments), on the encoder's async path."""
        # wrapping a framework embedder may probe it once, so the index is made in a thread
        retriever, items, records = await asyncio.to_thread(cls._build, texts, embedding, kwargs)
        await retriever.index.aadd_texts(items, **records)
        return retriever

    @classmethod
    async def afrom_documents(
        cls, documents: Iterable[Document], embedding: Any = None, **kwargs: Any
    ) -> MatryoshkaRetriever:
        """Async twin of :meth:`from_documents` (same arguments)."""
        texts, metadatas, ids = _unpack(documents, kwargs.pop("ids", None))
        return await cls.afrom_texts(texts, embedding, metadatas=metadatas, ids=ids, **kwargs)

    def _search_args(self, k: int | None, filter: Filter | None) -> dict[str, Any]:
        where = self.filter if filter is None else filter
        return {"k": self.k if k is None else k, "filter": where}

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: Filter | None = None,
    ) -> list[Document]:
        hits = self.index.search(query, **self._search_args(k, filter))
        return [_document(hit, with_scores=True) for hit in hits]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: Filter | None = None,
    ) -> list[Document]:
        hits = await self.index.asearch(query, **self._search_args(k, filter))
        return [_document(hit, with_scores=True) for hit in hits]


# -- vector store -----------------------------------------------------------------------------
class MatryoshkaVectorStore(VectorStore):
    """A LangChain vector store over a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Searches scan a short prefix, then rescore with the full vectors; scores are full-dim
    cosines, relevance ``(score + 1) / 2`` unless ``relevance_score_fn`` says otherwise. Adding
    a stored id replaces it. ``filter=`` takes Chroma's ``where`` syntax. The async methods are
    LangChain's own, which run these in its executor.

    Args:
        embedding: The embedder for texts and queries (a LangChain ``Embeddings``, an
            ``Encoder``, or anything :func:`~matryoshka_retrieval.as_encoder` takes); with
            ``index`` it replaces the index's encoder.
        index: An existing index to use instead of a new one.
        relevance_score_fn: Maps a cosine similarity to a relevance score in [0, 1].
        **index_options: Options of a new :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Raises:
        ValueError: Without ``embedding`` or ``index``, or for a bad index configuration.
        TypeError: If ``index`` is not a ``MatryoshkaIndex``, or index options come with it.

    Example:
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> from matryoshka_retrieval.langchain import MatryoshkaVectorStore
        >>> store = MatryoshkaVectorStore(SentenceTransformerEncoder(), coarse_dim=64)
        >>> store.add_texts(
        ...     ["Copy files.", "Show a calendar.", "Report disk usage."],
        ...     [{"os": "unix"}, {"os": "unix"}, {"os": "windows"}],
        ...     ids=["cp", "cal", "df"],
        ... )
        ['cp', 'cal', 'df']
        >>> [d.id for d in store.similarity_search("free disk space", k=1)]
        ['df']
        >>> [d.id for d in store.similarity_search("free disk space", k=1, filter={"os": "unix"})]
        ['cp']
    """

    def __init__(
        self,
        embedding: Any = None,
        *,
        index: MatryoshkaIndex | None = None,
        relevance_score_fn: Callable[[float], float] | None = None,
        **index_options: Any,
    ) -> None:
        if index is None and embedding is None:
            raise ValueError(
                "MatryoshkaVectorStore needs embedding= (the embedder for texts and queries) "
                "or index= (an existing MatryoshkaIndex)"
            )
        if relevance_score_fn is not None and not callable(relevance_score_fn):
            raise TypeError(
                f"relevance_score_fn must be callable, got {type(relevance_score_fn).__name__}"
            )
        self.index = index_from(embedding, index, index_options, "MatryoshkaVectorStore")
        self._embedding = embedding
        self._relevance_score_fn = relevance_score_fn

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.index!r})"

    @property
    def embeddings(self) -> Embeddings | None:
        """The embedder as a LangChain ``Embeddings`` (the one given, or a wrapper of the
        index's encoder); ``None`` when the index has no encoder."""
        if isinstance(self._embedding, Embeddings):
            return self._embedding
        encoder = self.index.encoder
        return MatryoshkaEmbeddings(encoder=encoder) if encoder is not None else None

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return self._relevance_score_fn or _unit_interval

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts (``add_documents`` comes here too); returns their ids.

        Raises:
            ValueError: For empty texts, duplicate ids in the batch, or mismatched lengths.
            TypeError: For ids that are not str, or metadata values of other types (named).
        """
        _no_extra_kwargs(kwargs)
        items, records = _records(texts, metadatas, ids)
        return self.index.add_texts(items, on_conflict="replace", **records)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete records by id (ids not stored are ignored).

        Raises:
            ValueError: If ``ids`` is ``None``: this store never deletes everything implicitly.
            TypeError: If an id is not a str (naming it).
        """
        _no_extra_kwargs(kwargs)
        if ids is None:
            raise ValueError("delete needs the ids to remove; ids=None would delete nothing")
        self.index.delete(check_ids(ids, unique=False), missing="ignore")
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents for ``ids``, in input order; ids not stored are skipped."""
        return [
            Document(page_content=rec.text or "", metadata=rec.metadata, id=rec.id)
            for rec in self.index.get(check_ids(ids, unique=False))
        ]

    def _search(
        self, query: str | ArrayLike, k: int, where: Filter | None, extra: Mapping[str, Any]
    ) -> list[tuple[Document, float]]:
        """The one query funnel: documents and full-dim cosine similarities, best first."""
        _no_extra_kwargs(extra)
        query = query if isinstance(query, str) else _single_vector(query)
        return [(_document(hit), hit.score) for hit in self.index.search(query, k, filter=where)]

    def similarity_search(
        self, query: str, k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents most similar to ``query``, best first."""
        return [doc for doc, _ in self._search(query, k, filter, kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search`, with each document's full-dim cosine similarity."""
        return self._search(query, k, filter, kwargs)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents most similar to a query vector of the index's dimension."""
        return [doc for doc, _ in self._search(embedding, k, filter, kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search_by_vector`, with full-dim cosine similarities."""
        return self._search(embedding, k, filter, kwargs)

    def _mmr(
        self,
        query: str | ArrayLike,
        k: int,
        fetch_k: int,
        lambda_mult: float,
        extra: dict[str, Any],
    ) -> list[Document]:
        """Maximal marginal relevance over the full stored vectors of the fetch_k nearest."""
        where = extra.pop("filter", None)
        _no_extra_kwargs(extra)
        _check_mmr(k, fetch_k, lambda_mult)  # before the query is embedded
        if isinstance(query, str):
            if self.index.encoder is None:
                raise ValueError("a text query needs an encoder: search by vector instead")
            query = self.index.encoder.encode_queries([query])[0]
        vector = _single_vector(query)
        hits = self.index.search(vector, fetch_k, filter=where)
        stored = {rec.id: rec.vector for rec in self.index.get(hits.ids, include_vectors=True)}
        kept = [hit for hit in hits if stored.get(hit.id) is not None]
        if not kept:
            return []
        candidates = [np.asarray(stored[hit.id]).tolist() for hit in kept]
        chosen = maximal_marginal_relevance(vector, candidates, lambda_mult=lambda_mult, k=k)
        return [_document(kept[i]) for i in chosen]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """Documents relevant to ``query`` and diverse among themselves.

        Picks ``k`` of the ``fetch_k`` nearest documents (found coarse-to-fine) by maximal
        marginal relevance over their full vectors: ``lambda_mult`` 1 favours relevance, 0
        diversity. ``filter=`` applies to the nearest.

        Raises:
            ValueError: If ``fetch_k < k`` or ``lambda_mult`` is outside [0, 1].
        """
        return self._mmr(query, k, fetch_k, lambda_mult, kwargs)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: ArrayLike,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` for a query vector of the index's dimension."""
        return self._mmr(embedding, k, fetch_k, lambda_mult, kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Any = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        """A store holding ``texts``; ``kwargs`` are the constructor's: ``index=`` (an index to
        add to), ``relevance_score_fn``, or options of a new index (``coarse_dim``, ...)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
