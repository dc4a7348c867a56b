"""The index configuration: validated once, and written into and read from the manifest as is."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from .._validation import positive_int
from . import backends

__all__ = ["DEFAULTS", "LOCAL_PRECISIONS", "UNSET", "Backend", "CoarsePrecision", "IndexConfig"]

Backend = Literal["exact", "hnsw", "chroma", "postgres"]
CoarsePrecision = Literal["float32", "float16", "int8", "binary"]
LOCAL_PRECISIONS: tuple[str, ...] = backends.spec("exact").capabilities.precisions
"""The precisions of the in-process coarse stage (FAISS); float16 is PostgreSQL's halfvec."""


class _Unset:
    """The default of an argument the caller did not give (an explicit 64 is not the default)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

_DEFAULT_COARSE_DIM = 64

EXACT_SCAN_FLOATS: int = backends.spec("exact").capabilities.exact_scan_floats
"""``exact_below="auto"`` scans exactly in process while the full vectors hold at most this many
floats (16 MiB)."""


def _choice(name: str, value: Any, literal: Any) -> Any:
    choices = get_args(literal)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {choices}")
    return value


def _stages(stages: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
        raise ValueError(f"stages must be a list of (dim, keep) pairs or None, got {stages!r:.80}")
    checked: list[tuple[int, int]] = []
    for i, stage in enumerate(stages):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or len(stage) != 2:
            raise ValueError(f"stages[{i}] must be a (dim, keep) pair, got {stage!r:.80}")
        dim = positive_int(f"stages[{i}] dim", stage[0])
        keep = positive_int(f"stages[{i}] keep", stage[1])
        if checked and dim < checked[-1][0]:
            raise ValueError(
                f"stage dims must not decrease: stages[{i}] has dim {dim} after {checked[-1][0]}"
            )
        if checked and keep > checked[-1][1]:
            raise ValueError(
                f"a stage cannot keep more candidates than it receives: stages[{i}] keeps "
                f"{keep} of {checked[-1][1]}"
            )
        checked.append((dim, keep))
    if not checked:
        raise ValueError("stages must hold at least one (dim, keep) pair, or be None")
    return tuple(checked)


@dataclass(frozen=True)
class IndexConfig:
    """How an index searches and stores; frozen, checked when made, and the manifest's core.

    Attributes:
        coarse_dim: Prefix length of the coarse stage; ``None`` searches the full vectors
            exactly. With ``stages`` it is the first stage's dim.
        stages: The cascade ``((dim, keep), ...)``, coarse stage first; empty for a two-stage
            search that keeps ``k * rescore_multiplier`` candidates.
        rescore_multiplier: Shortlist size per wanted result in two-stage search.
        precision: Precision of the coarse prefix.
        backend: Which coarse stage holds the prefixes (``exact``, ``hnsw`` or ``chroma``), or
            ``postgres``: the whole index (records, full vectors, prefix index) in one table.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build beam width.
        ef_search: HNSW search beam width (raised to the shortlist size when smaller).
        collection: Name of the Chroma collection (``chroma`` backend).
        adaptive_margin: ``None`` for a fixed shortlist; else each query keeps, of its coarse
            shortlist, the candidates whose coarse score is within this margin of its ``k``-th
            best (at least ``k``), so easy queries rerank few and hard ones many. Calibrated
            to a recall target by :meth:`MatryoshkaIndex.tune`.
        exact_below: Search the full vectors exactly while the index holds at most this many
            live rows (0: never). ``"auto"``: while a full scan reads at most
            :data:`EXACT_SCAN_FLOATS` floats (16 MiB; 10,922 rows of 384 dims), where it is as
            fast as a funnel and its results are exact.

    Example:
        >>> IndexConfig.create(stages=[(64, 400), (256, 100)]).coarse_dim
        64
        >>> IndexConfig.create(coarse_dim=32, stages=[(64, 100)])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: coarse_dim=32 disagrees with stages=[(64, 100)]: ...
    """

    coarse_dim: int | None = _DEFAULT_COARSE_DIM
    stages: tuple[tuple[int, int], ...] = ()
    rescore_multiplier: int = 10
    precision: CoarsePrecision = "float32"
    backend: Backend = "exact"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    collection: str | None = field(default=None)
    adaptive_margin: float | None = None
    exact_below: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        if self.coarse_dim is not None:
            positive_int("coarse_dim", self.coarse_dim)
        below = self.exact_below
        if below != "auto" and (isinstance(below, bool) or not isinstance(below, int) or below < 0):
            raise ValueError(f"exact_below must be 'auto' or an int >= 0, got {below!r}")
        for name in ("rescore_multiplier", "hnsw_m", "ef_construction", "ef_search"):
            positive_int(name, getattr(self, name))
        margin = self.adaptive_margin
        if margin is not None and (
            isinstance(margin, bool)
            or not isinstance(margin, (int, float))
            or not math.isfinite(margin)
            or margin < 0
        ):
            raise ValueError(
                f"adaptive_margin must be a finite number >= 0 or None, got {margin!r}"
            )
        _choice("precision", self.precision, CoarsePrecision)
        backends.check_precision(self.backend, self.precision)  # an unknown backend too
        if self.stages:
            _stages(self.stages)
            if self.coarse_dim != self.stages[0][0]:
                raise ValueError(
                    f"coarse_dim={self.coarse_dim} disagrees with the first stage's dim "
                    f"{self.stages[0][0]}"
                )
        if self.coarse_dim is None and self.precision != "float32":
            raise ValueError(
                f"precision={self.precision!r} needs a coarse_dim; exact full-dim search "
                "(coarse_dim=None) scores float32 vectors"
            )
        if self.precision == "binary" and self.coarse_dim is not None and self.coarse_dim % 8:
            raise ValueError(
                f"binary precision packs 8 dims per byte: coarse_dim={self.coarse_dim} must be "
                "a multiple of 8"
            )

    @classmethod
    def create(
        cls,
        *,
        coarse_dim: int | None = UNSET,
        stages: Sequence[tuple[int, int]] | None = None,
        **settings: Any,
    ) -> IndexConfig:
        """A config from constructor arguments; ``coarse_dim`` defaults to the first stage's dim.

        Raises:
            ValueError: For any bad value (named with its limit), or an explicit ``coarse_dim``
                that disagrees with ``stages`` (naming both).
        """
        checked = _stages(stages) if stages is not None else ()
        if checked and coarse_dim is not UNSET and coarse_dim != checked[0][0]:
            raise ValueError(
                f"coarse_dim={coarse_dim!r} disagrees with stages={list(checked)}: the first "
                f"stage's dim is {checked[0][0]}; leave coarse_dim out when giving stages"
            )
        if checked:
            coarse_dim = checked[0][0]
        elif coarse_dim is UNSET:
            coarse_dim = _DEFAULT_COARSE_DIM
        return cls(coarse_dim=coarse_dim, stages=checked, **settings)

    @property
    def dims(self) -> list[int]:
        """Every prefix dim a search uses, coarse first."""
        if self.coarse_dim is None:
            return []
        return [self.coarse_dim, *(d for d, _ in self.stages[1:])]

    def check_full_dim(self, full_dim: int) -> None:
        """Raise if a prefix dim exceeds the vectors' dimension."""
        for dim in self.dims:
            if dim > full_dim:
                raise ValueError(
                    f"coarse_dim / stage dim {dim} is out of range: it must be between 1 and the "
                    f"vectors' dimension {full_dim}"
                )

    def searches_exactly(self, rows: int, full_dim: int) -> bool:
        """Whether a search over ``rows`` live rows of ``full_dim`` scans them all exactly
        (``"auto"``: up to the backend's ``exact_scan_floats``, :data:`EXACT_SCAN_FLOATS` in
        process)."""
        if self.coarse_dim is None:
            return True
        if self.exact_below == "auto":
            return rows * full_dim <= self.auto_exact_floats
        return rows <= self.exact_below

    @property
    def auto_exact_floats(self) -> int:
        """The floats of full vectors up to which ``exact_below="auto"`` scans exactly."""
        return backends.spec(self.backend).capabilities.exact_scan_floats

    def funnel(self, k: int) -> list[tuple[int, int]]:
        """The ``(dim, keep)`` stages of a search for ``k`` hits (every keep at least ``k``)."""
        assert self.coarse_dim is not None
        stages = self.stages or ((self.coarse_dim, k * self.rescore_multiplier),)
        return [(dim, max(keep, k)) for dim, keep in stages]

    def replace(self, **changes: Any) -> IndexConfig:
        """A copy with some settings changed (checked again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return IndexConfig(**values)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's fields for this config (the same layout since format version 1)."""
        return {
            "coarse_dim": self.coarse_dim,
            "stages": [list(s) for s in self.stages],
            "rescore_multiplier": self.rescore_multiplier,
            "precision": self.precision,
            "backend": self.backend,
            "hnsw": {
                "m": self.hnsw_m,
                "ef_construction": self.ef_construction,
                "ef_search": self.ef_search,
            },
            "collection": self.collection,
            "adaptive_margin": self.adaptive_margin,
            "exact_below": self.exact_below,
        }

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> IndexConfig:
        """Read back what :meth:`to_manifest` wrote.

        Raises:
            ValueError: If a field is missing or invalid (the caller names the file).
        """
        hnsw = data.get("hnsw") or {}
        if not isinstance(hnsw, Mapping):
            raise ValueError(f"hnsw must be an object, got {hnsw!r:.60}")
        stages = data.get("stages") or None
        return cls.create(
            coarse_dim=data["coarse_dim"],
            stages=_stages(stages) if stages is not None else None,
            rescore_multiplier=data["rescore_multiplier"],
            precision=data["precision"],
            backend=data["backend"],
            hnsw_m=hnsw.get("m", DEFAULTS.hnsw_m),
            ef_construction=hnsw.get("ef_construction", DEFAULTS.ef_construction),
            ef_search=hnsw.get("ef_search", DEFAULTS.ef_search),
            collection=data.get("collection"),
            adaptive_margin=data.get("adaptive_margin"),
            exact_below=data.get("exact_below", LEGACY_EXACT_BELOW),
        )

    @classmethod
    def manifest_fields(cls) -> frozenset[str]:
        """The keys :meth:`to_manifest` writes."""
        return frozenset(DEFAULTS.to_manifest())


DEFAULTS = IndexConfig()
"""Every setting's default, in one place: the facade's signature and the manifest reader take
theirs from here."""

LEGACY_EXACT_BELOW = 0
"""``exact_below`` of a manifest written by 0.1, which had no such setting: never exact."""
