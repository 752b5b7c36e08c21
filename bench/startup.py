"""How long a CLI call takes before and while it does its work, against the
imports it cannot avoid, measured in the same run.

    python bench/startup.py                 # 21 rounds
    python bench/startup.py --runs 41
    python bench/startup.py --tree ../old   # the saleflow of another source tree

Each round runs, one after the other in the same order, fresh processes of

- baseline: `python -c "import sqlalchemy, click"` (what any database command
  of saleflow must import);
- `saleflow --db sqlite:///small.db show LEAD` (a lead of flows/the_model.flow
  with a few events; the goal of issue 10 is at most 1.3x the baseline);
- `saleflow --help`;
- `saleflow check flows/the_model.flow`.

It prints, per command, the median wall time and the median CPU time (user
+ system of the child) and each over the baseline's.  On a shared machine
the CPU ratio moves less than the wall one; both are printed.

The children run as an installed saleflow does: with bytecode (the variable
PYTHONDONTWRITEBYTECODE, if set, is dropped for them, else every run would
compile saleflow's modules anew, which an installed package never does),
and with a cache folder of their own (SALEFLOW_CACHE_DIR), warmed by two
untimed rounds, as a user's is after the first run.  `--tree` puts another
source tree first on PYTHONPATH (the "before" figures of bench/README.md);
the children run in a scratch folder, so that `python -m saleflow` does not
pick up a `saleflow/` of the current directory instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "the_model.flow"
PY = sys.executable


def saleflow_command(tree: Path | None) -> list[str]:
    """The `saleflow` script beside this Python (as installed), or `-m`."""
    script = Path(PY).parent / "saleflow"
    if tree is None and script.is_file():
        return [str(script)]
    return [PY, "-m", "saleflow"]


def child_env(cache: Path, tree: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SALEFLOW_DB")}
    env["SALEFLOW_CACHE_DIR"] = str(cache)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one child process, run in `cwd`; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def small_database(folder: Path, saleflow: list[str], env: dict[str, str]) -> str:
    """A SQLite database with the_model deployed and lead LEAD in it."""
    url = f"sqlite:///{folder / 'small.db'}"
    steps = [
        ["deploy", str(FLOW)],
        [
            "lead",
            "add",
            "LEAD",
            "--flow",
            "the_model",
            "--set",
            "email=a@example.com",
            "--set",
            "employees=40",
        ],
        ["event", "LEAD", "web_visit", "--count", "3"],
        ["event", "LEAD", "content_download"],
    ]
    for step in steps:
        done = subprocess.run(
            [*saleflow, "--db", url, *step], env=env, cwd=folder, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"setting up the database failed: {done.stderr}")
    return url


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores), Python {platform.python_version()}, "
        f"load average {load[0]:.1f}"
        if load[0] != "?"
        else f"{platform.node()}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="timed rounds (default 21)")
    parser.add_argument("--tree", type=Path, default=None, help="run the saleflow of this source tree")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="saleflow-startup-") as scratch:
        folder = Path(scratch)
        cache = folder / "cache"
        env = child_env(cache, args.tree)
        saleflow = saleflow_command(args.tree)
        url = small_database(folder, saleflow, env)
        commands = {
            "import sqlalchemy, click (baseline)": [PY, "-c", "import sqlalchemy, click"],
            "saleflow show LEAD (small.db)": [*saleflow, "--db", url, "show", "LEAD"],
            "saleflow --help": [*saleflow, "--help"],
            "saleflow check the_model.flow": [*saleflow, "check", str(FLOW)],
        }
        for _ in range(2):  # warm: bytecode written, cache filled, files in the page cache
            for command in commands.values():
                run(command, env, folder)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load_before = machine()
        for _ in range(args.runs):
            for name, command in commands.items():
                wall, cpu = run(command, env, folder)
                walls[name].append(wall)
                cpus[name].append(cpu)

    print(f"startup, {args.runs} rounds, {started}, {load_before}")
    print(
        f"saleflow from {args.tree.resolve() if args.tree else 'the installed package'}; after: {machine()}"
    )
    base_wall = statistics.median(walls[next(iter(commands))])
    base_cpu = statistics.median(cpus[next(iter(commands))])
    print(f"{'command':<38} {'wall ms':>8} {'ratio':>6} {'CPU ms':>8} {'ratio':>6}")
    for name in commands:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(
            f"{name:<38} {wall * 1000:8.0f} {wall / base_wall:6.2f} {cpu * 1000:8.0f} {cpu / base_cpu:6.2f}"
        )
    print("goal: show <= 1.30 x the baseline")


if __name__ == "__main__":
    main()
