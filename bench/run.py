"""saleflow benchmarks: ratios against baselines measured in the same run.

    python bench/run.py            # everything (takes a few minutes)
    python bench/run.py --quick    # smaller sizes, for a smoke run
    python bench/run.py --only language,ops

Sections
- language: parse + check + compile of flows/the_model.flow in-process
  (goal <= 20 ms), and the wall time of `saleflow check` over the wall time
  of `python -c "import sqlalchemy, lark, transitions, click"` (goal <= 1.5).
- ops: events recorded through the API, one transaction each, against raw
  sqlite3 (or raw psycopg) writing the same rows (the event, the lead, the
  event's journal entry, sealed) one transaction per operation
  (goal >= 0.25).
- memory: peak RSS of `advance --all` at 10,000 and 100,000 leads
  (goal: 100k within 1.5x of 10k).
- report: `saleflow report` (table, JSON, HTML, and `--by industry`) over
  10,000 and 100,000 leads of the_model with histories, seeded in bulk:
  time and the report's own peak RSS (goal: 100k within 1.5x of 10k).
- import: `saleflow import` of the real X Education file (`--data`, default
  ../shared/data/x_education_leads.csv), against raw executemany of the same
  lead and journal rows, 1,000 leads per transaction (goal >= 0.25).
- mixed: 600 leads created through the API, each followed at once by three
  events that move it a stage (bench/flows/mixed.flow), and the same
  operations grouped (all adds, then all events), against raw sqlite3 (or
  psycopg) writing the same rows with the same statements, one transaction
  per operation (goal >= 0.25, aim 0.5).
- simulate: `simulate` of flows/the_model.flow over 100,000 recorded leads
  against `report` on the same database (bench/simulate.py; goal: a small
  multiple).
- import3: `Engine.import_csv` of a generated CSV of 50,000 leads, each
  created and moved through three gates (bench/flows/gates.flow), against
  raw executemany of the same lead and journal rows (goal >= 0.25, aim 0.5).

Results and the machine are recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "the_model.flow"
PY = sys.executable
PG_URL = os.environ.get("SALEFLOW_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def line(name: str, value: str, goal: str = "") -> None:
    print(f"  {name:<58} {value:>14}  {goal}")


def median_time(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------- language
def bench_language(quick: bool) -> None:
    from saleflow.check.rules import check
    from saleflow.compile import compile_flow
    from saleflow.language.parse import load_flow

    def pipeline() -> None:
        flow = load_flow(FLOW)
        check(flow)
        compile_flow(flow)

    pipeline()
    ms = median_time(pipeline, 10 if quick else 30) * 1000
    line("parse + check + compile the_model.flow (in-process)", f"{ms:.1f} ms", "goal <= 20 ms")

    saleflow = str(Path(PY).parent / "saleflow")
    cli = [saleflow, "check", str(FLOW)]
    base = [PY, "-c", "import sqlalchemy, lark, transitions, click"]
    subprocess.run(cli, capture_output=True, check=True)  # warm the parser cache
    runs = 3 if quick else 7
    t_cli = median_time(lambda: subprocess.run(cli, capture_output=True, check=True), runs)
    t_base = median_time(lambda: subprocess.run(base, capture_output=True, check=True), runs)
    line("`saleflow check` wall time", f"{t_cli * 1000:.0f} ms")
    line("`python -c 'import sqlalchemy, lark, transitions, click'`", f"{t_base * 1000:.0f} ms")
    line("ratio check / imports", f"{t_cli / t_base:.2f}", "goal <= 1.5")
    bench_flow_tests(quick)


def bench_flow_tests(quick: bool) -> None:
    """Issue 11: every test of the_model.flow, in-process, under a second
    (each test on its own in-memory store, through the real engine)."""
    from saleflow.language.parse import load_flow
    from saleflow.runtime.testing import run_tests

    flow = load_flow(FLOW)
    assert all(result.passed for result in run_tests(flow))  # warm, and correct
    seconds = median_time(lambda: run_tests(flow), 3 if quick else 7)
    count = len(flow.tests)
    line(
        f"run the {count} tests of the_model.flow (in-process)", f"{seconds * 1000:.0f} ms", "goal < 1000 ms"
    )


# ------------------------------------------------------------------ ops
START = datetime(2026, 1, 1, tzinfo=UTC)


def api_ops(url: str, leads: int, ops: int) -> float:
    from saleflow.runtime.engine import Engine

    engine = Engine.open(FLOW, db=url, now=START, actor="bench")
    engine.add_leads(((f"lead-{i}", {"company": f"c{i}"}) for i in range(leads)), chunk=500)
    start = time.perf_counter()
    for i in range(ops):
        engine.record(f"lead-{i % leads}", "product_login", at=START + timedelta(seconds=i))
    elapsed = time.perf_counter() - start
    engine.close()
    return elapsed


# ---------------------------------------------------------- journal, raw
# What the raw baselines write for the journal, as saleflow does (SPEC §6):
# per transaction the next global `seq` (max + 1 on SQLite, the sequence on
# PostgreSQL), per lead the head (`lead_seq`, hash) read back unless the
# lead is new in this transaction, and per entry a SHA-256 hex digest of a
# canonical JSON text of the entry (the same sixteen fields in sorted-key
# order, strings quoted by the same C encoder) chained to the previous hash.
JOURNAL_TEXT = (
    '{"actor":%s,"at":%s,"cycle":%d,"data":%s,"entry":%s,"flow":%s,"from":%s,"kind":%s,'
    '"lead_id":%s,"lead_seq":%d,"prev_hash":%s,"reason":%s,"recorded_at":%s,"seq":%d,"stage":%s,'
    '"version":%d}'
)
GENESIS = "0" * 64
_quote = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
JOURNAL_SQL = {  # by placeholder: the journal statements of the raw baselines
    "?": {
        "last_seq": "SELECT coalesce(max(seq), 0) FROM {p}journal",
        "head": "SELECT lead_seq, hash FROM {p}journal WHERE lead_id = ? ORDER BY lead_seq DESC LIMIT 1",
        "insert": "INSERT INTO {p}journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    },
    "%s": {
        "lock": "SELECT pg_advisory_xact_lock_shared(%s)",
        "seqs": "SELECT nextval('{p}journal_seq') FROM generate_series(1, %s)",
        "head": "SELECT lead_seq, hash FROM {p}journal WHERE lead_id = %s ORDER BY lead_seq DESC LIMIT 1",
        "insert": "INSERT INTO {p}journal VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
    },
}
PUBLICATION_LOCK = 0x5A1E  # any constant: the raw baselines' stand-in for saleflow's publication lock


def journal_sql(ph: str, prefix: str = "") -> dict[str, str]:
    return {name: sql.replace("{p}", prefix) for name, sql in JOURNAL_SQL[ph].items()}


def _json_text(value: object) -> str:
    return "null" if value is None else _quote(value)  # type: ignore[no-any-return]


def _iso(at: str | datetime) -> str:
    """A time as `datetime.isoformat` writes it (as saleflow's hash text has it)."""
    return (datetime.fromisoformat(at) if isinstance(at, str) else at).isoformat()


class RawEntry:
    """A stored journal row to write again: the row, and the texts its hash
    covers (times as ISO text, data as canonical JSON), made before timing."""

    __slots__ = ("at", "data", "recorded_at", "row")

    def __init__(self, row: tuple[Any, ...], wrap: Callable[[Any], Any] = lambda v: v) -> None:
        at, recorded_at, data = row[8], row[9], row[14]
        self.at = _quote(_iso(at))
        self.recorded_at = _quote(_iso(recorded_at))
        if isinstance(data, str):
            self.data = data
        else:
            self.data = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        self.row = (*row[:14], wrap(data), *row[15:])

    def sealed(self, seq: int, lead_seq: int, prev_hash: str) -> tuple[Any, ...]:
        """The row with its place and a SHA-256 over its text."""
        row = self.row
        text = JOURNAL_TEXT % (
            _quote(row[10]),
            self.at,
            row[7],
            self.data,
            _quote(row[3]),
            _quote(row[12]),
            _json_text(row[5]),
            _json_text(row[4]),
            _quote(row[1]),
            lead_seq,
            _quote(prev_hash),
            _json_text(row[11]),
            self.recorded_at,
            seq,
            _quote(row[6]),
            row[13],
        )
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return (seq, row[1], lead_seq, *row[3:15], prev_hash, digest)


def write_entries(
    cur: Any, sql: dict[str, str], entries: list[RawEntry], heads: dict[str, tuple[int, str]] | None = None
) -> None:
    """Seal and insert `entries` in one transaction, as saleflow's
    `write_journal` does: positions, the heads not in `heads` (a new lead's
    is known), hashes, one executemany."""
    if "lock" in sql:
        cur.execute(sql["lock"], (PUBLICATION_LOCK,))
        cur.execute(sql["seqs"], (len(entries),))
        seqs = sorted(row[0] for row in cur.fetchall())
    else:
        first = cur.execute(sql["last_seq"]).fetchone()[0] + 1
        seqs = list(range(first, first + len(entries)))
    heads = {} if heads is None else heads
    rows = []
    for seq, entry in zip(seqs, entries, strict=True):
        lead_id = entry.row[1]
        head = heads.get(lead_id)
        if head is None:
            cur.execute(sql["head"], (lead_id,))
            found = cur.fetchone()
            head = (0, GENESIS) if found is None else (found[0], found[1])
        row = entry.sealed(seq, head[0] + 1, head[1])
        heads[lead_id] = (row[2], row[16])
        rows.append(row)
    cur.executemany(sql["insert"], rows)


def _journal_ddl(con: sqlite3.Connection) -> list[str]:
    return [
        sql
        for (sql,) in con.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'journal' AND sql IS NOT NULL ORDER BY rowid"
        )
    ]


def _op_entries(rows: Any, wrap: Callable[[Any], Any] = lambda v: v) -> list[list[RawEntry]]:
    """The entries of each operation, in order: an event entry and the
    moves it made (a lead moves when its events open a gate)."""
    ops: list[list[RawEntry]] = []
    for row in rows:
        if row[3] == "event" or not ops:
            ops.append([])
        ops[-1].append(RawEntry(row, wrap))
    return ops


def raw_sqlite_ops(stored: str, path: str, leads: int, ops: int) -> float:
    """The same rows by hand: per operation, read the lead, insert the
    event, read its events, update the lead, and append the event's journal
    entry and those of the moves it made (the largest seq, the lead's head,
    a SHA-256 each, one executemany); one transaction each.  The journal entries are those the API stored in
    `stored`, sealed again; the leads' created entries are there before."""
    src = sqlite3.connect(stored)
    ddl = _journal_ddl(src)
    created = src.execute("SELECT * FROM journal WHERE entry = 'created' ORDER BY seq").fetchall()
    entries = _op_entries(src.execute("SELECT * FROM journal WHERE entry != 'created' ORDER BY seq"))
    src.close()
    assert len(entries) == ops, (len(entries), ops)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute(
        "CREATE TABLE leads (id TEXT PRIMARY KEY, stage TEXT, fields TEXT, cycle INT, score REAL,"
        " revision INT, updated_at TEXT)"
    )
    con.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, lead_id TEXT, name TEXT, at TEXT, channel TEXT,"
        " content TEXT, count INT, cycle INT)"
    )
    con.execute("CREATE INDEX ev ON events (lead_id, cycle)")
    for statement in ddl:
        con.execute(statement)
    con.executemany(
        "INSERT INTO leads VALUES (?, 'awareness', '{}', 1, 0, 0, '')", [(f"lead-{i}",) for i in range(leads)]
    )
    con.executemany(f"INSERT INTO journal VALUES ({', '.join('?' * 17)})", created)
    sql = journal_sql("?")
    cur = con.cursor()
    start = time.perf_counter()
    for i in range(ops):
        lead = f"lead-{i % leads}"
        at = (START + timedelta(seconds=i)).isoformat()
        cur.execute("BEGIN IMMEDIATE")
        cur.execute("SELECT * FROM leads WHERE id = ?", (lead,)).fetchone()
        cur.execute(
            "INSERT INTO events (lead_id, name, at, channel, content, count, cycle) VALUES (?,?,?,?,?,?,?)",
            (lead, "product_login", at, "product", None, 1, 1),
        )
        cur.execute("SELECT name, at, count FROM events WHERE lead_id = ? AND cycle = 1", (lead,)).fetchall()
        cur.execute(
            "UPDATE leads SET score = ?, revision = revision + 1, updated_at = ? WHERE id = ? AND revision >= 0",
            (0, at, lead),
        )
        write_entries(cur, sql, entries[i])
        cur.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def raw_pg_ops(stored: str, leads: int, ops: int) -> float:
    """`raw_sqlite_ops` with psycopg, in the API's database `stored` (the
    journal's copy is made with LIKE, its positions from a sequence)."""
    import psycopg

    adapt = psycopg.types.json.Jsonb
    with psycopg.connect(stored.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        created = con.execute("SELECT * FROM journal WHERE entry = 'created' ORDER BY seq").fetchall()
        entries = _op_entries(
            con.execute("SELECT * FROM journal WHERE entry != 'created' ORDER BY seq"), adapt
        )
        assert len(entries) == ops, (len(entries), ops)
        con.execute("DROP TABLE IF EXISTS bench_events, bench_leads, bench_journal")
        con.execute("DROP SEQUENCE IF EXISTS bench_journal_seq")
        con.execute(
            "CREATE TABLE bench_leads (id TEXT PRIMARY KEY, stage TEXT, fields JSONB, cycle INT, score REAL,"
            " revision INT, updated_at TIMESTAMPTZ)"
        )
        con.execute(
            "CREATE TABLE bench_events (id BIGSERIAL PRIMARY KEY, lead_id TEXT, name TEXT, at TIMESTAMPTZ,"
            " channel TEXT, content TEXT, count INT, cycle INT)"
        )
        con.execute("CREATE INDEX ON bench_events (lead_id, cycle)")
        con.execute("CREATE TABLE bench_journal (LIKE journal INCLUDING ALL)")
        con.execute(f"CREATE SEQUENCE bench_journal_seq START {len(created) + 1}")
        sql = journal_sql("%s", "bench_")
        with con.cursor() as cur:
            cur.executemany(
                "INSERT INTO bench_leads VALUES (%s, 'awareness', '{}', 1, 0, 0, now())",
                [(f"lead-{i}",) for i in range(leads)],
            )
            cur.executemany(sql["insert"], [(*row[:14], adapt(row[14]), *row[15:]) for row in created])
            start = time.perf_counter()
            for i in range(ops):
                lead = f"lead-{i % leads}"
                at = START + timedelta(seconds=i)
                with con.transaction():
                    cur.execute("SELECT * FROM bench_leads WHERE id = %s FOR UPDATE", (lead,))
                    cur.fetchone()
                    cur.execute(
                        "INSERT INTO bench_events (lead_id, name, at, channel, content, count, cycle)"
                        " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                        (lead, "product_login", at, "product", None, 1, 1),
                    )
                    cur.execute(
                        "SELECT name, at, count FROM bench_events WHERE lead_id = %s AND cycle = 1", (lead,)
                    )
                    cur.fetchall()
                    cur.execute(
                        "UPDATE bench_leads SET score = %s, revision = revision + 1, updated_at = %s WHERE id = %s",
                        (0, at, lead),
                    )
                    write_entries(cur, sql, entries[i])
            elapsed = time.perf_counter() - start
        con.execute("DROP TABLE IF EXISTS bench_events, bench_leads, bench_journal")
        con.execute("DROP SEQUENCE IF EXISTS bench_journal_seq")
    return elapsed


def fresh_pg_database() -> str:
    import psycopg

    name = f"saleflow_bench_{os.getpid()}"
    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        con.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_ops(quick: bool, backends: list[str]) -> None:
    leads, ops = (50, 500) if quick else (200, 3000)
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            t_api = api_ops(f"sqlite:///{tmp}/api.db", leads, ops)
            t_raw = raw_sqlite_ops(f"{tmp}/api.db", f"{tmp}/raw.db", leads, ops)
        line(f"SQLite: {ops} events via Engine.record (1 tx each)", f"{ops / t_api:,.0f} ops/s")
        line("SQLite: same rows via raw sqlite3 (1 tx each)", f"{ops / t_raw:,.0f} ops/s")
        line("SQLite ratio API / raw", f"{t_raw / t_api:.2f}", "goal >= 0.25")
    if "postgresql" in backends:
        url = fresh_pg_database()
        try:
            t_api = api_ops(url, leads, ops)
            t_raw = raw_pg_ops(url, leads, ops)
        finally:
            drop_pg_database(url)
        line(f"PostgreSQL: {ops} events via Engine.record (1 tx each)", f"{ops / t_api:,.0f} ops/s")
        line("PostgreSQL: same rows via raw psycopg (1 tx each)", f"{ops / t_raw:,.0f} ops/s")
        line("PostgreSQL ratio API / raw", f"{t_raw / t_api:.2f}", "goal >= 0.25")


# --------------------------------------------------------------- memory
SEED = """
import sys
from saleflow.runtime.engine import Engine
url, n = sys.argv[1], int(sys.argv[2])
engine = Engine.open(sys.argv[3], db=url, now="2026-01-01T00:00:00Z", actor="bench")
rows = ((f"lead-{i:07d}", {"company": f"c{i}"}) for i in range(n))
engine.add_leads(rows, chunk=1000)
engine.close()
"""

ADVANCE = """
import resource, sys, time, json
from saleflow.runtime.engine import Engine
engine = Engine.open(db=sys.argv[1], now="2026-03-01T00:00:00Z", actor="bench")
start = time.perf_counter()
moves = engine.advance_all()
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "moves": moves,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def advance_all_memory(url: str, n: int) -> dict[str, float]:
    subprocess.run([PY, "-c", SEED, url, str(n), str(FLOW)], check=True)
    out = subprocess.run([PY, "-c", ADVANCE, url], check=True, capture_output=True, text=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def on_scratch_database(backend: str, run: Callable[[str, int], dict[str, Any]], n: int) -> dict[str, Any]:
    """`run(url, n)` on a new, empty SQLite file or PostgreSQL database."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            return run(f"sqlite:///{tmp}/bench.db", n)
    url = fresh_pg_database()
    try:
        return run(url, n)
    finally:
        drop_pg_database(url)


def bench_memory(quick: bool, backends: list[str]) -> None:
    small, large = (2_000, 20_000) if quick else (10_000, 100_000)
    for backend in backends:
        results = {}
        for n in (small, large):
            results[n] = on_scratch_database(backend, advance_all_memory, n)
            r = results[n]
            line(
                f"{backend}: advance --all over {n:,} leads",
                f"{r['peak_kb'] / 1024:.0f} MB",
                f"{r['seconds']:.1f} s, {n / r['seconds']:,.0f} leads/s",
            )
        ratio = results[large]["peak_kb"] / results[small]["peak_kb"]
        line(f"{backend}: peak RSS {large:,} / {small:,}", f"{ratio:.2f}", "goal <= 1.5")


# --------------------------------------------------------------- report
# Histories for the_model, written straight to the tables in bulk (the engine
# would take minutes to play 100k leads through): leads that advance, stall,
# skip, get recycled (a new cycle) or lost, with channelled events before
# their moves and SLA breaches in contacting.  Deterministic for a seed.
REPORT_MAIN = (
    "awareness", "lead", "nurturing", "mql", "contacting", "sal", "sql",
    "opportunity", "proposal", "negotiation", "closed_won", "onboarding", "adoption", "retained",
)  # fmt: skip
REPORT_ON = {  # chance to move on from a stage
    "awareness": 0.95, "lead": 0.8, "nurturing": 0.6, "mql": 0.7, "contacting": 0.75, "sal": 0.7,
    "sql": 0.65, "opportunity": 0.55, "proposal": 0.7, "negotiation": 0.6, "closed_won": 0.95,
    "onboarding": 0.85, "adoption": 0.8,
}  # fmt: skip
REPORT_TOUCHES = (
    ("web_visit", "web"), ("content_download", "web"), ("seminar_attended", "seminar"),
    ("inbound_question", "inbound"), ("call_connected", "phone"), ("meeting_held", "field"),
)  # fmt: skip
REPORT_NOW = "2026-09-01T00:00:00Z"


def seed_histories(url: str, n: int, seed: int = 7) -> int:
    """`n` leads of the_model with histories; returns the number of journal
    entries (created and moved: what the report reads)."""
    from saleflow.runtime.engine import Engine
    from saleflow.store.schema import events, journal, leads, sla_breaches

    engine = Engine.open(FLOW, db=url, now=START, actor="bench")
    version = engine.compiled("the_model").version
    sql_engine = engine.store.engine  # type: ignore[attr-defined]
    rng = random.Random(seed)
    tables = {"leads": leads, "journal": journal, "events": events, "sla": sla_breaches}
    rows: dict[str, list[dict[str, object]]] = {key: [] for key in tables}
    entries = 0
    for i in range(n):
        entries += _one_history(rows, rng, f"lead-{i:07d}", version, entries)
        if len(rows["leads"]) >= 2000 or i == n - 1:
            with sql_engine.begin() as conn:
                for key, table in tables.items():
                    if rows[key]:
                        conn.execute(table.insert(), rows[key])
                        rows[key].clear()
    engine.close()
    return entries


def _one_history(
    rows: dict[str, list[dict[str, object]]], rng: random.Random, lead_id: str, version: int, before: int
) -> int:
    """Append one lead, its journal entries, events and SLA breaches to
    `rows` (`before`: how many entries earlier leads have)."""
    index = {name: i for i, name in enumerate(REPORT_MAIN)}
    created = entered = START + timedelta(days=rng.uniform(0, 180))
    cycle, recycles, stage = 1, 0, "awareness"
    audit = rows["journal"]

    def entry(source: str | None, target: str, kind: str, at: datetime, cycle: int) -> dict[str, object]:
        lead_seq = len(audit) - first + 1
        return {
            "seq": before + lead_seq,
            "lead_id": lead_id,
            "lead_seq": lead_seq,
            "entry": "created" if source is None else "moved",
            "kind": kind,
            "from_stage": source,
            "stage": target,
            "cycle": cycle,
            "at": at,
            "recorded_at": at,
            "actor": "bench",
            "reason": None,
            "flow": "the_model",
            "version": version,
            "data": {"fields": {}} if source is None else {"values": {}},
            "prev_hash": "0" * 64,
            "hash": "",
        }

    first = len(audit)
    audit.append(entry(None, stage, "create", created, cycle))
    while stage != REPORT_MAIN[-1]:
        dwell = rng.expovariate(1 / 3)
        t = entered + timedelta(days=dwell)
        r, p = rng.random(), REPORT_ON[stage]
        if stage == "contacting" and dwell > 2:
            due = entered + timedelta(days=2)
            rows["sla"].append(
                {
                    "lead_id": lead_id,
                    "flow": "the_model",
                    "stage": stage,
                    "cycle": cycle,
                    "entered_at": entered,
                    "due_at": due,
                    "detected_at": due + timedelta(hours=1),
                }
            )
        if r < p:
            name, channel = rng.choice(REPORT_TOUCHES)
            at = t - timedelta(minutes=5)
            rows["events"].append(
                {"lead_id": lead_id, "name": name, "at": at, "channel": channel, "count": 1, "cycle": cycle}
            )
            target, kind = REPORT_MAIN[index[stage] + 1], "advance"
            if stage == "lead" and rng.random() < 0.05:
                target, kind = "sql", "skip"
            elif stage == "nurturing" and rng.random() < 0.03:
                target, kind = "opportunity", "skip"
        elif r < p + 0.15 and stage in ("contacting", "sal", "sql", "opportunity") and recycles < 2:
            cycle, recycles, target, kind = cycle + 1, recycles + 1, "nurturing", "recycle"
        elif r < p + 0.25:
            target, kind = "lost", "exit"
        else:
            break  # stays where it is
        audit.append(entry(stage, target, kind, t, cycle))
        stage, entered = target, t
        if stage == "lost":
            break
    industry = rng.choice(("saas", "finance", "retail", "manufacturing", "other"))
    rows["leads"].append(
        {
            "id": lead_id,
            "flow": "the_model",
            "version": version,
            "stage": stage,
            "fields": {"industry": industry, "employees": rng.choice((50, 200, 800, 5000))},
            "cycle": cycle,
            "score": 0.0,
            "entered_at": entered,
            "created_at": created,
            "updated_at": entered,
            "revision": 0,
        }
    )
    return len(audit) - first


REPORT = """
import json, resource, sys, time
from saleflow.runtime.engine import Engine
from saleflow.views.page import render_html
from saleflow.views.report import render_table, report_for

def status(key):  # kB, from /proc/self/status (Linux)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

engine = Engine.open(db=sys.argv[1], now=sys.argv[2], actor="bench")
engine.compiled("the_model")
opened_kb = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark: the peak below is the report's own
start = time.perf_counter()
report = report_for(engine, "the_model")
render_table(report), json.dumps(report.to_json()), render_html(report)
seconds = time.perf_counter() - start
start = time.perf_counter()
report_for(engine, "the_model", by="industry")
by_seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "by_seconds": by_seconds, "opened_kb": opened_kb,
                  "peak_kb": status("VmHWM")}))
"""


def report_run(url: str, n: int) -> dict[str, float]:
    start = time.perf_counter()
    entries = seed_histories(url, n)
    seeded = time.perf_counter() - start
    out = subprocess.run(
        [PY, "-c", REPORT, url, REPORT_NOW], check=True, capture_output=True, text=True
    ).stdout
    return {**json.loads(out), "entries": entries, "seeded": seeded}


def bench_report(quick: bool, backends: list[str]) -> None:
    small, large = (2_000, 20_000) if quick else (10_000, 100_000)
    for backend in backends:
        results = {}
        for n in (small, large):
            results[n] = on_scratch_database(backend, report_run, n)
            r = results[n]
            line(
                f"{backend}: report over {n:,} leads ({r['entries']:,.0f} journal entries)",
                f"{r['seconds']:.2f} s",
                f"peak RSS {r['peak_kb'] / 1024:.0f} MB ({r['opened_kb'] / 1024:.0f} MB before);"
                f" --by industry {r['by_seconds']:.2f} s; seeded in {r['seeded']:.0f} s",
            )
        ratio = results[large]["peak_kb"] / results[small]["peak_kb"]
        line(f"{backend}: report peak RSS {large:,} / {small:,}", f"{ratio:.2f}", "goal <= 1.5")


# --------------------------------------------------------------- import
# `saleflow import` of the real X Education file (README "Real data"),
# against raw executemany of the very lead and journal rows the import stored,
# 1,000 leads and their journal entries per transaction (sealed again:
# positions, SHA-256 hashes), into tables with the same keys and indexes.
X_FLOW = ROOT / "flows" / "x_education.flow"
X_DATA = ROOT.parent / "shared" / "data" / "x_education_leads.csv"


IMPORT_RUNS = 5  # each side of the import ratio is the median of this many runs (the VM is noisy)


X_IMPORT: dict[str, Any] = {
    "flow_path": X_FLOW,
    "flow": "x_education",
    "id_column": "Prospect ID",
    "mapping": {"TotalVisits": "total_visits"},
}


def api_import(
    fresh: Callable[[], str], data: Path, spec: dict[str, Any] = X_IMPORT, repeat: int = IMPORT_RUNS
) -> tuple[float, int, int]:
    """Median seconds for `Engine.import_csv` of `data` into an empty
    database (`fresh()` gives its URL), as the raw side is timed; and the
    leads and journal entries stored.  `spec` names the flow file, the flow,
    the id column and the mapping."""
    from saleflow.runtime.engine import Engine

    times = []
    for _ in range(repeat):
        engine = Engine.open(spec["flow_path"], db=fresh(), now=START, actor="bench")
        start = time.perf_counter()
        result = engine.import_csv(
            data, flow=spec["flow"], id_column=spec["id_column"], mapping=spec["mapping"]
        )
        times.append(time.perf_counter() - start)
        engine.close()
    return statistics.median(times), result.created, result.created + result.moves


Rows = list[tuple[object, ...]]


def _grouped(leads: Rows, journal: list[RawEntry], size: int) -> list[tuple[Rows, list[RawEntry]]]:
    """Chunks of `size` leads, each with its leads' journal entries."""
    by_lead: dict[object, list[RawEntry]] = {}
    for entry in journal:
        by_lead.setdefault(entry.row[1], []).append(entry)
    return [
        (leads[i : i + size], [e for lead in leads[i : i + size] for e in by_lead.get(lead[0], [])])
        for i in range(0, len(leads), size)
    ]


def _write_chunk(cur: Any, jsql: dict[str, str], lead_sql: str, leads: Rows, entries: list[RawEntry]) -> None:
    """One chunk of an import, as saleflow writes it: the leads, then their
    journal entries sealed at the commit (new leads: no head to read)."""
    cur.executemany(lead_sql, leads)
    write_entries(cur, jsql, entries, {lead[0]: (0, GENESIS) for lead in leads})  # type: ignore[misc]


def raw_sqlite_import(stored: str, path: str, repeat: int = IMPORT_RUNS) -> float:
    """The rows of the SQLite database `stored`, written again with raw
    sqlite3: per chunk of 1,000 leads one transaction, the leads, then
    their journal entries (the largest seq, a SHA-256 each, one
    executemany)."""
    src = sqlite3.connect(stored)
    leads = src.execute("SELECT * FROM leads").fetchall()
    journal = [RawEntry(row) for row in src.execute("SELECT * FROM journal ORDER BY seq")]
    ddl = [
        sql.replace("REFERENCES leads (id)", "REFERENCES leads (id) DEFERRABLE INITIALLY DEFERRED")
        for (sql,) in src.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name IN ('leads', 'journal') AND sql IS NOT NULL"
            " ORDER BY rowid"
        )
    ]
    src.close()
    chunks = _grouped(leads, journal, 1000)
    jsql = journal_sql("?")

    def once() -> None:
        con = fresh_raw_sqlite(path, ddl)
        lead_sql = f"INSERT INTO leads VALUES ({', '.join('?' * len(leads[0]))})"
        cur = con.cursor()
        for lead_rows, entries in chunks:
            cur.execute("BEGIN IMMEDIATE")
            _write_chunk(cur, jsql, lead_sql, lead_rows, entries)
            cur.execute("COMMIT")
        con.close()

    return median_time(once, repeat)


def raw_pg_import(stored: str, repeat: int = IMPORT_RUNS) -> float:
    """The rows of the PostgreSQL database `stored`, written again with raw
    psycopg (positions from a sequence, as saleflow draws them)."""
    import psycopg

    with psycopg.connect(stored.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        adapt = psycopg.types.json.Jsonb
        leads = con.execute("SELECT * FROM leads").fetchall()
        journal = [RawEntry(row, adapt) for row in con.execute("SELECT * FROM journal ORDER BY seq")]
        lead_sql = f"INSERT INTO bench_leads VALUES ({', '.join(['%s'] * len(leads[0]))})"
        leads = [(*row[:4], adapt(row[4]), *row[5:]) for row in leads]
        chunks = _grouped(leads, journal, 1000)
        jsql = journal_sql("%s", "bench_")

        def once() -> None:
            con.execute("DROP TABLE IF EXISTS bench_journal, bench_leads")
            con.execute("DROP SEQUENCE IF EXISTS bench_journal_seq")
            con.execute("CREATE TABLE bench_leads (LIKE leads INCLUDING ALL)")
            con.execute("CREATE TABLE bench_journal (LIKE journal INCLUDING ALL)")
            con.execute("CREATE SEQUENCE bench_journal_seq")
            for lead_rows, entries in chunks:
                with con.transaction(), con.cursor() as cur:
                    _write_chunk(cur, jsql, lead_sql, lead_rows, entries)

        elapsed = median_time(once, repeat)
        con.execute("DROP TABLE IF EXISTS bench_journal, bench_leads")
        con.execute("DROP SEQUENCE IF EXISTS bench_journal_seq")
    return elapsed


def fresh_raw_sqlite(path: str, ddl: list[str]) -> sqlite3.Connection:
    """A new raw sqlite3 database at `path` (any old one removed) with the
    store's pragmas and the tables `ddl` creates: the raw side of a ratio."""
    remove_sqlite(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA foreign_keys=ON")
    for statement in ddl:
        con.execute(statement)
    return con


def remove_sqlite(path: str) -> None:
    """Delete a SQLite database file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def import_sqlite(
    data: Path, spec: dict[str, Any] = X_IMPORT, repeat: int = IMPORT_RUNS
) -> tuple[float, int, int, float]:
    """The API import into fresh SQLite files, then the raw rewrite of its rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/api.db"

        def fresh_file() -> str:
            remove_sqlite(path)
            return f"sqlite:///{path}"

        t_api, n_leads, n_audit = api_import(fresh_file, data, spec, repeat)
        return t_api, n_leads, n_audit, raw_sqlite_import(path, f"{tmp}/raw.db", repeat)


def import_postgresql(
    data: Path, spec: dict[str, Any] = X_IMPORT, repeat: int = IMPORT_RUNS
) -> tuple[float, int, int, float]:
    """The API import into fresh PostgreSQL databases (`fresh_pg_database`
    drops and creates the same one each run), then the raw rewrite of its rows."""
    url = fresh_pg_database()
    try:
        t_api, n_leads, n_audit = api_import(fresh_pg_database, data, spec, repeat)
        return t_api, n_leads, n_audit, raw_pg_import(url, repeat)
    finally:
        drop_pg_database(url)


def bench_import(data: Path, backends: list[str]) -> None:
    if not data.is_file():
        line(f"skipped: no data file {data} (give it with --data)", "-")
        return
    for backend in backends:
        if backend == "sqlite":
            t_api, n_leads, n_audit, t_raw = import_sqlite(data)
            name, raw = "SQLite", "sqlite3"
        else:
            t_api, n_leads, n_audit, t_raw = import_postgresql(data)
            name, raw = "PostgreSQL", "psycopg"
        line(
            f"{name}: import {data.name}",
            f"{n_leads / t_api:,.0f} rows/s",
            f"{t_api:.2f} s",
        )
        line(
            f"{name}: same {n_leads:,} + {n_audit:,} rows, raw {raw} executemany",
            f"{n_leads / t_raw:,.0f} rows/s",
            f"{t_raw:.2f} s",
        )
        line(f"{name} ratio import / raw", f"{t_raw / t_api:.2f}", "goal >= 0.25")


# ---------------------------------------------------------------- mixed
# The hot path as an application drives it: each lead created through the
# API and at once given three events, each of which moves it a stage
# (bench/flows/mixed.flow); and, for comparison, the same operations grouped
# (every add, then every lead's three events).  The baseline writes the very
# rows the API stored, with the raw driver, one transaction per operation and
# the same statements per operation (read the lead; insert it, or insert the
# event, read the cycle's events, clear the waiting line and update the lead;
# then seal and append the operation's journal entries: the largest seq, the
# lead's head unless it is new, a SHA-256 each, one executemany), into tables
# with the same keys and indexes.
MIXED_FLOW = ROOT / "bench" / "flows" / "mixed.flow"
MIXED_EVENTS = ("e1", "e2", "e3")
MIXED_RUNS = 3  # each figure is the median of this many runs, each on a fresh database


def api_mixed(url: str, n: int, grouped: bool) -> float:
    """Seconds for `n` add_lead and 3n record calls, one transaction each."""
    from saleflow.runtime.engine import Engine

    engine = Engine.open(MIXED_FLOW, db=url, now=START, actor="bench")
    ids = [f"m-{i:05d}" for i in range(n)]
    start = time.perf_counter()
    if grouped:
        for lead_id in ids:
            engine.add_lead(lead_id, email=f"{lead_id}@example.com", company="Example")
        for lead_id in ids:
            for event in MIXED_EVENTS:
                engine.record(lead_id, event)
    else:
        for lead_id in ids:
            engine.add_lead(lead_id, email=f"{lead_id}@example.com", company="Example")
            for event in MIXED_EVENTS:
                engine.record(lead_id, event)
    elapsed = time.perf_counter() - start
    engine.close()
    return elapsed


class _Op:
    """One API operation's rows, as stored: an add (the lead as created and
    its created entry) or an event (the event, its journal entries: the
    event's and the moves it made, the lead after)."""

    __slots__ = ("entries", "event", "lead")

    def __init__(self, lead: tuple[Any, ...], entries: list[RawEntry], event: tuple[Any, ...] | None) -> None:
        self.lead, self.entries, self.event = lead, entries, event


def mixed_ops(con: Any, ph: str, grouped: bool, wrap: Callable[[Any], Any] = lambda v: v) -> list[_Op]:
    """The operations of `api_mixed`, in its order, from the rows it stored
    (`con` a DBAPI connection to its database, `ph` the placeholder)."""
    lead_rows = {row[0]: row for row in con.execute("SELECT * FROM leads ORDER BY id").fetchall()}
    # journal: seq, lead_id, lead_seq, entry, kind, from_stage, stage, ...; one operation's
    # entries are a created or an event entry and the moves that follow it.
    journal: dict[str, list[list[RawEntry]]] = {}
    for row in con.execute("SELECT * FROM journal ORDER BY lead_id, lead_seq").fetchall():
        groups = journal.setdefault(row[1], [])
        if row[3] in ("created", "event") or not groups:
            groups.append([])
        groups[-1].append(RawEntry(row, wrap))
    event_rows: dict[str, list[tuple[Any, ...]]] = {}
    for row in con.execute("SELECT * FROM events ORDER BY id").fetchall():
        event_rows.setdefault(row[1], []).append(row[1:])
    # leads: id, flow, version, stage, fields, cycle, score, entered_at, created_at, updated_at, revision
    adds, events = [], []
    for lead_id, lead in lead_rows.items():
        groups = journal[lead_id]
        created = (*lead[:3], groups[0][0].row[6], *lead[4:10], 0)
        adds.append(_Op(created, groups[0], None))
        moves = []
        for revision, (entries, event) in enumerate(zip(groups[1:], event_rows[lead_id], strict=True), 1):
            moves.append(_Op((lead_id, entries[-1].row[6], lead[6], lead[9], revision), entries, event))
        events.append(moves)
    if grouped:
        return adds + [op for moves in events for op in moves]
    return [op for add, moves in zip(adds, events, strict=True) for op in (add, *moves)]


def _mixed_sql(ph: str, prefix: str = "") -> dict[str, str]:
    def marks(n: int) -> str:
        return ", ".join([ph] * n)

    lead_cols = "id, flow, version, stage, fields, cycle, score, entered_at, created_at, updated_at, revision"
    lock = " FOR UPDATE" if ph == "%s" else ""
    return {
        "lock": f"SELECT {lead_cols} FROM {prefix}leads WHERE id = {ph}{lock}",
        "insert_lead": f"INSERT INTO {prefix}leads ({lead_cols}) VALUES ({marks(11)})",
        "insert_event": f"INSERT INTO {prefix}events (lead_id, name, at, channel, content, count, cycle)"
        f" VALUES ({marks(7)})",
        "events": f"SELECT name, at, channel, content, count, cycle FROM {prefix}events"
        f" WHERE lead_id = {ph} AND cycle = {ph} ORDER BY at, id",
        "unwait": f"DELETE FROM {prefix}waiting WHERE lead_id = {ph}",
        "update": f"UPDATE {prefix}leads SET stage = {ph}, score = {ph}, updated_at = {ph},"
        f" revision = revision + 1 WHERE id = {ph} AND revision = {ph}",
    }


def _replay(
    cur: Any,
    sql: dict[str, str],
    jsql: dict[str, str],
    op: _Op,
    wrap: Callable[[Any], Any] = lambda v: v,
    reads: bool = True,
) -> None:
    """One operation's statements on a cursor inside an open transaction;
    without `reads`, only its writes (no reads, no waiting-line delete; the
    journal rows take their stored places and are hashed all the same)."""
    lead_id = op.lead[0]
    heads: dict[str, tuple[int, str]] | None = None
    if reads:
        cur.execute(sql["lock"], (lead_id,))
        cur.fetchone()
    if op.event is None:
        lead = op.lead
        cur.execute(sql["insert_lead"], (*lead[:4], wrap(lead[4]), *lead[5:]))
        heads = {lead_id: (0, GENESIS)}  # a new lead's head is known
    else:
        event = op.event
        cur.execute(sql["insert_event"], event)
        if reads:
            cur.execute(sql["events"], (lead_id, event[6]))
            cur.fetchall()
        if reads:
            cur.execute(sql["unwait"], (lead_id,))
        _, stage, score, updated_at, revision = op.lead
        cur.execute(sql["update"], (stage, score, updated_at, lead_id, revision - 1))
    if reads:
        write_entries(cur, jsql, op.entries, heads)
    else:
        cur.executemany(jsql["insert"], [e.sealed(e.row[0], e.row[2], e.row[15]) for e in op.entries])


def raw_sqlite_mixed(stored: str, path: str, grouped: bool, reads: bool = True) -> float:
    """The rows of the SQLite database `stored`, written again with raw
    sqlite3 into `path`, one transaction per operation (without `reads`:
    only the inserts and updates)."""
    src = sqlite3.connect(stored)
    ops = mixed_ops(src, "?", grouped)
    ddl = [
        sql
        for (sql,) in src.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name IN ('leads', 'journal', 'events', 'waiting')"
            " AND sql IS NOT NULL ORDER BY rowid"
        )
    ]
    src.close()
    con = fresh_raw_sqlite(path, ddl)
    sql, jsql = _mixed_sql("?"), journal_sql("?")
    cur = con.cursor()
    start = time.perf_counter()
    for op in ops:
        cur.execute("BEGIN IMMEDIATE")
        _replay(cur, sql, jsql, op, reads=reads)
        cur.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def raw_pg_mixed(stored: str, grouped: bool) -> float:
    """The rows of the PostgreSQL database `stored`, written again with raw
    psycopg into copies of its tables, one transaction per operation."""
    import psycopg

    adapt = psycopg.types.json.Jsonb
    with psycopg.connect(stored.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        ops = mixed_ops(con, "%s", grouped, adapt)
        for table in ("waiting", "events", "journal", "leads"):
            con.execute(f"DROP TABLE IF EXISTS bench_{table}")
        con.execute("DROP SEQUENCE IF EXISTS bench_journal_seq")
        for table in ("leads", "journal", "events", "waiting"):
            con.execute(f"CREATE TABLE bench_{table} (LIKE {table} INCLUDING ALL)")
        for table in ("events", "waiting"):
            con.execute(f"ALTER TABLE bench_{table} ADD FOREIGN KEY (lead_id) REFERENCES bench_leads (id)")
        con.execute("CREATE SEQUENCE bench_journal_seq")
        sql, jsql = _mixed_sql("%s", "bench_"), journal_sql("%s", "bench_")
        with con.cursor() as cur:
            start = time.perf_counter()
            for op in ops:
                with con.transaction():
                    _replay(cur, sql, jsql, op, adapt)
            elapsed = time.perf_counter() - start
        for table in ("waiting", "events", "journal", "leads"):
            con.execute(f"DROP TABLE IF EXISTS bench_{table}")
        con.execute("DROP SEQUENCE IF EXISTS bench_journal_seq")
    return elapsed


def mixed_run(backend: str, n: int, grouped: bool) -> tuple[float, float, float | None]:
    """(API seconds, raw seconds, raw seconds writes only) of one run on a
    fresh database (the last on SQLite only)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            t_api = api_mixed(f"sqlite:///{tmp}/api.db", n, grouped)
            t_raw = raw_sqlite_mixed(f"{tmp}/api.db", f"{tmp}/raw.db", grouped)
            return t_api, t_raw, raw_sqlite_mixed(f"{tmp}/api.db", f"{tmp}/writes.db", grouped, reads=False)
    url = fresh_pg_database()
    try:
        return api_mixed(url, n, grouped), raw_pg_mixed(url, grouped), None
    finally:
        drop_pg_database(url)


def bench_mixed(quick: bool, backends: list[str]) -> None:
    n = 150 if quick else 600
    ops = 4 * n
    for backend in backends:
        name, raw = ("SQLite", "sqlite3") if backend == "sqlite" else ("PostgreSQL", "psycopg")
        for grouped in (False, True):
            how = "grouped" if grouped else "interleaved"
            runs = [mixed_run(backend, n, grouped) for _ in range(1 if quick else MIXED_RUNS)]
            t_api = statistics.median(r[0] for r in runs)
            t_raw = statistics.median(r[1] for r in runs)
            ratios = sorted(r[1] / r[0] for r in runs)
            what = "all adds, then the events" if grouped else "each add followed by its 3 events"
            line(
                f"{name}: {n} leads {how} ({what}), API",
                f"{t_api / ops * 1000:.3f} ms/op",
                f"{ops / t_api:,.0f} ops/s",
            )
            line(
                f"{name}: same rows and statements, raw {raw}",
                f"{t_raw / ops * 1000:.3f} ms/op",
                f"{ops / t_raw:,.0f} ops/s",
            )
            spread = f"runs {ratios[0]:.2f}-{ratios[-1]:.2f}"
            line(
                f"{name} ratio API / raw, {how}", f"{t_raw / t_api:.2f}", f"goal >= 0.25, aim 0.5 ({spread})"
            )
            writes = [r[2] for r in runs if r[2] is not None]
            if writes:
                t_writes = statistics.median(writes)
                line(
                    f"{name}: same rows, raw {raw} writes only (no reads)",
                    f"{t_writes / ops * 1000:.3f} ms/op",
                    f"ratio {t_writes / t_api:.2f}",
                )


# --------------------------------------------------------------- import3
# The import of a generated CSV whose every lead passes three gates at once
# (bench/flows/gates.flow: one create and three automatic moves, four journal
# entries per lead), against raw executemany of the same lead and journal rows.
GATES_FLOW = ROOT / "bench" / "flows" / "gates.flow"
IMPORT3_RUNS = 3


def gates_csv(path: Path, n: int, seed: int = 3) -> None:
    """`n` leads for bench/flows/gates.flow, each passing all three gates."""
    rng = random.Random(seed)
    industries = ("saas", "finance", "retail", "manufacturing", "other")
    with open(path, "w", newline="", encoding="utf-8") as out:
        out.write("Lead ID,Email,Company,Employees,Industry,Budget\n")
        for i in range(n):
            employees = rng.choice((12, 40, 200, 800, 5000))
            budget = rng.choice((5000, 12000, 50000, 250000))
            industry = rng.choice(industries)
            out.write(f"L{i:07d},lead{i}@example.com,Company {i % 997},{employees},{industry},{budget}\n")


GATES_IMPORT = {"flow_path": GATES_FLOW, "flow": "bench_gates", "id_column": "Lead ID", "mapping": {}}


def bench_import3(quick: bool, backends: list[str]) -> None:
    n = 5_000 if quick else 50_000
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "gates.csv"
        gates_csv(data, n)
        for backend in backends:
            if backend == "sqlite":
                t_api, n_leads, n_audit, t_raw = import_sqlite(data, GATES_IMPORT, IMPORT3_RUNS)
                name, raw = "SQLite", "sqlite3"
            else:
                t_api, n_leads, n_audit, t_raw = import_postgresql(data, GATES_IMPORT, IMPORT3_RUNS)
                name, raw = "PostgreSQL", "psycopg"
            line(f"{name}: import {n:,} leads x 3 gates", f"{n_leads / t_api:,.0f} leads/s", f"{t_api:.2f} s")
            line(
                f"{name}: same {n_leads:,} + {n_audit:,} rows, raw {raw} executemany",
                f"{n_leads / t_raw:,.0f} leads/s",
                f"{t_raw:.2f} s",
            )
            line(f"{name} ratio import / raw", f"{t_raw / t_api:.2f}", "goal >= 0.25")


def bench_simulate(quick: bool, backends: list[str]) -> None:
    """bench/simulate.py: simulate of the same flow vs report, 100,000 leads."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import simulate as sim_bench  # bench/simulate.py

    sim_bench.run(10_000 if quick else 100_000, backends)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="language,ops,mixed,memory,import,import3,report,simulate")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--data", type=Path, default=X_DATA, help="the X Education CSV (import)")
    args = parser.parse_args()
    sections = args.only.split(",")
    backends = args.backends.split(",")
    print(
        f"saleflow bench — {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    if "language" in sections:
        print("language")
        bench_language(args.quick)
    if "ops" in sections:
        print("operations")
        bench_ops(args.quick, backends)
    if "mixed" in sections:
        print("mixed: add_lead then three events per lead")
        bench_mixed(args.quick, backends)
    if "memory" in sections:
        print("memory")
        bench_memory(args.quick, backends)
    if "import" in sections:
        print("import")
        bench_import(args.data, backends)
    if "import3" in sections:
        print("import3: generated CSV, every lead through three gates")
        bench_import3(args.quick, backends)
    if "report" in sections:
        print("report")
        bench_report(args.quick, backends)
    if "simulate" in sections:
        print("simulate: replaying the_model's recorded journal against report on the same data")
        bench_simulate(args.quick, backends)


if __name__ == "__main__":
    main()
