"""Calibrate the adaptive funnel to a recall target, from sample queries.

For each sample query the tuner knows the exact full-dim top ``k`` and the coarse shortlist
with its scores. A fixed funnel needs the shortlist deep enough to hold the exact hits; the
adaptive funnel keeps, per query, the candidates within a margin of the query's ``k``-th coarse
score, so a query whose exact hits score well apart from the rest reranks few candidates and a
hard one reranks many. The tuner finds the smallest margin whose mean recall@k on the samples
meets the target and the smallest fixed shortlist that does, times both and an exact full scan,
and sets the index to the fastest of the three (exact while it holds no more rows than now, if
the scan wins).

A setting tuned to just reach the target on its samples falls short of it, about half the time,
on other queries. So "reaches" means the lower confidence bound of the mean recall (mean minus
``z`` standard errors over the sample queries, ``confidence=0.95`` by default) meets the target,
not the sample mean alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validation import check_vectors, positive_int
from ..truncation import prefix
from .config import IndexConfig
from .engine import Engine
from .funnel import adaptive_cut, exact_search
from .rotation import check_rotation

__all__ = ["TuneResult", "describe", "lower_bound", "narrowest", "tune"]


@dataclass
class TuneResult(Sequence[dict[str, Any]]):
    """What the tuner measured: one row per configuration it tried, and the one it chose.

    Attributes:
        target_recall: The mean recall@k asked for.
        k: Hits per query the funnel was tuned for.
        queries: Number of sample queries.
        rows: ``mode`` (``fixed``, ``adaptive``, ``exact``), ``shortlist`` or ``margin``,
            ``recall`` (the mean over the samples) and ``recall_low`` (its lower confidence
            bound, which must meet the target), mean / median / 99th percentile of candidates
            reranked per query, and measured ms per query (batch 1).
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
        stages = any("coarse" in row for row in self.rows)
        head = "| mode | setting | recall@k | its bound | reranked mean | p50 | p99 | ms/query |"
        head = "| coarse stage " + head if stages else head
        lines = [head, "|---" * (head.count("|") - 1) + "|"]
        for row in self.rows:
            setting = describe(row)
            lines.append(
                (f"| {row.get('coarse', '')} " if stages else "")
                + f"| {row['mode']} | {setting} | {row['recall']:.4f} | {row['recall_low']:.4f} | "
                f"{row['reranked_mean']:.1f} | {row['reranked_p50']:.0f} | "
                f"{row['reranked_p99']:.0f} | {row['ms_per_query']:.3f} |"
            )
        return "\n".join(lines)


def describe(row: dict[str, Any]) -> str:
    """A tried setting in a few words: ``shortlist 40``, ``margin 0.0123`` or ``full scan``."""
    if row["mode"] == "fixed":
        beam = f", ef_search {row['ef_search']}" if "ef_search" in row else ""
        return f"shortlist {row['shortlist']}{beam}"
    if row["mode"] == "adaptive":
        return f"margin {row['margin']:.4f}"
    return "full scan"


def _bound(per_query: NDArray[np.float64], z: float) -> float:
    """The lower confidence bound of a mean recall: ``z`` standard errors over the queries."""
    n = per_query.shape[0]
    spread = float(per_query.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return float(per_query.mean()) - z * spread


def lower_bound(per_query: NDArray[np.float64], confidence: float = 0.95) -> float:
    """The bound :func:`tune` holds a mean recall to: one-sided at ``confidence``, over the
    per-query recalls ``per_query`` (so a peer can be set by the same rule)."""
    return _bound(np.asarray(per_query, dtype=np.float64), NormalDist().inv_cdf(confidence))


def _smallest(needed: NDArray[np.float64], target: float, z: float) -> float:
    """The smallest threshold t whose per-query recall ``mean(needed <= t)`` (one row of
    ``needed`` per query, one column per exact hit) has a bound >= target (inf if none)."""
    ordered = np.sort(needed.reshape(-1))
    start = ordered[max(0, math.ceil(target * ordered.shape[0]) - 1)]  # where the mean reaches it
    for t in np.unique(ordered[(ordered >= start) & np.isfinite(ordered)]).tolist():
        if _bound((needed <= t).mean(axis=1), z) >= target:
            return float(t)
    return math.inf


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


def _measured_recall(
    engine: Engine, q: NDArray[np.float32], truth: NDArray[np.int64], own: NDArray[np.int64] | None
) -> NDArray[np.float64]:
    """Recall@k of each of the engine's real searches (each query's own row left out)."""
    k = truth.shape[1]
    extra = 0 if own is None else 1
    found = []
    for i, hits in enumerate(engine.search(q, k + extra, None)):
        rows = [engine.records.rows_of([h.id])[h.id] for h in hits]
        found.append([r for r in rows if own is None or r != own[i]][:k])
    return np.array([len(set(f) & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)])


@dataclass(frozen=True)
class _Calibration:
    """What an HNSW stage's beam is tuned against: the sample queries, their exact top ``k``
    (``own``: each held-out row, left out of its own answers), the target its bound must meet
    (``z`` standard errors) and the deepest beam tried (``cap``)."""

    q: NDArray[np.float32]
    truth: NDArray[np.int64]
    own: NDArray[np.int64] | None
    target: float
    cap: int
    z: float

    def meets(self, engine: Engine, config: IndexConfig) -> tuple[bool, NDArray[np.float64]]:
        """Whether ``config``, set on the engine, meets the target; and its per-query recall."""
        engine.config = config
        recall = _measured_recall(engine, self.q, self.truth, self.own)
        return _bound(recall, self.z) >= self.target, recall


def _widen_beam(
    engine: Engine, config: IndexConfig, cal: _Calibration
) -> tuple[IndexConfig, NDArray[np.float64]]:
    """Raise an HNSW stage's ``ef_search`` by half until the measured recall meets the target
    (or the calibration depth is reached), then narrow it twice between the last beam that fell
    short and the first that met it; the shortlist alone is not enough when the graph's beam
    is as narrow as the shortlist. The engine is left on the returned config."""
    recalls: dict[int, NDArray[np.float64]] = {}

    def reaches(beam: int) -> bool:
        met, recalls[beam] = cal.meets(engine, config.replace(ef_search=beam))
        return met

    ef, short = max(config.ef_search, config.rescore_multiplier * cal.truth.shape[1]), 0
    met = reaches(ef)
    while not met and ef < cal.cap:
        short, ef = ef, min(cal.cap, math.ceil(ef * 1.5))
        met = reaches(ef)
    if met and short:
        ef = narrowest(short, ef, reaches)
    config = config.replace(ef_search=ef)
    engine.config = config
    return config, recalls[ef]


def narrowest(short: int, met: int, reaches: Callable[[int], bool], steps: int = 2) -> int:
    """Bisect ``steps`` times between a beam that fell short of the target and one that met
    it; the narrowest beam found to meet it."""
    for _ in range(steps):
        middle = (short + met) // 2
        if middle <= short:
            break
        if reaches(middle):
            met = middle
        else:
            short = middle
    return met


BEAM_TRADES = (1, 2, 4)
"""Shortlists an HNSW stage is tried at, as multiples of the one the exact prefix ranking
needs: the walk's beam is widened for each until the target holds, and the fastest pair is
kept (a longer shortlist can need a far narrower beam)."""


def _beam_trades(
    engine: Engine, fixed: IndexConfig, needed: float, cal: _Calibration
) -> list[tuple[dict[str, Any], IndexConfig]]:
    """The fixed rows of an HNSW stage: for each of :data:`BEAM_TRADES` times the ``needed``
    shortlist, the narrowest beam meeting the target, measured; the smallest shortlist first."""
    k = cal.truth.shape[1]
    deepest = (cal.cap - (0 if cal.own is None else 1)) // k
    tried: list[tuple[dict[str, Any], IndexConfig]] = []
    for factor in BEAM_TRADES:
        wider = max(1, min(math.ceil(needed * factor / k), deepest))
        if any(c.rescore_multiplier == wider for _, c in tried):
            continue
        trial, recall = _widen_beam(engine, fixed.replace(rescore_multiplier=wider), cal)
        setting = {"shortlist": wider * k, "ef_search": trial.ef_search}
        tried.append((_row("fixed", setting, engine, cal.q, k, recall, cal.z), trial))
    return tried


TIME_BUDGET_S = 1.0
"""Seconds of batch-1 searches the tuner times per option (at least 32 queries, at most all):
enough for a stable mean, and a full scan of a large corpus is not timed on every sample."""


def _timed(engine: Engine, queries: NDArray[np.float32], k: int) -> tuple[float, NDArray[Any]]:
    """Mean ms per query at batch 1, and per query the candidates reranked (one batched call)."""
    counts = [hits.reranked for hits in engine.search(queries, k, None)]  # also warms
    start, done = time.perf_counter(), 0
    for q in queries:
        engine.search(q[None, :], k, None)
        done += 1
        if done >= 32 and time.perf_counter() - start >= TIME_BUDGET_S:
            break
    return 1000 * (time.perf_counter() - start) / done, np.asarray(counts, float)


def _row(mode: str, setting: dict[str, Any], engine: Engine, q: NDArray[np.float32], k: int,
         recall: NDArray[np.float64], z: float) -> dict[str, Any]:  # fmt: skip
    ms, counts = _timed(engine, q, k)
    return {
        "mode": mode,
        **setting,
        "recall": float(recall.mean()),
        "recall_low": _bound(recall, z),
        "reranked_mean": float(counts.mean()),
        "reranked_p50": float(np.percentile(counts, 50)),
        "reranked_p99": float(np.percentile(counts, 99)),
        "ms_per_query": ms,
    }


COARSE_CANDIDATES: tuple[dict[str, Any], ...] = tuple(
    {**stage, "rotation": rotation}
    for rotation in (None, "pca")
    for stage in (
        {"coarse_dim": 64, "precision": "int8"},
        {"coarse_dim": 128, "precision": "int8"},
        {"coarse_dim": 64, "backend": "hnsw", "ef_search": 16},
        {"coarse_dim": 128, "backend": "hnsw", "ef_search": 16},
        {
            "coarse_dim": 256,
            "backend": "hnsw",
            "precision": "int8",
            "ef_search": 16,
            "hnsw_m": 16,
            "ef_construction": 200,
        },
    )
)
"""What ``tune(coarse="search")`` tries: int8 prefix scans, HNSW graphs on float prefixes
(``ef_search=16``: the graph's beam is then the shortlist the tuner sets) and an int8 graph on
256 dims (degree 16, built with a beam of 200: on 75k real docstrings of 384 dims, rotated,
the fastest stage at recall 0.99, with the narrowest shortlist), each on the stored prefixes and
on prefixes of a PCA rotation fitted to the stored vectors; a stage wider than the vectors is
left out."""


def tune(
    engine: Engine,
    *,
    target_recall: float,
    k: int,
    queries: Any = None,
    sample: int = 200,
    max_candidates: int = 2000,
    seed: int = 0,
    coarse: Sequence[dict[str, Any]] | str | None = None,
    confidence: float = 0.95,
) -> TuneResult:
    """Calibrate ``engine``'s funnel (see :meth:`MatryoshkaIndex.tune`); sets its config.

    With ``coarse`` (a list of coarse-stage settings, or ``"search"`` for
    :data:`COARSE_CANDIDATES`), each stage is built from the stored vectors and tuned, and the
    fastest that meets the target replaces the index's coarse stage.

    Raises:
        ValueError: For a target outside (0, 1], a bad count (named), queries of the wrong
            width, an exact or cascaded index, or a target the candidates cannot reach.
    """
    if isinstance(target_recall, bool) or not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    if isinstance(confidence, bool) or not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    k, sample = positive_int("k", k), positive_int("sample", sample)
    max_candidates = positive_int("max_candidates", max_candidates)
    if queries is not None:
        queries = check_vectors(queries, engine.dim, name="query_vectors")
        if queries.shape[0] < 2:
            raise ValueError(
                f"tune needs at least 2 sample queries to bound their mean recall; got "
                f"{queries.shape[0]}"
            )
    engine.settle_rotation()  # a rotation still waiting for rows is fitted on those there are
    options = {
        "queries": queries,
        "sample": sample,
        "max_candidates": max_candidates,
        "z": NormalDist().inv_cdf(confidence),
    }
    if coarse is not None:
        return _search_coarse(engine, target_recall, k, coarse, options | {"seed": seed})
    return _tune_stage(engine, target_recall, k, seed=seed, **options)


def _search_coarse(
    engine: Engine,
    target: float,
    k: int,
    coarse: Sequence[dict[str, Any]] | str,
    options: dict[str, Any],
) -> TuneResult:
    """Build and tune each coarse stage of ``coarse``; keep the fastest that meets ``target``."""
    if isinstance(coarse, str):
        if coarse != "search":
            raise ValueError(f"coarse must be 'search' or a list of settings, got {coarse!r}")
        coarse = COARSE_CANDIDATES
    if engine.config.backend == "chroma":
        raise ValueError("tune(coarse=...) rebuilds FAISS stages; this index's stage is Chroma")
    best: tuple[float, IndexConfig, Any, Any] | None = None
    combined: TuneResult | None = None
    kept = (engine.config, engine.coarse, engine.rotation)
    pca: list[Any] = []  # fitted once, when a setting asks for it
    try:
        for settings in coarse:
            settings = {"backend": "exact", "precision": "float32", **settings}
            settings["rotation"] = settings.pop("rotation", None)  # last in the label
            if not _build_stage(engine, kept[0], settings, pca, options["seed"]):
                continue
            try:
                result = _tune_stage(engine, target, k, **options)
            except ValueError:  # this stage cannot reach the target within max_candidates
                continue
            label = ", ".join(f"{key}={value}" for key, value in settings.items() if value)
            for row in result.rows:
                row["coarse"] = label
            if combined is None:
                combined = result
            else:
                combined.rows += result.rows
            ms = result.chosen["ms_per_query"]
            if best is None or ms < best[0]:
                best = (ms, engine.config, engine.coarse, engine.rotation)
                combined.chosen = result.chosen
    except BaseException:
        engine.use_stage(*kept)
        raise
    if best is None or combined is None:
        engine.use_stage(*kept)
        raise ValueError(
            f"no coarse stage of {list(coarse)} reaches recall@{k} {target} within "
            f"{options['max_candidates']} candidates"
        )
    engine.use_stage(best[1], best[2], best[3])
    return combined


def _build_stage(
    engine: Engine, base: IndexConfig, settings: dict[str, Any], pca: list[Any], seed: int
) -> bool:
    """Give ``engine`` a new coarse stage with ``settings`` (and its rotation), built from the
    stored vectors; ``False`` when the settings do not fit the index."""
    from .backends import coarse_stage_class

    assert engine.dim is not None
    rotation = settings["rotation"]
    if rotation not in (None, "pca"):
        raise ValueError(f"a coarse setting's rotation is None or 'pca', got {rotation!r}")
    stage_settings = {key: value for key, value in settings.items() if key != "rotation"}
    config = base.replace(stages=(), adaptive_margin=None, **stage_settings)
    if config.coarse_dim is None or config.coarse_dim > engine.dim:
        return False
    check_rotation(rotation, config, engine.dim)
    if rotation == "pca" and not pca:
        pca.append(engine.fit_rotation(seed=seed))
    engine.rotation = pca[0] if rotation else None
    stage = coarse_stage_class(config.backend).create(config, engine.context())
    engine.fill(stage)
    engine.use_stage(config, stage, engine.rotation)
    return True


def _tune_stage(
    engine: Engine,
    target_recall: float,
    k: int,
    *,
    queries: NDArray[np.float32] | None,
    sample: int,
    max_candidates: int,
    seed: int,
    z: float,
) -> TuneResult:
    """Calibrate the shortlist of the engine's current coarse stage (see :func:`tune`)."""
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
    scores, rows = engine.coarse.search(
        engine.coarse_prefix(q, config.coarse_dim), cap, allowed=allowed
    )
    rows, kept_scores = _drop_self(rows, scores, own)
    assert kept_scores is not None
    shortlist, margin_needed = _needs(truth[:, :k], rows, kept_scores, k)
    fixed_n = _smallest(shortlist, target_recall, z)
    margin = _smallest(margin_needed, target_recall, z)
    if not math.isfinite(margin):
        raise ValueError(
            f"recall@{k} {target_recall} is out of reach with {cap - extra} coarse candidates "
            f"at coarse_dim={config.coarse_dim}: raise max_candidates or the coarse dim"
        )
    widest = adaptive_cut(kept_scores, rows, k, margin)
    cap_needed = int((widest >= 0).sum(axis=1).max())
    result = TuneResult(target_recall, k, q.shape[0])
    funnel = config.replace(exact_below=0)
    multiplier = max(1, math.ceil(fixed_n / k))
    fixed = funnel.replace(adaptive_margin=None, rescore_multiplier=multiplier)
    if config.backend == "hnsw":  # the graph's beam, not only the shortlist, limits recall
        cal = _Calibration(q, truth[:, :k], own, target_recall, cap, z)
        tried = _beam_trades(engine, fixed, fixed_n, cal)
        funnel = funnel.replace(ef_search=tried[0][1].ef_search)
    else:
        engine.config = fixed
        recall = (shortlist <= fixed.rescore_multiplier * k).mean(axis=1)
        setting = {"shortlist": fixed.rescore_multiplier * k}
        tried = [(_row("fixed", setting, engine, q, k, recall, z), fixed)]
    adaptive = funnel.replace(
        adaptive_margin=margin, rescore_multiplier=max(1, math.ceil(1.25 * cap_needed / k))
    )
    engine.config = adaptive
    recall = (margin_needed <= margin).mean(axis=1)
    if config.backend == "hnsw":
        recall = _measured_recall(engine, q, truth[:, :k], own)
    tried.append((_row("adaptive", {"margin": margin}, engine, q, k, recall, z), adaptive))
    engine.config = config.replace(exact_below=engine.n_alive)
    exact = engine.config
    tried.append((_row("exact", {}, engine, q, k, np.ones(q.shape[0]), z), exact))
    result.rows.extend(row for row, _ in tried)
    reaching = [pair for pair in tried if pair[0]["recall_low"] >= target_recall]  # exact always
    result.chosen, engine.config = min(reaching, key=lambda pair: pair[0]["ms_per_query"])
    return result
