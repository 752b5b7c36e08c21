"""Reading Lark's tokens: positions, numbers, strings and durations.

The base of the tree builder: a `Span` from a token or a rule's meta, a
number as written (with the problems the grammar cannot express, SF004 and
SF008, collected rather than raised), a string without its quotes, a
duration in days.
"""

from __future__ import annotations

from typing import Any

from lark import Token

from ..errors import Diagnostic, Span
from ..limits import MAX_NUMBER_LENGTH


class TokenReader:
    """Positions and numbers of one file's tokens; `problems` collects
    what is wrong with them, so that one run reports them all."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Diagnostic] = []

    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.path, 0, 0, 0, 0)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, token: Token) -> Span:
        return Span(
            self.path,
            token.line or 0,
            token.column or 0,
            token.end_line or token.line or 0,
            token.end_column or token.column or 0,
        )

    def _whole(self, token: Token, what: str) -> int:
        text = str(token)
        if self._too_long(token):
            return 0
        if "." in text:
            self.problems.append(
                Diagnostic("SF004", "error", self._tspan(token), f"{what} must be a whole number, not {text}")
            )
            return int(text.partition(".")[0])  # never through float: 1e400 has no int
        return int(text)

    def _number(self, token: Token) -> int | float:
        """A number as written; a float beyond the largest one is inf, for
        the checker to refuse where it goes (SF108, SF118, SF210, SF213)."""
        return 0 if self._too_long(token) else as_number(token)

    def _too_long(self, token: Token) -> bool:
        """SF008 a number of more than MAX_NUMBER_LENGTH characters: no value
        in range needs them, and Python's int() refuses past 4,300 digits."""
        if len(token) <= MAX_NUMBER_LENGTH:
            return False
        self.problems.append(
            Diagnostic(
                "SF008",
                "error",
                self._tspan(token),
                f"a number written with {len(token):,} characters; the limit is {MAX_NUMBER_LENGTH:,}",
            )
        )
        return True


def as_number(token: Token | str) -> int | float:
    text = str(token)
    return float(text) if "." in text else int(text)


def in_days(amount: int | float, unit: str) -> int | float:
    """A duration written in `unit` as days: whole days stay an int, hours
    become a fraction of a day (48 hours is 2)."""
    if unit == "days":
        return amount
    try:
        days = amount / 24
    except OverflowError:  # an integer past any float: out of range, for check to say
        return int(amount) // 24
    return int(days) if days.is_integer() else days


def unquote(token: Token | str) -> str:
    body = str(token)[1:-1]
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)
