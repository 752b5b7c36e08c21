"""Checking rows: cells to values, stages and times; each lead's rows in time order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..coerce import as_utc, normalise, parse_time
from ..compile import CompiledFlow
from ..errors import BadInput, did_you_mean
from ..limits import MAX_ID_LENGTH, MAX_TIME, MIN_TIME, check_time
from ..records import FieldValue, Store
from .plan import UNSEEN, Failure, Plan, bad_text
from .results import BadRow
from .seen import Known, Seen

# --------------------------------------------------------------------------
# Checking rows
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    lead_id: str
    values: dict[str, FieldValue]
    stage: str | None
    at: datetime


class Checker:
    """Turns raw rows into `Row`s or `BadRow`s.  One per pass, so both
    passes judge alike: it remembers which leads it met, which of them were
    stored before (and in which flow and version), and the time of each
    lead's last good row, on disk (`Seen`), so memory does not grow with
    the number of ids; call `close` when the pass is over."""

    def __init__(
        self,
        plan: Plan,
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
        # Every lead met so far, with what is known of it (`Known`), on disk
        # (`Seen`): memory holds the records of one chunk, `_chunk`.
        self.seen = Seen()
        self._chunk: dict[str, Known] = {}
        self.updated = 0  # leads stored before the import that had a good row
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

    def _one(self, line: int, cells: list[str]) -> Row | BadRow:
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
            value: Any = known(raw, UNSEEN)  # most cells repeat: a cached value is a good one
            if value is UNSEEN:
                value = column.convert(raw)
                if isinstance(value, Failure):
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
        return Row(line, lead_id, values, stage, at)

    def check(self, raw_rows: list[tuple[int, list[str]]]) -> list[Row | BadRow]:
        """Judge a chunk of rows, in file order (one query for the leads
        met for the first time)."""
        judged = [self._one(line, cells) for line, cells in raw_rows]
        ids = list(dict.fromkeys(r.lead_id for r in judged if isinstance(r, Row)))
        chunk = self._chunk = self.seen.known(ids)
        new = [lead_id for lead_id in ids if lead_id not in chunk]
        if new:
            stored = self.store.lead_flows(new)
            here = (self.cf.name, self.cf.version)
            for lead_id in new:
                known = chunk[lead_id] = Known()
                found = stored.get(lead_id)
                if found is not None:
                    flow, version, changed = found
                    known.uncounted = True
                    known.changed_at = changed
                    if (flow, version) != here:
                        known.other_flow, known.other_version = flow, version
        try:
            return [self._in_order(row) if isinstance(row, Row) else row for row in judged]
        finally:
            self.seen.remember(chunk, len(new))
            self._chunk = {}

    def _in_order(self, row: Row) -> Row | BadRow:
        plan = self.plan
        known = self._chunk[row.lead_id]
        if known.other_flow is not None:
            problem = self._fits(row, known.other_flow, known.other_version)
            if problem is not None:
                return BadRow(row.line, plan.header[plan.id_index], problem)
        changed, known.changed_at = known.changed_at, None
        # A history's rows must come after what is stored (a row at the very
        # time of the last change was imported with it); a file without
        # times describes leads now, so now may be that same instant.
        if changed is not None and (row.at <= changed if self.at_column is not None else row.at < changed):
            known.changed_at = changed  # its next row is judged the same way
            return BadRow(row.line, self.at_column or plan.header[plan.id_index], self._stale(row, changed))
        if self.at_column is not None:
            before = known.last_at
            if before is not None and row.at < before:
                return BadRow(
                    row.line,
                    self.at_column,
                    f'this row of lead "{row.lead_id}" ({row.at.isoformat()}) is older than its row on '
                    f"line {known.last_line} ({before.isoformat()}); a lead's rows must run forward in time",
                )
            known.last_at, known.last_line = row.at, row.line
        if known.uncounted:
            known.uncounted = False
            self.updated += 1
        return row

    def close(self) -> None:
        """Drop what this pass remembered (its temporary database)."""
        self.seen.close()

    def _stale(self, row: Row, changed: datetime) -> str:
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

    def _fits(self, row: Row, flow: str, version: int) -> str | None:
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
