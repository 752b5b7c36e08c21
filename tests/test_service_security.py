"""Bad requests against a real server, on SQLite and PostgreSQL: each is a
4xx with the error shape (`{"error": {"code", "message"}}`), none is a 500
(the server fixture also fails on a traceback or a 500 in its log), and
none changes anything.  A table of hand-picked cases, then hypothesis-driven
bad bodies."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from click.testing import CliRunner
from conftest import Served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saleflow.cli.app import main

THE_MODEL = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"
LEAD = "victim"
INJECTION = "<script>alert('x')</script>\"'&;--"


def _prepare(service: Served) -> tuple[str, str]:
    """The flow and one lead; returns a revoked token and a live one that
    the table sends in a URL (where the server must not take it)."""
    with service.client("admin") as admin:
        assert admin.post("/v1/flows", content=THE_MODEL.read_bytes()).status_code == 201
        assert (
            admin.post("/v1/leads", json={"id": LEAD, "fields": {"email": "a@b.example"}}).status_code == 201
        )
        assert admin.post(f"/v1/leads/{LEAD}/events", json={"event": "web_visit"}).status_code == 200
    runner = CliRunner()
    token = runner.invoke(
        main, ["--db", service.db, "token", "add", "gone", "--scope", "admin"]
    ).stdout.strip()
    assert runner.invoke(main, ["--db", service.db, "token", "revoke", "gone"]).exit_code == 0
    in_url = runner.invoke(
        main, ["--db", service.db, "token", "add", "in-url", "--scope", "read"]
    ).stdout.strip()
    return token, in_url


def _state(service: Served) -> Any:
    """Everything a bad request could have changed, as the API shows it."""
    with service.client("read") as api:
        leads = api.get("/v1/leads", params={"limit": 500}).json()
        return {
            "leads": leads,
            "lead": api.get(f"/v1/leads/{LEAD}").json(),
            "history": api.get(f"/v1/leads/{LEAD}/history").json(),
            "flows": api.get("/v1/flows").json(),
        }


def _chunks(size: int) -> Iterator[bytes]:
    block = b"x" * 65536
    for _ in range(size // len(block) + 1):
        yield block


def _assert_error(answer: httpx.Response, status: int, code: str | None, case: str) -> None:
    assert answer.status_code == status, f"{case}: {answer.status_code} {answer.text[:300]}"
    error = answer.json()["error"]
    assert isinstance(error["message"], str) and error["message"], case
    assert "Traceback" not in error["message"], case
    if code is not None:
        assert error["code"] == code, f"{case}: {error}"


def test_the_security_table(service: Served) -> None:
    revoked, in_url = _prepare(service)
    before = _state(service)
    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    read, write = bearer(service.tokens["read"]), bearer(service.tokens["write"])
    event = f"/v1/leads/{LEAD}/events"
    huge = 2 * 1024 * 1024
    cases: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
        # (case, method, path, request options, status, error code)
        ("no token", "GET", "/v1/leads", {}, 401, "unauthorized"),
        ("no token, write", "POST", event, {"json": {"event": "web_visit"}}, 401, "unauthorized"),
        ("bad token", "GET", "/v1/leads", {"headers": bearer("sft_" + "A" * 43)}, 401, "unauthorized"),
        ("garbage token", "GET", "/v1/leads", {"headers": bearer("x" * 5000)}, 401, "unauthorized"),
        ("not bearer", "GET", "/v1/leads", {"headers": {"Authorization": "Basic dXNlcjpwdw=="}}, 401, None),
        ("revoked token", "GET", "/v1/leads", {"headers": bearer(revoked)}, 401, "unauthorized"),
        (
            "token in the query",
            "GET",
            f"/v1/leads?token={in_url}&access_token={in_url}",
            {},
            401,
            "unauthorized",
        ),
        (
            "read token writing",
            "POST",
            event,
            {"headers": read, "json": {"event": "web_visit"}},
            403,
            "forbidden",
        ),
        (
            "read token patching",
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"headers": read, "json": {"fields": {}}},
            403,
            None,
        ),
        ("read token creating", "POST", "/v1/leads", {"headers": read, "json": {"id": "new"}}, 403, None),
        (
            "write token deploying",
            "POST",
            "/v1/flows",
            {"headers": write, "content": THE_MODEL.read_bytes()},
            403,
            None,
        ),
        (
            "oversized body",
            "POST",
            event,
            {"headers": write, "content": b"{" + b" " * huge + b"}"},
            413,
            "too_large",
        ),
        (
            "oversized chunked body",
            "POST",
            event,
            {"headers": write, "content": _chunks(huge)},
            413,
            "too_large",
        ),
        (
            "oversized flow",
            "POST",
            "/v1/flows",
            {"headers": bearer(service.tokens["admin"]), "content": b"#" * huge},
            413,
            None,
        ),
        (
            "malformed JSON",
            "POST",
            event,
            {"headers": {**write, "Content-Type": "application/json"}, "content": b'{"event": '},
            400,
            "bad_input",
        ),
        ("JSON not an object", "POST", event, {"headers": write, "json": ["web_visit"]}, 400, "bad_input"),
        (
            "not JSON at all",
            "POST",
            event,
            {"headers": {**write, "Content-Type": "application/json"}, "content": b"\xff\xfe"},
            400,
            None,
        ),
        (
            "wrong type: count",
            "POST",
            event,
            {"headers": write, "json": {"event": "web_visit", "count": "2"}},
            400,
            None,
        ),
        ("wrong type: event", "POST", event, {"headers": write, "json": {"event": 7}}, 400, None),
        (
            "wrong type: fields",
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"headers": write, "json": {"fields": [1]}},
            400,
            None,
        ),
        (
            "wrong type: value",
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"headers": write, "json": {"fields": {"employees": {"a": 1}}}},
            400,
            None,
        ),
        ("wrong type: id", "POST", "/v1/leads", {"headers": write, "json": {"id": ["a"]}}, 400, None),
        (
            "unknown key",
            "POST",
            event,
            {"headers": write, "json": {"event": "web_visit", "admin": True}},
            400,
            None,
        ),
        (
            "int field not a number",
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"headers": write, "json": {"fields": {"employees": "many"}}},
            400,
            None,
        ),
        (
            "enum value injected",
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"headers": write, "json": {"fields": {"industry": INJECTION}}},
            400,
            None,
        ),
        (
            "unknown field",
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"headers": write, "json": {"fields": {INJECTION: 1}}},
            404,
            "not_found",
        ),
        (
            "unknown event",
            "POST",
            event,
            {"headers": write, "json": {"event": "drop table leads"}},
            404,
            None,
        ),
        (
            "injection in an id",
            "GET",
            "/v1/leads/" + quote(f"x' OR '1'='1{INJECTION}", safe=""),
            {"headers": read},
            404,
            "not_found",
        ),
        (
            "path traversal in an id",
            "GET",
            "/v1/leads/..%2F..%2F..%2Fetc%2Fpasswd",
            {"headers": read},
            404,
            "not_found",
        ),
        ("traversal to history", "GET", "/v1/leads/%2E%2E%2Fvictim/history", {"headers": read}, 404, None),
        ("NUL in an id", "POST", "/v1/leads", {"headers": write, "json": {"id": "a\x00b"}}, 400, "bad_input"),
        (
            "a flow file path as the flow",
            "POST",
            "/v1/leads",
            {"headers": write, "json": {"id": "new", "flow": "../../flows/the_model.flow"}},
            404,
            "not_found",
        ),
        ("empty id", "POST", "/v1/leads", {"headers": write, "json": {"id": " "}}, 400, None),
        ("long id", "POST", "/v1/leads", {"headers": write, "json": {"id": "x" * 256}}, 400, None),
        ("existing id", "POST", "/v1/leads", {"headers": write, "json": {"id": LEAD}}, 400, None),
        (
            "far date",
            "POST",
            event,
            {"headers": write, "json": {"event": "web_visit", "at": "9999-12-31"}},
            400,
            None,
        ),
        (
            "early date",
            "POST",
            event,
            {"headers": write, "json": {"event": "web_visit", "at": "0001-01-01"}},
            400,
            None,
        ),
        (
            "not a date",
            "POST",
            event,
            {"headers": write, "json": {"event": "web_visit", "at": "yesterday"}},
            400,
            None,
        ),
        (
            "huge int",
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"headers": write, "json": {"fields": {"employees": 10**30}}},
            400,
            None,
        ),
        (
            "unknown stage move",
            "POST",
            f"/v1/leads/{LEAD}/moves",
            {"headers": write, "json": {"to": INJECTION}},
            404,
            None,
        ),
        (
            "force without reason",
            "POST",
            f"/v1/leads/{LEAD}/moves",
            {"headers": write, "json": {"to": "sql", "force": True}},
            400,
            None,
        ),
        (
            "refused move",
            "POST",
            f"/v1/leads/{LEAD}/moves",
            {"headers": write, "json": {"to": "sql"}},
            409,
            "rejected",
        ),
        ("bad cursor", "GET", "/v1/leads?cursor=%00%00", {"headers": read}, 400, None),
        ("huge limit", "GET", "/v1/leads?limit=99999999999999999999999", {"headers": read}, 400, None),
        ("far report", "GET", "/v1/report?until=9999-12-31", {"headers": read}, 400, None),
        ("report by nothing", "GET", "/v1/report?by=" + quote(INJECTION), {"headers": read}, 404, None),
        (
            "bad flow text",
            "POST",
            "/v1/flows",
            {"headers": bearer(service.tokens["admin"]), "content": b"flow x\nstage <b>"},
            400,
            None,
        ),
        (
            "flow not UTF-8",
            "POST",
            "/v1/flows",
            {"headers": bearer(service.tokens["admin"]), "content": b"flow \xff"},
            400,
            None,
        ),
        ("unknown route", "GET", "/v1/secrets", {"headers": read}, 404, None),
        ("wrong method", "DELETE", f"/v1/leads/{LEAD}", {"headers": write}, 405, None),
        (
            "bad idempotency key",
            "POST",
            event,
            {"headers": {**write, "Idempotency-Key": "k" * 300}, "json": {"event": "web_visit"}},
            400,
            None,
        ),
    ]
    with httpx.Client(base_url=service.base, timeout=60) as client:
        for case, method, path, options, status, code in cases:
            _assert_error(client.request(method, path, **options), status, code, case)
        # a replayed idempotency key with another body
        first = client.post(event, headers={**write, "Idempotency-Key": "k"}, json={"event": "web_visit"})
        assert first.status_code == 200
        before = _state(service)
        replay = client.post(
            event, headers={**write, "Idempotency-Key": "k"}, json={"event": "web_visit", "count": 5}
        )
        _assert_error(replay, 409, "idempotency_key_reused", "replayed key, other body")
    assert _state(service) == before, "a refused request changed something"


# -- hypothesis: bodies that are bad in one place each ------------------------

_bad_numbers = st.one_of(
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1e19]),
)
_bad_text = st.one_of(
    st.text(min_size=0, max_size=20).map(lambda s: s + "\x00"),
    st.text(max_size=10).map(lambda s: "\ud800" + s),
    st.integers(min_value=100_001, max_value=100_100).map(lambda n: "a" * n),
)
_bad_values = st.one_of(
    _bad_numbers,
    _bad_text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_bad_times = st.one_of(
    st.sampled_from(
        ["9999-12-31", "0001-01-01", "1899-12-31T23:59:59Z", "9000-01-01", "2026-13-01", "", "Z"]
    ),
    st.integers(min_value=10_000, max_value=10**9).map(lambda y: f"{y}-01-01"),
    _bad_text,
)
_bad_counts = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**31),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
)
_field_names = st.sampled_from(["employees", "budget", "email", "need", "industry", "timeframe_days"])


@st.composite
def bad_requests(draw: st.DrawFn) -> tuple[str, str, Any]:
    """(method, path, JSON body) with exactly one bad part."""
    kind = draw(st.sampled_from(["field", "time", "count", "event", "channel", "unknown field"]))
    event_path = f"/v1/leads/{LEAD}/events"
    if kind == "field":
        return "PATCH", f"/v1/leads/{LEAD}", {"fields": {draw(_field_names): draw(_bad_values)}}
    if kind == "unknown field":
        name = draw(
            st.text(min_size=1, max_size=30).filter(
                lambda s: (
                    s.strip()
                    and s
                    not in {
                        "employees",
                        "budget",
                        "email",
                        "need",
                        "industry",
                        "timeframe_days",
                        "company",
                        "authority",
                        "owner",
                        "lost_reason",
                        "expected_value",
                        "problem_known",
                        "solution_fit",
                    }
                )
            )
        )
        return (
            "PATCH",
            f"/v1/leads/{LEAD}",
            {"fields": {name: draw(st.one_of(st.integers(), st.text(max_size=5)))}},
        )
    if kind == "time":
        return "POST", event_path, {"event": "web_visit", "at": draw(_bad_times)}
    if kind == "count":
        return "POST", event_path, {"event": "web_visit", "count": draw(_bad_counts)}
    if kind == "event":
        name = draw(
            st.one_of(
                _bad_text,
                st.text(max_size=30).filter(
                    lambda s: (
                        s
                        not in {
                            "web_visit",
                            "content_download",
                            "seminar_attended",
                            "inbound_question",
                            "call_connected",
                            "meeting_held",
                            "contract_signed",
                            "product_login",
                        }
                    )
                ),
            )
        )
        return "POST", event_path, {"event": name}
    return (
        "POST",
        event_path,
        {"event": "web_visit", "channel": draw(st.one_of(_bad_text, st.just(""), st.integers()))},
    )


def test_hypothesis_bad_bodies_are_4xx_and_change_nothing(service: Served) -> None:
    _prepare(service)
    before = _state(service)
    with httpx.Client(
        base_url=service.base, timeout=60, headers={"Authorization": f"Bearer {service.tokens['write']}"}
    ) as client:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(bad_requests())
        def check(request: tuple[str, str, Any]) -> None:
            method, path, body = request
            # json.dumps writes NaN/Infinity and lone surrogates (as \ud800), as a sloppy client would
            content = json.dumps(body).encode("utf-8")
            answer = client.request(
                method, path, content=content, headers={"Content-Type": "application/json"}
            )
            assert 400 <= answer.status_code < 500, (request, answer.status_code, answer.text[:300])
            error = answer.json()["error"]
            assert set(error) >= {"code", "message"}, error

        check()
    assert _state(service) == before
