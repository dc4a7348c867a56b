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

Projections save to ``.npz`` (no pickle) and wrap any encoder with :class:`ProjectedEncoder`.

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

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._optional import require
from .encoders.base import Encoder, InputKind, check_truncate_dim
from .truncation import as_float_matrix, check_finite, l2_normalize

logger = logging.getLogger(__name__)

__all__ = ["ProjectedEncoder", "Projection", "fit_projection"]

Method = Literal["pca", "learned"]


@dataclass
class Projection:
    """A map applied to full vectors before truncation.

    Attributes:
        method: ``pca`` or ``learned``.
        rotation: Orthogonal ``[dim, dim]`` matrix applied as ``vectors @ rotation``.
        info: What it was fitted on, for the record.
    """

    method: str
    rotation: NDArray[np.float32]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.rotation.shape[0])

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the parameters: two projections with equal fingerprints map alike."""
        digest = hashlib.sha256(self.method.encode())
        digest.update(np.ascontiguousarray(self.rotation).tobytes())
        return digest.hexdigest()

    def apply(self, vectors: ArrayLike) -> NDArray[np.float32]:
        """Map full vectors ``[n, dim]`` (or one ``[dim]``); returns unit-norm float32 rows."""
        matrix, single = as_float_matrix(vectors)
        if matrix.shape[1] != self.dim:
            raise ValueError(
                f"vectors have {matrix.shape[1]} dims but this projection maps {self.dim}-dim "
                "vectors"
            )
        check_finite(matrix)
        x = l2_normalize(np.array(matrix, dtype=np.float32, copy=True)) @ self.rotation
        out = l2_normalize(np.ascontiguousarray(x, dtype=np.float32))
        return out[0] if single else out

    def to_manifest(self) -> dict[str, Any]:
        """What an index manifest records about the projection."""
        return {"method": self.method, "dim": self.dim, "fingerprint": self.fingerprint}

    def save(self, path: str | Path) -> None:
        """Write to ``.npz`` (arrays and a JSON header; nothing pickled)."""
        header = {"method": self.method, "info": self.info, "format_version": 1}
        arrays = {"rotation": self.rotation, "header": np.array(json.dumps(header))}
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> Projection:
        """Read a projection written by :meth:`save`.

        Raises:
            ValueError: If the file is not a projection of this library.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                rotation = data["rotation"].astype(np.float32)
        except (KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a saved projection: {exc}") from exc
        return cls(header["method"], rotation, header.get("info", {}))


def _pca_rotation(x: NDArray[np.float32]) -> NDArray[np.float32]:
    centered = x - x.mean(axis=0)
    covariance = centered.T.astype(np.float64) @ centered / max(1, len(x) - 1)
    _, vectors = np.linalg.eigh(covariance)
    return np.ascontiguousarray(vectors[:, ::-1], dtype=np.float32)


def fit_projection(
    vectors: ArrayLike,
    *,
    method: Method = "pca",
    dims: Sequence[int] | None = None,
    epochs: int = 20,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    temperature: float = 0.05,
    pairs: tuple[ArrayLike, ArrayLike] | None = None,
    pair_weight: float = 1.0,
    seed: int = 0,
    show_progress_bar: bool = True,
) -> Projection:
    """Fit a projection on a sample of corpus embeddings (no queries or labels needed).

    With ``pairs`` (``learned`` only), the rotation also learns from query/document pairs: at
    each prefix dim, every query of a batch of pairs should score its own document above the
    others (an in-batch softmax loss), which moves what queries and documents share to the
    front. Pairs need not be labelled: :func:`~matryoshka_retrieval.datasets.corpus_pairs`
    makes them from the documents' own text. The result is still a rotation, so full-dim scores
    stay unchanged; the prefixes then rank for retrieval rather than copy the full-dim ranking.

    Args:
        vectors: ``[n, dim]`` full embeddings of the corpus (or a sample of it).
        method: ``pca`` (a rotation onto the principal axes) or ``learned`` (that rotation
            followed by a learned orthogonal rotation, trained with torch). Both are orthogonal:
            full-dim scores are unchanged.
        dims: Prefix dims the learned rotation is trained for; default: the powers of two from
            16 below the full dim.
        epochs: Passes over ``vectors`` (``learned``).
        batch_size: Vectors per step; each step compares all pairs within the batch.
        learning_rate: Adam step size.
        temperature: Softmax temperature of the neighbour-ranking and pair terms.
        pairs: ``(query_vectors, document_vectors)``, row ``i`` of each a pair, embedded with
            the same model as ``vectors`` (queries as queries, documents as documents).
        pair_weight: Weight of the pair term against the neighbour-preserving terms.
        seed: Random seed.
        show_progress_bar: Show a progress bar while training.

    Returns:
        The fitted :class:`Projection`.

    Raises:
        ValueError: For an unknown method, too few vectors, dims outside ``1..dim``, or pairs
            that are not two equal-length ``[m, dim]`` arrays (or given with ``pca``).
    """
    matrix, _ = as_float_matrix(vectors)
    check_finite(matrix)
    x = l2_normalize(np.array(matrix, dtype=np.float32, copy=True))
    n, dim = x.shape
    if method not in ("pca", "learned"):
        raise ValueError(f"method={method!r} is not supported; choose 'pca' or 'learned'")
    if n < 2:
        raise ValueError(f"fit_projection needs at least 2 vectors, got {n}")
    for d in dims or ():
        if not 1 <= d <= dim:
            raise ValueError(f"dims holds {d}, out of range 1..{dim}")
    if dims is None:
        dims = [2**i for i in range(4, 12) if 2**i < dim]
    pair_vectors = None
    if pairs is not None:
        if method != "learned":
            raise ValueError("pairs are used by method='learned' only")
        pair_vectors = _check_pairs(pairs, dim)
        if not (pair_weight > 0 and math.isfinite(pair_weight)):
            raise ValueError(f"pair_weight must be a positive number, got {pair_weight}")
    rotation = _pca_rotation(x)
    info: dict[str, Any] = {"vectors": n, "dim": dim}
    if method == "pca":
        return Projection("pca", rotation, info)
    if pair_vectors is not None:
        pair_vectors = (pair_vectors[0] @ rotation, pair_vectors[1] @ rotation)
        info["pairs"] = len(pair_vectors[0])
    learned = _train_rotation(
        x @ rotation,
        sorted(dims),
        pairs=pair_vectors,
        pair_weight=pair_weight,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        temperature=temperature,
        seed=seed,
        show_progress_bar=show_progress_bar,
    )
    info.update({"dims": sorted(dims), "epochs": epochs})
    combined = (rotation.astype(np.float64) @ learned.astype(np.float64)).astype(np.float32)
    return Projection("learned", np.ascontiguousarray(combined), info)


def _check_pairs(
    pairs: tuple[ArrayLike, ArrayLike], dim: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
        raise ValueError("pairs must be (query_vectors, document_vectors)")
    checked = []
    for name, part in zip(("query", "document"), pairs, strict=True):
        matrix, single = as_float_matrix(part)
        if single or matrix.shape[1] != dim:
            raise ValueError(
                f"pairs: the {name} vectors must be [m, {dim}], got shape {np.shape(part)}"
            )
        check_finite(matrix)
        checked.append(l2_normalize(np.array(matrix, dtype=np.float32, copy=True)))
    if len(checked[0]) != len(checked[1]) or len(checked[0]) < 2:
        raise ValueError(
            f"pairs need as many query as document vectors, at least 2; got "
            f"{len(checked[0])} and {len(checked[1])}"
        )
    return checked[0], checked[1]


def _train_rotation(
    x: NDArray[np.float32],
    dims: list[int],
    *,
    pairs: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
    pair_weight: float = 1.0,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    seed: int,
    show_progress_bar: bool,
) -> NDArray[np.float32]:
    """An orthogonal ``[dim, dim]`` matrix whose prefixes keep the full-dim neighbourhoods."""
    torch = require("torch", "torch")
    tqdm = require("tqdm.auto", "torch").tqdm

    torch.manual_seed(seed)
    dim = x.shape[1]
    linear = torch.nn.Linear(dim, dim, bias=False)
    torch.nn.init.eye_(linear.weight)  # start from the PCA rotation alone
    linear = torch.nn.utils.parametrizations.orthogonal(linear)
    optimizer = torch.optim.Adam(linear.parameters(), lr=learning_rate)
    data = torch.from_numpy(x)
    functional = torch.nn.functional
    if pairs is not None:
        pair_queries, pair_docs = (torch.from_numpy(np.ascontiguousarray(p)) for p in pairs)
        pair_batch = min(256, len(pair_queries))
        labels = torch.arange(pair_batch)
    steps = epochs * math.ceil(len(x) / batch_size)
    with tqdm(total=steps, disable=not show_progress_bar, desc="fitting projection") as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for start in range(0, len(x), batch_size):
                batch = data[order[start : start + batch_size]]
                target = batch @ batch.T  # full-dim similarities (unit vectors)
                neighbours = torch.softmax(target / temperature, dim=1).detach()
                out = linear(batch)
                loss: Any = 0.0
                if pairs is not None:
                    chosen = torch.randperm(len(pair_queries))[:pair_batch]
                    queries, docs = linear(pair_queries[chosen]), linear(pair_docs[chosen])
                for d in dims:
                    prefix = functional.normalize(out[:, :d], dim=1)
                    sims = prefix @ prefix.T
                    # keep the similarity structure, near neighbours weighted up ...
                    loss = loss + ((sims - target) ** 2 * (1 + neighbours * len(batch))).mean()
                    # ... and each point's neighbour distribution
                    loss = loss + 0.1 * functional.kl_div(
                        torch.log_softmax(sims / temperature, dim=1),
                        neighbours,
                        reduction="batchmean",
                    )
                    if pairs is not None:
                        # each query's own document above the others of the batch, at this dim
                        q = functional.normalize(queries[:, :d], dim=1)
                        k = functional.normalize(docs[:, :d], dim=1)
                        logits = q @ k.T / temperature
                        loss = loss + pair_weight * functional.cross_entropy(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update(1)
    with torch.no_grad():
        # linear(x) = x @ W.T, so the matrix applied on the right is W.T
        return np.ascontiguousarray(linear.weight.detach().numpy().T, dtype=np.float32)


class ProjectedEncoder(Encoder):
    """Any encoder, with a projection applied to its full vectors before truncation.

    Documents and queries both go through the projection, so their prefixes compare.

    Args:
        encoder: The encoder (anything :func:`~matryoshka_retrieval.as_encoder` accepts); its
            full output is projected, whatever its own ``truncate_dim``.
        projection: A :class:`Projection` fitted on this encoder's vectors.
        truncate_dim: Output dimension after the projection.
    """

    provider = "projected"

    def __init__(self, encoder: Any, projection: Projection, *, truncate_dim: int | None = None):
        from .encoders.callable import as_encoder

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
