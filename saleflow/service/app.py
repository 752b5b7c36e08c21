"""The application factory: one Engine per process, the routes, the guards.

`create_app(db)` opens the store (migrating it on first use) and builds the
FastAPI application around one `Engine`, shared by the request threads (the
store keeps a connection per thread).  `create_app_from_env` is what
`saleflow serve` hands uvicorn, so that each of several worker processes
builds its own from the same settings (SALEFLOW_DB, SALEFLOW_NOW,
SALEFLOW_MAX_BODY).  FastAPI's interactive docs are off: they load scripts
from a CDN, and the service must work offline; `/openapi.json` is served
behind a read token like everything else but `/healthz`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..errors import BadInput
from ..records import DEFAULT_URL
from ..runtime.engine import Engine
from ..store import open_store
from . import changes, dashboard, errors, flows, leads, reports
from .bodylimit import DEFAULT_MAX_BODY, BodyLimit


def _version() -> str:
    try:
        return version("saleflow")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def create_app(db: str, *, now: datetime | str | None = None, max_body: int = DEFAULT_MAX_BODY) -> FastAPI:
    """The service over the database at `db`; `now` fixes the clock (tests)."""
    engine = Engine(open_store(db), actor="saleflow-service", now=now)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(
        title="saleflow",
        version=_version(),
        description="The saleflow engine over HTTP (SPEC §9). Every route but /healthz needs "
        "`Authorization: Bearer TOKEN`.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.engine = engine
    errors.install(app)
    for module in (leads, flows, reports, changes, dashboard):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=max_body)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app_from_env() -> FastAPI:
    """`create_app` from the environment `saleflow serve` sets up."""
    db = os.environ.get("SALEFLOW_DB") or DEFAULT_URL
    limit = os.environ.get("SALEFLOW_MAX_BODY")
    try:
        max_body = int(limit) if limit else DEFAULT_MAX_BODY
    except ValueError:
        raise BadInput(f'SALEFLOW_MAX_BODY "{limit}" is not a number of bytes') from None
    return create_app(db, now=os.environ.get("SALEFLOW_NOW") or None, max_body=max_body)
