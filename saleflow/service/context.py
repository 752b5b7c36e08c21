"""What every route takes from its request: the process's Engine, and the
`Idempotency-Key` header (declared once, so OpenAPI documents it alike)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request

from ..runtime.engine import Engine

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]
