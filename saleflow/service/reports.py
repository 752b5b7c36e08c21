"""The report route, the health check and the OpenAPI document.

GET /v1/report answers `report --format json` for the same flow, period and
`by`.  /healthz needs no token (load balancers have none): it answers 200
when the database answers, 503 otherwise, and says nothing else.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..errors import SaleflowError
from ..views.report import Period, report_for
from ..views.serialise import report_json
from . import inputs
from .auth import Caller, reader
from .context import engine_of

router = APIRouter()


@router.get("/v1/report", tags=["reports"], summary="KPIs of a flow (report JSON)")
def report(
    request: Request,
    caller: Annotated[Caller, Depends(reader)],
    flow: str | None = None,
    since: str | None = None,
    until: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    # in range first: Period.parse adds a day to a date, which must not overflow
    inputs.time(since, "since")
    inputs.time(until, "until")
    period = Period.parse(since, until)
    found = report_for(engine_of(request), inputs.name(flow, "flow"), period=period, by=inputs.name(by, "by"))
    return report_json(found)


@router.get("/healthz", tags=["ops"], summary="Liveness and database check (no token)")
def healthz(request: Request) -> JSONResponse:
    try:
        engine_of(request).store.flow_names()
    except SaleflowError:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, caller: Annotated[Caller, Depends(reader)]) -> dict[str, Any]:
    return request.app.openapi()  # type: ignore[no-any-return]
