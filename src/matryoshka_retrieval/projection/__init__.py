"""Projections that make any embedder truncatable: a PCA rotation, or a learned rotation.

A model that was not Matryoshka-trained spreads information over all its dims, so its prefixes
lose quality fast. A :class:`Projection` maps its full vectors so the prefixes carry more:

- ``pca``: an orthogonal rotation onto the corpus's principal axes, largest variance first. Dot
  products, and so full-dim scores, are unchanged.
- ``learned``: the PCA rotation followed by a learned orthogonal rotation, trained with torch on
  the corpus's own embeddings (no labels) with a loss at each prefix dim that keeps the full-dim
  similarity structure, in the spirit of Matryoshka-Adaptor (Yoon et al., 2024). Being
  orthogonal, it too leaves full-dim scores unchanged. Optional query/document pairs (real ones,
  or :func:`~matryoshka_retrieval.datasets.corpus_pairs` made from the documents' own text) add
  an in-batch ranking loss at each prefix dim, which moves what queries and documents share to
  the front.
- ``adapter``: for embedders whose weights cannot be trained (API models, frozen local ones). The
  learned rotation followed by a residual MLP, ``z = y + g(y)``, trained with the same kind of
  losses plus a full-dim term that holds the full dim on the original model's similarities.
  Unlike a rotation it can reweight and bend what the prefixes hold; full-dim scores are no
  longer exactly unchanged, so after training the residual is scaled down, where needed, until
  the full-dim top-10 neighbours of the fitted vectors agree with the original ones on at least
  ``min_agreement`` (default 0.99) of them.

Projections save to ``.npz`` (no pickle) and wrap any encoder with :class:`ProjectedEncoder`.

The package is split along those jobs: :mod:`.base` (the :class:`Projection` and its residual),
:mod:`.fit` (the entry point and the PCA rotation), :mod:`.learned` (the learned rotation),
:mod:`.adapter` (the residual adapter and its calibration), :mod:`.agreement` (neighbourhood
agreement) and :mod:`.encoder` (:class:`ProjectedEncoder`).

Example:
    >>> import numpy as np
    >>> from matryoshka_retrieval.projection import fit_projection
    >>> x = np.random.default_rng(0).normal(size=(500, 32)) * np.linspace(0.1, 2.0, 32)
    >>> pca = fit_projection(x, method="pca")
    >>> y, unit = pca.apply(x), x / np.linalg.norm(x, axis=1, keepdims=True)
    >>> bool(np.allclose(y @ y.T, unit @ unit.T, atol=1e-5))  # full-dim scores unchanged
    True
"""

from __future__ import annotations

from .adapter import _adapter_loss as _adapter_loss
from .adapter import _AdapterNet as _AdapterNet
from .adapter import _calibrate as _calibrate
from .adapter import _mine_neighbours as _mine_neighbours
from .adapter import _neighbour_batches as _neighbour_batches
from .adapter import _train_adapter as _train_adapter
from .agreement import _agreement as _agreement
from .agreement import top_k_agreement
from .base import _RESIDUAL_NAMES as _RESIDUAL_NAMES
from .base import Projection, Residual
from .encoder import ProjectedEncoder
from .fit import _METHODS as _METHODS
from .fit import Method as Method
from .fit import _chain as _chain
from .fit import _check_fit_dims as _check_fit_dims
from .fit import _check_pairs as _check_pairs
from .fit import _pca_rotation as _pca_rotation
from .fit import fit_projection
from .learned import PairVectors as PairVectors
from .learned import _orthogonal as _orthogonal
from .learned import _pair_loss as _pair_loss
from .learned import _Settings as _Settings
from .learned import _structure_loss as _structure_loss
from .learned import _train_rotation as _train_rotation

__all__ = ["ProjectedEncoder", "Projection", "Residual", "fit_projection", "top_k_agreement"]
