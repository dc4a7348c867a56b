"""The SQLite record store: ids, texts and metadata (JSON) by vector row."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .filters import Filter, compile_filter

__all__ = ["FILE_NAME", "RESIDENT_BYTES", "RecordDB"]

FILE_NAME = "records.sqlite"

RESIDENT_BYTES = 64 << 20
"""A saved records file up to this size is read into RAM when it is opened: a search then
looks its hits up in a dict instead of querying SQLite (about 10 us a search). Writes go to
SQLite as before; the first one drops the copy."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT,
    metadata TEXT
);
"""


@functools.lru_cache(maxsize=64)
def _fetch_query(n: int) -> str:
    return f"SELECT row, id, text, metadata FROM records WHERE row IN ({','.join('?' * n)})"


class RecordDB:
    """Ids, texts and metadata in SQLite, keyed by vector row."""

    def __init__(self, conn: sqlite3.Connection, *, read_only: bool = False) -> None:
        self.conn = conn
        self.read_only = read_only
        self.resident: dict[int, tuple[str, str | None, str | None]] | None = None
        if not read_only:
            conn.executescript(_SCHEMA)

    @classmethod
    def memory(cls) -> RecordDB:
        """A new, empty in-memory database."""
        return cls(sqlite3.connect(":memory:", check_same_thread=False))

    @classmethod
    def open_read_only(cls, path: Path) -> RecordDB:
        """Open a saved database without writing to it (copied to memory on the first write).

        A generation's files are written once and never changed in place (a save writes a new
        generation), so SQLite is told the file is immutable: a read then takes no file locks
        and does not re-check the file for changes, a few system calls less per search.
        """
        uri = f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1"  # as_uri escapes '?', '#'...
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return cls(conn, read_only=True)

    def keep_resident(self, path: Path) -> None:
        """Hold every record in RAM for :meth:`fetch` when the file at ``path`` (this read-only
        database's) is at most :data:`RESIDENT_BYTES`."""
        if self.read_only and path.stat().st_size <= RESIDENT_BYTES:
            rows = self.conn.execute("SELECT row, id, text, metadata FROM records")
            self.resident = {row: (id_, text, meta) for row, id_, text, meta in rows}

    def writable(self) -> None:
        """Switch a read-only database to a private in-memory copy that can be written."""
        self.resident = None
        if self.read_only:
            memory = sqlite3.connect(":memory:", check_same_thread=False)
            self.conn.backup(memory)
            self.conn.close()
            self.conn = memory
            self.read_only = False

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        self.writable()
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def save(self, path: Path, rows: NDArray[np.int64] | None = None) -> None:
        """Write a compact copy of the database to ``path``; with ``rows``, renumbered to them.

        Args:
            path: The file to write.
            rows: The records to keep, in their new order: ``rows[i]`` becomes row ``i``.
        """
        target = sqlite3.connect(path)
        try:
            self.conn.backup(target)
            if rows is not None:
                with target:
                    RecordDB(target).renumber(rows)
            target.execute("VACUUM")
            target.commit()
        finally:
            target.close()

    def check(self) -> None:
        """Raise ``sqlite3.DatabaseError`` if the database is damaged."""
        result = self.conn.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {result}")

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Rows of the ids that exist."""
        found: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, row FROM records WHERE id IN ({marks})"
            found.update(self.conn.execute(query, chunk).fetchall())
        return found

    def insert(
        self,
        rows: Sequence[int],
        ids: Sequence[str],
        texts: Sequence[str | None],
        metadatas: Sequence[str | None],
    ) -> None:
        self.conn.executemany(
            "INSERT INTO records (row, id, text, metadata) VALUES (?, ?, ?, ?)",
            zip(rows, ids, texts, metadatas, strict=True),
        )

    def delete_rows(self, rows: Sequence[int]) -> None:
        self.conn.executemany("DELETE FROM records WHERE row = ?", ((int(r),) for r in rows))

    def fetch(self, rows: Sequence[int]) -> dict[int, tuple[str, str | None, dict[str, Any]]]:
        """``row -> (id, text, metadata)`` for the rows that exist."""
        out: dict[int, tuple[str, str | None, dict[str, Any]]] = {}
        if self.resident is not None:
            resident = self.resident
            for row in rows:
                found = resident.get(row)
                if found is not None:
                    id_, text, meta = found
                    out[row] = (id_, text, json.loads(meta) if meta else {})
            return out
        unique = list(dict.fromkeys(rows))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            for row, id_, text, meta in self.conn.execute(_fetch_query(len(chunk)), chunk):
                out[row] = (id_, text, json.loads(meta) if meta else {})
        return out

    def all_ids(self) -> dict[str, int]:
        """Every id and its row."""
        return dict(self.conn.execute("SELECT id, row FROM records").fetchall())

    def matching_rows(self, where: Filter) -> NDArray[np.int64]:
        """Rows whose metadata matches a ``where`` filter."""
        sql, params = compile_filter(where)
        query = f"SELECT row FROM records WHERE {sql}"
        return np.asarray([r for (r,) in self.conn.execute(query, params)], dtype=np.int64)

    def renumber(self, rows: NDArray[np.int64]) -> None:
        """Give the records at ``rows`` (in this order) the new rows ``0..len(rows)-1``."""
        self.conn.execute("UPDATE records SET row = -1 - row")
        self.conn.executemany(
            "UPDATE records SET row = ? WHERE row = ?",
            ((new, -1 - int(old)) for new, old in enumerate(rows)),
        )
