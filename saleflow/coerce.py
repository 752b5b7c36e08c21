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
from .limits import (
    MAX_ID_LENGTH,
    MAX_INT,
    MAX_NUMBER,
    MAX_TIME,
    MIN_INT,
    MIN_TIME,
    check_text,
    check_time,
    one_line,
)
from .model.flow import FieldDef
from .records import FieldValue

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "t", "on"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "f", "off"})


def _integral(number: float) -> int | float:
    return int(number) if number.is_integer() else number


# Longer text is no number in range: it is refused before int() or float()
# sees it (int() raises ValueError past 4,300 digits).
_MAX_NUMBER_TEXT = 100


def _shown(raw: Any) -> str:
    """A value for a message: a 4,301-digit one is not printed whole."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 128:
        return "a number of more than 38 digits"
    text = str(raw)
    return f'"{one_line(text)}"' if len(text) <= 40 else f"a value of {len(text):,} characters"


def in_range(field: FieldDef, number: int | float, raw: Any) -> int | float:
    """`number` if the field's type holds it: a 64-bit integer for int, a
    finite number of at most MAX_NUMBER in magnitude for number and money."""
    if isinstance(number, float):
        if number != number or number in (float("inf"), float("-inf")):
            raise BadInput(f'field "{field.name}" is {field.type}; {_shown(raw)} is not a finite number')
        number = _integral(number)
    if field.type.kind == "int":
        if not MIN_INT <= number <= MAX_INT:
            raise BadInput(
                f'field "{field.name}" is int; {_shown(raw)} is out of range '
                f"(from {MIN_INT:,} to {MAX_INT:,})"
            )
    elif not -MAX_NUMBER <= number <= MAX_NUMBER:
        raise BadInput(
            f'field "{field.name}" is {field.type}; {_shown(raw)} is out of range '
            f"(from {-MAX_NUMBER:,.0f} to {MAX_NUMBER:,.0f})"
        )
    return number


def _as_number(field: FieldDef, raw: Any) -> int | float:
    if isinstance(raw, bool):
        raise BadInput(f'field "{field.name}" is {field.type}; {raw!r} is not a number')
    if isinstance(raw, int | float):
        return in_range(field, raw, raw)
    text = check_text(str(raw), f'field "{field.name}"').strip().replace("_", "")
    if len(text) > _MAX_NUMBER_TEXT:
        raise BadInput(f'field "{field.name}" is {field.type}; {_shown(raw)} is out of range')
    if text.isascii() and text.lstrip("+-")[:1].isdigit() and text[1:].isdigit():
        # a whole number (the usual CSV cell): exactly, not through a float
        return in_range(field, int(text), raw)
    try:
        number = float(text)
    except ValueError:
        raise BadInput(f'field "{field.name}" is {field.type}; {_shown(raw)} is not a number') from None
    return in_range(field, number, raw)


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise(name: str) -> str:
    """How an outside name meets a name of the flow, ignoring case, spaces
    and punctuation: lower case, every run of other characters one "_"
    (``Lead Origin`` → ``lead_origin``).  A CSV column meets a field, a cell
    a stage, a value an enum field's choice."""
    return _NOT_ALNUM.sub("_", name.lower()).strip("_")


def coerce(field: FieldDef, raw: Any, nulls: Collection[str] = ()) -> FieldValue:
    """Convert `raw` to `field`'s type; None, "" and `nulls` mean unset."""
    if raw is None:
        return None
    if isinstance(raw, str) and (raw.strip() == "" or raw in nulls):
        return None
    kind = field.type.kind
    if kind == "text":
        return check_text(str(raw), f'field "{field.name}"')
    if kind == "int":
        number = _as_number(field, raw)
        if isinstance(number, float):
            raise BadInput(f'field "{field.name}" is int; {_shown(raw)} is not a whole number')
        return number
    if kind in ("number", "money"):
        return _as_number(field, raw)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        word = check_text(str(raw), f'field "{field.name}"', limit=MAX_ID_LENGTH).strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise BadInput(f'field "{field.name}" is bool; {_shown(raw)} is not true or false')
    if kind == "date":
        return _as_date(field, raw)
    # enum
    value = check_text(str(raw), f'field "{field.name}"', limit=MAX_ID_LENGTH).strip()
    if value not in field.type.choices:
        # "Decision Maker" from a CRM means decision_maker, when only one
        # choice reads the same ignoring case, spaces and punctuation.
        same = [choice for choice in field.type.choices if normalise(choice) == normalise(value)]
        if len(same) == 1:
            return same[0]
        hint = did_you_mean(value, field.type.choices)
        choices = ", ".join(field.type.choices)
        raise BadInput(
            f'field "{field.name}" is one of [{choices}]; {_shown(raw)} is not'
            + (f" ({hint})" if hint else "")
        )
    return value


def _as_date(field: FieldDef, raw: Any) -> str:
    if isinstance(raw, datetime):
        day = raw.date()
    elif isinstance(raw, date):
        day = raw
    else:
        text = check_text(str(raw), f'field "{field.name}"', limit=MAX_ID_LENGTH).strip()
        try:
            day = date.fromisoformat(text[:10]) if len(text) >= 10 else date.fromisoformat(text)
        except ValueError:
            raise BadInput(
                f'field "{field.name}" is a date; {_shown(raw)} is not a date like 2026-03-31'
            ) from None
    # A flow adds days to a date field (windows, "within N days"): keep it
    # where times are representable.
    if not MIN_TIME.date() <= day < MAX_TIME.date():
        raise BadInput(
            f'field "{field.name}" is a date; {day.isoformat()} is out of range: saleflow takes dates '
            f"from {MIN_TIME.date().isoformat()} up to {MAX_TIME.date().isoformat()}"
        )
    return day.isoformat()


# The ISO 8601 forms saleflow takes: a calendar date, then optionally a time
# (hours, minutes, seconds, a fraction) with an optional offset.  Python's own
# `fromisoformat` also reads week dates and the basic format, which turn
# typos into times ("43320301-01-01" would be 4332-03-01 at UTC-01:01).
_ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d{1,6})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
)


def parse_time(text: str, what: str = "time") -> datetime:
    """ISO 8601 date or date-time → aware UTC datetime (naive means UTC)."""
    raw = check_text(text, what, limit=MAX_ID_LENGTH).strip()
    try:
        if not _ISO_TIME.fullmatch(raw):
            raise ValueError(raw)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError:
        raise BadInput(
            f"{what} {_shown(text)} is not an ISO 8601 time such as 2026-03-31 or 2026-03-31T09:30:00Z"
        ) from None
    return check_time(as_utc(value, what), what)


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
        raise BadInput(f"{_shown(text)} is not FIELD=VALUE")
    return name.strip(), value
