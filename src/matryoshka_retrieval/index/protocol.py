"""The engine protocol: the operations :class:`~.index.MatryoshkaIndex` calls on an index's
engine, and what an engine is made with.

Two engines implement it as peers: :class:`~.engine.LocalEngine` (a coarse stage, the full
vectors and the records, each behind its store interface, in this process) and
:class:`~.postgres.PostgresEngine` (one PostgreSQL table). Which one serves a backend, and what
it can do, is in :mod:`.backends`; the facade checks a capability before it calls an operation
that only some engines have (:class:`SavingEngine`, :class:`TunableEngine`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from .._validation import check_choice
from .config import IndexConfig
from .filters import Filter
from .hits import Hits, Record
from .manifest import Manifest

if TYPE_CHECKING:
    from ..projection import Projection

__all__ = [
    "CLOSED",
    "ClosedEngine",
    "Engine",
    "EngineSettings",
    "SavingEngine",
    "Trial",
    "TunableEngine",
]


@dataclass(frozen=True)
class EngineSettings:
    """What an engine is made with besides its configuration.

    Attributes:
        model_name: The model that made the vectors, when known.
        options: The backend's runtime options (clients, connections), as
            :func:`~.backends.check_options` returned them.
        device: Where a local rerank runs (``auto``, ``cpu``, ``cuda:N``).
        rerank: The local rerank path (``auto``, ``numpy``, ``torch``).
        torch_dtype: Precision of the vectors on the torch device.
        max_resident_bytes: Largest copy of the full vectors kept on the torch device.
    """

    model_name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "auto"
    rerank: Literal["auto", "numpy", "torch"] = "auto"
    torch_dtype: Literal["float16", "float32"] | None = None
    max_resident_bytes: int | None = None

    def __post_init__(self) -> None:
        check_choice("rerank", self.rerank, ("auto", "numpy", "torch"))


class Engine(Protocol):
    """The operations every engine implements.

    Rows are the engine's handles of records (positions locally, a sequence number on a
    server); the facade passes back what :meth:`rows_of` returned.
    """

    config: IndexConfig
    model_name: str | None
    dim: int | None
    saved_projection: Projection | None
    """The projection the stored vectors went through, as saved with the index."""

    @property
    def read_only(self) -> bool:
        """Whether writes are refused here (a read replica of a server index)."""

    @property
    def rerank_device(self) -> str:
        """Where the rerank runs, for example ``numpy:cpu`` or ``postgres:server``."""

    def init_dim(self, dim: int) -> None:
        """Fix the full dimension (the first add), or check it against the stored one."""

    def count(self) -> int:
        """The number of live records."""

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """The rows of the ids that exist."""

    def append(
        self,
        matrix: NDArray[Any],
        ids: list[str],
        texts: list[str | None],
        meta_json: list[str | None],
        replaced: list[int],
    ) -> None:
        """Store new rows, all or nothing; ``replaced`` rows stop being live."""

    def remove(self, found: dict[str, int]) -> int:
        """Remove the records ``{id: row}``; returns how many this call removed."""

    def get(self, ids: Sequence[str], include_vectors: bool) -> list[Record]:
        """The records of the ids that exist, in input order."""

    def ids(self, where: Filter | None) -> list[str]:
        """The ids of the records matching ``where`` (all when ``None``), oldest first."""

    def search(self, queries: NDArray[np.float32], k: int, where: Filter | None) -> list[Hits]:
        """The ``k`` best live records per unit-length query, under an optional filter."""

    def manifest(self, projection: Any) -> Manifest:
        """The manifest of the current state."""

    def close(self) -> None:
        """Release what the engine holds open (files, connections); idempotent."""


class SavingEngine(Engine, Protocol):
    """An engine kept in this process and written to a folder (``persists="folder"``)."""

    full_vectors: str
    """How the full vectors are read (``ram``, ``mmap``, ``pread``), kept for later saves."""

    def persist(self, folder: Path, projection: Any) -> None:
        """Write the live rows to ``folder`` atomically and switch to the written files."""


class Trial(Protocol):
    """A candidate configuration of an engine, searchable without being put in force."""

    config: IndexConfig

    def using(self, config: IndexConfig) -> Trial:
        """The same coarse stage searched with another ``config`` (shortlist, beam, margin,
        ``exact_below``; the stage's own settings unchanged)."""

    def search(self, queries: NDArray[np.float32], k: int) -> list[Hits]:
        """The real search path with this configuration (what the tuner times)."""

    def top_rows(self, queries: NDArray[np.float32], k: int) -> NDArray[np.int64]:
        """Rows of each query's ``k`` hits through the funnel (-1 past the last)."""

    def shortlist(
        self, queries: NDArray[np.float32], n: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The coarse stage's ``n`` best ``(scores, rows)`` per query."""


class TunableEngine(Engine, Protocol):
    """An engine whose funnel :func:`~.tune.tune` can measure (``tunable`` capability)."""

    def settle(self) -> None:
        """Finish what waits for rows (a pending coarse rotation) before measuring."""

    def sample_rows(self, sample: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Up to ``sample`` stored live rows, at random: ``(vectors, rows)``."""

    def exact_rows(
        self, queries: NDArray[np.float32], k: int, exclude: NDArray[np.int64] | None
    ) -> NDArray[np.int64]:
        """Rows of each query's exact full-dim top ``k``, leaving ``exclude`` out."""

    def trial(
        self,
        config: IndexConfig,
        *,
        rotation: Any = ...,
        exclude: NDArray[np.int64] | None = None,
        seed: int = 0,
    ) -> Trial:
        """``config`` (with ``rotation``: ``None``, ``"pca"`` or a ``Projection``; ``...``:
        the current one) over the stored rows but ``exclude``, built as needed, in force
        nowhere."""

    def adopt(self, trial: Trial) -> None:
        """Put a trial's configuration in force (its coarse stage over every row)."""

    def end_trials(self) -> None:
        """Release what the trials hold (tables a server made for them); the tuner's end."""


CLOSED = "the index was closed: open a saved or server index again with MatryoshkaIndex.load"
"""What any use of a closed index raises (a ``ValueError``)."""


class ClosedEngine:
    """What a closed index holds instead of its engine: every use but ``close`` says so."""

    def close(self) -> None:
        """Closing a closed index does nothing."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and friends probe for these
            raise AttributeError(name)
        raise ValueError(CLOSED)
