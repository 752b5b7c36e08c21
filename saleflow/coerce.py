"""Outside values → typed field values and times.

Layer 2.  Facts arrive as CLI text (`employees=800`), CSV cells (`Yes`,
`2.67`, `Select`) or Python values; this module is the one place that turns
them into what a field of a given type holds, and that parses the times of
`--at`/`--now`.  Every refusal is a `BadInput` sentence naming the field.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Collection
from datetime import UTC, date, datetime
from typing import Any

from .errors import BadInput, did_you_mean
from .model import FieldDef
from .records import FieldValue

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "t", "on"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "f", "off"})


def _integral(number: float) -> int | float:
    return int(number) if number.is_integer() else number


def _as_number(field: FieldDef, raw: Any) -> int | float:
    if isinstance(raw, bool):
        raise BadInput(f'field "{field.name}" is {field.type}; {raw!r} is not a number')
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return _integral(raw)
    text = str(raw).strip().replace("_", "")
    if text.isascii() and text.isdigit():  # the usual CSV cell: a whole number, exactly
        return int(text)
    try:
        number = float(text)
    except ValueError:
        raise BadInput(f'field "{field.name}" is {field.type}; "{raw}" is not a number') from None
    if number != number or number in (float("inf"), float("-inf")):
        raise BadInput(f'field "{field.name}" is {field.type}; "{raw}" is not a finite number')
    return _integral(number)


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def _loose(text: str) -> str:
    """`text` lower case, every run of other characters one "_"."""
    return _NOT_ALNUM.sub("_", text.lower()).strip("_")


def coerce(field: FieldDef, raw: Any, nulls: Collection[str] = ()) -> FieldValue:
    """Convert `raw` to `field`'s type; None, "" and `nulls` mean unset."""
    if raw is None:
        return None
    if isinstance(raw, str) and (raw.strip() == "" or raw in nulls):
        return None
    kind = field.type.kind
    if kind == "text":
        return str(raw)
    if kind == "int":
        number = _as_number(field, raw)
        if isinstance(number, float):
            raise BadInput(f'field "{field.name}" is int; "{raw}" is not a whole number')
        return number
    if kind in ("number", "money"):
        return _as_number(field, raw)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise BadInput(f'field "{field.name}" is bool; "{raw}" is not true or false')
    if kind == "date":
        return _as_date(field, raw)
    # enum
    value = str(raw).strip()
    if value not in field.type.choices:
        # "Decision Maker" from a CRM means decision_maker, when only one
        # choice reads the same ignoring case, spaces and punctuation.
        same = [choice for choice in field.type.choices if _loose(choice) == _loose(value)]
        if len(same) == 1:
            return same[0]
        hint = did_you_mean(value, field.type.choices)
        choices = ", ".join(field.type.choices)
        raise BadInput(
            f'field "{field.name}" is one of [{choices}]; "{raw}" is not' + (f" ({hint})" if hint else "")
        )
    return value


def _as_date(field: FieldDef, raw: Any) -> str:
    if isinstance(raw, datetime):
        return raw.date().isoformat()
    if isinstance(raw, date):
        return raw.isoformat()
    text = str(raw).strip()
    try:
        return (
            date.fromisoformat(text[:10]).isoformat()
            if len(text) >= 10
            else date.fromisoformat(text).isoformat()
        )
    except ValueError:
        raise BadInput(f'field "{field.name}" is a date; "{raw}" is not a date like 2026-03-31') from None


def parse_time(text: str, what: str = "time") -> datetime:
    """ISO 8601 date or date-time → aware UTC datetime (naive means UTC)."""
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise BadInput(
            f'{what} "{text}" is not an ISO 8601 time such as 2026-03-31 or 2026-03-31T09:30:00Z'
        ) from None
    return as_utc(value, what)


def as_utc(value: datetime, what: str = "time") -> datetime:
    """`value` in UTC (naive means UTC already); `BadInput` when the offset
    takes it past the first or last representable instant."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise BadInput(f'{what} "{value.isoformat()}" is out of range once converted to UTC') from None


def default_actor() -> str:
    """Who acts when nobody says: the OS user (getpass reads LOGNAME, USER,
    LNAME, USERNAME, then the password database), or "unknown"."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_assignment(text: str) -> tuple[str, str]:
    """`FIELD=VALUE` → (field, value)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise BadInput(f'"{text}" is not FIELD=VALUE')
    return name.strip(), value
