"""Every failure as the same JSON: `{"error": {"code", "message", "blockers"?}}`.

SPEC §9: the HTTP status matches the CLI's exit code (2 → 400, 3 → 404,
1 rejected → 409, 4 conflict → 409), authentication gives 401/403, a body
over the limit 413.  FastAPI's own answers (422 for a body that does not
validate, 404/405 from routing, 400 for a body it cannot parse) are turned
into the same shape, with one sentence instead of a list of dicts.  An
unexpected exception is logged and answered with a bare 500: a last
resort, which the tests show no bad input reaches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_REJECTED,
    FlowInvalid,
    Rejected,
    SaleflowError,
    StoreError,
)

log = logging.getLogger("saleflow.service")

STATUS = {EXIT_BAD_INPUT: 400, EXIT_NOT_FOUND: 404, EXIT_REJECTED: 409, EXIT_CONFLICT: 409}
CODES = {EXIT_BAD_INPUT: "bad_input", EXIT_NOT_FOUND: "not_found", EXIT_REJECTED: "rejected"}
CODES[EXIT_CONFLICT] = "conflict"
_HTTP_CODES = {
    400: "bad_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """A refusal of the service's own (auth, limits, idempotency)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_json(code: str, message: str, **more: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **more}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **more: Any
) -> JSONResponse:
    return JSONResponse(error_json(code, message, **more), status_code=status, headers=headers)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def saleflow_error(err: SaleflowError) -> JSONResponse:
    """The answer to an engine error, by its exit code."""
    if isinstance(err, StoreError):
        # The database cannot be used: the server's trouble, not the client's.
        log.error("database error: %s", err.message)
        return error_response(503, "unavailable", err.message)
    status = STATUS.get(err.exit_code, 400)
    more: dict[str, Any] = {}
    if isinstance(err, Rejected):
        more["blockers"] = [
            {"code": b.code, "message": b.message, "values": _jsonable(dict(b.values))} for b in err.blockers
        ]
    if isinstance(err, FlowInvalid):
        more["diagnostics"] = [d.to_json() for d in err.diagnostics]
    return error_response(status, CODES.get(err.exit_code, "bad_input"), err.message, **more)


def _where(loc: Sequence[Any]) -> str:
    parts = (
        [str(p) for p in loc[1:]]
        if loc and loc[0] in ("body", "query", "header", "path")
        else list(map(str, loc))
    )
    # a union's member type is not a place in the body
    while parts and parts[-1] in {"str", "int", "float", "bool", "none", "function-after[...]"}:
        parts.pop()
    return ".".join(parts)


def validation_sentence(err: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one sentence about the first."""
    errors = err.errors()
    if not errors:
        return "the request is not valid"
    first = errors[0]
    kind, loc = str(first.get("type", "")), first.get("loc", ())
    where = _where(loc)
    place = "query parameter" if loc and loc[0] == "query" else "request body"
    if kind == "json_invalid":
        return "the request body is not valid JSON"
    if kind == "missing":
        return f'the {place} needs "{where}"' if where else "the request needs a JSON body"
    if kind == "extra_forbidden":
        return f'the request body has an unknown key "{where}"'
    if kind in ("model_attributes_type", "dict_type") and not where:
        return "the request body must be a JSON object (Content-Type: application/json)"
    message = str(first.get("msg", "is not valid")).rstrip(".")
    message = message[0].lower() + message[1:] if message else message
    return f'"{where}" in the {place}: {message}' if where else f"the {place}: {message}"


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure the one JSON shape."""

    @app.exception_handler(SaleflowError)
    async def _saleflow(request: Request, err: SaleflowError) -> JSONResponse:
        return saleflow_error(err)

    @app.exception_handler(ApiError)
    async def _api(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.code, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(400, "bad_input", validation_sentence(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = {
            404: "there is nothing at this address",
            405: f"this address does not take {request.method}",
        }.get(err.status_code, str(err.detail))
        if err.status_code == 400 and "parsing the body" in str(err.detail):
            message = "the request body is not valid JSON"
        return error_response(
            err.status_code, _HTTP_CODES.get(err.status_code, "error"), message, getattr(err, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "an internal error occurred; it has been logged")
