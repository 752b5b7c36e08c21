"""kill -9 in the middle of `saleflow import`, on both backends (issue 8).

The import applies the whole file in one transaction, so a process killed
while it writes leaves nothing of the file behind: every table holds what it
held before, and `saleflow audit verify` passes.  The test waits until the
import has written (SQLite: its write-ahead log grows; PostgreSQL: the
import's transaction holds a lock on the leads table), then kills it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import dump
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from saleflow import Engine
from saleflow.language.parse import parse_flow

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
ROWS = 25_000  # seconds of writing on the test VM, on both backends
WAIT = 120.0  # the longest the test waits for anything (seconds)

FLOW = """\
flow crash version 1 "kill -9"

field email      text
field employees  int

team marketing "Marketing" {
  stage new    initial
  stage known  when email is set
  stage mql    when employees >= 100
}
"""

COMMAND = Path(sys.executable).parent / "saleflow"


def _sqlite_writing(url: str) -> Callable[[], bool]:
    wal = Path(make_url(url).database or "").with_name("saleflow.db-wal")
    start = wal.stat().st_size if wal.exists() else 0
    return lambda: wal.exists() and wal.stat().st_size > start + (1 << 20)


def _pg_writing(url: str) -> Callable[[], bool]:
    engine = create_engine(url)
    mine = "SELECT pg_backend_pid()"

    def writing() -> bool:
        with engine.connect() as conn:
            me = conn.execute(text(mine)).scalar()
            held = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'leads' AND l.mode = 'RowExclusiveLock' AND l.pid <> :me"
                ),
                {"me": me},
            ).scalar()
        return bool(held)

    writing.dispose = engine.dispose  # type: ignore[attr-defined]
    return writing


def test_kill_9_during_an_import_leaves_nothing_half_written(db_url: str, tmp_path: Path) -> None:
    if not COMMAND.exists():
        pytest.skip("the saleflow command is not installed next to this Python")
    with Engine.open(parse_flow(FLOW, "crash.flow"), db=db_url, now=T0, actor="tester") as engine:
        engine.add_lead("before", flow="crash", email="b@x.example", employees=500)
        engine.add_lead("lead-7", flow="crash")  # a lead the file updates
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id,email,employees\n")
        for n in range(1, ROWS + 1):
            handle.write(f"lead-{n},l{n}@x.example,{n % 300}\n")
    before = dump(db_url)
    writing = _sqlite_writing(db_url) if db_url.startswith("sqlite") else _pg_writing(db_url)
    args = [str(COMMAND), "--db", db_url, "--now", T0.isoformat(), "import", str(path)]
    proc = subprocess.Popen(
        [*args, "--flow", "crash", "--id-column", "id"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + WAIT
        while not writing():
            assert proc.poll() is None, "the import ended before it was seen writing: make ROWS larger"
            assert time.monotonic() < deadline, "the import was never seen writing"
            time.sleep(0.05)
        time.sleep(0.1)  # inside the writing
        assert proc.poll() is None, "the import ended before it could be killed: make ROWS larger"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        proc.communicate()
        getattr(writing, "dispose", lambda: None)()

    # PostgreSQL rolls back once it sees the client gone; wait until it has.
    deadline = time.monotonic() + WAIT
    while not db_url.startswith("sqlite") and _pg_writing(db_url)():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert dump(db_url) == before
    verify = subprocess.run([str(COMMAND), "--db", db_url, "audit", "verify"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # the database is free again: a small import of the same leads lands
    small = tmp_path / "small.csv"
    small.write_text("id,email,employees\nlead-1,a@x.example,5\nlead-7,b@x.example,500\n", encoding="utf-8")
    again = subprocess.run(
        [*args[:-1], str(small), "--flow", "crash", "--id-column", "id"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert again.returncode == 0, again.stderr
    with Engine.open(db=db_url, now=T0) as engine:
        assert sorted(lead.id for lead in engine.leads(flow="crash")) == ["before", "lead-1", "lead-7"]
        assert engine.lead("lead-7").stage == "mql"
        assert engine.verify() == []
