"""`deploy --dry-run` and `migrate` on many leads: time and peak memory.

    .venv/bin/python bench/migrate.py [N…] [--db URL]

Builds N leads of a small flow (a third of them open version 2's lower gate,
a tenth sit in a stage version 2 maps away), then measures the dry run
(Python's peak allocation, tracemalloc, should not grow with N: the dry run
streams) and the migration itself.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

from saleflow import Engine
from saleflow.language.parse import parse_flow
from saleflow.runtime.migration import dry_run, migrate_flow, plan_deploy, target_flow
from saleflow.store import open_store

V1 = """\
flow bench version 1
field owner text
field tier int default 0
team sales "Sales" {
  stage new        initial
  stage working    when owner is set
  stage qualified  when tier >= 3
  stage won        manual
}
stage parked
"""
V2 = V1.replace("version 1", "version 2").replace("tier >= 3", "tier >= 2").replace("stage parked\n", "")


def build(url: str, n: int) -> None:
    with Engine(open_store(url), now="2026-03-01T10:00:00Z", actor="bench") as engine:
        engine.deploy(parse_flow(V1, "v1.flow"))
        rows = ((f"lead-{i:07d}", {"owner": "x", "tier": i % 3}) for i in range(n))
        engine.add_leads(rows, flow="bench", chunk=2000)
        for i in range(0, n, 10):
            engine.advance(f"lead-{i:07d}", to="parked", force=True, reason="bench")


def measure(url: str, n: int) -> None:
    build(url, n)
    with Engine(open_store(url), now="2026-03-02T10:00:00Z", actor="bench") as engine:
        plan = plan_deploy(engine, parse_flow(V2, "v2.flow"))
        moved: list[int] = [0]
        tracemalloc.start()
        start = time.perf_counter()
        counts = dry_run(engine, plan.target, mapping={"parked": "working"}, on_move=lambda _: None)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"{n:>7} leads  dry run {seconds:6.1f} s  peak {peak / 2**20:6.1f} MiB  "
            f"would move {counts.moved}  stranded {counts.stranded}"
        )
        engine.deploy(parse_flow(V2, "v2.flow"))
        target = target_flow(engine, "bench", None)
        start = time.perf_counter()
        done = migrate_flow(
            engine,
            target,
            mapping={"parked": "working"},
            on_move=lambda _: moved.__setitem__(0, moved[0] + 1),
        )
        print(f"{n:>7} leads  migrate {time.perf_counter() - start:6.1f} s  moved {done.moved}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--db", default=None, help="a database URL (default: a scratch SQLite file per size)")
    args = parser.parse_args()
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            measure(args.db or f"sqlite:///{Path(folder) / 'bench.db'}", n)


if __name__ == "__main__":
    main()
