"""LangChain integration: Matryoshka embeddings, a coarse-to-fine retriever and a vector store.

Needs ``pip install "matryoshka-retrieval[langchain]"``. The builders take an existing
:class:`~matryoshka_retrieval.MatryoshkaIndex` as ``index=``, or forward their other keyword
arguments (``coarse_dim``, ``stages``, ``backend``, ...) to a new one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._adapter import EncoderAdapter, adapt_encoder, index_from
from ._optional import require
from ._twins import Steps, arun, blocking, run, twin
from ._validation import check_ids, positive_int
from .encoders.base import Encoder
from .index import Hit, MatryoshkaIndex, Record, compile_filter
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


def _records(
    texts: Iterable[str], metadatas: Iterable[Any] | None, ids: Sequence[str | None] | None
) -> dict[str, Any]:
    """``add_texts``'s arguments: a ``None`` id becomes a UUID4 hex; ids are never converted."""
    items = list(texts)
    if ids is not None and not isinstance(ids, (str, bytes)):
        ids = [uuid.uuid4().hex if id_ is None else id_ for id_ in ids]
    return {
        "texts": items,
        "ids": None if ids is None else check_ids(ids, len(items)),
        "metadatas": None if metadatas is None else list(metadatas),
    }


def _unpack(documents: Iterable[Document], ids: Sequence[str | None] | None) -> dict[str, Any]:
    """Texts, metadatas and ids of ``Document`` objects; ``ids`` override the documents' own."""
    docs = list(documents)
    chosen = ids if ids is not None else [doc.id for doc in docs]
    return {
        "texts": [d.page_content for d in docs],
        "metadatas": [d.metadata for d in docs],
        "ids": chosen,
    }


def _document(item: Hit | Record, **scores: float | None) -> Document:
    """The one result converter: a ``Document`` on a copy of the metadata, plus ``scores``."""
    return Document(page_content=item.text or "", metadata={**item.metadata, **scores}, id=item.id)


def _image_path(uri: Any) -> Path:
    """An image given by its path, as a ``Path`` (the index reads a ``str`` as a text)."""
    if not isinstance(uri, (str, os.PathLike)):
        raise TypeError(f"uri must be an image path (str), got {type(uri).__name__}: {uri!r:.60}")
    return Path(uri)


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


class MatryoshkaEmbeddings(EncoderAdapter, BaseModel, Embeddings):
    """LangChain ``Embeddings`` that return renormalised Matryoshka prefixes of any embedder.

    Documents and queries each take the encoder's own path (async on its async path) and come
    back as unit-length ``truncate_dim`` prefixes. Immutable: :meth:`with_truncate_dim` copies.

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
        return self._vectors(texts, "documents")

    def embed_query(self, text: str) -> list[float]:
        return self._vectors([text], "queries")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._avectors(texts, "documents")

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._avectors([text], "queries"))[0]

    def embed_image(self, uris: list[str]) -> list[list[float]]:
        """Embed image files (paths), in the space of the texts, as multimodal embeddings do.

        Raises:
            TypeError: If the encoder's model embeds texts only.
            ValueError: For a missing file or one that is not an image (naming it).
        """
        return self._vectors(uris, "images")


class MatryoshkaRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Each ``Document`` carries the record's ``id`` and its metadata plus ``score`` (full-dim
    cosine) and ``coarse_score``. ``k`` and ``filter`` can be given per call too:
    ``retriever.invoke(query, k=10, filter={...})``.

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
    ) -> tuple[MatryoshkaRetriever, dict[str, Any]]:
        """The retriever (index made, ``k`` and ``filter`` checked) and the records to add."""
        records = _records(texts, options.pop("metadatas", None), options.pop("ids", None))
        k, where = options.pop("k", 4), options.pop("filter", None)
        index = index_from(embedding, options.pop("index", None), options, "MatryoshkaRetriever")
        return cls(index=index, k=k, filter=None if where is None else dict(where)), records

    @classmethod
    def _building(
        cls, texts: Iterable[str], embedding: Any, options: dict[str, Any]
    ) -> Steps[MatryoshkaRetriever]:
        """The body of :meth:`from_texts` and :meth:`afrom_texts`: make the index (blocking:
        wrapping a framework embedder may probe it once), then embed and add the texts."""
        built: tuple[MatryoshkaRetriever, dict[str, Any]]
        built = yield blocking(cls._build, texts, embedding, options)
        retriever, records = built
        yield twin(retriever.index.add_texts, retriever.index.aadd_texts, **records)
        return retriever

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], embedding: Any = None, **kwargs: Any
    ) -> MatryoshkaRetriever:
        """Embed texts into an index and return a retriever over it.

        Args:
            texts: The documents.
            embedding: The embedder (anything :func:`~matryoshka_retrieval.as_encoder` takes);
                with ``index`` it replaces the index's encoder, ``None`` keeps it.
            **kwargs: ``metadatas`` and ``ids`` (one per text; ``None`` ids become UUID4 hex),
                the retriever's ``k`` and ``filter``, and ``index=`` (an index to add to) or
                options of a new :class:`~matryoshka_retrieval.MatryoshkaIndex`.

        Raises:
            ValueError: For a bad configuration, ids or metadata; nothing is embedded then.
            TypeError: For index options given with ``index``, or ids that are not str.
        """
        return run(cls._building(texts, embedding, kwargs))

    @classmethod
    def from_documents(
        cls, documents: Iterable[Document], embedding: Any = None, **kwargs: Any
    ) -> MatryoshkaRetriever:
        """:meth:`from_texts` for ``Document`` objects, keeping their ids (``ids=`` override)."""
        records = _unpack(documents, kwargs.pop("ids", None))
        return cls.from_texts(embedding=embedding, **records, **kwargs)

    @classmethod
    async def afrom_texts(
        cls, texts: Iterable[str], embedding: Any = None, **kwargs: Any
    ) -> MatryoshkaRetriever:
        """Async twin of :meth:`from_texts`, on the encoder's async path."""
        return await arun(cls._building(texts, embedding, kwargs))

    @classmethod
    async def afrom_documents(
        cls, documents: Iterable[Document], embedding: Any = None, **kwargs: Any
    ) -> MatryoshkaRetriever:
        """Async twin of :meth:`from_documents`."""
        records = _unpack(documents, kwargs.pop("ids", None))
        return await cls.afrom_texts(embedding=embedding, **records, **kwargs)

    def _retrieving(
        self, query: str, k: int | None, filter: Filter | None
    ) -> Steps[list[Document]]:
        """The body of both retrieval methods: search (``k`` and ``filter`` default to the
        retriever's), then convert the hits."""
        k = self.k if k is None else k
        where = self.filter if filter is None else filter
        hits = yield twin(self.index.search, self.index.asearch, query, k, filter=where)
        return [_document(h, score=h.score, coarse_score=h.coarse_score) for h in hits]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: Filter | None = None,
    ) -> list[Document]:
        return run(self._retrieving(query, k, filter))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: Filter | None = None,
    ) -> list[Document]:
        return await arun(self._retrieving(query, k, filter))


class MatryoshkaVectorStore(VectorStore):
    """A LangChain vector store over a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Scores are full-dim cosines, relevance ``(score + 1) / 2`` unless ``relevance_score_fn``
    says otherwise. Adding a stored id replaces it. ``filter=`` takes Chroma's ``where`` syntax.

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
        """The LangChain ``Embeddings`` given, else a wrapper of the index's encoder (if any)."""
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
        """Embed and store texts (``add_documents`` comes here too).

        Raises:
            ValueError: For empty texts, duplicate ids in the batch, or mismatched lengths.
            TypeError: For ids that are not str, or metadata values of other types (named).
        """
        _no_extra_kwargs(kwargs)
        return self.index.add_texts(**_records(texts, metadatas, ids), on_conflict="replace")

    def add_images(
        self,
        uris: list[str],
        metadatas: list[dict[str, Any]] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store images (langchain-chroma's method): each document's content is its
        path; the index's encoder must embed images (a CLIP model, for example).

        Raises:
            ValueError: For a missing file or data that is not an image (naming it), duplicate
                ids in the batch, or mismatched lengths; nothing is stored then.
            TypeError: If the encoder's model embeds texts only, or ids are not str.
        """
        _no_extra_kwargs(kwargs)
        if isinstance(uris, (str, bytes)):
            raise TypeError(
                f"uris must be a list of image paths, got a single {type(uris).__name__}"
            )
        records = _records([str(uri) for uri in uris], metadatas, ids)
        return self.index.add_images(
            records["texts"],
            ids=records["ids"],
            metadatas=records["metadatas"],
            on_conflict="replace",
        )

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
        return [_document(record) for record in self.index.get(check_ids(ids, unique=False))]

    def _search(
        self, query: str | Path | ArrayLike, k: int, where: Filter | None, extra: Mapping[str, Any]
    ) -> list[tuple[Document, float]]:
        """The one query funnel: documents and full-dim cosine similarities, best first."""
        _no_extra_kwargs(extra)
        return [(_document(hit), hit.score) for hit in self.index.search(query, k, filter=where)]

    def similarity_search(
        self, query: str, k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self._search(query, k, filter, kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search`, with each document's full-dim cosine similarity."""
        return self._search(query, k, filter, kwargs)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self._search(embedding, k, filter, kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Like :meth:`similarity_search_by_vector`, with full-dim cosine similarities."""
        return self._search(embedding, k, filter, kwargs)

    def similarity_search_by_image(
        self, uri: str, k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[Document]:
        """The documents nearest to an image (its path), as langchain-chroma's method."""
        return [doc for doc, _ in self._search(_image_path(uri), k, filter, kwargs)]

    def similarity_search_by_image_with_relevance_score(
        self, uri: str, k: int = 4, *, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """:meth:`similarity_search_by_image` with each document's full-dim cosine similarity."""
        return self._search(_image_path(uri), k, filter, kwargs)

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        """``k`` of the ``fetch_k`` nearest, picked by maximal marginal relevance over their full
        vectors (``lambda_mult`` 1 favours relevance, 0 diversity).

        Raises:
            ValueError: If ``fetch_k < k`` or ``lambda_mult`` is outside [0, 1].
        """
        _no_extra_kwargs({key: value for key, value in kwargs.items() if key != "filter"})
        _check_mmr(k, fetch_k, lambda_mult)  # both before the query is embedded
        if self.index.encoder is None:
            raise ValueError("a text query needs an encoder: search by vector instead")
        vector = self.index.encoder.encode_queries([query])[0]
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, **kwargs
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: ArrayLike,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        *,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` for a query vector of the index's dimension."""
        _no_extra_kwargs(kwargs)
        _check_mmr(k, fetch_k, lambda_mult)
        vector = np.asarray(embedding, dtype=np.float32)
        hits = self.index.search(vector, fetch_k, filter=filter)
        stored = {rec.id: rec.vector for rec in self.index.get(hits.ids, include_vectors=True)}
        kept = [hit for hit in hits if stored.get(hit.id) is not None]
        if not kept:
            return []
        candidates = [np.asarray(stored[hit.id]).tolist() for hit in kept]
        chosen = maximal_marginal_relevance(vector, candidates, lambda_mult=lambda_mult, k=k)
        return [_document(kept[i]) for i in chosen]

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
        """A store holding ``texts``; ``kwargs`` are the constructor's (``index=``,
        ``relevance_score_fn``, or options of a new index)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
