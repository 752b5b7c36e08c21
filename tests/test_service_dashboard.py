"""The dashboard in headless Chromium, against a real server on SQLite and
PostgreSQL: log in through the form, read the funnel from the DOM and
compare it with /v1/report, record an event through the API and watch the
count change on the open page (no reload), open a lead's page; markup in
lead ids comes back as text.  A screenshot is saved in the test's folder.

The browser is driven over the Chrome DevTools Protocol on a pipe
(`--remote-debugging-pipe`: JSON messages ending in NUL on fds 3 and 4), so
no WebSocket library is needed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from conftest import Served
from test_html_report import FLAGS, chromium

from saleflow.runtime.engine import Engine

THE_MODEL = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"
MARKUP = '<img src=x onerror="document.title=1">&amp;'


class Browser:
    """Headless Chromium and one page, over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._out = os.pipe()
        self._in, from_browser_w = os.pipe()

        def fds() -> None:  # the browser reads commands on fd 3 and answers on fd 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        command = [
            chromium(),
            *FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--window-size=1400,1800",
        ]
        self.process = subprocess.Popen(
            command, pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def call(self, method: str, session: bool = False, **params: Any) -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 16)
                assert chunk, "the browser closed the pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                assert "error" not in answer, answer
                return answer["result"]

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30) -> Any:
        """Evaluate until the value is truthy (bounded: the page refreshes every few seconds)."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.js(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.25)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(AssertionError):
            self.call("Browser.close")
        os.close(self._out)
        os.close(self._in)
        self.process.wait(timeout=30)


def _seed(service: Served) -> None:
    """A flow, an overdue lead whose id holds markup, a lead that an event will move."""
    with service.client("admin") as admin:
        assert admin.post("/v1/flows", content=THE_MODEL.read_bytes()).status_code == 201
    with Engine.open(db=service.db, actor="seed") as engine:
        at = datetime(2026, 1, 10, tzinfo=UTC)
        engine.add_lead(MARKUP, flow="the_model", at=at, email="x@y.example", owner="kim")
        engine.advance(MARKUP, to="contacting", force=True, reason="called back", at=at)
    with service.client("write") as api:
        for n in range(3):
            assert (
                api.post(
                    "/v1/leads", json={"id": f"web-{n}", "fields": {"email": f"{n}@a.example"}}
                ).status_code
                == 201
            )


FUNNEL = "JSON.stringify(Array.from(document.querySelectorAll('#funnel g.bar')).map(g => [g.dataset.stage, Number(g.dataset.entered)]))"


def test_the_dashboard_is_live_in_a_browser(service: Served, tmp_path: Path) -> None:
    _seed(service)
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.goto(service.base + "/")
        assert browser.js("document.querySelector('form.login') !== null"), "not logged in: the login form"
        browser.js(
            f"document.querySelector('input[name=token]').value = {json.dumps(service.tokens['read'])};"
            "document.querySelector('form.login').submit(); true"
        )
        assert browser.wait_for("document.getElementById('live') !== null"), browser.js(
            "document.body.innerText"
        )
        assert browser.js("location.pathname + location.search") == "/", "no token in the URL"
        assert browser.js("document.cookie") == "", "the token cookie is HttpOnly"

        with service.client("read") as api:
            report = api.get("/v1/report", params={"flow": "the_model"}).json()
        entered = {s["stage"]: s["entered"] for s in report["stages"]}
        funnel = json.loads(browser.js(FUNNEL))
        assert funnel and all(entered[stage] == count for stage, count in funnel), (funnel, entered)
        assert dict(funnel)["nurturing"] == 0

        # Markup in a lead id is text on the page, and the overdue list names it.
        overdue = json.loads(
            browser.js(
                "JSON.stringify(Array.from(document.querySelectorAll('#overdue tr[data-lead] a')).map(a => a.textContent))"
            )
        )
        assert overdue == [MARKUP]
        assert browser.js("document.querySelectorAll('#overdue img').length") == 0
        assert browser.js("document.title") != "1"

        # An event through the API moves a lead; the open page shows it.
        with service.client("write") as api:
            moved = api.post("/v1/leads/web-1/events", json={"event": "web_visit"})
            assert moved.status_code == 200 and moved.json()["stage"] == "nurturing"
        changed = browser.wait_for(
            "(document.querySelector('#funnel g.bar[data-stage=nurturing]') || {dataset: {}}).dataset.entered === '1'"
        )
        assert changed, browser.js(FUNNEL)
        assert browser.js("performance.getEntriesByType('navigation')[0].type") != "reload"
        with service.client("read") as api:
            report = api.get("/v1/report", params={"flow": "the_model"}).json()
        entered = {s["stage"]: s["entered"] for s in report["stages"]}
        assert all(entered[stage] == count for stage, count in json.loads(browser.js(FUNNEL)))
        shot = tmp_path / "dashboard.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000
        resources = json.loads(
            browser.js("JSON.stringify(performance.getEntriesByType('resource').map(r => r.name))")
        )
        assert all(name.startswith(service.base) for name in resources), resources

        # A lead's page: history and next moves with why not.
        browser.js("document.querySelector('#overdue tr[data-lead] a').click(); true")
        assert browser.wait_for("document.getElementById('lead-id') !== null")
        assert browser.js("document.getElementById('lead-id').textContent") == MARKUP
        assert browser.js("location.pathname") == "/leads/" + quote(MARKUP, safe="")
        history = browser.js(
            "Array.from(document.querySelectorAll('#history td:nth-child(4)')).map(td => td.textContent)"
        )
        assert history[:1] == ["awareness"] and "contacting" in history
        blocked = browser.js("document.querySelectorAll('#next tr[data-allowed=false]').length")
        assert blocked >= 1 and "is" in browser.js(
            "document.querySelector('#next tr[data-allowed=false] td:last-child').textContent"
        )
        browser.screenshot(tmp_path / "lead.png")
    finally:
        browser.close()


def test_pages_need_a_login_and_keep_tokens_out_of_urls(service: Served) -> None:
    _seed(service)
    with service.client(None) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and 'action="/login"' in page.text and "web-1" not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert anonymous.get("/dashboard/live").status_code == 401
        assert anonymous.get("/leads/web-1").text.count('action="/login"') == 1
        bad = anonymous.post(
            "/login", content=b"token=sft_nope", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert bad.status_code == 401 and "not a live saleflow token" in bad.text
        foreign = anonymous.post("/login", content=b"token=x", headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        good = anonymous.post(
            "/login",
            content=f"token={service.tokens['read']}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert good.status_code == 303 and good.headers["location"] == "/"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        # the cookie opens the pages, never the API
        lead = anonymous.get("/leads/" + quote(MARKUP, safe=""))
        assert lead.status_code == 200 and MARKUP not in lead.text and "&lt;img src=x" in lead.text
        assert anonymous.get("/v1/leads").status_code == 401
        live = anonymous.get("/dashboard/live").json()
        assert live["report"]["flow"] == "the_model" and MARKUP not in live["overdue_html"]
