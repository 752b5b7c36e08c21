"""The HTML report, in a real browser: headless Chromium (Debian's
``chromium`` package) loads the file offline, the figures are read back
from the DOM it built and checked against the JSON report, and a screenshot
is saved.  Without Chromium the browser tests skip, except under CI (``CI``
set), where they fail: `.ci/run` installs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from html import unescape
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import kpi_day

from saleflow.cli.app import main
from saleflow.language.parse import parse_flow
from saleflow.runtime.engine import Engine
from saleflow.views.page import render_html
from saleflow.views.report import report_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
NOW = kpi_day(10).isoformat()


def chromium() -> str:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"{CHROMIUM} is missing: apt-get install chromium (the HTML report is tested in a browser)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class Elements(HTMLParser):
    """Every element with attributes, and the text inside each `<text>`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str]]] = []
        self.texts: list[tuple[dict[str, str], str]] = []
        self._open: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        self.found.append((tag, values))
        if tag == "text":
            self._open, self._text = values, []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "text" and self._open is not None:
            self.texts.append((self._open, "".join(self._text)))
            self._open = None

    def having(self, tag: str, css: str) -> list[dict[str, str]]:
        return [a for t, a in self.found if t == tag and css in a.get("class", "").split()]


def parse(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    return elements


def expected_percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


@pytest.fixture
def rendered(tmp_path: Path, sqlite_url: str) -> tuple[Path, dict[str, Any]]:
    """The kpi history's report as an HTML file (by region) and as JSON."""
    from conftest import build_kpi_history

    build_kpi_history(sqlite_url)
    runner = CliRunner()
    base = ["--db", sqlite_url, "--now", NOW, "report", "--by", "region"]
    page = tmp_path / "report.html"
    result = runner.invoke(main, [*base, "--format", "html", "-o", str(page)])
    assert result.exit_code == 0, result.output
    as_json = runner.invoke(main, [*base, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    return page, json.loads(as_json.output)


def test_funnel_and_flow_in_the_browser_match_the_json(
    rendered: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    page, report = rendered
    dom = run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    elements = parse(dom)
    main_line = [s for s in report["stages"] if s["main_line"]]

    bars = elements.having("g", "bar")
    assert [b["data-stage"] for b in bars] == [s["stage"] for s in main_line]
    labels = [(a, text) for a, text in elements.texts if "label" in a.get("class", "").split()]
    assert [a["data-stage"] for a, _ in labels] == [s["stage"] for s in main_line]
    for bar, (label, text), stage in zip(bars, labels, main_line, strict=True):
        for element in (bar, label):
            assert int(element["data-entered"]) == stage["entered"]
            conversion = element["data-conversion"]
            assert (None if conversion == "" else float(conversion)) == stage["conversion"]
        assert text == f"{stage['entered']:,} entered · {expected_percent(stage['conversion'])} advanced"
    # Each main-line stage has a bar of its own, and only the empty ones are 0 wide.
    rects = [a for t, a in elements.found if t == "rect" and "data-stage" in a]
    assert [float(r["width"]) > 0 for r in rects] == [s["entered"] > 0 for s in main_line]

    boxes = {b["data-stage"]: b for b in elements.having("g", "stage")}
    assert set(boxes) == {s["stage"] for s in report["stages"]}
    for stage in report["stages"]:
        box = boxes[stage["stage"]]
        assert (int(box["data-current"]), int(box["data-entered"])) == (stage["current"], stage["entered"])
    moves = {(a["data-from"], a["data-to"], a["class"]) for a in elements.having("path", "move")}
    assert ("new", "sql", "move skip") in moves
    assert ("sql", "mql", "move recycle") in moves
    assert ("mql", "sql", "move advance") in moves

    targets = {a["data-target"]: a["data-met"] for t, a in elements.found if t == "tr" and "data-target" in a}
    assert targets == {
        t["target"]: "" if t["met"] is None else str(t["met"]).lower() for t in report["targets"]
    }
    for section in ("funnel", "flow", "stages", "teams", "targets", "sla", "recycled", "channels", "groups"):
        assert f'id="{section}"' in dom

    shot = tmp_path / "report.png"
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri())
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a page with charts, not a blank one


def test_the_page_is_self_contained(rendered: tuple[Path, dict[str, Any]]) -> None:
    page = rendered[0].read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "@import" not in page
    assert not re.search(r"\b(src|href)\s*=", page)
    assert not re.search(r"https?://", page)
    assert all(ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", page))


def test_text_is_escaped(sqlite_url: str) -> None:
    flow = (
        'flow esc "<script>alert(1)</script> & co"\n'
        "field source text\n"
        'team t "T <b>eam</b>" { stage s initial  stage u manual }\n'
    )
    with Engine.open(db=sqlite_url, now=kpi_day(0)) as engine:
        engine.deploy(parse_flow(flow, "esc.flow"))
        engine.add_lead("x", source="<img src=x onerror=alert(1)>", at=kpi_day(0))
        page = render_html(report_for(engine, by="source"))
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>eam" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "T &lt;b&gt;eam&lt;/b&gt;" in page


def test_channels_without_any_channel_say_so_instead_of_an_empty_table(sqlite_url: str) -> None:
    flow = 'flow plain\nfield ok bool default false\nteam t "T" { stage s initial  stage u when ok }\n'
    with Engine.open(db=sqlite_url, now=kpi_day(0)) as engine:
        engine.deploy(parse_flow(flow, "plain.flow"))
        engine.add_lead("x", ok=True, at=kpi_day(0))
        page = render_html(report_for(engine))
    section = page[page.index('id="channels"') :]
    section = section[: section.index("</section>")]
    assert "No entry had an event with a channel before it" in section and "<table" not in section


# --------------------------------------------------------------------------
# The flow drawing: text in its boxes, the legend, tooltips, recycle routes
# --------------------------------------------------------------------------

LONG_NAME = "onboarding_after_a_very_long_negotiation_phase"
REPRO_FLOW = """\
flow repro version 1 "Long names, a manual stage, a side stage and recycles"

field email        text
field owner        text
field ok           bool  default false
field lost_reason  one of [timing, no_budget]

event call  channel phone

team marketing "Marketing" {
  stage awareness               initial
  stage marketingqualifiedlead  when email is set
}

team sales "Sales" {
  stage contacting  when owner is set  sla 2 days
  stage proposal    when ok  manual
  stage won         when call >= 1
}

stage lost  final  when lost_reason is set

recycle contacting, proposal -> marketingqualifiedlead  when lost_reason == timing
"""


def repro_page(url: str, flow_text: str = REPRO_FLOW) -> str:
    """The HTML report of `flow_text` on day 10, after a tick: one lead in
    each of the first two stages, one in `contacting` past its SLA, two lost."""
    with Engine.open(db=url, now=kpi_day(10)) as engine:
        engine.deploy(parse_flow(flow_text, "repro.flow"))
        engine.add_lead("a", at=kpi_day(0))
        engine.add_lead("b", at=kpi_day(0), email="b@x.example")
        engine.add_lead("c", at=kpi_day(0), email="c@x.example", owner="ann")
        for lead in ("d", "e"):
            engine.add_lead(lead, at=kpi_day(0), email="x@x.example", owner="ann", lost_reason="no_budget")
            engine.advance(lead, to="lost", at=kpi_day(1))
        assert engine.tick().sla_breaches == 1  # c, in contacting since day 0
        return render_html(report_for(engine))


def flow_page(url: str, path: Path) -> str:
    """The HTML report of the flow file `path`, no leads."""
    with Engine.open(path, db=url, now=kpi_day(0)) as engine:
        return render_html(report_for(engine))


def stage_groups(page: str) -> dict[str, str]:
    """The markup of each stage box of the flow drawing, by stage."""
    return dict(re.findall(r'<g class="stage" data-stage="([^"]*)"(.*?)</g>', page, re.S))


def attrs(tag: str) -> dict[str, str]:
    return {k: unescape(v) for k, v in re.findall(r'([\w:-]+)="([^"]*)"', tag)}


def find(pattern: str, text: str, group: int = 0) -> str:
    """The first match of `pattern` in `text` (there must be one)."""
    match = re.search(pattern, text, re.S)
    assert match is not None, (pattern, text[:500])
    return match.group(group)


def rect(markup: str) -> dict[str, str]:
    """The attributes of the first `<rect>` in `markup`."""
    return attrs(find(r"<rect [^>]*>", markup))


LONG_FLOW = REPRO_FLOW.replace("stage won ", f"stage {LONG_NAME} ")


@pytest.mark.parametrize(("flow", "name"), [(REPRO_FLOW, "marketingqualifiedlead"), (LONG_FLOW, LONG_NAME)])
def test_stage_text_fits_its_box(sqlite_url: str, flow: str, name: str) -> None:
    """Every line of a stage box, at 0.62 em a character (wider than the
    average lowercase letter of the widest common sans-serif faces), fits
    between the box's borders; or is squeezed to fit with textLength."""
    boxes = stage_groups(repro_page(sqlite_url, flow))
    assert name in boxes
    for stage, markup in boxes.items():
        width = float(rect(markup)["width"])
        for tag, text in re.findall(r"(<text [^>]*>)([^<]*)</text>", markup):
            a = attrs(tag)
            if "textLength" in a:
                assert float(a["textLength"]) <= width - 8, (stage, text)
                continue
            needed = len(unescape(text)) * 0.62 * float(a["font-size"])
            assert needed <= width - 8, (stage, text, needed, width)
    # The label is the stage's name, whole.
    assert f">{name}</text>" in boxes[name]


def test_stage_tooltips_say_each_thing_once(sqlite_url: str) -> None:
    page = repro_page(sqlite_url)
    titles = {
        stage: unescape(find(r"<title>(.*?)</title>", markup, 1))
        for stage, markup in stage_groups(page).items()
    }
    assert titles["lost"] == "lost: 2 now · 2 entered; side stage, final"
    assert titles["awareness"] == "awareness: 1 now · 5 entered; 80.0% advanced; initial"
    assert titles["proposal"] == "proposal: 0 now · 0 entered; - advanced; manual"
    assert titles["contacting"] == (
        "contacting: 1 now · 3 entered; 0.0% advanced; SLA 2 days: 1 breach, 1 overdue now"
    )
    for title in titles.values():
        words = re.findall(r"\w+", title.split(":", 1)[1])
        for word in ("entered", "advanced", "SLA", "initial", "manual", "final", "side"):
            assert words.count(word) <= 1, title


def test_the_legend_has_a_key_for_every_line_and_box_drawn(sqlite_url: str) -> None:
    page = repro_page(sqlite_url)
    legend = find(r'<div class="legend">(.*?)</div>', page, 1)
    keys = dict(re.findall(r'<span data-legend="([^"]*)">(.*?)</span>', legend, re.S))
    assert {"advance", "skip", "recycle", "stage", "initial", "manual", "side", "late"} <= set(keys)

    def look(tag: str) -> tuple[str | None, ...]:
        a = attrs(tag)
        return tuple(a.get(k) for k in ("fill", "stroke", "stroke-width", "stroke-dasharray"))

    key_boxes = {look(find(r"<rect [^>]*>", k)) for k in keys.values() if "<rect" in k}
    key_lines = {look(find(r"<path [^>]*>", k)) for k in keys.values() if "<path" in k}
    boxes = stage_groups(page)
    drawn_boxes = {look(find(r"<rect [^>]*>", m)) for m in boxes.values()}
    drawn_lines = {look(tag) for tag in re.findall(r'<path class="move [^>]*>', page)}
    # the repro flow has every kind of box: initial, plain, manual, side, late
    assert len(drawn_boxes) == 5
    assert drawn_boxes <= key_boxes
    assert drawn_lines <= key_lines
    # the manual stage's dashed border and the initial stage's thick one are explained
    manual, initial, plain = rect(boxes["proposal"]), rect(boxes["awareness"]), rect(boxes["won"])
    assert "stroke-dasharray" in manual and "stroke-dasharray" in keys["manual"]
    assert float(initial["stroke-width"]) > float(plain["stroke-width"])
    assert f'stroke-width="{initial["stroke-width"]}"' in keys["initial"]
    assert "manual stage" in keys["manual"] and "initial stage" in keys["initial"]


# Paths of the drawing as polylines: it uses absolute M, L, Q and C only.
Point = tuple[float, float]


def polyline(d: str, steps: int = 16) -> list[Point]:
    """The points of a path's `d`, each curve as `steps` straight pieces."""
    tokens = re.findall(r"[MLQC]|-?\d+(?:\.\d+)?", d)
    points: list[Point] = []
    index = 0
    while index < len(tokens):
        command = tokens[index]
        count = {"M": 1, "L": 1, "Q": 2, "C": 3}[command]
        values = [float(t) for t in tokens[index + 1 : index + 1 + 2 * count]]
        controls = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
        index += 1 + 2 * count
        if command in "ML":
            points.append(controls[0])
            continue
        start = points[-1]
        for step in range(1, steps + 1):
            t = step / steps
            if command == "Q":
                (cx, cy), (ex, ey) = controls
                x = (1 - t) ** 2 * start[0] + 2 * (1 - t) * t * cx + t**2 * ex
                y = (1 - t) ** 2 * start[1] + 2 * (1 - t) * t * cy + t**2 * ey
            else:
                (ax, ay), (bx, by), (ex, ey) = controls
                x = (1 - t) ** 3 * start[0] + 3 * (1 - t) ** 2 * t * ax + 3 * (1 - t) * t**2 * bx + t**3 * ex
                y = (1 - t) ** 3 * start[1] + 3 * (1 - t) ** 2 * t * ay + 3 * (1 - t) * t**2 * by + t**3 * ey
            points.append((x, y))
    return points


def segments_meet(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether the segments p1-p2 and q1-q2 cross or touch."""

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def between(o: Point, a: Point, b: Point) -> bool:
        return min(a[0], b[0]) <= o[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= o[1] <= max(a[1], b[1])

    d1, d2, d3, d4 = cross(q1, q2, p1), cross(q1, q2, p2), cross(p1, p2, q1), cross(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0)) and ((d3 > 0) != (d4 > 0)) and 0 not in (d1, d2, d3, d4):
        return True
    return any(
        d == 0 and between(o, a, b)
        for d, o, a, b in ((d1, p1, q1, q2), (d2, p2, q1, q2), (d3, q1, p1, p2), (d4, q2, p1, p2))
    )


def lines_meet(a: list[Point], b: list[Point]) -> bool:
    return any(segments_meet(p1, p2, q1, q2) for p1, p2 in pairwise(a) for q1, q2 in pairwise(b))


def on_border(point: Point, box: tuple[float, float, float, float]) -> bool:
    x, y, w, h = box
    inside = x - 0.5 <= point[0] <= x + w + 0.5 and y - 0.5 <= point[1] <= y + h + 0.5
    return (
        inside
        and min(abs(point[0] - x), abs(point[0] - x - w), abs(point[1] - y), abs(point[1] - y - h)) < 0.5
    )


def strictly_inside(point: Point, box: tuple[float, float, float, float]) -> bool:
    x, y, w, h = box
    return x + 1 < point[0] < x + w - 1 and y + 1 < point[1] < y + h - 1


FLOW_FILES = sorted((Path(__file__).resolve().parent.parent / "flows").glob("*.flow"))
# Recycles from every row of a band, to two earlier bands, to the first box
# of a band, within a band; skips beside and over them.
MANY_RECYCLES = """\
flow many version 1 "Many recycles"

field x  bool  default false
field r  one of [a, b]

team one "Team One With A Rather Long Title Indeed" {
  stage a1  initial
  stage a2  when x
  stage a3  when x
}
team two "Two" {
  stage b1  when x
  stage b2  when x  manual
}
team three "Three" {
  stage c1  when x
  stage c2  when x
  stage c3  when x
}
stage gone  final

skip a1 -> b2  when r == a
skip a2 -> c2  when r == b
skip a1 -> a3  when r == b
recycle b1, b2 -> a2      when r == a
recycle c1, c2, c3 -> a2  when r == b
recycle c3 -> b1          when r == a
recycle c2 -> c1          when r == a
recycle b2 -> a1          when r == b
"""


@pytest.mark.parametrize("which", ["repro", "many", *(p.stem for p in FLOW_FILES)])
def test_recycles_keep_clear_of_the_main_line(sqlite_url: str, which: str, tmp_path: Path) -> None:
    """A recycle neither starts nor ends where a main-line arrow does, never
    crosses the main line, runs through no stage box, and joins its own two
    boxes."""
    if which == "repro":
        page = repro_page(sqlite_url)
    elif which == "many":
        (tmp_path / "many.flow").write_text(MANY_RECYCLES, encoding="utf-8")
        page = flow_page(sqlite_url, tmp_path / "many.flow")
    else:
        page = flow_page(sqlite_url, next(p for p in FLOW_FILES if p.stem == which))
    boxes = {}
    for stage, markup in stage_groups(page).items():
        box = rect(markup)
        boxes[stage] = (float(box["x"]), float(box["y"]), float(box["width"]), float(box["height"]))
    moves = [attrs(tag) for tag in re.findall(r'<path class="move [^>]*>', page)]
    main_line = [polyline(m["d"]) for m in moves if m["class"] == "move advance"]
    recycles = [(m, polyline(m["d"])) for m in moves if m["class"] == "move recycle"]
    assert recycles and main_line
    ends = [point for line in main_line for point in (line[0], line[-1])]
    for move, line in recycles:
        what = f"recycle {move['data-from']} -> {move['data-to']}"
        assert on_border(line[0], boxes[move["data-from"]]), what
        assert on_border(line[-1], boxes[move["data-to"]]), what
        for point in (line[0], line[-1]):
            assert all(abs(point[0] - e[0]) + abs(point[1] - e[1]) > 4 for e in ends), what
        assert not any(lines_meet(line, other) for other in main_line), what
        assert not any(strictly_inside(p, box) for p in line for box in boxes.values()), what


def test_stage_text_fits_its_box_in_the_browser(sqlite_url: str, tmp_path: Path) -> None:
    """Chromium measures every line of every stage box: none reaches past
    the box's borders (a copy of the page with a measuring script)."""
    page = repro_page(sqlite_url, LONG_FLOW)
    script = """<pre id="fit"></pre><script>
const out = [];
for (const g of document.querySelectorAll("svg.flow g.stage")) {
  const r = g.querySelector("rect").getBBox();
  for (const t of g.querySelectorAll("text")) {
    const b = t.getBBox();
    out.push([g.dataset.stage, t.textContent, b.x - r.x, r.x + r.width - b.x - b.width, b.width]);
  }
}
document.getElementById("fit").textContent = JSON.stringify(out);
</script>"""
    copy = tmp_path / "measured.html"
    copy.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    dom = run_chromium(tmp_path, "--dump-dom", copy.as_uri()).stdout
    measured = json.loads(unescape(find(r'<pre id="fit">(.*?)</pre>', dom, 1)))
    assert len(measured) == 3 * 6  # three lines in each of six boxes
    assert {row[0] for row in measured} >= {"marketingqualifiedlead", LONG_NAME}
    for stage, text, left, right, width in measured:
        assert width > 0 and left >= 2 and right >= 2, (stage, text, left, right)
