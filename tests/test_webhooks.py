"""Webhooks (SPEC §8, docs/webhooks.md) on SQLite and PostgreSQL, against a
real HTTP receiver on 127.0.0.1 that can be told to fail, hang and recover.

- each matching entry is POSTed as `saleflow changes` prints it, with
  `Saleflow-Delivery` and a signature that checks; filters by flow, kind
  and stage;
- at least once and in seq order per lead; a failing lead holds up only
  itself; a dead or hanging endpoint holds up no other webhook;
- back-off on the engine's clock, give-up after 24 hours, `webhook
  failures`, `webhook retry` (and `--since`, a replay);
- concurrent deliverer processes send nothing twice; a deliverer killed
  with -9 mid-request loses nothing (its lease runs out, another re-sends);
- secrets never reach the database; a missing secret is a failure with a
  clear error, not a crash; no httpx is one sentence;
- bad input to every command: one line, the right exit code, nothing changed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.errors import BadInput
from saleflow.language.parse import parse_flow
from saleflow.limits import MAX_URL_LENGTH
from saleflow.store.feed import read_changes
from saleflow.store.hooks import backlogs, claim, enqueue, failures, get_hook, record
from saleflow.store.schema import webhook_queue
from saleflow.webhooks.delivery import DeliveryReport, deliver
from saleflow.webhooks.schedule import BASE, CAP, GIVE_UP, JITTER, backoff, next_attempt
from saleflow.webhooks.settings import check_url
from saleflow.webhooks.signing import signature, verify

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0.isoformat()
TIMEOUT = 0.3  # seconds a test deliverer waits for an answer
SECRET = "s3cr3t-Value-that-must-never-be-stored-\u00e9"

FLOW = """\
flow hooks version 1
field note text
event ping
team t "T" {
  stage cold initial
  stage warm when ping >= 2
  stage done manual
}
"""
OTHER = FLOW.replace("flow hooks", "flow other")


# --------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on a free loopback port, in threads.  `rule(path,
    body) -> "ok" | "fail" | "hang" | "hold"` decides each answer: 200, 500,
    an answer only after `hang` seconds (past the deliverer's timeout), or
    200 once `release` is set.
    `accepted` holds the requests answered 200 in time, in arrival order;
    `attempts` every request."""

    def __init__(self) -> None:
        self.rule: Callable[[str, dict[str, Any]], str] = lambda path, body: "ok"
        self.hang = 2.0
        self.accepted: list[tuple[str, dict[str, str], bytes]] = []
        self.attempts: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.attempts.append((self.path, headers, body))
                    verdict = receiver.rule(self.path, json.loads(body))
                if verdict == "hang":
                    receiver.release.wait(receiver.hang)
                    verdict = "late"
                elif verdict == "hold":  # until released, then accepted
                    receiver.release.wait(receiver.hang)
                    verdict = "ok"
                if verdict == "ok":
                    with receiver.lock:
                        receiver.accepted.append((self.path, headers, body))
                try:
                    self.send_response(500 if verdict == "fail" else 200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the deliverer gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # many deliverers connect at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seqs(self, path: str, *, every: bool = False) -> list[int]:
        """The seqs received on `path` (accepted ones, or every attempt), in order."""
        with self.lock:
            got = self.attempts if every else self.accepted
            return [json.loads(body)["seq"] for p, _, body in got if p == path]

    def by_lead(self, path: str) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        with self.lock:
            for p, _, body in self.accepted:
                if p == path:
                    item = json.loads(body)
                    out.setdefault(item["lead"], []).append(item["seq"])
        return out

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def dead_url() -> str:
    """A loopback URL where nothing listens (a closed port)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/dead"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def cli(db: str, *args: str, now: str = NOW) -> Any:
    return CliRunner().invoke(main, ["--db", db, "--now", now, *args])


def ok(db: str, *args: str, now: str = NOW) -> Any:
    result = cli(db, *args, now=now)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def setup(db: str) -> None:
    with Engine.open(db=db, now=T0, actor="test") as engine:
        engine.deploy(parse_flow(FLOW, "hooks.flow"))
        engine.deploy(parse_flow(OTHER, "other.flow"))


def activity(db: str, leads: list[str], *, flow: str = "hooks", at: datetime = T0) -> None:
    """Per lead, five entries: created, set, event, event and moved (the
    second ping moves it to warm)."""
    with Engine.open(db=db, now=at, actor="test") as engine:
        for lead in leads:
            engine.add_lead(lead, flow=flow)
            engine.set(lead, {"note": f"about {lead}"})
            engine.record(lead, "ping")
            engine.record(lead, "ping")


def feed(db: str, *args: str) -> list[str]:
    """`saleflow changes` lines, exactly as printed."""
    return ok(db, "changes", *args).stdout.splitlines()


def rounds(db: str, *, now: datetime = T0, most: int = 20, **kwargs: Any) -> DeliveryReport:
    """Delivery rounds until one makes no progress; their totals."""
    total = DeliveryReport()
    with Engine.open(db=db, now=now, actor="test") as engine:
        for _ in range(most):
            report = deliver(engine, timeout=TIMEOUT, **kwargs)
            for name, counts in report.hooks.items():
                mine = total.hooks.setdefault(name, type(counts)())
                for key in ("queued", "delivered", "failed", "given_up", "lost"):
                    setattr(mine, key, getattr(mine, key) + getattr(counts, key))
                mine.stopped = mine.stopped or counts.stopped
            if not report.busy:
                return total
    raise AssertionError("delivery did not settle")


def queue_rows(db: str) -> list[Any]:
    engine = create_engine(db)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(webhook_queue).order_by(webhook_queue.c.seq)))
    finally:
        engine.dispose()


def in_order(per_lead: dict[str, list[int]]) -> None:
    for lead, seqs in per_lead.items():
        assert seqs == sorted(seqs), f"lead {lead} got {seqs}"


# --------------------------------------------------------------------------
# Settings through the CLI
# --------------------------------------------------------------------------


def test_add_list_remove(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    activity(db_url, ["before"])  # a webhook delivers what happens after it is added
    url = receiver.url("/in")
    added = json.loads(
        ok(
            db_url,
            "webhook",
            "add",
            "crm",
            url,
            "--flow",
            "hooks",
            "--kind",
            "moved",
            "--kind",
            "created",
            "--stage",
            "warm",
            "--secret-env",
            "HOOK_SECRET",
            "--json",
        ).stdout
    )
    assert added["created"] is True and added["cursor"] == 5
    assert added["kinds"] == ["created", "moved"] and added["stages"] == ["warm"]
    assert added["secret_env"] == "HOOK_SECRET" and added["url"] == url
    again = json.loads(
        ok(
            db_url,
            "webhook",
            "add",
            "crm",
            url,
            "--flow",
            "hooks",
            "--kind",
            "created",
            "--kind",
            "moved",
            "--stage",
            "warm",
            "--secret-env",
            "HOOK_SECRET",
            "--json",
        ).stdout
    )
    assert again["created"] is False  # the same webhook again: nothing changes
    clash = cli(db_url, "webhook", "add", "crm", receiver.url("/other"))
    assert clash.exit_code == 2 and "exists with other settings" in clash.stderr
    ok(db_url, "webhook", "add", "all", receiver.url("/all"))
    listed = json.loads(ok(db_url, "webhook", "list", "--json").stdout)
    assert [h["name"] for h in listed] == ["all", "crm"]
    assert listed[0] | {"created_at": None} == {
        "name": "all",
        "url": receiver.url("/all"),
        "flow": None,
        "kinds": [],
        "stages": [],
        "secret_env": None,
        "created_at": None,
        "cursor": 5,
        "queued": 0,
        "retrying": 0,
        "failed": 0,
    }
    text = ok(db_url, "webhook", "list").stdout
    assert "crm" in text and "2 webhooks" in text
    assert json.loads(ok(db_url, "webhook", "remove", "all", "--json").stdout) == {
        "name": "all",
        "removed": True,
        "dropped": 0,
    }
    for args in (("remove", "all"), ("failures", "all"), ("retry", "all")):
        missing = cli(db_url, "webhook", *args)
        assert missing.exit_code == 3 and 'no webhook named "all"' in missing.stderr, args
    assert [h["name"] for h in json.loads(ok(db_url, "webhook", "list", "--json").stdout)] == ["crm"]


def test_add_refuses_unknown_flows_stages_kinds(db_url: str) -> None:
    setup(db_url)
    before = dump(db_url)
    cases = [
        (("--flow", "nope"), 3, 'flow "nope" is not deployed'),
        (("--flow", "hooks", "--stage", "wram"), 3, 'did you mean "warm"'),
        (("--kind", "moves"), 2, 'did you mean "moved"'),
        (("--secret-env", "my secret"), 2, "NAME of an environment variable"),
    ]
    for args, code, fragment in cases:
        result = cli(db_url, "webhook", "add", "x", "https://example.com/in", *args)
        assert result.exit_code == code, (args, result.stderr)
        assert fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr
    creds = cli(db_url, "webhook", "add", "x", "https://ann:hunter2@example.com/in")
    assert creds.exit_code == 2 and "credentials" in creds.stderr
    assert "hunter2" not in creds.stdout + creds.stderr
    assert dump(db_url) == before


# --------------------------------------------------------------------------
# What is sent
# --------------------------------------------------------------------------


def test_each_entry_is_posted_as_changes_prints_it_signed(
    db_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    setup(db_url)
    ok(db_url, "webhook", "add", "signed", receiver.url("/signed"), "--secret-env", "HOOK_SECRET")
    ok(db_url, "webhook", "add", "plain", receiver.url("/plain"))
    activity(db_url, ["a", "b", "c"])
    result = ok(db_url, "webhook", "deliver", "--once", "--timeout", "2", "--json")
    rounds_printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(r["delivered"] for r in rounds_printed) == 2 * 15
    printed = feed(db_url)
    assert len(printed) == 15
    with receiver.lock:
        signed = [(h, b) for p, h, b in receiver.accepted if p == "/signed"]
        plain = [(h, b) for p, h, b in receiver.accepted if p == "/plain"]
    assert sorted(b.decode() for _, b in signed) == sorted(printed)  # byte for byte
    assert sorted(b.decode() for _, b in plain) == sorted(printed)
    for headers, body in signed:
        assert headers["saleflow-delivery"] == str(json.loads(body)["seq"])
        assert headers["content-type"] == "application/json"
        assert verify(SECRET, body, headers["saleflow-signature"])
        assert not verify(SECRET + "x", body, headers["saleflow-signature"])
    assert all("saleflow-signature" not in h for h, _ in plain)
    in_order(receiver.by_lead("/signed"))
    # The secret is nowhere in the database; only the variable's name is.
    everything = repr(dump(db_url))
    assert SECRET not in everything and "s3cr3t" not in everything and "HOOK_SECRET" in everything


def test_filters_by_flow_kind_and_stage(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "flow", receiver.url("/flow"), "--flow", "other")
    ok(db_url, "webhook", "add", "kind", receiver.url("/kind"), "--kind", "moved", "--kind", "set")
    ok(db_url, "webhook", "add", "stage", receiver.url("/stage"), "--flow", "hooks", "--stage", "warm")
    activity(db_url, ["a", "b"])
    activity(db_url, ["z"], flow="other")
    rounds(db_url)
    entries = [json.loads(line) for line in feed(db_url)]
    expect = {
        "/flow": [e["seq"] for e in entries if e["flow"] == "other"],
        "/kind": [e["seq"] for e in entries if e["kind"] in ("moved", "set")],
        "/stage": [e["seq"] for e in entries if e["flow"] == "hooks" and e["stage"] == "warm"],
    }
    assert all(expect.values())
    for path, seqs in expect.items():
        assert sorted(receiver.seqs(path)) == seqs, path


def test_a_missing_secret_is_a_failure_not_a_crash(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    os.environ.pop("SALEFLOW_TEST_UNSET_SECRET", None)
    added = cli(
        db_url, "webhook", "add", "s", receiver.url("/s"), "--secret-env", "SALEFLOW_TEST_UNSET_SECRET"
    )
    assert added.exit_code == 0 and "warning: SALEFLOW_TEST_UNSET_SECRET is not set" in added.stderr
    activity(db_url, ["a"])
    result = ok(db_url, "webhook", "deliver", "--once", "--timeout", "1")
    assert "done: queued 5, delivered 0, failed 1" in result.stdout
    assert receiver.attempts == []  # nothing unsigned went out
    (row,) = [r for r in queue_rows(db_url) if r.attempts]
    assert "SALEFLOW_TEST_UNSET_SECRET" in row.last_error and "not set" in row.last_error


# --------------------------------------------------------------------------
# Failures: per lead, back-off, give-up, retry
# --------------------------------------------------------------------------


def test_a_failing_lead_holds_up_only_itself(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "h", receiver.url("/h"))
    receiver.rule = lambda path, body: "fail" if body["lead"] == "a" else "ok"
    activity(db_url, ["a", "b", "c"])
    rounds(db_url)
    got = receiver.by_lead("/h")
    assert "a" not in got and len(got["b"]) == 5 and len(got["c"]) == 5
    assert receiver.seqs("/h", every=True).count(1) == 1  # a's head was tried once; it waits its back-off
    receiver.rule = lambda path, body: "ok"
    rounds(db_url, now=T0 + timedelta(minutes=1))
    got = receiver.by_lead("/h")
    assert got["a"] == [1, 2, 3, 4, 5]  # in order, after its back-off
    in_order(got)
    assert queue_rows(db_url) == []


def test_back_off_then_give_up_after_24_hours_then_retry(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "h", receiver.url("/h"))
    receiver.rule = lambda path, body: "fail"
    activity(db_url, ["a"])
    now = T0
    rng = random.Random(7)
    rounds(db_url, now=now, rng=rng)
    for attempt in range(1, 9):
        (head,) = [r for r in queue_rows(db_url) if r.next_at is not None]
        assert head.seq == 1 and head.attempts == attempt and head.last_error == "HTTP 500"
        wait = head.next_at - now
        full = min(BASE * 2 ** (attempt - 1), CAP)
        assert full * (1 - JITTER) <= wait <= full, (attempt, wait)
        # Not due a moment before its time; due at it.
        assert rounds(db_url, now=head.next_at - timedelta(seconds=1)).failed == 0
        now = head.next_at
        assert rounds(db_url, now=now, rng=rng).failed == 1
    assert failures(Engine.open(db=db_url).store) == []
    # Past the deadline: given up, listed; the entries behind it get one try each.
    late = T0 + GIVE_UP + timedelta(seconds=1)
    report = rounds(db_url, now=late)
    assert report.given_up == 5 and report.failed == 0
    listed = json.loads(ok(db_url, "webhook", "failures", "h", "--json").stdout)
    assert [f["seq"] for f in listed] == [1, 2, 3, 4, 5]
    assert listed[0]["attempts"] == 10 and listed[0]["last_error"] == "HTTP 500" and listed[0]["lead"] == "a"
    assert json.loads(ok(db_url, "webhook", "failures", "--json").stdout) == listed
    assert "5 failed deliveries" in ok(db_url, "webhook", "failures").stdout
    assert rounds(db_url, now=late + timedelta(days=3)).failed == 0  # given up means no more tries
    # Retry re-queues them; the receiver has recovered.
    receiver.rule = lambda path, body: "ok"
    retried = json.loads(ok(db_url, "webhook", "retry", "h", "--json", now=late.isoformat()).stdout)
    assert retried["requeued"] == 5
    assert rounds(db_url, now=late).delivered == 5
    assert receiver.seqs("/h") == [1, 2, 3, 4, 5]
    assert json.loads(ok(db_url, "webhook", "failures", "--json").stdout) == []


def test_retry_since_replays_what_was_delivered(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "h", receiver.url("/h"), "--kind", "event")
    activity(db_url, ["a", "b"])
    rounds(db_url)
    assert receiver.by_lead("/h") == {"a": [3, 4], "b": [8, 9]}  # order holds per lead only
    result = ok(db_url, "webhook", "retry", "h", "--since", "5")
    assert "entries after seq 5 will be delivered again" in result.stdout
    rounds(db_url)
    assert receiver.by_lead("/h") == {"a": [3, 4], "b": [8, 9, 8, 9]}


# --------------------------------------------------------------------------
# Dead and hanging endpoints; several deliverers; a killed deliverer
# --------------------------------------------------------------------------


def test_dead_and_hanging_endpoints_do_not_hold_up_other_hooks(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "hangs", receiver.url("/hang"))
    ok(db_url, "webhook", "add", "dead", dead_url())
    ok(db_url, "webhook", "add", "fine", receiver.url("/fine"))
    receiver.rule = lambda path, body: "hang" if path == "/hang" else "ok"
    leads = [f"l{n}" for n in range(12)]
    activity(db_url, leads)
    with Engine.open(db=db_url, now=T0) as engine:
        report = deliver(engine, timeout=TIMEOUT)
    # One round delivered everything of the healthy hook...
    assert report.hooks["fine"].delivered == 60 and sorted(receiver.seqs("/fine")) == list(range(1, 61))
    # ...while the others stopped at their first failures without an answer.
    assert report.hooks["hangs"].stopped == f"no answer within {TIMEOUT:g} s"
    assert "ConnectError" in (report.hooks["dead"].stopped or "")
    assert 1 <= report.hooks["hangs"].failed <= 4 and report.hooks["hangs"].delivered == 0
    # The endpoint recovers: after the back-off every entry arrives, in order per lead.
    # A request still hanging when its hook's round stopped keeps its lease until
    # it runs out on the wall clock (10 x timeout + 60 s), so the rounds after
    # recovery read a wall clock past that.
    receiver.rule = lambda path, body: "ok"
    later = datetime.now(UTC) + timedelta(minutes=2)
    rounds(db_url, now=T0 + timedelta(minutes=1), wall=lambda: later)
    assert sorted(set(receiver.seqs("/hang"))) == list(range(1, 61))
    in_order(receiver.by_lead("/hang"))
    in_order(receiver.by_lead("/fine"))
    owed = backlogs(Engine.open(db=db_url).store)
    assert owed["dead"].queued == 60 and "hangs" not in owed and "fine" not in owed


def test_the_engine_writes_while_a_request_is_in_flight(db_url: str, receiver: Receiver) -> None:
    """No transaction is open while a deliverer waits for an answer: the
    engine writes (and another webhook's rows change) meanwhile."""
    setup(db_url)
    ok(db_url, "webhook", "add", "h", receiver.url("/h"))
    activity(db_url, ["a"])
    receiver.hang = 60.0
    receiver.rule = lambda path, body: "hold"
    done: list[DeliveryReport] = []

    def run() -> None:
        with Engine.open(db=db_url, now=T0) as engine:
            done.append(deliver(engine, timeout=55))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    for _ in range(400):
        if receiver.attempts:
            break
        time.sleep(0.05)
    assert receiver.attempts and thread.is_alive()
    activity(db_url, ["b", "c"])  # each write would wait for a lock held across the request
    ok(db_url, "webhook", "add", "other", receiver.url("/other"))
    ok(db_url, "webhook", "remove", "other")
    assert thread.is_alive() and not done  # still waiting for its answer
    receiver.release.set()
    thread.join(timeout=60)
    assert done and done[0].delivered >= 1
    rounds(db_url)
    assert receiver.by_lead("/h") == {"a": [1, 2, 3, 4, 5], "b": [6, 7, 8, 9, 10], "c": [11, 12, 13, 14, 15]}


def test_concurrent_deliverers_send_nothing_twice(db_url: str, receiver: Receiver, tmp_path: Path) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "one", receiver.url("/one"))
    ok(db_url, "webhook", "add", "two", receiver.url("/two"), "--kind", "event")
    leads = [f"l{n:02}" for n in range(30)]
    activity(db_url, leads)
    command = [
        str(Path(sys.executable).parent / "saleflow"),
        "--db",
        db_url,
        "--now",
        NOW,
        "webhook",
        "deliver",
        "--once",
        "--limit",
        "7",
        "--timeout",
        "50",
    ]
    # The receiver holds every request until all three deliverers have
    # requests in flight (one has at most 8: 4 per webhook), so that they
    # really compete for the same queues.
    receiver.hang = 60.0
    receiver.rule = lambda path, body: "hold"

    def release_when_all_are_in() -> None:
        for _ in range(400):  # at most 20 s, well within the deliverers' timeout
            if len(receiver.attempts) >= 17:
                break
            time.sleep(0.05)
        receiver.release.set()

    threading.Thread(target=release_when_all_are_in, daemon=True).start()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    delivered = []
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err
        delivered.append(int(out.decode().rsplit("delivered ", 1)[1].split(",")[0]))
    assert sum(delivered) == 150 + 60 and all(delivered), delivered  # they shared it
    assert rounds(db_url).delivered == 0  # they drained it all
    one, two = receiver.seqs("/one"), receiver.seqs("/two")
    assert sorted(one) == list(range(1, 151))  # every entry exactly once
    assert sorted(two) == [s for lead in range(30) for s in (5 * lead + 3, 5 * lead + 4)]
    in_order(receiver.by_lead("/one"))
    in_order(receiver.by_lead("/two"))


def test_a_deliverer_killed_mid_request_loses_nothing(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "h", receiver.url("/h"))
    activity(db_url, ["a", "b"])
    receiver.hang = 60.0
    receiver.rule = lambda path, body: "hang"
    command = [
        str(Path(sys.executable).parent / "saleflow"),
        "--db",
        db_url,
        "--now",
        NOW,
        "webhook",
        "deliver",
        "--timeout",
        "30",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            if len(receiver.attempts) >= 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the deliverer sent nothing")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    receiver.rule = lambda path, body: "ok"
    # Its leases hold until they run out: no one else sends those leads meanwhile...
    assert rounds(db_url).delivered == 0
    # ...and once they have run out, another deliverer sends everything.
    later = datetime.now(UTC) + timedelta(minutes=30)
    rounds(db_url, wall=lambda: later)
    assert sorted(receiver.seqs("/h")) == list(range(1, 11))
    in_order(receiver.by_lead("/h"))


def test_a_looping_deliverer_stops_on_sigterm(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "h", receiver.url("/h"))
    activity(db_url, ["a"])
    command = [
        str(Path(sys.executable).parent / "saleflow"),
        "--db",
        db_url,
        "--now",
        NOW,
        "webhook",
        "deliver",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(400):
            if len(receiver.accepted) == 5:
                break
            time.sleep(0.05)
        activity(db_url, ["b"])  # written while it loops: it delivers that too
        for _ in range(400):
            if len(receiver.accepted) == 10:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert (
        err == "" and out.splitlines()[-1] == "done: queued 10, delivered 10, failed 0 (retrying), given up 0"
    )
    assert receiver.by_lead("/h") == {"a": [1, 2, 3, 4, 5], "b": [6, 7, 8, 9, 10]}


def test_a_lease_held_by_another_is_respected_until_it_runs_out(db_url: str, receiver: Receiver) -> None:
    setup(db_url)
    ok(db_url, "webhook", "add", "h", receiver.url("/h"))
    activity(db_url, ["a"])
    with Engine.open(db=db_url, now=T0) as engine:
        store = engine.store
        hook = get_hook(store, "h")
        changes = read_changes(store, hook.cursor)
        found = [(e.seq, e.lead_id) for e in changes]
        assert enqueue(store, "h", hook.cursor, changes.position, found, T0)
        assert not enqueue(store, "h", hook.cursor, changes.position, found, T0)  # lost the race: no-op
        wall = datetime.now(UTC)
        (taken,) = claim(
            store,
            "h",
            now=T0,
            wall=wall,
            lease_until=wall + timedelta(minutes=5),
            owner="gone",
            limit=5,
            run=10,
        )
        assert taken.lead_id == "a" and [p.seq for p in taken.entries] == [1, 2, 3, 4, 5]
        assert deliver(engine, timeout=TIMEOUT).delivered == 0  # leased to "gone"
        late = wall + timedelta(minutes=6)
        assert deliver(engine, timeout=TIMEOUT, wall=lambda: late).delivered == 5
        # "gone" comes back: its outcome is not recorded over the new one.
        assert record(store, taken, delivered=[1, 2, 3, 4, 5], failed=None, now=T0) is False
    assert receiver.seqs("/h") == [1, 2, 3, 4, 5]
    assert queue_rows(db_url) == []


# --------------------------------------------------------------------------
# The schedule, the signature, URLs
# --------------------------------------------------------------------------


@given(attempts=st.integers(1, 200), seed=st.integers(0, 2**32), offset=st.integers(0, 2 * 86_400))
def test_the_schedule_backs_off_never_past_the_deadline(attempts: int, seed: int, offset: int) -> None:
    rng = random.Random(seed)
    wait = backoff(attempts, rng)
    full = CAP if attempts > 20 else min(BASE * 2 ** (attempts - 1), CAP)
    assert full * (1 - JITTER) <= wait <= full
    now = T0 + timedelta(seconds=offset)
    at = next_attempt(attempts, T0, now, rng)
    if now >= T0 + GIVE_UP:
        assert at is None
    else:
        assert at is not None and now < at <= T0 + GIVE_UP


def test_signature_is_hmac_sha256_of_the_body() -> None:
    import hashlib
    import hmac

    body = b'{"seq":1}'
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verify("k", body, signature("k", body)) and not verify("k", body + b" ", signature("k", body))
    assert not verify("k", body, None)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com:8443/a/b?c=d#e",
        "http://127.0.0.1:9/x",
        "http://[::1]:80/",
        "https://b\u00fccher.example/\u00fc",
    ],
)
def test_good_urls(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty"),
        ("ftp://example.com/", "http:// or https://"),
        ("example.com/in", "http:// or https://"),
        ("http:///in", "name a host"),
        ("http://a b.com/", "space"),
        ("http://example.com/\n", "space or a control"),
        ("http://example.com:99999/", "does not parse"),
        ("http://example.com:0/", "port"),
        ("http://[::1/", "does not parse"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("http://example.com/" + "a" * MAX_URL_LENGTH, "limit is 2,000"),
        ("http://exa\x00mple.com/", "NUL"),
        ("http://\udcff.com/", "not valid Unicode"),
        ("http://" + "a" * 64 + ".com/", "host name"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(BadInput) as err:
        check_url(url)
    assert fragment in err.value.message and "\n" not in err.value.message
    assert "pw@" not in err.value.message


def test_no_httpx_is_one_sentence(sqlite_url: str) -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "from saleflow.cli.app import main\n"
        "main(['--db', sys.argv[1], 'webhook', 'deliver', '--once'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, sqlite_url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: webhook delivery needs httpx: pip install 'saleflow[webhooks]' (or 'saleflow[server]')\n"
    )


# --------------------------------------------------------------------------
# Bad input: one line, the right exit code, nothing changed
# --------------------------------------------------------------------------

ODD_TEXT = st.one_of(
    st.text(min_size=0, max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=20),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\u202e", "\u2028", "\n", "\udcff", "x" * 300, "x" * 5000]),
)


@pytest.fixture(scope="module")
def bad_input_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hooks') / 'bad.db'}"
    setup(url)
    runner = CliRunner()
    assert (
        runner.invoke(main, ["--db", url, "webhook", "add", "taken", "https://example.com/in"]).exit_code == 0
    )
    yield url


def _one_line_error(result: Any, codes: tuple[int, ...]) -> None:
    assert result.exit_code in codes, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["name", "url", "flow", "kind", "stage", "secret"]),
    value=st.one_of(ODD_TEXT, st.integers().map(str), st.just("9" * 5000)),
)
def test_add_refuses_bad_input_in_one_line(bad_input_db: str, field: str, value: str) -> None:
    if value in ("-h", "--help"):
        return  # click's help option
    args = {"name": "new", "url": "https://example.com/in"}
    extra: list[str] = []
    if field in ("name", "url"):
        args[field] = value
    else:
        option = {"flow": "--flow", "kind": "--kind", "stage": "--stage", "secret": "--secret-env"}[field]
        extra = [option, value]
        if field == "stage":
            extra = ["--flow", "hooks", *extra]
    before = dump(bad_input_db)
    result = CliRunner().invoke(
        main, ["--db", bad_input_db, "webhook", "add", args["name"], args["url"], *extra]
    )
    if result.exit_code == 0:  # hypothesis found a value that is fine: it was added
        CliRunner().invoke(main, ["--db", bad_input_db, "webhook", "remove", args["name"]])
        return
    _one_line_error(result, (2, 3))
    assert dump(bad_input_db) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(["remove", "failures", "retry", "retry-since", "limit", "timeout"]),
    value=st.one_of(ODD_TEXT, st.integers().map(str), st.just("9" * 5000), st.just("-1")),
)
def test_other_commands_refuse_bad_input_in_one_line(bad_input_db: str, command: str, value: str) -> None:
    if value in ("-h", "--help"):
        return  # click's help option
    args = {
        "retry-since": ["retry", "taken", "--since", value],
        "limit": ["deliver", "--once", "--limit", value],
        "timeout": ["deliver", "--once", "--timeout", value],
    }.get(command, [command, value])
    before = dump(bad_input_db)
    result = CliRunner().invoke(main, ["--db", bad_input_db, "webhook", *args])
    if result.exit_code == 0:  # a value that is fine (no webhook of this database owes anything)
        assert command in ("retry-since", "limit", "timeout"), result.stdout
        return
    _one_line_error(result, (2, 3))
    assert dump(bad_input_db) == before


def test_the_worker_delivers_webhooks_after_ticking(db_url: str, receiver: Receiver) -> None:
    """`worker --once` runs the delivery step after its ticks: every entry
    written before it ran, the worker's own moves included, arrives in seq
    order per lead, exactly as `changes` prints it."""
    setup(db_url)
    ok(db_url, "webhook", "add", "crm", receiver.url("/w"))
    activity(db_url, ["a", "b"])
    result = ok(db_url, "worker", "--once")
    assert "moves made" in result.stdout
    printed = feed(db_url)
    with receiver.lock:
        got = sorted(b.decode() for p, _, b in receiver.accepted if p == "/w")
    assert got == sorted(printed) and len(printed) == 10
    in_order(receiver.by_lead("/w"))


def test_a_worker_without_httpx_still_ticks(sqlite_url: str) -> None:
    """With no webhook registered the worker's delivery step does nothing,
    so a worker runs where httpx is not installed (checked in a subprocess
    that cannot import httpx)."""
    setup(sqlite_url)
    activity(sqlite_url, ["a"])
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'httpx' or name.startswith('httpx.'):\n"
        "            raise ImportError('no httpx here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from saleflow.cli.app import main\n"
        f"main(['--db', {sqlite_url!r}, '--now', {NOW!r}, 'worker', '--once'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "httpx" not in done.stderr
    # With a webhook registered, it says once that it delivers none, and
    # still ticks and exits 0; the entries wait for a worker with httpx.
    ok(sqlite_url, "webhook", "add", "crm", "http://127.0.0.1:9/never")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("this worker delivers no webhooks") == 1, done.stderr
