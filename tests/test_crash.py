"""kill -9 in the middle of batch work (`advance --all`, `tick`), on SQLite
and PostgreSQL: afterwards nothing is half-written (every lead's stored
stage is the last entry of its audit history, every SLA breach belongs to a
committed move's chunk) and `saleflow audit verify` passes; a second run
finishes the work.

Issue 8.  The kill comes once the command has committed at least one chunk
and before it is done, which the test checks; there is no timing in the
assertions, only bounds on how long the test may wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from saleflow import Engine
from saleflow.language.parse import parse_flow

CRASH = """\
flow crash
team t "T" {
  stage a initial sla 1 days
  stage b when days_in_stage >= 1
  stage c manual
}
"""
CREATED = "2024-05-01T00:00:00Z"
LATER = "2024-05-03T00:00:00Z"  # every lead has been in "a" for two days
COMMAND = Path(sys.executable).parent / "saleflow"


def _leads_for(url: str) -> int:
    # Enough that the command runs well over a second on either backend.
    return 2500 if url.startswith("sqlite") else 1500


def _build(url: str) -> int:
    count = _leads_for(url)
    with Engine.open(parse_flow(CRASH, "crash.flow"), db=url, now=CREATED, actor="setup") as engine:
        engine.add_leads((f"lead-{n:05d}", {}) for n in range(count))
    return count


def _moves(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM journal WHERE entry = 'moved' AND stage = 'b'")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _kill_midway(url: str, *command: str) -> None:
    """Start `saleflow --db URL --now LATER COMMAND`, wait until it has
    committed some moves, and kill it with SIGKILL before it is done."""
    proc = subprocess.Popen(
        [str(COMMAND), "--db", url, "--now", LATER, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while _moves(url) == 0:
            assert proc.poll() is None, f"{command} ended before it moved a lead: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, f"{command} moved no lead in 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        assert proc.stderr is not None
        proc.stderr.close()


def _nothing_half_written(url: str, count: int) -> int:
    """Every lead's stage is its history's last entry; SLA breaches are
    recorded for exactly the leads whose tick committed (a lead ticked
    leaves "a" with its breach in the same transaction).  Returns how many
    leads had moved."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stages = dict(conn.execute(text("SELECT id, stage FROM leads")).all())
            last = dict(
                conn.execute(
                    text(
                        "SELECT lead_id, stage FROM journal a WHERE seq = "
                        "(SELECT max(seq) FROM journal b WHERE b.lead_id = a.lead_id)"
                    )
                ).all()
            )
            breached = {row[0] for row in conn.execute(text("SELECT lead_id FROM sla_breaches"))}
    finally:
        engine.dispose()
    assert len(stages) == count
    assert stages == last
    moved = {lead_id for lead_id, stage in stages.items() if stage == "b"}
    assert set(stages.values()) <= {"a", "b"}
    assert breached <= moved
    return len(moved)


def _audit_verify(url: str) -> None:
    done = subprocess.run(
        [str(COMMAND), "--db", url, "audit", "verify"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    assert "every chain and replay agrees" in done.stdout


@pytest.mark.skipif(not COMMAND.exists(), reason="the saleflow command is not installed next to this Python")
@pytest.mark.parametrize("command", [("advance", "--all"), ("tick",)], ids=["advance --all", "tick"])
def test_kill_9_in_the_middle_of_batch_work_leaves_nothing_half_written(
    db_url: str, command: tuple[str, ...]
) -> None:
    count = _build(db_url)
    _kill_midway(db_url, *command)
    moved = _nothing_half_written(db_url, count)
    assert 0 < moved < count  # killed in the middle, not before or after
    _audit_verify(db_url)

    # A second run does the rest, and each lead moved exactly once.
    done = subprocess.run(
        [str(COMMAND), "--db", db_url, "--now", LATER, *command], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{count - moved} move")
    assert _nothing_half_written(db_url, count) == count
    assert _moves(db_url) == count
    _audit_verify(db_url)
