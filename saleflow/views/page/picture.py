"""The report page's picture of the flow, drawn as inline SVG by our own layout.

Layer 5.  Teams are columns, stages boxes sized to their text with live
counts, skips and recycles arrows routed clear of the main line, with a
legend; no Mermaid or Graphviz at run time.  Every stage box carries
``data-stage``, ``data-entered``, ``data-conversion`` and ``data-current``.
The moves drawn are the model's move graph (`model.graph`), the same one the
checker, the compiler and `diagram` read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import ceil

from ...model import graph
from ...model.expr import duration_text
from ...model.flow import Flow
from ...wording import plural
from ..colours import MOVE_COLOURS
from ..report import Report, StageFigures, percent
from .markup import esc, figures_attrs
from .metrics import text_width

_RECYCLE = MOVE_COLOURS["recycle"]  # also the colour of a stage past its SLA

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
    "advance": f'stroke="{MOVE_COLOURS["advance"]}" stroke-width="1.6"',
    "skip": f'stroke="{MOVE_COLOURS["skip"]}" stroke-width="1.6" stroke-dasharray="7 4"',
    "recycle": f'stroke="{MOVE_COLOURS["recycle"]}" stroke-width="1.6" stroke-dasharray="3 3"',
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
            f'{squeeze} fill="{self.fill}">{esc(self.text)}</text>'
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
        breaches = plural(sla.breaches, "breach", "breaches", grouped=True)
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
            f'<g class="stage" {figures_attrs(stage)} data-current="{stage.current}">',
            f"<title>{esc(text.tooltip)}</title>",
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
            f'aria-hidden="true">{shape}</svg>{esc(label)}</span>'
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


def flow_picture(report: Report) -> str:
    """The flow as an SVG, then its legend."""
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
    for kind in ("advance", "skip", "recycle"):
        out.append(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{MOVE_COLOURS[kind]}"/></marker>'
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
            f'<path class="move {kind}" data-from="{esc(source)}" data-to="{esc(target)}" '
            f'd="{path}" fill="none" {_MOVE_STYLES[kind]} marker-end="url(#arrow-{kind})">'
            f"<title>{esc(kind)} {esc(source)} → {esc(target)}</title></path>"
        )
    for stage in report.stages:
        if stage.stage in boxes:
            out.append(_stage_box(boxes[stage.stage], stage, texts[stage.stage]))
    out.append("</svg>")
    out.append(_legend())
    return "\n".join(out)
