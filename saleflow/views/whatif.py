"""What a what-if found, and how it is shown: the results of `simulate`
(`Simulation`, with its `Refusal`s and `Waiting` queues, and their JSON),
the text table and the HTML page that put recorded and simulated side by
side (SPEC §7, `saleflow simulate`).

Layer 5, part of the views: the replay that builds a `Simulation` is
views/simulate.py; this module only reads one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .report import Report, StageFigures, days, percent


@dataclass(frozen=True, slots=True)
class Refusal:
    """A recorded request the simulated flow refused."""

    lead: str
    at: datetime
    stage: str  # where the simulated lead was
    to: str
    kind: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "lead": self.lead,
            "at": self.at.isoformat(),
            "from": self.stage,
            "to": self.to,
            "kind": self.kind,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Waiting:
    """The queue for room in one capacity stage, as the replay saw it."""

    stage: str
    most: int = 0
    most_at: datetime | None = None
    waited: list[float] = field(default_factory=list)  # days, of the leads that got out of the queue
    still: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "most_at_once": self.most,
            "most_at": None if self.most_at is None else self.most_at.isoformat(),
            "leads_waited": len(self.waited) + self.still,
            "still_waiting": self.still,
            "median_days": _round(statistics.median(self.waited)) if self.waited else None,
            "max_days": _round(max(self.waited)) if self.waited else None,
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    actual: Report
    simulated: Report
    refused_requests: int
    refused: tuple[Refusal, ...]  # the first `LISTED`
    refused_by_stage: dict[str, int]  # refused requests per stage asked for
    most_waiting: int
    waiting: tuple[Waiting, ...]
    replayed: int
    skipped: int
    ticks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.simulated.flow,
            "version": self.simulated.version,
            "actual": self.actual.to_json(),
            "simulated": self.simulated.to_json(),
            "refused_requests": self.refused_requests,
            "refused": [r.to_json() for r in self.refused],
            "refused_by_stage": dict(self.refused_by_stage),
            "most_waiting": self.most_waiting,
            "waiting": [w.to_json() for w in self.waiting],
            "replayed": self.replayed,
            "skipped": self.skipped,
            "ticks": self.ticks,
        }


def _round(days: float) -> float:
    return round(days, 2)


def _pairs(sim: Simulation) -> list[tuple[str, str | None, StageFigures | None, StageFigures | None]]:
    """Stage rows in the simulated flow's order, then stages only the
    recorded flow has."""
    Row = tuple[str, str | None, StageFigures | None, StageFigures | None]
    rows: list[Row] = [(s.stage, s.team, sim.actual.stage(s.stage), s) for s in sim.simulated.stages]
    known = {s.stage for s in sim.simulated.stages}
    rows += [(s.stage, s.team, s, None) for s in sim.actual.stages if s.stage not in known]
    return rows


def _both(before: str, after: str) -> str:
    return before if before == after else f"{before} → {after}"


def _waiting_line(w: Waiting) -> str:
    data = w.to_json()
    median = "-" if data["median_days"] is None else days(data["median_days"])
    longest = "-" if data["max_days"] is None else days(data["max_days"])
    when = "" if w.most_at is None else f" on {w.most_at.date().isoformat()}"
    return (
        f"{w.stage}: at most {w.most:,} at once{when}; {data['leads_waited']:,} waited, "
        f"median {median} days, longest {longest} days, {w.still:,} still waiting"
    )


def render_simulation_table(sim: Simulation, path: str | None = None) -> str:
    a, s = sim.actual, sim.simulated
    where = f" ({path})" if path else ""
    lines = [
        f"Simulation of flow {s.flow} version {s.version}{where} over the recorded history "
        f"(recorded: version {a.version}); period: {s.period}",
        f"{sim.replayed:,} recorded entries replayed, {sim.skipped:,} skipped, {sim.ticks:,} ticks",
        "",
        "Funnel, recorded → simulated:",
    ]
    headers = ["stage", "team", "entered", "advanced", "conversion", "median days"]
    rows = []
    for name, team, before, after in _pairs(sim):

        def cell(f: Any, stage: StageFigures | None) -> str:
            return "-" if stage is None else str(f(stage))

        rows.append(
            [
                name,
                team or "-",
                _both(cell(lambda x: f"{x.entered:,}", before), cell(lambda x: f"{x.entered:,}", after)),
                _both(cell(lambda x: f"{x.advanced:,}", before), cell(lambda x: f"{x.advanced:,}", after)),
                _both(
                    cell(lambda x: percent(x.conversion), before),
                    cell(lambda x: percent(x.conversion), after),
                ),
                _both(
                    cell(lambda x: days(x.median_days), before), cell(lambda x: days(x.median_days), after)
                ),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        lines.append(
            "  "
            + "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    lines += [
        "",
        f"SLA breaches: {_both(f'{a.sla_breaches:,}', f'{s.sla_breaches:,}')}",
        f"recycled lead-cycles: {_both(f'{a.recycled.lead_cycles:,}', f'{s.recycled.lead_cycles:,}')}",
        f"most leads waiting for capacity at once (simulated): {sim.most_waiting:,}",
        *(f"  {_waiting_line(w)}" for w in sim.waiting),
        f"requested moves the simulated flow refuses: {sim.refused_requests:,}",
        *(
            f"  {r.lead} at {r.at.isoformat(timespec='seconds')}: {r.stage} -> {r.to} ({r.kind}): {r.reason}"
            for r in sim.refused
        ),
    ]
    if sim.refused_requests > len(sim.refused):
        lines.append(f"  … and {sim.refused_requests - len(sim.refused):,} more")
    return "\n".join(lines) + "\n"


def render_simulation_html(sim: Simulation) -> str:
    """Both funnels side by side, then the comparison table, the queue and
    the refused requests; built from the report page's own parts."""
    from . import page

    a, s = sim.actual, sim.simulated
    e = page.esc
    rows = []
    for name, team, before, after in _pairs(sim):
        cells = [page.td(name, False), page.td(team or "-", False)]
        figures: tuple[Callable[[StageFigures], str], ...] = (
            lambda x: f"{x.entered:,}",
            lambda x: f"{x.advanced:,}",
            lambda x: percent(x.conversion),
            lambda x: days(x.median_days),
        )
        for f in figures:
            cells.append(page.td("-" if before is None else f(before)))
            cells.append(page.td("-" if after is None else f(after)))
        rows.append(f'<tr data-stage="{e(name)}">' + "".join(cells) + "</tr>")
    headers = [("stage", False), ("team", False)]
    for what in ("entered", "advanced", "conversion", "median days"):
        headers += [(f"{what} (recorded)", True), (f"{what} (simulated)", True)]
    waiting = "".join(f"<li>{e(_waiting_line(w))}</li>" for w in sim.waiting) or "<li>no lead waited</li>"
    refused = "".join(
        f"<li><code>{e(r.lead)}</code> at {e(r.at.isoformat(timespec='seconds'))}: {e(r.stage)} → {e(r.to)} "
        f"({e(r.kind)}): {e(r.reason)}</li>"
        for r in sim.refused
    )
    more = sim.refused_requests - len(sim.refused)
    title = f"{s.title} — what if (saleflow simulate)"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{page.CSS}\n.pair {{ display: grid; "
        "grid-template-columns: 1fr 1fr; gap: 20px; }}</style>\n</head>\n<body>\n"
        f'<header><h1>{e(title)}</h1><p class="meta">flow <code>{e(s.flow)}</code> version {s.version} '
        f"replayed over the recorded history (version {a.version}) · period: {e(s.period)} · "
        f"{sim.replayed:,} entries replayed, {sim.ticks:,} ticks</p></header>\n"
        '<div class="pair">'
        f'<section id="recorded"><h2>Recorded (version {a.version})</h2>\n{page.funnel(a)}</section>'
        f'<section id="simulated"><h2>Simulated (version {s.version})</h2>\n{page.funnel(s)}</section>'
        "</div>\n"
        f'<section id="stages"><h2>Stages, recorded and simulated</h2>\n{page.table(headers, rows)}</section>\n'
        f'<section id="sla"><h2>SLA breaches: {a.sla_breaches:,} recorded, {s.sla_breaches:,} simulated</h2></section>\n'
        f'<section id="waiting"><h2>Waiting for capacity: at most {sim.most_waiting:,} at once</h2>'
        f"<ul>{waiting}</ul></section>\n"
        f'<section id="refused"><h2>Requested moves refused: {sim.refused_requests:,}</h2>'
        f"<ul>{refused}</ul>{f'<p class=note>… and {more:,} more</p>' if more > 0 else ''}</section>\n"
        "</body>\n</html>\n"
    )
