"""The report page as a whole: header, KPI cards, sections and tables.

Layer 5, a read-only view of a `Report` (`report --format html`).  The page
works offline and alone: styles inline (`css`), charts as inline SVG drawn by
`funnel` and `picture`, no script, no font, no request to anywhere.  This
module puts them in order and writes the KPI tables; every text goes through
`markup.esc`.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...model.expr import duration_text
from ...wording import plural
from ..report import Report, StageFigures, TargetResult, days, percent, target_actual, target_verdict
from .css import CSS
from .funnel import funnel
from .markup import esc, figures_attrs, meter, table, td
from .picture import flow_picture

_STAGE_HEADERS = (
    ("stage", False),
    ("team", False),
    ("entered", True),
    ("now", True),
    ("advanced", True),
    ("conversion", True),
    ("median days", True),
)


def _stage_rows(stages: Iterable[StageFigures]) -> list[str]:
    return [
        f'<tr class="{"main" if s.main_line else "side"}" {figures_attrs(s)}>'
        + td(s.stage if s.main_line else f"{s.stage} (side)", False)
        + td(s.team or "-", False)
        + td(f"{s.entered:,}")
        + td(f"{s.current:,}")
        + td(f"{s.advanced:,}")
        + meter(s.conversion)
        + td(days(s.median_days))
        + "</tr>"
        for s in stages
    ]


def _teams(report: Report) -> str:
    e2e = report.end_to_end
    rows = [
        f'<tr data-team="{esc(t.team)}">'
        + td(t.title, False)
        + td(", ".join(t.stages), False)
        + td(f"{t.entered:,}")
        + td("-" if t.handed_off is None else f"{t.handed_off:,}")
        + meter(t.conversion)
        + meter(t.end_to_end)
        + "</tr>"
        for t in report.teams
    ]
    headers = [
        ("team", False),
        ("stages", False),
        ("entered", True),
        ("handed off", True),
        ("conversion", True),
        (f"end-to-end from {e2e.start or '-'}", True),
    ]
    out = [table(headers, rows)]
    if e2e.last is not None:
        out.append(
            f'<p class="note" id="end-to-end">End to end: {e2e.entered:,} leads entered '
            f"<b>{esc(e2e.start)}</b>; {e2e.last.reached:,} reached <b>{esc(e2e.last.stage)}</b> "
            f"({esc(percent(e2e.last.conversion))}). A team with a high conversion but a low end-to-end "
            "share is optimising locally.</p>"
        )
    return "\n".join(out)


def _target_row(t: TargetResult) -> str:
    verdict = target_verdict(t)
    css = {"met": "met", "missed": "missed"}.get(verdict, "nodata")
    met = "" if t.met is None else str(t.met).lower()
    return (
        f'<tr data-target="{esc(t.target)}" data-met="{met}">'
        + td(str(t.target), False)
        + td(t.team, False)
        + td(target_actual(t))
        + td(f"{t.basis:,}")
        + td(verdict, False, css)
        + "</tr>"
    )


def _sla(report: Report) -> str:
    if not report.sla:
        return '<p class="note">No stage of this flow has an SLA.</p>'
    rows = [
        f'<tr data-stage="{esc(s.stage)}">'
        + td(s.stage, False)
        + td(s.team or "-", False)
        + td(duration_text(s.sla_days))
        + td(f"{s.breaches:,}")
        + td(f"{s.overdue_now:,}", css="late" if s.overdue_now else "")
        + "</tr>"
        for s in report.sla
    ]
    headers = [("stage", False), ("team", False), ("SLA", True), ("breaches", True), ("overdue now", True)]
    return table(headers, rows)


def _recycled(report: Report) -> str:
    r = report.recycled
    text = (
        f"<p>{plural(r.lead_cycles, 'lead-cycle', grouped=True)} started by a recycle; {r.later_advanced:,} of them "
        f"later went further along the main line than before ({esc(percent(r.conversion))}).</p>"
    )
    if not r.by_stage:
        return text
    rows = [
        "<tr>" + td(stage, False) + td(f"{n:,}") + td(f"{m:,}") + meter(m / n if n else None) + "</tr>"
        for stage, n, m in r.by_stage
    ]
    headers = [("recycled from", False), ("lead-cycles", True), ("later further", True), ("share", True)]
    return text + table(headers, rows)


def _ratio_text(s: StageFigures) -> str:
    return f"{s.advanced:,}/{s.entered:,} ({percent(s.conversion, 0)})"


def _channels(report: Report) -> str:
    if not report.channels:
        return '<p class="note">No entries in the period.</p>'
    if all(c.channel is None for c in report.channels):
        return (
            '<p class="note">No entry had an event with a channel before it, so there is nothing to '
            "credit; events recorded with a channel (<code>saleflow event ID EVENT --channel web</code>) "
            "show here.</p>"
        )
    names = [c.channel or "(none)" for c in report.channels]
    cells: dict[str, dict[str, StageFigures]] = {}
    for channel, name in zip(report.channels, names, strict=True):
        for s in channel.stages:
            cells.setdefault(s.stage, {})[name] = s
    rows = []
    for stage in report.stages:
        if stage.stage not in cells:
            continue
        row = f'<tr data-stage="{esc(stage.stage)}">' + td(stage.stage, False)
        for name in names:
            cell = cells[stage.stage].get(name)
            row += "<td></td>" if cell is None else td(_ratio_text(cell))
        rows.append(row + "</tr>")
    headers = [("stage", False), *((name, True) for name in names)]
    return table(headers, rows) + (
        '<p class="note">Each entry into a stage is credited to the channel of the lead\'s last event '
        "before it (last touch); cells are advanced/entered.</p>"
    )


def _groups(report: Report) -> str:
    values = [g.value if g.value is not None else "(unset)" for g in report.groups]
    rows = []
    for stage in report.stages:
        row = f'<tr data-stage="{esc(stage.stage)}">' + td(stage.stage, False)
        for group in report.groups:
            s = next(x for x in group.stages if x.stage == stage.stage)
            row += td(_ratio_text(s) if s.entered else "")
        rows.append(row + "</tr>")
    headers = [("stage", False), *((v, True) for v in values)]
    return table(headers, rows) + '<p class="note">Cells are advanced/entered per value.</p>'


def _cards(report: Report) -> str:
    e2e = report.end_to_end
    cards = [
        (f"{e2e.entered:,}", f"leads entered {e2e.start or '-'}"),
        (
            percent(None if e2e.last is None else e2e.last.conversion),
            f"end to end, to {e2e.last.stage if e2e.last else '-'}",
        ),
        (f"{sum(s.current for s in report.stages):,}", "leads now"),
        (f"{report.sla_breaches:,}", "SLA breaches"),
        (f"{report.recycled.lead_cycles:,}", "recycled lead-cycles"),
    ]
    met = sum(1 for t in report.targets if t.met)
    if report.targets:
        cards.append((f"{met} of {len(report.targets)}", "targets met"))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{esc(v)}</div><div class="what">{esc(w)}</div></div>'
            for v, w in cards
        )
        + "</div>"
    )


def render_html(report: Report) -> str:
    """The whole page."""
    title = f"{report.title} — saleflow report"
    sections = [
        ("funnel", "Funnel", funnel(report)),
        ("flow", "The flow", flow_picture(report)),
        ("stages", "Stages", table(_STAGE_HEADERS, _stage_rows(report.stages))),
        ("teams", "Teams and end-to-end conversion", _teams(report)),
    ]
    if report.targets:
        headers = [("target", False), ("team", False), ("actual", True), ("basis", True), ("verdict", False)]
        sections.append(("targets", "Targets", table(headers, [_target_row(t) for t in report.targets])))
    sections += [
        (
            "sla",
            f"SLA: {plural(report.sla_breaches, 'breach', 'breaches', grouped=True)}",
            _sla(report),
        ),
        ("recycled", "Recycled", _recycled(report)),
        ("channels", "Conversion by channel", _channels(report)),
    ]
    if report.by is not None:
        sections.append(("groups", f"By {report.by}", _groups(report)))
    body = "\n".join(
        f'<section id="{sid}"><h2>{esc(heading)}</h2>\n{content}\n</section>'
        for sid, heading, content in sections
    )
    meta = (
        f"flow <code>{esc(report.flow)}</code> version {report.version} · period: {esc(report.period)} "
        f"(by time of entry) · generated {esc(report.generated_at.isoformat(timespec='seconds'))}"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{esc(report.title)}</h1><p class="meta">{meta}</p></header>\n'
        f"{_cards(report)}\n{body}\n"
        '<footer class="note">Generated by saleflow. Definitions: README, "Reports: definitions".</footer>\n'
        "</body>\n</html>\n"
    )
