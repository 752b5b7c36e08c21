"""The flow routes: list deployed flows; deploy one (admin tokens only).

POST /v1/flows takes the flow's text as the body (any content type), checks
it as `saleflow deploy` does and answers `{"flow", "version", "created"}`:
201 when this content is new, 200 when it was deployed already.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..errors import BadInput
from ..language.parse import parse_flow
from ..limits import check_text
from . import inputs
from .auth import Caller, admin, reader
from .context import IdempotencyKey, engine_of
from .idempotency import fingerprint, run_once_apart

router = APIRouter(prefix="/v1/flows", tags=["flows"])


@router.get("", summary="Deployed flows, each at its latest version")
def list_flows(request: Request, caller: Annotated[Caller, Depends(reader)]) -> dict[str, Any]:
    engine = engine_of(request)
    listed = []
    for name in engine.store.flow_names():
        compiled = engine.compiled(name, engine.store.latest_version(name))
        listed.append(
            {
                "flow": name,
                "version": compiled.version,
                "title": compiled.flow.title,
                "stages": list(compiled.flow.stage_names),
            }
        )
    return {"flows": listed}


@router.post(
    "",
    summary="Deploy a flow (body: the flow's text)",
    openapi_extra={
        "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def deploy(
    request: Request, caller: Annotated[Caller, Depends(admin)], key: IdempotencyKey = None
) -> JSONResponse:
    raw = await request.body()
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"the flow text is not UTF-8 (bad byte at offset {err.start})") from None
    check_text(source, "the flow text")
    if not source.strip():
        raise BadInput('the request body is empty; it should be a flow file\'s text, starting "flow NAME"')
    engine = engine_of(request)
    checked_key = inputs.idempotency_key(key)

    def act() -> tuple[int, Any]:
        deployment = engine.deploy(parse_flow(source, "request body"))
        body = {"flow": deployment.name, "version": deployment.version, "created": deployment.created}
        return (201 if deployment.created else 200), body

    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(
        run_once_apart,
        engine,
        owner=caller.name,
        key=checked_key,
        print_=fingerprint("POST", "/v1/flows", source),
        act=act,
    )
