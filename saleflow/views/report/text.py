"""The report as aligned text (the default of ``saleflow report``) and as
CSV (one row per stage, and per group with ``--by``)."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ...csvcell import safe_row
from ...wording import decimal_text, plural
from .figures import Report, StageFigures, TargetResult, short_time

# --------------------------------------------------------------------------
# Text and CSV
# --------------------------------------------------------------------------


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def days(value: float | None) -> str:
    """A number of days for a table, to two decimals; `-` for none."""
    return "-" if value is None else decimal_text(value, 2)


def target_actual(result: TargetResult) -> str:
    if result.actual is None:
        return "no data"
    if result.unit == "%":
        return f"{result.actual:.1f}%"
    return f"{days(result.actual)} days"


def target_verdict(result: TargetResult) -> str:
    return "no data" if result.met is None else "met" if result.met else "missed"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> list[str]:
    """Aligned columns: the first `left` columns flush left, numbers right."""
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in text)]


def _stage_rows(stages: Iterable[StageFigures]) -> list[list[Any]]:
    return [
        [
            s.stage if s.main_line else f"{s.stage} (side)",
            s.team or "-",
            s.entered,
            s.current,
            s.advanced,
            percent(s.conversion),
            days(s.median_days),
        ]
        for s in stages
    ]


_STAGE_HEADERS = ("stage", "team", "entered", "now", "advanced", "conversion", "median days")


def render_table(report: Report) -> str:
    """The report as aligned text, one section per KPI."""
    out = [
        f"{report.title} — flow {report.flow} version {report.version}",
        f"period: {report.period} (by time of entry); generated {short_time(report.generated_at)}",
        "",
        "Stages",
        *_table(_STAGE_HEADERS, _stage_rows(report.stages), left=2),
    ]
    e2e = report.end_to_end
    out += ["", "Teams"]
    out += _table(
        ("team", "entered", "handed off", "conversion", f"end-to-end from {e2e.start or '-'}"),
        [
            [t.title, t.entered, _count(t.handed_off), percent(t.conversion), percent(t.end_to_end)]
            for t in report.teams
        ],
    )
    if e2e.last is not None:
        out.append(
            f"  end to end: {e2e.entered} entered {e2e.start}, {e2e.last.reached} reached "
            f"{e2e.last.stage} ({percent(e2e.last.conversion)})"
        )
    if report.targets:
        out += ["", "Targets"]
        out += _table(
            ("target", "team", "actual", "verdict"),
            [[str(t.target), t.team, target_actual(t), target_verdict(t)] for t in report.targets],
            left=2,
        )
    out += ["", f"SLA breaches: {report.sla_breaches}"]
    if report.sla:
        out += _table(
            ("stage", "SLA days", "breaches", "overdue now"),
            [[s.stage, days(s.sla_days), s.breaches, s.overdue_now] for s in report.sla],
        )
    r = report.recycled
    out += [
        "",
        f"Recycled: {plural(r.lead_cycles, 'lead-cycle')}, "
        f"{r.later_advanced} later went further "
        f"({percent(r.conversion)})",
    ]
    if r.by_stage:
        out += _table(("recycled from", "lead-cycles", "later further"), r.by_stage)
    if report.channels:
        names = [c.channel or "(none)" for c in report.channels]
        cells: dict[str, dict[str, str]] = defaultdict(dict)
        for c, label in zip(report.channels, names, strict=True):
            for s in c.stages:
                cells[s.stage][label] = f"{s.advanced}/{s.entered} {percent(s.conversion, 0)}"
        rows = [
            [s.stage, *(cells[s.stage].get(n, "") for n in names)] for s in report.stages if s.stage in cells
        ]
        out += ["", "Conversion by channel (last touch before entering; advanced/entered)"]
        out += _table(("stage", *names), rows)
    for group in report.groups:
        out += ["", f"{report.by} = {group.value if group.value is not None else '(unset)'}"]
        out += _table(_STAGE_HEADERS, _stage_rows(s for s in group.stages if s.entered or s.current), left=2)
    return "\n".join(out) + "\n"


def render_csv(report: Report) -> str:
    """One row per stage; with ``--by``, one row per group and stage."""
    fixed = ["flow", "version", "stage", "team", "main_line", "entered", "current", "advanced"]
    fixed += ["conversion", "median_days"]
    column = None if report.by is None else (report.by if report.by not in fixed else f"by_{report.by}")
    buffer = io.StringIO()
    # Names and field values are text anyone may have typed: every row goes
    # through safe_row, so a spreadsheet runs no cell as a formula.
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(safe_row(fixed[:2] + ([column] if column else []) + fixed[2:]))

    def row(prefix: list[Any], s: StageFigures) -> list[Any]:
        conversion = "" if s.conversion is None else f"{s.conversion:.6g}"
        median = "" if s.median_days is None else f"{round(s.median_days, 4):g}"
        facts = [s.stage, s.team or "", str(s.main_line).lower(), s.entered, s.current, s.advanced]
        return [*prefix, *facts, conversion, median]

    if report.by is None:
        for s in report.stages:
            writer.writerow(safe_row(row([report.flow, report.version], s)))
    else:
        for group in report.groups:
            for s in group.stages:
                writer.writerow(safe_row(row([report.flow, report.version, group.value or ""], s)))
    return buffer.getvalue()
