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

from .._validation import check_vectors, int_at_least, number_in_span, positive_int
from ..truncation import prefix
from . import backends
from .config import IndexConfig
from .funnel import adaptive_cut
from .protocol import Trial, TunableEngine
from .rotation import check_rotation

__all__ = [
    "COARSE_CANDIDATES",
    "SERVER_CANDIDATES",
    "TuneResult",
    "describe",
    "lower_bound",
    "narrowest",
    "tune",
]


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
        source: Where the recall estimates come from: ``"queries"`` (the sample queries
            given) or ``"held-out rows"`` (stored rows, each left out of the index searched:
            out of its candidates, and out of the graph of a stage walked with a beam).
        skipped: Coarse settings of ``tune(coarse=...)`` not tried, with the reason.
    """

    target_recall: float
    k: int
    queries: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)
    source: str = "queries"
    skipped: list[str] = field(default_factory=list)

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


@dataclass(frozen=True)
class _Sample:
    """The sample queries and what they are measured against: their exact top ``k`` over the
    index under test (``exclude``: held-out stored rows, which that index does not contain),
    the target its bound must meet (``z`` standard errors) and the deepest shortlist tried
    (``cap``)."""

    q: NDArray[np.float32]
    exclude: NDArray[np.int64] | None
    truth: NDArray[np.int64]
    target: float
    cap: int
    z: float

    @property
    def k(self) -> int:
        return int(self.truth.shape[1])

    def recall(self, trial: Trial) -> NDArray[np.float64]:
        """Recall@k of each query through ``trial``'s real funnel."""
        found = trial.top_rows(self.q, self.k)
        hits = [
            len(set(f[f >= 0].tolist()) & set(t.tolist()))
            for f, t in zip(found, self.truth, strict=True)
        ]
        return np.asarray(hits, dtype=np.float64) / self.k

    def meets(self, trial: Trial) -> tuple[bool, NDArray[np.float64]]:
        """Whether ``trial`` meets the target; and its per-query recall."""
        recall = self.recall(trial)
        return _bound(recall, self.z) >= self.target, recall


def _sample(
    engine: TunableEngine, queries: NDArray[np.float32] | None, options: dict[str, Any]
) -> _Sample:
    """The queries given, or held-out stored rows left out of the index under test."""
    k, target, z = options["k"], options["target"], options["z"]
    if queries is not None:
        q, exclude = prefix(queries, queries.shape[1]), None
    else:
        q, exclude = engine.sample_rows(options["sample"], options["seed"])
    held = 0 if exclude is None else exclude.shape[0]
    if engine.count() - held <= k:
        raise ValueError(
            f"tune needs more than k={k} records besides its {held} held-out samples; the "
            f"index holds {engine.count()}: pass queries= or a smaller sample"
        )
    cap = min(options["max_candidates"], engine.count() - held)
    truth = engine.exact_rows(q, k, exclude)
    return _Sample(q, exclude, truth, target, cap, z)


def _widen_beam(trial: Trial, sample: _Sample) -> tuple[Trial, NDArray[np.float64]]:
    """Raise an HNSW stage's ``ef_search`` by half until the measured recall meets the target
    (or the calibration depth is reached), then narrow it twice between the last beam that fell
    short and the first that met it; the shortlist alone is not enough when the graph's beam
    is as narrow as the shortlist."""
    recalls: dict[int, NDArray[np.float64]] = {}
    config = trial.config

    def reaches(beam: int) -> bool:
        met, recalls[beam] = sample.meets(trial.using(config.replace(ef_search=beam)))
        return met

    ef, short = config.rescore_multiplier * sample.k, 0  # the tuner sets the beam itself
    met = reaches(ef)
    while not met and ef < sample.cap:
        short, ef = ef, min(sample.cap, math.ceil(ef * 1.5))
        met = reaches(ef)
    if met and short:
        ef = narrowest(short, ef, reaches)
    return trial.using(config.replace(ef_search=ef)), recalls[ef]


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
    fixed: Trial, needed: float, sample: _Sample
) -> list[tuple[dict[str, Any], Trial]]:
    """The fixed rows of an HNSW stage: for each of :data:`BEAM_TRADES` times the ``needed``
    shortlist, the narrowest beam meeting the target, measured; the smallest shortlist first."""
    k = sample.k
    deepest = sample.cap // k
    tried: list[tuple[dict[str, Any], Trial]] = []
    for factor in BEAM_TRADES:
        wider = max(1, min(math.ceil(needed * factor / k), deepest))
        if any(t.config.rescore_multiplier == wider for _, t in tried):
            continue
        trial = fixed.using(fixed.config.replace(rescore_multiplier=wider))
        trial, recall = _widen_beam(trial, sample)
        setting = {"shortlist": wider * k, "ef_search": trial.config.ef_search}
        tried.append((_row("fixed", setting, trial, sample, recall), trial))
    return tried


TIME_BUDGET_S = 1.0
"""Seconds of batch-1 searches the tuner times per option (at least 32 queries, at most all):
enough for a stable mean, and a full scan of a large corpus is not timed on every sample."""


def _timed(trial: Trial, queries: NDArray[np.float32], k: int) -> tuple[float, NDArray[Any]]:
    """Mean ms per query at batch 1, and per query the candidates reranked (one batched call)."""
    counts = [hits.reranked for hits in trial.search(queries, k)]  # also warms
    start, done = time.perf_counter(), 0
    for q in queries:
        trial.search(q[None, :], k)
        done += 1
        if done >= 32 and time.perf_counter() - start >= TIME_BUDGET_S:
            break
    return 1000 * (time.perf_counter() - start) / done, np.asarray(counts, float)


def _row(
    mode: str, setting: dict[str, Any], trial: Trial, sample: _Sample, recall: NDArray[np.float64]
) -> dict[str, Any]:
    ms, counts = _timed(trial, sample.q, sample.k)
    return {
        "mode": mode,
        **setting,
        "recall": float(recall.mean()),
        "recall_low": _bound(recall, sample.z),
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


SERVER_CANDIDATES: tuple[dict[str, Any], ...] = tuple(
    {"coarse_dim": dim, "precision": "float16", "rotation": rotation}
    for rotation in (None, "pca")
    for dim in (64, 128, 192)
)
"""What ``tune(coarse="search")`` tries on a server index (each stage a copy of the table with
its own HNSW graph, built on the server): half-precision prefixes of 64, 128 and 192 dims, of
the stored vectors and of a PCA rotation fitted to them (on 58,000 real descriptions of a
non-Matryoshka model, the 192-d half-precision prefix was the fastest to recall 0.99)."""


def tune(
    engine: TunableEngine,
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
    """Calibrate ``engine``'s funnel (see :meth:`MatryoshkaIndex.tune`).

    Every candidate is measured as a trial of the engine (:meth:`TunableEngine.trial`), which
    changes nothing in force; the fastest that meets the target is adopted once, at the end.
    Without ``queries``, held-out stored rows are the samples, and each trial leaves them out
    of the index it searches. With ``coarse`` (a list of coarse-stage settings, or ``"search"``
    for :data:`COARSE_CANDIDATES`), each stage is built from the stored vectors and tuned.

    Raises:
        ValueError: For a target outside (0, 1], a bad count (named), ``k`` not below
            ``max_candidates``, queries of the wrong width, an exact or cascaded index, or a
            target the candidates cannot reach.
    """
    target_recall = number_in_span("target_recall", target_recall, "(0, 1]")
    confidence = number_in_span("confidence", confidence, "[0.5, 1)")
    k, sample = positive_int("k", k), positive_int("sample", sample)
    max_candidates = positive_int("max_candidates", max_candidates)
    seed = int_at_least("seed", seed, 0)
    if k >= max_candidates:
        raise ValueError(
            f"k={k} must be below max_candidates={max_candidates}: the shortlist the tuner "
            "measures must hold more than the k hits"
        )
    if queries is not None:
        queries = check_vectors(queries, engine.dim, name="query_vectors")
        if queries.shape[0] < 2:
            raise ValueError(
                f"tune needs at least 2 sample queries to bound their mean recall; got "
                f"{queries.shape[0]}"
            )
    _check_funnel(engine.config)
    engine.settle()  # a rotation still waiting for rows is fitted on those there are
    options = {"k": k, "target": target_recall, "sample": sample, "seed": seed}
    options |= {"max_candidates": max_candidates, "z": NormalDist().inv_cdf(confidence)}
    measured = _sample(engine, queries, options)
    source = "queries" if queries is not None else "held-out rows"
    try:
        if coarse is None:
            trials = [(engine.trial(engine.config, exclude=measured.exclude), "")]
            result, best = _tune_trials(trials, measured, engine.count())
        else:
            result, best = _search_coarse(engine, coarse, measured, seed)
        result.source = source
        engine.adopt(best)
    finally:
        engine.end_trials()
    return result


def _check_funnel(config: IndexConfig) -> None:
    if config.coarse_dim is None:
        raise ValueError("tune needs a coarse stage: an exact index (coarse_dim=None) has none")
    if config.stages:
        raise ValueError(
            f"tune calibrates the two-stage funnel; this index has stages={list(config.stages)}"
        )


def _tune_trials(
    trials: list[tuple[Trial, str]], sample: _Sample, count: int
) -> tuple[TuneResult, Trial]:
    """Tune each trial's stage; the rows of all, and the fastest that meets the target.

    Raises:
        ValueError: If no stage reaches the target within ``sample.cap`` candidates.
    """
    result = TuneResult(sample.target, sample.k, sample.q.shape[0])
    best: tuple[float, Trial] | None = None
    errors = []
    for trial, label in trials:
        try:
            tried = _tune_stage(trial, sample, count)
        except ValueError as exc:  # this stage cannot reach the target within the cap
            errors.append(str(exc))
            continue
        for row, _ in tried:
            if label:
                row["coarse"] = label
            result.rows.append(row)
        row, chosen = min(
            (pair for pair in tried if pair[0]["recall_low"] >= sample.target),  # exact always
            key=lambda pair: pair[0]["ms_per_query"],
        )
        if best is None or row["ms_per_query"] < best[0]:
            best, result.chosen = (row["ms_per_query"], chosen), row
    if best is None:
        raise ValueError(errors[0] if len(errors) == 1 else "; ".join(errors))
    return result, best[1]


def _search_coarse(
    engine: TunableEngine, coarse: Sequence[dict[str, Any]] | str, sample: _Sample, seed: int
) -> tuple[TuneResult, Trial]:
    """Build and tune each coarse stage of ``coarse``; the fastest that meets the target."""
    caps = backends.spec(engine.config.backend).capabilities
    if isinstance(coarse, str):
        if coarse != "search":
            raise ValueError(f"coarse must be 'search' or a list of settings, got {coarse!r}")
        coarse = COARSE_CANDIDATES if caps.trial_stages == "process" else SERVER_CANDIDATES
    if caps.trial_stages == "process" and not caps.builds_stages:
        raise ValueError(
            f"tune(coarse=...) builds trial coarse stages in this process; this index's stage "
            f"(backend={engine.config.backend!r}) is kept outside it"
        )
    trials, skipped = [], []
    for settings in coarse:
        made = _stage_trial(engine, settings, sample, seed)
        if isinstance(made, str):
            skipped.append(made)
        else:
            trials.append(made)
    if not trials:
        raise ValueError(f"no coarse stage of {list(coarse)} fits this index: {'; '.join(skipped)}")
    try:
        result, best = _tune_trials(trials, sample, engine.count())
    except ValueError:
        raise ValueError(
            f"no coarse stage of {list(coarse)} reaches recall@{sample.k} {sample.target} within "
            f"{sample.cap} candidates" + (f" ({'; '.join(skipped)})" if skipped else "")
        ) from None
    result.skipped = skipped
    return result, best


def _stage_trial(
    engine: TunableEngine, settings: dict[str, Any], sample: _Sample, seed: int
) -> tuple[Trial, str] | str:
    """A trial of the coarse stage ``settings`` describe (with its label), or why it does not
    fit the index."""
    if not isinstance(settings, dict):
        raise ValueError(
            f"a coarse setting is a dict such as {{'coarse_dim': 64}}, got {settings!r:.60}"
        )
    own = engine.config.backend
    local = backends.spec(own).capabilities.trial_stages == "process"
    default = {"backend": "exact", "precision": "float32"} if local else {"backend": own}
    settings = {**default, **settings}
    rotation = settings.pop("rotation", None)
    if rotation not in (None, "pca"):
        raise ValueError(f"a coarse setting's rotation is None or 'pca', got {rotation!r}")
    caps = backends.spec(settings["backend"]).capabilities  # an unknown backend is named
    label = ", ".join(
        f"{key}={value}" for key, value in {**settings, "rotation": rotation}.items() if value
    )
    if not local and settings["backend"] != own:
        raise ValueError(
            f"the trial stages of a backend={own!r} index are built on its server, of its own "
            f"backend; got backend={settings['backend']!r} (in {label})"
        )
    if local and not caps.builds_stages:
        raise ValueError(
            f"tune(coarse=...) builds trial stages in this process; backend="
            f"{settings['backend']!r} keeps its stage outside it (in {label})"
        )
    config = engine.config.replace(stages=(), adaptive_margin=None, **settings)
    assert engine.dim is not None
    if config.coarse_dim is None or config.coarse_dim > engine.dim:
        return f"{label}: coarse_dim {config.coarse_dim} is wider than the {engine.dim}-dim vectors"
    check_rotation(rotation, config, engine.dim)
    return engine.trial(config, rotation=rotation, exclude=sample.exclude, seed=seed), label


def _tune_stage(trial: Trial, sample: _Sample, count: int) -> list[tuple[dict[str, Any], Trial]]:
    """The rows of a trial's coarse stage: the best fixed shortlist (with the beam, for a graph
    walked with one), the adaptive margin and an exact scan, each measured."""
    config, k, target, z = trial.config, sample.k, sample.target, sample.z
    scores, rows = trial.shortlist(sample.q, sample.cap)
    shortlist, margin_needed = _needs(sample.truth, rows, scores, k)
    fixed_n = _smallest(shortlist, target, z)
    margin = _smallest(margin_needed, target, z)
    if not math.isfinite(margin):
        raise ValueError(
            f"recall@{k} {target} is out of reach with {sample.cap} coarse candidates "
            f"at coarse_dim={config.coarse_dim}: raise max_candidates or the coarse dim"
        )
    widest = adaptive_cut(scores, rows, k, margin)
    cap_needed = int((widest >= 0).sum(axis=1).max())
    funnel = config.replace(exact_below=0)
    fixed = trial.using(
        funnel.replace(adaptive_margin=None, rescore_multiplier=max(1, math.ceil(fixed_n / k)))
    )
    beam = backends.spec(config.backend).capabilities.beam
    if beam:  # the graph's beam, not only the shortlist, limits recall
        tried = _beam_trades(fixed, fixed_n, sample)
        funnel = funnel.replace(ef_search=tried[0][1].config.ef_search)
    else:
        keep = fixed.config.rescore_multiplier * k
        recall = (shortlist <= keep).mean(axis=1)
        tried = [(_row("fixed", {"shortlist": keep}, fixed, sample, recall), fixed)]
    if backends.spec(config.backend).capabilities.adaptive:
        adaptive = trial.using(
            funnel.replace(
                adaptive_margin=margin,
                rescore_multiplier=max(1, math.ceil(1.25 * cap_needed / k)),
            )
        )
        recall = sample.recall(adaptive) if beam else (margin_needed <= margin).mean(axis=1)
        tried.append((_row("adaptive", {"margin": margin}, adaptive, sample, recall), adaptive))
    exact = trial.using(config.replace(exact_below=count))
    tried.append((_row("exact", {}, exact, sample, np.ones(sample.q.shape[0])), exact))
    return tried
