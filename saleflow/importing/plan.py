"""The plan of an import: which column is what, and how a cell becomes a field's value within limits.py."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ..coerce import coerce, in_range, normalise
from ..compile import CompiledFlow
from ..errors import BadInput, NotFound, did_you_mean
from ..limits import MAX_ID_LENGTH, MAX_TEXT_LENGTH, check_text
from ..model.flow import FieldDef
from ..records import FieldValue

# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------

_CACHED_VALUES = 20_000  # distinct cells remembered per column (values repeat a lot in real exports)


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
# The plan: which column is what
# --------------------------------------------------------------------------


class Failure:
    """A cell value that cannot be converted (cached like a good one)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


UNSEEN = Failure("")  # a cache miss (never stored)


class Column:
    """A column that feeds a field, with its conversions remembered: good
    values in `cache` (which `Checker._one` reads directly), failures apart."""

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
        self.failed: dict[str, Failure] = {}
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

    def convert(self, raw: str) -> FieldValue | Failure:
        """A cell `cache` does not hold (the caller looked): its value, or why not."""
        failure = self.failed.get(raw)
        if failure is not None:
            return failure
        try:
            value = self._value(raw)
        except BadInput as err:
            failure = Failure(err.message)
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
        value: FieldValue
        try:
            whole = _WHOLE.fullmatch(raw) if kind in _NUMERIC and raw not in self.nulls else None
            # A whole number is read exactly (a float would round -2**63 - 1 into range).
            if whole is not None:
                value = in_range(definition, int(raw), raw)
            else:
                value = coerce(definition, raw, self.nulls)
        except (ValueError, OverflowError):  # int() of over 4,300 digits, say
            raise BadInput(
                f'field "{self.field}" is {definition.type}; the value is not a number saleflow can hold'
            ) from None
        except BadInput:
            value = self._by_format(raw)
            if value is None:
                raise
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
class Plan:
    header: list[str]
    id_index: int
    stage_index: int | None
    at_index: int | None
    columns: list[Column]
    ignored: list[str]
    stages: dict[str, str]  # as written in the file (exact or normalised) -> stage ("": none)


def _column_index(header: list[str], name: str, option: str, path: str) -> int:
    name = name.strip()  # as the header's names are
    if name in header:
        return header.index(name)
    hint = _close_column(name, header)
    raise BadInput(f'{path} has no column "{name}" ({option})' + (f"; {hint}" if hint else ""))


def make_plan(
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
) -> Plan:
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
        Column(header.index(column), column, fields[name], nulls, dates) for name, column in chosen.items()
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
    return Plan(header, id_index, stage_index, at_index, columns, ignored, stages)


def check_date_format(date_format: str | None) -> None:
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
