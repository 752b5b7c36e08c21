"""Shared fixtures: real databases, never mocks.

- ``sqlite_url``: a SQLite file in the test's ``tmp_path``.
- ``pg_url``: a fresh, uniquely named database on the PostgreSQL server at
  ``SALEFLOW_TEST_PG`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``),
  dropped afterwards.  When the server cannot be reached the test is skipped,
  except under CI (``CI`` set), where it fails: CI always runs PostgreSQL.
- ``db_url``: both of the above, as parameters ``sqlite`` and ``postgresql``.

Other sections may be appended below, each under its own marked heading.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ENV = "SALEFLOW_TEST_PG"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_server_url() -> str:
    return os.environ.get(PG_ENV) or PG_DEFAULT


def _pg_connect_args(url: str, dbname: str | None = None) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    args: dict[str, Any] = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": dbname or parsed.database or "postgres",
        "connect_timeout": 3,
        "autocommit": True,
    }
    if parsed.password:
        args["password"] = parsed.password
    return args


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL server (skip, or fail under CI)."""
    import psycopg

    url = _pg_server_url()
    try:
        with psycopg.connect(**_pg_connect_args(url)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL at {url} is not reachable ({str(exc).strip().splitlines()[0]}); set {PG_ENV}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh database of its own on the test PostgreSQL server, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"saleflow_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**_pg_connect_args(pg_server)) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**_pg_connect_args(pg_server)) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file (not yet created) in the test's own folder."""
    return f"sqlite:///{tmp_path / 'saleflow.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))
