"""The SQL behind `saleflow report` and `leads --overdue`: aggregates over the
audit log, computed by the database.

Layer 3, part of the store (the only place that knows SQLAlchemy).  The store
never learns flow semantics, so every query takes what it needs as plain
mappings from the caller (`saleflow.report`): which stages count under which
key (a stage, or its team) and each main-line stage's position.

The unit is a *lead-cycle*: the audit entries of one lead with one cycle
number (a recycle starts the next).  Window functions over the audit log do
the work, on SQLite (>= 3.25) and PostgreSQL alike:

- ``MAX(pos) OVER (PARTITION BY lead_id, cycle ORDER BY seq ROWS BETWEEN 1
  FOLLOWING AND UNBOUNDED FOLLOWING)`` is the furthest main-line position a
  lead-cycle reached *after* each entry;
- ``LEAD(at) OVER (PARTITION BY lead_id ORDER BY seq)`` is when the lead left
  the stage an entry put it in;
- medians are ``ROW_NUMBER`` / ``COUNT`` over the sorted durations (neither
  backend's ``percentile_*`` is portable).

Every result is already aggregated (stages x positions, or per group): the
rows that come back are few whatever the number of leads, and the database
streams the audit log through its own sorter, so memory stays flat.  The one
unbounded result, overdue leads, is paged by key like `iter_leads`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Float,
    Integer,
    and_,
    case,
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
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select

from ..records import Lead
from .schema import audit, events, leads, sla_breaches
from .statements import LEAD_COLUMNS

A, E, L, S = audit.c, events.c, leads.c, sla_breaches.c

GroupValue = str | None


class CohortRow(NamedTuple):
    """`lead_cycles` lead-cycles entered `key` in the period (their first entry
    there last touched by `channel`) and reached at most main-line position
    `furthest` afterwards in the same cycle (None: no main-line stage)."""

    group: GroupValue
    key: str
    channel: str | None
    furthest: int | None
    lead_cycles: int


class MedianRow(NamedTuple):
    """The median days spent in `stage` by the `left` passes that left it."""

    group: GroupValue
    stage: str
    median_days: float
    left: int


class CountRow(NamedTuple):
    group: GroupValue
    stage: str
    leads: int


class RecycleRow(NamedTuple):
    """Recycles out of `source` in the period, and how many of those leads
    later reached a main-line position beyond any they had reached before."""

    source: str | None
    lead_cycles: int
    later_advanced: int


def _between(column: Any, since: datetime | None, until: datetime | None) -> ColumnElement[bool]:
    """``since <= column < until``, either end open when None."""
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return and_(*conditions) if conditions else true()


def _mapping(values: Mapping[str, Any], column: Any, type_: Any = None) -> ColumnElement[Any]:
    """``CASE column WHEN k THEN v … END`` (NULL for anything else)."""
    if not values:
        return null() if type_ is None else cast(null(), type_)
    return case({key: literal(value, type_) for key, value in values.items()}, value=column, else_=null())


class ReportQueries:
    """The report queries, mixed into `SqlStore` (which provides `read` and
    `dialect`); each public method runs in one read transaction."""

    @property
    def dialect(self) -> str:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    def read(self) -> AbstractContextManager[Connection]:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    # -- pieces ---------------------------------------------------------------

    def _group(self, field: str | None, default: Any) -> ColumnElement[Any]:
        """A lead's current value of `field` as text, its default when unset
        (NULL when there is no field to group by)."""
        if field is None:
            return null()
        value = L.fields[field].as_string()
        if default is None:
            return value
        return func.coalesce(value, literal(self._json_text(default)))

    def _json_text(self, value: Any) -> str:
        """How this backend's JSON-to-text extraction spells `value`."""
        if self.dialect == "sqlite":  # json_extract gives SQL values: true is 1
            return str(int(value)) if isinstance(value, bool) else str(value)
        return value if isinstance(value, str) else json.dumps(value)

    def _days(self, start: Any, end: Any) -> ColumnElement[Any]:
        if self.dialect == "sqlite":
            return func.julianday(end) - func.julianday(start)
        return cast(extract("epoch", end - start), Float) / 86400.0

    # -- cohorts --------------------------------------------------------------

    def cohorts(
        self,
        flow: str,
        *,
        keys: Mapping[str, str],
        positions: Mapping[str, int],
        since: datetime | None = None,
        until: datetime | None = None,
        group: str | None = None,
        group_default: Any = None,
        channels: bool = False,
    ) -> list[CohortRow]:
        """Lead-cycles by the key they entered in the period and the
        furthest main-line position they reached after entering it.

        `keys` maps a stage to what it counts under (itself, or its team);
        `positions` maps each main-line stage to its index.  A lead-cycle
        that enters a key several times (several stages of one team, or a
        stage twice) counts once, from its first entry in the period.  With
        `group`, each row carries the lead's current value of that field; with
        `channels`, the channel of the lead's last event (with a channel, of
        any cycle) at or before that first entry."""
        pos = _mapping(positions, A.to_stage, Integer)
        moves = (
            select(
                A.lead_id,
                A.cycle,
                A.at,
                _mapping(keys, A.to_stage).label("key"),
                func.max(pos)
                .over(partition_by=(A.lead_id, A.cycle), order_by=A.seq, rows=(1, None))
                .label("later"),
            )
            .where(A.flow == flow)
            .cte("moves")
        )
        m = moves.c
        entries = (
            select(
                m.lead_id,
                m.key,
                func.min(m.at).label("first_at"),
                func.max(m.later).label("furthest"),
            )
            .where(m.key.is_not(None), _between(m.at, since, until))
            .group_by(m.lead_id, m.cycle, m.key)
            .subquery("entries")
        )
        n = entries.c
        channel: ColumnElement[Any] = null()
        if channels:
            channel = (
                select(E.channel)
                .where(E.lead_id == n.lead_id, E.at <= n.first_at, E.channel.is_not(None))
                .order_by(E.at.desc(), E.id.desc())
                .limit(1)
                .scalar_subquery()
            )
        group_value = self._group(group, group_default)
        inner = select(
            group_value.label("grp"),
            n.key,
            channel.label("channel"),
            n.furthest,
        ).select_from(entries)
        if group is not None:
            inner = inner.join(leads, L.id == n.lead_id)
        sub = inner.subquery("tagged")
        t = sub.c
        stmt = select(t.grp, t.key, t.channel, t.furthest, func.count()).group_by(
            t.grp, t.key, t.channel, t.furthest
        )
        with self.read() as conn:
            return [
                CohortRow(_text(g), key, c, None if f is None else int(f), int(count))
                for g, key, c, f, count in conn.execute(stmt)
            ]

    # -- time in stage --------------------------------------------------------

    def median_days(
        self,
        flow: str,
        stages: Sequence[str],
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group: str | None = None,
        group_default: Any = None,
    ) -> list[MedianRow]:
        """Per stage: the median of the days from each entry (in the period)
        to the lead's next audit entry, over the entries that were left."""
        if not stages:
            return []
        moves = (
            select(
                A.lead_id,
                A.to_stage,
                A.at,
                func.lead(A.at).over(partition_by=A.lead_id, order_by=A.seq).label("left_at"),
            )
            .where(A.flow == flow)
            .cte("moves")
        )
        m = moves.c
        group_value = self._group(group, group_default)
        passes = select(
            group_value.label("grp"), m.to_stage.label("stage"), self._days(m.at, m.left_at).label("days")
        ).where(m.left_at.is_not(None), m.to_stage.in_(list(stages)), _between(m.at, since, until))
        if group is not None:
            passes = passes.select_from(moves.join(leads, L.id == m.lead_id))
        p = passes.subquery("passes").c
        ranked = select(
            p.grp,
            p.stage,
            p.days,
            func.row_number().over(partition_by=(p.grp, p.stage), order_by=p.days).label("rn"),
            func.count().over(partition_by=(p.grp, p.stage)).label("n"),
        ).subquery("ranked")
        r = ranked.c
        # The middle row (odd n) or the two middle rows (even n).
        stmt: Select[Any] = (
            select(r.grp, r.stage, func.avg(r.days), func.max(r.n))
            .where(or_(r.rn == (r.n + 1) // 2, r.rn == (r.n + 2) // 2))
            .group_by(r.grp, r.stage)
        )
        with self.read() as conn:
            return [
                MedianRow(_text(g), stage, float(days), int(left))
                for g, stage, days, left in conn.execute(stmt)
            ]

    # -- now ------------------------------------------------------------------

    def stage_counts(
        self, flow: str, *, group: str | None = None, group_default: Any = None
    ) -> list[CountRow]:
        """How many leads of `flow` are in each stage now."""
        group_value = self._group(group, group_default).label("grp")
        stmt = select(group_value, L.stage, func.count()).where(L.flow == flow).group_by(group_value, L.stage)
        with self.read() as conn:
            return [CountRow(_text(g), stage, int(count)) for g, stage, count in conn.execute(stmt)]

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
                page = [Lead(*row) for row in conn.execute(stmt)]
            if page:
                yield page
            if len(page) < chunk:
                return
            after = page[-1].id

    # -- recycles and SLAs ----------------------------------------------------

    def recycles(
        self,
        flow: str,
        positions: Mapping[str, int],
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[RecycleRow]:
        """Recycle entries in the period, per stage recycled from, and how
        many of those leads later (any cycle) reached a main-line position
        beyond the furthest they had reached before the recycle."""
        pos = _mapping(positions, A.to_stage, Integer)
        moves = (
            select(
                A.from_stage,
                A.kind,
                A.at,
                func.max(pos).over(partition_by=A.lead_id, order_by=A.seq, rows=(None, -1)).label("before"),
                func.max(pos).over(partition_by=A.lead_id, order_by=A.seq, rows=(1, None)).label("after"),
            )
            .where(A.flow == flow)
            .cte("moves")
        )
        m = moves.c
        went_further = case((m.after > func.coalesce(m.before, -1), 1), else_=0)
        stmt = (
            select(m.from_stage, func.count(), func.coalesce(func.sum(went_further), 0))
            .where(m.kind == "recycle", _between(m.at, since, until))
            .group_by(m.from_stage)
        )
        with self.read() as conn:
            return [RecycleRow(source, int(n), int(later)) for source, n, later in conn.execute(stmt)]

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


def _text(value: Any) -> GroupValue:
    return None if value is None else str(value)


__all__ = ["CohortRow", "CountRow", "MedianRow", "RecycleRow", "ReportQueries"]
