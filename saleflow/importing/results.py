"""What an import reports: its result, its bad rows, its errors (one line each)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from ..errors import BadInput, SaleflowError

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_NULLS: tuple[str, ...] = ("Select",)
SHOWN_BAD_ROWS = 20
REASON_COLUMN = "reason"

Progress = Callable[[int], None]
"""Called with the number of bytes of the file just processed; each pass
reads the whole file, so an import reports twice the file's size in all."""


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be imported: its line in the file (the header is
    line 1), the column at fault (None for the row as a whole), and why."""

    line: int
    column: str | None
    reason: str

    def __post_init__(self) -> None:  # the reason quotes cells, which may hold line breaks
        object.__setattr__(self, "reason", one_line(self.reason))
        if self.column is not None:
            object.__setattr__(self, "column", one_line(self.column))

    def __str__(self) -> str:
        where = f'line {self.line}, column "{self.column}"' if self.column else f"line {self.line}"
        return f"{where}: {self.reason}"


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str) -> str:
    """`text` with its control characters, line and paragraph separators
    and lone surrogates written as escapes (``\\n``, ``\\x1e``): a message that
    quotes a cell or a file name stays one printable line."""
    return _UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


def one_line_errors(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, whose saleflow errors' messages are made `one_line`."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except SaleflowError as err:
            err.message = one_line(err.message)
            err.args = (err.message,)
            raise

    return wrapper


class BadRows(BadInput):
    """The file has bad rows, so nothing was imported.  `rows` holds the
    first `SHOWN_BAD_ROWS` of them, `count` says how many there are; the
    message names the row when there is one."""

    def __init__(self, path: str, rows: tuple[BadRow, ...], count: int) -> None:
        if count == 1 and rows:  # one sentence says it all
            message = (
                f"{path} has 1 bad row, so nothing was imported: {rows[0]} "
                "(fix it, or import the good rows with --skip-bad FILE)"
            )
        else:
            message = (
                f"{path} has {count} bad rows, so nothing was imported "
                "(fix them, or import the good rows with --skip-bad FILE)"
            )
        super().__init__(message)
        self.rows = rows
        self.count = count


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did."""

    path: str
    flow: str
    version: int
    rows: int  # data rows read (blank lines not counted)
    imported: int  # rows applied
    created: int  # leads created
    updated: int  # leads that existed before the import and were updated
    moves: int  # changes of stage, automatic ones included (not the creations)
    placed: int  # leads put in the stage the stage column gives (created there or moved)
    bad: int  # rows not imported (written to `skipped_to`)
    bad_rows: tuple[BadRow, ...]  # the first of them
    skipped_to: str | None
    columns: Mapping[str, str]  # column -> field
    ignored: tuple[str, ...]  # columns that map to no field
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "flow": self.flow,
            "version": self.version,
            "rows": self.rows,
            "imported": self.imported,
            "created": self.created,
            "updated": self.updated,
            "moves": self.moves,
            "placed": self.placed,
            "bad": self.bad,
            "bad_rows": [{"line": b.line, "column": b.column, "reason": b.reason} for b in self.bad_rows],
            "skipped_to": self.skipped_to,
            "columns": dict(self.columns),
            "ignored": list(self.ignored),
            "seconds": round(self.seconds, 3),
        }
