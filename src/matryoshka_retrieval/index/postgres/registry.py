"""The registry table ``matryoshka_indexes``: one row per index of this library in a database.

A row holds the index's name, its manifest (configuration, full dim, model), so that a client
needs only the DSN and the name, and its identity: a random id made with the table. A handle
keeps the identity it opened and checks it at the start of every read and in the transaction
of every write (locking the row, so a drop waits for the write), so a handle never reads or
writes an index made again under the same name after it opened the first one.
"""

from __future__ import annotations

import uuid
from typing import Any

from .connection import Session, no_check, stale_error
from .sql import META_TABLE, check_table

__all__ = [
    "META_TABLE",
    "check_identity",
    "create_entry",
    "drop_index",
    "identity_column",
    "read_entry",
    "read_rotation",
    "update_entry",
]

_IDENTITY = "SELECT {identity}, manifest ->> 'revision' FROM " + META_TABLE + " m WHERE name = %s"


def identity_column(executor: Any) -> str:
    """How a statement reads an index's identity from the registry: its ``identity`` column,
    or ``NULL::text`` in a registry made before identities were kept (read by name, never
    through ``to_jsonb`` of the row, which would copy the stored rotation on every search)."""
    query = (
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND "
        "attname = 'identity' AND NOT attisdropped"
    )
    return "m.identity" if executor.execute(query, [META_TABLE]).fetchone()[0] else "NULL::text"


def _registry_exists(executor: Any) -> bool:
    return bool(executor.execute("SELECT to_regclass(%s) IS NOT NULL", [META_TABLE]).fetchone()[0])


def read_entry(executor: Any, table: str) -> tuple[dict[str, Any], str | None] | None:
    """``(manifest, identity)`` of the index named ``table``, or ``None`` when there is none.

    ``executor`` is a psycopg connection or cursor. The identity is ``None`` for an index made
    before identities were kept.
    """
    if not _registry_exists(executor):
        return None
    query = f"SELECT manifest, {identity_column(executor)} FROM {META_TABLE} m WHERE name = %s"
    row = executor.execute(query, [table]).fetchone()
    return (dict(row[0]), row[1]) if row else None


def read_manifest(conn: Any, table: str) -> dict[str, Any] | None:
    """The stored manifest of the index named ``table``, or ``None`` when there is none."""
    entry = read_entry(conn, table)
    return entry[0] if entry else None


def check_identity(
    cur: Any, table: str, identity: str | None, *, lock: str = "", column: str = "m.identity"
) -> str | None:
    """The revision of the index named ``table`` (``None`` before its first change): raise
    :class:`~.connection.StaleIndexError` unless it is still the one of ``identity``.

    ``lock``: ``""`` (none), ``"share"`` (hold its row until the transaction ends, so that a
    concurrent drop or change waits for it) or ``"update"`` (also wait for, and block, every
    other write: for a change of the index's settings or rotation). ``column``: see
    :func:`identity_column`.
    """
    clause = {"": "", "share": " FOR KEY SHARE", "update": " FOR UPDATE"}[lock]
    row = cur.execute(_IDENTITY.format(identity=column) + clause, [table]).fetchone()
    if row is None or row[0] != identity:
        raise stale_error(table)
    return row[1]  # type: ignore[no-any-return]


def read_rotation(cur: Any, table: str) -> bytes:
    """The saved coarse rotation of the index named ``table`` (a projection's ``.npz``)."""
    row = cur.execute(f"SELECT rotation FROM {META_TABLE} WHERE name = %s", [table]).fetchone()
    if row is None or row[0] is None:
        raise stale_error(table)
    return bytes(row[0])


def update_entry(cur: Any, table: str, manifest: dict[str, Any], rotation: bytes | None) -> str:
    """Store a changed manifest (and the rotation's bytes) of the index named ``table``, in
    the caller's transaction, which holds its row ``"update"``-locked; returns the new
    revision, which every handle on the index sees at its next statement."""
    from psycopg.types.json import Jsonb

    revision = str(int(manifest.get("revision") or 0) + 1)
    manifest = {**manifest, "revision": revision}
    cur.execute(
        f"UPDATE {META_TABLE} SET manifest = %s, rotation = %s WHERE name = %s",
        [Jsonb(manifest), rotation, table],
    )
    return revision


def create_entry(
    cur: Any,
    table: str,
    statements: list[str],
    manifest: dict[str, Any],
    rotation: bytes | None = None,
) -> tuple[dict[str, Any], str | None] | str:
    """Run ``statements`` (that make the table) and register it (with the coarse rotation's
    bytes, if any), in the caller's transaction.

    Returns the new identity, or ``(manifest, identity)`` of the index another client
    registered under this name first (then nothing is made).
    """
    from psycopg.types.json import Jsonb

    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [META_TABLE])
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, manifest jsonb NOT "
        "NULL, created timestamptz NOT NULL DEFAULT now(), identity text, rotation bytea)"
    )
    has = (
        "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s "
        "AND NOT attisdropped"
    )
    for column, kind in (("identity", "text"), ("rotation", "bytea")):
        if not cur.execute(has, [META_TABLE, column]).fetchone()[0]:  # an older registry
            cur.execute(f"ALTER TABLE {META_TABLE} ADD COLUMN IF NOT EXISTS {column} {kind}")
    existing = read_entry(cur, table)
    if existing is not None:
        return existing
    for statement in statements:
        cur.execute(statement)
    identity = uuid.uuid4().hex
    cur.execute(
        f"INSERT INTO {META_TABLE} (name, manifest, identity, rotation) VALUES (%s, %s, %s, %s)",
        [table, Jsonb(manifest), identity, rotation],
    )
    return identity


def drop_index(dsn: str, table: str) -> bool:
    """Drop an index's table and its registry row; returns whether there was one.

    It waits for writes under way on the index (they lock its registry row); handles open on
    it raise :class:`~.connection.StaleIndexError` afterwards.

    Raises:
        ValueError: For a name that is not an index's: not a plain lower-case name, the
            registry's own, or a system catalog's (``pg_*``); nothing is dropped.
    """
    check_table(table)
    session = Session(dsn, name=table)

    def drop(cur: Any) -> bool:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [META_TABLE])
        gone = 0
        if _registry_exists(cur):
            gone = cur.execute(f"DELETE FROM {META_TABLE} WHERE name = %s", [table]).rowcount
        cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        return bool(gone)

    try:
        return session.write(no_check, drop)
    finally:
        session.close()
