"""The reads behind `saleflow report` and `leads --overdue`.

Layer 3, part of the store (the only place that knows SQLAlchemy); mixed
into `SqlStore`.  The store never learns flow semantics: it counts what SQL
counts cheaply and streams the rest, and `saleflow.report` says what the rows
mean.

- Counted by the database: leads per stage now (optionally per value of a
  field), recorded SLA breaches per stage, leads past a per-stage cutoff.
- Streamed: each lead's history (`iter_histories`), a chunk of leads at a
  time in key order: the leads (id, and the field to group by, read from the
  JSON document by the database), their moves (journal entries) and, when asked,
  their events with a channel.  Three range scans by lead id per chunk
  (on the primary keys, and the events' index), no sort of the whole log,
  and a chunk at a time in memory.

Why not window functions all the way: per lead-cycle figures need "the
furthest stage reached *after* this entry" (``MAX() OVER (… ROWS BETWEEN 1
FOLLOWING AND UNBOUNDED FOLLOWING)``), the time to the next entry
(``LEAD()``), and the last touch before each entry.  Measured at 100,000 leads
(536,000 moves) on SQLite, each such window pass took 2-8 s (SQLite
sorts the log again for every partition order and evaluates following-frame
``MAX`` by removing rows one by one), while streaming the same rows in key
order and folding each lead's handful of entries took about 1.5 s.  The
fold is a few lines of Python per lead in `saleflow.report`; both backends
run the same code, so they cannot disagree.

Times are streamed as whole microseconds since 1970-01-01 UTC, computed by
the database (exactly: no float rounding), so comparisons with the report's
period are exact and durations are cheap.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    and_,
    bindparam,
    cast,
    extract,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement

from ..limits import MAX_TIME, MIN_TIME
from ..records import CountRow, History, Lead
from .schema import _DECODE_FAILURES, Corrupt, StoredJson, UtcDateTime, events, journal, leads, sla_breaches
from .statements import LEAD_COLUMNS, Compiled, read_leads

A, E, L, S = journal.c, events.c, leads.c, sla_breaches.c

# The rows reports read (`History`, `CountRow`) are runtime values of
# records.py, beside the `ReportSource` protocol this class implements.


# limits.py's range of times in microseconds since the epoch, with a day to
# spare (SQLite's date functions work in floating point near the ends)
_DAY_MICROS = 86_400 * 1_000_000
_FIRST_MICROS = round(MIN_TIME.timestamp() * 1_000_000) - _DAY_MICROS
_LAST_MICROS = round(MAX_TIME.timestamp() * 1_000_000) + _DAY_MICROS


def _collect(cur: Any, histories: dict[str, History], touches: bool) -> None:
    """Append each fetched row to its lead's entries (or touches); rows of
    leads not in `histories` are skipped."""
    lists: dict[str, list[Any]] = {
        lead_id: history.touches if touches else history.entries for lead_id, history in histories.items()
    }
    get = lists.get
    at = 1 if touches else 5  # the time, in microseconds: NULL when the stored text is no time
    while True:
        rows = cur.fetchmany(5000)
        if not rows:
            return
        for row in rows:
            found = get(row[0])
            if found is not None:
                if row[at] is None or not _FIRST_MICROS <= row[at] < _LAST_MICROS:
                    raise Corrupt(UtcDateTime.what, row[0])
                found.append(row)


def _between(column: Any, since: datetime | None, until: datetime | None) -> ColumnElement[bool]:
    """``since <= column < until``, either end open when None."""
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return and_(*conditions) if conditions else true()


def _unindexed(column: Any) -> ColumnElement[Any]:
    """`column`, written so that no index on it is used (``col || ''``):
    a chunk read must walk the primary key in order, not pick the flow
    index and sort every row of the flow for each chunk."""
    unindexed: ColumnElement[Any] = column.concat("")
    return unindexed


class ReportQueries:
    """The report reads, mixed into `SqlStore` (which provides `read` and
    `dialect`)."""

    @property
    def dialect(self) -> str:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    def read(self) -> AbstractContextManager[Connection]:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    @property
    def engine(self) -> Engine:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    # -- pieces ---------------------------------------------------------------

    def _group(self, field: str | None, default: Any) -> ColumnElement[Any]:
        """A lead's current value of `field` as text, its default when unset
        (NULL when there is no field to group by)."""
        if field is None:
            return null()
        value: ColumnElement[Any] = L.fields[field].as_string()
        if default is None:
            return value
        defaulted: ColumnElement[Any] = func.coalesce(value, literal(self._json_text(default)))
        return defaulted

    def _json_text(self, value: Any) -> str:
        """How this backend's JSON-to-text extraction spells `value`."""
        if self.dialect == "sqlite":  # json_extract gives SQL values: true is 1
            return str(int(value)) if isinstance(value, bool) else str(value)
        return value if isinstance(value, str) else json.dumps(value)

    def _micros(self, column: Any) -> ColumnElement[int]:
        """A stored time as whole microseconds since the epoch."""
        if self.dialect == "sqlite":
            # Stored as fixed-width ISO text: 2026-03-01T09:30:00.123456+00:00
            # unixepoch() is SQLite 3.38+; strftime('%s') works everywhere, a little slower
            # The whole seconds from the text without its fraction: given the
            # fraction, SQLite rounds to the nearest second (its julian-day
            # arithmetic), a second too many from .5 on.
            new = sqlite3.sqlite_version_info >= (3, 38)
            seconds = func.substr(column, 1, 19)
            whole = func.unixepoch(seconds) if new else func.strftime("%s", seconds)
            return cast(whole, BigInteger) * 1_000_000 + cast(func.substr(column, 21, 6), BigInteger)
        return cast(func.round(extract("epoch", column) * 1_000_000), BigInteger)

    def _history_statements(self, group: str | None, default: Any, touches: bool) -> list[Compiled]:
        """The three reads of a chunk, compiled once: leads after ``:after``
        (their group value too), the audit entries and the events of the
        leads from ``:first`` to ``:last``."""
        dialect = self.engine.dialect
        flow = bindparam("flow", type_=L.flow.type)
        page = (
            select(L.id, self._group(group, default))
            .where(_unindexed(L.flow) == flow, L.id > bindparam("after", type_=L.id.type))
            .order_by(L.id)
            .limit(bindparam("chunk", type_=Integer))
        )
        first, last = bindparam("first", type_=L.id.type), bindparam("last", type_=L.id.type)
        entries = (
            select(A.lead_id, A.cycle, A.from_stage, A.stage, A.kind, self._micros(A.at))
            .where(A.lead_id >= first, A.lead_id <= last, _unindexed(A.flow) == flow)
            # the moves: created and moved entries (a migration changes
            # the version, not the stage)
            .where(or_(A.entry == "created", A.entry == "moved"))
            .order_by(A.lead_id, A.lead_seq)
        )
        found = [Compiled(page, dialect), Compiled(entries, dialect)]
        if touches:
            stmt = (
                select(E.lead_id, self._micros(E.at), E.channel)
                .where(E.lead_id >= first, E.lead_id <= last, E.channel.is_not(None))
                .order_by(E.lead_id, E.at, E.id)
            )
            found.append(Compiled(stmt, dialect))
        return found

    # -- histories ------------------------------------------------------------

    def iter_histories(
        self,
        flow: str,
        *,
        group: str | None = None,
        group_default: Any = None,
        touches: bool = False,
        chunk: int = 2000,
    ) -> Iterator[list[History]]:
        """Every lead of `flow` with its audit entries (and, with `touches`,
        its events that have a channel), in id order, `chunk` leads at a time.

        One read transaction for the whole walk, so the report sees one
        snapshot; it never blocks a writer."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        statements = self._history_statements(group, group_default, touches)
        page, entries = statements[0], statements[1]
        params: dict[str, Any] = {"flow": flow, "after": "", "chunk": chunk}
        with self.read() as conn:
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                while True:
                    ids = page.execute(cur, params).fetchall()
                    if not ids:
                        return
                    histories = {
                        lead_id: History(lead_id, None if value is None else str(value), [], [])
                        for lead_id, value in ids
                    }
                    params["first"], params["last"] = ids[0][0], ids[-1][0]
                    _collect(entries.execute(cur, params), histories, False)
                    if touches:
                        _collect(statements[2].execute(cur, params), histories, True)
                    yield list(histories.values())
                    if len(ids) < chunk:
                        return
                    params["after"] = params["last"]
            finally:
                cur.close()

    # -- a replay's reads (saleflow simulate) ---------------------------------

    def iter_recorded(
        self, flow: str, until: datetime, entries: tuple[str, ...], moves: tuple[str, ...] | None = None
    ) -> Iterator[tuple[str, str, str | None, str, datetime, str | None, dict[str, Any]]]:
        """`flow`'s journal entries of the kinds `entries` up to `until`, in
        time order (``at``, then ``seq``), streamed: (lead id, entry, kind,
        stage, at, reason, data), only what a replay reads.  With `moves`,
        a `moved` entry is read only when someone asked for it (its data
        says ``"requested": true``) or its kind of move is one of `moves`:
        the automatic moves, a fifth of a history, are not sent nor
        decoded for a replay that makes them again.  Rows are read
        on the driver's cursor and decoded here (a time and a JSON object
        per row, checked as the store's types check them): a simulation
        reads every entry of a history, and SQLAlchemy's result processing
        cost more than the replay of some of them.  Memory stays flat: the
        rows are streamed on both backends."""
        wanted = [A.entry == bindparam(f"entry{i}", type_=A.entry.type) for i in range(len(entries))]
        stmt = (
            select(A.lead_id, A.entry, A.kind, A.stage, A.at, A.reason, A.data)
            .where(
                # a scan in journal order is faster than the flow index's
                # lookups into the table, which the sort does not need
                _unindexed(A.flow) == bindparam("flow", type_=A.flow.type),
                A.at <= bindparam("until", type_=A.at.type),
            )
            .where(or_(*wanted) if wanted else false())
            .order_by(A.at, A.seq)
        )
        if moves is not None:
            kinds = [A.kind == bindparam(f"move{i}", type_=A.kind.type) for i in range(len(moves))]
            stmt = stmt.where(
                or_(
                    A.entry != literal("moved", A.entry.type),
                    *kinds,
                    A.data["requested"].as_boolean() == true(),
                )
            )
        compiled = Compiled(stmt, self.engine.dialect)
        params: dict[str, Any] = {"flow": flow, "until": until}
        params.update({f"move{i}": kind for i, kind in enumerate(moves or ())})
        params.update({f"entry{i}": kind for i, kind in enumerate(entries)})
        loads = json.loads
        parse = datetime.fromisoformat
        with self.read() as conn:
            dbapi: Any = conn.connection.dbapi_connection
            # On PostgreSQL a named (server-side) cursor: the rows come as
            # they are read, a few thousand at a time, where a plain cursor
            # would hold the whole journal in memory before the first one.
            server = self.engine.dialect.name == "postgresql"
            cur = dbapi.cursor(name="saleflow_recorded") if server else dbapi.cursor()
            try:
                compiled.execute(cur, params)
                while True:
                    rows = cur.fetchmany(5000)
                    if not rows:
                        return
                    for lead_id, entry, kind, stage, at, reason, data in rows:
                        try:
                            if type(at) is str:
                                at = parse(at)
                            if at.tzinfo is not UTC:
                                at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
                            if not MIN_TIME <= at < MAX_TIME:
                                raise ValueError(at)
                        except _DECODE_FAILURES:
                            raise Corrupt(UtcDateTime.what, lead_id) from None
                        if type(data) is not dict:
                            try:
                                data = loads(data)
                            except _DECODE_FAILURES:
                                raise Corrupt(StoredJson.what, lead_id) from None
                            if type(data) is not dict:
                                raise Corrupt(StoredJson.what, lead_id)
                        yield lead_id, entry, kind, stage, at, reason, data
            finally:
                cur.close()

    # -- now ------------------------------------------------------------------

    def stage_counts(
        self, flow: str, *, group: str | None = None, group_default: Any = None
    ) -> list[CountRow]:
        """How many leads of `flow` are in each stage now."""
        group_value = self._group(group, group_default).label("grp")
        stmt = select(group_value, L.stage, func.count()).where(L.flow == flow).group_by(L.stage)
        if group is not None:  # PostgreSQL refuses GROUP BY NULL
            stmt = stmt.group_by(group_value)
        with self.read() as conn:
            return [
                CountRow(None if g is None else str(g), stage, int(count))
                for g, stage, count in conn.execute(stmt)
            ]

    def lead_versions(self, flow: str | None = None) -> list[tuple[str, int]]:
        """The (flow, version) pairs that have leads."""
        stmt = select(L.flow, L.version).distinct().order_by(L.flow, L.version)
        if flow is not None:
            stmt = stmt.where(L.flow == flow)
        with self.read() as conn:
            return [(name, int(version)) for name, version in conn.execute(stmt)]

    def _overdue(self, flow: str, version: int, cutoffs: Mapping[str, datetime]) -> ColumnElement[bool]:
        late = [and_(L.stage == stage, L.entered_at < cutoff) for stage, cutoff in cutoffs.items()]
        return and_(L.flow == flow, L.version == version, or_(*late) if late else false())

    def overdue_counts(self, flow: str, version: int, cutoffs: Mapping[str, datetime]) -> dict[str, int]:
        """Leads of `flow` `version` per stage that entered it before the
        stage's cutoff (now minus its SLA)."""
        if not cutoffs:
            return {}
        stmt = select(L.stage, func.count()).where(self._overdue(flow, version, cutoffs)).group_by(L.stage)
        with self.read() as conn:
            return {stage: int(count) for stage, count in conn.execute(stmt)}

    def iter_overdue(
        self, flow: str, version: int, cutoffs: Mapping[str, datetime], chunk: int = 1000
    ) -> Iterator[list[Lead]]:
        """Those leads themselves, in id order, a chunk at a time."""
        if not cutoffs:
            return
        after: str | None = None
        while True:
            stmt = select(*LEAD_COLUMNS).where(self._overdue(flow, version, cutoffs))
            if after is not None:
                stmt = stmt.where(L.id > after)
            stmt = stmt.order_by(L.id).limit(chunk)
            with self.read() as conn:
                page = read_leads(conn, stmt)
            if page:
                yield page
            if len(page) < chunk:
                return
            after = page[-1].id

    def sla_breach_counts(
        self, flow: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, int]:
        """Recorded SLA breaches per stage whose SLA ran out in the period."""
        stmt = (
            select(S.stage, func.count())
            .where(S.flow == flow, _between(S.due_at, since, until))
            .group_by(S.stage)
        )
        with self.read() as conn:
            return {stage: int(count) for stage, count in conn.execute(stmt)}


__all__ = ["ReportQueries"]
