"""Export for BI (SPEC §6): the journal, the leads and time in stage as flat
rows, written as CSV or JSON Lines, streamed with flat memory.

Layer 5.  `export_rows(engine, table, …)` checks its arguments at once (an
unknown table or flow, a bad or far date) and returns an `Export`: the
table's column names and its rows, read lazily a chunk at a time
(`saleflow.store.exporting`); `write_csv`, `write_jsonl` and `write_to` turn
an export into bytes, and `write_to` with a file name writes a temporary
file beside it and renames it at the end, so that a failure never leaves a
half-written file.

The three tables:

- ``journal``: one row per journal entry, in `seq` order, up to the
  journal's published position when the export started
  (`high_water()`): a consistent prefix of the journal that a change-feed
  consumer could resume after.  `--since`/`--until` filter on `at`.
- ``leads``: one row per stored lead, with its stage's team; with a flow,
  one column per field its versions declare, else the fields as one JSON
  object.  `--since`/`--until` filter on `created_at`.
- ``stages``: one row per lead, cycle and stage entered (a CRM's "date
  entered / date exited"), folded from each lead's ``created`` and
  ``moved`` entries in order; the row of the stage a lead is in now has no
  exit and counts its days to the engine's now.  `--since`/`--until`
  filter on `entered_at`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..csvcell import safe_cell
from ..errors import BadInput, NotFound
from .report import Period
from .serialise import number

if TYPE_CHECKING:
    from ..model.flow import Flow
    from ..runtime.engine import Engine
    from ..store.exporting import Move

TABLES: tuple[str, ...] = ("journal", "leads", "stages")
FORMATS: tuple[str, ...] = ("csv", "jsonl")

JOURNAL_KEYS: tuple[str, ...] = (
    *("seq", "lead", "lead_seq", "entry", "kind", "from", "stage", "cycle", "at", "recorded_at"),
    *("actor", "reason", "flow", "version", "data", "hash"),
)
LEAD_KEYS: tuple[str, ...] = (
    *("id", "flow", "version", "stage", "team", "cycle", "score"),
    *("created_at", "entered_at", "updated_at"),
)
STAGE_KEYS: tuple[str, ...] = (
    *("lead", "cycle", "stage", "team", "entered_at", "exited_at"),
    *("days_in_stage", "exit_kind", "next_stage"),
)

# days_in_stage is a number of days (86,400 seconds), rounded to this many decimals.
DAY_DECIMALS = 4
_SECONDS_PER_DAY = 86_400

Row = dict[str, Any]


@dataclass
class Export:
    """One table to export: its column names and its rows (each a dict
    with exactly those keys, times as aware datetimes), read lazily.  An
    export is read once."""

    table: str
    columns: tuple[str, ...]
    rows: Iterator[Row]

    def __iter__(self) -> Iterator[Row]:
        return self.rows


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


def export_rows(
    engine: Engine,
    table: str,
    *,
    flow: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    chunk: int = 1000,
) -> Export:
    """The rows of `table` ("journal", "leads" or "stages"), optionally of
    one flow and between `since` and `until` (a date, the whole day for
    `until`, or an ISO 8601 time; datetimes are exact).  Raises `BadInput`
    for an unknown table or a bad period and `NotFound` for a flow that is
    not deployed, here and not at the first row."""
    if table not in TABLES:
        raise BadInput(f'there is no table "{table}" to export; the tables are ' + ", ".join(TABLES))
    period = Period.parse(_time_text(since), _time_text(until))
    flow_name, _ = engine.lead_filter(flow=flow)  # a name checked, NotFound when not deployed
    teams = _Teams(engine)
    if table == "journal":
        high = engine.store.high_water()
        pages = engine.store.export_journal(  # type: ignore[attr-defined]
            high, flow=flow_name, since=period.since, end=period.end, chunk=chunk
        )
        return Export(table, JOURNAL_KEYS, (journal_row(e) for page in pages for e in page))
    if table == "leads":
        fields = _field_columns(engine, flow_name) if flow_name is not None else None
        columns = (
            (*LEAD_KEYS, *(column for column, _ in fields)) if fields is not None else (*LEAD_KEYS, "fields")
        )
        pages = engine.store.export_leads(  # type: ignore[attr-defined]
            flow=flow_name, since=period.since, end=period.end, chunk=chunk
        )
        rows = (_lead_row(lead, teams, fields) for page in pages for lead in page)
        return Export(table, columns, rows)
    high = engine.store.high_water()
    pages = engine.store.export_moves(high, flow=flow_name, chunk=chunk)  # type: ignore[attr-defined]
    now = engine.now()
    return Export(table, STAGE_KEYS, stage_rows(pages, now, teams, period))


def _time_text(value: str | datetime | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def journal_row(entry: Any) -> Row:
    """One journal entry as an export row."""
    return {
        "seq": entry.seq,
        "lead": entry.lead_id,
        "lead_seq": entry.lead_seq,
        "entry": entry.entry,
        "kind": entry.kind,
        "from": entry.from_stage,
        "stage": entry.stage,
        "cycle": entry.cycle,
        "at": entry.at,
        "recorded_at": entry.recorded_at,
        "actor": entry.actor,
        "reason": entry.reason,
        "flow": entry.flow,
        "version": entry.version,
        "data": dict(entry.data),
        "hash": entry.hash,
    }


class _Teams:
    """The team of a stage in a flow version (None for a side stage, or a
    stage the version lacks), each version compiled once."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._flows: dict[tuple[str, int], Flow | None] = {}

    def flow(self, name: str, version: int) -> Flow | None:
        key = (name, version)
        if key not in self._flows:
            try:
                self._flows[key] = self._engine.compiled(name, version).flow
            except NotFound:
                self._flows[key] = None
        return self._flows[key]

    def __call__(self, name: str, version: int, stage: str) -> str | None:
        found = self.flow(name, version)
        declared = None if found is None else found.stage(stage)
        return None if declared is None else declared.team


def _field_columns(engine: Engine, flow: str) -> list[tuple[str, str]]:
    """(column, field) for every field a version of `flow` that has leads,
    or the latest, declares: the latest's in its order, then older ones'.
    A field named as one of the fixed columns is the column "fields.NAME"."""
    latest = engine.compiled(flow)
    versions = {version for _, version in engine.store.lead_versions(flow)}  # type: ignore[attr-defined]
    flows = [latest.flow] + [engine.compiled(flow, v).flow for v in sorted(versions, reverse=True)]
    names: dict[str, None] = {}
    for found in flows:
        for field in found.fields:
            names.setdefault(field.name)
    return [(f"fields.{name}" if name in LEAD_KEYS else name, name) for name in names]


def _lead_row(lead: Any, teams: _Teams, fields: list[tuple[str, str]] | None) -> Row:
    row: Row = {
        "id": lead.id,
        "flow": lead.flow,
        "version": lead.version,
        "stage": lead.stage,
        "team": teams(lead.flow, lead.version, lead.stage),
        "cycle": lead.cycle,
        "score": number(lead.score),
        "created_at": lead.created_at,
        "entered_at": lead.entered_at,
        "updated_at": lead.updated_at,
    }
    if fields is None:
        row["fields"] = dict(lead.fields)
    else:
        values = lead.fields
        for column, name in fields:
            row[column] = values.get(name)
    return row


def days_between(start: datetime, end: datetime) -> float:
    """Days from `start` to `end` (86,400 seconds each), rounded to `DAY_DECIMALS`."""
    return round((end - start).total_seconds() / _SECONDS_PER_DAY, DAY_DECIMALS)


def stage_rows(
    pages: Iterable[list[Move]],
    now: datetime,
    team_of: Callable[[str, int, str], str | None],
    period: Period | None = None,
) -> Iterator[Row]:
    """Fold each lead's created and moved entries, in (lead, lead_seq)
    order, into one row per stage entered.  A move closes the row of the
    stage it leaves (`exited_at` its time, `exit_kind` its kind,
    `next_stage` its target) and opens the target's, in the move's cycle (a
    recycle's is the next one).  The last row of a lead is the stage it is
    in: no exit, its days counted to `now`.  Only rows entered within
    `period` are yielded."""
    since = None if period is None else period.since
    end = None if period is None else period.end

    def wanted(row: Row) -> bool:
        entered: datetime = row["entered_at"]
        return (since is None or entered >= since) and (end is None or entered < end)

    lead: str | None = None
    open_row: Row | None = None
    for page in pages:
        for move in page:
            if move.lead_id != lead:
                if open_row is not None and wanted(open_row):
                    yield _still_in(open_row, now)
                lead, open_row = move.lead_id, None
            if open_row is not None:
                open_row["exited_at"] = move.at
                open_row["days_in_stage"] = days_between(open_row["entered_at"], move.at)
                open_row["exit_kind"] = move.kind
                open_row["next_stage"] = move.stage
                if wanted(open_row):
                    yield open_row
            open_row = {
                "lead": move.lead_id,
                "cycle": move.cycle,
                "stage": move.stage,
                "team": team_of(move.flow, move.version, move.stage),
                "entered_at": move.at,
                "exited_at": None,
                "days_in_stage": None,
                "exit_kind": None,
                "next_stage": None,
            }
    if open_row is not None and wanted(open_row):
        yield _still_in(open_row, now)


def _still_in(row: Row, now: datetime) -> Row:
    row["days_in_stage"] = days_between(row["entered_at"], now)
    return row


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

_FLUSH_AT = 1 << 16  # characters buffered before they are written out


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=_json_default)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: empty for None, ISO 8601 for times, true or
    false, JSON text for objects; text a spreadsheet would run as a formula
    is neutralised (`safe_cell`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return safe_cell(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return safe_cell(_json_text(value))
    return value


def _pump(lines: Iterator[str], out: BinaryIO) -> None:
    buffered: list[str] = []
    size = 0
    for line in lines:
        buffered.append(line)
        size += len(line)
        if size >= _FLUSH_AT:
            out.write("".join(buffered).encode("utf-8"))
            buffered.clear()
            size = 0
    if buffered:
        out.write("".join(buffered).encode("utf-8"))
    out.flush()


def write_csv(rows: Export, out: BinaryIO) -> int:
    """The export as CSV (UTF-8, a header row, CRLF line ends) to a binary
    stream; returns how many rows."""
    count = 0
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = rows.columns

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    def lines() -> Iterator[str]:
        nonlocal count
        writer.writerow([safe_cell(column) for column in columns])
        yield take()
        for row in rows:
            writer.writerow([csv_cell(row[column]) for column in columns])
            count += 1
            yield take()

    _pump(lines(), out)
    return count


def write_jsonl(rows: Export, out: BinaryIO) -> int:
    """The export as JSON Lines (one object per row, the columns' keys, times
    in ISO 8601) to a binary stream; returns how many rows."""
    count = 0
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode

    def lines() -> Iterator[str]:
        nonlocal count
        for row in rows:
            count += 1
            yield encode(row) + "\n"

    _pump(lines(), out)
    return count


WRITERS: dict[str, Callable[[Export, BinaryIO], int]] = {"csv": write_csv, "jsonl": write_jsonl}


def check_output(path: str) -> None:
    """`BadInput`, one sentence, when `path` cannot be written as an
    export: a NUL byte, a folder, a missing or read-only folder.  Creates
    nothing."""
    if "\x00" in path:
        raise BadInput("the output file name holds a NUL byte")
    if not path:
        raise BadInput("the output file name is empty")
    target = Path(path)
    if target.is_dir():
        raise BadInput(f"cannot write {path}: it is a folder")
    if target.exists() and not target.is_file():
        return  # a device or a pipe (/dev/stdout): written as it is
    folder = target.parent
    if not folder.is_dir():
        raise BadInput(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write {path}: the folder {folder} is not writable")


def write_to(rows: Export, fmt: str, output: str | None, stdout: BinaryIO | None = None) -> int:
    """Write the export as `fmt` ("csv" or "jsonl") to the file `output`,
    or to `stdout` (a binary stream) when there is none; returns how many
    rows.  A file is written under a temporary name in its folder and
    renamed at the end: a failure (a full disk, a database error) leaves no
    half-written file, and an existing file stays as it was.  A device or
    pipe (``/dev/stdout``) is written directly."""
    write = WRITERS.get(fmt)
    if write is None:
        raise BadInput(f'there is no export format "{fmt}"; the formats are ' + ", ".join(FORMATS))
    if output is None:
        if stdout is None:
            raise ValueError("write_to needs an output file or a stdout stream")
        return write(rows, stdout)
    check_output(output)
    target = Path(output)
    try:
        if target.exists() and not target.is_file():
            with target.open("wb") as out:
                return write(rows, out)
        if target.is_symlink():  # replace the file it points to, not the link
            target = target.resolve()
        temporary = target.parent / f".{target.name[:100]}.{secrets.token_hex(6)}.tmp"
        with temporary.open("xb") as out:
            try:
                count = write(rows, out)
                out.flush()
                os.fsync(out.fileno())
            except BaseException:
                out.close()
                temporary.unlink(missing_ok=True)
                raise
        try:
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return count
    except OSError as err:
        raise BadInput(f"cannot write {output}: {err.strerror or err}") from None


__all__ = [
    "DAY_DECIMALS",
    "FORMATS",
    "JOURNAL_KEYS",
    "LEAD_KEYS",
    "STAGE_KEYS",
    "TABLES",
    "Export",
    "check_output",
    "csv_cell",
    "days_between",
    "export_rows",
    "journal_row",
    "stage_rows",
    "write_csv",
    "write_jsonl",
    "write_to",
]
