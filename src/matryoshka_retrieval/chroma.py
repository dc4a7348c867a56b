"""Chroma integration: a Matryoshka embedding function, and collections checked for their dim.

Importing it registers :class:`MatryoshkaEmbeddingFunction` with Chroma, so a persisted
collection reopens with it. (The index itself can keep its prefixes in Chroma:
``MatryoshkaIndex(encoder, backend="chroma", chroma_client=client, collection="docs")``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._optional import require

require("chromadb", "chroma")

from chromadb.api.types import Embeddable, EmbeddingFunction, Embeddings  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402

from ._adapter import EncoderAdapter, adapt_encoder  # noqa: E402
from .encoders.base import Encoder  # noqa: E402

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["MatryoshkaEmbeddingFunction", "get_or_create_collection"]

NAME = "matryoshka_retrieval"
_PROMPTS = ("query_prompt", "document_prompt")


def _known_encoders() -> dict[str, Any]:
    """The encoder classes a stored configuration can rebuild, by their ``type`` name."""
    from .encoders import (
        CohereEncoder,
        JinaEncoder,
        OpenAIEncoder,
        SentenceTransformerEncoder,
        VoyageEncoder,
    )

    classes = (SentenceTransformerEncoder, OpenAIEncoder, CohereEncoder, VoyageEncoder, JinaEncoder)
    return {cls.provider: cls for cls in classes}


def _encoder_config(encoder: Encoder) -> dict[str, Any]:
    """What rebuilds ``encoder`` (for the providers this library knows)."""
    known = _known_encoders().items()
    kind = next((name for name, cls in known if isinstance(encoder, cls)), "custom")
    config = {"model": encoder.model_name, "full_dim": encoder.full_dim, "type": kind}
    if kind == "sentence-transformers":
        config.update({key: getattr(encoder, key) for key in _PROMPTS})
    return config


def _encoder_from_config(config: Mapping[str, Any], truncate_dim: int | None) -> Encoder:
    kind, model = config.get("type"), config.get("model")
    cls = _known_encoders().get(str(kind))
    if cls is None:
        raise ValueError(
            f"this collection was embedded with a custom encoder ({model!r}) that cannot be "
            "rebuilt from its configuration: pass embedding_function=MatryoshkaEmbeddingFunction"
            f"(your_encoder, truncate_dim={truncate_dim}) when opening it"
        )
    keys = _PROMPTS if kind == "sentence-transformers" else ("full_dim",)
    encoder: Encoder = cls(model, truncate_dim=truncate_dim, **{k: config.get(k) for k in keys})
    return encoder


@register_embedding_function
class MatryoshkaEmbeddingFunction(EncoderAdapter, EmbeddingFunction[Embeddable]):
    """A Chroma embedding function that returns Matryoshka prefixes at a chosen dimension.

    Documents and queries each take the encoder's own path (prompt or ``input_type``). The
    configuration is stored with the collection, which reopens with the same model and dim.
    With an encoder over a multimodal model (a CLIP model in ``SentenceTransformerEncoder``) it
    embeds Chroma's images as well, as Chroma's own multimodal functions do:
    ``collection.add(images=[...])`` (``H x W x C`` arrays of 0..255), ``uris=`` with an
    ``ImageLoader``, and ``query(query_images=...)`` / ``query_texts`` against them.

    Args:
        encoder: Any encoder (or anything :func:`~matryoshka_retrieval.as_encoder` accepts);
            ``None`` uses the offline default model.
        truncate_dim: Output dimension; ``None`` keeps the encoder's own.
        dim: Output width of ``encoder`` when it is a plain function or a framework object.

    Example:
        >>> import chromadb
        >>> from matryoshka_retrieval.chroma import MatryoshkaEmbeddingFunction
        >>> ef = MatryoshkaEmbeddingFunction(truncate_dim=64)
        >>> client = chromadb.EphemeralClient()
        >>> docs = client.create_collection("docs", embedding_function=ef)
        >>> docs.add(ids=["ls", "cp"], documents=["list directory contents", "copy files"])
        >>> docs.query(query_texts=["duplicate a file"], n_results=1)["ids"]
        [['cp']]
    """

    def __init__(
        self, encoder: Any = None, *, truncate_dim: int | None = None, dim: int | None = None
    ) -> None:
        if encoder is None:
            encoder = _known_encoders()["sentence-transformers"]()
        self._encoder: Encoder | None = adapt_encoder(encoder, truncate_dim=truncate_dim, dim=dim)
        self._config: dict[str, Any] | None = None
        self._truncate_dim = self._encoder.truncate_dim

    @property
    def encoder(self) -> Encoder:
        """The encoder (built from the stored configuration on first use)."""
        if self._encoder is None:
            assert self._config is not None
            self._encoder = _encoder_from_config(self._config["encoder"], self._truncate_dim)
        return self._encoder

    @property
    def dim(self) -> int:
        """Dimension of the embeddings this function returns."""
        if self._encoder is None and self._config is not None:
            return int(self._config["dim"])
        return self.encoder.dim

    def _current_encoder(self) -> Encoder:
        return self.encoder

    def _with_encoder(self, encoder: Encoder) -> Self:
        return type(self)(encoder)

    def __call__(self, input: Embeddable) -> Embeddings:
        return list(self._matrix(_items(input), query=False))

    def embed_query(self, input: Embeddable) -> Embeddings:
        return list(self._matrix(_items(input), query=True))

    @staticmethod
    def name() -> str:
        return NAME

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def supported_spaces(self) -> list[str]:  # type: ignore[override]
        return ["cosine", "ip"]

    def is_legacy(self) -> bool:
        """Chroma's protocol: this function uses the current (non-legacy) configuration API."""
        return False

    def get_config(self) -> dict[str, Any]:
        if self._encoder is None and self._config is not None:
            return dict(self._config)
        encoder = self.encoder
        return {
            "encoder": _encoder_config(encoder),
            "truncate_dim": encoder.truncate_dim,
            "dim": encoder.dim,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MatryoshkaEmbeddingFunction:
        """An instance that builds its encoder on first use (opening a collection stays cheap)."""
        MatryoshkaEmbeddingFunction.validate_config(config)
        ef = MatryoshkaEmbeddingFunction.__new__(MatryoshkaEmbeddingFunction)
        ef._encoder, ef._config, ef._truncate_dim = None, dict(config), config.get("truncate_dim")
        return ef

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        for key in ("encoder", "dim"):
            if key not in config:
                raise ValueError(f"a {NAME} embedding function config needs {key!r}: {config}")

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        _check_same_space(old_config, new_config, "this collection")


def _items(input: Embeddable) -> list[Any]:
    """Chroma's documents as they are, its images (arrays) as ``PIL.Image`` objects."""
    if isinstance(input, (str, np.ndarray)):
        raise TypeError(
            f"input must be a list of documents or images, got a single {type(input).__name__}"
        )
    return [_pil(item, i) if isinstance(item, np.ndarray) else item for i, item in enumerate(input)]


def _pil(array: np.ndarray[Any, Any], i: int) -> Any:
    """One Chroma image (``H x W``, or ``H x W x C`` with C in 1, 3, 4; values 0..255)."""
    pil = require("PIL.Image", "images")
    shape: Sequence[int] = array.shape
    if array.ndim not in (2, 3) or (array.ndim == 3 and shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"images[{i}] has shape {tuple(shape)}; an image is H x W or H x W x C, C in 1, 3, 4"
        )
    if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"images[{i}] has values outside 0..255 (min {array.min()}, max {array.max()})"
        )
    pixels = array[:, :, 0] if array.ndim == 3 and shape[2] == 1 else array
    return pil.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))


def _check_same_space(old: Mapping[str, Any], new: Mapping[str, Any], what: str) -> None:
    old_model = (old.get("encoder") or {}).get("model")
    new_model = (new.get("encoder") or {}).get("model")
    if old.get("dim") != new.get("dim"):
        raise ValueError(
            f"{what} holds {old.get('dim')}-dim embeddings (model {old_model!r}, truncate_dim="
            f"{old.get('truncate_dim')}), but the embedding function gives {new.get('dim')}-dim "
            f"embeddings (model {new_model!r}, truncate_dim={new.get('truncate_dim')}); open it "
            f"with truncate_dim={old.get('truncate_dim')} or use another collection"
        )
    if old_model != new_model:
        raise ValueError(
            f"{what} was embedded with model {old_model!r}, not {new_model!r}: vectors of two "
            "models do not compare; use another collection"
        )


def get_or_create_collection(
    client: Any,
    name: str,
    embedding_function: MatryoshkaEmbeddingFunction,
    **kwargs: Any,
) -> Any:
    """Open (or create) a collection, checking it was made at this embedding function's dim.

    Chroma only compares embedding-function names on reopening, so a 256-dim collection opened
    at 64 would fail later with a raw dimension error, or silently mix models.

    Raises:
        ValueError: If the collection holds embeddings of another dim or model (naming both).
    """
    existing = {c.name if hasattr(c, "name") else str(c) for c in client.list_collections()}
    if name in existing:
        collection = client.get_collection(name, embedding_function=embedding_function)
        stored = (collection.configuration_json or {}).get("embedding_function") or {}
        if stored.get("name") == NAME:
            _check_same_space(
                stored.get("config") or {}, embedding_function.get_config(), f"collection {name!r}"
            )
        elif collection.count():
            sample = collection.peek(1).get("embeddings")
            have = len(sample[0]) if sample is not None and len(sample) else None
            if have is not None and have != embedding_function.dim:
                raise ValueError(
                    f"collection {name!r} holds {have}-dim embeddings, but the embedding function "
                    f"gives {embedding_function.dim}-dim embeddings"
                )
        return collection
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata.setdefault("hnsw:space", "cosine")
    return client.create_collection(
        name, embedding_function=embedding_function, metadata=metadata, **kwargs
    )
