"""Learned rotations: an orthogonal map trained with torch so that each prefix keeps the
full-dim neighbourhoods, and the losses and settings the learned maps share with the adapter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._optional import require
from ..truncation import prefix_tensor


@dataclass(frozen=True)
class _Settings:
    """What the learned maps are trained with (checked by
    :func:`~matryoshka_retrieval.projection.fit_projection`)."""

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
