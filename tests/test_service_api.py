"""The HTTP API against a real server (uvicorn in a subprocess, httpx), on
SQLite and PostgreSQL: every endpoint, the CLI's JSON key for key, paging,
idempotency keys, tokens.  Bad requests: tests/test_service_security.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from conftest import SERVICE_NOW, Served

from saleflow.cli.app import main

THE_MODEL = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"


def deploy(service: Served) -> None:
    with service.client("admin") as admin:
        answer = admin.post(
            "/v1/flows", content=THE_MODEL.read_bytes(), headers={"Content-Type": "text/plain"}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json() == {"flow": "the_model", "version": 1, "created": True}
        again = admin.post("/v1/flows", content=THE_MODEL.read_bytes())
        assert (again.status_code, again.json()["created"]) == (200, False)


def cli_json(db: str, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--db", db, "--now", SERVICE_NOW, *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_endpoint_does_what_the_cli_does(service: Served) -> None:
    deploy(service)
    with service.client("write") as api, service.client("read") as reader:
        created = api.post(
            "/v1/leads",
            json={"id": "acme-1", "fields": {"email": "cto@acme.example", "employees": 800}},
        )
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/v1/leads/acme-1"
        lead = created.json()
        assert (lead["id"], lead["stage"], lead["fields"]["employees"]) == ("acme-1", "lead", 800)

        event = api.post("/v1/leads/acme-1/events", json={"event": "web_visit", "count": 2, "channel": "web"})
        assert event.status_code == 200, event.text
        assert event.json()["events"]["web_visit"] == 2
        assert event.json()["stage"] == "nurturing"

        patched = api.patch(
            "/v1/leads/acme-1", json={"fields": {"owner": "kim", "authority": "decision_maker"}}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["fields"]["owner"] == "kim"

        refused = api.post("/v1/leads/acme-1/moves", json={"to": "mql"})
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "rejected" and error["blockers"], error
        assert all(set(b) >= {"code", "message"} for b in error["blockers"])

        forced = api.post(
            "/v1/leads/acme-1/moves", json={"to": "mql", "force": True, "reason": "met at a fair"}
        )
        assert forced.status_code == 200, forced.text
        assert forced.json()["stage"] in ("mql", "contacting")

        history = reader.get("/v1/leads/acme-1/history").json()
        assert history[0]["from"] is None and history[0]["seq"] == 1
        assert {entry["actor"] for entry in history} == {"write-token"}, "the token's name is the actor"
        assert any(entry["kind"] == "force" and entry["reason"] == "met at a fair" for entry in history)

        assert reader.get("/v1/leads/acme-1").json() == api.get("/v1/leads/acme-1").json()
        report = reader.get("/v1/report", params={"flow": "the_model"})
        assert report.status_code == 200 and report.json()["flow"] == "the_model"
        flows = reader.get("/v1/flows").json()["flows"]
        assert [(f["flow"], f["version"]) for f in flows] == [("the_model", 1)]
        assert "/v1/leads/{lead_id}/events" in reader.get("/openapi.json").json()["paths"]

    with service.client(None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/openapi.json").status_code == 401


def test_listing_pages_by_cursor_up_to_the_limit(service: Served) -> None:
    deploy(service)
    ids = [f"lead-{n:02}" for n in range(7)]
    with service.client("write") as api:
        for lead_id in reversed(ids):
            assert api.post("/v1/leads", json={"id": lead_id}).status_code == 201
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3, "flow": "the_model"}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/v1/leads", params=params).json()
            assert len(page["leads"]) <= 3
            seen += [row["id"] for row in page["leads"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert seen == ids and pages == 3
        assert api.get("/v1/leads", params={"limit": 501}).status_code == 400
        team = api.get("/v1/leads", params={"team": "marketing", "limit": 500}).json()
        assert [row["id"] for row in team["leads"]] == ids and team["next"] is None
        missing = api.get("/v1/leads", params={"team": "nobody"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_the_api_answers_with_the_clis_json_key_for_key(kpi_service: Served) -> None:
    """One set of serialisers: show, history, leads (and --overdue) and
    report give the same JSON through the CLI and the API."""
    db = kpi_service.db
    with kpi_service.client("read") as api:
        for lead_id in ("a", "b", "c", "d"):
            assert api.get(f"/v1/leads/{lead_id}").json() == cli_json(db, "show", lead_id, "--json")
            assert api.get(f"/v1/leads/{lead_id}/history").json() == cli_json(
                db, "history", lead_id, "--json"
            )
        assert api.get("/v1/leads").json()["leads"] == cli_json(db, "leads", "--json")
        assert api.get("/v1/leads", params={"stage": "sql"}).json()["leads"] == cli_json(
            db, "leads", "--stage", "sql", "--json"
        )
        overdue = api.get("/v1/leads", params={"overdue": "true"}).json()["leads"]
        assert overdue == cli_json(db, "leads", "--overdue", "--json") and overdue
        for params, args in [
            ({}, []),
            ({"by": "region", "since": "2026-01-02"}, ["--by", "region", "--since", "2026-01-02"]),
        ]:
            from_api = api.get("/v1/report", params=params).json()
            from_cli = cli_json(db, "report", "--format", "json", *args)
            from_api.pop("generated_at"), from_cli.pop("generated_at")
            assert from_api == from_cli


def _events(api: Any, lead_id: str) -> int:
    return int(api.get(f"/v1/leads/{lead_id}").json()["events"]["web_visit"])


def test_a_retried_post_gets_the_first_answer_and_records_nothing_twice(service: Served) -> None:
    deploy(service)
    with service.client("write") as api:
        first = api.post("/v1/leads", json={"id": "idem"}, headers={"Idempotency-Key": "create-idem"})
        again = api.post("/v1/leads", json={"id": "idem"}, headers={"Idempotency-Key": "create-idem"})
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"

        body = {"event": "web_visit", "channel": "web"}
        answers = [
            api.post("/v1/leads/idem/events", json=body, headers={"Idempotency-Key": "visit-1"})
            for _ in range(3)
        ]
        assert {a.status_code for a in answers} == {200}
        assert all(a.json() == answers[0].json() for a in answers)
        assert _events(api, "idem") == 1

        other = api.post(
            "/v1/leads/idem/events", json={**body, "count": 2}, headers={"Idempotency-Key": "visit-1"}
        )
        assert (other.status_code, other.json()["error"]["code"]) == (409, "idempotency_key_reused")
        assert _events(api, "idem") == 1

        # Eight clients retry one request at once: one change, one answer.
        results: list[Any] = []

        def post() -> None:
            with service.client("write") as own:
                results.append(
                    own.post("/v1/leads/idem/events", json=body, headers={"Idempotency-Key": "burst"})
                )

        threads = [threading.Thread(target=post) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {r.status_code for r in results} == {200}, [r.text for r in results]
        assert len({json.dumps(r.json(), sort_keys=True) for r in results}) == 1
        assert _events(api, "idem") == 2

        # Keys belong to their token: another token's same key is its own.
        with service.client("admin") as admin:
            own = admin.post("/v1/leads/idem/events", json=body, headers={"Idempotency-Key": "visit-1"})
            assert own.status_code == 200 and "idempotent-replayed" not in own.headers
        assert _events(api, "idem") == 3

        # A refused change stores no key: the retry is judged afresh.
        for _ in range(2):
            refused = api.post(
                "/v1/leads/idem/moves", json={"to": "mql"}, headers={"Idempotency-Key": "move"}
            )
            assert refused.status_code == 409 and refused.json()["error"]["code"] == "rejected"


def test_tokens_are_listed_without_secrets_and_revoked_at_once(service: Served) -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["--db", service.db, "token", "list", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert {r["name"]: r["scope"] for r in rows} == {
        "read-token": "read",
        "write-token": "write",
        "admin-token": "admin",
    }
    assert set(rows[0]) == {"name", "scope", "created_at", "last_used_at", "revoked_at"}
    assert not any(token in listed.output for token in service.tokens.values())

    with service.client("read") as api:
        assert api.get("/v1/flows").status_code == 200
    revoked = runner.invoke(main, ["--db", service.db, "token", "revoke", "read-token"])
    assert revoked.exit_code == 0, revoked.output
    with service.client("read") as api:
        answer = api.get("/v1/flows")
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    again = runner.invoke(main, ["--db", service.db, "token", "add", "read-token", "--scope", "read"])
    assert again.exit_code == 2 and "choose another name" in again.output
    gone = runner.invoke(main, ["--db", service.db, "token", "revoke", "nobody"])
    assert gone.exit_code == 3


def test_serve_refuses_several_workers_on_sqlite(sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["--db", sqlite_url, "serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "needs PostgreSQL" in result.output and "one process writes at a time" not in result.output
    assert result.output.count("\n") == 1, "one sentence"


def test_lead_ids_with_slashes_and_markup_round_trip(service: Served) -> None:
    deploy(service)
    odd = "../../etc/passwd <script>alert(1)</script> & ü"
    with service.client("write") as api:
        assert api.post("/v1/leads", json={"id": odd}).status_code == 201
        path = "/v1/leads/" + quote(odd, safe="")
        assert api.get(path).json()["id"] == odd
        assert api.post(path + "/events", json={"event": "web_visit"}).json()["events"]["web_visit"] == 1
        assert [e["to"] for e in api.get(path + "/history").json()][:1] == ["awareness"]


@pytest.mark.parametrize("scope", ["read", "write"])
def test_scopes(service: Served, scope: str) -> None:
    with service.client(scope) as api:
        answer = api.post("/v1/flows", content=THE_MODEL.read_bytes())
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")


def test_several_workers_share_one_postgresql_database(pg_url: str, tmp_path: Path) -> None:
    from conftest import start_service

    served = start_service(pg_url, tmp_path, workers=2)
    service = next(served)
    try:
        deploy(service)
        with service.client("write") as api:
            for n in range(6):
                assert api.post("/v1/leads", json={"id": f"w{n}"}).status_code == 201
                assert api.post(f"/v1/leads/w{n}/events", json={"event": "web_visit"}).status_code == 200
            rows = api.get("/v1/leads").json()["leads"]
            assert [row["id"] for row in rows] == [f"w{n}" for n in range(6)]
            assert {api.get(f"/v1/leads/w{n}").json()["events"]["web_visit"] for n in range(6)} == {1}
    finally:
        for _ in served:  # stop the server and check its log
            pass


def test_the_cli_does_not_import_the_web_stack() -> None:
    """`saleflow check` and `show` stay as fast as before: importing the CLI
    (which registers `serve` and `token`) loads neither FastAPI nor uvicorn."""
    import subprocess
    import sys

    code = "import sys, saleflow.cli.app; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'pydantic') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
