"""Calibrate the adaptive funnel to a recall target, from sample queries.

For each sample query the tuner knows the exact full-dim top ``k`` and the coarse shortlist
with its scores. A fixed funnel needs the shortlist deep enough to hold the exact hits; the
adaptive funnel keeps, per query, the candidates within a margin of the query's ``k``-th coarse
score, so a query whose exact hits score well apart from the rest reranks few candidates and a
hard one reranks many. The tuner finds the smallest margin whose mean recall@k on the samples
meets the target and the smallest fixed shortlist that does, times both, and sets the index to
the faster of the two.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import check_vectors, positive_int
from ..truncation import prefix
from .engine import Engine
from .funnel import adaptive_cut, exact_search

__all__ = ["TuneResult", "tune"]


@dataclass
class TuneResult(Sequence[dict[str, Any]]):
    """What the tuner measured: one row per configuration it tried, and the one it chose.

    Attributes:
        target_recall: The mean recall@k asked for.
        k: Hits per query the funnel was tuned for.
        queries: Number of sample queries.
        rows: ``mode``, ``shortlist`` or ``margin``, ``recall``, mean / median / 99th percentile
            of candidates reranked per query, and measured ms per query (batch 1).
        chosen: The row now in force.
    """

    target_recall: float
    k: int
    queries: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return self.rows[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows]

    def table(self) -> str:
        """The rows as a Markdown table."""
        head = "| mode | setting | recall@k | reranked mean | p50 | p99 | ms/query |"
        lines = [head, "|---|---|---|---|---|---|---|"]
        for row in self.rows:
            setting = (
                f"shortlist {row['shortlist']}"
                if row["mode"] == "fixed"
                else f"margin {row['margin']:.4f}"
            )
            lines.append(
                f"| {row['mode']} | {setting} | {row['recall']:.4f} | "
                f"{row['reranked_mean']:.1f} | {row['reranked_p50']:.0f} | "
                f"{row['reranked_p99']:.0f} | {row['ms_per_query']:.3f} |"
            )
        return "\n".join(lines)


def _smallest(needed: NDArray[np.float64], target: float) -> float:
    """The smallest threshold t with mean(needed <= t) >= target (inf if none)."""
    ordered = np.sort(needed.reshape(-1))
    position = max(0, math.ceil(target * ordered.shape[0]) - 1)
    return float(ordered[position])


def _sample_queries(
    engine: Engine, queries: NDArray[np.float32] | None, sample: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.int64] | None]:
    """The queries, or held-out stored rows (each excluded from its own answers)."""
    assert engine.vectors is not None
    if queries is not None:
        return prefix(queries, queries.shape[1]), None
    live = np.flatnonzero(engine.alive)
    picks = np.sort(np.random.default_rng(seed).choice(live, min(sample, live.shape[0]), False))
    return engine.vectors.take(picks), picks


def _drop_self(
    rows: NDArray[np.int64], scores: NDArray[np.float32] | None, own: NDArray[np.int64] | None
) -> tuple[NDArray[np.int64], NDArray[np.float32] | None]:
    """Remove each query's own row from its ranking (keeping the order of the rest)."""
    if own is None:
        return rows, scores
    order = np.argsort(rows == own[:, None], axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)[:, :-1]
    if scores is not None:
        scores = np.take_along_axis(scores, order, axis=1)[:, :-1]
    return rows, scores


def _needs(
    truth: NDArray[np.int64], rows: NDArray[np.int64], scores: NDArray[np.float32], k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per exact hit: the fixed shortlist that holds it, and the margin that keeps it."""
    match = truth[:, :, None] == rows[:, None, :]
    found = match.any(axis=2)
    position = np.where(found, match.argmax(axis=2), np.inf)
    kth = scores[:, k - 1].astype(np.float64)
    hit_scores = np.take_along_axis(scores, np.where(found, match.argmax(axis=2), 0), axis=1)
    margin = np.where(found, np.maximum(kth[:, None] - hit_scores, 0.0), np.inf)
    margin = np.where(position < k, 0.0, margin)
    return position + 1, margin


def _timed(engine: Engine, queries: NDArray[np.float32], k: int) -> tuple[float, NDArray[Any]]:
    engine.search(queries[:5], k, None)  # warm
    start = time.perf_counter()
    counts = [engine.search(q[None, :], k, None)[0].reranked for q in queries]
    return 1000 * (time.perf_counter() - start) / queries.shape[0], np.asarray(counts, float)


def _row(mode: str, setting: dict[str, Any], engine: Engine, q: NDArray[np.float32], k: int,
         recall: float) -> dict[str, Any]:  # fmt: skip
    ms, counts = _timed(engine, q, k)
    return {
        "mode": mode,
        **setting,
        "recall": recall,
        "reranked_mean": float(counts.mean()),
        "reranked_p50": float(np.percentile(counts, 50)),
        "reranked_p99": float(np.percentile(counts, 99)),
        "ms_per_query": ms,
    }


def tune(
    engine: Engine,
    *,
    target_recall: float,
    k: int,
    queries: Any = None,
    sample: int = 200,
    max_candidates: int = 2000,
    seed: int = 0,
) -> TuneResult:
    """Calibrate ``engine``'s funnel (see :meth:`MatryoshkaIndex.tune`); sets its config.

    Raises:
        ValueError: For a target outside (0, 1], a bad count (named), queries of the wrong
            width, an exact or cascaded index, or a target the candidates cannot reach.
    """
    if isinstance(target_recall, bool) or not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    k, sample = positive_int("k", k), positive_int("sample", sample)
    max_candidates = positive_int("max_candidates", max_candidates)
    if queries is not None:
        queries = check_vectors(queries, engine.dim, name="query_vectors")
    config = engine.config
    if not engine.tunable:
        raise ValueError(
            f"tune measures the funnel in this process; backend={config.backend!r} runs it on "
            "the server: set rescore_multiplier or stages instead"
        )
    if config.coarse_dim is None or engine.coarse is None or engine.vectors is None:
        raise ValueError("tune needs a coarse stage: an exact index (coarse_dim=None) has none")
    if config.stages:
        raise ValueError(
            f"tune calibrates the two-stage funnel; this index has stages={list(config.stages)}"
        )
    if engine.n_alive <= k:
        raise ValueError(f"tune needs more than k={k} records, the index holds {engine.n_alive}")
    q, own = _sample_queries(engine, queries, sample, seed)
    allowed = engine.selection(None)
    extra = 0 if own is None else 1
    truth, _ = _drop_self(exact_search(q, k + extra, engine.vectors, allowed)[1], None, own)
    cap = min(max_candidates, engine.n_alive) + extra
    scores, rows = engine.coarse.search(prefix(q, config.coarse_dim), cap, allowed=allowed)
    rows, kept_scores = _drop_self(rows, scores, own)
    assert kept_scores is not None
    shortlist, margin_needed = _needs(truth[:, :k], rows, kept_scores, k)
    fixed_n, margin = _smallest(shortlist, target_recall), _smallest(margin_needed, target_recall)
    if not math.isfinite(margin):
        raise ValueError(
            f"recall@{k} {target_recall} is out of reach with {cap - extra} coarse candidates "
            f"at coarse_dim={config.coarse_dim}: raise max_candidates or the coarse dim"
        )
    widest = adaptive_cut(kept_scores, rows, k, margin)
    cap_needed = int((widest >= 0).sum(axis=1).max())
    result = TuneResult(target_recall, k, q.shape[0])
    fixed = config.replace(adaptive_margin=None, rescore_multiplier=max(1, math.ceil(fixed_n / k)))
    engine.config = fixed
    recall = float((shortlist <= fixed.rescore_multiplier * k).mean())
    result.rows.append(
        _row("fixed", {"shortlist": fixed.rescore_multiplier * k}, engine, q, k, recall)
    )
    engine.config = config.replace(
        adaptive_margin=margin, rescore_multiplier=max(1, math.ceil(1.25 * cap_needed / k))
    )
    recall = float((margin_needed <= margin).mean())
    result.rows.append(_row("adaptive", {"margin": margin}, engine, q, k, recall))
    result.chosen = min(result.rows, key=lambda row: row["ms_per_query"])  # least measured cost
    if result.chosen["mode"] == "fixed":
        engine.config = fixed
    return result
