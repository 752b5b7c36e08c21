"""saleflow benchmarks: ratios against baselines measured in the same run.

    python bench/run.py            # everything (takes a few minutes)
    python bench/run.py --quick    # smaller sizes, for a smoke run
    python bench/run.py --only language,ops

Sections
- language: parse + check + compile of flows/the_model.flow in-process
  (goal <= 20 ms), and the wall time of `saleflow check` over the wall time
  of `python -c "import sqlalchemy, lark, transitions, click"` (goal <= 1.5).
- ops: events recorded through the API, one transaction each, against raw
  sqlite3 (or raw psycopg) writing the same rows one transaction per
  operation (goal >= 0.25).
- memory: peak RSS of `advance --all` at 10,000 and 100,000 leads
  (goal: 100k within 1.5x of 10k).

Results and the machine are recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
    from saleflow.check import check
    from saleflow.compile import compile_flow
    from saleflow.parse import load_flow

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


# ------------------------------------------------------------------ ops
START = datetime(2026, 1, 1, tzinfo=UTC)


def api_ops(url: str, leads: int, ops: int) -> float:
    from saleflow.engine import Engine

    engine = Engine.open(FLOW, db=url, now=START, actor="bench")
    engine.add_leads(((f"lead-{i}", {"company": f"c{i}"}) for i in range(leads)), chunk=500)
    start = time.perf_counter()
    for i in range(ops):
        engine.record(f"lead-{i % leads}", "product_login", at=START + timedelta(seconds=i))
    elapsed = time.perf_counter() - start
    engine.close()
    return elapsed


def raw_sqlite_ops(path: str, leads: int, ops: int) -> float:
    """The same rows by hand: per operation, read the lead, read its events,
    insert the event, update the lead; one transaction each."""
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
    con.executemany(
        "INSERT INTO leads VALUES (?, 'awareness', '{}', 1, 0, 0, '')", [(f"lead-{i}",) for i in range(leads)]
    )
    start = time.perf_counter()
    for i in range(ops):
        lead = f"lead-{i % leads}"
        at = (START + timedelta(seconds=i)).isoformat()
        con.execute("BEGIN IMMEDIATE")
        con.execute("SELECT * FROM leads WHERE id = ?", (lead,)).fetchone()
        con.execute(
            "INSERT INTO events (lead_id, name, at, channel, content, count, cycle) VALUES (?,?,?,?,?,?,?)",
            (lead, "product_login", at, "product", None, 1, 1),
        )
        con.execute("SELECT name, at, count FROM events WHERE lead_id = ? AND cycle = 1", (lead,)).fetchall()
        con.execute(
            "UPDATE leads SET score = ?, revision = revision + 1, updated_at = ? WHERE id = ? AND revision >= 0",
            (0, at, lead),
        )
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def raw_pg_ops(leads: int, ops: int) -> float:
    import psycopg

    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS bench_events, bench_leads")
        con.execute(
            "CREATE TABLE bench_leads (id TEXT PRIMARY KEY, stage TEXT, fields JSONB, cycle INT, score REAL,"
            " revision INT, updated_at TIMESTAMPTZ)"
        )
        con.execute(
            "CREATE TABLE bench_events (id BIGSERIAL PRIMARY KEY, lead_id TEXT, name TEXT, at TIMESTAMPTZ,"
            " channel TEXT, content TEXT, count INT, cycle INT)"
        )
        con.execute("CREATE INDEX ON bench_events (lead_id, cycle)")
        with con.cursor() as cur:
            cur.executemany(
                "INSERT INTO bench_leads VALUES (%s, 'awareness', '{}', 1, 0, 0, now())",
                [(f"lead-{i}",) for i in range(leads)],
            )
        start = time.perf_counter()
        for i in range(ops):
            lead = f"lead-{i % leads}"
            at = START + timedelta(seconds=i)
            with con.transaction():
                con.execute("SELECT * FROM bench_leads WHERE id = %s FOR UPDATE", (lead,)).fetchone()
                con.execute(
                    "INSERT INTO bench_events (lead_id, name, at, channel, content, count, cycle)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                    (lead, "product_login", at, "product", None, 1, 1),
                )
                con.execute(
                    "SELECT name, at, count FROM bench_events WHERE lead_id = %s AND cycle = 1", (lead,)
                ).fetchall()
                con.execute(
                    "UPDATE bench_leads SET score = %s, revision = revision + 1, updated_at = %s WHERE id = %s",
                    (0, at, lead),
                )
        elapsed = time.perf_counter() - start
        con.execute("DROP TABLE IF EXISTS bench_events, bench_leads")
    return elapsed


def fresh_pg_database() -> str:
    import psycopg

    name = f"saleflow_bench_{os.getpid()}"
    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
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
            t_raw = raw_sqlite_ops(f"{tmp}/raw.db", leads, ops)
        line(f"SQLite: {ops} events via Engine.record (1 tx each)", f"{ops / t_api:,.0f} ops/s")
        line("SQLite: same rows via raw sqlite3 (1 tx each)", f"{ops / t_raw:,.0f} ops/s")
        line("SQLite ratio API / raw", f"{t_raw / t_api:.2f}", "goal >= 0.25")
    if "postgresql" in backends:
        url = fresh_pg_database()
        try:
            t_api = api_ops(url, leads, ops)
            t_raw = raw_pg_ops(leads, ops)
        finally:
            drop_pg_database(url)
        line(f"PostgreSQL: {ops} events via Engine.record (1 tx each)", f"{ops / t_api:,.0f} ops/s")
        line("PostgreSQL: same rows via raw psycopg (1 tx each)", f"{ops / t_raw:,.0f} ops/s")
        line("PostgreSQL ratio API / raw", f"{t_raw / t_api:.2f}", "goal >= 0.25")


# --------------------------------------------------------------- memory
SEED = """
import sys
from saleflow.engine import Engine
url, n = sys.argv[1], int(sys.argv[2])
engine = Engine.open(sys.argv[3], db=url, now="2026-01-01T00:00:00Z", actor="bench")
rows = ((f"lead-{i:07d}", {"company": f"c{i}"}) for i in range(n))
engine.add_leads(rows, chunk=1000)
engine.close()
"""

ADVANCE = """
import resource, sys, time, json
from saleflow.engine import Engine
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


def bench_memory(quick: bool, backends: list[str]) -> None:
    small, large = (2_000, 20_000) if quick else (10_000, 100_000)
    for backend in backends:
        results = {}
        for n in (small, large):
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    results[n] = advance_all_memory(f"sqlite:///{tmp}/m.db", n)
            else:
                url = fresh_pg_database()
                try:
                    results[n] = advance_all_memory(url, n)
                finally:
                    drop_pg_database(url)
            r = results[n]
            line(
                f"{backend}: advance --all over {n:,} leads",
                f"{r['peak_kb'] / 1024:.0f} MB",
                f"{r['seconds']:.1f} s, {n / r['seconds']:,.0f} leads/s",
            )
        ratio = results[large]["peak_kb"] / results[small]["peak_kb"]
        line(f"{backend}: peak RSS {large:,} / {small:,}", f"{ratio:.2f}", "goal <= 1.5")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="language,ops,memory")
    parser.add_argument("--backends", default="sqlite,postgresql")
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
    if "memory" in sections:
        print("memory")
        bench_memory(args.quick, backends)


if __name__ == "__main__":
    main()
