"""``ProjectedEncoder``: any encoder with a projection applied to its full vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..encoders.base import Encoder, InputKind, check_truncate_dim
from .base import Projection

__all__ = ["ProjectedEncoder"]


class ProjectedEncoder(Encoder):
    """Any encoder, with a projection applied to its full vectors before truncation.

    Documents and queries both go through the projection, so their prefixes compare.

    Args:
        encoder: The encoder (anything :func:`~matryoshka_retrieval.as_encoder` accepts); its
            full output is projected, whatever its own ``truncate_dim``.
        projection: A :class:`Projection` fitted on this encoder's vectors.
        truncate_dim: Output dimension after the projection.

    Example:
        >>> import numpy as np
        >>> from matryoshka_retrieval import CallableEncoder
        >>> from matryoshka_retrieval.projection import Projection
        >>> inner = CallableEncoder(lambda texts: np.tile([0.0, 1.0], (len(texts), 1)), dim=2)
        >>> swap = Projection("pca", np.array([[0, 1], [1, 0]], dtype=np.float32))
        >>> ProjectedEncoder(inner, swap, truncate_dim=1).encode_queries(["q"]).tolist()
        [[1.0]]
    """

    provider = "projected"

    @classmethod
    def applying(cls, projection: Projection, encoder: Any) -> ProjectedEncoder:
        """``encoder`` with ``projection`` applied: itself if it already applies it; one that
        applies another projection is refused."""
        if isinstance(encoder, ProjectedEncoder):
            if encoder.projection.fingerprint != projection.fingerprint:
                raise ValueError(
                    "the encoder's projection is not the one this index was built with "
                    f"({projection.method}, fingerprint {projection.fingerprint[:12]})"
                )
            return encoder
        return cls(encoder, projection)

    def __init__(self, encoder: Any, projection: Projection, *, truncate_dim: int | None = None):
        from ..encoders.callable import as_encoder

        inner = as_encoder(encoder)
        self.inner = inner.with_truncate_dim(None) if inner.truncate_dim else inner
        if projection.dim != self.inner.full_dim:
            raise ValueError(
                f"the projection maps {projection.dim}-dim vectors but the encoder "
                f"{self.inner.model_name!r} outputs {self.inner.full_dim}"
            )
        self.projection = projection
        self.model_name = self.inner.model_name
        self.full_dim = self.inner.full_dim
        self.truncate_dim = check_truncate_dim(truncate_dim, self.full_dim, self.model_name)

    def _embed(self, texts: list[str], kind: InputKind) -> NDArray[np.float32]:
        full = self.inner._encode(texts, kind)
        return self.projection.apply(full)

    async def _aembed(self, texts: list[str], kind: InputKind) -> NDArray[np.float32]:
        full = await self.inner._aencode(texts, kind)
        return self.projection.apply(full)

    @property
    def supports_images(self) -> bool:
        """Whether the inner encoder embeds images (they go through the projection too)."""
        return self.inner.supports_images

    def _embed_images(self, images: list[Any], kind: InputKind) -> NDArray[np.float32]:
        return self.projection.apply(self.inner._encode(images, kind))

    async def _aembed_images(self, images: list[Any], kind: InputKind) -> NDArray[np.float32]:
        return self.projection.apply(await self.inner._aencode(images, kind))
