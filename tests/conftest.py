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


def dump(url: str) -> dict[str, list[str]]:
    """Every row of every table of the database at `url`, in a stable order:
    what tests compare before and after to prove nothing was written."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: sorted(repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"')))
                for table in sorted(inspect(conn).get_table_names())
            }
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


# --------------------------------------------------------------------------
# Reports: a small hand-built history (tests/test_report.py, test_html_report.py)
# --------------------------------------------------------------------------

KPI_FLOW = """\
flow kpi version 1 "KPI <test> & co"

field region       one of [east, west]
field lost_reason  one of [timing, no_budget]

event web_visit  channel web
event call       channel phone

team marketing "Marketing" {
  stage new  initial
  stage mql  manual
  target conversion new -> sql >= 50%
}

team sales "Sales" {
  stage sql  manual  sla 2 days
  stage won  manual
  target time in sql <= 3 days
  target conversion mql -> won >= 60%
}

stage lost  final

skip new -> sql
recycle sql -> mql  when lost_reason == timing
"""


def kpi_day(days: float) -> Any:
    """2026-01-01 00:00 UTC plus `days`."""
    from datetime import UTC, datetime, timedelta

    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=days)


def build_kpi_history(url: str) -> None:
    """Four leads of the "kpi" flow, by day (day 0 is 2026-01-01):

    - a (east): created 0, web_visit 0.5, -> mql 1, -> sql 3, -> won 4
    - b (west): created 0, call 1, skip -> sql 2, recycled -> mql 5 (cycle 2), -> sql 6
    - c (no region): created 1, -> mql 2, exit -> lost 3
    - d (east): created 2, stays in new

    Nothing ticks: SLA breaches are the tests' business."""
    from saleflow.language.parse import parse_flow
    from saleflow.runtime.engine import Engine

    with Engine.open(db=url, now=kpi_day(0), actor="test") as engine:
        engine.deploy(parse_flow(KPI_FLOW, "kpi.flow"))
        engine.add_lead("a", flow="kpi", at=kpi_day(0), region="east")
        engine.record("a", "web_visit", at=kpi_day(0.5))
        engine.advance("a", to="mql", at=kpi_day(1))
        engine.advance("a", to="sql", at=kpi_day(3))
        engine.advance("a", to="won", at=kpi_day(4))
        engine.add_lead("b", flow="kpi", at=kpi_day(0), region="west")
        engine.record("b", "call", at=kpi_day(1))
        engine.advance("b", to="sql", at=kpi_day(2))
        engine.set("b", {"lost_reason": "timing"}, at=kpi_day(5))
        engine.advance("b", to="mql", at=kpi_day(5))
        engine.advance("b", to="sql", at=kpi_day(6))
        engine.add_lead("c", flow="kpi", at=kpi_day(1))
        engine.advance("c", to="mql", at=kpi_day(2))
        engine.advance("c", to="lost", at=kpi_day(3))
        engine.add_lead("d", flow="kpi", at=kpi_day(2), region="east")


@pytest.fixture
def kpi_db(db_url: str) -> str:
    """`db_url` holding the history of `build_kpi_history`."""
    build_kpi_history(db_url)
    return db_url


# --------------------------------------------------------------------------
# The HTTP service: a real uvicorn server on a loopback port (test_service*.py)
# --------------------------------------------------------------------------

SERVICE_NOW = "2026-02-01T00:00:00Z"  # the served engine's clock, and the CLI's in comparisons


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_token(db: str, name: str, scope: str) -> str:
    """`saleflow token add NAME --scope SCOPE`, as a user runs it; the printed token."""
    from click.testing import CliRunner

    from saleflow.cli.app import main

    result = CliRunner().invoke(main, ["--db", db, "token", "add", name, "--scope", scope])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


class Served:
    """A `saleflow serve` process: its address, database and one token per scope."""

    def __init__(self, db: str, base: str, tokens: dict[str, str], log: Path) -> None:
        self.db, self.base, self.tokens, self.log = db, base, tokens, log

    def client(self, scope: str | None = "write", **headers: str) -> Any:
        import httpx

        if scope is not None:
            headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


def start_service(
    db: str, tmp_path: Path, *, now: str | None = SERVICE_NOW, workers: int = 1
) -> Iterator[Served]:
    """Start `saleflow serve` on `db` in a subprocess and wait for /healthz;
    stop it afterwards, and fail if its log shows a traceback or a 500."""
    import subprocess
    import sys
    import time

    import httpx

    tokens = {scope: add_token(db, f"{scope}-token", scope) for scope in ("read", "write", "admin")}
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    command = [str(Path(sys.executable).parent / "saleflow"), "--db", db]
    if now is not None:
        command += ["--now", now]
    command += ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise AssertionError(f"saleflow serve exited: {log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"saleflow serve did not answer: {log.read_text()}")
        yield Served(db, base, tokens, log)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and '" 500 ' not in text, text[-4000:]
    for token in tokens.values():
        assert token not in text, "a token was logged"


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Served]:
    """`saleflow serve` over `db_url` (both backends), with the clock at SERVICE_NOW."""
    yield from start_service(db_url, tmp_path)


@pytest.fixture
def kpi_service(kpi_db: str, tmp_path: Path) -> Iterator[Served]:
    """`saleflow serve` over the KPI history of `build_kpi_history`."""
    yield from start_service(kpi_db, tmp_path)


# --------------------------------------------------------------------------
# The cache folder (saleflow/language/folder.py): one of the session's own
# --------------------------------------------------------------------------
#
# Commands keep the built parser and parsed flows there.  A test run writes
# into a private temporary folder, never the user's ~/.cache, and every
# command of the suite runs through the cache as a user's would (a test
# that wants another folder, or none, sets SALEFLOW_CACHE_DIR itself).


def _session_cache() -> None:
    import atexit
    import shutil
    import tempfile

    if "SALEFLOW_CACHE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="saleflow-test-cache-")
        os.environ["SALEFLOW_CACHE_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)


_session_cache()
