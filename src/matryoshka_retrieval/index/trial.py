"""A configuration of the local engine that the tuner measures without putting it in force."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from .config import IndexConfig
from .filters import Filter
from .hits import Hits
from .stores import CoarseStage, Selector

if TYPE_CHECKING:
    from .engine import LocalEngine

__all__ = ["LocalTrial"]


class LocalTrial:
    """A configuration of a :class:`LocalEngine` measured by the tuner (see
    :meth:`LocalEngine.trial`); ``kept``: the rows its coarse stage holds, when a subset."""

    def __init__(
        self,
        engine: LocalEngine,
        config: IndexConfig,
        coarse: CoarseStage | None,
        rotation: Any,
        allowed: Selector | None,
        kept: NDArray[np.int64] | None,
    ) -> None:
        self.engine, self.config, self.rotation = engine, config, rotation
        self.coarse, self.allowed, self.kept = coarse, allowed, kept
        stage: Any = coarse
        if coarse is not None and getattr(coarse, "config", config) != config:
            stage = copy.copy(coarse)  # reads its search settings (ef_search) from its config
            stage.config = config
        if stage is not None and kept is not None:
            stage = _Subset(stage, kept)
        elif stage is not None and allowed is not None and not stage.filters_rows:
            stage = _Without(stage, allowed)
        self._stage = stage

    def using(self, config: IndexConfig) -> LocalTrial:
        """The same coarse stage searched with another ``config`` (shortlist, beam, margin,
        ``exact_below``)."""
        return LocalTrial(self.engine, config, self.coarse, self.rotation, self.allowed, self.kept)

    def stage(self) -> CoarseStage | None:
        """The coarse stage to put in force, set to this trial's config."""
        stage = self._stage.stage if isinstance(self._stage, (_Subset, _Without)) else self._stage
        return cast(CoarseStage | None, stage)

    def _in_use(self, stage: Any = None) -> CoarseStage | None:
        stage = self._stage if stage is None else stage
        return self.engine._coarse_in_use(self.config, stage, self.rotation)

    def search(self, queries: NDArray[np.float32], k: int) -> list[Hits]:
        """The engine's search path with this configuration, as a search of the index would
        run it (what the tuner times): over every live row, not only the trial's."""
        engine = self.engine
        stage = self._stage.stage if isinstance(self._stage, _Without) else self._stage
        allowed = engine.selection(None)
        found = engine._funnel(
            queries, k, self.config, self._in_use(stage), self.rotation, allowed, None
        )
        return engine.hits(*found)

    def top_rows(self, queries: NDArray[np.float32], k: int) -> NDArray[np.int64]:
        """Rows of each query's ``k`` hits through the funnel."""
        engine = self.engine
        return engine._funnel(
            queries, k, self.config, self._in_use(), self.rotation, self.allowed, None
        )[1]

    def shortlist(
        self, queries: NDArray[np.float32], n: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The coarse stage's ``n`` best ``(scores, rows)`` per query."""
        assert self._stage is not None and self.config.coarse_dim is not None
        view = self.engine.coarse_prefix(queries, self.config.coarse_dim, self.rotation)
        stage: CoarseStage = self._stage
        return stage.search(view, n, allowed=self.allowed)


class _Without:
    """A stage that evaluates filters itself (it takes no allowed rows), with the rows the
    trial leaves out taken out of its answers: one candidate more is asked for, for a query's
    own row."""

    def __init__(self, stage: CoarseStage, allowed: Selector) -> None:
        self.stage, self.allowed = stage, allowed
        self.dim, self.filters_rows = stage.dim, stage.filters_rows

    def search(
        self,
        prefix: NDArray[np.float32],
        k: int,
        *,
        allowed: Selector | None = None,
        where: Filter | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        scores, rows = self.stage.search(prefix, k + 1, where=where)
        out = rows >= 0
        out[out] = ~self.allowed.mask[rows[out]]
        order = np.argsort(out, axis=1, kind="stable")[:, :k]
        kept: NDArray[np.int64] = np.take_along_axis(rows, order, axis=1)
        kept = np.where(np.take_along_axis(out, order, axis=1), -1, kept)
        best: NDArray[np.float32] = np.take_along_axis(scores, order, axis=1)
        return best, kept


class _Subset:
    """A coarse stage built over ``kept`` rows (numbered from 0), searched in the rows of the
    engine."""

    def __init__(self, stage: CoarseStage, kept: NDArray[np.int64]) -> None:
        self.stage, self.kept = stage, kept
        self.dim, self.filters_rows = stage.dim, stage.filters_rows

    def search(
        self,
        prefix: NDArray[np.float32],
        k: int,
        *,
        allowed: Selector | None = None,
        where: Filter | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        inner = None
        if allowed is not None:
            mask = allowed.mask[self.kept]
            inner = None if mask.all() else Selector(mask)
        scores, rows = self.stage.search(prefix, k, allowed=inner, where=where)
        return scores, np.where(rows >= 0, self.kept[np.maximum(rows, 0)], -1)
