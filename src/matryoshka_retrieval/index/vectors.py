"""The local full-vector store: float32 rows in RAM, or memory-mapped from a ``.npy`` file."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["FILE_NAME", "VectorStore"]

FILE_NAME = "vectors.npy"


class VectorStore:
    """Row-addressed float32 vectors: a read-only base (often memory-mapped) plus appended rows.

    Rows are never moved while the index is open, so a row number is a stable handle; deleted
    rows stay until the index is saved, which writes only the live rows.
    """

    def __init__(self, dim: int, base: NDArray[np.float32] | None = None) -> None:
        self.dim = dim
        self.base: NDArray[np.float32] = (
            base if base is not None else np.empty((0, dim), dtype=np.float32)
        )
        self._extra = np.empty((0, dim), dtype=np.float32)
        self._extra_len = 0
        # A memory-mapped base is read row by row with positional reads: touching a mapped row
        # makes the kernel map the pages around it too (fault-around, 64 KiB), so a mapped
        # gather would grow the process's RSS about 16 times faster than the data it reads.
        self._fd: int | None = None
        self._offset = 0
        if isinstance(base, np.memmap) and base.filename and base.flags.c_contiguous:
            self._fd = os.open(base.filename, os.O_RDONLY)
            self._offset = int(base.offset)
            self._finalizer = weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return int(self.base.shape[0]) + self._extra_len

    @property
    def extra(self) -> NDArray[np.float32]:
        """Rows appended since the base was loaded."""
        return self._extra[: self._extra_len]

    def append(self, vectors: NDArray[Any]) -> NDArray[np.float32]:
        """Append rows (amortised O(1) per row: the buffer doubles when full).

        Returns:
            The appended rows as a float32 view into the store, to finish in place.
        """
        needed = self._extra_len + len(vectors)
        if needed > self._extra.shape[0]:
            grown = np.empty((max(needed, 2 * self._extra.shape[0], 1024), self.dim), np.float32)
            grown[: self._extra_len] = self.extra
            self._extra = grown
        start = self._extra_len
        self._extra[start:needed] = vectors
        self._extra_len = needed
        return self._extra[start:needed]

    def truncate_to(self, length: int) -> None:
        """Drop rows appended past ``length`` (undoing a failed add)."""
        self._extra_len = max(0, length - int(self.base.shape[0]))

    def take(self, rows: NDArray[np.int64], dims: int | None = None) -> NDArray[np.float32]:
        """Gather ``rows`` (any shape), keeping the first ``dims`` columns."""
        flat = rows.reshape(-1)
        width = self.dim if dims is None else dims
        out = np.empty((flat.shape[0], width), dtype=np.float32)
        n_base = int(self.base.shape[0])
        in_base = flat < n_base
        if in_base.all():
            self._take_base(flat, width, out)
        else:
            base_out = np.empty((int(in_base.sum()), width), dtype=np.float32)
            self._take_base(flat[in_base], width, base_out)
            out[in_base] = base_out
            out[~in_base] = self._extra[flat[~in_base] - n_base, :width]
        return out.reshape(*rows.shape, width)

    def _take_base(self, rows: NDArray[np.int64], width: int, out: NDArray[np.float32]) -> None:
        if self._fd is None or rows.shape[0] == 0:
            out[:] = self.base[rows, :width]
            return
        unique = np.unique(rows)
        buffer = np.empty((unique.shape[0], width), dtype=np.float32)
        row_bytes = 4 * self.dim
        if width == self.dim:  # one pread per run of consecutive rows
            breaks = (np.flatnonzero(np.diff(unique) != 1) + 1).tolist()
            for a, b in zip([0, *breaks], [*breaks, unique.shape[0]], strict=True):
                view = memoryview(buffer[a:b]).cast("B")  # type: ignore[arg-type]
                self._pread(view, self._offset + int(unique[a]) * row_bytes)
        else:  # only the prefix of each row
            for i, row in enumerate(unique.tolist()):
                view = memoryview(buffer[i]).cast("B")
                self._pread(view, self._offset + row * row_bytes)
        out[:] = buffer[np.searchsorted(unique, rows)]

    def _pread(self, view: memoryview, offset: int) -> None:
        assert self._fd is not None
        done = 0
        while done < len(view):
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"short read from the vectors file at byte {offset + done}")
            done += n

    def blocks(self, size: int = 65536) -> Iterator[tuple[int, NDArray[np.float32]]]:
        """Yield ``(first_row, block)`` over every row, base then appended."""
        for part, offset in ((self.base, 0), (self.extra, int(self.base.shape[0]))):
            for start in range(0, part.shape[0], size):
                yield offset + start, part[start : start + size]

    def write_npy(self, path: Path, rows: NDArray[np.int64] | None = None) -> None:
        """Write the vectors (or the given rows, in order) to a ``.npy`` file, block by block."""
        count = len(self) if rows is None else int(rows.shape[0])
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, self.dim))
        try:
            if rows is None:
                for start, block in self.blocks():
                    out[start : start + block.shape[0]] = block
            else:
                for start in range(0, count, 65536):
                    out[start : start + 65536] = self.take(rows[start : start + 65536])
            out.flush()
        finally:
            del out

    @classmethod
    def open(cls, path: Path, *, count: int, dim: int, mmap: bool) -> VectorStore:
        """The vectors saved at ``path`` (memory-mapped, or read into RAM).

        Raises:
            ValueError: If the file cannot be read or does not hold ``count x dim`` float32.
        """
        try:
            base = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"cannot read the vectors: {exc}") from exc
        if base.shape != (count, dim) or base.dtype != np.float32:
            raise ValueError(
                f"the vectors file holds {base.dtype} {base.shape}, expected float32 {(count, dim)}"
            )
        return cls(dim, base)
