"""The dashboard: the HTML report, live, plus overdue leads and a page per lead.

The report is drawn by `saleflow.views.page.render_html`, the same code as
`report --format html`, so there is one look: this module takes that page
apart (its style and its body) and puts the body inside a frame of its own
with a flow menu, the overdue leads by name and a live indicator.
`/dashboard.js` replaces the report and the overdue list every few seconds
from `/dashboard/live`.  A person logs in with a token through a form; the
token is kept in an HttpOnly, SameSite=Strict cookie, never in a URL.  All
text is escaped (lead ids and fields may hold markup); links to leads are
percent-encoded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..errors import NotFound, SaleflowError
from ..runtime.engine import Engine
from ..views.page import CSS as REPORT_CSS
from ..views.page import render_html
from ..views.report import overdue_leads, report_for
from ..views.serialise import report_json, value_text
from .auth import COOKIE, Caller, from_cookie, identify
from .context import engine_of
from .errors import error_response
from .script import SCRIPT

router = APIRouter(include_in_schema=False)

REFRESH_MS = 3000
MAX_OVERDUE_SHOWN = 200
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes a form post's Origin "null"
    "Cache-Control": "no-store",
}
_EXTRA_CSS = """
nav.top { display: flex; gap: 16px; align-items: center; margin: 0 0 16px; color: #52606d; }
nav.top form { margin-left: auto; }
#live-state.live { color: #1f6f2a; }
form.login { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 20px; max-width: 480px; }
form.login input[type=password] { width: 100%; padding: 6px; margin: 8px 0 12px; font: inherit; }
.error { color: #a61b1b; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{REPORT_CSS}{_EXTRA_CSS}</style>\n</head>\n<body>\n"
        f"{body}\n</body>\n</html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _report_body(page: str) -> str:
    """The body of a page of `render_html` (its style is REPORT_CSS)."""
    start, end = page.index("<body>") + len("<body>"), page.rindex("</body>")
    return page[start:end].strip()


def _login(message: str | None = None, status: int = 200) -> HTMLResponse:
    note = f'<p class="error" id="login-error">{_e(message)}</p>' if message else ""
    return _page(
        "saleflow: log in",
        "<header><h1>saleflow</h1></header>"
        '<form class="login" method="post" action="/login">'
        "<p>Log in with a saleflow token (<code>saleflow token add NAME --scope read</code>).</p>"
        f'{note}<label>Token<input type="password" name="token" autocomplete="off" required></label>'
        '<button type="submit">Log in</button></form>',
        status,
    )


def _nav(engine: Engine, caller: Caller, current: str | None, live: bool = False) -> str:
    links = " ".join(
        f'<a href="/?flow={quote(name, safe="")}"'
        + (' aria-current="page"' if name == current else "")
        + f">{_e(name)}</a>"
        for name in engine.store.flow_names()
    )
    return (
        f'<nav class="top"><strong>saleflow</strong> <span>flows: {links or "none"}</span>'
        + ('<span id="live-state">live</span>' if live else "")
        + f'<form method="post" action="/logout"><span>{_e(caller.name)} ({_e(caller.scope)})</span> '
        '<button type="submit">Log out</button></form></nav>'
    )


def _flow_name(engine: Engine, flow: str | None) -> str | None:
    if flow:
        return flow
    names = engine.store.flow_names()
    return names[0] if names else None


def _overdue_html(engine: Engine, flow: str) -> str:
    rows = []
    count = 0
    for o in overdue_leads(engine, flow=flow):
        count += 1
        if count > MAX_OVERDUE_SHOWN:
            continue
        lead = o.lead
        rows.append(
            f'<tr data-lead="{_e(lead.id)}"><td><a href="/leads/{quote(lead.id, safe="")}">{_e(lead.id)}</a></td>'
            f'<td>{_e(lead.stage)}</td><td class="n late">{o.overdue_days:,.1f}</td>'
            f"<td>{_e(o.due_at.isoformat(timespec='minutes'))}</td></tr>"
        )
    if not count:
        return '<h2>Overdue leads</h2><p class="note">No lead is past its stage\'s SLA.</p>'
    more = (
        f'<p class="note">… and {count - MAX_OVERDUE_SHOWN:,} more (GET /v1/leads?overdue=true).</p>'
        if count > MAX_OVERDUE_SHOWN
        else ""
    )
    return (
        f"<h2>Overdue leads: {count:,}</h2><table><tr><th>lead</th><th>stage</th>"
        f'<th class="n">days overdue</th><th>due</th></tr>{"".join(rows)}</table>{more}'
    )


def _live(engine: Engine, flow: str) -> dict[str, Any]:
    report = report_for(engine, flow)
    return {
        "flow": flow,
        "generated_at": datetime.now(UTC).isoformat(),
        "report": report_json(report),
        "html": _report_body(render_html(report)),
        "overdue_html": _overdue_html(engine, flow),
    }


@router.get("/")
def home(request: Request, flow: str | None = None) -> Response:
    caller = from_cookie(request)
    if caller is None:
        return _login()
    engine = engine_of(request)
    name = _flow_name(engine, flow)
    if name is None:
        body = '<p class="note">No flow is deployed yet: <code>saleflow deploy FLOW</code>.</p>'
        return _page("saleflow", _nav(engine, caller, None) + body)
    try:
        live = _live(engine, name)
    except SaleflowError as err:
        return _page("saleflow", _nav(engine, caller, name) + f'<p class="error">{_e(err.message)}</p>', 404)
    body = (
        _nav(engine, caller, name, live=True)
        + f'<main id="live" data-flow="{_e(name)}" data-every="{REFRESH_MS}">'
        + f'<section id="overdue">{live["overdue_html"]}</section>'
        + f'<div id="report">{live["html"]}</div></main>'
        + '<script src="/dashboard.js"></script>'
    )
    return _page(f"{name} — saleflow dashboard", body)


@router.get("/dashboard/live")
def live(request: Request, flow: str | None = None) -> Response:
    if from_cookie(request) is None:
        return error_response(401, "unauthorized", "log in first")
    engine = engine_of(request)
    name = _flow_name(engine, flow)
    if name is None:
        raise NotFound("no flow is deployed; run `saleflow deploy FLOW` first")
    return JSONResponse(_live(engine, name), headers={"Cache-Control": "no-store"})


@router.get("/dashboard.js")
def script() -> Response:
    return Response(
        SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def _same_origin(request: Request) -> bool:
    """A form post from a page of this server (no Origin: not a browser's cross-site post)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


@router.post("/login")
async def login(request: Request) -> Response:
    if not _same_origin(request):
        return error_response(403, "forbidden", "log in from this server's own page")
    try:
        form = parse_qs((await request.body()).decode("utf-8"), max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        return _login("That was not a login form.", 400)
    token = (form.get("token") or [""])[0].strip()
    from starlette.concurrency import run_in_threadpool

    caller = await run_in_threadpool(identify, request, token)
    if caller is None:
        return _login("That token is not a live saleflow token.", 401)
    answer = RedirectResponse("/", status_code=303, headers=HEADERS)
    answer.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return answer


@router.post("/logout")
def logout(request: Request) -> Response:
    answer = RedirectResponse("/", status_code=303, headers=HEADERS)
    answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return answer


@router.get("/leads/{lead_id:path}")
def lead_page(lead_id: str, request: Request) -> Response:
    caller = from_cookie(request)
    if caller is None:
        return _login()
    engine = engine_of(request)
    try:
        view = engine.lead(lead_id)
        entries = engine.history(lead_id)
    except SaleflowError as err:
        status = 404 if isinstance(err, NotFound) else 400
        return _page(
            "saleflow: lead", _nav(engine, caller, None) + f'<p class="error">{_e(err.message)}</p>', status
        )
    facts = "".join(f"<tr><th>{_e(k)}</th><td>{_e(value_text(v))}</td></tr>" for k, v in view.fields.items())
    events = "".join(f'<tr><th>{_e(k)}</th><td class="n">{v:,}</td></tr>' for k, v in view.events.items())
    moves = "".join(
        f'<tr data-to="{_e(v.to)}" data-allowed="{str(v.allowed).lower()}"><td>{_e(v.kind)}</td><td>{_e(v.to)}</td>'
        + (
            f'<td class="met">allowed{"" if v.automatic else " (on request)"}</td><td></td>'
            if v.allowed
            else '<td class="missed">blocked</td><td>'
            + "<br>".join(_e(b.message) for b in v.blockers)
            + "</td>"
        )
        + "</tr>"
        for v in view.next
    )
    history = "".join(
        f'<tr><td class="n">{e.lead_seq}</td><td>{_e(e.at.isoformat(timespec="seconds"))}</td>'
        f"<td>{_e(e.from_stage or '-')}</td><td>{_e(e.to_stage)}</td><td>{_e(e.kind or '')}</td>"
        f"<td>{_e(e.actor)}</td><td>{_e(e.reason or '')}</td></tr>"
        for e in entries
    )
    sla = ""
    if view.due_at is not None:
        state = "overdue" if view.overdue else "due"
        sla = f' · SLA {state} <span class="{"late" if view.overdue else ""}">{_e(view.due_at.isoformat(timespec="minutes"))}</span>'
    body = (
        _nav(engine, caller, view.flow)
        + f'<header><h1 id="lead-id">{_e(view.id)}</h1><p class="meta">flow <code>{_e(view.flow)}</code> '
        f"version {view.version} · stage <strong>{_e(view.stage)}</strong>"
        f"{' (' + _e(view.team) + ')' if view.team else ''} · cycle {view.cycle} · score {_e(view.score)}"
        f" · since {_e(view.entered_at.isoformat(timespec='seconds'))}{sla}</p></header>"
        f'<section id="next"><h2>Next moves</h2><table><tr><th>move</th><th>to</th><th>verdict</th>'
        f"<th>why not</th></tr>{moves}</table></section>"
        f'<section id="fields"><h2>Fields</h2><table>{facts}</table></section>'
        f'<section id="events"><h2>Events this cycle</h2><table>{events}</table></section>'
        f'<section id="history"><h2>History</h2><table><tr><th class="n">seq</th><th>at</th><th>from</th>'
        f"<th>to</th><th>kind</th><th>actor</th><th>reason</th></tr>{history}</table></section>"
    )
    return _page(f"{view.id} — saleflow", body)
