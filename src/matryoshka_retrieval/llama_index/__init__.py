"""LlamaIndex integration: a Matryoshka embedding, a coarse-to-fine vector store and retriever.

Needs ``pip install "matryoshka-retrieval[llama-index]"``. Nodes are stored with
``node_to_metadata_dict``; filters see their metadata keys and ``ref_doc_id`` (also ``doc_id``,
``document_id``). ``NodeWithScore.score`` is the full-dim cosine; the coarse score is put on
retrieved nodes under ``coarse_score_key``, kept out of prompts, embeddings and the index.

One module per job: :mod:`.embedding` (the embedding model), :mod:`.filters` (``MetadataFilters``
to ``where``), :mod:`.nodes` (nodes to records and back), :mod:`.vector_store` (the store) and
:mod:`.retriever` (the retriever, which searches through the store's public methods).
"""

from __future__ import annotations

from .._optional import require

require("llama_index.core", "llama-index")  # raises the ImportError that names the extra

from .embedding import MatryoshkaEmbedding  # noqa: E402
from .filters import SUPPORTED_FILTER_OPERATORS, metadata_filters_to_where  # noqa: E402
from .nodes import DEFAULT_COARSE_SCORE_KEY, NODE_STATE_KEY  # noqa: E402
from .retriever import MatryoshkaRetriever  # noqa: E402
from .vector_store import MatryoshkaVectorStore  # noqa: E402

__all__ = [
    "DEFAULT_COARSE_SCORE_KEY",
    "NODE_STATE_KEY",
    "SUPPORTED_FILTER_OPERATORS",
    "MatryoshkaEmbedding",
    "MatryoshkaRetriever",
    "MatryoshkaVectorStore",
    "metadata_filters_to_where",
]
