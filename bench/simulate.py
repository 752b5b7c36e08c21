"""`saleflow simulate` against `saleflow report` on the same recorded data.

    python bench/simulate.py [--leads 100000] [--backends sqlite,postgresql]
    python bench/run.py --only simulate [--quick]
    python bench/simulate.py --leads 5000 --record sqlite:///demo.db   # a demo history
    python bench/simulate.py --leads 5000 --recorded sqlite:///demo.db # measure on it

The recorded store: `--leads` leads of flows/the_model.flow over 180 days,
each with a generated life (first fields, web visits, content downloads,
seminars, inbound questions, an owner, calls, BANT fields, meetings, a
requested advance to the manual proposal stage, contracts; some requested
recycles on timing and exits to lost).  Feeding 100,000 such lives through
one engine operation per transaction would take most of an hour, so the
history is recorded by `saleflow.views.simulate.Replay` itself into the bench
database: the same `Work` operations the engine runs, 2,000 to a
transaction, with the engine's tick at every midnight a lead is due.  It is
a history the engine wrote (journal, events, breaches, queue), recorded
once per run and not timed.

Then, each measured on the same database, `--repeat` times (3),
alternately: `report_for` (what `saleflow report --format json` computes),
and `simulate` of the same flow file (the journal read, the whole replay
into a scratch `MemoryStore` and both reports; on a large history another
process reads the journal and builds the recorded report, views/apart.py).
The figures are the multiples simulate / report of the best runs, in wall
time and in CPU time (the other process's included); the same-flow
simulated report must equal the recorded one, which is checked at every
run.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saleflow.journal import JournalEntry  # noqa: E402
from saleflow.language.parse import load_flow  # noqa: E402
from saleflow.runtime.engine import Engine  # noqa: E402
from saleflow.views.report import report_for  # noqa: E402
from saleflow.views.simulate import Replay, simulate  # noqa: E402

FLOW = ROOT / "flows" / "the_model.flow"
START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(days=240)


def _entry(
    kind: str, lead: str, at: datetime, data: dict[str, object], move: str | None = None, stage: str = ""
) -> tuple:
    return (at, lead, kind, move, stage, data)


def _life(rng: random.Random, lead: str) -> list[tuple]:
    """One lead's recorded inputs: (at, lead, entry, move kind, stage, data)."""
    t = START + timedelta(days=rng.uniform(0, 180))
    out: list[tuple] = []
    fields: dict[str, object] = {
        "company": f"Company {lead}",
        "employees": rng.choice((20, 200, 800, 5000)),
        "industry": rng.choice(("saas", "finance", "retail", "manufacturing", "other")),
        "authority": rng.choice(("none", "user", "user", "influencer", "decision_maker")),
    }
    if rng.random() < 0.9:
        fields["email"] = f"{lead}@example.com"
    out.append(_entry("created", lead, t, {"fields": fields}, "create", "awareness"))

    def later(days: float) -> datetime:
        nonlocal t
        t = t + timedelta(days=rng.uniform(0.1, days))
        return t

    def event(name: str, channel: str, count: int = 1) -> None:
        out.append(
            _entry(
                "event", lead, later(4), {"event": name, "count": count, "channel": channel, "content": None}
            )
        )

    def set_(**values: object) -> None:
        out.append(_entry("set", lead, later(3), {"fields": {k: [None, v] for k, v in values.items()}}))

    def ask(kind: str, stage: str) -> None:
        out.append(_entry("moved", lead, later(3), {"values": {}, "requested": True}, kind, stage))

    for _ in range(rng.choice((0, 1, 2, 3, 4, 6, 8))):
        event("web_visit", "web")
    if rng.random() < 0.6:
        event("content_download", "web")
    if rng.random() < 0.5:
        event("seminar_attended", "seminar")
    if rng.random() < 0.15:
        event("inbound_question", "inbound")
    if rng.random() < 0.15:
        return out
    set_(owner=rng.choice(("ana", "bo", "cy")))
    if rng.random() < 0.3:
        return out
    set_(need=True)
    event("call_connected", "phone")
    if rng.random() < 0.1:
        set_(lost_reason="timing")
        ask("recycle", "nurturing")
        return out
    if rng.random() < 0.25:
        return out
    set_(budget=rng.choice((5000, 20000, 80000)), timeframe_days=rng.choice((30, 60, 180)))
    event("meeting_held", "field")
    if rng.random() < 0.3:
        return out
    set_(problem_known=True, solution_fit=True)
    ask("advance", "proposal")
    if rng.random() < 0.1:
        set_(lost_reason="competitor")
        ask("exit", "lost")
        return out
    set_(expected_value=rng.choice((10000, 50000)))
    if rng.random() < 0.5:
        event("contract_signed", "field")
    return out


def inputs(n: int, seed: int = 5) -> Iterator[JournalEntry]:
    rng = random.Random(seed)
    rows = [row for i in range(n) for row in _life(rng, f"lead-{i:07d}")]
    rows.sort(key=lambda row: row[0])
    for seq, (at, lead, kind, move, stage, data) in enumerate(rows, 1):
        yield JournalEntry(
            seq, lead, 0, kind, move, None, stage, 1, at, at, "bench", None, "the_model", 1, data
        )


def record(url: str, n: int) -> float:
    """Record `n` lives into `url`; returns the seconds it took."""
    t = time.perf_counter()
    with Engine.open(FLOW, db=url, now=END, actor="bench") as engine:
        cf = engine.compiled("the_model")
        Replay(engine.store, engine.compiled, cf, END, keep_due=True).run(inputs(n))
    return time.perf_counter() - t


def cpu() -> float:
    """CPU seconds of this process and of the processes it has waited for
    (simulate's recorded report, built apart on a large history)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(url: str, repeat: int = 3) -> dict[str, float]:
    """`report` and `simulate` of the same flow on `url`, `repeat` times
    each, alternately: the best wall and CPU seconds of each (on a shared
    machine a run is only ever slowed, so the least is the cost; the
    slowest are shown too), and the check that the same-flow replay
    reproduces the recorded report.  A database server's CPU is in
    neither figure."""
    flow = load_flow(FLOW)
    reports: list[tuple[float, float]] = []
    simulations: list[tuple[float, float]] = []
    with Engine.open(db=url, now=END) as engine:
        for _ in range(repeat):
            t, c = time.perf_counter(), cpu()
            report = report_for(engine, "the_model")
            reports.append((time.perf_counter() - t, cpu() - c))
            t, c = time.perf_counter(), cpu()
            sim = simulate(engine, flow)
            simulations.append((time.perf_counter() - t, cpu() - c))
            assert sim.simulated.to_json() == sim.actual.to_json(), (
                "same-flow replay differs from the recorded report"
            )
            assert report.to_json() == sim.actual.to_json() | {
                "generated_at": report.to_json()["generated_at"]
            }
    t_report, c_report = min(w for w, _ in reports), min(c for _, c in reports)
    t_sim, c_sim = min(w for w, _ in simulations), min(c for _, c in simulations)
    return {
        "report": t_report,
        "simulate": t_sim,
        "ratio": t_sim / t_report,
        "report_cpu": c_report,
        "simulate_cpu": c_sim,
        "ratio_cpu": c_sim / c_report,
        "report_slowest": max(w for w, _ in reports),
        "simulate_slowest": max(w for w, _ in simulations),
        "repeat": repeat,
        "replayed": sim.replayed,
        "ticks": sim.ticks,
        "most_waiting": sim.most_waiting,
        "entered": sum(s.entered for s in sim.actual.stages),
    }


def show(backend: str, n: int, m: dict[str, float]) -> None:
    from run import line  # type: ignore[import-not-found]

    best = f"best of {m['repeat']:g}" if m["repeat"] > 1 else "one run"
    line(
        f"{backend}: report over {n:,} leads ({best})",
        f"{m['report']:.2f} s",
        f"CPU {m['report_cpu']:.2f} s, slowest {m['report_slowest']:.2f} s",
    )
    line(
        f"{backend}: simulate, same flow ({m['replayed']:,} entries, {m['ticks']:,} ticks)",
        f"{m['simulate']:.2f} s",
        f"CPU {m['simulate_cpu']:.2f} s, slowest {m['simulate_slowest']:.2f} s",
    )
    line(f"{backend}: multiple simulate / report", f"{m['ratio']:.1f}x", "goal: <= 5x")
    line(
        f"{backend}: multiple simulate / report, CPU",
        f"{m['ratio_cpu']:.1f}x",
        "both processes' CPU: the work done, not the wait",
    )
    line(f"{backend}: most leads waiting for opportunity at once", f"{m['most_waiting']:,}")


def run(n: int, backends: list[str], repeat: int = 3) -> None:
    from run import drop_pg_database, fresh_pg_database, line  # type: ignore[import-not-found]

    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/recorded.db" if backend == "sqlite" else fresh_pg_database()
            try:
                seconds = record(url, n)
                line(f"{backend}: record {n:,} leads (Replay, not timed against)", f"{seconds:.1f} s")
                m = measure(url, repeat)
            finally:
                if backend != "sqlite":
                    drop_pg_database(url)
        show(backend, n, m)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternately; the best counts")
    parser.add_argument("--record", metavar="URL", help="only record the history into this database")
    parser.add_argument(
        "--recorded",
        metavar="URL",
        help="measure on a history recorded before with --record (--leads of them)",
    )
    args = parser.parse_args()
    if args.recorded:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        show(args.recorded.split(":")[0].split("+")[0], args.leads, measure(args.recorded, args.repeat))
        return
    if args.record:
        seconds = record(args.record, args.leads)
        print(
            f"recorded {args.leads:,} leads of the_model into {args.record} in {seconds:.1f} s; now is {END.isoformat()}"
        )
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    run(args.leads, args.backends.split(","), args.repeat)


if __name__ == "__main__":
    main()
