"""GET /v1/changes against a real server, on SQLite and PostgreSQL: the
lines of `saleflow changes`, key for key; paging by `next` gives every entry
once; filters; bad parameters are one sentence (400, or 404 for a flow that
is not deployed); a read token is enough, no token is not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from conftest import Served

from saleflow.cli.app import main

THE_MODEL = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"


def cli_lines(db: str, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["--db", db, "changes", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def populate(service: Served) -> None:
    with service.client("admin") as admin:
        answer = admin.post(
            "/v1/flows", content=THE_MODEL.read_bytes(), headers={"Content-Type": "text/plain"}
        )
        assert answer.status_code == 201, answer.text
    with service.client("write") as api:
        for n in range(4):
            assert api.post(
                "/v1/leads", json={"id": f"lead-{n}", "fields": {"email": f"{n}@x.example"}}
            ).is_success
        assert api.post("/v1/leads/lead-1/events", json={"event": "web_visit", "count": 2}).is_success
        assert api.patch("/v1/leads/lead-2", json={"fields": {"employees": 800}}).is_success
        forced = api.post("/v1/leads/lead-3/moves", json={"to": "mql", "force": True, "reason": "a fair"})
        assert forced.is_success, forced.text


def test_the_feed_is_the_clis_and_pages_by_next(service: Served) -> None:
    populate(service)
    every = cli_lines(service.db)
    assert len(every) > 10
    with service.client("read") as api:
        whole = api.get("/v1/changes", params={"limit": 500}).json()
        assert whole == {"changes": every, "next": every[-1]["seq"]}
        seen: list[dict[str, Any]] = []
        cursor = 0
        while True:
            answer = api.get("/v1/changes", params={"since": cursor, "limit": 3})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert len(page["changes"]) <= 3
            if not page["changes"]:
                assert page["next"] == cursor  # caught up: the same cursor again
                break
            seen += page["changes"]
            cursor = page["next"]
        assert seen == every

        moved = api.get("/v1/changes", params=[("kind", "moved"), ("kind", "set")]).json()
        assert moved["changes"] == [x for x in every if x["kind"] in ("moved", "set")]
        assert moved["next"] == every[-1]["seq"]  # past what the filter passed over
        assert api.get("/v1/changes", params={"flow": "the_model"}).json()["changes"] == every
        later = api.get("/v1/changes", params={"since": every[5]["seq"], "limit": 2}).json()
        assert later == {"changes": every[6:8], "next": every[7]["seq"]}
        assert api.get("/v1/changes").json()["changes"] == every[:100]


def test_bad_parameters_are_one_sentence(service: Served) -> None:
    populate(service)
    with service.client("read") as api:
        for params, fragment in [
            ({"since": -1}, "since (the last seq seen) must be a whole number from 0"),
            ({"since": 2**63}, "9,223,372,036,854,775,807"),
            ({"since": "9" * 5000}, "since"),
            ({"since": "soon"}, "since"),
            ({"since": "1.5"}, "since"),
            ({"limit": 0}, "limit must be between 1 and 500"),
            ({"limit": 501}, "limit must be between 1 and 500"),
            ({"kind": "moves"}, "the kinds are created, set, event, moved, migrated, sla_breach"),
            ({"kind": "mo\x00ved"}, "NUL byte"),
            ({"flow": "the\x00model"}, "NUL byte"),
        ]:
            answer = api.get("/v1/changes", params=params)
            assert answer.status_code == 400, (params, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "bad_input" and fragment in error["message"], (params, error)
            assert "\n" not in error["message"]
        missing = api.get("/v1/changes", params={"flow": "nope"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    with service.client(None) as anonymous:
        assert anonymous.get("/v1/changes").status_code == 401
