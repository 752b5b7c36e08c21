"""The lead routes: create, read, list, set fields, record events, move,
history (SPEC §9).

Each route checks its values as the CLI does (`inputs`), makes the same
Engine call as the matching command, and answers with the same JSON
(`saleflow.serialise`).  The token's name is the actor.  Ids go in the path
as one segment or several (`{lead_id:path}`): a lead id may hold "/",
percent-encoded by the client; it is only ever a database key.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from ..runtime.engine import Engine
from ..store.service import page_leads
from ..views.serialise import history_json, lead_json, overdue_json, show_json
from . import inputs
from .auth import Caller, reader, writer
from .context import IdempotencyKey, engine_of
from .idempotency import fingerprint, run_once

router = APIRouter(prefix="/v1/leads", tags=["leads"])

# Field values are checked by `inputs.fields` (with a better sentence than a
# union's validation error): strings, numbers, booleans and nulls.
Scalar = Any


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NewLead(_Body):
    id: str
    flow: str | None = None
    fields: dict[str, Scalar] | None = None
    at: str | None = None


class FieldChange(_Body):
    fields: dict[str, Scalar]
    at: str | None = None


class NewEvent(_Body):
    event: str
    count: int = 1
    channel: str | None = None
    content: str | None = None
    at: str | None = None


class MoveRequest(_Body):
    to: str | None = None
    reason: str | None = None
    force: bool = False


def _show(engine: Engine, lead_id: str) -> dict[str, Any]:
    return show_json(engine.lead(lead_id))


@router.post("", status_code=201, summary="Create a lead (show JSON)")
def add_lead(
    body: NewLead,
    request: Request,
    caller: Annotated[Caller, Depends(writer)],
    key: IdempotencyKey = None,
) -> JSONResponse:
    engine = engine_of(request)
    lead_id = inputs.name(body.id, "a lead id")
    assert lead_id is not None
    flow = inputs.name(body.flow, "flow")
    values = inputs.fields(body.fields)
    at = inputs.time(body.at, "at")
    return run_once(
        engine,
        owner=caller.name,
        key=inputs.idempotency_key(key),
        print_=fingerprint("POST", "/v1/leads", body.model_dump()),
        status=201,
        change=lambda: engine.add_lead(lead_id, flow=flow, at=at, actor=caller.name, fields=values),
        answer=lambda: _show(engine, lead_id),
        headers={"Location": "/v1/leads/" + quote(lead_id, safe="")},
    )


@router.get("", summary="List leads, a page at a time")
def list_leads(
    request: Request,
    caller: Annotated[Caller, Depends(reader)],
    flow: str | None = None,
    stage: str | None = None,
    team: str | None = None,
    overdue: bool = False,
    limit: Annotated[int | None, Query(description=f"at most {inputs.MAX_PAGE}")] = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """`{"leads": [...], "next": cursor | null}`: rows as `leads --json`
    (with `--overdue`, as `leads --overdue --json`), in id order."""
    engine = engine_of(request)
    flow = inputs.name(flow, "flow")
    stage = inputs.name(stage, "stage")
    team = inputs.name(team, "team")
    size = inputs.page_size(limit)
    after = inputs.decode_cursor(cursor)
    if overdue:
        from ..views.report import overdue_leads

        found = sorted(overdue_leads(engine, flow=flow, stage=stage, team=team), key=lambda o: o.lead.id)
        rows = [o for o in found if after is None or o.lead.id > after][: size + 1]
        more = len(rows) > size
        rows = rows[:size]
        page = [overdue_json(o) for o in rows]
        last = rows[-1].lead.id if rows else None
    else:
        flow, stages = engine.lead_filter(flow=flow, stage=stage, team=team)
        leads = page_leads(engine.store, flow=flow, stages=stages, after=after, limit=size + 1)
        more = len(leads) > size
        leads = engine.scored(leads[:size])  # scores as of now, as `leads` shows them
        page = [lead_json(x) for x in leads]
        last = leads[-1].id if leads else None
    return {"leads": page, "next": inputs.encode_cursor(last) if more and last is not None else None}


@router.get("/{lead_id:path}/history", summary="A lead's audit entries (history JSON)")
def history(
    lead_id: str, request: Request, caller: Annotated[Caller, Depends(reader)]
) -> list[dict[str, Any]]:
    inputs.name(lead_id, "a lead id")
    return history_json(engine_of(request).history(lead_id))


@router.post("/{lead_id:path}/events", summary="Record an event (show JSON)")
def record(
    lead_id: str,
    body: NewEvent,
    request: Request,
    caller: Annotated[Caller, Depends(writer)],
    key: IdempotencyKey = None,
) -> JSONResponse:
    engine = engine_of(request)
    inputs.name(lead_id, "a lead id")
    event = inputs.name(body.event, "event")
    assert event is not None
    channel = inputs.name(body.channel, "channel")
    content = inputs.text(body.content, "content")
    at = inputs.time(body.at, "at")
    count = body.count
    return run_once(
        engine,
        owner=caller.name,
        key=inputs.idempotency_key(key),
        print_=fingerprint("POST", f"/v1/leads/{lead_id}/events", body.model_dump()),
        status=200,
        change=lambda: engine.record(
            lead_id, event, at=at, channel=channel, content=content, count=count, actor=caller.name
        ),
        answer=lambda: _show(engine, lead_id),
    )


@router.post("/{lead_id:path}/moves", summary="Move a lead on request (409 with blockers when refused)")
def move(
    lead_id: str,
    body: MoveRequest,
    request: Request,
    caller: Annotated[Caller, Depends(writer)],
    key: IdempotencyKey = None,
) -> JSONResponse:
    engine = engine_of(request)
    inputs.name(lead_id, "a lead id")
    to = inputs.name(body.to, "to")
    reason = inputs.text(body.reason, "reason")
    force = body.force
    return run_once(
        engine,
        owner=caller.name,
        key=inputs.idempotency_key(key),
        print_=fingerprint("POST", f"/v1/leads/{lead_id}/moves", body.model_dump()),
        status=200,
        change=lambda: engine.advance(lead_id, to=to, force=force, reason=reason, actor=caller.name),
        answer=lambda: _show(engine, lead_id),
    )


@router.get("/{lead_id:path}", summary="A lead (show JSON)")
def show(lead_id: str, request: Request, caller: Annotated[Caller, Depends(reader)]) -> dict[str, Any]:
    inputs.name(lead_id, "a lead id")
    return _show(engine_of(request), lead_id)


@router.patch("/{lead_id:path}", summary="Set fields of a lead (show JSON)")
def set_fields(
    lead_id: str, body: FieldChange, request: Request, caller: Annotated[Caller, Depends(writer)]
) -> dict[str, Any]:
    engine = engine_of(request)
    inputs.name(lead_id, "a lead id")
    values = inputs.fields(body.fields)
    at = inputs.time(body.at, "at")
    engine.set(lead_id, values, at=at, actor=caller.name)
    return _show(engine, lead_id)
