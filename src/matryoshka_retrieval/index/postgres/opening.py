"""Opening a PostgreSQL index from ``MatryoshkaIndex.load(dsn, table=...)``."""

from __future__ import annotations

from typing import Any

from ..manifest import FORMAT_VERSION
from .connection import check_timeout, connect
from .registry import read_manifest
from .sql import META_TABLE, check_table

__all__ = ["OPEN_OPTIONS", "open_postgres_index", "refuse_local_settings", "stored_index"]

OPEN_OPTIONS = ("ef_search", "timeout")


def refuse_local_settings(full_vectors: Any, verify: Any) -> None:
    """Refuse ``load`` settings of a saved folder, which a server index would ignore."""
    if full_vectors not in (None, "auto"):
        raise ValueError(
            f"full_vectors={full_vectors!r:.40} is a setting of a saved folder; backend="
            "'postgres' keeps the full vectors in its table and reads them there"
        )
    if verify not in (None, False):
        raise ValueError(
            f"verify={verify!r:.40} checks a saved folder's vectors file; backend='postgres' "
            "has none (the server checks its own pages)"
        )


def open_postgres_index(
    cls: Any,
    dsn: str,
    *,
    table: str,
    encoder: Any,
    device: str,
    rerank: Any,
    options: dict[str, Any],
    full_vectors: str | None = None,
    verify: bool | None = None,
) -> Any:
    """``cls.load(dsn, table=...)`` (the facade opens it with :meth:`PostgresEngine.open`).

    Args:
        cls, dsn, table, encoder, device, rerank: As ``MatryoshkaIndex.load``.
        options: ``ef_search`` and ``timeout`` (seconds per statement).
        full_vectors, verify: ``load``'s settings of a saved folder: ``None`` (not given),
            ``"auto"`` and ``False`` are accepted, anything else refused.
    """
    folder = {
        "full_vectors": "auto" if full_vectors is None else full_vectors,
        "verify": False if verify is None else verify,
    }
    return cls.load(
        dsn, table=table, encoder=encoder, device=device, rerank=rerank, **folder, **options
    )


def stored_index(
    location: Any, options: dict[str, Any], full_vectors: str, verify: bool
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(table, manifest, options)`` of the index ``load(location, table=..., **options)``
    opens: the options checked (``timeout`` in seconds), the manifest read from the registry.

    Raises:
        FileNotFoundError: If the database holds no index named so.
        ValueError: For a setting of a saved folder (``full_vectors``, ``verify``), which
            the server engine does not honour, naming it, or another format version.
        TypeError: For an option this engine does not take.
    """
    options = dict(options)
    table = options.pop("table", None)
    if not isinstance(location, str) or not isinstance(table, str):
        raise ValueError(
            f"loading from PostgreSQL takes the DSN as a str and table= its table name, "
            f"got {type(location).__name__} and table={table!r}"
        )
    unknown = sorted(set(options) - set(OPEN_OPTIONS))
    if unknown:
        raise TypeError(
            f"load(dsn, table=...) got unexpected options {unknown}; it takes {OPEN_OPTIONS}"
        )
    refuse_local_settings(full_vectors, verify)
    check_table(table)
    options["timeout"] = timeout = check_timeout(options.get("timeout"))
    conn = connect(location, timeout=timeout)
    try:
        stored = read_manifest(conn, table)
    finally:
        conn.close()
    if stored is None:
        raise FileNotFoundError(f"no index named {table!r} in this database ({META_TABLE})")
    if stored.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"the index {table!r} has format version {stored.get('format_version')!r}; this "
            f"library reads version {FORMAT_VERSION}"
        )
    return table, stored, options
