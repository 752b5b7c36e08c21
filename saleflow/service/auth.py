"""Who is calling: bearer tokens for the API, a cookie for the dashboard.

Every route but `/healthz` depends on `reader`, `writer` or `admin`.  A
missing, unknown or revoked token is 401; a token whose scope is too low is
403.  The caller's token name is the actor of everything it writes.  The
dashboard's pages take the same token from an HttpOnly, SameSite=Strict
cookie instead (set by its login form), and only for reading: the API never
accepts the cookie, so a page on another site can never write through a
logged-in browser.
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from dataclasses import dataclass

from fastapi import Request

from ..errors import SaleflowError
from ..store.service import token_by_hash, touch_token
from .errors import ApiError
from .tokens import allows, matches, token_hash, well_formed

COOKIE = "saleflow_token"
_TOUCH_EVERY = 60.0  # seconds between writes of a token's last use


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    scope: str


_touched: dict[str, float] = {}
_touched_lock = threading.Lock()


def identify(request: Request, token: str | None) -> Caller | None:
    """The live token's caller, or None.  The stored hash is looked up by
    the presented token's hash and then compared in constant time."""
    if token is None or not well_formed(token):
        return None
    engine = request.app.state.engine
    row = token_by_hash(engine.store, token_hash(token))
    if row is None or not matches(row.hash, token):
        return None
    now = time.monotonic()
    with _touched_lock:
        due = now - _touched.get(row.name, -_TOUCH_EVERY) >= _TOUCH_EVERY
        if due:
            _touched[row.name] = now
    if due:
        # Advisory: a busy database must not fail the request it serves.
        with suppress(SaleflowError):
            touch_token(engine.store, row.name, engine.now())
    return Caller(row.name, row.scope)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _require(request: Request, needed: str) -> Caller:
    challenge = {"WWW-Authenticate": "Bearer"}
    if request.headers.get("authorization") is None:
        raise ApiError(
            401, "unauthorized", "this request needs an Authorization: Bearer TOKEN header", challenge
        )
    caller = identify(request, _bearer(request))
    if caller is None:
        raise ApiError(401, "unauthorized", "the bearer token is not a live saleflow token", challenge)
    if not allows(caller.scope, needed):
        what = {"write": "write", "admin": "deploy flows"}[needed]
        raise ApiError(403, "forbidden", f'token "{caller.name}" has scope {caller.scope}; it cannot {what}')
    return caller


def reader(request: Request) -> Caller:
    return _require(request, "read")


def writer(request: Request) -> Caller:
    return _require(request, "write")


def admin(request: Request) -> Caller:
    return _require(request, "admin")


def from_cookie(request: Request) -> Caller | None:
    """The dashboard's viewer, from the login cookie (any live token)."""
    return identify(request, request.cookies.get(COOKIE))
