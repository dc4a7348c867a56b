"""matryoshka-retrieval: Matryoshka embeddings for retrieval.

Truncate and quantize Matryoshka (MRL) embeddings, and encode text with local models or hosted
APIs at a chosen prefix length. Framework integrations live in their own modules and are imported
only when used.

Example:
    >>> import numpy as np
    >>> from matryoshka_retrieval import truncate
    >>> truncate(np.ones((2, 8)), 4).shape
    (2, 4)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
from .index import Hit, Hits, IndexCorruptedError, MatryoshkaIndex, Record, UnknownIdError
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

try:
    __version__ = version("matryoshka-retrieval")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

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
    "dequantize",
    "int8_scores",
    "quantize",
    "truncate",
]
