"""`Idempotency-Key` on POST requests: a retry gets the first answer.

The key is claimed inside the transaction of the change it guards
(`Engine.alongside` → `claim_key`), so either both commit or neither does:
a retry after a lost answer finds the key and is answered from it, and
records nothing twice.  The first answer's body is stored right after the
commit; a retry that arrives in between waits briefly for it, and if the
first request died in that instant, answers with the lead as it is now and
the first status.  Keys belong to the token that sent them.  The same key
with another request (method, path or JSON body) is refused with 409.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import SaleflowError
from ..runtime.engine import Engine
from ..store.service import KeyRow, KeyTaken, claim_key, find_key, finish_key
from .errors import ApiError

_WAIT_FOR_BODY = 2.0  # seconds a replay waits for the first request's answer


def fingerprint(method: str, path: str, body: Any) -> str:
    """What a request was: method, path and its JSON body in canonical form
    (so a retry that re-serialises the same JSON still matches)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def _replay(
    engine: Engine, owner: str, key: str, row: KeyRow, print_: str, answer: Callable[[], Any]
) -> JSONResponse:
    if row.fingerprint != print_:
        raise ApiError(
            409,
            "idempotency_key_reused",
            f'Idempotency-Key "{key}" was used for another request; use a new key for a new request',
        )
    deadline = time.monotonic() + _WAIT_FOR_BODY
    while row.body is None and time.monotonic() < deadline:
        time.sleep(0.05)
        row = find_key(engine.store, owner, key) or row
    body = json.loads(row.body) if row.body is not None else answer()
    return JSONResponse(body, status_code=row.status, headers={"Idempotent-Replayed": "true"})


def run_once(
    engine: Engine,
    *,
    owner: str,
    key: str | None,
    print_: str,
    status: int,
    change: Callable[[], object],
    answer: Callable[[], Any],
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Make `change` (one Engine operation) and answer with `answer()`,
    unless the key says it was made already."""
    if key is None:
        change()
        return JSONResponse(answer(), status_code=status, headers=headers)
    found = find_key(engine.store, owner, key)
    if found is not None:
        return _replay(engine, owner, key, found, print_, answer)
    try:
        with engine.alongside(lambda tx: claim_key(tx, owner, key, print_, status, engine.now())):
            change()
    except KeyTaken:
        # a concurrent request with this key committed first
        found = find_key(engine.store, owner, key)
        assert found is not None
        return _replay(engine, owner, key, found, print_, answer)
    body = answer()
    # The change is committed: a failure to keep the body must not turn the
    # answer into an error (a replay then answers with the lead as it is).
    with suppress(SaleflowError):
        finish_key(engine.store, owner, key, json.dumps(body, ensure_ascii=False))
    return JSONResponse(body, status_code=status, headers=headers)


def run_once_apart(
    engine: Engine, *, owner: str, key: str | None, print_: str, act: Callable[[], tuple[int, Any]]
) -> JSONResponse:
    """For a change that is idempotent by itself (a deploy): the key is kept
    after it, so a retry gets the first answer (status included)."""
    if key is not None:
        found = find_key(engine.store, owner, key)
        if found is not None:
            return _replay(engine, owner, key, found, print_, lambda: None)
    status, body = act()
    if key is not None:
        try:
            with engine.store.transaction() as tx:
                claim_key(tx, owner, key, print_, status, engine.now())
        except KeyTaken:
            pass
        else:
            finish_key(engine.store, owner, key, json.dumps(body, ensure_ascii=False))
    return JSONResponse(body, status_code=status)
