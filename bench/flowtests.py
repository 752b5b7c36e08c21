"""How fast `saleflow test` runs a flow's test blocks, in process (issue 11).

The goal: all tests of `flows/the_model.flow` in under a second.  Each
shipped flow is parsed and checked once (the baseline: what `check` costs),
then its tests run five times; the median is reported with the ratio to the
check and to the one-second budget.

    .venv/bin/python bench/flowtests.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saleflow.check.rules import check  # noqa: E402
from saleflow.language.parse import load_flow  # noqa: E402
from saleflow.runtime.testing import run_tests  # noqa: E402

RUNS = 5
BUDGET = 1.0  # seconds, for flows/the_model.flow


def _median(work) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    print(f"{'flow':<24} {'tests':>5} {'check s':>8} {'tests s':>8} {'x check':>8} {'of 1 s':>7}")
    for path in sorted((ROOT / "flows").glob("*.flow")):
        flow = load_flow(path)
        checking = _median(lambda: check(load_flow(path)))  # noqa: B023
        results = run_tests(flow)  # warm: the parser and the compiled flow are built once
        failed = [r for r in results if not r.passed]
        if failed:
            raise SystemExit(f"{path.name}: {len(failed)} tests fail; fix them before timing")
        testing = _median(lambda: run_tests(flow))  # noqa: B023
        print(
            f"{path.name:<24} {len(results):>5} {checking:>8.3f} {testing:>8.3f} "
            f"{testing / checking:>8.1f} {testing / BUDGET:>7.2f}"
        )


if __name__ == "__main__":
    main()
