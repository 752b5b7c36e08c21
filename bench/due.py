"""Due times (issue 12 item 1): `tick` costs in proportion to the leads due,
not to all leads.

    python bench/due.py                          # the whole measurement
    python bench/due.py --sizes 100000           # one size
    python bench/due.py --backends sqlite        # no PostgreSQL part

The number of due leads is held fixed (`--due`, 1,000) while the database
grows (`--sizes`, 100,000 and 1,000,000 leads of bench/flows/due.flow), on
SQLite.  At each size:

- ``tick`` (``python -m saleflow tick --json``, its own process): visits the
  due leads only, through the due index;
- the baseline, a full scan: ``Engine.tick(every=True)`` in its own process
  on a copy of the same database, which visits every lead as tick did before
  due times (and must make the same moves and record the same breaches).

Printed: both times at each size and the ratios of the largest size to the
smallest (the issue asks for tick < 2x while the database grows 10x; a full
scan grows with it).  Then ``tick`` at the largest size with 1 % of the
leads due, on SQLite and on PostgreSQL (`SALEFLOW_BENCH_PG`; a scratch
database is created and dropped, loaded with COPY).

The leads are written with bulk SQL into a schema ``saleflow deploy``
created (as bench/scale.py does), with the due time the engine would store:
a due lead sits in ``new`` (SLA 2 days; ``working`` opens after 3 days in
stage) since ten days, so ticking it records the SLA breach and moves it to
``working``; of the others, half sit in ``new`` since a day (due when the
SLA runs out, tomorrow) and half in ``done`` (manual; never due).  Due
leads are spread evenly over the id range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "bench" / "flows" / "due.flow"
NOW = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
PG_URL = os.environ.get("SALEFLOW_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
COLUMNS = (
    "id, flow, version, stage, fields, cycle, entered_at, created_at, updated_at, score, revision, due_at"
)
SLA = timedelta(days=2)
MICRO = timedelta(microseconds=1)


def text(moment: datetime) -> str:
    """A time as the SQLite schema stores it."""
    return moment.isoformat(timespec="microseconds")


def rows(n: int, due: int) -> Iterator[tuple[object, ...]]:
    """The leads: `due` of them due at NOW, spread evenly over the ids."""
    every = max(1, n // due) if due else n + 1
    long_ago = NOW - timedelta(days=10)
    yesterday = NOW - timedelta(days=1)
    for i in range(n):
        if i % every == 0 and i // every < due:
            entered, stage, due_at = long_ago, "new", long_ago + SLA + MICRO
        elif i % 2:
            entered, stage, due_at = yesterday, "new", yesterday + SLA + MICRO
        else:
            entered, stage, due_at = long_ago, "done", None
        yield (f"d-{i:08d}", "due", 1, stage, "{}", 1, entered, entered, entered, 0.0, 1, due_at)


def deploy(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "saleflow", "--db", url, "deploy", str(FLOW)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        cwd=ROOT,
    )


def seed_sqlite(path: str, n: int, due: int) -> float:
    start = time.perf_counter()
    deploy(f"sqlite:///{path}")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    batch: list[tuple[object, ...]] = []
    insert = f"INSERT INTO leads ({COLUMNS}) VALUES ({', '.join('?' * 12)})"

    def flush() -> None:
        con.execute("BEGIN")
        con.executemany(insert, batch)
        con.execute("COMMIT")
        batch.clear()

    for row in rows(n, due):
        batch.append(tuple(text(v) if isinstance(v, datetime) else v for v in row))
        if len(batch) == 50_000:
            flush()
    if batch:
        flush()
    con.close()
    return time.perf_counter() - start


def seed_pg(url: str, n: int, due: int) -> float:
    import psycopg

    start = time.perf_counter()
    deploy(url)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        with con.cursor() as cur, cur.copy(f"COPY leads ({COLUMNS}) FROM STDIN") as copy:
            for row in rows(n, due):
                copy.write_row(row)
        con.execute("ANALYZE leads")
    return time.perf_counter() - start


def run(args: list[str], code: str | None = None) -> tuple[float, dict[str, int]]:
    """Seconds and the JSON printed by ``python -m saleflow ARGS`` (or by
    the Python `code`), in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SALEFLOW_NOW": NOW.isoformat()}
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "saleflow", *args]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, env=env, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, json.loads(done.stdout)


def tick(url: str) -> tuple[float, dict[str, int]]:
    return run(["--db", url, "tick", "--json"])


FULL_SCAN = """\
import json, os, sys
from saleflow import Engine
with Engine.open(db=sys.argv[1], now=os.environ["SALEFLOW_NOW"]) as engine:
    result = engine.tick(every=True)
print(json.dumps({"moves": result.moves, "sla_breaches": result.sla_breaches}))
"""


def full_scan(url: str) -> tuple[float, dict[str, int]]:
    return run([url], FULL_SCAN)


def fresh_pg_database() -> str:
    import psycopg

    name = f"saleflow_bench_due_{os.getpid()}"
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        con.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--due", type=int, default=1000, help="leads due, held fixed")
    parser.add_argument("--percent", type=float, default=1.0, help="leads due in the last part, in %%")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--no-scan", action="store_true", help="skip the full-scan baseline")
    parser.add_argument("--no-growth", action="store_true", help="only the last part (1 %% due)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    backends = args.backends.split(",")
    print(
        f"saleflow bench due — {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    ticks: dict[int, float] = {}
    scans: dict[int, float] = {}
    for n in [] if args.no_growth else sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/due.db"
            seconds = seed_sqlite(path, n, args.due)
            print(f"SQLite, {n:,} leads, {args.due:,} due: seeded in {seconds:.1f} s", flush=True)
            if not args.no_scan:
                shutil.copy(path, f"{tmp}/scan.db")
            ticks[n], ticked = tick(f"sqlite:///{path}")
            print(f"  tick (due leads only)        {ticks[n]:8.2f} s   {ticked}", flush=True)
            if not args.no_scan:
                scans[n], scanned = full_scan(f"sqlite:///{tmp}/scan.db")
                same = "same result" if scanned == ticked else "DIFFERENT RESULT"
                print(f"  full scan (every lead)       {scans[n]:8.2f} s   {scanned}  {same}", flush=True)
    if len(sizes) > 1 and not args.no_growth:
        small, large = min(sizes), max(sizes)
        print(
            f"{large:,} / {small:,} leads ({large / small:.0f}x), {args.due:,} due: "
            f"tick {ticks[large] / ticks[small]:.2f}x (goal < 2x)"
            + (f", full scan {scans[large] / scans[small]:.2f}x" if scans else "")
        )
    n = max(sizes)
    due = round(n * args.percent / 100)
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/due.db"
            seconds = seed_sqlite(path, n, due)
            print(
                f"SQLite, {n:,} leads, {due:,} due ({args.percent:g} %): seeded in {seconds:.1f} s",
                flush=True,
            )
            seconds, ticked = tick(f"sqlite:///{path}")
            print(f"  tick                         {seconds:8.2f} s   {ticked}", flush=True)
    if "postgresql" in backends:
        url = fresh_pg_database()
        try:
            seconds = seed_pg(url, n, due)
            print(
                f"PostgreSQL, {n:,} leads, {due:,} due ({args.percent:g} %): loaded in {seconds:.1f} s",
                flush=True,
            )
            seconds, ticked = tick(url)
            print(f"  tick                         {seconds:8.2f} s   {ticked}", flush=True)
        finally:
            drop_pg_database(url)


if __name__ == "__main__":
    main()
