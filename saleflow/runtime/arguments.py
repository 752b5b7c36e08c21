"""Checking what a caller passes to the `Engine` API: lead ids, names,
kinds of journal entry, and how a bad whole number is shown in a message.

Layer 4, part of the runtime: every public operation checks its arguments
here first, so a bad one is a `BadInput` sentence, never a traceback.
"""

from __future__ import annotations

from typing import Any

from ..errors import BadInput, did_you_mean
from ..journal import ENTRY_KINDS
from ..limits import check_id, number_text, one_line


def checked_lead_id(value: Any) -> str:
    """A lead id from a caller: non-empty text a database can store as a key."""
    if not isinstance(value, str):
        raise BadInput(f"a lead id is text, not {type(value).__name__}")
    return check_id(value, "a lead id")


def checked_kind(value: Any) -> str:
    """A kind of journal entry from a caller: one of `ENTRY_KINDS`."""
    known = ", ".join(ENTRY_KINDS)
    if not isinstance(value, str):
        raise BadInput(f"a kind of entry is text ({known}), not {type(value).__name__}")
    check_id(value, "a kind of entry")
    if value not in ENTRY_KINDS:
        hint = did_you_mean(value, ENTRY_KINDS)
        raise BadInput(
            f'no kind of entry is called "{value}"'
            + (f" ({hint})" if hint else "")
            + f"; the kinds are {known}"
        )
    return value


def shown(value: Any) -> str:
    """A value a caller passed where a whole number belongs, for a message."""
    if isinstance(value, int) and not isinstance(value, bool):
        return number_text(value)
    return f"{type(value).__name__} {one_line(repr(value)[:40])}"


def checked_name(value: Any, what: str) -> str:
    """A name (flow, stage, event, field, channel, actor) from a caller."""
    if not isinstance(value, str):
        raise BadInput(f"{what} is text, not {type(value).__name__}")
    return check_id(value, what)
