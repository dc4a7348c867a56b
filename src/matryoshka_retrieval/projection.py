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
from .truncation import as_float_matrix, check_finite, l2_normalize, prefix_tensor

logger = logging.getLogger(__name__)

__all__ = ["ProjectedEncoder", "Projection", "Residual", "fit_projection", "top_k_agreement"]

Method = Literal["pca", "learned", "adapter"]
_METHODS = ("pca", "learned", "adapter")
_RESIDUAL_NAMES = ("w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class Residual:
    """The residual MLP of an ``adapter`` projection: ``y + relu(y @ w1 + b1) @ w2 + b2``.

    Attributes:
        w1: ``[dim, hidden]`` input weights.
        b1: ``[hidden]`` input bias.
        w2: ``[hidden, dim]`` output weights.
        b2: ``[dim]`` output bias.
    """

    w1: NDArray[np.float32]
    b1: NDArray[np.float32]
    w2: NDArray[np.float32]
    b2: NDArray[np.float32]

    def __call__(self, y: NDArray[np.float32]) -> NDArray[np.float32]:
        hidden = np.maximum(y @ self.w1 + self.b1, 0)
        return np.asarray(y + hidden @ self.w2 + self.b2, dtype=np.float32)

    def arrays(self) -> dict[str, NDArray[np.float32]]:
        """The four arrays by name (``residual_w1``, ...), as saved."""
        return {f"residual_{name}": getattr(self, name) for name in _RESIDUAL_NAMES}

    def scaled(self, alpha: float) -> Residual:
        """The same MLP with its output (``w2``, ``b2``) multiplied by ``alpha``."""
        return Residual(
            self.w1,
            self.b1,
            (self.w2 * alpha).astype(np.float32),
            (self.b2 * alpha).astype(np.float32),
        )


@dataclass
class Projection:
    """A map applied to full vectors before truncation.

    Attributes:
        method: ``pca``, ``learned`` or ``adapter``.
        rotation: Orthogonal ``[dim, dim]`` matrix applied as ``vectors @ rotation``.
        info: What it was fitted on, for the record.
        residual: The residual MLP applied after the rotation (``adapter`` only).
    """

    method: str
    rotation: NDArray[np.float32]
    info: dict[str, Any] = field(default_factory=dict)
    residual: Residual | None = None

    @property
    def dim(self) -> int:
        """Dimension of the vectors the projection takes and returns."""
        return int(self.rotation.shape[0])

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the parameters: two projections with equal fingerprints map alike."""
        digest = hashlib.sha256(self.method.encode())
        digest.update(np.ascontiguousarray(self.rotation).tobytes())
        if self.residual is not None:  # a rotation alone keeps the fingerprint it always had
            for array in self.residual.arrays().values():
                digest.update(np.ascontiguousarray(array).tobytes())
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
        if self.residual is not None:
            x = self.residual(x)
        out = l2_normalize(np.ascontiguousarray(x, dtype=np.float32))
        return out[0] if single else out

    def to_manifest(self) -> dict[str, Any]:
        """What an index manifest records about the projection."""
        return {"method": self.method, "dim": self.dim, "fingerprint": self.fingerprint}

    def save(self, path: str | Path) -> None:
        """Write to ``.npz`` (arrays and a JSON header; nothing pickled)."""
        version = 1 if self.residual is None else 2
        header = {"method": self.method, "info": self.info, "format_version": version}
        arrays = {"rotation": self.rotation, "header": np.array(json.dumps(header))}
        if self.residual is not None:
            arrays.update(self.residual.arrays())
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
                residual = None
                if "residual_w1" in data:
                    residual = Residual(
                        *(data[f"residual_{n}"].astype(np.float32) for n in _RESIDUAL_NAMES)
                    )
        except (KeyError, ValueError, OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a saved projection: {exc}") from exc
        return cls(header["method"], rotation, header.get("info", {}), residual)


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
    hidden: int | None = None,
    full_weight: float = 4.0,
    min_agreement: float = 0.99,
    seed: int = 0,
    show_progress_bar: bool = True,
) -> Projection:
    """Fit a projection on a sample of corpus embeddings (no queries or labels needed).

    With ``pairs`` (``learned`` and ``adapter``), the map also learns from query/document pairs:
    at each prefix dim, every query of a batch of pairs should score its own document above the
    others (an in-batch softmax loss), which moves what queries and documents share to the
    front. Pairs need not be labelled: :func:`~matryoshka_retrieval.datasets.corpus_pairs`
    makes them from the documents' own text. A ``learned`` projection is still a rotation, so
    full-dim scores stay unchanged; the prefixes then rank for retrieval rather than copy the
    full-dim ranking.

    An ``adapter`` is that rotation followed by a residual MLP, trained for the prefixes with
    in-batch neighbour-distribution losses (each batch holds every vector's nearest full-dim
    neighbours) and, with weight ``full_weight``, for the full dim to keep the original
    similarities; the pairs' queries also learn to keep their own full-dim neighbourhood among
    the documents. The residual is then scaled down where needed, so that full-dim top-10
    search over ``vectors`` (and the pairs' queries) agrees with the original on at least
    ``min_agreement`` of the neighbours (measured for up to 2,000 of them, drawn at random).

    Args:
        vectors: ``[n, dim]`` full embeddings of the corpus (or a sample of it).
        method: ``pca`` (a rotation onto the principal axes), ``learned`` (that rotation
            followed by a learned orthogonal rotation, trained with torch; both orthogonal, so
            full-dim scores are unchanged) or ``adapter`` (the learned rotation and a residual
            MLP, for embedders whose weights you cannot train).
        dims: Prefix dims the learned map is trained for; default: the powers of two from
            16 below the full dim.
        epochs: Passes over ``vectors`` (``learned``, ``adapter``).
        batch_size: Vectors per step; each step compares all pairs within the batch.
        learning_rate: Adam step size.
        temperature: Softmax temperature of the neighbour-ranking and pair terms.
        pairs: ``(query_vectors, document_vectors)``, row ``i`` of each a pair, embedded with
            the same model as ``vectors`` (queries as queries, documents as documents).
        pair_weight: Weight of the pair term against the neighbour-preserving terms.
        hidden: Hidden width of the adapter's MLP; default: the full dim.
        full_weight: Weight of the adapter's full-dim preservation term.
        min_agreement: Least full-dim top-10 agreement with the original vectors that the
            adapter keeps (between 0 and 1).
        seed: Random seed.
        show_progress_bar: Show a progress bar while training.

    Returns:
        The fitted :class:`Projection`.

    Raises:
        ValueError: For an unknown method, too few vectors, dims outside ``1..dim``, pairs
            that are not two equal-length ``[m, dim]`` arrays (or given with ``pca``), or an
            out-of-range setting (the message names it).
    """
    matrix, _ = as_float_matrix(vectors)
    check_finite(matrix)
    x = l2_normalize(np.array(matrix, dtype=np.float32, copy=True))
    n, dim = x.shape
    if method not in _METHODS:
        raise ValueError(
            f"method={method!r} is not supported; choose 'pca', 'learned' or 'adapter'"
        )
    if n < 2:
        raise ValueError(f"fit_projection needs at least 2 vectors, got {n}")
    chosen_dims = _check_fit_dims(dims, dim)
    pair_vectors = None
    if pairs is not None:
        if method == "pca":
            raise ValueError("pairs are used by method='learned' or 'adapter' only")
        pair_vectors = _check_pairs(pairs, dim)
        _check_positive("pair_weight", pair_weight)
    settings = _Settings(
        dims=chosen_dims,
        epochs=_check_count("epochs", epochs),
        batch_size=_check_count("batch_size", batch_size, minimum=2),
        learning_rate=_check_positive("learning_rate", learning_rate),
        temperature=_check_positive("temperature", temperature),
        pair_weight=pair_weight,
        full_weight=_check_positive("full_weight", full_weight),
        hidden=dim if hidden is None else _check_count("hidden", hidden),
        seed=seed,
        show_progress_bar=show_progress_bar,
    )
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"min_agreement must be between 0 and 1, got {min_agreement}")
    rotation = _pca_rotation(x)
    info: dict[str, Any] = {"vectors": n, "dim": dim}
    if method == "pca":
        return Projection("pca", rotation, info)
    rotated_pairs = None
    if pair_vectors is not None:
        rotated_pairs = (pair_vectors[0] @ rotation, pair_vectors[1] @ rotation)
        info["pairs"] = len(pair_vectors[0])
    info.update({"dims": chosen_dims, "epochs": epochs})
    if method == "learned":
        learned = _train_rotation(x @ rotation, settings, pairs=rotated_pairs)
        return Projection("learned", _chain(rotation, learned), info)
    learned, residual = _train_adapter(x @ rotation, settings, pairs=rotated_pairs)
    projection = Projection("adapter", _chain(rotation, learned), info, residual)
    extra = None if pair_vectors is None else pair_vectors[0]
    return _calibrate(projection, x, extra, min_agreement)


@dataclass(frozen=True)
class _Settings:
    """What the learned maps are trained with (checked by :func:`fit_projection`)."""

    dims: list[int]
    epochs: int
    batch_size: int
    learning_rate: float
    temperature: float
    pair_weight: float
    full_weight: float
    hidden: int
    seed: int
    show_progress_bar: bool


def _check_fit_dims(dims: Sequence[int] | None, dim: int) -> list[int]:
    if dims is None:
        return [2**i for i in range(4, 12) if 2**i < dim]
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= dim:
            raise ValueError(f"dims holds {d}, out of range 1..{dim}")
    return sorted({int(d) for d in dims})


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and value > 0 and math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return float(value)


def _check_count(name: str, value: int, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return int(value)


def _chain(first: NDArray[np.float32], second: NDArray[np.float32]) -> NDArray[np.float32]:
    combined = first.astype(np.float64) @ second.astype(np.float64)
    return np.ascontiguousarray(combined, dtype=np.float32)


def top_k_agreement(
    reference: ArrayLike,
    mapped: ArrayLike,
    *,
    queries: int | None = 1000,
    k: int = 10,
    seed: int = 0,
) -> float:
    """Share of each row's ``k`` nearest other rows that two embeddings of the same items share.

    Row ``i`` of ``reference`` and of ``mapped`` are one item before and after a map (a
    projection applied to full vectors, say). ``queries`` rows picked at random (all rows with
    ``None``) each search all the other rows, by inner product of unit rows; the result is the
    mean overlap of their top ``k`` in the two embeddings.

    Raises:
        ValueError: If the two hold different numbers of rows, or no more than ``k``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(200, 16))
        >>> top_k_agreement(x, x * 3.0)
        1.0
    """
    a = l2_normalize(np.array(as_float_matrix(reference)[0], dtype=np.float32, copy=True))
    b = l2_normalize(np.array(as_float_matrix(mapped)[0], dtype=np.float32, copy=True))
    if a.shape[0] != b.shape[0] or a.shape[0] <= k:
        raise ValueError(
            f"top_k_agreement needs the same number of rows in both, more than k={k}; got "
            f"{a.shape[0]} and {b.shape[0]}"
        )
    rows = np.arange(len(a))
    if queries is not None and queries < len(a):
        rows = np.sort(np.random.default_rng(seed).choice(len(a), queries, replace=False))
    return _agreement(a[rows], b[rows], a, b, rows, k)


def _agreement(
    query_before: NDArray[np.float32],
    query_after: NDArray[np.float32],
    before: NDArray[np.float32],
    after: NDArray[np.float32],
    self_rows: NDArray[np.int64] | None,
    k: int,
) -> float:
    """Mean top-``k`` overlap of the queries' searches before and after; query ``i`` skips row
    ``self_rows[i]`` (itself) where that is ``>= 0``."""
    shared = []
    for start in range(0, len(query_before), 256):  # blocks of queries bound the score memory
        block = slice(start, start + 256)
        found = []
        for queries, rows in ((query_before[block], before), (query_after[block], after)):
            scores = queries @ rows.T
            if self_rows is not None:
                own = np.flatnonzero(self_rows[block] >= 0)
                scores[own, self_rows[block][own]] = -np.inf
            found.append(np.argpartition(-scores, k - 1, axis=1)[:, :k])
        shared += [len(np.intersect1d(p, q)) for p, q in zip(found[0], found[1], strict=True)]
    return float(np.mean(shared)) / k


def _calibrate(
    projection: Projection,
    docs: NDArray[np.float32],
    pair_queries: NDArray[np.float32] | None,
    min_agreement: float,
) -> Projection:
    """Scale the residual down until full-dim top-10 search over ``docs`` agrees with the
    original on at least ``min_agreement``, for up to 2000 queries drawn from the documents
    themselves and the pairs' queries."""
    assert projection.residual is not None
    queries = docs if pair_queries is None else np.concatenate([docs, pair_queries])
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(len(queries), min(2000, len(queries)), replace=False))
    self_rows = np.where(picked < len(docs), picked, -1)
    k = min(10, len(docs) - 1)

    def agreement(residual: Residual) -> float:
        mapped = Projection(projection.method, projection.rotation, {}, residual)
        after, query_after = mapped.apply(docs), mapped.apply(queries[picked])
        return _agreement(queries[picked], query_after, docs, after, self_rows, k)

    full = projection.residual
    alpha, reached = 1.0, agreement(full)
    if reached < min_agreement:
        low, high = 0.0, 1.0  # at 0 the adapter is its rotation alone: agreement 1
        for _ in range(10):
            middle = (low + high) / 2
            if agreement(full.scaled(middle)) >= min_agreement:
                low = middle
            else:
                high = middle
        alpha = low
        reached = agreement(full.scaled(alpha))
    logger.info("adapter residual scale %.3f: full-dim top-10 agreement %.4f", alpha, reached)
    info = {**projection.info, "residual_scale": alpha, "full_dim_agreement": round(reached, 4)}
    return Projection(projection.method, projection.rotation, info, full.scaled(alpha))


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


PairVectors = tuple[NDArray[np.float32], NDArray[np.float32]]


def _structure_loss(torch: Any, sims: Any, target: Any, neighbours: Any, temperature: float) -> Any:
    """Keep a batch's similarity structure (near neighbours weighted up) and each row's
    neighbour distribution; ``sims`` and ``target`` have their diagonal included."""
    functional = torch.nn.functional
    squared = ((sims - target) ** 2 * (1 + neighbours * len(sims))).mean()
    kl = functional.kl_div(
        torch.log_softmax(sims / temperature, dim=1), neighbours, reduction="batchmean"
    )
    return squared + 0.1 * kl


def _pair_loss(torch: Any, queries: Any, docs: Any, d: int, temperature: float) -> Any:
    """In-batch softmax loss at prefix ``d``: each query's own document above the others."""
    functional = torch.nn.functional
    q, k = prefix_tensor(queries, d), prefix_tensor(docs, d)
    labels = torch.arange(len(q))
    return functional.cross_entropy(q @ k.T / temperature, labels)


def _train_rotation(
    x: NDArray[np.float32], settings: _Settings, *, pairs: PairVectors | None = None
) -> NDArray[np.float32]:
    """An orthogonal ``[dim, dim]`` matrix whose prefixes keep the full-dim neighbourhoods."""
    torch = require("torch", "torch")
    tqdm = require("tqdm.auto", "torch").tqdm

    torch.manual_seed(settings.seed)
    linear = _orthogonal(torch, x.shape[1])
    optimizer = torch.optim.Adam(linear.parameters(), lr=settings.learning_rate)
    data = torch.from_numpy(x)
    if pairs is not None:
        pair_queries, pair_docs = (torch.from_numpy(np.ascontiguousarray(p)) for p in pairs)
        pair_batch = min(256, len(pair_queries))
    steps = settings.epochs * math.ceil(len(x) / settings.batch_size)
    bar = tqdm(total=steps, disable=not settings.show_progress_bar, desc="fitting projection")
    with bar:
        for _ in range(settings.epochs):
            order = torch.randperm(len(x))
            for start in range(0, len(x), settings.batch_size):
                batch = data[order[start : start + settings.batch_size]]
                target = batch @ batch.T  # full-dim similarities (unit vectors)
                neighbours = torch.softmax(target / settings.temperature, dim=1).detach()
                out = linear(batch)
                loss: Any = 0.0
                if pairs is not None:
                    chosen = torch.randperm(len(pair_queries))[:pair_batch]
                    queries, docs = linear(pair_queries[chosen]), linear(pair_docs[chosen])
                for d in settings.dims:
                    prefix = prefix_tensor(out, d)
                    loss = loss + _structure_loss(
                        torch, prefix @ prefix.T, target, neighbours, settings.temperature
                    )
                    if pairs is not None:
                        loss = loss + settings.pair_weight * _pair_loss(
                            torch, queries, docs, d, settings.temperature
                        )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update(1)
    with torch.no_grad():
        # linear(x) = x @ W.T, so the matrix applied on the right is W.T
        return np.ascontiguousarray(linear.weight.detach().numpy().T, dtype=np.float32)


def _orthogonal(torch: Any, dim: int) -> Any:
    """A ``dim x dim`` linear map kept orthogonal, starting from the identity."""
    linear = torch.nn.Linear(dim, dim, bias=False)
    torch.nn.init.eye_(linear.weight)
    return torch.nn.utils.parametrizations.orthogonal(linear)


def _mine_neighbours(x: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Each row's ``k`` nearest other rows by inner product, in blocks of 1024 rows."""
    k = min(k, len(x) - 1)
    found = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), 1024):
        scores = x[start : start + 1024] @ x.T
        rows = np.arange(len(scores))
        scores[rows, rows + start] = -np.inf
        found[start : start + len(scores)] = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return found


def _neighbour_batches(
    neighbours: NDArray[np.int64], batch_size: int, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """One epoch of batches: half random anchors, half one near neighbour of each anchor."""
    order = rng.permutation(len(neighbours))
    half = max(1, batch_size // 2)
    batches = []
    for start in range(0, len(order), half):
        anchors = order[start : start + half]
        picks = neighbours[anchors, rng.integers(0, neighbours.shape[1], len(anchors))]
        batches.append(np.unique(np.concatenate([anchors, picks])))
    return batches


class _AdapterNet:
    """The torch side of an adapter: a learned rotation, then ``y + mlp(y)``."""

    def __init__(self, torch: Any, dim: int, hidden: int):
        self.rotation = _orthogonal(torch, dim)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, dim)
        )
        torch.nn.init.zeros_(self.mlp[2].weight)  # start as the rotation alone
        torch.nn.init.zeros_(self.mlp[2].bias)

    def parameters(self) -> list[Any]:
        return [*self.rotation.parameters(), *self.mlp.parameters()]

    def __call__(self, x: Any) -> Any:
        y = self.rotation(x)
        return y + self.mlp(y)

    def export(self) -> tuple[NDArray[np.float32], Residual]:
        def array(tensor: Any) -> NDArray[np.float32]:
            return np.ascontiguousarray(tensor.detach().numpy(), dtype=np.float32)

        first, last = self.mlp[0], self.mlp[2]
        residual = Residual(
            array(first.weight.T), array(first.bias), array(last.weight.T), array(last.bias)
        )
        return array(self.rotation.weight.T), residual


def _adapter_loss(
    torch: Any,
    net: _AdapterNet,
    batch: Any,
    settings: _Settings,
    pairs: tuple[Any, Any] | None,
) -> Any:
    """Neighbour structure at each prefix dim, the full dim held on the original similarities,
    and with pairs, the pair ranking and each query's neighbourhood among the documents."""
    functional = torch.nn.functional
    tau = settings.temperature
    target = batch @ batch.T
    neighbours = torch.softmax(target / tau, dim=1).detach()
    out = net(batch)
    full = functional.normalize(out, dim=1)
    loss = settings.full_weight * _structure_loss(torch, full @ full.T, target, neighbours, tau)
    if pairs is not None:
        raw_queries, raw_docs = pairs
        queries, docs = net(raw_queries), net(raw_docs)
        query_target = torch.softmax(raw_queries @ batch.T / tau, dim=1).detach()
    for d in settings.dims:
        prefix = prefix_tensor(out, d)
        loss = loss + _structure_loss(torch, prefix @ prefix.T, target, neighbours, tau)
        if pairs is not None:
            loss = loss + settings.pair_weight * _pair_loss(torch, queries, docs, d, tau)
            q = prefix_tensor(queries, d)
            logits = torch.log_softmax(q @ prefix.T / tau, dim=1)
            loss = loss + functional.kl_div(logits, query_target, reduction="batchmean")
    return loss


def _train_adapter(
    x: NDArray[np.float32], settings: _Settings, *, pairs: PairVectors | None = None
) -> tuple[NDArray[np.float32], Residual]:
    """A learned rotation and a residual MLP, trained on neighbour-mined batches of ``x``."""
    torch = require("torch", "torch")
    tqdm = require("tqdm.auto", "torch").tqdm

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    cached = require("torch.nn.utils.parametrize", "torch").cached
    net = _AdapterNet(torch, x.shape[1], settings.hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.learning_rate)
    data = torch.from_numpy(x)
    neighbours = _mine_neighbours(x, 10)
    if pairs is not None:
        pair_queries, pair_docs = (torch.from_numpy(np.ascontiguousarray(p)) for p in pairs)
        pair_batch = min(256, len(pair_queries))
    steps = settings.epochs * math.ceil(len(x) / max(1, settings.batch_size // 2))
    bar = tqdm(total=steps, disable=not settings.show_progress_bar, desc="fitting adapter")
    with bar:
        for _ in range(settings.epochs):
            for rows in _neighbour_batches(neighbours, settings.batch_size, rng):
                chosen = None
                if pairs is not None:
                    picked = torch.from_numpy(rng.choice(len(pair_queries), pair_batch, False))
                    chosen = (pair_queries[picked], pair_docs[picked])
                with cached():  # the orthogonal weight once a step, not once a call
                    loss = _adapter_loss(torch, net, data[torch.from_numpy(rows)], settings, chosen)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update(1)
    with torch.no_grad():
        return net.export()


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

    @property
    def supports_images(self) -> bool:
        """Whether the inner encoder embeds images (they go through the projection too)."""
        return self.inner.supports_images

    def _embed_images(self, images: list[Any], kind: InputKind) -> NDArray[np.float32]:
        return self.projection.apply(self.inner._encode(images, kind))

    async def _aembed_images(self, images: list[Any], kind: InputKind) -> NDArray[np.float32]:
        return self.projection.apply(await self.inner._aencode(images, kind))
