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
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import kpi_day

from saleflow.cli import main
from saleflow.engine import Engine
from saleflow.html import render_html
from saleflow.parse import parse_flow
from saleflow.report import report_for

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
