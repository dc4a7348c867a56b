"""The coarse column of a PostgreSQL index and its rotation.

A table made by this version keeps what the coarse stage sees of each row in a column of its
own (``coarse``: ``vector``, ``halfvec`` or ``bit``), with the HNSW index on it: the
renormalised prefix, after the coarse rotation when the index has one. The client computes it
when it adds rows (one product per row, the same as a query's), so the server never needs the
rotation; the rotation itself is kept in the registry's row of the index (a projection's
``.npz``), so that every client rotates its queries alike.

A ``"pca"`` rotation waits for rows: until the table holds enough for a fair covariance, rows
are added with a NULL coarse value and searches scan exactly; the write that reaches the
threshold fits the rotation on the stored rows and fills every NULL, in its own transaction,
while other writes wait (so every row is rotated exactly once).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..manifest import IndexCorruptedError
from .registry import read_entry, read_rotation, update_entry
from .sql import _Sql

if TYPE_CHECKING:
    from .engine import PostgresEngine

__all__ = [
    "check_rotation_matches",
    "column_values",
    "fill_column",
    "fit_rotation",
    "fit_waiting",
    "rotation_bytes",
    "stored_rotation",
    "vector_of",
]

ROTATION_SAMPLE = 50_000
"""Stored rows a waiting ``"pca"`` rotation is fitted on, at most."""
_FILL_BATCH = 10_000  # rows per round trip when a fitted rotation fills the coarse column


def column_values(turned: NDArray[np.float32], precision: str) -> list[Any]:
    """Rows of the coarse column, as pgvector's types: vector, halfvec or bit (its signs)."""
    if precision == "float32":
        return list(turned)
    from pgvector import Bit, HalfVector

    if precision == "float16":
        return [HalfVector(row) for row in turned]
    return [Bit(row > 0) for row in turned]


def rotation_bytes(rotation: Any) -> bytes | None:
    """A fitted rotation as the bytes of its ``.npz`` (``None`` for none, or a waiting one)."""
    if rotation is None or isinstance(rotation, str):
        return None
    buffer = io.BytesIO()
    rotation.save(buffer)
    return buffer.getvalue()


def stored_rotation(cur: Any, table: str, saved: Any) -> Any:
    """The rotation the manifest's ``coarse_rotation`` field ``saved`` describes: ``None``,
    ``"pca"`` (waiting) or the fitted ``Projection`` read from the registry.

    Raises:
        IndexCorruptedError: If the stored bytes are not a projection, or not the one the
            manifest names.
    """
    if not isinstance(saved, dict):
        return saved
    from ...projection import Projection

    try:
        rotation = Projection.load(io.BytesIO(read_rotation(cur, table)))
    except ValueError as exc:
        raise IndexCorruptedError(f"the coarse rotation of index {table!r}: {exc}") from exc
    if rotation.fingerprint != saved.get("fingerprint"):
        raise IndexCorruptedError(
            f"the coarse rotation stored for index {table!r} does not match its manifest"
        )
    return rotation


def check_rotation_matches(table: str, given: Any, stored: Any) -> None:
    """Refuse to open an index with a coarse rotation other than the one it was made with
    (``...``: whichever it has; ``"pca"`` matches a waiting or fitted PCA rotation)."""
    if given is ...:
        return
    if given is None or stored is None:
        same = given is stored
    elif isinstance(given, str):
        same = stored == "pca" or getattr(stored, "method", None) == "pca"
    else:
        same = getattr(stored, "fingerprint", None) == given.fingerprint
    if not same:
        raise ValueError(
            f"table {table!r} was made with coarse_rotation={_named(stored)}; this index has "
            f"coarse_rotation={_named(given)}: open it with MatryoshkaIndex.load(dsn, "
            "table=...) or choose another table"
        )


def _named(rotation: Any) -> str:
    if rotation is None or isinstance(rotation, str):
        return repr(rotation)
    return f"a {rotation.method} Projection ({rotation.fingerprint[:12]})"


def vector_of(value: Any) -> NDArray[np.float32]:
    """A vector read from the server (pgvector's ``Vector``, or an array) as float32."""
    vector = value.to_numpy() if hasattr(value, "to_numpy") else value
    return np.asarray(vector, dtype=np.float32)


def _stack(values: list[Any]) -> NDArray[np.float32]:
    return np.stack([vector_of(v) for v in values])


def fit_rotation(cur: Any, table: str, dim: int) -> Any:
    """A PCA rotation of (up to :data:`ROTATION_SAMPLE` of) the rows of ``table`` (quoted),
    read in the caller's transaction (the identity while it holds fewer than two)."""
    from ...projection import Projection, fit_projection

    rows = cur.execute(
        f"SELECT embedding FROM {table} ORDER BY random() LIMIT %s", [ROTATION_SAMPLE]
    ).fetchall()
    if len(rows) < 2:
        return Projection("pca", np.eye(dim, dtype=np.float32), {"rows": 0})
    return fit_projection(_stack([r[0] for r in rows]), method="pca", show_progress_bar=False)


def fill_column(
    cur: Any, sql: _Sql, values: Callable[[NDArray[np.float32]], list[Any]], where: str = ""
) -> None:
    """Write the coarse column of the rows whose value is NULL (``where=""``) or of every row
    (``where="all"``): ``values`` turns their full vectors into column values, in batches,
    sent by COPY to a temporary table and set by one UPDATE, in the caller's transaction."""
    kind = sql.coarse_type
    cur.execute(f"CREATE TEMP TABLE _matryoshka_fill (id text, c {kind}) ON COMMIT DROP")
    condition = "true" if where == "all" else "coarse IS NULL"
    last = -1
    while True:
        batch = cur.execute(
            f"SELECT seq, id, embedding FROM {sql.table} WHERE seq > %s AND {condition} "
            "ORDER BY seq LIMIT %s",
            [last, _FILL_BATCH],
        ).fetchall()
        if not batch:
            break
        last = int(batch[-1][0])
        column = values(_stack([r[2] for r in batch]))
        with cur.copy("COPY _matryoshka_fill (id, c) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", kind.split("(")[0]])
            for row, value in zip(batch, column, strict=True):
                copy.write_row([row[1], value])
    cur.execute(f"UPDATE {sql.table} t SET coarse = f.c FROM _matryoshka_fill f WHERE t.id = f.id")
    cur.execute("DROP TABLE _matryoshka_fill")


def fit_waiting(engine: PostgresEngine, cur: Any, due: int) -> None:
    """In a write holding the registry row ``"update"``-locked: once the table holds ``due``
    rows, fit the waiting ``"pca"`` rotation of ``engine`` on (a sample of) them, store it, and
    fill every row's coarse column with it (each row is rotated once, here or when added)."""
    sql, dim = engine._sql, engine.dim
    assert sql is not None and dim is not None
    if int(cur.execute(sql.count_upto(), [max(due, 1)]).fetchone()[0]) < max(due, 1):
        return
    rotation = engine.rotation = fit_rotation(cur, sql.table, dim)
    stored = read_entry(cur, engine.table)
    assert stored is not None
    manifest = {**stored[0], "coarse_rotation": rotation.to_manifest()}
    engine._revision = update_entry(cur, engine.table, manifest, rotation_bytes(rotation))
    precision = engine.config.precision
    fill_column(cur, sql, lambda m: column_values(engine.coarse_prefix(m), precision))
