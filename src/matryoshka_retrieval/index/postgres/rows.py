"""Rows of a PostgreSQL index: what an add sends and what a search reads back."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..hits import Hit, Hits

__all__ = ["array_of", "culprit", "hits_of", "jsonb", "reserve"]

MAX_ID_BYTES = 2704
"""A B-tree entry's size limit (8 kB pages), before compression: the longest id, about."""


def reserve(cur: Any, table: str, n: int) -> list[int]:
    """``n`` new ``seq`` values of ``table``, increasing (the input order of an add)."""
    statement = (
        "SELECT nextval(s) FROM (SELECT pg_get_serial_sequence(%s, 'seq')::regclass AS s) q, "
        "generate_series(1, %s) ORDER BY 1"
    )
    return [int(r[0]) for r in cur.execute(statement, [table, n]).fetchall()]


def culprit(ids: list[str], texts: list[str | None], meta_json: list[str | None]) -> str:
    """The first value of an add that PostgreSQL cannot store, in words ("" if none is known):
    a NUL character (text columns cannot hold one) or an id past a B-tree entry's size."""
    for id_, text, meta in zip(ids, texts, meta_json, strict=True):
        if "\x00" in id_:
            return f"the id {id_!r:.60} (it holds a NUL character)"
        if text is not None and "\x00" in text:
            return f"the text of id {id_!r:.60} (it holds a NUL character)"
        if meta is not None and "\\u0000" in meta:
            return f"the metadata of id {id_!r:.60} (a string in it holds a NUL character)"
        size = len(id_.encode("utf-8", "surrogatepass"))
        if size > MAX_ID_BYTES:
            return (
                f"the id {id_[:24]!r}... of {size} bytes (an id takes at most about "
                f"{MAX_ID_BYTES} bytes in the primary key)"
            )
    return ""


def array_of(value: Any) -> NDArray[np.float32] | None:
    if value is None:
        return None
    vector = value.to_numpy() if hasattr(value, "to_numpy") else value  # pgvector's Vector
    return np.asarray(vector, dtype=np.float32)


def hits_of(rows: list[tuple[Any, ...]]) -> Hits:
    reranked = int(rows[0][5]) if rows else 0
    return Hits(
        [
            Hit(id_, float(score), float(cs), text, dict(meta))
            for id_, text, meta, score, cs, _ in rows
        ],
        reranked=reranked,
    )


def jsonb(text: str) -> Any:
    """Metadata already serialised to JSON, sent as it is."""
    from psycopg.types.json import Jsonb

    return Jsonb(text, dumps=str)
