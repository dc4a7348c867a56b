"""LlamaIndex integration: a Matryoshka embedding, a coarse-to-fine vector store and retriever.

Needs ``pip install "matryoshka-retrieval[llama-index]"``. Nodes are stored with
``node_to_metadata_dict``; filters see their metadata keys and ``ref_doc_id`` (also ``doc_id``,
``document_id``). ``NodeWithScore.score`` is the full-dim cosine; the coarse score is put on
retrieved nodes under ``coarse_score_key``, kept out of prompts, embeddings and the index.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from inspect import signature
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._adapter import EncoderAdapter, adapt_encoder, index_from
from ._optional import require
from ._validation import check_ids, check_metadata, positive_int

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks.base import CallbackManager
    from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
    from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
    from llama_index.core.schema import (
        BaseNode,
        ImageDocument,
        ImageNode,
        ImageType,
        IndexNode,
        MetadataMode,
        NodeWithScore,
        QueryBundle,
        TextNode,
        TransformComponent,
    )
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
    from typing_extensions import Self
except ImportError:
    require("llama_index.core", "llama-index")  # raises the ImportError that names the extra
    raise

from .encoders.base import Encoder
from .index.filters import compile_filter
from .index.hits import Hit
from .index.index import MatryoshkaIndex, OnConflict

__all__ = [
    "DEFAULT_COARSE_SCORE_KEY",
    "NODE_STATE_KEY",
    "SUPPORTED_FILTER_OPERATORS",
    "MatryoshkaEmbedding",
    "MatryoshkaRetriever",
    "MatryoshkaVectorStore",
    "metadata_filters_to_where",
]

NODE_STATE_KEY = "_node_content"
"""Reserved record metadata key holding the whole node as JSON (LlamaIndex's own key)."""

DEFAULT_COARSE_SCORE_KEY = "coarse_score"
"""Metadata key of a retrieved node that holds the coarse stage's score."""

_RESERVED = (NODE_STATE_KEY, "_node_type")
_SCALARS = (str, int, float, type(None))  # stored as they are; lists and dicts as JSON
_Records = tuple[list[str], list[str], list[dict[str, Any] | None]]  # ids, texts, metadatas
SUPPORTED_FILTER_OPERATORS: tuple[str, ...] = ("EQ", "NE", "GT", "GTE", "LT", "LTE", "IN", "NIN")
"""The ``FilterOperator`` names :func:`metadata_filters_to_where` maps (``EQ`` to ``$eq``, ...)."""


class MatryoshkaEmbedding(EncoderAdapter, MultiModalEmbedding):
    """A LlamaIndex embedding model: renormalised ``truncate_dim`` prefixes of an encoder.

    Texts and queries take the encoder's own paths (and prompts); a batch is one encoder call.
    It is a ``MultiModalEmbedding``: over a model that embeds images (a CLIP model in
    ``SentenceTransformerEncoder``) it serves as a ``MultiModalVectorStoreIndex``'s
    ``image_embed_model``, embedding image paths and buffers into the texts' space.

    Args:
        encoder: Anything :func:`~matryoshka_retrieval.as_encoder` accepts.
        truncate_dim: Output dimension; ``None`` keeps the encoder's own ``truncate_dim``.
        dim: Output width of ``encoder`` when it is a function or a framework object.
        model_name: Name to report; defaults to the encoder's ``model_name``.
        embed_batch_size, **kwargs: ``BaseEmbedding`` fields.

    Raises:
        TypeError: If ``encoder`` is not an embedder ``as_encoder`` accepts.
        ValueError: If ``truncate_dim`` exceeds the model's dimension.

    Example:
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> from matryoshka_retrieval.llama_index import MatryoshkaEmbedding
        >>> embed_model = MatryoshkaEmbedding(SentenceTransformerEncoder(), truncate_dim=64)
        >>> vector = embed_model.get_query_embedding("how do I list files?")
        >>> len(vector), embed_model.dim, embed_model.class_name()
        (64, 64, 'MatryoshkaEmbedding')
    """

    truncate_dim: int | None = Field(
        default=None, description="Dimension of the returned vectors.", frozen=True
    )
    _encoder: Encoder = PrivateAttr()

    def __init__(
        self,
        encoder: Any,
        *,
        truncate_dim: int | None = None,
        dim: int | None = None,
        model_name: str | None = None,
        embed_batch_size: int = 256,
        **kwargs: Any,
    ) -> None:
        enc = adapt_encoder(encoder, truncate_dim=truncate_dim, dim=dim)
        fields: dict[str, Any] = {"model_name": model_name or enc.model_name}
        fields["truncate_dim"] = enc.truncate_dim  # a field of ours, unknown to BaseEmbedding
        super().__init__(**fields, embed_batch_size=embed_batch_size, **kwargs)
        self._encoder = enc

    @classmethod
    def class_name(cls) -> str:
        return "MatryoshkaEmbedding"

    @property
    def encoder(self) -> Encoder:
        """The :class:`~matryoshka_retrieval.Encoder` that computes the embeddings."""
        return self._encoder

    @property
    def dim(self) -> int:
        """Length of the returned vectors."""
        return self._encoder.dim

    def _current_encoder(self) -> Encoder:
        return self._encoder

    def _with_encoder(self, encoder: Encoder) -> Self:
        fields = ("model_name", "embed_batch_size", "callback_manager", "num_workers")
        return type(self)(encoder, **{name: getattr(self, name) for name in fields})

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._vectors([query], query=True)[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._avectors([query], query=True))[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._vectors([text], query=False)[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._avectors([text], query=False))[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._vectors(texts, query=False)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._avectors(texts, query=False)

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return self._get_image_embeddings([img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return (await self._aget_image_embeddings([img_file_path]))[0]

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        vectors: list[Embedding] = self._encoder.encode_images(img_file_paths).tolist()
        return vectors

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        vectors: list[Embedding] = (await self._encoder.aencode_images(img_file_paths)).tolist()
        return vectors


def _filter_clause(item: MetadataFilter) -> dict[str, Any]:
    operator, value = FilterOperator(item.operator), item.value
    name = f"FilterOperator.{operator.name}"
    if operator.name not in SUPPORTED_FILTER_OPERATORS:
        raise ValueError(
            f"{name} ({operator.value!r}) on key {item.key!r} is not supported by the index's "
            f"filters; supported operators are {', '.join(SUPPORTED_FILTER_OPERATORS)}"
        )
    if operator in (FilterOperator.IN, FilterOperator.NIN):
        if not isinstance(value, list) or not value:
            raise ValueError(f"{name} on key {item.key!r} needs a non-empty list, got {value!r}")
    elif value is None or isinstance(value, list):
        raise ValueError(
            f"{name} on key {item.key!r} needs a single str, int or float value, got {value!r}"
        )
    return {item.key: {f"${operator.name.lower()}": value}}


def _filters_clause(filters: MetadataFilters, path: str) -> dict[str, Any]:
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise ValueError(
            f"FilterCondition.{FilterCondition(condition).name} in {path} is not supported by "
            "the index's filters; supported conditions are AND, OR"
        )
    if not filters.filters:
        raise ValueError(f"{path} holds no filters; remove the empty MetadataFilters")
    clauses = [
        _filters_clause(item, f"{path}.filters[{i}]")
        if isinstance(item, MetadataFilters)
        else _filter_clause(item)
        for i, item in enumerate(filters.filters)
    ]
    return clauses[0] if len(clauses) == 1 else {f"${condition.value.lower()}": clauses}


def metadata_filters_to_where(
    filters: MetadataFilters | Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """Translate LlamaIndex ``MetadataFilters`` into the index's Chroma-style ``where`` filter.

    ``EQ`` becomes ``$eq`` (and so on), ``AND`` / ``OR`` ``$and`` / ``$or``, nested to any
    depth; comparisons are type-strict. A ``where`` dict comes back as a copy; ``None`` or no
    filters mean no filter.

    Raises:
        ValueError: For an operator or condition the index cannot evaluate (named), a bad value
            for the operator, or an empty nested ``MetadataFilters``.
        TypeError: If ``filters`` is none of the accepted types.

    Example:
        >>> from llama_index.core.vector_stores import (
        ...     FilterCondition, FilterOperator, MetadataFilter, MetadataFilters)
        >>> from matryoshka_retrieval.llama_index import metadata_filters_to_where
        >>> metadata_filters_to_where(MetadataFilters(
        ...     filters=[
        ...         MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
        ...         MetadataFilter(key="lang", value=["en", "de"], operator=FilterOperator.IN),
        ...     ],
        ...     condition=FilterCondition.OR,
        ... ))
        {'$or': [{'year': {'$gte': 2020}}, {'lang': {'$in': ['en', 'de']}}]}
    """
    if isinstance(filters, MetadataFilters):
        return _filters_clause(filters, "filters") if filters.filters else None
    if filters is None or isinstance(filters, Mapping):
        return None if filters is None else dict(filters)
    raise TypeError(
        "filters must be a llama_index MetadataFilters, a where dict or None, got "
        f"{type(filters).__name__}"
    )


def _json_value(node: BaseNode, key: str, value: Any) -> Any:
    """A metadata value as JSON holds it (NumPy scalars as Python numbers), or a named error."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"node {node.node_id!r}: metadata value {key!r} must be finite")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"node {node.node_id!r}: metadata value {key!r} is a {type(value).__name__}, which "
            f"JSON cannot hold ({exc}); convert it to a str before adding the node"
        ) from None
    return value


def _record(node: BaseNode, reserved: Sequence[str]) -> tuple[str, dict[str, Any] | None]:
    """The text and metadata of the index record that stores ``node``."""
    metadata = {}
    for key, value in node.metadata.items():
        if key in reserved:
            raise ValueError(
                f"node {node.node_id!r}: metadata key {key!r} is reserved (reserved keys: "
                f"{list(reserved)}); rename it, or pass another coarse_score_key"
            )
        metadata[key] = _json_value(node, key, value)
    stored = node_to_metadata_dict(node.model_copy(update={"metadata": metadata}), remove_text=True)
    flat = {
        key: value if isinstance(value, _SCALARS) else json.dumps(value, ensure_ascii=False)
        for key, value in stored.items()
    }
    where = f"node {node.node_id!r} metadata"
    return node.get_content(metadata_mode=MetadataMode.NONE), check_metadata(flat, where)


def _image_fields(node: BaseNode) -> tuple[str | None, str | None, str | None]:
    """A node's image as (base64 data, path, URL): ``ImageNode``, ``ImageDocument``, or a
    ``Node`` with an ``image_resource``."""
    if isinstance(node, (ImageNode, ImageDocument)):
        return node.image, node.image_path, node.image_url
    resource = getattr(node, "image_resource", None)
    if resource is None:
        return None, None, None
    data = resource.data.decode("ascii") if resource.data else None
    path = str(resource.path) if resource.path else None
    return data, path, str(resource.url) if resource.url else None


def _node_input(node: BaseNode, i: int) -> Any:
    """What to embed for a node: its image (bytes or a path) if it has one, else its text."""
    data, path, url = _image_fields(node)
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"node {node.node_id!r} (nodes[{i}]): its image is not valid base64 ({data[:40]!r})"
            ) from None
    if path:
        return Path(path)
    if not node.get_content(metadata_mode=MetadataMode.NONE).strip():
        hint = f"; its image_url {url!r} is not downloaded: set image or image_path" if url else ""
        raise ValueError(f"node {node.node_id!r} (nodes[{i}]) has no text to embed{hint}")
    return node.get_content(metadata_mode=MetadataMode.EMBED)


def _node(id_: str, text: str | None, metadata: Mapping[str, Any]) -> BaseNode:
    """The node a record stores; a record added without LlamaIndex becomes a ``TextNode``."""
    if metadata.get("_node_type") == ImageDocument.class_name() and NODE_STATE_KEY in metadata:
        # the shared metadata_dict_to_node would rebuild it as a TextNode without its image
        node = ImageDocument.from_json(metadata[NODE_STATE_KEY])
        node.set_content(text or "")
        return node
    if NODE_STATE_KEY in metadata:
        return metadata_dict_to_node(dict(metadata), text=text)
    return TextNode(id_=id_, text=text or "", metadata=dict(metadata))


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
        key = coarse_score_key
        if key is not None and (
            not isinstance(key, str) or key[:1] in ("", "$") or key in _RESERVED
        ):
            raise ValueError(
                f"coarse_score_key must be None or a non-empty str not starting with '$' and "
                f"other than {list(_RESERVED)}, got {key!r}"
            )
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
        return self._write(self._records(nodes), vectors, "replace")

    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **add_kwargs)

    def _records(self, nodes: Sequence[BaseNode]) -> _Records:
        key = self.coarse_score_key
        reserved = _RESERVED + ((key,) if key is not None else ())
        pairs = [_record(node, reserved) for node in nodes]
        return [node.node_id for node in nodes], [t for t, _ in pairs], [m for _, m in pairs]

    def _to_embed(self, nodes: Sequence[BaseNode]) -> tuple[Encoder, _Records, list[Any]]:
        """The encoder, checked records and inputs to embed (texts, or an ``ImageNode``'s
        image) for nodes without embeddings."""
        encoder = self._index.encoder
        if encoder is None:
            raise ValueError(
                "add_nodes needs an index with an encoder: build it with "
                "MatryoshkaIndex(encoder=...) or MatryoshkaRetriever.from_nodes(nodes, embed_model)"
            )
        if isinstance(nodes, BaseNode):
            raise TypeError("nodes must be a list of nodes, got a single node; wrap it in a list")
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise TypeError(f"nodes[{i}] must be a llama_index node, got {type(node).__name__}")
        inputs = [_node_input(node, i) for i, node in enumerate(nodes)]
        return encoder, self._records(nodes), inputs

    def _write(self, records: _Records, vectors: ArrayLike, on_conflict: OnConflict) -> list[str]:
        ids, texts, metadatas = records
        if not ids:
            return []
        return self._index.add_vectors(
            vectors, ids=ids, texts=texts, metadatas=metadatas, on_conflict=on_conflict
        )

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node whose source document is ``ref_doc_id``."""
        self._index.delete(self._index.ids(filter={"ref_doc_id": ref_doc_id}), missing="ignore")

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **_: Any
    ) -> None:
        """Delete the nodes in ``node_ids`` that match ``filters`` (``None``: no restriction)."""
        self._index.delete(self._selected(node_ids, filters), missing="ignore")

    def clear(self) -> None:
        self.delete_nodes()

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes in ``node_ids`` that match ``filters`` (``None``: no restriction)."""
        records = self._index.get(self._selected(node_ids, filters))
        return [_node(rec.id, rec.text, rec.metadata) for rec in records]

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
        return self._search(query.query_embedding, query.similarity_top_k, where)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    def _search(self, vector: ArrayLike, k: int, where: Any) -> VectorStoreQueryResult:
        hits = self._index.search(np.asarray(vector, dtype=np.float32), k, filter=where)
        nodes = [self._retrieved(hit) for hit in hits]
        return VectorStoreQueryResult(nodes=nodes, similarities=hits.scores, ids=hits.ids)

    def _retrieved(self, hit: Hit) -> BaseNode:
        node, key = _node(hit.id, hit.text, hit.metadata), self.coarse_score_key
        if key is not None:
            node.metadata[key] = hit.coarse_score
            node.excluded_embed_metadata_keys.append(key)
            node.excluded_llm_metadata_keys.append(key)
        return node


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
        encoder, records, texts = self._store._to_embed(nodes)
        vectors: ArrayLike = encoder.encode_documents(texts) if texts else []
        return self._store._write(records, vectors, on_conflict)

    async def aadd_nodes(
        self, nodes: Sequence[BaseNode], *, on_conflict: OnConflict = "error"
    ) -> list[str]:
        """Async twin of :meth:`add_nodes`: embeds with the encoder's async path."""
        encoder, records, texts = self._store._to_embed(nodes)
        vectors: ArrayLike = await encoder.aencode_documents(texts) if texts else []
        return await asyncio.to_thread(self._store._write, records, vectors, on_conflict)

    def _query_texts(self, query_bundle: QueryBundle) -> tuple[Encoder | None, list[Any]]:
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

    def _nodes(self, vector: ArrayLike) -> list[NodeWithScore]:
        result = self._store._search(vector, self.similarity_top_k, self._where)
        pairs = zip(result.nodes or [], result.similarities or [], strict=True)
        return [NodeWithScore(node=node, score=score) for node, score in pairs]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        encoder, texts = self._query_texts(query_bundle)
        if encoder is None:
            return self._nodes(query_bundle.embedding or [])
        return self._nodes(encoder.encode_queries(texts).mean(axis=0))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        encoder, texts = self._query_texts(query_bundle)
        if encoder is None:
            return await asyncio.to_thread(self._nodes, query_bundle.embedding or [])
        vector = (await encoder.aencode_queries(texts)).mean(axis=0)
        return await asyncio.to_thread(self._nodes, vector)
