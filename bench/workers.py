"""Workers sharing one PostgreSQL database (issue 12 item 2, SPEC §8).

    python bench/workers.py                     # 100,000 due leads; 1, 2 and 4 workers
    python bench/workers.py --leads 20000 --workers 1,2 --runs 1

A database of N leads of bench/flows/workers.flow, every one due (a day in
stage "a": one move to "b" and one SLA breach each), is built once with bulk
SQL (COPY into `leads`, in a database whose schema `saleflow deploy`
created; no journal rows, as after a bulk load) and then copied for every
run (`CREATE DATABASE … TEMPLATE`), so every run starts from the same rows.
A run starts K processes of ``saleflow worker --once --batch B`` at once
and times them from the first start to the last exit.  Per run it prints
the wall time, the speed-up over one worker *measured in the same
invocation*, the `moved` journal entries (which must equal N for every K:
the bench fails otherwise), how many leads each worker took (from its log
lines), and the CPU seconds of the workers and of the PostgreSQL server's processes
(from /proc: every session's, so other load on the server counts too)
against the wall time, and the load average when the run started.  A `tick` of
the same database (one process, every lead) is timed too, as a reference.

PostgreSQL at `SALEFLOW_BENCH_PG` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); scratch
databases are created and dropped.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "bench" / "flows" / "workers.flow"
PG_URL = os.environ.get("SALEFLOW_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CREATED = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
NOW = CREATED + timedelta(days=2)
CHUNK_LINE = re.compile(r"worker: ([\d,]+) leads?, ")


def _dsn(database: str | None = None) -> str:
    url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    return url if database is None else url.rsplit("/", 1)[0] + "/" + database


def _sa_url(database: str) -> str:
    return PG_URL.rsplit("/", 1)[0] + "/" + database


def _admin(sql: str) -> None:
    with psycopg.connect(_dsn(), autocommit=True) as con:
        con.execute(sql)


def _saleflow(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saleflow", "--db", _sa_url(database), "--now", NOW.isoformat(), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )


def seed(name: str, n: int) -> float:
    """The template database `name`: `n` leads in stage "a", all due; seconds taken."""
    start = time.perf_counter()
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    _saleflow(name, "deploy", str(FLOW))
    with psycopg.connect(_dsn(name), autocommit=True) as con:
        columns = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'leads'"
            )
        }
        names = [
            "id",
            "flow",
            "version",
            "stage",
            "fields",
            "cycle",
            "entered_at",
            "created_at",
            "updated_at",
            "score",
            "revision",
        ]
        due = "due_at" in columns  # the due-time index (issue 12 item 1), where this code has it
        if due:
            names.append("due_at")
        at = CREATED.isoformat()
        then = (CREATED + timedelta(days=1)).isoformat()
        buffer = io.StringIO()
        for i in range(n):
            row = [f"w-{i:08d}", "work", "1", "a", "{}", "1", at, at, at, "0", "1"]
            if due:
                row.append(then)
            buffer.write("\t".join(row) + "\n")
        with con.cursor() as cur, cur.copy(f"COPY leads ({', '.join(names)}) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        con.execute("VACUUM ANALYZE leads")
    return time.perf_counter() - start


def run_workers(database: str, k: int, batch: int) -> tuple[float, float, list[int]]:
    """(wall seconds, CPU seconds of the workers, leads each took) of K
    `worker --once` processes started together."""
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"w{j}.log" for j in range(k)]
        command = [
            sys.executable, "-m", "saleflow", "--db", _sa_url(database), "--now", NOW.isoformat(),
            "worker", "--once", "--batch", str(batch),
        ]  # fmt: skip
        start = time.perf_counter()
        procs = []
        for log in logs:
            with log.open("wb") as err:
                procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT))
        cpu = 0.0
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
        wall = time.perf_counter() - start
        for proc, log in zip(procs, logs, strict=True):
            if proc.returncode != 0:
                raise SystemExit(f"a worker failed ({proc.returncode}): {log.read_text()[-2000:]}")
        taken = [
            sum(
                int(m.group(1).replace(",", ""))
                for m in map(CHUNK_LINE.search, log.read_text().splitlines())
                if m
            )
            for log in logs
        ]
    return wall, cpu, taken


def server_cpu() -> float:
    """CPU seconds used so far by the local PostgreSQL server's processes
    (every session's, other users' too), from /proc; 0 where there is none.
    A session's process ends with its connection: the postmaster's reaped
    children's time (cutime, cstime) keeps what those used."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(postgres"):
            fields = rest.split()
            total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / tick


def moved(database: str) -> int:
    with psycopg.connect(_dsn(database), autocommit=True) as con:
        row = con.execute("SELECT count(*) FROM journal WHERE entry = 'moved'").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=2, help="runs per number of workers (median shown)")
    args = parser.parse_args()
    counts = [int(k) for k in args.workers.split(",")]
    with psycopg.connect(_dsn(), autocommit=True) as con:
        server = con.execute("SHOW server_version").fetchone()
    print(
        f"saleflow bench workers — {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, PostgreSQL {server[0] if server else '?'}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}"
    )
    template = f"saleflow_bench_workers_{os.getpid()}"
    seconds = seed(template, args.leads)
    print(f"{args.leads:,} due leads seeded in {seconds:.1f} s; --batch {args.batch}")
    walls: dict[int | str, list[float]] = {}
    failed = False
    try:
        order = [("tick", 0)] + [("workers", k) for k in counts]
        for run in range(args.runs):
            for kind, k in (
                order if run % 2 == 0 else list(reversed(order))
            ):  # alternate, so drift hits both ends
                name = f"{template}_run"
                _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                try:
                    if kind == "tick":
                        start = time.perf_counter()
                        _saleflow(name, "tick")
                        wall = time.perf_counter() - start
                        walls.setdefault("tick", []).append(wall)
                        print(
                            f"  run {run + 1}: tick (one process, every lead) {wall:7.1f} s, moved {moved(name):,}"
                        )
                        continue
                    load = os.getloadavg()[0]
                    before = server_cpu()
                    wall, cpu, taken = run_workers(name, k, args.batch)
                    server = server_cpu() - before
                    count = moved(name)
                    walls.setdefault(k, []).append(wall)
                    ok = count == args.leads and sum(taken) == args.leads
                    failed |= not ok
                    print(
                        f"  run {run + 1}: {k} worker{'s' if k > 1 else ' '} {wall:7.1f} s wall, "
                        f"CPU: workers {cpu:.1f} s ({cpu / wall:.2f} cores), PostgreSQL {server:.1f} s "
                        f"({server / wall:.2f} cores), load {load:.1f}; moved {count:,}"
                        f"{'' if ok else ' — NOT the number due!'}; leads per worker {', '.join(f'{t:,}' for t in taken)}"
                    )
                finally:
                    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    base = statistics.median(walls[counts[0]])
    print(
        f"median wall time of {args.runs} run(s), speed-up against {counts[0]} worker(s) of this invocation:"
    )
    if "tick" in walls:
        tick = statistics.median(walls["tick"])
        print(f"  tick         {tick:7.1f} s   ({base / tick:.2f}x of one worker's speed)")
    for k in counts:
        wall = statistics.median(walls[k])
        print(f"  {k} worker{'s' if k > 1 else ' '}    {wall:7.1f} s   speed-up {base / wall:.2f}x")
    if failed:
        raise SystemExit("the moved entries did not equal the leads due for every number of workers")


if __name__ == "__main__":
    main()
