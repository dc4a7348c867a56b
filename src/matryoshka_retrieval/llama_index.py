"""LlamaIndex integration: a Matryoshka ``BaseEmbedding`` and a coarse-to-fine ``BaseRetriever``.

Import this module explicitly (``from matryoshka_retrieval.llama_index import ...``); importing
``matryoshka_retrieval`` alone never imports LlamaIndex. It needs the ``llama-index`` extra:
``pip install "matryoshka-retrieval[llama-index]"``.

* :class:`MatryoshkaEmbedding` puts any encoder (or anything
  :func:`~matryoshka_retrieval.as_encoder` accepts) behind LlamaIndex's embedding interface, at a
  chosen ``truncate_dim``, for ``VectorStoreIndex``, ingestion pipelines and ``Settings``.
* :class:`MatryoshkaRetriever` searches a :class:`~matryoshka_retrieval.MatryoshkaIndex`: a scan
  over a short prefix, then an exact rescore with the full vectors. It returns ``NodeWithScore``
  objects and maps LlamaIndex ``MetadataFilters`` to the index's ``where`` filters
  (:func:`metadata_filters_to_where`).

How nodes are stored:
    A node's id, text (``get_content(MetadataMode.NONE)``) and metadata become the index record's
    id, text and metadata. The vector is the encoder's embedding of
    ``get_content(MetadataMode.EMBED)``, the text LlamaIndex itself embeds (metadata included,
    less ``excluded_embed_metadata_keys``). Metadata values that are ``str``, ``int``,
    ``float``, ``bool`` or ``None`` are stored as they are and can be filtered on. Other values
    that JSON can hold (lists, dicts, tuples) are stored as JSON strings and decoded again on
    retrieval (a tuple comes back as a list); filters see them as those strings. NumPy scalars
    are stored as Python numbers. Anything else (a ``datetime``, an object) is rejected with a
    ``TypeError`` naming the node and the key: convert it to a string first. What the index's
    metadata cannot hold directly (which keys are JSON, relationships by node id, the excluded
    metadata keys, character offsets, an ``IndexNode``'s ``index_id``) goes into one reserved
    metadata key, :data:`NODE_STATE_KEY`, written only when there is something to keep and
    removed again from retrieved nodes.

Where the coarse score goes:
    ``NodeWithScore.score`` is the full-dimension cosine similarity. The coarse stage's score
    is put in the retrieved node's metadata under ``coarse_score`` (configurable with
    ``coarse_score_key``), on a fresh copy that is never written back to the index, and that key
    is added to the node's ``excluded_llm_metadata_keys`` and ``excluded_embed_metadata_keys`` so
    that it reaches neither the LLM prompt nor an embedding.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._optional import require

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks.base import CallbackManager
    from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
    from llama_index.core.schema import (
        BaseNode,
        IndexNode,
        MetadataMode,
        NodeRelationship,
        NodeWithScore,
        ObjectType,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
        TransformComponent,
    )
    from llama_index.core.vector_stores.types import (
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
    )
except ImportError:
    require("llama_index.core", "llama-index")  # raises the ImportError that names the extra
    raise

from .encoders.base import Encoder
from .encoders.callable import as_encoder
from .index.config import Backend, CoarsePrecision
from .index.filters import compile_filter
from .index.hits import Hit, Hits
from .index.index import MatryoshkaIndex, OnConflict

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COARSE_SCORE_KEY",
    "NODE_STATE_KEY",
    "SUPPORTED_FILTER_OPERATORS",
    "MatryoshkaEmbedding",
    "MatryoshkaRetriever",
    "metadata_filters_to_where",
]

NODE_STATE_KEY = "_llama_index_node"
"""Reserved index metadata key holding the parts of a node the index's metadata cannot hold."""

DEFAULT_COARSE_SCORE_KEY = "coarse_score"
"""Metadata key of a retrieved node that holds the coarse stage's score."""

_OPERATORS: dict[FilterOperator, str] = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
SUPPORTED_FILTER_OPERATORS: tuple[str, ...] = tuple(op.name for op in _OPERATORS)
"""Names of the LlamaIndex ``FilterOperator`` members :func:`metadata_filters_to_where` maps."""

_LIST_OPERATORS = (FilterOperator.IN, FilterOperator.NIN)


def _unwrap(embedder: Any) -> Any:
    """The encoder inside one of our own LlamaIndex embeddings; anything else unchanged."""
    return embedder.encoder if isinstance(embedder, MatryoshkaEmbedding) else embedder


# -- embeddings ------------------------------------------------------------------------------
class MatryoshkaEmbedding(BaseEmbedding):
    """A LlamaIndex embedding model over a Matryoshka encoder, truncated to ``truncate_dim``.

    Texts (documents, nodes) go through the encoder's ``encode_documents`` and queries through
    ``encode_queries``, so models with query / document prompts embed each side correctly.
    Every vector is the renormalised ``truncate_dim`` prefix of the model's embedding (unit
    norm). A batch from LlamaIndex (``embed_batch_size`` texts) is one encoder call, and the
    async methods use the encoder's own async path (native async clients for the hosted APIs, a
    worker thread for local models), so they never block the event loop.

    Args:
        encoder: An :class:`~matryoshka_retrieval.Encoder`, or anything
            :func:`~matryoshka_retrieval.as_encoder` accepts: a ``SentenceTransformer``, a
            LangChain ``Embeddings``, another LlamaIndex ``BaseEmbedding``, or a function of a
            list of texts (which needs ``dim``).
        truncate_dim: Output dimension; ``None`` keeps the encoder's own ``truncate_dim``.
        dim: Output width of ``encoder`` when it is a function or a framework object (see
            :func:`~matryoshka_retrieval.as_encoder`).
        model_name: Name to report; defaults to the encoder's ``model_name``.
        embed_batch_size: Texts per call LlamaIndex makes; the encoder splits a call further
            into its own forward-pass or request batches.
        **kwargs: Other ``BaseEmbedding`` fields (``callback_manager``, ``num_workers``, ...).

    Raises:
        TypeError: If ``encoder`` is not something :func:`~matryoshka_retrieval.as_encoder`
            accepts.
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
        default=None,
        description="Dimension of the returned vectors (a renormalised prefix of the model's "
        "embedding); None for the model's full dimension.",
        frozen=True,
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
        enc = as_encoder(_unwrap(encoder), truncate_dim=truncate_dim, dim=dim)
        fields: dict[str, Any] = {
            "model_name": model_name or enc.model_name,
            "truncate_dim": enc.truncate_dim,
            "embed_batch_size": embed_batch_size,
            **kwargs,
        }
        super().__init__(**fields)
        self._encoder = enc

    @classmethod
    def class_name(cls) -> str:
        """Name LlamaIndex records when it serialises this component."""
        return "MatryoshkaEmbedding"

    @property
    def encoder(self) -> Encoder:
        """The :class:`~matryoshka_retrieval.Encoder` that computes the embeddings."""
        return self._encoder

    @property
    def dim(self) -> int:
        """Length of the returned vectors."""
        return self._encoder.dim

    def with_truncate_dim(self, truncate_dim: int | None) -> MatryoshkaEmbedding:
        """A copy at another dimension that shares the model (costs nothing to make).

        Raises:
            ValueError: If ``truncate_dim`` exceeds the model's dimension.
        """
        return MatryoshkaEmbedding(
            self._encoder.with_truncate_dim(truncate_dim),
            model_name=self.model_name,
            embed_batch_size=self.embed_batch_size,
            callback_manager=self.callback_manager,
            num_workers=self.num_workers,
        )

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.encode_queries([query])[0].tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        vectors = await self._encoder.aencode_queries([query])
        return vectors[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encoder.encode_documents([text])[0].tolist()  # type: ignore[no-any-return]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        vectors = await self._encoder.aencode_documents([text])
        return vectors[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encoder.encode_documents(texts).tolist()  # type: ignore[no-any-return]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        vectors = await self._encoder.aencode_documents(texts)
        return vectors.tolist()  # type: ignore[no-any-return]


# -- filters ---------------------------------------------------------------------------------
def _filter_clause(item: MetadataFilter) -> dict[str, Any]:
    operator = FilterOperator(item.operator)
    if operator not in _OPERATORS:
        raise ValueError(
            f"FilterOperator.{operator.name} ({operator.value!r}) on key {item.key!r} is not "
            f"supported by MatryoshkaRetriever; supported operators are "
            f"{', '.join(SUPPORTED_FILTER_OPERATORS)}"
        )
    value = item.value
    if operator in _LIST_OPERATORS:
        if not isinstance(value, list) or not value:
            raise ValueError(
                f"FilterOperator.{operator.name} on key {item.key!r} needs a non-empty list of "
                f"values, got {value!r}"
            )
    elif value is None or isinstance(value, list):
        raise ValueError(
            f"FilterOperator.{operator.name} on key {item.key!r} needs a single str, int or "
            f"float value, got {value!r}"
        )
    return {item.key: {_OPERATORS[operator]: value}}


def _filters_clause(filters: MetadataFilters, path: str) -> dict[str, Any]:
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR):
        raise ValueError(
            f"FilterCondition.{FilterCondition(condition).name} in {path} is not supported by "
            "MatryoshkaRetriever; supported conditions are AND, OR"
        )
    if not filters.filters:
        raise ValueError(f"{path} holds no filters; remove the empty MetadataFilters")
    clauses = []
    for i, item in enumerate(filters.filters):
        if isinstance(item, MetadataFilters):
            clauses.append(_filters_clause(item, f"{path}.filters[{i}]"))
        else:
            clauses.append(_filter_clause(item))
    if len(clauses) == 1:
        return clauses[0]
    return {"$and" if condition == FilterCondition.AND else "$or": clauses}


def metadata_filters_to_where(
    filters: MetadataFilters | Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """Translate LlamaIndex ``MetadataFilters`` into the index's Chroma-style ``where`` filter.

    ``EQ``, ``NE``, ``GT``, ``GTE``, ``LT``, ``LTE``, ``IN`` and ``NIN`` map to ``$eq`` ...
    ``$nin``; ``FilterCondition.AND`` / ``OR`` map to ``$and`` / ``$or``, nested to any depth.
    Comparisons are type-strict, as in the index: ``5`` does not match ``"5"``. A record without
    the key matches only ``NE`` and ``NIN``. A ``where`` dict is returned as a plain copy, and
    ``None`` or a ``MetadataFilters`` with no filters means no filter.

    Args:
        filters: LlamaIndex filters, a ``where`` dict, or ``None``.

    Returns:
        The ``where`` filter, or ``None`` for no filter.

    Raises:
        ValueError: For an operator or condition the index cannot evaluate (``ANY``, ``ALL``,
            ``CONTAINS``, ``TEXT_MATCH``, ``IS_EMPTY``, ``NOT``, ...; the message names it), a
            list value for a single-value operator, a non-list or empty list for ``IN`` /
            ``NIN``, or an empty nested ``MetadataFilters``.
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
    if filters is None:
        return None
    if isinstance(filters, MetadataFilters):
        if not filters.filters:
            return None
        return _filters_clause(filters, "filters")
    if isinstance(filters, Mapping):
        return dict(filters)
    raise TypeError(
        "filters must be a llama_index MetadataFilters, a where dict or None, got "
        f"{type(filters).__name__}"
    )


# -- nodes <-> index records -----------------------------------------------------------------
def _stored_metadata(
    node: BaseNode, reserved: tuple[str, ...]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Split a node's metadata into index-storable values and the node state for NODE_STATE_KEY."""
    stored: dict[str, Any] = {}
    json_keys: list[str] = []
    for key, raw in node.metadata.items():
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise ValueError(
                f"node {node.node_id!r}: metadata key {key!r} must be a non-empty str not "
                "starting with '$'"
            )
        if key in reserved:
            raise ValueError(
                f"node {node.node_id!r}: metadata key {key!r} is reserved by "
                f"MatryoshkaRetriever (reserved keys: {list(reserved)}); rename it, or pass "
                "another coarse_score_key"
            )
        value = raw.item() if isinstance(raw, np.generic) else raw
        if value is None or isinstance(value, (str, bool, int)):
            stored[key] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(
                    f"node {node.node_id!r}: metadata value {key!r} must be finite, got {value}"
                )
            stored[key] = value
        else:
            try:
                stored[key] = json.dumps(value, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"node {node.node_id!r}: metadata value {key!r} is a "
                    f"{type(raw).__name__}, which is neither a str, int, float, bool or None "
                    f"nor JSON-serialisable ({exc}); convert it to a str before adding the node"
                ) from None
            json_keys.append(key)

    state: dict[str, Any] = {}
    if json_keys:
        state["json_keys"] = json_keys
    if node.relationships:
        state["relationships"] = {
            rel.name: (
                [_related(info) for info in related]
                if isinstance(related, list)
                else _related(related)
            )
            for rel, related in node.relationships.items()
        }
    if node.excluded_embed_metadata_keys:
        state["excluded_embed_metadata_keys"] = list(node.excluded_embed_metadata_keys)
    if node.excluded_llm_metadata_keys:
        state["excluded_llm_metadata_keys"] = list(node.excluded_llm_metadata_keys)
    for offset in ("start_char_idx", "end_char_idx"):
        if getattr(node, offset, None) is not None:
            state[offset] = getattr(node, offset)
    if isinstance(node, IndexNode):
        state["index_id"] = node.index_id
    return stored or None, state


def _related(info: RelatedNodeInfo) -> dict[str, Any]:
    node_type = info.node_type
    if isinstance(node_type, ObjectType):
        node_type = node_type.name
    return {"node_id": info.node_id, "node_type": node_type, "hash": info.hash}


def _related_info(data: dict[str, Any]) -> RelatedNodeInfo:
    node_type = data.get("node_type")
    if isinstance(node_type, str) and node_type in ObjectType.__members__:
        node_type = ObjectType[node_type]
    return RelatedNodeInfo(node_id=data["node_id"], node_type=node_type, hash=data.get("hash"))


def _node_from_hit(hit: Hit, coarse_score_key: str | None) -> NodeWithScore:
    """Rebuild the stored node from a hit, with the coarse score on its metadata copy."""
    metadata = dict(hit.metadata)
    state = json.loads(metadata.pop(NODE_STATE_KEY, None) or "{}")
    for key in state.get("json_keys", ()):
        if isinstance(metadata.get(key), str):
            metadata[key] = json.loads(metadata[key])
    relationships: dict[NodeRelationship, RelatedNodeInfo | list[RelatedNodeInfo]] = {}
    for name, related in state.get("relationships", {}).items():
        relationships[NodeRelationship[name]] = (
            [_related_info(r) for r in related]
            if isinstance(related, list)
            else _related_info(related)
        )
    excluded_embed = list(state.get("excluded_embed_metadata_keys", ()))
    excluded_llm = list(state.get("excluded_llm_metadata_keys", ()))
    if coarse_score_key is not None:
        metadata[coarse_score_key] = hit.coarse_score
        excluded_embed.append(coarse_score_key)
        excluded_llm.append(coarse_score_key)
    fields: dict[str, Any] = {
        "id_": hit.id,
        "text": hit.text or "",
        "metadata": metadata,
        "relationships": relationships,
        "excluded_embed_metadata_keys": excluded_embed,
        "excluded_llm_metadata_keys": excluded_llm,
        "start_char_idx": state.get("start_char_idx"),
        "end_char_idx": state.get("end_char_idx"),
    }
    node = IndexNode(index_id=state["index_id"], **fields) if "index_id" in state else None
    return NodeWithScore(node=node or TextNode(**fields), score=hit.score)


# -- retriever -------------------------------------------------------------------------------
class MatryoshkaRetriever(BaseRetriever):
    """A LlamaIndex retriever over a :class:`~matryoshka_retrieval.MatryoshkaIndex`.

    Each query is embedded with the index's encoder (``encode_queries``), the index scans the
    short coarse prefix for a shortlist and rescores it exactly with the full vectors; each hit
    comes back as a ``NodeWithScore`` whose ``score`` is the full-dimension cosine similarity
    and whose node carries the stored id, text and metadata, plus the coarse stage's score under
    ``coarse_score_key`` (hidden from the LLM and from embeddings). See the module docstring for
    how node metadata is stored.

    If the index has no encoder, the query's precomputed ``QueryBundle.embedding`` is searched
    instead; with an encoder that embedding is ignored, because another retriever may have
    filled it in with a different model's vector. A ``QueryBundle`` with several
    ``custom_embedding_strs`` (HyDE and similar transforms) is searched with the mean of their
    query embeddings.

    Build one over an index you have (the constructor), or let :meth:`from_nodes` /
    :meth:`from_documents` build the index.

    Args:
        index: The index to search; it needs an encoder for text queries and :meth:`add_nodes`.
        similarity_top_k: Nodes returned per query.
        filters: LlamaIndex ``MetadataFilters`` (or a Chroma-style ``where`` dict) applied to
            every query, before the shortlist is cut (see :func:`metadata_filters_to_where`).
        coarse_score_key: Metadata key for the coarse score on retrieved nodes; ``None`` leaves
            it out.
        callback_manager: LlamaIndex callback manager.
        object_map: Objects for recursive retrieval through ``IndexNode`` results.
        objects: ``IndexNode`` objects for recursive retrieval (instead of ``object_map``).
        verbose: Print recursive-retrieval steps.

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
        if not isinstance(index, MatryoshkaIndex):
            raise TypeError(
                f"index must be a MatryoshkaIndex, got {type(index).__name__}; use "
                "MatryoshkaRetriever.from_nodes / from_documents to build one"
            )
        if (
            isinstance(similarity_top_k, bool)
            or not isinstance(similarity_top_k, int)
            or similarity_top_k < 1
        ):
            raise ValueError(
                f"similarity_top_k must be an int of at least 1, got {similarity_top_k!r}"
            )
        if coarse_score_key is not None and (
            not isinstance(coarse_score_key, str)
            or not coarse_score_key
            or coarse_score_key.startswith("$")
            or coarse_score_key == NODE_STATE_KEY
        ):
            raise ValueError(
                f"coarse_score_key must be None or a non-empty str not starting with '$' and "
                f"other than {NODE_STATE_KEY!r}, got {coarse_score_key!r}"
            )
        self._index = index
        self.similarity_top_k = similarity_top_k
        self.filters = filters  # validated and translated by the setter
        self.coarse_score_key = coarse_score_key
        super().__init__(
            callback_manager=callback_manager,
            object_map=object_map,
            objects=objects,
            verbose=verbose,
        )

    @classmethod
    def class_name(cls) -> str:
        """Name of this component, as LlamaIndex components report it."""
        return "MatryoshkaRetriever"

    @property
    def index(self) -> MatryoshkaIndex:
        """The index this retriever searches."""
        return self._index

    @property
    def filters(self) -> MetadataFilters | Mapping[str, Any] | None:
        """The filters applied to every query; setting them validates and translates them.

        Raises:
            ValueError: On assignment, for an operator or condition the index cannot evaluate.
        """
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

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        embed_model: Any = None,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        filters: MetadataFilters | Mapping[str, Any] | None = None,
        coarse_score_key: str | None = DEFAULT_COARSE_SCORE_KEY,
        coarse_dim: int | None = 64,
        rescore_multiplier: int = 10,
        precision: CoarsePrecision = "float32",
        stages: Sequence[tuple[int, int]] | None = None,
        backend: Backend = "exact",
        device: str = "auto",
        callback_manager: CallbackManager | None = None,
        **index_kwargs: Any,
    ) -> MatryoshkaRetriever:
        """Build an in-memory index over nodes and a retriever over it.

        Args:
            nodes: The nodes (``TextNode``, ``Document``, ``IndexNode``, ...); their ids must be
                unique.
            embed_model: A :class:`MatryoshkaEmbedding`, an
                :class:`~matryoshka_retrieval.Encoder`, or anything
                :func:`~matryoshka_retrieval.as_encoder` accepts (another LlamaIndex embedding,
                a ``SentenceTransformer``, ...). ``None`` takes LlamaIndex's
                ``Settings.embed_model``. Its output (its ``truncate_dim``, if set) is what the
                index stores as the full vectors.
            similarity_top_k: Nodes returned per query.
            filters: Filters applied to every query (see the class).
            coarse_score_key: Metadata key for the coarse score (see the class).
            coarse_dim: Prefix length of the coarse stage; ``None`` for exact full-dim search.
            rescore_multiplier: Shortlist size per wanted result.
            precision: Precision of the coarse prefix: ``float32``, ``int8`` or ``binary``.
            stages: A cascade ``[(dim, keep), ...]`` (see
                :class:`~matryoshka_retrieval.MatryoshkaIndex`).
            backend: ``exact`` or ``hnsw``.
            device: Where the rerank runs: ``auto``, ``cpu``, ``cuda``, ...
            callback_manager: LlamaIndex callback manager.
            **index_kwargs: Other :class:`~matryoshka_retrieval.MatryoshkaIndex` options
                (``ef_search``, ``rerank``, ...).

        Raises:
            ValueError: For an invalid index configuration, or a node without text, with a
                reserved metadata key or a duplicate id.
            TypeError: For metadata that cannot be stored (naming the node and key).
        """
        if embed_model is None:
            from llama_index.core.settings import Settings

            embed_model = Settings.embed_model
        index = MatryoshkaIndex(
            _unwrap(embed_model),
            coarse_dim=coarse_dim,
            rescore_multiplier=rescore_multiplier,
            precision=precision,
            stages=stages,
            backend=backend,
            device=device,
            **index_kwargs,
        )
        retriever = cls(
            index,
            similarity_top_k=similarity_top_k,
            filters=filters,
            coarse_score_key=coarse_score_key,
            callback_manager=callback_manager,
        )
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
        """Split documents into nodes, then build as :meth:`from_nodes` does.

        Args:
            documents: LlamaIndex ``Document`` objects.
            embed_model: As in :meth:`from_nodes`.
            transformations: Node parsers and other transformations to run first; ``None``
                takes LlamaIndex's ``Settings.transformations`` (a ``SentenceSplitter`` by
                default). An embedding step among them is wasted work: nodes are always
                embedded with ``embed_model``.
            show_progress: Show LlamaIndex's progress bars while transforming.
            **kwargs: The keyword arguments of :meth:`from_nodes`.
        """
        from llama_index.core.ingestion import run_transformations
        from llama_index.core.settings import Settings

        steps = list(transformations) if transformations is not None else Settings.transformations
        nodes = run_transformations(list(documents), steps, show_progress=show_progress)
        return cls.from_nodes(nodes, embed_model, **kwargs)

    def _prepare(
        self, nodes: Sequence[BaseNode]
    ) -> tuple[Encoder, list[str], list[str], list[str], list[dict[str, Any] | None]]:
        encoder = self._index.encoder
        if encoder is None:
            raise ValueError(
                "add_nodes needs an index with an encoder: build it with "
                "MatryoshkaIndex(encoder=...) or MatryoshkaRetriever.from_nodes(nodes, embed_model)"
            )
        if isinstance(nodes, BaseNode):
            raise TypeError("nodes must be a list of nodes, got a single node; wrap it in a list")
        reserved = (NODE_STATE_KEY,) + (
            (self.coarse_score_key,) if self.coarse_score_key is not None else ()
        )
        ids, texts, embed_texts, metadatas = [], [], [], []
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                raise TypeError(f"nodes[{i}] must be a llama_index node, got {type(node).__name__}")
            text = node.get_content(metadata_mode=MetadataMode.NONE)
            if not text.strip():
                raise ValueError(
                    f"node {node.node_id!r} (nodes[{i}]) has no text; only text nodes can be "
                    "embedded and retrieved"
                )
            stored, state = _stored_metadata(node, reserved)
            if state:
                stored = {**(stored or {}), NODE_STATE_KEY: json.dumps(state, ensure_ascii=False)}
            ids.append(node.node_id)
            texts.append(text)
            embed_texts.append(node.get_content(metadata_mode=MetadataMode.EMBED))
            metadatas.append(stored)
        return encoder, ids, texts, embed_texts, metadatas

    def add_nodes(
        self, nodes: Sequence[BaseNode], *, on_conflict: OnConflict = "error"
    ) -> list[str]:
        """Embed nodes with the index's encoder and add them to the index.

        Args:
            nodes: The nodes; see the module docstring for what is stored.
            on_conflict: ``error`` rejects node ids already in the index; ``replace``
                overwrites them.

        Returns:
            The node ids, in input order.

        Raises:
            ValueError: Without an encoder, for a node without text, a reserved metadata key,
                or duplicate / existing ids. Nothing is stored from a failed call.
            TypeError: For metadata that cannot be stored (naming the node and key).
        """
        encoder, ids, texts, embed_texts, metadatas = self._prepare(nodes)
        if not ids:
            return []
        logger.debug("embedding %d nodes with %r", len(ids), encoder)
        vectors = encoder.encode_documents(embed_texts)
        return self._index.add_vectors(
            vectors, ids=ids, texts=texts, metadatas=metadatas, on_conflict=on_conflict
        )

    async def aadd_nodes(
        self, nodes: Sequence[BaseNode], *, on_conflict: OnConflict = "error"
    ) -> list[str]:
        """Async twin of :meth:`add_nodes`: embeds with the encoder's async path."""
        encoder, ids, texts, embed_texts, metadatas = self._prepare(nodes)
        if not ids:
            return []
        vectors = await encoder.aencode_documents(embed_texts)
        return await asyncio.to_thread(
            self._index.add_vectors,
            vectors,
            ids=ids,
            texts=texts,
            metadatas=metadatas,
            on_conflict=on_conflict,
        )

    # -- retrieving ----------------------------------------------------------------------
    def _precomputed(self, query_bundle: QueryBundle) -> np.ndarray[Any, Any] | None:
        """The bundle's own embedding, used only when the index has no encoder."""
        if self._index.encoder is not None or query_bundle.embedding is None:
            return None
        return np.asarray(query_bundle.embedding, dtype=np.float32)

    def _nodes(self, hits: Hits) -> list[NodeWithScore]:
        return [_node_from_hit(hit, self.coarse_score_key) for hit in hits]

    def _query_strings(self, query_bundle: QueryBundle) -> list[str]:
        strings = list(query_bundle.embedding_strs)
        if not strings:
            raise ValueError("the query is empty: give a query string or custom_embedding_strs")
        return strings

    def _query_encoder(self) -> Encoder:
        encoder = self._index.encoder
        if encoder is None:
            raise ValueError(
                "a query with several custom_embedding_strs needs an index with an encoder"
            )
        return encoder

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        k, where = self.similarity_top_k, self._where
        vector = self._precomputed(query_bundle)
        if vector is not None:
            return self._nodes(self._index.search(vector, k, filter=where))
        strings = self._query_strings(query_bundle)
        if len(strings) == 1:  # the index embeds the text with its encoder
            return self._nodes(self._index.search(strings[0], k, filter=where))
        mean = self._query_encoder().encode_queries(strings).mean(axis=0)
        return self._nodes(self._index.search(mean, k, filter=where))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        k, where = self.similarity_top_k, self._where
        vector = self._precomputed(query_bundle)
        if vector is not None:
            return self._nodes(await self._index.asearch(vector, k, filter=where))
        strings = self._query_strings(query_bundle)
        if len(strings) == 1:
            return self._nodes(await self._index.asearch(strings[0], k, filter=where))
        vectors = await self._query_encoder().aencode_queries(strings)
        return self._nodes(await self._index.asearch(vectors.mean(axis=0), k, filter=where))
