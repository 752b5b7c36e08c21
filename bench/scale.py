"""saleflow at scale on SQLite (issue 12 item 5): listings and walks over
100,000 and 1,000,000 leads, each command a process of its own.

    python bench/scale.py                       # 100,000 and 1,000,000 leads
    python bench/scale.py --sizes 100000        # one size
    python bench/scale.py --root /path/to/checkout   # another saleflow's code (before/after)

The leads are written with bulk SQL (raw sqlite3 executemany, 50,000 per
transaction) into a database whose schema `saleflow deploy` created, not
through the engine (no ANALYZE unless `--analyze`, as in a real database): a third in each stage of bench/flows/scale.flow
(new, working, done).  Then, each run as ``python -m saleflow``:

- ``leads --flow scale --stage working --json``
- ``leads --json`` and ``leads --jsonl``
- ``tick --flow scale`` (since due times, tick visits only the leads due:
  these rows are written with no due time, as the engine writes leads of a
  flow whose score windows see no event, so none is due and this times the
  due index's empty walk; bench/due.py measures tick with leads due)
- ``import`` of a CSV of N new ids (``--import``; a 1,000,000-row import
  takes minutes)

For each: the time to the first byte of output, the wall time, and the
process's own peak RSS (``wait4``).  A command still running after
``--timeout`` seconds is killed and reported as such.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "bench" / "flows" / "scale.flow"
NOW = "2024-06-01T09:00:00+00:00"
STAGES = ("new", "working", "done")


def seed(path: str, n: int, root: Path, analyze: bool = False) -> float:
    """A database of `n` leads of flow "scale"; returns the seconds it took."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run(
        [sys.executable, "-m", "saleflow", "--db", f"sqlite:///{path}", "deploy", str(FLOW)],
        check=True,
        env=env,
        capture_output=True,
        cwd=root,  # `python -m` puts the working folder first on the path
    )
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    at = "2024-05-01T09:00:00.000000+00:00"
    step = 50_000
    for first in range(0, n, step):
        rows = [
            (f"s-{i:08d}", "scale", 1, STAGES[i % 3], "{}", 1, at, at, at, 0.0, 1)
            for i in range(first, min(n, first + step))
        ]
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO leads (id, flow, version, stage, fields, cycle, entered_at, created_at, updated_at, "
            "score, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        con.execute("COMMIT")
    if analyze:  # a real database has no statistics unless someone ran ANALYZE
        con.execute("ANALYZE")
    con.close()
    return time.perf_counter() - start


def measure(args: list[str], root: Path, timeout: float) -> tuple[float | None, float | None, int, int]:
    """(seconds to the first byte, seconds in all or None if killed, peak RSS
    in kB, bytes written) of ``python -m saleflow ARGS``."""
    env = {**os.environ, "PYTHONPATH": str(root), "SALEFLOW_NOW": NOW}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "saleflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=root,  # `python -m` puts the working folder first on the path
    )
    assert proc.stdout is not None
    first: float | None = None
    written = 0
    killed = False
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    while True:
        if time.perf_counter() - start > timeout:
            proc.kill()
            killed = True
            break
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            if proc.poll() is not None:
                break
            time.sleep(0.002)
            continue
        if not chunk:
            break
        if first is None:
            first = time.perf_counter() - start
        written += len(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = None if killed else time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if not killed and proc.returncode != 0:
        raise SystemExit(f"saleflow {' '.join(args)} failed with exit code {proc.returncode}")
    return first, elapsed, usage.ru_maxrss, written


def fmt(value: float | None, killed: str = "killed") -> str:
    return killed if value is None else f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--root", type=Path, default=ROOT, help="the saleflow checkout whose code runs")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a command is killed")
    parser.add_argument("--import", dest="do_import", action="store_true", help="time an import of N ids too")
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE after seeding")
    parser.add_argument("--skip", default="", help="commands to skip: tick,leads,json,jsonl,stage")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(
        f"saleflow bench scale — {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, code {args.root}"
    )
    for n in (int(size) for size in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/scale.db"
            seconds = seed(path, n, args.root, args.analyze)
            print(f"{n:,} leads seeded in {seconds:.1f} s ({os.path.getsize(path) / 1e6:,.0f} MB)")
            db = ["--db", f"sqlite:///{path}"]
            commands = [
                (
                    "stage",
                    "leads --flow scale --stage working --json",
                    ["leads", "--flow", "scale", "--stage", "working", "--json"],
                ),
                ("json", "leads --json", ["leads", "--json"]),
                ("jsonl", "leads --jsonl", ["leads", "--jsonl"]),
                ("tick", "tick --flow scale", ["tick", "--flow", "scale"]),
            ]
            for key, name, command in commands:
                if key in skip:
                    continue
                first, total, rss, written = measure([*db, *command], args.root, args.timeout)
                print(
                    f"  {name:<46} first byte {fmt(first, '-'):>9}  all {fmt(total):>9}  "
                    f"peak RSS {rss / 1024:,.0f} MB  ({written / 1e6:,.1f} MB out)"
                )
            if args.do_import:
                data = f"{tmp}/ids.csv"
                with open(data, "w", newline="") as out:
                    writer = csv.writer(out)
                    writer.writerow(["id", "ready"])
                    writer.writerows((f"i-{i:08d}", "no") for i in range(n))
                command = ["import", data, "--flow", "scale", "--id-column", "id"]
                _, total, rss, _ = measure([*db, *command], args.root, args.timeout)
                print(
                    f"  {'import of ' + format(n, ',') + ' new ids':<46} {'':>20}  all {fmt(total):>9}  peak RSS {rss / 1024:,.0f} MB"
                )


if __name__ == "__main__":
    main()
