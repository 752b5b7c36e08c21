"""`saleflow import`: leads and their history from a CSV file (SPEC §4).

Layer 4, beside `engine.py`.  A CRM export is the usual way leads arrive, so
an import has to take a real file as it is: columns named by people ("Lead
Origin"), placeholders left by forms ("Select"), decimals, Yes/No flags, and
sometimes a history, one row per change of stage, with its dates.

The file is read twice, streaming, every row bounded in size
(`limits.MAX_CSV_ROW_BYTES`): rows are never all held in memory (per lead
the import remembers its id, and with a time column its last time).  The
first pass checks everything (the header, every cell against its field's
type and against what a database can hold: limits.py, stages, times, that
each lead's rows run forward in time) and writes nothing to the database: a
file with bad rows is refused whole, listing them, unless `skip_bad` names a
file to put them in, which is then written and closed before the database is
touched.  The second pass applies the rows in file order, all of them in one
transaction, so a file lands whole or not at all (a conflict retries the
whole pass); it writes chunk by chunk inside it.  Per row, a new lead is
created at the row's time with the row's fields, in the row's stage (its
first audit entry then has kind ``import``) or else in the initial stage; a
stored lead gets the row's fields and is placed in the row's stage (an
ungated move of kind ``import``).  Then the lead progresses as after any
other change.  So the funnel of an imported history is the file's own: a
lead whose first row is a customer never entered the first stage.  On SQL
stores each chunk's writes go through `BufferedTransaction`
(`saleflow.store.bulk`): a few statements per chunk, not per lead, and the
memory of one chunk.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import errno
import os
import re
import stat
import time
from array import array
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial, wraps
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

from .coerce import as_utc, coerce, parse_time
from .compile import CompiledFlow
from .csvcell import safe_row, unescape_cell
from .engine import chunked, write_behind
from .errors import BadInput, NotFound, SaleflowError, did_you_mean
from .limits import (
    MAX_CSV_ROW_BYTES,
    MAX_ID_LENGTH,
    MAX_NUMBER,
    MAX_TEXT_LENGTH,
    MAX_TIME,
    MIN_TIME,
    check_int,
    check_text,
    check_time,
)
from .model import FieldDef
from .progress import Work
from .records import AuditEntry, FieldValue, Store, Transaction
from .store import bulk
from .store.sql import SqlStore

if TYPE_CHECKING:
    from .engine import Engine

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_NULLS: tuple[str, ...] = ("Select",)
SHOWN_BAD_ROWS = 20
REASON_COLUMN = "reason"
_CACHED_VALUES = 20_000  # distinct cells remembered per column (values repeat a lot in real exports)

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


def _one_line_errors(function: Callable[P, R]) -> Callable[P, R]:
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


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def normalise(name: str) -> str:
    """How a column name meets a field or stage name: lower case, every run
    of other characters one "_" (``Lead Origin`` → ``lead_origin``)."""
    return _NOT_ALNUM.sub("_", name.strip().lower()).strip("_")


def _close_column(name: str, columns: Collection[str]) -> str | None:
    """A hint naming the column the user probably meant."""
    wanted = normalise(name)
    for column in columns:
        if column and normalise(column) == wanted:
            return f'did you mean "{column}"?'
    words = set(wanted.split("_")) - {""}
    holding = [column for column in columns if words and words <= set(normalise(column).split("_"))]
    if holding:  # "id" → "Lead ID"
        return f'did you mean "{min(holding, key=len)}"?'
    by_lower = {column.lower(): column for column in columns if column}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f'did you mean "{by_lower[close[0]]}"?' if close else None


# --------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------


class _Source:
    """The CSV file as (line number, cells), counting the bytes read.  Every
    way the file itself is unusable is one `BadInput` sentence.

    Reads are bounded: a row (its line, or its lines when a quoted cell
    holds line breaks) longer than `limits.MAX_CSV_ROW_BYTES` is refused
    before more of it is read.  Cells are read through `unescape_cell`, so a
    file saleflow wrote (the rejects of ``--skip-bad``) reads back as the
    values it was given.  The file must be a regular file: it is read twice,
    and `unchanged` tells whether it is still the file the first pass read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.read = 0
        self._row_bytes = 0  # of the row being read
        self._row_line = 1  # where it starts
        self._quoted = False  # a "'" in the row's lines: cells to unescape
        try:
            found = os.stat(path)
        except FileNotFoundError:
            raise BadInput(f"{path} does not exist") from None
        except OSError as err:
            raise BadInput(f"cannot read {path}: {err.strerror or err}") from None
        if stat.S_ISDIR(found.st_mode):
            raise BadInput(f"{path} is a folder, not a CSV file")
        if not stat.S_ISREG(found.st_mode):
            raise BadInput(
                f"{path} is not a regular file (a device or a pipe); an import reads its file twice, "
                "so save the data to a file first"
            )
        self.identity = _identity(found)

    def unchanged(self) -> bool:
        """Whether the file is as it was when the import began (same file,
        size and modification time)."""
        try:
            return _identity(os.stat(self.path)) == self.identity
        except OSError:
            return False

    def _open(self) -> IO[bytes]:
        try:
            return open(self.path, "rb")  # closed by `rows`
        except OSError as err:
            raise BadInput(f"cannot read {self.path}: {err.strerror or err}") from None

    def _lines(self, handle: IO[bytes]) -> Iterator[str]:
        limit = MAX_CSV_ROW_BYTES
        lines = iter(partial(handle.readline, limit + 1), b"")
        for number, raw in enumerate(lines, start=1):
            size = len(raw)
            self.read += size
            self._row_bytes += size
            if self._row_bytes > limit:
                where = f"line {self._row_line}" + (
                    f" (a row running on to line {number})" if number > self._row_line else ""
                )
                raise BadInput(
                    f"{self.path} {where} is longer than {limit // 1024:,} KiB, the most saleflow reads "
                    "as one row (is it a CSV file?)"
                )
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if b"'" in raw:
                self._quoted = True
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BadInput(
                    f"{self.path} is not UTF-8 text: line {number} has the byte 0x{raw[err.start]:02x} "
                    "(save the file as UTF-8)"
                ) from None

    def rows(self) -> Generator[tuple[int, list[str]], None, None]:
        """(line where the row starts, cells), header first; blank lines skipped."""
        self.read = 0
        self._row_bytes = 0
        self._row_line = 1
        with self._open() as handle:
            reader = csv.reader(self._lines(handle), strict=True)
            previous = 0
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise BadInput(f"{self.path} line {reader.line_num} is not valid CSV: {err}") from None
                line, previous = previous + 1, reader.line_num
                self._row_bytes = 0
                self._row_line = previous + 1
                if self._quoted:
                    cells = [unescape_cell(cell) for cell in cells]
                    self._quoted = False
                if cells:
                    yield line, cells


def _identity(found: os.stat_result) -> tuple[int, ...]:
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


# --------------------------------------------------------------------------
# The plan: which column is what
# --------------------------------------------------------------------------


class _Failure:
    """A cell value that cannot be converted (cached like a good one)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


_UNSEEN = _Failure("")  # a cache miss (never stored)


class _Column:
    """A column that feeds a field, with its conversions remembered: good
    values in `cache` (which `_Checker._one` reads directly), failures apart."""

    __slots__ = ("cache", "date_formats", "definition", "failed", "field", "index", "limit", "name", "nulls")

    def __init__(
        self, index: int, name: str, definition: FieldDef, nulls: frozenset[str], dates: tuple[str, ...] = ()
    ) -> None:
        self.index = index
        self.name = name
        self.definition = definition
        self.field = definition.name
        self.nulls = nulls
        self.cache: dict[str, FieldValue] = {}
        self.failed: dict[str, _Failure] = {}
        # A date field also reads --date-format, or its date part.
        self.date_formats = dates if definition.type.kind == "date" else ()
        # The longest cell it reads: text up to MAX_TEXT_LENGTH; a number, a
        # date, a yes or no is short; a choice at most the longest choice.
        choices = definition.type.choices
        self.limit = (
            MAX_TEXT_LENGTH
            if definition.type.kind == "text"
            else max(MAX_ID_LENGTH, max(map(len, choices), default=0))
        )

    def convert(self, raw: str) -> FieldValue | _Failure:
        """A cell `cache` does not hold (the caller looked): its value, or why not."""
        failure = self.failed.get(raw)
        if failure is not None:
            return failure
        try:
            value = self._value(raw)
        except BadInput as err:
            failure = _Failure(err.message)
            if len(self.failed) < _CACHED_VALUES:
                self.failed[raw] = failure
            return failure
        if len(self.cache) < _CACHED_VALUES:
            self.cache[raw] = value
        return value

    def _value(self, raw: str) -> FieldValue:
        """The field's value for `raw`, judged by everything the database
        and Python can hold (limits.py), or `BadInput` saying why not."""
        definition = self.definition
        kind = definition.type.kind
        reason = bad_text(raw, self.limit)
        if reason is not None:
            raise BadInput(reason)
        try:
            whole = _WHOLE.fullmatch(raw) if kind in _NUMERIC and raw not in self.nulls else None
            # A whole number is read exactly (a float would round -2**63 - 1 into range).
            value = int(raw) if whole is not None else coerce(definition, raw, self.nulls)
        except (ValueError, OverflowError):  # int() of over 4,300 digits, say
            raise BadInput(
                f'field "{self.field}" is {definition.type}; the value is not a number saleflow can hold'
            ) from None
        except BadInput:
            value = self._by_format(raw)
            if value is None:
                raise
        if kind in _NUMERIC and value is not None:
            _check_number(self.field, kind, value)
        return value

    def _by_format(self, raw: str) -> FieldValue:
        """A date written as --date-format says (or its date part), as ISO."""
        text = raw.strip()
        for date_format in self.date_formats:
            try:
                moment = datetime.strptime(text, date_format)
            except ValueError:
                continue
            return coerce(self.definition, moment)
        return None


_NUMERIC = frozenset({"int", "number", "money"})
_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*")


def bad_text(value: str, limit: int, what: str = "the value") -> str | None:
    """Why a database cannot store the cell `value` as text (a NUL byte, a
    lone surrogate, more than `limit` characters), or None.  Plain short
    ASCII, the usual cell, is judged without copying it."""
    if value.isascii() and len(value) <= limit and "\x00" not in value:
        return None
    try:
        check_text(value, what, limit=limit)
    except BadInput as err:
        return err.message
    return None


def _check_number(name: str, kind: str, value: FieldValue) -> None:
    """A number field's value within limits.py's range: 64 bits for an int,
    at most `MAX_NUMBER` in size for a number or money."""
    if kind == "int":
        assert isinstance(value, int)
        check_int(value, f'field "{name}"')
        return
    assert isinstance(value, int | float)
    if not -MAX_NUMBER <= value <= MAX_NUMBER:
        raise BadInput(
            f'field "{name}" is {kind}; the value is beyond {MAX_NUMBER:,.0f} in size, the largest saleflow takes'
        )


_TIME_DIRECTIVE = re.compile(r"%[HIMSpfzXc]")


def _date_formats(date_format: str | None) -> tuple[str, ...]:
    """The formats a date field reads: --date-format, and its part before
    the first time directive ("%m/%d/%Y %I:%M %p" reads "4/5/2024" too)."""
    if date_format is None:
        return ()
    found = _TIME_DIRECTIVE.search(date_format)
    head = date_format[: found.start()].rstrip(" T,;@-") if found else ""
    return tuple(f for f in dict.fromkeys((date_format, head)) if "%" in f)


@dataclass(slots=True)
class _Plan:
    header: list[str]
    id_index: int
    stage_index: int | None
    at_index: int | None
    columns: list[_Column]
    ignored: list[str]
    stages: dict[str, str]  # as written in the file (exact or normalised) -> stage ("": none)


def _column_index(header: list[str], name: str, option: str, path: str) -> int:
    name = name.strip()  # as the header's names are
    if name in header:
        return header.index(name)
    hint = _close_column(name, header)
    raise BadInput(f'{path} has no column "{name}" ({option})' + (f"; {hint}" if hint else ""))


def _plan(
    header_cells: list[str],
    path: str,
    cf: CompiledFlow,
    *,
    id_column: str,
    mapping: Mapping[str, str],
    stage_column: str | None,
    at_column: str | None,
    nulls: frozenset[str],
    stage_map: Mapping[str, str] | None = None,
    date_format: str | None = None,
) -> _Plan:
    header = [cell.strip() for cell in header_cells]
    if not any(header):
        raise BadInput(f"{path} has an empty header line; its first line must name the columns")
    first_seen: dict[str, int] = {}
    for index, name in enumerate(header):
        if name in first_seen and name:
            raise BadInput(
                f'{path} has the column "{name}" twice in its header (columns {first_seen[name] + 1} '
                f"and {index + 1})"
            )
        first_seen[name] = index
    if len(header) == 1 and id_column.strip() not in header:
        for separator, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if header[0].count(separator) >= 1:
                raise BadInput(
                    f"{path} has one column whose name holds {name}: its values look separated by "
                    f"{name}, and saleflow reads comma-separated CSV (save the file as CSV with commas)"
                )
    id_index = _column_index(header, id_column, "--id-column", path)
    stage_index = (
        None if stage_column is None else _column_index(header, stage_column, "--stage-column", path)
    )
    at_index = None if at_column is None else _column_index(header, at_column, "--at-column", path)

    fields = {f.name: f for f in cf.flow.fields}
    field_names = list(fields)
    chosen: dict[str, str] = {}  # field -> column
    explicit: dict[str, str] = {}  # column -> field ("" ignores the column)
    for column, target in mapping.items():
        column, target = column.strip(), target.strip()
        _column_index(header, column, "--map", path)
        if target and target not in fields:
            hint = did_you_mean(target, field_names)
            raise NotFound(
                f'flow "{cf.name}" has no field "{target}" (--map "{column}={target}")'
                + (f"; {hint}" if hint else "")
            )
        if target and target in chosen:
            raise BadInput(
                f'--map gives the field "{target}" two columns ("{chosen[target]}" and "{column}")'
            )
        explicit[column] = target
        if target:
            chosen[target] = column
    special = {i for i in (id_index, stage_index, at_index) if i is not None}
    ignored: list[str] = []
    by_self: dict[str, str] = {}
    for index, column in enumerate(header):
        if column in explicit:
            if not explicit[column] and index not in special:
                ignored.append(column)
            continue
        target = column if column in fields else normalise(column)
        if target not in fields or target in chosen:
            if index not in special:
                ignored.append(column or f"(column {index + 1})")
            continue
        if target in by_self:
            raise BadInput(
                f'{path}: the columns "{by_self[target]}" and "{column}" both map to the field "{target}"; '
                f'say which with --map (--map "{column}=" ignores a column)'
            )
        by_self[target] = column
    chosen.update(by_self)
    dates = _date_formats(date_format)
    columns = [
        _Column(header.index(column), column, fields[name], nulls, dates) for name, column in chosen.items()
    ]
    columns.sort(key=lambda c: c.index)
    if date_format is not None and at_column is None and not any(c.date_formats for c in columns):
        raise BadInput(
            "--date-format needs --at-column or a date field among the columns: it says how to read "
            "their times and dates"
        )
    stages: dict[str, str] = {}
    for name in cf.flow.stage_names:
        stages[name] = name
        stages.setdefault(normalise(name), name)
    mapped: dict[str, tuple[str, str]] = {}  # normalised value -> (value, stage)
    for value, given in (stage_map or {}).items():
        value, given = value.strip(), given.strip()
        if stage_column is None:
            raise BadInput("--map-stage needs --stage-column: it says what that column's values mean")
        stage = stages.get(given) or stages.get(normalise(given)) if given else ""
        if stage is None:
            hint = did_you_mean(given, cf.flow.stage_names)
            raise NotFound(
                f'flow "{cf.name}" has no stage "{given}" (--map-stage "{value}={given}")'
                + (f"; {hint}" if hint else "")
            )
        key = normalise(value)
        if key in mapped and mapped[key][1] != stage:
            raise BadInput(
                f'--map-stage gives "{mapped[key][0]}" and "{value}", the same value as the file is read, two '
                f'stages ("{mapped[key][1] or "none"}" and "{stage or "none"}")'
            )
        mapped[key] = (value, stage)
    for value, stage in mapped.values():
        stages[value] = stages[normalise(value)] = stage  # "": no stage
    return _Plan(header, id_index, stage_index, at_index, columns, ignored, stages)


# --------------------------------------------------------------------------
# Checking rows
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    lead_id: str
    values: dict[str, FieldValue]
    stage: str | None
    at: datetime


class _Checker:
    """Turns raw rows into `_Row`s or `BadRow`s.  One per pass, so both
    passes judge alike: it remembers which leads it met, which of them were
    stored before (and in which flow and version), and the time of each
    lead's last good row."""

    def __init__(
        self,
        plan: _Plan,
        path: str,
        cf: CompiledFlow,
        store: Store,
        flows: Callable[[str, int], CompiledFlow],
        *,
        now: datetime,
        at_column: str | None,
        date_format: str | None,
    ) -> None:
        self.plan = plan
        self.path = path
        self.cf = cf
        self.store = store
        self.flows = flows
        self.now = now
        self.at_column = at_column
        self.date_format = date_format
        self.width = len(plan.header)
        # Per column: where its cell is, its cache's lookup, its field, itself.
        self.cells = [(c.index, c.cache.get, c.field, c) for c in plan.columns]
        self.met: set[str] = set()  # every lead met so far
        self.uncounted: set[str] = set()  # leads stored before the import, no good row yet
        self.updated = 0  # leads stored before the import that had a good row
        self.elsewhere: dict[str, tuple[str, int]] = {}  # stored leads of another flow or version
        self.last: dict[str, tuple[datetime, int]] = {}  # with a time column: lead -> time, line
        self.changed: dict[str, datetime] = {}  # stored leads without a good row yet: their last change
        self.dates_read = 0
        self.first_bad_date: tuple[int, str] | None = None
        self._versions: dict[tuple[str, int], tuple[str | None, frozenset[str]]] = {}

    def _time(self, raw: str) -> datetime:
        text = raw.strip()
        if self.date_format is None:
            moment = parse_time(text, f'column "{self.at_column}"')
        else:
            try:
                moment = as_utc(datetime.strptime(text, self.date_format))
            except ValueError:
                raise BadInput(f'"{raw}" is not a time in the format "{self.date_format}"') from None
        return moment

    def _readable(self, raw: str) -> bool:
        """Whether `raw` is written as a time (if not one Python can hold in UTC)."""
        text = raw.strip()
        try:
            if self.date_format is None:
                datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            else:
                datetime.strptime(text, self.date_format)
        except ValueError:
            return False
        return True

    def _one(self, line: int, cells: list[str]) -> _Row | BadRow:
        plan = self.plan
        if len(cells) != self.width:
            raise BadInput(
                f"{self.path} line {line} has {len(cells)} cells but the header has {self.width} columns"
                + (" (a value holding a comma must be quoted)" if len(cells) > self.width else "")
            )
        lead_id = cells[plan.id_index].strip()
        if not lead_id:
            return BadRow(line, plan.header[plan.id_index], "the lead id is empty")
        reason = bad_text(lead_id, MAX_ID_LENGTH, "the lead id")
        if reason is not None:
            return BadRow(line, plan.header[plan.id_index], reason)
        values: dict[str, FieldValue] = {}
        for index, known, name, column in self.cells:
            raw = cells[index]
            value: Any = known(raw, _UNSEEN)  # most cells repeat: a cached value is a good one
            if value is _UNSEEN:
                value = column.convert(raw)
                if isinstance(value, _Failure):
                    return BadRow(line, column.name, value.message)
            values[name] = value
        stage: str | None = None
        if plan.stage_index is not None:
            raw = cells[plan.stage_index].strip()
            if raw:
                stage = plan.stages.get(raw)
                if stage is None:
                    stage = plan.stages.get(normalise(raw))
                if stage is None:
                    reason = bad_text(raw, MAX_ID_LENGTH, "the stage")
                    if reason is not None:
                        return BadRow(line, plan.header[plan.stage_index], reason)
                    hint = did_you_mean(normalise(raw), self.cf.flow.stage_names)
                    return BadRow(
                        line,
                        plan.header[plan.stage_index],
                        f'flow "{self.cf.name}" has no stage "{raw}"'
                        + (f"; {hint}" if hint else "; say which with --map-stage"),
                    )
                stage = stage or None  # mapped to no stage
        at = self.now
        if plan.at_index is not None:
            raw = cells[plan.at_index]
            if not raw.strip():
                return BadRow(line, plan.header[plan.at_index], "the time is empty")
            try:
                at = self._time(raw)
            except BadInput as err:
                reason = bad_text(raw, MAX_ID_LENGTH, "the time")
                if reason is None and self._readable(raw):
                    self.dates_read += 1  # in the format, but out of range in UTC
                elif reason is None and self.first_bad_date is None:
                    self.first_bad_date = (line, raw)
                return BadRow(line, plan.header[plan.at_index], reason or err.message)
            self.dates_read += 1  # a time, even if out of range: the format is right
            if not MIN_TIME <= at < MAX_TIME:
                try:
                    check_time(at, "the time")
                except BadInput as err:
                    return BadRow(line, plan.header[plan.at_index], err.message)
        return _Row(line, lead_id, values, stage, at)

    def check(self, raw_rows: list[tuple[int, list[str]]]) -> list[_Row | BadRow]:
        """Judge a chunk of rows, in file order (one query for the leads
        met for the first time)."""
        judged = [self._one(line, cells) for line, cells in raw_rows]
        new = {r.lead_id for r in judged if isinstance(r, _Row) and r.lead_id not in self.met}
        if new:
            if isinstance(self.store, SqlStore):
                stored = bulk.lead_flows(self.store, new)
            else:
                stored = {}
                for lead_id in new:
                    lead = self.store.get_lead(lead_id)
                    if lead is not None:
                        stored[lead_id] = (lead.flow, lead.version, max(lead.entered_at, lead.updated_at))
            here = (self.cf.name, self.cf.version)
            for lead_id, (flow, version, changed) in stored.items():
                self.uncounted.add(lead_id)
                self.changed[lead_id] = changed
                if (flow, version) != here:
                    self.elsewhere[lead_id] = (flow, version)
            self.met.update(new)
        return [self._in_order(row) if isinstance(row, _Row) else row for row in judged]

    def _in_order(self, row: _Row) -> _Row | BadRow:
        plan = self.plan
        elsewhere = self.elsewhere.get(row.lead_id)
        if elsewhere is not None:
            problem = self._fits(row, *elsewhere)
            if problem is not None:
                return BadRow(row.line, plan.header[plan.id_index], problem)
        changed = self.changed.pop(row.lead_id, None)
        # A history's rows must come after what is stored (a row at the very
        # time of the last change was imported with it); a file without
        # times describes leads now, so now may be that same instant.
        if changed is not None and (row.at <= changed if self.at_column is not None else row.at < changed):
            self.changed[row.lead_id] = changed  # its next row is judged the same way
            return BadRow(row.line, self.at_column or plan.header[plan.id_index], self._stale(row, changed))
        if self.at_column is not None:
            before = self.last.get(row.lead_id)
            if before is not None and row.at < before[0]:
                return BadRow(
                    row.line,
                    self.at_column,
                    f'this row of lead "{row.lead_id}" ({row.at.isoformat()}) is older than its row on '
                    f"line {before[1]} ({before[0].isoformat()}); a lead's rows must run forward in time",
                )
            self.last[row.lead_id] = (row.at, row.line)
        if row.lead_id in self.uncounted:
            self.uncounted.discard(row.lead_id)
            self.updated += 1
        return row

    def _stale(self, row: _Row, changed: datetime) -> str:
        """Why a row older than its stored lead's last change is refused: a
        lead's history cannot be rewritten, and applying it would date its
        moves after the fact (typically: the file was imported before)."""
        if self.at_column is None:
            return (
                f'lead "{row.lead_id}" last changed at {changed.isoformat()}, after this import\'s time '
                f"({row.at.isoformat()}); without --at-column every row happens now"
            )
        than = "older than" if row.at < changed else "no newer than"
        return (
            f'this row of lead "{row.lead_id}" ({row.at.isoformat()}) is {than} the lead\'s last change '
            f"in the database ({changed.isoformat()}); a lead's history cannot be rewritten (was this file "
            "imported before? --skip-bad FILE sets such rows aside)"
        )

    def _fits(self, row: _Row, flow: str, version: int) -> str | None:
        """Why a stored lead cannot take `row`: another flow, or a version of
        this flow without a field (of the same type) or the stage."""
        if flow != self.cf.name:
            return f'lead "{row.lead_id}" belongs to flow "{flow}", not "{self.cf.name}"'
        key = (flow, version)
        if key not in self._versions:
            old = self.flows(flow, version).flow
            missing = next(
                (
                    f'no field "{c.field}" of type {c.definition.type}'
                    for c in self.plan.columns
                    if (d := old.field(c.field)) is None or d.type != c.definition.type
                ),
                None,
            )
            self._versions[key] = (missing, frozenset(old.stage_names))
        missing, stages = self._versions[key]
        if missing is None and (row.stage is None or row.stage in stages):
            return None
        what = missing or f'no stage "{row.stage}"'
        return f'lead "{row.lead_id}" is on version {version} of flow "{flow}", which has {what}'

    def finish(self) -> None:
        """After the first pass: a time column none of whose values could be
        read means the format is wrong, not the rows."""
        if self.dates_read or self.first_bad_date is None:
            return
        line, raw = self.first_bad_date
        if self.date_format is None:
            raise BadInput(
                f'no value in column "{self.at_column}" of {self.path} is an ISO 8601 time (line {line} has '
                f'"{raw}"); give the format with --date-format, for example "%d/%m/%Y %H:%M"'
            )
        raise BadInput(
            f'no value in column "{self.at_column}" of {self.path} matches --date-format "{self.date_format}" '
            f'(line {line} has "{raw}")'
        )


def _check_date_format(date_format: str | None) -> None:
    if date_format is None:
        return
    reason = bad_text(date_format, MAX_ID_LENGTH, "--date-format")
    if reason is not None:
        raise BadInput(reason)
    if "%" not in date_format:
        raise BadInput(f'--date-format "{date_format}" has no % directive (for example "%d/%m/%Y")')
    if "%Z" in date_format:
        raise BadInput(
            f'--date-format "{date_format}" uses %Z, a zone name, which Python cannot turn into an '
            "offset (it would read EST as UTC); use %z for offsets such as +0900 or -05:00, or write the "
            'name as text for UTC ("%d/%m/%Y %H:%M UTC")'
        )
    # An aware sample, so that %z prints something to read back.
    sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(date_format), date_format)
    except (ValueError, re.error) as err:  # re.error: a directive twice ("%Y %Y")
        raise BadInput(f'--date-format "{date_format}" is not a valid format ({err})') from None


# --------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    rows: int = 0
    imported: int = 0
    bad: int = 0
    shown: list[BadRow] = field(default_factory=list)
    # The lines of the bad rows, in file order: the second pass, judging
    # again, must find the same ones.
    bad_lines: array[int] = field(default_factory=lambda: array("q"))
    # The first pass's judgement, chunk by chunk, kept for the second pass
    # while the file is small enough (None: judge again while applying).
    # Each entry: the chunk's raw rows, their verdicts, the bytes they span.
    kept: list[tuple[list[tuple[int, list[str]]], list[_Row | BadRow], int]] | None = None

    def bad_row(self, row: BadRow) -> None:
        self.bad += 1
        self.bad_lines.append(row.line)
        if len(self.shown) < SHOWN_BAD_ROWS:
            self.shown.append(row)


class _Entries(list[AuditEntry]):
    """The audit entries of the import's transaction, counted as they come.
    They are kept only when `on_enter` callbacks will want them: a large
    file makes millions."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep
        self.created = self.moves = self.placed = 0

    def append(self, entry: AuditEntry) -> None:
        if entry.from_stage is None:
            self.created += 1
        else:
            self.moves += 1
        if entry.kind == "import":
            self.placed += 1
        if self.keep:
            super().append(entry)

    def clear(self) -> None:
        self.created = self.moves = self.placed = 0
        super().clear()


@_one_line_errors
def import_csv(
    engine: Engine,
    path: str | os.PathLike[str],
    *,
    flow: str,
    id_column: str,
    mapping: Mapping[str, str] | None = None,
    stage_column: str | None = None,
    stage_map: Mapping[str, str] | None = None,
    at_column: str | None = None,
    date_format: str | None = None,
    nulls: Collection[str] = DEFAULT_NULLS,
    skip_bad: str | os.PathLike[str] | None = None,
    chunk: int = 1000,
    progress: Progress | None = None,
) -> ImportResult:
    """Import the CSV file `path` into `flow` (a deployed flow's name).

    `id_column` holds the lead ids; `mapping` maps columns to fields
    (column -> field; an empty field ignores the column), and the other
    columns whose names match a field, as written or normalised, map
    themselves.  `stage_column` places each lead in a stage (an ungated
    ``import`` move): a value names a stage as written or normalised, or
    as `stage_map` says (value -> stage; an empty stage: none).
    `at_column` gives each row's time (ISO 8601, or
    `date_format` for `datetime.strptime`); without it every row happens
    now.  Blank cells and the `nulls` placeholders unset a field.

    All or nothing: the rows are applied in one transaction, so the file
    lands whole or not at all.  A file with bad rows is refused whole
    (`BadRows`) unless `skip_bad` names a CSV file to write them to, with a
    ``reason`` column; that file is written and closed before the database
    is touched.  Raises `BadInput` for an unusable file, `NotFound` for an
    unknown flow or field; in every such case nothing is written.
    `chunk` rows are judged and written at a time (memory stays bounded)."""
    started = time.perf_counter()
    if chunk < 1:
        raise BadInput(f"the chunk size must be at least 1, not {chunk}")
    name = os.fspath(path)
    skip_to = None if skip_bad is None else os.fspath(skip_bad)
    cf = engine.compiled(flow)
    _check_date_format(date_format)
    if skip_to is not None and os.path.abspath(skip_to) == os.path.abspath(name):
        raise BadInput(f"--skip-bad must name another file than the one imported ({name})")
    source = _Source(name)
    if skip_to is not None and _same_file(skip_to, source):
        raise BadInput(f"--skip-bad must name another file than the one imported ({name})")
    null_set = frozenset((nulls,) if isinstance(nulls, str) else nulls)
    with closing(source.rows()) as rows:
        header = next(rows, None)
        if header is None:
            raise BadInput(f"{name} is empty; an import needs a header line naming the columns, then rows")
        plan = _plan(
            header[1],
            name,
            cf,
            id_column=id_column,
            mapping=mapping or {},
            stage_column=stage_column,
            at_column=at_column,
            nulls=null_set,
            stage_map=stage_map,
            date_format=date_format,
        )

        def checker() -> _Checker:
            return _Checker(
                plan,
                name,
                cf,
                engine.store,
                engine.compiled,
                now=engine.now(),
                at_column=at_column,
                date_format=date_format,
            )

        first = checker()
        rejects = None if skip_to is None else _Rejects(skip_to, header[1])
        try:
            found = _first_pass(rows, first, chunk, _Reporter(source, progress), rejects)
            if rejects is not None:
                rejects.close()  # before anything is written to the database
        finally:
            if rejects is not None:
                rejects.abandon()
    if found.bad and skip_to is None:
        raise BadRows(name, tuple(found.shown), found.bad)
    entries = _Entries(keep=bool(getattr(engine, "_callbacks", True)))
    done: list[tuple[_Tally, _Checker]] = []

    def body(tx: Transaction) -> None:
        # The whole second pass, in the one transaction `engine._run` gives
        # (and retries whole on a conflict): the file is read again from
        # its start each time.
        done.clear()
        tally = _Tally()
        if found.kept is not None:  # judged once: the first pass's verdicts
            spans = iter([size for _, _, size in found.kept])
            reporter = _Reporter(source, progress, lambda: next(spans, 0))
            chunks = iter([(raw, verdicts) for raw, verdicts, _ in found.kept])
            _second_pass(engine, cf, tx, chunks, first, found, reporter, tally, entries)
            _check_unchanged(source)
            done.append((tally, first))
            return
        second = checker()
        with closing(source.rows()) as again:
            next(again)  # the header
            judged = ((raw, second.check(raw)) for raw in chunked(again, chunk))
            _second_pass(engine, cf, tx, judged, second, found, _Reporter(source, progress), tally, entries)
        _check_unchanged(source)
        done.append((tally, second))

    engine._run(body, entries)
    tally, judge = done[0]
    return ImportResult(
        path=name,
        flow=cf.name,
        version=cf.version,
        rows=tally.rows,
        imported=tally.imported,
        created=entries.created,
        updated=judge.updated,
        moves=entries.moves,
        placed=entries.placed,
        bad=tally.bad,
        bad_rows=tuple(tally.shown),
        skipped_to=skip_to if tally.bad else None,
        columns={c.name: c.field for c in plan.columns},
        ignored=tuple(plan.ignored),
        seconds=time.perf_counter() - started,
    )


class _Reporter:
    """Reports the bytes a pass has read since the last call."""

    def __init__(
        self, source: _Source, progress: Progress | None, replay: Callable[[], int] | None = None
    ) -> None:
        self.source = source
        self.progress = progress
        self.replay = replay  # the bytes of the next chunk, when not reading the file
        self.done = 0

    def __call__(self) -> None:
        read = self.done + self.replay() if self.replay is not None else self.source.read
        if self.progress is not None and read > self.done:
            self.progress(read - self.done)
        self.done = read


class _Rejects:
    """The ``--skip-bad`` file: the bad rows as they were read, with a reason
    column, through `safe_row` (so a spreadsheet runs no formula, and an
    import reads the cells back as they were).  Opened at the first bad row;
    every failure to write it is one `BadInput` sentence."""

    def __init__(self, path: str, header: list[str]) -> None:
        self.path = path
        self.header = header
        self._out: IO[str] | None = None
        self._writer: Any = None

    def _fail(self, err: OSError) -> BadInput:
        return BadInput(f"cannot write {self.path}: {err.strerror or err}; nothing was imported")

    def write(self, cells: list[str], row: BadRow) -> None:
        try:
            if self._writer is None:
                self._out = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close/abandon)
                self._writer = csv.writer(self._out)
                reason = REASON_COLUMN if REASON_COLUMN not in self.header else f"import_{REASON_COLUMN}"
                self._writer.writerow(safe_row([*self.header, reason]))
            self._writer.writerow(safe_row([*cells, str(row)]))
        except OSError as err:
            raise self._fail(err) from None

    def close(self) -> None:
        """Flush and close the file, or say why it could not be written."""
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # a device that cannot sync
                with suppress(OSError):
                    out.close()
                raise self._fail(err) from None
        try:
            out.close()
        except OSError as err:
            raise self._fail(err) from None

    def abandon(self) -> None:
        """Close the file after a failure (nothing more to report)."""
        out, self._out = self._out, None
        if out is not None:
            with suppress(OSError):
                out.close()


KEPT_ROWS = 50_000  # rows whose verdicts the first pass keeps for the second


def _first_pass(
    rows: Iterator[tuple[int, list[str]]],
    checker: _Checker,
    chunk: int,
    report: _Reporter,
    rejects: _Rejects | None,
) -> _Tally:
    """Judge every row; write nothing to the database, and the bad rows to
    `rejects` if given.  Up to `KEPT_ROWS` rows, the verdicts are kept for
    the second pass."""
    found = _Tally(kept=[])
    for raw_rows in chunked(rows, chunk):
        verdicts = checker.check(raw_rows)
        cells_of: dict[int, list[str]] | None = None
        for judged in verdicts:
            found.rows += 1
            if isinstance(judged, BadRow):
                found.bad_row(judged)
                if rejects is not None:
                    cells_of = cells_of or dict(raw_rows)
                    rejects.write(cells_of[judged.line], judged)
        before = report.done
        report()
        if found.kept is not None:
            found.kept.append((raw_rows, verdicts, report.done - before))
            if found.rows > KEPT_ROWS:
                found.kept = None
    checker.finish()
    return found


def _second_pass(
    engine: Engine,
    cf: CompiledFlow,
    tx: Transaction,
    chunks: Iterator[tuple[list[tuple[int, list[str]]], list[_Row | BadRow]]],
    checker: _Checker,
    found: _Tally,
    report: _Reporter,
    tally: _Tally,
    entries: list[AuditEntry],
) -> None:
    """Apply the good rows in `tx`, chunk by chunk.  The bad rows must be
    those the first pass found (and wrote to the rejects file): otherwise
    the file or the database changed in between, and nothing is imported."""
    expected = iter(found.bad_lines)
    # The file's name goes into each placed lead's history: as text a
    # database stores (a name that is not UTF-8 gets U+FFFD for its bytes).
    label = os.fsencode(os.path.basename(checker.path)).decode("utf-8", "replace")
    for _raw_rows, verdicts in chunks:
        good: list[_Row] = []
        for judged in verdicts:
            tally.rows += 1
            if isinstance(judged, _Row):
                good.append(judged)
                continue
            if next(expected, None) != judged.line:
                raise _changed(checker.path, judged)
            tally.bad_row(judged)
        if good:
            _apply(engine, cf, tx, good, entries, label)
            tally.imported += len(good)
        report()
    missing = next(expected, None)
    if missing is not None:
        raise _changed(checker.path, f"line {missing} is no longer a bad row")


def _same_file(path: str, source: _Source) -> bool:
    """Whether `path` is the file `source` reads (by another name, a link)."""
    try:
        found = os.stat(path)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == source.identity[:2]


def _check_unchanged(source: _Source) -> None:
    if not source.unchanged():
        raise BadInput(f"{source.path} changed during the import; nothing was imported (run it again)")


def _changed(path: str, what: object) -> BadInput:
    return BadInput(
        f"{path} or the database changed during the import ({what}); nothing was imported (run it again)"
    )


def _apply(
    engine: Engine, cf: CompiledFlow, tx: Transaction, rows: list[_Row], entries: list[AuditEntry], label: str
) -> None:
    """One chunk of good rows, in the import's transaction `tx`: the chunk's
    leads are read at once and its writes held until its end (write-behind
    keeps memory bounded by the chunk, not the file)."""
    with write_behind(tx, (row.lead_id for row in rows)) as work_tx:
        work = Work(work_tx, engine.compiled, engine.now(), engine.actor, entries)
        for row in rows:
            work.at = row.at
            lead = work_tx.lock_lead(row.lead_id)
            if row.stage is None:
                if lead is None:
                    work.create(row.lead_id, cf, row.values)
                else:
                    work.set_fields(lead, row.values)
                continue
            reason = f"{label} line {row.line}"
            if lead is None:  # created where the row says it stands
                work.create(row.lead_id, cf, row.values, stage=row.stage, reason=reason)
            else:
                lead = work.set_fields(lead, row.values, progress=False)
                work.place(lead, row.stage, "import", reason)


__all__ = ["DEFAULT_NULLS", "BadRow", "BadRows", "ImportResult", "import_csv", "normalise"]
