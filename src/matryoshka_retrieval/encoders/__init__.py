"""Encoders: one interface over local models, hosted APIs and other frameworks' embedders.

Every encoder has ``encode_documents(texts)`` and ``encode_queries(texts)`` returning float32
``[n, dim]`` arrays with unit-norm rows, async twins ``aencode_documents`` / ``aencode_queries``,
and the attributes ``dim``, ``full_dim``, ``model_name`` and ``truncate_dim``. Provider SDKs are
imported only when an encoder for them is made.
"""

from __future__ import annotations

from ._retry import RetryPolicy
from .base import Encoder, EncoderError
from .callable import CallableEncoder, LangChainEncoder, LlamaIndexEncoder, as_encoder
from .cohere import CohereEncoder
from .jina import JinaEncoder
from .openai import OpenAIEncoder
from .sentence_transformers import DEFAULT_MODEL, SentenceTransformerEncoder, default_model_path
from .voyage import VoyageEncoder

__all__ = [
    "DEFAULT_MODEL",
    "CallableEncoder",
    "CohereEncoder",
    "Encoder",
    "EncoderError",
    "JinaEncoder",
    "LangChainEncoder",
    "LlamaIndexEncoder",
    "OpenAIEncoder",
    "RetryPolicy",
    "SentenceTransformerEncoder",
    "VoyageEncoder",
    "as_encoder",
    "default_model_path",
]
