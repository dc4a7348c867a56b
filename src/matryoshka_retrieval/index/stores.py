"""The three stores an index is made of, as small interfaces; a backend module implements them.

- :class:`CoarseStage` holds the renormalised prefixes and returns a shortlist of rows.
- :class:`FullVectorStore` holds the full vectors by row and reads rows at any width.
- :class:`RecordStore` holds ids, texts and metadata by row, and evaluates filters.

A row number is the handle the three share: row ``i`` of the coarse stage is row ``i`` of the
vector store and of the record store, from an add until the next save compacts the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .filters import Filter

__all__ = ["CoarseStage", "FullVectorStore", "RecordStore", "Selector", "StageContext"]


class Selector:
    """The rows a search may return, as a boolean mask (and its packed bits, built once)."""

    def __init__(self, allowed: NDArray[np.bool_]) -> None:
        self.mask = allowed
        self.count = int(allowed.sum())
        self.bits = np.packbits(allowed, bitorder="little")


class FullVectorStore(Protocol):
    """Row-addressed float32 full vectors."""

    dim: int

    def __len__(self) -> int: ...

    def append(self, vectors: NDArray[Any]) -> NDArray[np.float32]:
        """Append rows; returns them as a view into the store, to finish in place."""

    def truncate_to(self, length: int) -> None:
        """Drop rows appended past ``length`` (undoing a failed add)."""

    def take(self, rows: NDArray[np.int64], dims: int | None = None) -> NDArray[np.float32]:
        """Gather ``rows`` (any shape), keeping the first ``dims`` columns."""

    def blocks(self, size: int = ...) -> Iterator[tuple[int, NDArray[np.float32]]]:
        """Yield ``(first_row, block)`` over every row."""

    def whole(self) -> NDArray[np.float32] | None:
        """Every row as one ``[n, dim]`` array when the store holds them so (else ``None``)."""


class RecordStore(Protocol):
    """Ids, texts and metadata (as JSON) by row."""

    def count(self) -> int: ...

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Rows of the ids that exist."""

    def all_ids(self) -> dict[str, int]:
        """Every id and its row."""

    def insert(
        self,
        rows: Sequence[int],
        ids: Sequence[str],
        texts: Sequence[str | None],
        metadatas: Sequence[str | None],
    ) -> None: ...

    def delete_rows(self, rows: Sequence[int]) -> None: ...

    def fetch(self, rows: Sequence[int]) -> dict[int, tuple[str, str | None, dict[str, Any]]]:
        """``row -> (id, text, metadata)`` for the rows that exist."""

    def matching_rows(self, where: Filter) -> NDArray[np.int64]:
        """Rows whose metadata matches a ``where`` filter."""


@dataclass
class StageContext:
    """What a coarse stage may ask of the index it belongs to.

    Attributes:
        model_name: The model that made the vectors, when known.
        rows_of: Maps record ids to rows (for stages keyed by id).
        prefixes: ``prefixes(dim, rows)`` yields ``(first, block)``: the renormalised
            ``dim``-prefixes of ``rows`` (every stored row when ``None``) in order, block by
            block, ``first`` counting from 0 (for stages that rebuild from the full vectors).
        fetch: The records of rows (for stages that keep metadata of their own).
        options: Runtime settings of the backend that are not configuration (clients).
    """

    model_name: str | None
    rows_of: Callable[[Sequence[str]], dict[str, int]]
    prefixes: Callable[[int, NDArray[np.int64] | None], Iterator[tuple[int, NDArray[np.float32]]]]
    fetch: Callable[[Sequence[int]], dict[int, tuple[str, str | None, dict[str, Any]]]]
    options: dict[str, Any]


class CoarseStage(Protocol):
    """The prefixes of every row, searched for a shortlist.

    ``filters_rows`` tells how a stage filters: ``True`` takes the allowed rows as a
    :class:`Selector` (the record store evaluates the filter); ``False`` takes the ``where``
    filter itself and leaves removed rows out on its own.
    """

    dim: int
    filters_rows: bool

    @property
    def ntotal(self) -> int: ...

    def add(
        self,
        prefix: NDArray[np.float32],
        rows: range,
        ids: Sequence[str],
        meta: Sequence[str | None],
    ) -> None:
        """Add renormalised prefixes of new rows (with their ids and metadata JSON)."""

    def remove(self, rows: Sequence[int], ids: Sequence[str]) -> None:
        """Forget rows (a stage that filters by rows may keep them: they are never allowed)."""

    def search(
        self,
        prefix: NDArray[np.float32],
        k: int,
        *,
        allowed: Selector | None = None,
        where: Filter | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top ``k`` rows per query: ``(scores, rows)``; rows are -1 past the last match."""

    def manifest(self) -> dict[str, Any]:
        """State to record in the manifest (merged into it), e.g. an int8 calibration."""

    def compacted(self, rows: NDArray[np.int64]) -> CoarseStage:
        """The stage after a save keeps only ``rows`` (in order) and renumbers them 0..n-1."""

    def write(self, folder: Path) -> list[str]:
        """Write the stage's files into a generation folder; returns their names."""

    def check_saved(self, count: int, records: RecordStore, vectors: FullVectorStore) -> None:
        """After open: make the stage agree with ``count`` saved records, or raise."""
