"""The residual adapter: a learned rotation and a residual MLP trained on neighbour-mined
batches, then scaled down until full-dim search agrees with the original vectors."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._optional import require
from ..truncation import prefix_tensor
from .agreement import _agreement
from .base import Projection, Residual
from .learned import PairVectors, _orthogonal, _pair_loss, _Settings, _structure_loss

logger = logging.getLogger(__name__)


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
