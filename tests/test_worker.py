"""`saleflow worker` (issue 12 item 2, SPEC §8), on real databases.

- Several worker processes on one PostgreSQL database split the due leads:
  every due lead moves exactly once, the lines the workers log add up to
  the leads due with no lead twice, and more than one worker did chunks.
- A crash loop: workers killed with -9 in the middle of their chunks, over
  and over, then one clean worker: every due lead moved exactly once,
  nothing is half-written, `audit verify` passes.
- SIGTERM ends a worker after the chunk in hand (exit 0); on SQLite a second
  worker says so and waits, also for one killed with -9; `--once` exits
  when drained; a worker lets waiting leads into room that frees, best score
  now first; bad options are one line, exit 2, and change nothing.

Every wait is bounded and every loop stops by itself; no assertion is on
timing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.errors import BadInput, NotFound
from saleflow.language.parse import parse_flow

COMMAND = Path(sys.executable).parent / "saleflow"

# A lead in "a" is due one day after it entered: "b"'s gate reads days in
# stage, and "a"'s SLA runs out then too.  In "b" nothing reads time.
DUE = """\
flow due
team t "T" {
  stage a initial sla 1 days
  stage b when days_in_stage >= 1
  stage c manual
}
stage lost final
"""
T0 = datetime(2024, 5, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=2)  # the workers' clock
LATE = T0 + timedelta(days=1, hours=12)  # leads created then are not due at NOW
BOUND = 180  # seconds any one wait in this file may take, at most

pytestmark = pytest.mark.skipif(not COMMAND.exists(), reason="the saleflow command is not installed here")


# -- helpers ---------------------------------------------------------------------


def _build(url: str, due: int, not_due: int = 0) -> tuple[set[str], set[str]]:
    """`due` leads due at NOW and `not_due` that are not; their ids."""
    due_ids = {f"due-{n:06d}" for n in range(due)}
    later_ids = {f"later-{n:06d}" for n in range(not_due)}
    with Engine.open(parse_flow(DUE, "due.flow"), db=url, now=T0, actor="setup") as engine:
        engine.add_leads(((lead_id, {}) for lead_id in sorted(due_ids)), chunk=2000)
    if later_ids:
        with Engine.open(db=url, now=LATE, actor="setup") as engine:
            engine.add_leads(((lead_id, {}) for lead_id in sorted(later_ids)), flow="due", chunk=2000)
    return due_ids, later_ids


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _moved(url: str) -> Counter[str]:
    """How many times each lead moved into "b"."""
    rows = _query(url, "SELECT lead_id FROM journal WHERE entry = 'moved' AND stage = 'b'")
    return Counter(str(row[0]) for row in rows)


def _moved_count(url: str) -> int:
    return int(_query(url, "SELECT count(*) FROM journal WHERE entry = 'moved'")[0][0])  # type: ignore[call-overload]


def _nothing_half_written(url: str) -> None:
    """Every lead's stage is its journal's last word; SLA breaches belong to
    leads whose move committed with them."""
    stages = dict(_query(url, "SELECT id, stage FROM leads"))
    last = dict(
        _query(
            url,
            "SELECT lead_id, stage FROM journal j WHERE seq = "
            "(SELECT max(seq) FROM journal k WHERE k.lead_id = j.lead_id)",
        )
    )
    assert stages == last
    breached = {row[0] for row in _query(url, "SELECT lead_id FROM sla_breaches")}
    assert breached <= {lead_id for lead_id, stage in stages.items() if stage == "b"}


def _audit_verify(url: str) -> None:
    done = subprocess.run(
        [str(COMMAND), "--db", url, "audit", "verify"], capture_output=True, text=True, timeout=BOUND
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert "every chain and replay agrees" in done.stdout


def _worker(url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`saleflow --db URL --now NOW worker ARGS`, its stderr into `log`."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [str(COMMAND), "--db", url, "--now", NOW.isoformat(), "worker", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@contextmanager
def _reaped(procs: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Whatever happens in the block, no worker outlives it."""
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)


def _wait_for(condition: object, what: str, procs: list[subprocess.Popen[bytes]] = ()) -> None:  # type: ignore[assignment]
    deadline = time.monotonic() + BOUND
    while not condition():  # type: ignore[operator]
        for proc in procs:
            assert proc.poll() in (None, 0), f"a worker ended with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} in {BOUND} s"
        time.sleep(0.02)


CHUNK_LINE = re.compile(r"worker: ([\d,]+) leads?, ([\d,]+) moves?, ([\d,]+) SLA breach(?:es)? in [\d.]+ s$")


def _chunks(log: Path) -> list[int]:
    """The number of leads of each chunk a worker logged."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = CHUNK_LINE.search(line)
        if match:
            found.append(int(match.group(1).replace(",", "")))
    return found


# -- PostgreSQL: many workers, one database ---------------------------------------


def test_workers_on_postgresql_split_the_due_leads(pg_url: str, tmp_path: Path) -> None:
    with Engine.open(parse_flow(DUE, "due.flow"), db=pg_url, now=T0, actor="setup"):
        pass
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    with _reaped([_worker(pg_url, log, "--batch", "10", "--interval", "0.05") for log in logs]) as procs:
        # Every worker polls an empty database before any work appears, so
        # that none has a head start.
        _wait_for(lambda: all("started" in log.read_text() for log in logs), "start", procs)
        due, _ = _build(pg_url, due=1500, not_due=100)
        _wait_for(lambda: sum(_moved(pg_url).values()) >= len(due), "drain", procs)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=BOUND) == 0, [log.read_text()[-2000:] for log in logs]

    moved = _moved(pg_url)
    assert set(moved) == due  # none of the leads not yet due
    assert set(moved.values()) == {1}  # and no lead twice
    assert _moved_count(pg_url) == len(due)
    chunks = [_chunks(log) for log in logs]
    assert sum(map(sum, chunks)) == len(due)  # the workers' chunks are disjoint and cover the due leads
    assert sum(1 for mine in chunks if mine) >= 2, chunks  # the work was split
    for log in logs:
        assert "Traceback" not in log.read_text()
    _nothing_half_written(pg_url)
    _audit_verify(pg_url)


@pytest.mark.parametrize("workers", [pytest.param(3, id="3 workers")])
def test_workers_killed_with_9_mid_chunk_lose_nothing(db_url: str, tmp_path: Path, workers: int) -> None:
    """Rounds of: start workers, wait until a chunk has committed, kill them
    all with -9 while they are busy.  Then a clean worker drains the rest."""
    due, _ = _build(db_url, due=1500, not_due=100)
    rounds = killed_busy = 0
    before = 0
    while rounds < 6:
        rounds += 1
        logs = [tmp_path / f"round-{rounds}-{n}.log" for n in range(workers)]
        with _reaped([_worker(db_url, log, "--batch", "10", "--interval", "0.05") for log in logs]) as procs:
            _wait_for(lambda: _moved_count(db_url) > before, "commit", procs)  # noqa: B023
            time.sleep(0.05 * rounds)  # somewhere in a later chunk
            for proc in procs:
                proc.kill()
            for proc in procs:
                assert proc.wait(timeout=60) == -signal.SIGKILL
        now = _moved_count(db_url)
        killed_busy += now < len(due)  # work was left: the kill interrupted it
        _nothing_half_written(db_url)
        before = now
        if now >= len(due):
            break
    assert killed_busy >= 2, "the workers finished before they could be killed in the middle"

    done = subprocess.run(
        [str(COMMAND), "--db", db_url, "--now", NOW.isoformat(), "worker", "--once"],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    moved = _moved(db_url)
    assert set(moved) == due
    assert set(moved.values()) == {1}
    assert _moved_count(db_url) == len(due)
    _nothing_half_written(db_url)
    _audit_verify(db_url)


# -- one worker: signals, SQLite's rule, --once --------------------------------------


def test_sigterm_finishes_the_chunk_in_hand_and_exits_0(db_url: str, tmp_path: Path) -> None:
    due, _ = _build(db_url, due=3000)
    log = tmp_path / "worker.log"
    with _reaped([_worker(db_url, log, "--batch", "100")]) as (proc,):
        _wait_for(lambda: _moved_count(db_url) > 0, "commit", [proc])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=BOUND) == 0, log.read_text()[-2000:]
    text_ = log.read_text()
    assert "SIGTERM received" in text_
    moved = _moved_count(db_url)
    chunks = _chunks(log)
    assert 0 < moved < len(due)  # stopped early ...
    assert sum(chunks) == moved and set(chunks) == {100}  # ... after whole chunks only
    _nothing_half_written(db_url)
    _audit_verify(db_url)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_the_middle_of_a_chunk_lets_that_chunk_commit(db_url: str, signum: int) -> None:
    """The signal comes from inside the first chunk's transaction (the
    engine's `alongside` hook runs there, before the claim): that chunk
    commits whole, no other starts, and the command exits 0."""
    _build(db_url, due=300)
    signalled: list[bool] = []

    def interrupt(_tx: object) -> None:
        if not signalled:
            signalled.append(True)
            os.kill(os.getpid(), signum)  # handled at once, in this thread

    previous = signal.getsignal(signum)
    with Engine.open(db=db_url) as engine, engine.alongside(interrupt):
        result = CliRunner().invoke(
            main, ["--db", db_url, "--now", NOW.isoformat(), "worker", "--batch", "40", "--interval", "60"]
        )
    assert result.exit_code == 0, (result.output, result.exception)
    assert signalled
    assert _moved_count(db_url) == 40  # the chunk in hand, and only it
    assert result.stdout.startswith("40 moves made")
    assert signal.getsignal(signum) == previous  # the command put the handler back
    _nothing_half_written(db_url)


def test_a_second_worker_on_sqlite_says_so_and_waits(sqlite_url: str, tmp_path: Path) -> None:
    due, _ = _build(sqlite_url, due=50)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with _reaped([_worker(sqlite_url, first_log, "--interval", "0.05")]) as (first,):
        _wait_for(lambda: sum(_moved(sqlite_url).values()) == len(due), "drain", [first])
        with _reaped([_worker(sqlite_url, second_log, "--once")]) as (second,):
            _wait_for(lambda: "waits" in second_log.read_text(), "word from the second worker", [second])
            lines = [line for line in second_log.read_text().splitlines() if line.strip()]
            assert len(lines) == 1 and f"(pid {first.pid})" in lines[0], lines
            time.sleep(0.5)
            assert second.poll() is None  # still waiting
            # The first is killed outright: the lock goes with it.
            first.kill()
            assert first.wait(timeout=60) == -signal.SIGKILL
            assert second.wait(timeout=BOUND) == 0, second_log.read_text()
    assert set(_moved(sqlite_url).values()) == {1}


def test_sigterm_while_waiting_for_the_sqlite_lock_exits_0(sqlite_url: str, tmp_path: Path) -> None:
    _build(sqlite_url, due=1)
    with _reaped(
        [
            _worker(sqlite_url, tmp_path / "a.log", "--interval", "0.05"),
            _worker(sqlite_url, tmp_path / "b.log"),
        ]
    ) as (first, second):
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        _wait_for(
            lambda: any("waits" in log.read_text() for log in logs), "a waiting worker", [first, second]
        )
        waiting = second if "waits" in logs[1].read_text() else first
        other = first if waiting is second else second
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(timeout=60) == 0
        assert other.poll() is None
        other.send_signal(signal.SIGTERM)
        assert other.wait(timeout=60) == 0


def test_once_drains_what_is_due_and_exits(db_url: str) -> None:
    due, later = _build(db_url, due=120, not_due=30)
    runner = CliRunner()
    args = ["--db", db_url, "--now", NOW.isoformat(), "worker", "--once", "--batch", "50"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "120 moves made, 120 SLA breaches recorded (120 leads in 3 chunks)"
    assert set(_moved(db_url)) == due
    again = runner.invoke(main, args)
    assert again.exit_code == 0
    assert again.stdout.startswith("0 moves made")
    # Later the others are due too.
    later_run = runner.invoke(
        main, ["--db", db_url, "--now", (NOW + timedelta(days=1)).isoformat(), *args[4:]]
    )
    assert later_run.exit_code == 0
    assert set(_moved(db_url)) == due | later
    _audit_verify(db_url)


def test_work_due_through_the_python_api(db_url: str) -> None:
    due, _ = _build(db_url, due=30, not_due=5)
    with Engine.open(db=db_url, now=NOW, actor="worker") as engine:
        first = engine.work_due(limit=20)
        assert first.leads == 20 and first.moves == 20 and first.sla_breaches == 20
        rest = engine.work_due(limit=20)
        assert rest.leads == 10
        assert set(first.lead_ids) | set(rest.lead_ids) == due
        assert engine.work_due(limit=20).leads == 0
        with pytest.raises(BadInput):
            engine.work_due(limit=0)
        with pytest.raises(NotFound):
            engine.work_due(flow="nope")


def test_flow_takes_only_that_flows_leads(db_url: str) -> None:
    due, _ = _build(db_url, due=20)
    with Engine.open(
        parse_flow(DUE.replace("flow due", "flow other"), "other.flow"), db=db_url, now=T0
    ) as engine:
        engine.add_leads(((f"other-{n}", {}) for n in range(15)), flow="other")
    args = ["--db", db_url, "--now", NOW.isoformat(), "worker", "--once", "--batch", "7"]
    result = CliRunner().invoke(main, [*args, "--flow", "other"])
    assert result.exit_code == 0, result.output
    assert set(_moved(db_url)) == {f"other-{n}" for n in range(15)}
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert set(_moved(db_url)) == due | {f"other-{n}" for n in range(15)}
    assert set(_moved(db_url).values()) == {1}


def test_a_lead_in_a_stage_its_version_lacks_is_left_not_due(db_url: str) -> None:
    """A lead in a stage its version lacks (as after tampering) cannot be
    re-evaluated: the worker drains the other leads around it and leaves
    it not due, so it never heads a claim again; a force gives it a stage
    and a due time back."""
    due, _ = _build(db_url, due=20)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE leads SET stage = 'gone' WHERE id = 'due-000007'"))
    args = ["--db", db_url, "--now", NOW.isoformat(), "worker", "--once", "--batch", "5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert set(_moved(db_url)) == due - {"due-000007"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT due_at FROM leads WHERE id = 'due-000007'")).scalar_one() is None
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "0 leads in 0 chunks" in again.stdout, again.output
    with Engine.open(db=db_url, now=NOW) as api:
        api.advance("due-000007", to="a", force=True, reason="repair")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT due_at FROM leads WHERE id = 'due-000007'")).scalar_one() is not None
    engine.dispose()


# A stage that holds one lead; the holder moves on after a day in it.  The
# score counts pings of the last day, so it falls as time passes.
CAPACITY = """\
flow cap
event ping
score {
  +10 each ping in last 1 days
}
team t "T" {
  stage start initial
  stage slot when ping >= 1 capacity 1
  stage done when days_in_stage >= 1
}
"""


def test_a_worker_lets_waiting_leads_into_room_best_score_now_first(db_url: str) -> None:
    with Engine.open(parse_flow(CAPACITY, "cap.flow"), db=db_url, now=T0, actor="setup") as engine:
        engine.add_lead("holder")
        engine.record("holder", "ping")
        engine.add_lead("early")  # three pings at T0: 30 then, 0 after a day
        engine.record("early", "ping", count=3)
    with Engine.open(db=db_url, now=T0 + timedelta(days=1, hours=12), actor="setup") as engine:
        engine.add_lead("fresh")  # one ping a day later: 10 at NOW
        engine.record("fresh", "ping")
        assert [engine.lead(i).stage for i in ("holder", "early", "fresh")] == ["slot", "start", "start"]
    result = CliRunner().invoke(main, ["--db", db_url, "--now", NOW.isoformat(), "worker", "--once"])
    assert result.exit_code == 0, result.output
    with Engine.open(db=db_url, now=NOW) as engine:
        assert engine.lead("holder").stage == "done"
        assert engine.lead("fresh").stage == "slot"  # its score now beats the stored 30 of "early"
        assert engine.lead("early").stage == "start"
        entered = [e for e in engine.history("fresh") if e.stage == "slot"]
        assert [e.reason for e in entered] == ["room freed"]
    _audit_verify(db_url)


# -- bad options ---------------------------------------------------------------


def _refused(db: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--db", db, "worker", "--once", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr


def _one_line_error(stderr: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr


BAD_BATCH = st.one_of(
    st.integers().filter(lambda n: not 1 <= n <= 10_000).map(str),
    st.integers(min_value=10**20, max_value=10**400).map(str),
    st.text(max_size=30).filter(lambda t: not re.fullmatch(r"\s*[+-]?[0-9]+\s*", t)),
    st.sampled_from(["1e3", "\u0663", "\uff15", "10.5", "nan", "inf", "0x10", "1_000", "\x00", "20\x00"]),
)
BAD_INTERVAL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0.01 <= x <= 86_400).map(repr),
    st.sampled_from(
        ["nan", "NaN", "-inf", "inf", "1e999", "-1", "0", "0.001", "86401", "9" * 400, "\u0661", "\x00"]
    ),
    st.text(max_size=20).filter(lambda t: not re.fullmatch(r"\s*[+-]?[0-9.]+\s*", t)),
)
BAD_FLOW = st.one_of(
    st.sampled_from(["", " ", "\x00", "a\x00b", "x" * 256, "a\u202eb", "a\nb", "\u2028", "\x7f"]),
    st.text(min_size=1, max_size=20).map(lambda t: t + "\x00"),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=BAD_BATCH)
def test_bad_batch_is_one_line_exit_2_and_touches_nothing(sqlite_url: str, batch: str) -> None:
    code, stderr = _refused(sqlite_url, "--batch", batch)
    assert code == 2, stderr
    _one_line_error(stderr)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(interval=BAD_INTERVAL)
def test_bad_interval_is_one_line_exit_2_and_touches_nothing(sqlite_url: str, interval: str) -> None:
    code, stderr = _refused(sqlite_url, "--interval", interval)
    assert code == 2, stderr
    _one_line_error(stderr)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flow=BAD_FLOW)
def test_bad_flow_name_is_one_line_exit_2_and_touches_nothing(sqlite_url: str, flow: str) -> None:
    code, stderr = _refused(sqlite_url, "--flow", flow)
    assert code == 2, stderr
    _one_line_error(stderr)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_a_flow_that_is_not_deployed_is_exit_3_and_changes_nothing(pg_url: str) -> None:
    _build(pg_url, due=3)
    before = dump(pg_url)

    @settings(max_examples=25, deadline=None)
    @given(flow=st.text(st.characters(categories=["L", "N", "So", "Pd"]), min_size=1, max_size=40))
    def check(flow: str) -> None:
        code, stderr = _refused(pg_url, "--flow", flow if flow != "due" else "due2")
        assert code == 3, stderr
        _one_line_error(stderr)

    check()
    assert dump(pg_url) == before


def test_bad_options_on_postgresql_change_nothing(pg_url: str) -> None:
    _build(pg_url, due=3)
    before = dump(pg_url)
    for args in (["--batch", "0"], ["--batch", "9" * 500], ["--interval", "nan"], ["--flow", "a\x00b"]):
        code, stderr = _refused(pg_url, *args)
        assert code == 2, (args, stderr)
        _one_line_error(stderr)
    assert dump(pg_url) == before


def test_an_unreachable_database_is_exit_5(tmp_path: Path) -> None:
    code, stderr = _refused("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    assert code == 5, stderr
    _one_line_error(stderr)


def test_the_worker_lock_file_is_next_to_the_database(sqlite_url: str) -> None:
    _build(sqlite_url, due=1)
    result = CliRunner().invoke(main, ["--db", sqlite_url, "--now", NOW.isoformat(), "worker", "--once"])
    assert result.exit_code == 0
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    assert (path.parent / (path.name + ".worker-lock")).exists()
