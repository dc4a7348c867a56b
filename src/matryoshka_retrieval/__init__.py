"""matryoshka-retrieval: a Matryoshka retriever for LangChain, LlamaIndex and Chroma.

A coarse-to-fine index (:class:`MatryoshkaIndex`) searches a short prefix of Matryoshka (MRL)
embeddings and reranks the shortlist with the full vectors, locally or on PostgreSQL; the
integrations (``matryoshka_retrieval.langchain``, ``.llama_index``, ``.chroma``) put it behind
each framework's own retriever, vector store and embedding interfaces. Encoders turn a local
model or a hosted API into a truncating embedder; ``truncate`` and ``quantize`` are the
primitives underneath. Integrations are imported only when used.

Example:
    >>> import numpy as np
    >>> from matryoshka_retrieval import truncate
    >>> truncate(np.ones((2, 8)), 4).shape
    (2, 4)
"""

from __future__ import annotations

from .encoders import (
    DEFAULT_MODEL,
    CallableEncoder,
    CohereEncoder,
    Encoder,
    EncoderError,
    JinaEncoder,
    OpenAIEncoder,
    RetryPolicy,
    SentenceTransformerEncoder,
    VoyageEncoder,
    as_encoder,
)
from .index import (
    Hit,
    Hits,
    IndexCorruptedError,
    MatryoshkaIndex,
    Record,
    UnknownIdError,
    copy_index,
)
from .quantization import (
    Calibration,
    Precision,
    bytes_per_vector,
    calibrate,
    dequantize,
    int8_scores,
    quantize,
)
from .truncation import truncate

__version__ = "0.2.0"
"""The release; the build reads it from here (``[tool.hatch.version]`` in pyproject.toml)."""

__all__ = [
    "DEFAULT_MODEL",
    "Calibration",
    "CallableEncoder",
    "CohereEncoder",
    "Encoder",
    "EncoderError",
    "Hit",
    "Hits",
    "IndexCorruptedError",
    "JinaEncoder",
    "MatryoshkaIndex",
    "OpenAIEncoder",
    "Precision",
    "Record",
    "RetryPolicy",
    "SentenceTransformerEncoder",
    "UnknownIdError",
    "VoyageEncoder",
    "__version__",
    "as_encoder",
    "bytes_per_vector",
    "calibrate",
    "copy_index",
    "dequantize",
    "int8_scores",
    "quantize",
    "truncate",
]
