"""The report as one self-contained HTML page (`report --format html`).

Layer 5, a read-only view of a `Report`.  The page works offline and alone:
styles inline, charts as inline SVG drawn here, no script, no font, no
request to anywhere.  It shows a funnel (one bar per main-line stage, with
its entries and conversion), the flow itself (teams as columns, stages as
boxes with live counts, skips and recycles as curved arrows; our own layout,
no Mermaid or Graphviz at run time) and the KPI tables.

Every bar, funnel label and stage box carries ``data-stage``,
``data-entered`` and ``data-conversion`` (and boxes ``data-current``), so
tests and scripts can read the figures from the DOM.  All text goes through
`html.escape`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from itertools import pairwise

from .model import Flow
from .report import Report, StageFigures, TargetResult, days, percent, target_actual, target_verdict

_MAIN = "#4a5568"
_SKIP = "#2a7ab0"
_RECYCLE = "#c0392b"
_BAR = "#3b82c4"

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2933; background: #f5f7fa; margin: 0; padding: 24px 32px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
.meta { color: #52606d; margin: 0 0 16px; }
section { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 16px 20px;
          margin: 0 0 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 0 0 20px; }
.card { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 10px 16px; min-width: 170px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .what { color: #52606d; font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 5px 10px; border-bottom: 1px solid #e4e7eb; text-align: left; vertical-align: top; }
th { background: #f0f4f8; font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.side td { color: #616e7c; }
.met { background: #e3f9e5; color: #1f6f2a; font-weight: 600; }
.missed { background: #ffe3e3; color: #a61b1b; font-weight: 600; }
.nodata { background: #f0f4f8; color: #616e7c; }
.late { color: #a61b1b; font-weight: 600; }
.note { color: #616e7c; font-size: 12px; margin: 8px 0 0; }
.meter { display: inline-block; width: 60px; height: 8px; background: #e4e7eb; border-radius: 4px;
         margin-left: 6px; vertical-align: middle; overflow: hidden; }
.meter span { display: block; height: 100%; background: #3b82c4; }
svg { max-width: 100%; height: auto; display: block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
.legend { display: flex; gap: 18px; color: #52606d; font-size: 12px; margin: 8px 0 0; }
.legend i { display: inline-block; width: 22px; height: 0; border-top: 2px solid; vertical-align: middle;
            margin-right: 6px; }
"""


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float | None) -> str:
    """A figure for a ``data-*`` attribute: empty when there is none."""
    return "" if value is None else repr(value)


def _data(stage: StageFigures) -> str:
    return (
        f'data-stage="{_e(stage.stage)}" data-entered="{stage.entered}" '
        f'data-conversion="{_num(stage.conversion)}"'
    )


# --------------------------------------------------------------------------
# Funnel
# --------------------------------------------------------------------------


def funnel_label(stage: StageFigures) -> str:
    """The text beside a funnel bar."""
    return f"{stage.entered:,} entered · {percent(stage.conversion)} advanced"


def _funnel(report: Report) -> str:
    stages = [s for s in report.stages if s.main_line]
    if not stages:
        return '<p class="note">This flow has no main line.</p>'
    row, name_w, bar_w, text_w = 34, 170, 560, 260
    width, height = name_w + bar_w + text_w, row * len(stages) + 10
    most = max((s.entered for s in stages), default=0) or 1
    out = [
        f'<svg class="funnel" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="Funnel: lead-cycles entering each main-line stage">'
    ]
    for index, s in enumerate(stages):
        y = 5 + index * row
        w = 0.0 if s.entered == 0 else max(2.0, bar_w * s.entered / most)
        x = name_w + (bar_w - w) / 2
        colour = "#9aa5b1" if s.entered == 0 else _BAR
        out.append(f'<g class="bar" {_data(s)}>')
        out.append(f"<title>{_e(s.stage)}: {_e(funnel_label(s))}</title>")
        out.append(
            f'<text class="stage-name" x="{name_w - 10}" y="{y + row / 2 + 5}" text-anchor="end" '
            f'font-size="13" fill="#1f2933">{_e(s.stage)}</text>'
        )
        out.append(
            f'<rect {_data(s)} x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" rx="3" '
            f'fill="{colour}"/>'
        )
        out.append(
            f'<text class="label" {_data(s)} x="{name_w + bar_w + 10}" y="{y + row / 2 + 5}" '
            f'font-size="13" fill="#1f2933">{_e(funnel_label(s))}</text>'
        )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------
# The flow, drawn
# --------------------------------------------------------------------------

# Geometry: teams are bands (columns) of boxes; moves between bands run in
# lanes: hand-offs through the gap between two bands, skips over the top,
# recycles under the bottom.  Moves within one band are arcs beside it.
_BOX_W, _BOX_H, _GAP_Y, _HEAD = 168, 62, 38, 44
_BAND_W, _GAP_X = 196, 52
_COL_W = _BAND_W + _GAP_X
_MARGIN, _TOP = 24, 48  # the top margin holds the skip lanes
_PAD = (_BAND_W - _BOX_W) / 2
# Where in a gap each kind of move runs (offset from its centre).
_LANE = {"advance": 0.0, "skip": -15.0, "recycle_up": -6.0, "recycle_down": 10.0}

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class _Box:
    x: float
    y: float
    band: int  # the team column; -1 for side stages

    @property
    def left(self) -> Point:
        return (self.x, self.y + _BOX_H / 2)

    @property
    def right(self) -> Point:
        return (self.x + _BOX_W, self.y + _BOX_H / 2)

    @property
    def top(self) -> Point:
        return (self.x + _BOX_W / 2, self.y)

    @property
    def bottom(self) -> Point:
        return (self.x + _BOX_W / 2, self.y + _BOX_H)

    @property
    def gap_left(self) -> float:
        """The middle of the gap left of this box's band."""
        return self.x - _PAD - _GAP_X / 2

    @property
    def gap_right(self) -> float:
        return self.x - _PAD + _BAND_W + _GAP_X / 2


@dataclass(frozen=True, slots=True)
class _Canvas:
    boxes: dict[str, _Box]
    bands: list[tuple[str, float]]  # (team title, x)
    band_height: float
    side_y: float | None
    width: int
    height: int

    @property
    def band_bottom(self) -> float:
        return _TOP + self.band_height


def _layout(report: Report, recycles: int) -> _Canvas:
    """Boxes per stage: a band per team, side stages in a row below the
    lanes that `recycles` cross-band recycles need."""
    boxes: dict[str, _Box] = {}
    bands: list[tuple[str, float]] = []
    tallest = 0
    for index, team in enumerate(report.teams):
        x = _MARGIN + _GAP_X / 2 + index * _COL_W
        for row, name in enumerate(team.stages):
            boxes[name] = _Box(x + _PAD, _TOP + _HEAD + row * (_BOX_H + _GAP_Y), index)
        tallest = max(tallest, len(team.stages))
        bands.append((team.title, x))
    band_height = _HEAD + tallest * (_BOX_H + _GAP_Y) - _GAP_Y + 16
    side = [s.stage for s in report.stages if not s.main_line]
    side_y = None
    bottom = _TOP + band_height + 24 + 8 * recycles
    if side:
        side_y = bottom + 34
        for index, name in enumerate(side):
            boxes[name] = _Box(_MARGIN + _GAP_X / 2 + _PAD + index * _COL_W, side_y, -1)
        bottom = side_y + _BOX_H
    width = int(_MARGIN * 2 + _GAP_X + max(len(report.teams), len(side), 1) * _COL_W)
    return _Canvas(boxes, bands, band_height, side_y, width, int(bottom + _MARGIN))


def _curve(start: Point, c1: Point, c2: Point, end: Point) -> str:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (c1, c2, end))
    return f"M{start[0]:.1f},{start[1]:.1f} C{points}"


def _route(points: list[Point], radius: float = 9.0) -> str:
    """A path through `points`, straight segments with rounded corners."""
    out = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for before, corner, after in zip(points, points[1:], points[2:], strict=False):

        def toward(a: Point, b: Point, r: float) -> Point:
            length = max(abs(b[0] - a[0]), abs(b[1] - a[1])) or 1.0
            step = min(r, length / 2) / length
            return (a[0] + (b[0] - a[0]) * step, a[1] + (b[1] - a[1]) * step)

        enter, leave = toward(corner, before, radius), toward(corner, after, radius)
        out.append(
            f"L{enter[0]:.1f},{enter[1]:.1f} Q{corner[0]:.1f},{corner[1]:.1f} {leave[0]:.1f},{leave[1]:.1f}"
        )
    out.append(f"L{points[-1][0]:.1f},{points[-1][1]:.1f}")
    return " ".join(out)


def _edge(source: _Box, target: _Box, kind: str, lane: int, canvas: _Canvas) -> str:
    """The path of one move (`lane` separates moves of a kind)."""
    if source.band == target.band or -1 in (source.band, target.band):
        rows = abs(target.y - source.y) / (_BOX_H + _GAP_Y)
        if kind == "advance":
            s, t = source.bottom, target.top
            return _curve(s, (s[0], s[1] + 12), (t[0], t[1] - 12), t)
        bow = 30 + 10 * rows
        if kind == "skip":  # an arc on the right
            s, t = source.right, target.right
            return _curve(s, (s[0] + bow, s[1]), (t[0] + bow, t[1]), t)
        s, t = source.left, target.left  # recycle: an arc on the left
        return _curve(s, (s[0] - bow, s[1]), (t[0] - bow, t[1]), t)
    s, t = (source.right, target.left) if kind != "recycle" else (source.left, target.right)
    if kind == "advance":
        x = source.gap_right + _LANE["advance"]
        return _route([s, (x, s[1]), (x, t[1]), t])
    if kind == "skip":
        up, down = source.gap_right + _LANE["skip"], target.gap_left + _LANE["skip"]
        if target.band == source.band + 1:  # next band: straight through the gap
            return _route([s, (up, s[1]), (up, t[1]), t])
        top = _TOP - 14 - 7 * lane
        return _route([s, (up, s[1]), (up, top), (down, top), (down, t[1]), t])
    # recycle, to an earlier band: down the gap left of the source, along
    # the bottom, up the gap right of the target
    down, up = source.gap_left + _LANE["recycle_down"], target.gap_right + _LANE["recycle_up"]
    bottom = canvas.band_bottom + 14 + 8 * lane
    return _route([s, (down, s[1]), (down, bottom), (up, bottom), (up, t[1]), t])


def _stage_box(box: _Box, stage: StageFigures, flow: Flow, report: Report) -> str:
    definition = flow.stage(stage.stage)
    flags = [m for m in ("initial", "manual", "final") if definition is not None and getattr(definition, m)]
    sla = next((s for s in report.sla if s.stage == stage.stage), None)
    late = sla is not None and sla.overdue_now > 0
    line2 = f"{stage.current:,} now · {stage.entered:,} entered"
    line3 = f"{percent(stage.conversion)} advanced" if stage.main_line else (", ".join(flags) or "side stage")
    if sla is not None:
        line3 += f" · SLA {days(sla.sla_days)}d"
    stroke, width = (
        (_RECYCLE, 2.5) if late else (("#2d3748", 2.2) if "initial" in flags else ("#9aa5b1", 1.2))
    )
    dash = ' stroke-dasharray="5 3"' if "manual" in flags else ""
    fill = "#edf2f7" if not stage.main_line else "#ffffff"
    tooltip = [f"{stage.stage}: {line2}, {line3}"]
    if sla is not None:
        tooltip.append(f"{sla.breaches} SLA breaches, {sla.overdue_now} overdue now")
    if flags:
        tooltip.append(", ".join(flags))
    cx = box.x + _BOX_W / 2
    return "\n".join(
        [
            f'<g class="stage" {_data(stage)} data-current="{stage.current}">',
            f"<title>{_e('; '.join(tooltip))}</title>",
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{_BOX_W}" height="{_BOX_H}" rx="8" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}/>',
            f'<text x="{cx:.1f}" y="{box.y + 20:.1f}" text-anchor="middle" font-size="13" '
            f'font-weight="600" fill="#1f2933">{_e(stage.stage)}</text>',
            f'<text class="counts" x="{cx:.1f}" y="{box.y + 38:.1f}" text-anchor="middle" font-size="12" '
            f'fill="#1f2933">{_e(line2)}</text>',
            f'<text x="{cx:.1f}" y="{box.y + 54:.1f}" text-anchor="middle" font-size="11" '
            f'fill="{_RECYCLE if late else "#52606d"}">{_e(line3)}</text>',
            "</g>",
        ]
    )


def _flow_svg(report: Report) -> str:
    flow = report.definition
    edges: list[tuple[str, str, str]] = []
    main = [s.stage for s in report.stages if s.main_line]
    edges += [("advance", a, b) for a, b in pairwise(main)]
    edges += [("skip", skip.source, skip.target) for skip in flow.skips]
    edges += [("recycle", source, r.target) for r in flow.recycles for source in dict.fromkeys(r.sources)]
    band_of = {name: index for index, team in enumerate(report.teams) for name in team.stages}
    crossing = [e for e in edges if e[0] == "recycle" and band_of.get(e[1]) != band_of.get(e[2])]
    canvas = _layout(report, len(crossing))
    boxes = canvas.boxes
    out = [
        f'<svg class="flow" viewBox="0 0 {canvas.width} {canvas.height}" width="{canvas.width}" '
        f'height="{canvas.height}" role="img" aria-label="The flow: teams, stages and moves, with counts">',
        "<defs>",
    ]
    for kind, colour in (("advance", _MAIN), ("skip", _SKIP), ("recycle", _RECYCLE)):
        out.append(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    for title, x in canvas.bands:
        out.append(
            f'<rect class="team" x="{x:.1f}" y="{_TOP}" width="{_BAND_W}" height="{canvas.band_height:.1f}" '
            f'rx="10" fill="#f0f4f8" stroke="#d9e2ec"/>'
        )
        out.append(
            f'<text x="{x + _BAND_W / 2:.1f}" y="{_TOP + 27}" text-anchor="middle" font-size="14" '
            f'font-weight="700" fill="#334e68">{_e(title)}</text>'
        )
    if canvas.side_y is not None:
        out.append(
            f'<text x="{_MARGIN + _GAP_X / 2:.1f}" y="{canvas.side_y - 14:.1f}" font-size="13" '
            f'font-weight="700" fill="#334e68">Side stages</text>'
        )
    colours = {"advance": _MAIN, "skip": _SKIP, "recycle": _RECYCLE}
    dashes = {"advance": "", "skip": ' stroke-dasharray="7 4"', "recycle": ' stroke-dasharray="3 3"'}
    lanes: dict[str, int] = {}
    for kind, source, target in edges:
        if source not in boxes or target not in boxes:
            continue
        lane = lanes.get(kind, 0)
        if boxes[source].band != boxes[target].band:
            lanes[kind] = lane + 1
        out.append(
            f'<path class="move {kind}" data-from="{_e(source)}" data-to="{_e(target)}" '
            f'd="{_edge(boxes[source], boxes[target], kind, lane, canvas)}" fill="none" '
            f'stroke="{colours[kind]}" stroke-width="1.6"{dashes[kind]} marker-end="url(#arrow-{kind})">'
            f"<title>{_e(kind)} {_e(source)} → {_e(target)}</title></path>"
        )
    for stage in report.stages:
        if stage.stage in boxes:
            out.append(_stage_box(boxes[stage.stage], stage, flow, report))
    out.append("</svg>")
    out.append(
        '<div class="legend">'
        f'<span><i style="border-color:{_MAIN}"></i>main line</span>'
        f'<span><i style="border-color:{_SKIP};border-top-style:dashed"></i>skip</span>'
        f'<span><i style="border-color:{_RECYCLE};border-top-style:dotted"></i>recycle</span>'
        "<span>boxes: leads now · lead-cycles entered in the period · share advanced; "
        "a red box has leads past its SLA</span></div>"
    )
    return "\n".join(out)


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[str], css: str = "") -> str:
    head = "".join(f"<th{' class=n' if numeric else ''}>{_e(h)}</th>" for h, numeric in headers)
    body = "\n".join(rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _td(value: object, numeric: bool = True, css: str = "") -> str:
    classes = " ".join(c for c in ("n" if numeric else "", css) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{_e(value)}</td>"


def _meter(value: float | None) -> str:
    if value is None:
        return '<td class="n">-</td>'
    width = max(0.0, min(1.0, value)) * 100
    return f'<td class="n">{_e(percent(value))}<span class="meter"><span style="width:{width:.1f}%"></span></span></td>'


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
        f'<tr class="{"main" if s.main_line else "side"}" {_data(s)}>'
        + _td(s.stage if s.main_line else f"{s.stage} (side)", False)
        + _td(s.team or "-", False)
        + _td(f"{s.entered:,}")
        + _td(f"{s.current:,}")
        + _td(f"{s.advanced:,}")
        + _meter(s.conversion)
        + _td(days(s.median_days))
        + "</tr>"
        for s in stages
    ]


def _teams(report: Report) -> str:
    e2e = report.end_to_end
    rows = [
        f'<tr data-team="{_e(t.team)}">'
        + _td(t.title, False)
        + _td(", ".join(t.stages), False)
        + _td(f"{t.entered:,}")
        + _td("-" if t.handed_off is None else f"{t.handed_off:,}")
        + _meter(t.conversion)
        + _meter(t.end_to_end)
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
    out = [_table(headers, rows)]
    if e2e.last is not None:
        out.append(
            f'<p class="note" id="end-to-end">End to end: {e2e.entered:,} leads entered '
            f"<b>{_e(e2e.start)}</b>; {e2e.last.reached:,} reached <b>{_e(e2e.last.stage)}</b> "
            f"({_e(percent(e2e.last.conversion))}). A team with a high conversion but a low end-to-end "
            "share is optimising locally.</p>"
        )
    return "\n".join(out)


def _target_row(t: TargetResult) -> str:
    verdict = target_verdict(t)
    css = {"met": "met", "missed": "missed"}.get(verdict, "nodata")
    met = "" if t.met is None else str(t.met).lower()
    return (
        f'<tr data-target="{_e(t.target)}" data-met="{met}">'
        + _td(str(t.target), False)
        + _td(t.team, False)
        + _td(target_actual(t))
        + _td(f"{t.basis:,}")
        + _td(verdict, False, css)
        + "</tr>"
    )


def _sla(report: Report) -> str:
    if not report.sla:
        return '<p class="note">No stage of this flow has an SLA.</p>'
    rows = [
        f'<tr data-stage="{_e(s.stage)}">'
        + _td(s.stage, False)
        + _td(s.team or "-", False)
        + _td(f"{days(s.sla_days)} days")
        + _td(f"{s.breaches:,}")
        + _td(f"{s.overdue_now:,}", css="late" if s.overdue_now else "")
        + "</tr>"
        for s in report.sla
    ]
    headers = [("stage", False), ("team", False), ("SLA", True), ("breaches", True), ("overdue now", True)]
    return _table(headers, rows)


def _recycled(report: Report) -> str:
    r = report.recycled
    text = (
        f"<p>{_plural(r.lead_cycles, 'lead-cycle')} started by a recycle; {r.later_advanced:,} of them "
        f"later went further along the main line than before ({_e(percent(r.conversion))}).</p>"
    )
    if not r.by_stage:
        return text
    rows = [
        "<tr>" + _td(stage, False) + _td(f"{n:,}") + _td(f"{m:,}") + _meter(m / n if n else None) + "</tr>"
        for stage, n, m in r.by_stage
    ]
    headers = [("recycled from", False), ("lead-cycles", True), ("later further", True), ("share", True)]
    return text + _table(headers, rows)


def _ratio_text(s: StageFigures) -> str:
    return f"{s.advanced:,}/{s.entered:,} ({percent(s.conversion, 0)})"


def _channels(report: Report) -> str:
    if not report.channels:
        return '<p class="note">No entries in the period.</p>'
    names = [c.channel or "(none)" for c in report.channels]
    cells: dict[str, dict[str, StageFigures]] = {}
    for channel, name in zip(report.channels, names, strict=True):
        for s in channel.stages:
            cells.setdefault(s.stage, {})[name] = s
    rows = []
    for stage in report.stages:
        if stage.stage not in cells:
            continue
        row = f'<tr data-stage="{_e(stage.stage)}">' + _td(stage.stage, False)
        for name in names:
            cell = cells[stage.stage].get(name)
            row += "<td></td>" if cell is None else _td(_ratio_text(cell))
        rows.append(row + "</tr>")
    headers = [("stage", False), *((name, True) for name in names)]
    return _table(headers, rows) + (
        '<p class="note">Each entry into a stage is credited to the channel of the lead\'s last event '
        "before it (last touch); cells are advanced/entered.</p>"
    )


def _groups(report: Report) -> str:
    values = [g.value if g.value is not None else "(unset)" for g in report.groups]
    rows = []
    for stage in report.stages:
        row = f'<tr data-stage="{_e(stage.stage)}">' + _td(stage.stage, False)
        for group in report.groups:
            s = next(x for x in group.stages if x.stage == stage.stage)
            row += _td(_ratio_text(s) if s.entered else "")
        rows.append(row + "</tr>")
    headers = [("stage", False), *((v, True) for v in values)]
    return _table(headers, rows) + '<p class="note">Cells are advanced/entered per value.</p>'


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
            f'<div class="card"><div class="value">{_e(v)}</div><div class="what">{_e(w)}</div></div>'
            for v, w in cards
        )
        + "</div>"
    )


def render_html(report: Report) -> str:
    """The whole page."""
    title = f"{report.title} — saleflow report"
    sections = [
        ("funnel", "Funnel", _funnel(report)),
        ("flow", "The flow", _flow_svg(report)),
        ("stages", "Stages", _table(_STAGE_HEADERS, _stage_rows(report.stages))),
        ("teams", "Teams and end-to-end conversion", _teams(report)),
    ]
    if report.targets:
        headers = [("target", False), ("team", False), ("actual", True), ("basis", True), ("verdict", False)]
        sections.append(("targets", "Targets", _table(headers, [_target_row(t) for t in report.targets])))
    sections += [
        (
            "sla",
            f"SLA: {report.sla_breaches:,} breach{'' if report.sla_breaches == 1 else 'es'}",
            _sla(report),
        ),
        ("recycled", "Recycled", _recycled(report)),
        ("channels", "Conversion by channel", _channels(report)),
    ]
    if report.by is not None:
        sections.append(("groups", f"By {report.by}", _groups(report)))
    body = "\n".join(
        f'<section id="{sid}"><h2>{_e(heading)}</h2>\n{content}\n</section>'
        for sid, heading, content in sections
    )
    meta = (
        f"flow <code>{_e(report.flow)}</code> version {report.version} · period: {_e(report.period)} "
        f"(by time of entry) · generated {_e(report.generated_at.isoformat(timespec='seconds'))}"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{_e(report.title)}</h1><p class="meta">{meta}</p></header>\n'
        f"{_cards(report)}\n{body}\n"
        '<footer class="note">Generated by saleflow. Definitions: README, "Reports: definitions".</footer>\n'
        "</body>\n</html>\n"
    )
