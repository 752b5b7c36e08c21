"""The change feed (SPEC §6): `Engine.changes` and `saleflow changes`, on
SQLite and PostgreSQL.

- every kind of entry, with the keys of SPEC §6; --since, --flow, --kind,
  --limit; resuming from the last seq printed gives exactly the rest;
- writer processes and a follower that resumes from its last seq: it sees
  every entry exactly once, in seq order;
- PostgreSQL: a write transaction that has drawn its seq but not committed
  holds the reader back, and a reader bounded by max(seq) instead of the
  published high water mark would skip it (the negative control);
- `--follow` prints what is written while it runs and exits 0 on SIGTERM
  or Ctrl-C;
- bad input: one sentence, nothing printed (more in tests/test_bad_input.py).
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.errors import BadInput, NotFound
from saleflow.journal import ENTRY_KINDS, JournalEntry
from saleflow.language.parse import parse_flow
from saleflow.store import SqlStore, open_store
from saleflow.store.schema import journal

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
WORKERS = 4

FEED = """\
flow feed version {version}
field note text
field extra text
event ping
event pong
team t "T" {{
  stage cold initial sla 1 days
  stage warm when ping >= 2
  stage done manual
}}
stage gone final
"""

OTHER = """\
flow other
field note text
event ping
team o "O" {
  stage start initial
  stage later manual
}
"""

KEYS = {
    "seq",
    "lead",
    "kind",
    "at",
    "recorded_at",
    "actor",
    "reason",
    "flow",
    "version",
    "lead_seq",
    "cycle",
    "stage",
    "data",
}
MOVE_KEYS = KEYS | {"from", "to", "move"}


def feed_flow(version: int = 1) -> Any:
    return parse_flow(FEED.format(version=version), "feed.flow")


def populate(url: str) -> Engine:
    """A journal with every kind of entry, over two flows."""
    engine = Engine.open(feed_flow(), db=url, now=T0, actor="setup")
    engine.deploy(parse_flow(OTHER, "other.flow"))
    engine.add_lead("a", flow="feed")  # created
    engine.set("a", note="hello", at=T0 + timedelta(minutes=1))  # set
    engine.record("a", "ping", count=2, at=T0 + timedelta(minutes=2))  # event, moved (advance)
    engine.advance("a", to="done", at=T0 + timedelta(minutes=3))  # moved (advance, on request)
    engine.add_lead("b", flow="feed", note="b")
    engine.deploy(feed_flow(2))
    engine.migrate("b", at=T0 + timedelta(minutes=4))  # migrated
    engine.tick(at=T0 + timedelta(days=2))  # sla_breach (b is in cold, SLA 1 day)
    engine.add_lead("o", flow="other", note="o")
    engine.record("o", "ping")
    engine.advance("b", to="gone", force=True, reason="no longer a prospect", at=T0 + timedelta(days=3))
    return engine


def journal_rows(url: str) -> list[tuple[int, str, int, str]]:
    """The whole journal table, read behind the feed's back: (seq, lead, lead_seq, hash)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            J = journal.c
            stmt = select(J.seq, J.lead_id, J.lead_seq, J.hash).order_by(J.seq)
            return [tuple(row) for row in conn.execute(stmt)]  # type: ignore[misc]
    finally:
        engine.dispose()


def key(entry: JournalEntry) -> tuple[int, str, int, str]:
    return (entry.seq, entry.lead_id, entry.lead_seq, entry.hash)


def cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["--db", url, "changes", *args], catch_exceptions=False)


def lines(url: str, *args: str) -> list[dict[str, Any]]:
    result = cli(url, *args)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------------------
# what the feed says
# ---------------------------------------------------------------------------


def test_the_feed_lists_every_kind_of_entry_with_its_keys(db_url: str) -> None:
    engine = populate(db_url)
    entries = list(engine.changes())
    assert [key(e) for e in entries] == journal_rows(db_url)
    assert {e.entry for e in entries} == set(ENTRY_KINDS)
    printed = lines(db_url)
    assert [line["seq"] for line in printed] == [e.seq for e in entries]
    for line, entry in zip(printed, entries, strict=True):
        assert line["kind"] == entry.entry
        if entry.kind is not None:
            assert set(line) == MOVE_KEYS
            assert (line["from"], line["to"], line["move"]) == (entry.from_stage, entry.stage, entry.kind)
        else:
            assert set(line) == KEYS
        assert line["lead"] == entry.lead_id and line["lead_seq"] == entry.lead_seq
        assert line["at"] == entry.at.isoformat() and line["recorded_at"] == entry.recorded_at.isoformat()
        assert (line["flow"], line["version"], line["cycle"], line["stage"]) == (
            entry.flow,
            entry.version,
            entry.cycle,
            entry.stage,
        )
        assert (line["actor"], line["reason"], line["data"]) == (entry.actor, entry.reason, dict(entry.data))
    by_kind: dict[str, dict[str, Any]] = {}
    for line in printed:
        by_kind.setdefault(line["kind"], line)  # the first of each kind
    assert by_kind["created"]["move"] == "create" and by_kind["created"]["from"] is None
    assert by_kind["set"]["data"] == {"fields": {"note": [None, "hello"]}}
    assert by_kind["event"]["data"]["event"] == "ping" and by_kind["event"]["data"]["count"] == 2
    assert by_kind["migrated"]["move"] == "migrate"
    assert by_kind["migrated"]["data"] == {"from_version": 1, "to_version": 2}
    assert by_kind["sla_breach"]["lead"] == "b" and "due_at" in by_kind["sla_breach"]["data"]
    forced = [line for line in printed if line.get("move") == "force"]
    assert forced and forced[0]["reason"] == "no longer a prospect" and forced[0]["to"] == "gone"
    engine.close()


def test_since_flow_kind_and_limit(db_url: str) -> None:
    engine = populate(db_url)
    every = [line["seq"] for line in lines(db_url)]
    kinds = {line["seq"]: line["kind"] for line in lines(db_url)}
    flows = {line["seq"]: line["flow"] for line in lines(db_url)}
    middle = every[len(every) // 2]
    assert [x["seq"] for x in lines(db_url, "--since", str(middle))] == [s for s in every if s > middle]
    assert lines(db_url, "--since", str(every[-1])) == []
    assert lines(db_url, "--since", str(2**63 - 1)) == []
    assert [x["seq"] for x in lines(db_url, "--flow", "other")] == [s for s in every if flows[s] == "other"]
    assert {x["lead"] for x in lines(db_url, "--flow", "other")} == {"o"}
    picked = lines(db_url, "--kind", "set", "--kind", "moved")
    assert [x["seq"] for x in picked] == [s for s in every if kinds[s] in ("set", "moved")]
    assert [x["seq"] for x in lines(db_url, "--limit", "3")] == every[:3]
    assert [x["seq"] for x in lines(db_url, "--since", str(every[1]), "--limit", "2")] == every[2:4]
    combined = lines(db_url, "--flow", "feed", "--kind", "moved", "--since", str(every[2]), "--limit", "2")
    assert [x["seq"] for x in combined] == [
        s for s in every if s > every[2] and flows[s] == "feed" and kinds[s] == "moved"
    ][:2]
    engine.close()


def test_resuming_from_the_last_seq_printed_gives_exactly_the_rest(db_url: str) -> None:
    engine = populate(db_url)
    every = [line["seq"] for line in lines(db_url)]
    for size in (1, 2, 5):
        got: list[int] = []
        cursor = 0
        while True:
            page = [x["seq"] for x in lines(db_url, "--since", str(cursor), "--limit", str(size))]
            if not page:
                break
            assert len(page) <= size
            got += page
            cursor = page[-1]
        assert got == every
    # the same through the API, in pages smaller than the read
    from saleflow.store.feed import read_changes

    feed = read_changes(engine.store, 0, page=2)
    assert [e.seq for e in feed] == every and feed.position == every[-1]
    filtered = engine.changes(0, kinds=["created"])
    assert [e.entry for e in filtered] == ["created"] * 3
    assert filtered.position == every[-1]  # a filtered reader resumes past what it passed over
    engine.close()


def test_changes_in_python_match_a_filtered_read_of_the_table(sqlite_url: str) -> None:
    """Any since, flow, kinds and limit: the feed is the journal filtered."""
    engine = populate(sqlite_url)
    every = list(engine.changes())

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        since=st.integers(min_value=0, max_value=len(every) + 2),
        flow=st.none() | st.sampled_from(["feed", "other"]),
        kinds=st.none() | st.lists(st.sampled_from(ENTRY_KINDS), min_size=1, unique=True),
        limit=st.none() | st.integers(min_value=1, max_value=len(every) + 2),
        page=st.integers(min_value=1, max_value=4),
    )
    def check(since: int, flow: str | None, kinds: list[str] | None, limit: int | None, page: int) -> None:
        from saleflow.store.feed import read_changes

        expected = [
            e.seq
            for e in every
            if e.seq > since and (flow is None or e.flow == flow) and (kinds is None or e.entry in kinds)
        ][:limit]
        assert [e.seq for e in engine.changes(since, flow=flow, kinds=kinds, limit=limit)] == expected
        feed = read_changes(engine.store, since, flow=flow, kinds=kinds, limit=limit, page=page)
        assert [e.seq for e in feed] == expected

    check()
    engine.close()


def test_bad_arguments_are_refused_by_the_call(sqlite_url: str) -> None:
    engine = populate(sqlite_url)
    bad: list[dict[str, Any]] = [
        {"since": -1},
        {"since": 2**63},
        {"since": "3"},
        {"since": True},
        {"since": 1.5},
        {"limit": 0},
        {"limit": 2**63},
        {"limit": "10"},
        {"kinds": ["evnt"]},
        {"kinds": []},
        {"kinds": [3]},
        {"kinds": ["a\x00b"]},
        {"flow": "a\x00b"},
        {"flow": 5},
    ]
    for args in bad:
        with pytest.raises(BadInput) as caught:
            engine.changes(**args)
        assert "\n" not in caught.value.message
    with pytest.raises(NotFound, match='flow "nope" is not deployed'):
        engine.changes(flow="nope")
    with pytest.raises(BadInput, match="created, set, event, moved, migrated, sla_breach"):
        engine.changes(kinds="moves")
    assert [e.entry for e in engine.changes(kinds="migrated")] == ["migrated"]  # one kind as text
    engine.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(["--since", "--limit"]),
    value=st.one_of(
        st.text(min_size=1).filter(lambda t: not t.strip().lstrip("+-").isdigit() and not t.startswith("-")),
        st.integers(min_value=2**63).map(str),
        st.integers(max_value=-1).map(lambda n: f"{n}"),
        st.integers(min_value=40, max_value=5000).map(lambda digits: "9" * digits),
    ),
)
def test_bad_numbers_on_the_command_line_are_one_sentence(sqlite_url: str, option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["--db", sqlite_url, "changes", f"{option}={value}"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert option in result.stderr


# ---------------------------------------------------------------------------
# writer processes and a follower
# ---------------------------------------------------------------------------

_START: Any = None


def _init_worker(barrier: Any) -> None:
    global _START
    _START = barrier


def _write(url: str, worker: int, ops: int, lead_ids: list[str]) -> int:
    """`ops` writes (events, field changes) on leads picked at random."""
    rng = random.Random(worker)
    with Engine(open_store(url, lock_timeout=30), actor=f"writer-{worker}", now=T0) as engine:
        engine.lead(lead_ids[0])  # connected and compiled before the others start
        _START.wait(timeout=60)
        for n in range(ops):
            lead_id = rng.choice(lead_ids)
            at = T0 + timedelta(seconds=worker * 10_000 + n)
            if n % 3 == 2:
                engine.set(lead_id, note=f"w{worker}-{n}", at=at)
            else:
                engine.record(lead_id, rng.choice(["ping", "pong"]), at=at)
    return ops


def test_a_follower_sees_every_entry_once_in_seq_order_while_processes_write(db_url: str) -> None:
    engine = Engine.open(feed_flow(), db=db_url, now=T0)
    lead_ids = [f"lead-{n:02d}" for n in range(24)]
    for lead_id in lead_ids:
        engine.add_lead(lead_id)

    seen: list[JournalEntry] = []
    reads = 0
    writers_done = threading.Event()
    failure: list[BaseException] = []

    def follow() -> None:
        nonlocal reads
        try:
            with Engine(open_store(db_url, lock_timeout=30), now=T0) as follower:
                last = 0
                while True:
                    finished = writers_done.is_set()  # asked before the read: that read is the last
                    for entry in follower.changes(last):
                        seen.append(entry)
                        last = entry.seq
                    reads += 1
                    if finished:
                        return
        except BaseException as err:  # reported by the test below
            failure.append(err)

    follower = threading.Thread(target=follow)
    follower.start()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    ops = 40
    try:
        with context.Pool(WORKERS, initializer=_init_worker, initargs=(barrier,)) as pool:
            done = pool.starmap_async(_write, [(db_url, w, ops, lead_ids) for w in range(WORKERS)])
            assert sum(done.get(timeout=600)) == WORKERS * ops
    finally:
        writers_done.set()
        follower.join(timeout=600)
    assert not failure, failure
    assert reads >= 2
    table = journal_rows(db_url)
    assert [key(e) for e in seen] == table  # every entry, exactly once, in seq order
    assert len(table) >= len(lead_ids) + WORKERS * ops
    assert engine.verify() == []
    engine.close()


# ---------------------------------------------------------------------------
# PostgreSQL: an entry whose transaction has not committed yet
# ---------------------------------------------------------------------------


def _entry(lead_id: str, note: str) -> JournalEntry:
    """A journal entry written by hand (what the engine appends for a set)."""
    return JournalEntry(
        seq=0,
        lead_id=lead_id,
        lead_seq=0,
        entry="set",
        kind=None,
        from_stage=None,
        stage="cold",
        cycle=1,
        at=T0,
        recorded_at=T0,
        actor="holder",
        reason=None,
        flow="feed",
        version=1,
        data={"fields": {"note": [None, note]}},
    )


@contextmanager
def held_write(url: str, lead_id: str) -> Iterator[int]:
    """A write transaction on another connection that has drawn its seq and
    written its entry, held open until the block ends (then committed).
    Yields the held entry's seq."""
    store = open_store(url, lock_timeout=30)
    drawn, release = threading.Event(), threading.Event()
    held: list[int] = []
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            with store.transaction() as tx:
                entry = _entry(lead_id, "held")
                tx.append(entry)
                tx.write_journal()  # positions drawn, the publication lock held shared
                held.append(entry.seq)
                drawn.set()
                release.wait(timeout=120)
        except BaseException as err:
            failure.append(err)
            drawn.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert drawn.wait(timeout=60)
        assert not failure, failure
        yield held[0]
    finally:
        release.set()
        holder.join(timeout=60)
        store.close()
    assert not failure, failure


def _waiting_for_a_lock(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return bool(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


class Reader(threading.Thread):
    """`Engine.changes(since)` read whole in a thread of its own."""

    def __init__(self, url: str, since: int) -> None:
        super().__init__()
        self.url, self.since = url, since
        self.result: list[int] | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with Engine(open_store(self.url, lock_timeout=30)) as engine:
                self.result = [e.seq for e in engine.changes(self.since)]
        except BaseException as err:
            self.failure = err


def test_a_reader_does_not_pass_an_entry_still_being_committed(pg_url: str) -> None:
    engine = Engine.open(feed_flow(), db=pg_url, now=T0)
    engine.add_lead("a")
    engine.add_lead("b")
    base = engine.store.high_water()
    with held_write(pg_url, "a") as held:
        engine.record("b", "ping")  # commits entries above the held one, on another connection
        later = [e.seq for e in engine.store.journal("b") if e.seq > base]
        assert later and min(later) > held
        reader = Reader(pg_url, base)
        reader.start()
        deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
        while not _waiting_for_a_lock(pg_url):
            assert reader.is_alive() and time.monotonic() < deadline, (reader.result, reader.failure)
            time.sleep(0.01)
        # The reader waits for the held transaction: it has returned nothing,
        # in particular not the committed entries above the held one.
        assert reader.result is None and reader.is_alive()
    reader.join(timeout=60)
    assert reader.failure is None, reader.failure
    assert reader.result == [held, *later]  # both, nothing skipped
    assert [e.seq for e in engine.changes(base)] == [held, *later]
    engine.close()


def test_a_reader_bounded_by_max_seq_would_skip_it(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The negative control of the test above: with ``max(seq)`` in place of
    the published high water mark, the same reader returns the later entries
    at once, and resuming from the last one it returned never shows the
    held entry.  (The test above fails with this reader.)"""

    def naive(store: SqlStore) -> int:
        stmt = select(func.coalesce(func.max(journal.c.seq), 0))
        return int(store._query(lambda conn: conn.execute(stmt).scalar_one()))

    engine = Engine.open(feed_flow(), db=pg_url, now=T0)
    engine.add_lead("a")
    engine.add_lead("b")
    base = engine.store.high_water()
    monkeypatch.setattr(SqlStore, "high_water", naive)
    with held_write(pg_url, "a") as held:
        engine.record("b", "ping")
        later = [e.seq for e in engine.store.journal("b") if e.seq > base]
        first = [e.seq for e in engine.changes(base)]
        assert first == later  # returned at once, without the held entry below them
    resumed = [e.seq for e in engine.changes(first[-1])]
    assert held not in first + resumed  # skipped for good
    assert held in [e.seq for e in engine.changes(base)]  # though it is in the journal
    engine.close()


def test_a_commit_wakes_a_waiter_on_postgresql(pg_url: str) -> None:
    """`--follow` waits on LISTEN: a write's commit ends the wait (a wait of
    ten minutes, which only a notification can cut short)."""
    from saleflow.store.feed import JournalWaiter

    engine = Engine.open(feed_flow(), db=pg_url, now=T0)
    engine.add_lead("a")
    with JournalWaiter(engine.store) as waiter:
        woken = threading.Event()

        def wait() -> None:
            waiter.wait(timeout=600)
            woken.set()

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        engine.set("a", note="wake up")
        assert woken.wait(timeout=120)
        thread.join()
    engine.close()


# ---------------------------------------------------------------------------
# --follow
# ---------------------------------------------------------------------------


class Follow:
    """`saleflow changes --follow` as a process of its own, its lines read by a thread."""

    def __init__(self, url: str, *args: str) -> None:
        command = Path(sys.executable).parent / "saleflow"
        self.proc = subprocess.Popen(
            [str(command), "--db", url, "changes", "--follow", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def take(self, count: int) -> list[dict[str, Any]]:
        got = []
        for _ in range(count):
            line = self.lines.get(timeout=60)  # a guard against a hang
            assert line is not None, self.finish()
            got.append(json.loads(line))
        return got

    def finish(self, sig: int | None = None) -> tuple[int, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_follow_prints_new_entries_and_stops_cleanly(db_url: str, sig: int) -> None:
    engine = Engine.open(feed_flow(), db=db_url, now=T0)
    engine.add_lead("a")
    before = [e.seq for e in engine.changes()]
    follow = Follow(db_url)
    try:
        assert [x["seq"] for x in follow.take(len(before))] == before
        engine.set("a", note="one")
        engine.record("a", "ping", count=2)  # an event and a move
        engine.add_lead("b")
        after = [e.seq for e in engine.changes(before[-1])]
        printed = follow.take(len(after))
        assert [x["seq"] for x in printed] == after
        assert [x["kind"] for x in printed] == ["set", "event", "moved", "created"]
    finally:
        code, stderr = follow.finish(sig)
    assert code == 0, stderr
    assert stderr == ""
    engine.close()


def test_follow_with_a_limit_stops_after_that_many_lines(db_url: str) -> None:
    engine = Engine.open(feed_flow(), db=db_url, now=T0)
    engine.add_lead("a")
    follow = Follow(db_url, "--limit", "3", "--kind", "set")
    try:
        for n in range(4):
            engine.set("a", note=f"note {n}")
        printed = follow.take(3)
        assert [x["data"]["fields"]["note"][1] for x in printed] == ["note 0", "note 1", "note 2"]
        code, stderr = follow.finish()
    finally:
        if follow.proc.poll() is None:
            follow.proc.kill()
    assert code == 0 and stderr == ""
    assert follow.lines.get(timeout=60) is None  # nothing after the third
    engine.close()


def test_a_follower_that_loses_its_reader_exits_quietly(sqlite_url: str) -> None:
    """`saleflow changes --follow | head -1`: the closed pipe ends it, with
    no message and the status of a process killed by SIGPIPE (as `leads`)."""
    engine = Engine.open(feed_flow(), db=sqlite_url, now=T0)
    engine.add_lead("a")
    command = Path(sys.executable).parent / "saleflow"
    proc = subprocess.Popen(
        [str(command), "--db", sqlite_url, "changes", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == ""
    engine.close()
