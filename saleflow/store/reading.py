"""The reads of leads, their events, breaches and journal behind `SqlStore`
(the read half of the `Store` protocol of records.py).

Layer 3, part of the store; mixed into `SqlStore`, as `ReportQueries` and
`ExportQueries` are.  Each read is one statement in autocommit (`_fetch`,
`_query`): no BEGIN or COMMIT round trips, never blocking a writer; batch
reads page by key, one chunk per query, so memory stays flat and no long
snapshot is held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..journal import JournalEntry
from ..records import EventRecord, Lead, SlaBreach
from .schema import Corrupt, events, leads
from .statements import EVENT_COLUMNS, Compiled, Statements, read_leads

T = TypeVar("T")


class LeadQueries:
    """The reads of leads and what hangs off them, mixed into `SqlStore`
    (which provides `_sql`, `_query` and `_fetch`)."""

    _sql: Statements

    def _query(self, run: Callable[[Connection], T]) -> T:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    def _fetch(self, stmt: Compiled, params: dict[str, Any]) -> list[list[Any]]:  # pragma: no cover
        raise NotImplementedError

    # -- leads ----------------------------------------------------------------

    def get_lead(self, lead_id: str) -> Lead | None:
        try:
            rows = self._fetch(self._sql.get_lead, {"id": lead_id})
        except Corrupt as err:
            raise err.naming(lead_id) from None
        return Lead(*rows[0]) if rows else None

    def iter_leads(
        self,
        *,
        flow: str | None = None,
        stages: Sequence[str] | None = None,
        chunk: int = 1000,
    ) -> Iterator[list[Lead]]:
        """Leads in id order, a chunk at a time.  Each chunk is one query of
        its own (keyset pagination: ``id > last``), so the caller may write
        between chunks, no snapshot is held, and memory stays flat."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        if stages is not None and not stages:
            return
        params: dict[str, Any] = {"chunk": chunk}
        if flow is not None:
            params["flow"] = flow
        if stages is not None:
            params["stages"] = list(stages)
        first = True
        while True:
            stmt = self._sql.lead_page(first, flow is not None, stages is not None)
            try:
                page = self._query(partial(_leads, stmt, params))
            except Corrupt as err:
                raise self._culprit(err, stmt, params) from None
            if page:
                yield page
            if len(page) < chunk:
                return
            first = False
            params["after"] = page[-1].id

    def iter_due(self, now: datetime, flow: str | None = None, chunk: int = 500) -> Iterator[list[Lead]]:
        """The leads due at `now`, a chunk at a time, in id order.

        Yields lists of at most `chunk` `Lead` records (never an empty list)
        whose ``due_at <= now`` (NULL is never due), of `flow` when it is
        given, in ascending id order across all chunks.  Each chunk is one
        query of its own through the due index (keyset pagination: ``id >``
        the last id yielded), so the caller may write between chunks (a lead
        it ticked gets a due time after `now` and is not seen again), no
        snapshot is held, memory stays flat, and the cost grows with the
        leads due, not with all leads.  The walk ends at the first empty
        chunk: a lead that becomes due ahead of it while the caller works
        (an id above the last one yielded) is yielded too, as a walk over
        every lead in id order would meet it; one that becomes due behind
        it is left for the next walk."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        params: dict[str, Any] = {"now": now, "chunk": chunk}
        if flow is not None:
            params["flow"] = flow
        first = True
        while True:
            stmt = self._sql.due_page(first, flow is not None)
            try:
                page = self._query(partial(_leads, stmt, params))
            except Corrupt as err:
                raise self._culprit(err, stmt, params) from None
            if not page:
                return
            yield page
            first = False
            params["after"] = page[-1].id

    def _culprit(self, err: Corrupt, stmt: Any, params: dict[str, Any]) -> Corrupt:
        """`err` naming its lead, when the driver refused a whole page: each
        lead of the page read alone (only on this error)."""
        if err.lead_id is not None:
            return err
        ids = self._query(
            lambda conn: list(conn.execute(stmt.with_only_columns(leads.c.id), params).scalars())
        )
        for lead_id in ids:
            try:
                self.get_lead(lead_id)
            except Corrupt as found:
                return found
        return err

    def count_due(self, now: datetime, flow: str | None = None) -> int:
        """How many leads (of a flow) are due at `now` (``due_at <= now``):
        a count over the due index."""
        stmt = select(func.count()).select_from(leads).where(leads.c.due_at <= now)
        if flow is not None:
            stmt = stmt.where(leads.c.flow == flow)
        return self._query(lambda conn: int(conn.execute(stmt).scalar_one()))

    def count_leads(self, flow: str | None = None, stage: str | None = None) -> int:
        """How many leads (of a flow, in a stage): an index-only count."""
        stmt = select(func.count()).select_from(leads)
        if flow is not None:
            stmt = stmt.where(leads.c.flow == flow)
        if stage is not None:
            stmt = stmt.where(leads.c.stage == stage)
        return self._query(lambda conn: int(conn.execute(stmt).scalar_one()))

    def events_of(self, lead_id: str) -> list[EventRecord]:
        """Every event of a lead, all cycles, oldest first."""
        try:
            rows = self._fetch(self._sql.events_of, {"lead_id": lead_id})
        except Corrupt as err:
            raise err.naming(lead_id) from None
        return [EventRecord(*row) for row in rows]

    def events_of_leads(self, lead_ids: Sequence[str]) -> dict[str, list[EventRecord]]:
        """The events of each of `lead_ids` (all cycles, oldest first): one
        query per `bulk.ID_BATCH` ids, for listings that score a page."""
        from .bulk import ID_BATCH

        found: dict[str, list[EventRecord]] = {lead_id: [] for lead_id in lead_ids}
        E = events.c
        wanted = sorted(found)
        for start in range(0, len(wanted), ID_BATCH):
            batch = wanted[start : start + ID_BATCH]
            stmt = (
                select(E.lead_id, *EVENT_COLUMNS).where(E.lead_id.in_(batch)).order_by(E.lead_id, E.at, E.id)
            )
            rows = self._query(partial(_rows, stmt))
            for row in rows:
                found[row[0]].append(EventRecord(*row[1:]))
        return found

    def breaches_of(self, lead_id: str) -> list[SlaBreach]:
        """A lead's recorded SLA breaches, in the order they were detected."""
        try:
            rows = self._fetch(self._sql.breaches_of, {"lead_id": lead_id})
        except Corrupt as err:
            raise err.naming(lead_id) from None
        return [SlaBreach(*row) for row in rows]

    # -- journal --------------------------------------------------------------

    def journal(self, lead_id: str) -> list[JournalEntry]:
        """A lead's journal entries, oldest first."""
        try:
            rows = self._fetch(self._sql.lead_journal, {"lead_id": lead_id})
        except Corrupt as err:
            raise err.naming(lead_id) from None
        return [JournalEntry(*row) for row in rows]

    def iter_journal(self, chunk: int = 1000) -> Iterator[list[JournalEntry]]:
        """Every journal entry ordered by (lead_id, lead_seq), a chunk at a time."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        params: dict[str, Any] = {"chunk": chunk}
        stmt = self._sql.journal_first
        while True:
            rows = self._fetch(stmt, params)
            page = [JournalEntry(*row) for row in rows]
            if page:
                yield page
            if len(page) < chunk:
                return
            stmt = self._sql.journal_next
            params["after_lead"], params["after_seq"] = page[-1].lead_id, page[-1].lead_seq


def _rows(stmt: Any, conn: Connection) -> list[Any]:
    return list(conn.execute(stmt))


def _leads(stmt: Any, params: dict[str, Any], conn: Connection) -> list[Lead]:
    return read_leads(conn, stmt, params)
