"""One handle's connection to PostgreSQL: connecting, reconnecting, timeouts, and the one
mapping from the driver's errors to this library's.

Every statement of an index runs through :meth:`Session.read` or :meth:`Session.write`:

- a read that finds its connection lost (the server restarted, an administrator ended the
  backend) connects again and runs once more;
- a write whose connection was lost before it sent anything connects again and runs once
  more; one lost while it was writing raises :class:`WriteInDoubtError`, since only the
  server knows whether its commit arrived;
- a write that lost a deadlock or a serialization conflict (the server rolled it back) runs
  once more, then raises :class:`WriteConflictError`;
- ``timeout=`` seconds bound every statement (``statement_timeout``); one past it raises
  :class:`ServerTimeoutError`;
- a value the server (or the driver) cannot store raises :class:`RefusedValueError`, a
  ``ValueError``; a table dropped under the handle :class:`StaleIndexError`;
- on a read replica (a hot standby: ``pg_is_in_recovery()``, asked once per connection) reads
  run as anywhere, and a write raises :class:`ReadOnlyReplicaError` before anything is sent.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..._optional import require

__all__ = [
    "MIN_PGVECTOR",
    "ConnectionLostError",
    "PostgresIndexError",
    "ReadOnlyReplicaError",
    "RefusedValueError",
    "ServerError",
    "ServerTimeoutError",
    "Session",
    "StaleIndexError",
    "WriteConflictError",
    "WriteInDoubtError",
    "check_timeout",
    "connect",
    "in_recovery",
    "no_check",
    "pgvector_version",
    "stale_error",
]

MIN_PGVECTOR = (0, 8, 0)
"""pgvector 0.8 brings iterative index scans (filtered searches that fill their shortlist)."""

T = TypeVar("T")


class PostgresIndexError(Exception):
    """What every error of a PostgreSQL index below is, besides the built-in it subclasses."""


class StaleIndexError(PostgresIndexError, RuntimeError):
    """The index this handle opened was dropped (or dropped and made again) since."""


class ServerError(PostgresIndexError, RuntimeError):
    """Any other failure of the server on a statement of an index (its first line)."""


class ConnectionLostError(PostgresIndexError, ConnectionError):
    """The connection to the server was lost and could not be made again."""


class WriteInDoubtError(ConnectionLostError):
    """The connection was lost while a write was under way: it may or may not have committed."""


class ServerTimeoutError(PostgresIndexError, TimeoutError):
    """A statement ran past the handle's ``timeout=`` and the server cancelled it."""


class WriteConflictError(PostgresIndexError, RuntimeError):
    """A write lost a deadlock or a serialization conflict twice; nothing of it was stored."""


class RefusedValueError(PostgresIndexError, ValueError):
    """The server or the driver refused a value (a NUL byte, an id past an index row's size)."""


class ReadOnlyReplicaError(PostgresIndexError, PermissionError):
    """A write through a handle on a read replica (a hot standby); nothing was sent."""


def replica_error(name: str) -> ReadOnlyReplicaError:
    """The error of a write to index ``name`` through a connection to a read replica."""
    return ReadOnlyReplicaError(
        "this connection is a read replica (hot standby, pg_is_in_recovery()); index "
        f"{name!r} is searched here but written on the primary: nothing was written"
    )


def _psycopg() -> Any:
    return require("psycopg", "postgres")


def _conflicts() -> tuple[type[Exception], ...]:
    """The errors of a transaction the server rolled back for a conflict (SQLSTATE 40xxx)."""
    errors = _psycopg().errors
    return (errors.TransactionRollback, errors.DeadlockDetected, errors.SerializationFailure)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (the driver's can run to several), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_timeout(timeout: Any) -> float | None:
    """``timeout`` (seconds, a positive finite number, or ``None`` for no limit), else a
    ValueError / TypeError naming it."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout={timeout!r:.40} must be a number of seconds or None, "
            f"not {type(timeout).__name__}"
        )
    if not math.isfinite(timeout) or timeout <= 0 or timeout * 1000 >= 2**31:
        raise ValueError(
            f"timeout={timeout!r} must be a positive number of seconds below 2147483 "
            "(PostgreSQL's statement_timeout limit), or None for no limit"
        )
    return float(timeout)


def connect(dsn: str, *, timeout: float | None = None) -> Any:
    """A connection (autocommit) with pgvector's types registered and ``timeout`` as its
    ``statement_timeout``, or a one-line ValueError."""
    return open_connection(dsn, timeout=timeout)[0]


def in_recovery(conn: Any) -> bool:
    """Whether the server of ``conn`` is a standby (``pg_is_in_recovery()``): read-only."""
    return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])


def open_connection(dsn: str, *, timeout: float | None = None) -> tuple[Any, bool]:
    """:func:`connect`'s connection and whether its server is a read replica; on a replica
    nothing is written (the ``vector`` extension comes from the primary, never made here)."""
    psycopg = _psycopg()
    require("pgvector", "postgres")
    from pgvector.psycopg import register_vector

    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ValueError(f"cannot connect to PostgreSQL: {first_line(exc)}") from None
    try:
        replica = in_recovery(conn)
        _check_pgvector(pgvector_version(conn, create=not replica), replica)
    except BaseException:
        conn.close()
        raise
    register_vector(conn)
    if timeout is not None:
        milliseconds = str(max(1, round(timeout * 1000)))
        conn.execute("SELECT set_config('statement_timeout', %s, false)", [milliseconds])
    return conn, replica


def _check_pgvector(version: tuple[int, ...] | None, replica: bool) -> None:
    """A ValueError unless ``version`` is a pgvector this library can use."""
    if version is not None and version >= MIN_PGVECTOR:
        return
    found = ".".join(map(str, version)) if version else "no vector extension"
    fix = "run CREATE EXTENSION vector on the primary" if replica else "run CREATE EXTENSION vector"
    raise ValueError(
        f"backend='postgres' needs pgvector >= {'.'.join(map(str, MIN_PGVECTOR))} in the "
        f"database, found {found}{' on this read replica' if replica else ''}: install "
        f"pgvector and {fix}"
    )


def pgvector_version(conn: Any, *, create: bool = True) -> tuple[int, ...] | None:
    """The installed ``vector`` extension's version; created first when it is available and
    ``create`` (never on a read replica, which cannot write)."""
    psycopg = _psycopg()
    query = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
    row = conn.execute(query).fetchone()
    if row is None and create:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error:
            return None
        row = conn.execute(query).fetchone()
    if row is None:
        return None
    return tuple(int(p) for p in re.findall(r"\d+", row[0])[:3])


class Session:
    """The connection of one index handle, used by one thread at a time.

    Args:
        dsn: A libpq connection string or URI.
        name: The index's name, for messages.
        timeout: Seconds any one statement may run (``None``: no limit).

    Example:
        >>> session = Session(DSN, name="docs")  # doctest: +SKIP
        >>> session.read(lambda cur: cur.execute("SELECT 1").fetchone())  # doctest: +SKIP
        (1,)
    """

    def __init__(self, dsn: str, *, name: str, timeout: float | None = None) -> None:
        self.dsn = dsn
        self.name = name
        self.timeout = check_timeout(timeout)
        self.settings: dict[str, str] = {}
        """Session settings sent on this connection (gone with it on a reconnect)."""
        self._lock = threading.Lock()
        self._conn: Any
        self._conn, self._replica = open_connection(dsn, timeout=self.timeout)

    def close(self) -> None:
        """Close the connection (again: nothing)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def read_only(self) -> bool:
        """Whether this connection's server is a read replica (a hot standby), as
        ``pg_is_in_recovery()`` said when it connected (asked again on a reconnect)."""
        return self._replica

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._conn is None

    def read(self, body: Callable[[Any], T]) -> T:
        """``body(cursor)``, run once more on a new connection if the connection was lost."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    with self._cursor() as cur:
                        return body(cur)
                except _psycopg().Error as exc:
                    if attempt == 0 and self._lost(exc):
                        self._reconnect(exc)
                        continue
                    raise self.library_error(exc, wrote=False) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def write(self, check: Callable[[Any], None], body: Callable[[Any], T]) -> T:
        """``check(cursor)`` then ``body(cursor)`` in one transaction.

        Run once more if the connection was lost before ``body`` began, or if the server
        rolled the transaction back for a deadlock or a serialization conflict.

        Raises:
            ReadOnlyReplicaError: On a read replica, before anything is sent.
        """
        with self._lock:
            for attempt in (0, 1):
                if self._replica:
                    raise replica_error(self.name)
                began = False
                try:
                    with self._cursor() as cur, self._conn.transaction():
                        check(cur)
                        began = True
                        return body(cur)
                except _psycopg().Error as exc:
                    lost = self._lost(exc)
                    conflict = isinstance(exc, _conflicts())
                    if attempt == 0 and ((lost and not began) or conflict):
                        if lost:
                            self._reconnect(exc)
                        continue
                    raise self.library_error(exc, wrote=began) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _cursor(self) -> Any:
        if self._conn is None:
            raise ConnectionLostError(
                f"the handle of index {self.name!r} was closed: open the index again"
            )
        return self._conn.cursor()

    def _lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (not a statement's own failure)."""
        psycopg = _psycopg()
        if not isinstance(exc, psycopg.OperationalError):
            return False
        shutdown = (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown)
        return bool(self._conn.closed or self._conn.broken or isinstance(exc, shutdown))

    def _reconnect(self, cause: BaseException) -> None:
        self._conn.close()
        self.settings = {}
        try:
            self._conn, self._replica = open_connection(self.dsn, timeout=self.timeout)
        except ValueError as exc:
            self._conn = _Closed()
            raise ConnectionLostError(
                f"lost the connection to PostgreSQL ({first_line(cause)}) and could not "
                f"connect again: {exc}"
            ) from None

    def library_error(self, exc: BaseException, *, wrote: bool) -> Exception:
        """This library's error for a driver error ``exc`` (``wrote``: a write had begun)."""
        psycopg = _psycopg()
        errors = psycopg.errors
        where = f"index {self.name!r}"
        if isinstance(exc, errors.QueryCanceled):
            return ServerTimeoutError(
                f"a statement on {where} ran past timeout={self.timeout}s and the server "
                f"cancelled it (nothing of a cancelled write is stored): {first_line(exc)}"
            )
        if isinstance(exc, _conflicts()):
            return WriteConflictError(
                f"a write to {where} lost a conflict with another client twice "
                f"({first_line(exc)}); nothing of it was stored: try it again"
            )
        if isinstance(exc, errors.ReadOnlySqlTransaction):  # e.g. a primary turned standby
            return ReadOnlyReplicaError(
                f"the server refused a write to {where} as read-only ({first_line(exc)}): "
                "a read replica is searched, and written on the primary; nothing of this "
                "write was stored"
            )
        if isinstance(exc, errors.UndefinedTable):
            return stale_error(self.name)
        if isinstance(exc, (psycopg.DataError, errors.ProgramLimitExceeded)):
            return RefusedValueError(
                f"PostgreSQL refused a value for {where}: {first_line(exc)}; "
                + ("nothing of this write was stored" if wrote else "nothing was changed")
            )
        if self._lost(exc):
            if wrote:
                return WriteInDoubtError(
                    f"the connection to PostgreSQL was lost during a write to {where} "
                    f"({first_line(exc)}): the write may or may not have committed; check "
                    "with get() before writing it again"
                )
            return ConnectionLostError(
                f"the connection to PostgreSQL was lost twice in one call on {where}: "
                f"{first_line(exc)}"
            )
        return ServerError(f"PostgreSQL failed on {where}: {first_line(exc)}")


def no_check(cur: Any) -> None:
    """The check of a write that has no index identity to check (making or dropping one)."""


def stale_error(name: str) -> StaleIndexError:
    """The error of a handle whose index is gone or was made again."""
    return StaleIndexError(
        f"index {name!r} was dropped (or dropped and re-created) since this handle opened "
        "it; open it again"
    )


class _Closed:
    """A connection that could not be made again: every use is a lost connection."""

    closed = True
    broken = True

    def close(self) -> None:
        """Nothing to close."""

    def cursor(self) -> Any:
        """Fails as a closed psycopg connection does."""
        raise _psycopg().OperationalError("the connection is closed")
