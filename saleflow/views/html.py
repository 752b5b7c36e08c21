"""The report as one self-contained HTML page (`report --format html`).

Layer 5, a read-only view of a `Report`.  The page works offline and alone:
styles inline, charts as inline SVG drawn here, no script, no font, no
request to anywhere.  It shows a funnel (one bar per main-line stage, with
its entries and conversion), the flow itself (teams as columns, stages as
boxes sized to their text with live counts, skips and recycles as arrows
routed clear of the main line, and a legend; our own layout, no Mermaid or
Graphviz at run time) and the KPI tables.  No font is shipped, so text is
measured with the widths of a wide common face (`text_width`).

Every bar, funnel label and stage box carries ``data-stage``,
``data-entered`` and ``data-conversion`` (and boxes ``data-current``), so
tests and scripts can read the figures from the DOM.  All text goes through
`html.escape`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from math import ceil

from ..model import graph
from ..model.flow import Flow, duration_text
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
.legend { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 18px; color: #52606d; font-size: 12px;
          margin: 8px 0 0; }
.legend span { display: inline-flex; align-items: center; white-space: nowrap; }
.legend span.explain { white-space: normal; }
.legend svg.key { display: inline-block; width: 30px; height: 16px; margin-right: 6px; flex: none; }
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
# Text widths
# --------------------------------------------------------------------------

# Advance widths of printable ASCII (" " to "~"), in hundredths of an em, in
# DejaVu Sans Book and Bold: the face `system-ui` falls back to on most
# Linux desktops and one of the widest sans-serif faces, so that a box sized
# by these widths holds its text in the narrower faces of other systems too.
# A character outside the table counts as a full em.
_REGULAR_WIDTHS = (
    "32 40 46 84 64 95 78 27 39 39 50 84 32 36 32 34 64 64 64 64 64 64 64 64 64 64 34 34 84 84 84 53 "
    "100 68 69 70 77 63 58 77 75 29 29 66 56 86 75 79 60 79 69 63 61 73 68 99 69 61 69 39 34 39 84 50 "
    "50 61 63 55 63 62 35 63 63 28 28 58 28 97 63 61 63 63 41 52 39 63 59 82 59 59 52 64 34 64 84"
)
_BOLD_WIDTHS = (
    "35 46 52 84 70 100 87 31 46 46 52 84 38 42 38 37 70 70 70 70 70 70 70 70 70 70 40 40 84 84 84 58 "
    "100 77 76 73 83 68 68 82 84 37 37 77 64 100 84 85 73 85 77 72 68 81 77 110 77 72 73 46 37 46 84 50 "
    "50 67 72 59 72 68 44 72 71 34 34 67 34 104 71 69 72 72 49 60 48 71 65 92 65 65 58 71 37 71 84"
)
_WIDTHS = {
    bold: {chr(32 + i): int(w) for i, w in enumerate(table.split())} | {"·": 38, "→": 84}
    for bold, table in ((False, _REGULAR_WIDTHS), (True, _BOLD_WIDTHS))
}


def text_width(text: str, size: float, bold: bool = False) -> float:
    """A generous estimate of the width in pixels of `text` set at `size`
    pixels in the page's font (`bold`: weight 600)."""
    widths = _WIDTHS[bold]
    return sum(widths.get(char, 100) for char in text) * size / 100 * 1.04


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
    row, bar_w, text_w = 34, 560, 260
    name_w = max(170, ceil(max(text_width(s.stage, 13) for s in stages)) + 20)
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

# Geometry: teams are bands (columns) of boxes, every box as wide as the
# widest text of any box needs (up to a limit; longer text is set smaller).
# The main line runs down each band and through the middle of the gap
# between two bands, from the middle of one box side to the middle of
# another.  Every other move meets its boxes elsewhere, so that no arrow
# starts or ends where a main-line arrow does:
#
# - a skip leaves its source low on the right and enters its target high on
#   the left, through the gap between the bands or over them, in the skip
#   lanes above the bands;
# - a recycle to another band leaves its source high on the right, rises in
#   the gap right of the source's band (left of the main line there), runs
#   back over the bands in a recycle lane of its own (above the skip lanes)
#   and comes down in the gap right of the target's band to the target's
#   right side, high up: it never crosses the main line.  Slots in the gaps,
#   lanes and box ends are given out so that recycles keep off each other
#   where they can: the one from the furthest source runs outermost;
# - a move within one band is an arc beside it, a skip on the right and a
#   recycle on the left, meeting its boxes below the middle.
_BOX_H, _GAP_Y, _HEAD = 62, 38, 44
_MIN_BOX_W, _MAX_BOX_W = 168.0, 320.0
_TEXT_PAD, _MIN_FONT = 10.0, 8.0  # between a box's border and its text; the smallest text
_PAD = 14.0  # between a band's border and its boxes
_MARGIN = 24.0
_MIN_GAP = 52.0
_SLOT, _FIRST_SLOT = 7.0, 10.0  # between recycles side by side in a gap; the first from its middle
_SKIP_LANE, _RECYCLE_LANE = 7.0, 7.0  # between lanes above the bands
# The part of a box's right side where recycles meet it (from its top): above
# the middle where the main line may leave, above where skips leave.
_RECYCLE_ENDS, _RECYCLE_ENDS_FREE = (6.0, 24.0), (6.0, 38.0)
_SKIP_OUT, _SKIP_IN = 46.0, 16.0  # where a skip leaves (right side) and enters (left side) a box
_ARC_END = 46.0  # where an arc within a band meets its boxes

Point = tuple[float, float]
Move = tuple[str, str, str]  # (kind, source, target)

# How a stage box is drawn (the legend's keys are drawn the same way): its
# fill says main line or side stage, its border initial, past the SLA or
# neither, and a dashed border a manual stage.
_FILLS = {"main": 'fill="#ffffff"', "side": 'fill="#edf2f7"'}
_BORDERS = {
    "stage": 'stroke="#9aa5b1" stroke-width="1.2"',
    "initial": 'stroke="#2d3748" stroke-width="2.2"',
    "late": f'stroke="{_RECYCLE}" stroke-width="2.5"',
}
_MANUAL_DASH = 'stroke-dasharray="5 3"'
_MOVE_STYLES = {
    "advance": f'stroke="{_MAIN}" stroke-width="1.6"',
    "skip": f'stroke="{_SKIP}" stroke-width="1.6" stroke-dasharray="7 4"',
    "recycle": f'stroke="{_RECYCLE}" stroke-width="1.6" stroke-dasharray="3 3"',
}


@dataclass(frozen=True, slots=True)
class _Box:
    x: float
    y: float
    w: float
    band: int  # the team column; -1 for side stages
    row: int

    def left_at(self, dy: float) -> Point:
        return (self.x, self.y + dy)

    def right_at(self, dy: float) -> Point:
        return (self.x + self.w, self.y + dy)

    @property
    def left(self) -> Point:
        return self.left_at(_BOX_H / 2)

    @property
    def right(self) -> Point:
        return self.right_at(_BOX_H / 2)

    @property
    def top(self) -> Point:
        return (self.x + self.w / 2, self.y)

    @property
    def bottom(self) -> Point:
        return (self.x + self.w / 2, self.y + _BOX_H)


@dataclass(frozen=True, slots=True)
class _Canvas:
    boxes: dict[str, _Box]
    bands: list[tuple[str, float]]  # (team title, x)
    box_w: float
    gap: float  # between two bands
    skip_x: float  # how far left of a gap's middle skips run
    top: float  # the bands' top; the lanes run above it
    skip_lanes: int
    recycle_lanes: int
    band_height: float
    side_y: float | None
    width: int
    height: int

    @property
    def band_w(self) -> float:
        return self.box_w + 2 * _PAD

    def gap_middle(self, band: int) -> float:
        """The x of the middle of the gap right of `band`."""
        return _MARGIN + (band + 1) * (self.band_w + self.gap)

    def skip_lane(self, lane: int) -> float:
        return self.top - 10 - _SKIP_LANE * lane

    def recycle_lane(self, lane: int) -> float:
        """The y of a recycle lane; lane 0 is the highest."""
        return self.skip_lane(self.skip_lanes) - _RECYCLE_LANE * (self.recycle_lanes - 1 - lane)


def _crosses(move: Move, band_of: dict[str, int]) -> bool:
    """Whether a move runs from one team's band to another's."""
    _, source, target = move
    return source in band_of and target in band_of and band_of[source] != band_of[target]


def _over_the_top(move: Move, band_of: dict[str, int]) -> bool:
    """Whether a skip runs in a skip lane, over a band between its ends."""
    return move[0] == "skip" and _crosses(move, band_of) and band_of[move[2]] > band_of[move[1]] + 1


@dataclass(frozen=True, slots=True)
class _Line:
    """A line of text in a stage box."""

    text: str
    size: float
    weight: int = 400
    fill: str = "#1f2933"
    css: str = ""

    @property
    def bold(self) -> bool:
        return self.weight >= 600

    @property
    def width(self) -> float:
        return text_width(self.text, self.size, self.bold)

    def svg(self, cx: float, y: float, room: float) -> str:
        """The line centred on `cx`; set smaller when it would not fit in
        `room`, and squeezed into `room` when even the smallest size would not."""
        size, squeeze = self.size, ""
        if self.width > room:
            size = max(_MIN_FONT, int(self.size * room / self.width * 10) / 10)
            if text_width(self.text, size, self.bold) > room:
                squeeze = f' textLength="{room:.1f}" lengthAdjust="spacingAndGlyphs"'
        css = f' class="{self.css}"' if self.css else ""
        weight = f' font-weight="{self.weight}"' if self.weight != 400 else ""
        return (
            f'<text{css} x="{cx:.1f}" y="{y:.1f}" text-anchor="middle" font-size="{size:g}"{weight}'
            f'{squeeze} fill="{self.fill}">{_e(self.text)}</text>'
        )


@dataclass(frozen=True, slots=True)
class _StageText:
    """What a stage's box says and how it is drawn."""

    lines: tuple[_Line, _Line, _Line]
    tooltip: str
    style: str  # the rect's fill and stroke attributes


def _stage_text(stage: StageFigures, flow: Flow, report: Report) -> _StageText:
    definition = flow.stage(stage.stage)
    flags = [m for m in ("initial", "manual", "final") if definition is not None and getattr(definition, m)]
    sla = next((s for s in report.sla if s.stage == stage.stage), None)
    late = sla is not None and sla.overdue_now > 0
    counts = f"{stage.current:,} now · {stage.entered:,} entered"
    tooltip = [f"{stage.stage}: {counts}"]
    if stage.main_line:
        detail = f"{percent(stage.conversion)} advanced"
        tooltip.append(detail)
    else:
        detail = ", ".join(flags) or "side stage"
    if sla is not None:
        detail += f" · SLA {duration_text(sla.sla_days)}"
        breaches = f"{sla.breaches:,} breach" + ("" if sla.breaches == 1 else "es")
        tooltip.append(f"SLA {duration_text(sla.sla_days)}: {breaches}, {sla.overdue_now:,} overdue now")
    # What kind of stage it is, each word once.
    kind = flags if stage.main_line else ["side stage", *flags]
    if kind:
        tooltip.append(", ".join(kind))
    border = "late" if late else "initial" if "initial" in flags else "stage"
    style = f"{_FILLS['main' if stage.main_line else 'side']} {_BORDERS[border]}"
    if "manual" in flags:
        style += f" {_MANUAL_DASH}"
    lines = (
        _Line(stage.stage, 13, weight=600),
        _Line(counts, 12, css="counts"),
        _Line(detail, 11, fill=_RECYCLE if late else "#52606d"),
    )
    return _StageText(lines, "; ".join(tooltip), style)


def _layout(report: Report, texts: Iterable[_StageText], moves: Sequence[Move]) -> _Canvas:
    """Boxes per stage: a band per team, side stages in a row below; room
    in the gaps and above the bands for the moves that run there."""
    band_of = {name: index for index, team in enumerate(report.teams) for name in team.stages}
    widest = max((line.width for text in texts for line in text.lines), default=0.0)
    # a team's title is set above its boxes, in the band
    titles = max((text_width(team.title, 14, bold=True) for team in report.teams), default=0.0)
    widest = max(widest + 2 * _TEXT_PAD, titles + 8 - 2 * _PAD)
    box_w = min(_MAX_BOX_W, max(_MIN_BOX_W, float(ceil(widest))))
    recycles = [m for m in moves if m[0] == "recycle" and _crosses(m, band_of)]
    slots = Counter(band_of[name] for _, source, target in recycles for name in (source, target))
    most = max(slots.values(), default=0)
    skip_x = max(15.0, _FIRST_SLOT + _SLOT * most + 1)
    gap = max(_MIN_GAP, 2 * (skip_x + 12))
    skip_lanes = sum(1 for m in moves if _over_the_top(m, band_of))
    top = _MARGIN + 12 + _SKIP_LANE * skip_lanes + _RECYCLE_LANE * len(recycles)
    band_w = box_w + 2 * _PAD
    column = band_w + gap

    boxes: dict[str, _Box] = {}
    bands: list[tuple[str, float]] = []
    tallest = 0
    for index, team in enumerate(report.teams):
        x = _MARGIN + gap / 2 + index * column
        for row, name in enumerate(team.stages):
            boxes[name] = _Box(x + _PAD, top + _HEAD + row * (_BOX_H + _GAP_Y), box_w, index, row)
        tallest = max(tallest, len(team.stages))
        bands.append((team.title, x))
    band_height = _HEAD + tallest * (_BOX_H + _GAP_Y) - _GAP_Y + 16
    side = [s.stage for s in report.stages if not s.main_line]
    side_y = None
    bottom = top + band_height
    if side:
        side_y = bottom + 48
        for index, name in enumerate(side):
            boxes[name] = _Box(_MARGIN + gap / 2 + _PAD + index * column, side_y, box_w, -1, index)
        bottom = side_y + _BOX_H
    width = ceil(2 * _MARGIN + max(len(report.teams), len(side), 1) * column)
    height = ceil(bottom + _MARGIN)
    return _Canvas(
        boxes, bands, box_w, gap, skip_x, top, skip_lanes, len(recycles), band_height, side_y, width, height
    )


def _curve(start: Point, c1: Point, c2: Point, end: Point) -> str:
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (c1, c2, end))
    return f"M{start[0]:.1f},{start[1]:.1f} C{points}"


def _route(points: Sequence[Point], radius: float = 9.0) -> str:
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


def _recycle_routes(
    recycles: Sequence[Move], canvas: _Canvas, handing_off: set[str]
) -> dict[Move, list[Point]]:
    """The corners of each recycle between two bands (see the geometry note);
    the main line leaves the boxes `handing_off` from the middle of their right side."""
    boxes = canvas.boxes
    # Outermost first: from the furthest band, the lowest row, to the furthest target.
    ranked = sorted(
        recycles,
        key=lambda m: (-boxes[m[1]].band, -boxes[m[1]].row, boxes[m[2]].band, boxes[m[2]].row),
    )
    # A slot in the gap right of each end's band: the recycles leaving the
    # band nearest the main line, outermost first; then those arriving,
    # innermost first.
    slot: dict[tuple[Move, int], float] = {}
    for band in {boxes[name].band for m in ranked for name in m[1:]}:
        ends = [(m, 1) for m in ranked if boxes[m[1]].band == band]
        ends += [(m, 2) for m in reversed(ranked) if boxes[m[2]].band == band]
        for index, end in enumerate(ends):
            slot[end] = canvas.gap_middle(band) - _FIRST_SLOT - _SLOT * index
    # A point on each box's right side: arrivals above departures,
    # arrivals outermost first, departures innermost first.
    anchor: dict[tuple[Move, int], float] = {}
    for name, box in boxes.items():
        ends = [(m, 2) for m in ranked if m[2] == name] + [(m, 1) for m in reversed(ranked) if m[1] == name]
        high, low = _RECYCLE_ENDS if name in handing_off else _RECYCLE_ENDS_FREE
        for index, end in enumerate(ends):
            share = 0.5 if len(ends) == 1 else index / (len(ends) - 1)
            anchor[end] = box.y + high + (low - high) * share
    routes: dict[Move, list[Point]] = {}
    for lane, m in enumerate(ranked):
        source, target = boxes[m[1]], boxes[m[2]]
        y = canvas.recycle_lane(lane)
        out_x, out_y, in_x, in_y = slot[(m, 1)], anchor[(m, 1)], slot[(m, 2)], anchor[(m, 2)]
        routes[m] = [
            (source.x + source.w, out_y),
            (out_x, out_y),
            (out_x, y),
            (in_x, y),
            (in_x, in_y),
            (target.x + target.w, in_y),
        ]
    return routes


def _edge(source: _Box, target: _Box, kind: str, lane: int, canvas: _Canvas) -> str:
    """The path of a move other than a recycle between bands (`lane`: the
    skip lane of a skip over the top)."""
    if source.band == target.band or -1 in (source.band, target.band):
        if kind == "advance":
            s, t = source.bottom, target.top
            return _curve(s, (s[0], s[1] + 12), (t[0], t[1] - 12), t)
        rows = abs(target.y - source.y) / (_BOX_H + _GAP_Y)
        # bulging at most about three quarters of `bow`: not as far as the gap's middle
        bow = min(30 + 10 * rows, (_PAD + canvas.gap / 2 - 8) / 0.75)
        if kind == "skip":  # an arc on the right
            s, t = source.right_at(_ARC_END), target.right_at(_ARC_END)
            return _curve(s, (s[0] + bow, s[1]), (t[0] + bow, t[1]), t)
        s, t = source.left_at(_ARC_END), target.left_at(_ARC_END)  # recycle: an arc on the left
        return _curve(s, (s[0] - bow, s[1]), (t[0] - bow, t[1]), t)
    if kind == "advance":
        s, t = source.right, target.left
        x = canvas.gap_middle(source.band)
        return _route([s, (x, s[1]), (x, t[1]), t])
    s, t = source.right_at(_SKIP_OUT), target.left_at(_SKIP_IN)
    up = canvas.gap_middle(source.band) - canvas.skip_x
    if target.band == source.band + 1:  # next band: straight through the gap
        return _route([s, (up, s[1]), (up, t[1]), t])
    down, y = canvas.gap_middle(target.band - 1) - canvas.skip_x, canvas.skip_lane(lane)
    return _route([s, (up, s[1]), (up, y), (down, y), (down, t[1]), t])


def _stage_box(box: _Box, stage: StageFigures, text: _StageText) -> str:
    cx, room = box.x + box.w / 2, box.w - 2 * _TEXT_PAD
    name, counts, detail = text.lines
    return "\n".join(
        [
            f'<g class="stage" {_data(stage)} data-current="{stage.current}">',
            f"<title>{_e(text.tooltip)}</title>",
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:g}" height="{_BOX_H}" rx="8" {text.style}/>',
            name.svg(cx, box.y + 20, room),
            counts.svg(cx, box.y + 38, room),
            detail.svg(cx, box.y + 54, room),
            "</g>",
        ]
    )


def _legend() -> str:
    """What the lines and the box borders mean, each key drawn as in the flow."""

    def key(name: str, shape: str, label: str) -> str:
        return (
            f'<span data-legend="{name}"><svg class="key" width="30" height="16" viewBox="0 0 30 16" '
            f'aria-hidden="true">{shape}</svg>{_e(label)}</span>'
        )

    def line(kind: str) -> str:
        return f'<path d="M2,8 L28,8" fill="none" {_MOVE_STYLES[kind]}/>'

    def box(*style: str) -> str:
        return f'<rect x="3" y="3" width="24" height="10" rx="3" {" ".join(style)}/>'

    keys = [
        key("advance", line("advance"), "main line"),
        key("skip", line("skip"), "skip"),
        key("recycle", line("recycle"), "recycle"),
        key("stage", box(_FILLS["main"], _BORDERS["stage"]), "stage"),
        key("initial", box(_FILLS["main"], _BORDERS["initial"]), "initial stage"),
        key(
            "manual",
            box(_FILLS["main"], _BORDERS["stage"], _MANUAL_DASH),
            "manual stage (entered only on request)",
        ),
        key("side", box(_FILLS["side"], _BORDERS["stage"]), "side stage"),
        key("late", box(_FILLS["main"], _BORDERS["late"]), "leads past the stage's SLA"),
    ]
    return (
        '<div class="legend">'
        + "".join(keys)
        + '<span class="explain">In a box: leads now · lead-cycles entered in the period · '
        "share advanced.</span></div>"
    )


def _flow_svg(report: Report) -> str:
    flow = report.definition
    # The flow's move graph, exits left out (drawn, they would join every
    # stage to every final one); a move declared twice is drawn once.
    moves: list[Move] = list(
        dict.fromkeys((mv.kind, mv.source, mv.target) for mv in graph.moves(flow) if mv.kind != "exit")
    )
    texts = {stage.stage: _stage_text(stage, flow, report) for stage in report.stages}
    canvas = _layout(report, texts.values(), moves)
    boxes = canvas.boxes
    moves = [m for m in moves if m[1] in boxes and m[2] in boxes]
    band_of = {name: box.band for name, box in boxes.items() if box.band >= 0}
    crossing = [m for m in moves if m[0] == "recycle" and _crosses(m, band_of)]
    handing_off = {m[1] for m in moves if m[0] == "advance" and _crosses(m, band_of)}
    routes = _recycle_routes(crossing, canvas, handing_off)
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
            f'<rect class="team" x="{x:.1f}" y="{canvas.top:g}" width="{canvas.band_w:g}" '
            f'height="{canvas.band_height:.1f}" rx="10" fill="#f0f4f8" stroke="#d9e2ec"/>'
        )
        out.append(
            _Line(title, 14, weight=700, fill="#334e68").svg(
                x + canvas.band_w / 2, canvas.top + 27, canvas.band_w - 8
            )
        )
    if canvas.side_y is not None:
        out.append(
            f'<text x="{_MARGIN + canvas.gap / 2:.1f}" y="{canvas.side_y - 14:.1f}" font-size="13" '
            f'font-weight="700" fill="#334e68">Side stages</text>'
        )
    lane = 0
    for move in moves:
        kind, source, target = move
        if move in routes:
            path = _route(routes[move])
        else:
            path = _edge(boxes[source], boxes[target], kind, lane, canvas)
            lane += _over_the_top(move, band_of)
        out.append(
            f'<path class="move {kind}" data-from="{_e(source)}" data-to="{_e(target)}" '
            f'd="{path}" fill="none" {_MOVE_STYLES[kind]} marker-end="url(#arrow-{kind})">'
            f"<title>{_e(kind)} {_e(source)} → {_e(target)}</title></path>"
        )
    for stage in report.stages:
        if stage.stage in boxes:
            out.append(_stage_box(boxes[stage.stage], stage, texts[stage.stage]))
    out.append("</svg>")
    out.append(_legend())
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
        + _td(duration_text(s.sla_days))
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
