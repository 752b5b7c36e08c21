"""The documented range of every value saleflow accepts from outside.

Layer 0, beside `errors`.  A value that a database or Python itself cannot
hold (a NUL byte in text, a lone surrogate from a command line that was not
UTF-8, an integer past 64 bits, a time past the year 9999 once a window is
added to it) must be refused where it enters, with one sentence, before
anything is written: otherwise it surfaces halfway through a transaction as
a driver traceback.  Every entry point (the CLI, the Python API, CSV import,
the flow checker) judges values with the functions here, so the limits are
the same everywhere and are documented once (README, "Limits").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .errors import BadInput

# Integers: what a 64-bit signed column (PostgreSQL bigint, SQLite INTEGER)
# holds.  Field values of type int, number and money must fit.
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
# Counters stored in 32-bit columns: flow versions, event counts, cycles.
MAX_INT32 = 2**31 - 1
# Finite floats only; this is the largest magnitude accepted for a number or
# money field (beyond it arithmetic on scores and reports loses meaning).
MAX_NUMBER = 1e18  # money in any currency, with room to spare

# Text.  Identifiers (lead ids, actors, channels) are short keys; free text
# (text fields, an event's content, a reason) may be long but not unbounded.
MAX_ID_LENGTH = 255
MAX_TEXT_LENGTH = 100_000
# A webhook's URL (`saleflow webhook add`): what every browser and proxy
# passes, and far more than any real endpoint needs.
MAX_URL_LENGTH = 2_000

# Times of operations (--at, --now, --since/--until, an import's time
# column): a window or an SLA of up to MAX_DAYS added to any of them stays
# representable.
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)
# Durations in a flow (SLAs, windows, time targets) and the days an
# expression compares with: at most a thousand years.
MAX_DAYS = 365_000

# Files read from outside (CSV imports): a row, its line or, when a quoted
# cell holds line breaks, its lines together, is at most this many bytes.
# Reads are bounded by it, so a file without line breaks (/dev/zero, a
# corrupt export) is refused instead of being read into memory whole.
MAX_CSV_ROW_BYTES = 1 << 20  # 1 MiB


def check_text(value: str, what: str, *, limit: int = MAX_TEXT_LENGTH) -> str:
    """`value` if a database can store it as text: no NUL byte, no lone
    surrogate (what Python makes of bytes that were not UTF-8), at most
    `limit` characters.  `what` names it in the sentence ("lead id")."""
    if len(value) > limit:
        raise BadInput(f"{what} is {len(value):,} characters long; the limit is {limit:,}")
    if "\x00" in value:
        raise BadInput(f"{what} holds a NUL byte (\\0), which no database stores in text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(
            f"{what} is not valid Unicode text (was it given in another encoding than UTF-8?)"
        ) from None
    return value


def check_id(value: str, what: str = "a lead id") -> str:
    """A key such as a lead id: non-empty text of at most MAX_ID_LENGTH
    characters, on one line (no control character or line separator: an id
    is printed in listings and sentences)."""
    if not value or not value.strip():
        raise BadInput(f"{what} must not be empty")
    check_text(value, what, limit=MAX_ID_LENGTH)
    if _CONTROL.search(value):
        raise BadInput(f"{what} holds a control character, a line break or a bidirectional control")
    return value


# C0 and C1 controls, DEL, the line and paragraph separators, and the
# bidirectional controls that reorder how the text around them is shown
# (an id printed in a listing or a sentence must read as it is stored).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """`text` on one line: line breaks and other control characters as
    escapes (a sentence that quotes what a user typed stays one sentence)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def check_int(value: int, what: str, low: int = MIN_INT, high: int = MAX_INT) -> int:
    """`value` if it lies in [low, high]; a sentence naming the range otherwise."""
    if not low <= value <= high:
        raise BadInput(f"{what} must be between {low:,} and {high:,}, not {_short(value)}")
    return value


def check_time(value: datetime, what: str = "a time") -> datetime:
    """`value` (aware) if it lies between MIN_TIME and MAX_TIME."""
    if not MIN_TIME <= value < MAX_TIME:
        raise BadInput(
            f"{what} {value.isoformat()} is out of range: saleflow takes times from "
            f"{MIN_TIME.date().isoformat()} up to {MAX_TIME.date().isoformat()}"
        )
    return value


def _short(value: int) -> str:
    """An integer for a message: a 400-digit one is not printed whole."""
    digits = len(str(abs(value))) if abs(value) < 10**4000 else None
    if digits is not None and digits <= 30:
        return f"{value:,}"
    sign = "-" if value < 0 else ""
    return f"{sign}a number of {digits:,} digits" if digits else f"{sign}a number of over 4,000 digits"


# Flow files (the flow language's share; docs/diagnostics.md, SF008 and
# SF108/SF118/SF119/SF213).  A flow file is read up to MAX_FLOW_BYTES: room for
# a 100,000-value enum many times over, but /dev/zero is refused.
MAX_FLOW_BYTES = 16 * 1024 * 1024
# A number written in a flow has at most this many characters: far more than
# any value in range needs, far fewer than Python's int() refuses (4,300).
MAX_NUMBER_LENGTH = 1_000
# `version N`: a 32-bit column holds it.
MAX_VERSION = MAX_INT32
# `capacity N`: leads in one stage at once.
MAX_CAPACITY = 1_000_000_000
# Score points of one rule (`+N each e`, `-N if c`): a score summed over
# MAX_INT32 events of every rule stays far inside MAX_NUMBER.
MAX_POINTS = 1_000_000
# `at least N of { … }`: more than any gate can list.
MAX_AT_LEAST = MAX_INT32
# How deeply an expression nests (`not not …`, `at least 1 of { at least … }`),
# counting the levels of the conditions it names: checking, evaluating and
# drawing recurse over it.  No real gate comes near it.
MAX_DEPTH = 100


def number_text(value: int | float) -> str:
    """A number for a message, however large: `1,000,000.5`, `inf`, and a
    400-digit integer as `999999…999 (400 digits)`, never printed whole."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value:,.15g}"
    if abs(value) >= 10**4000:
        return f"{'-' if value < 0 else ''}a number of over 4,000 digits"
    digits = str(abs(value))
    if len(digits) <= 30:
        return f"{value:,}"
    return f"{'-' if value < 0 else ''}{digits[:6]}…{digits[-3:]} ({len(digits):,} digits)"
