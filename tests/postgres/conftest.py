from __future__ import annotations

import pytest

from pg_server import fresh_table, server_dsn


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The DSN of a real PostgreSQL + pgvector server, started once per test session."""
    return server_dsn()


@pytest.fixture
def pg_table(pg_dsn: str) -> str:
    """A table name of its own for one test."""
    return fresh_table()
