"""Request values, checked as the CLI checks its arguments.

The CLI's values arrive as text and go through the Engine's coercion; JSON
brings numbers, booleans, nulls, lists and objects too, and text that a
command line could not hold (NUL bytes, lone surrogates).  Every value of a
request passes through here with the limits of `saleflow.limits` before the
Engine sees it, so a bad value is a 400 with one sentence, never a driver
error halfway through a transaction.  Field values then take the same path
as `lead set` (`Engine._coerce` → `coerce`).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..coerce import parse_time
from ..errors import BadInput
from ..limits import MAX_ID_LENGTH, MAX_NUMBER, check_id, check_int, check_text, check_time

MAX_PAGE = 500  # leads per page of GET /v1/leads
DEFAULT_PAGE = 100


def name(value: str | None, what: str) -> str | None:
    """An identifier (lead id, flow, stage, team, event, channel), or None."""
    return None if value is None else check_id(value, what)


def text(value: str | None, what: str) -> str | None:
    return None if value is None else check_text(value, what)


def time(value: str | None, what: str) -> datetime | None:
    """`at`: an ISO 8601 date or time, in saleflow's range."""
    if value is None:
        return None
    return check_time(parse_time(check_text(value, what, limit=64), what), what)


def field_value(field: str, value: Any) -> Any:
    """One field's JSON value: a string, number, boolean or null in range
    (the Engine then coerces it to the field's type, as for `lead set`)."""
    what = f'field "{field}"'
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return check_int(value, what)
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise BadInput(f"{what} must be a finite number of at most {MAX_NUMBER:g} in size")
        return value
    if isinstance(value, str):
        return check_text(value, what)
    raise BadInput(f"{what} must be a string, a number, true, false or null, not a JSON {_kind(value)}")


def fields(values: Mapping[str, Any] | None) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in (values or {}).items():
        check_id(key, "a field name")
        checked[key] = field_value(key, value)
    return checked


def _kind(value: Any) -> str:
    return (
        "list" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__
    )


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    return check_id(value, "the Idempotency-Key header")


# -- the listing's opaque cursor: the last id of the page, base64url ---------


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    bad = BadInput("the cursor is not one this service gave out; start again without it")
    if len(cursor) > 4 * MAX_ID_LENGTH * 2 or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = raw.decode("utf-8")
        return check_id(value, "the cursor")
    except (binascii.Error, ValueError, BadInput):
        raise bad from None


def page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise BadInput(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    return limit
