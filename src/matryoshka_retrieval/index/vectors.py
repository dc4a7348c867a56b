"""The local full-vector store: float32 rows in RAM, memory-mapped, or read with ``pread``."""

from __future__ import annotations

import mmap as mmap_module
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["ALIGN", "FILE_NAME", "FullVectors", "VectorStore", "aligned_empty", "residency"]

FILE_NAME = "vectors.npy"

FullVectors = Literal["auto", "ram", "mmap", "pread"]
"""Where a saved index's full vectors are read from: ``ram`` (an anonymous copy), ``mmap`` (the
file mapped: rows come from the OS page cache without system calls, and the pages a search
touched count as file-backed, reclaimable RSS), ``pread`` (one positional read per candidate row:
the process keeps only the coarse index, each search pays the system calls), ``auto`` (see
:func:`residency`)."""

RAM_BUDGET = 1 << 30
"""``auto`` keeps full vectors up to this size in RAM and maps larger ones."""

ALIGN = 64
"""Byte alignment of the vectors held in RAM: a cache line. NumPy aligns to 16 bytes, and on
rows a multiple of 64 bytes wide FAISS's scan then reads cache lines split in two (a mapped
file's rows are aligned already: the ``.npy`` header is padded to 64 bytes)."""


def aligned_empty(rows: int, dim: int) -> NDArray[np.float32]:
    """An uninitialised float32 ``[rows, dim]`` array that starts on an :data:`ALIGN` boundary."""
    nbytes = rows * dim * 4
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + nbytes].view(np.float32).reshape(rows, dim)


def residency(choice: str, nbytes: int, *, exact: bool) -> str:
    """The concrete mode for ``choice``: ``auto`` is ``ram`` for an exact-mode index (it scans
    every row) or vectors up to :data:`RAM_BUDGET` bytes, else ``mmap``.

    Raises:
        ValueError: For an unknown choice.
    """
    from .._validation import check_choice

    check_choice("full_vectors", choice, ("auto", "ram", "mmap", "pread"))
    if choice != "auto":
        return choice
    return "ram" if exact or nbytes <= RAM_BUDGET else "mmap"


class VectorStore:
    """Row-addressed float32 vectors: a read-only base (often memory-mapped) plus appended rows.

    Rows are never moved while the index is open, so a row number is a stable handle; deleted
    rows stay until the index is saved, which writes only the live rows.
    """

    def __init__(
        self, dim: int, base: NDArray[np.float32] | None = None, *, pread: bool = False
    ) -> None:
        self.dim = dim
        self.base: NDArray[np.float32] = (
            base if base is not None else np.empty((0, dim), dtype=np.float32)
        )
        self._extra = np.empty((0, dim), dtype=np.float32)
        self._extra_len = 0
        # With ``pread``, a memory-mapped base is read row by row with positional reads: touching
        # a mapped row makes the kernel map the pages around it too (fault-around, 64 KiB), so a
        # mapped gather grows the process's (file-backed) RSS about 16 times faster than the
        # data it reads; positional reads keep it flat, at a system call per row.
        self._fd: int | None = None
        self._offset = 0
        self.mode = "ram" if not isinstance(base, np.memmap) else "pread" if pread else "mmap"
        if pread and isinstance(base, np.memmap) and base.filename and base.flags.c_contiguous:
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
            grown = aligned_empty(max(needed, 2 * self._extra.shape[0], 1024), self.dim)
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
        n_base = int(self.base.shape[0])
        if self._fd is None and (self._extra_len == 0 or n_base == 0):  # one gather
            source = self.base if n_base else self._extra
            taken = source.take(flat, axis=0) if width == self.dim else source[flat, :width]
            return taken.reshape(*rows.shape, width)
        out = np.empty((flat.shape[0], width), dtype=np.float32)
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

    def whole(self) -> NDArray[np.float32] | None:
        """Every row as one array, without a copy, when they are all in the base or all
        appended (``None`` when both parts hold rows)."""
        if self._extra_len == 0:
            return self.base
        return self.extra if self.base.shape[0] == 0 else None

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
    def open(cls, path: Path, *, count: int, dim: int, mode: str) -> VectorStore:
        """The vectors saved at ``path``, read as ``mode`` says (``ram``, ``mmap``, ``pread``).

        Raises:
            ValueError: If the file cannot be read or does not hold ``count x dim`` float32.
        """
        try:
            base = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"cannot read the vectors: {exc}") from exc
        if base.shape != (count, dim) or base.dtype != np.float32:
            raise ValueError(
                f"the vectors file holds {base.dtype} {base.shape}, expected float32 {(count, dim)}"
            )
        if mode == "ram":
            mapped, base = base, aligned_empty(count, dim)
            for start in range(0, count, 65536):  # read through the page cache, block by block
                base[start : start + 65536] = mapped[start : start + 65536]
            del mapped
        if isinstance(base, np.memmap) and mode == "mmap":
            madvise = getattr(getattr(base, "_mmap", None), "madvise", None)  # no read-ahead
            if madvise is not None and hasattr(mmap_module, "MADV_RANDOM"):
                madvise(mmap_module.MADV_RANDOM)
        return cls(dim, base, pread=mode == "pread")
