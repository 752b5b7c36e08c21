"""Batch writes for imports: one transaction, many leads, few statements.

`SqlTransaction.buffered()` returns a `BufferedTransaction`: the same
`Transaction` protocol, with write-behind.  Created and changed leads and
removals from the waiting line are held in memory and written at `flush()`
with one ``executemany`` per table (journal entries are sealed and written
by the real transaction at its commit, one ``executemany``); the leads of a whole
chunk, their journals' newest entries and their events are read up front with one
statement each (`prefetch`).  Per lead the engine then runs exactly as it
does one operation at a time, but the database sees a few statements per
chunk instead of several per lead.

Anything that reads what other leads hold (stage counts, the waiting line)
or writes rows that refer to a lead (events, SLA breaches) flushes first and
then goes to the real transaction, so capacity decisions see every lead
written so far.  Locks are those of the real transaction: ``BEGIN
IMMEDIATE`` on SQLite; ``SELECT … FOR UPDATE`` on PostgreSQL, taken in id
order by `prefetch`; and every update still checks the lead's revision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from ..errors import Conflict
from ..journal import GENESIS_HASH, JournalEntry
from ..records import EventRecord, Lead, SlaBreach, Transaction
from .connect import translate
from .schema import events, leads
from .statements import (
    EVENT_COLUMNS,
    LEAD_COLUMNS,
    LEAD_UPDATED,
    Compiled,
    Statements,
)

if TYPE_CHECKING:
    from .sql import SqlStore
    from .transaction import SqlTransaction

L, E = leads.c, events.c

# At most this many ids in one IN list (SQLite's default limit is 32,766).
ID_BATCH = 5000

_UPDATES: dict[Statements, Compiled] = {}


def _update_to_revision(sql: Statements) -> Compiled:
    """UPDATE a lead whose stored revision is ``:b_revision``, writing every
    changed column and the new revision at once (a lead may have changed
    several times in memory since it was read)."""
    found = _UPDATES.get(sql)
    if found is None:
        names = (*LEAD_UPDATED, "revision")
        stmt = (
            leads.update()
            .where(L.id == bindparam("b_id"), L.revision == bindparam("b_revision"))
            .values({name: bindparam(f"v_{name}", type_=L[name].type) for name in names})
        )
        found = _UPDATES[sql] = Compiled(stmt, sql.dialect)
    return found


def _batches(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), ID_BATCH):
        yield list(ids[start : start + ID_BATCH])


def lead_flows(store: SqlStore, ids: Iterable[str]) -> dict[str, tuple[str, int, datetime]]:
    """The flow, version and last change (the later of its entry into its
    stage and its last update) of each of `ids` that is a stored lead (one
    query per `ID_BATCH` ids, in one read snapshot)."""
    wanted = sorted(set(ids))
    found: dict[str, tuple[str, int, datetime]] = {}
    with store.read() as conn:
        for batch in _batches(wanted):
            stmt = select(L.id, L.flow, L.version, L.entered_at, L.updated_at).where(L.id.in_(batch))
            found.update((row[0], (row[1], row[2], max(row[3], row[4]))) for row in conn.execute(stmt))
    return found


class BufferedTransaction:
    """A `Transaction` with write-behind over a `SqlTransaction`; see the
    module docstring.  Call `flush()` before the transaction commits."""

    def __init__(self, tx: SqlTransaction, cursor: Any, sql: Statements, where: str) -> None:
        self._tx = tx
        self._where = where
        self._conn: Connection = tx.connection
        self._cur = cursor
        self._sql = sql
        self._pg = sql.pg
        # What this transaction knows of a lead: its current state, or None
        # when it does not exist.  `_stored` holds the revision the database
        # has for leads that exist there.
        self._leads: dict[str, Lead | None] = {}
        self._stored: dict[str, int] = {}
        self._new: dict[str, None] = {}  # created here, not yet written (ordered)
        self._dirty: dict[str, None] = {}  # stored leads changed here, not yet written
        self._events: dict[str, list[EventRecord]] = {}
        self._unwait: dict[str, None] = {}

    # -- reading a chunk at once ---------------------------------------------
    def prefetch(self, ids: Iterable[str]) -> None:
        """Read (and on PostgreSQL lock, in id order) the leads `ids` with
        their journals' newest entries and events: three statements per batch."""
        wanted = sorted({i for i in ids if i not in self._leads})
        if not wanted:
            return
        execute = self._conn.execute
        for batch in _batches(wanted):
            stmt = select(*LEAD_COLUMNS).where(L.id.in_(batch)).order_by(L.id)
            if self._pg:
                stmt = stmt.with_for_update()
            present: list[str] = []
            for row in execute(stmt):
                lead = Lead(*row)
                self._leads[lead.id] = lead
                self._stored[lead.id] = lead.revision
                self._events[lead.id] = []
                present.append(lead.id)
            for lead_id in batch:
                if lead_id not in self._stored:
                    self._leads[lead_id] = None
            if not present:
                continue
            self._tx.know_heads(self._tx.read_heads(present))
            stmt_events = (
                select(E.lead_id, *EVENT_COLUMNS)
                .where(E.lead_id.in_(present))
                .order_by(E.lead_id, E.at, E.id)
            )
            for row in execute(stmt_events):
                self._events[row[0]].append(EventRecord(*row[1:]))

    # -- the Transaction protocol ---------------------------------------------
    def lock_lead(self, lead_id: str) -> Lead | None:
        if lead_id in self._leads:
            lead = self._leads[lead_id]
            return None if lead is None else lead.copy()
        lead = self._tx.lock_lead(lead_id)
        self._leads[lead_id] = lead
        if lead is not None:
            self._stored[lead_id] = lead.revision
        return None if lead is None else lead.copy()

    def latest_version(self, flow: str) -> int | None:
        return self._tx.latest_version(flow)

    def insert_lead(self, lead: Lead) -> None:
        if self._leads.get(lead.id) is not None:
            raise Conflict(f'lead "{lead.id}" was created at the same time by another process')
        self._leads[lead.id] = lead.copy()
        self._new[lead.id] = None
        self._tx.know_heads({lead.id: (0, GENESIS_HASH)})
        self._events[lead.id] = []

    def update_lead(self, lead: Lead) -> Lead:
        current = self._leads.get(lead.id)
        if current is None or current.revision != lead.revision:
            raise Conflict(
                f'lead "{lead.id}" was changed by another process (revision {lead.revision} is stale)'
            )
        saved = lead.copy()
        saved.revision += 1
        self._leads[lead.id] = saved
        if lead.id not in self._new:
            self._dirty[lead.id] = None
        return saved.copy()

    def events(self, lead_id: str, cycle: int) -> list[EventRecord]:
        known = self._events.get(lead_id)
        if known is None:
            return self._tx.events(lead_id, cycle)
        return [event for event in known if event.cycle == cycle]

    def journal(self, lead_id: str) -> list[JournalEntry]:
        return self._tx.journal(lead_id)

    def insert_event(self, lead_id: str, event: EventRecord) -> None:
        self.flush()
        self._tx.insert_event(lead_id, event)
        self._events.pop(lead_id, None)  # read it back, in the database's order

    def append(self, entry: JournalEntry) -> None:
        self._tx.append(entry)  # sealed and written at the commit, after `flush`

    def lock_stage(self, flow: str, stage: str) -> None:
        self._tx.lock_stage(flow, stage)

    def count_in_stage(self, flow: str, stage: str) -> int:
        self.flush()
        return self._tx.count_in_stage(flow, stage)

    def add_waiting(self, lead_id: str, flow: str, stage: str, score: float, at: datetime) -> None:
        self.flush()
        self._tx.add_waiting(lead_id, flow, stage, score, at)

    def remove_waiting(self, lead_id: str) -> None:
        if lead_id in self._new:
            return  # not written yet, so not waiting: `add_waiting` flushes first
        self._unwait[lead_id] = None

    def waiting(self, flow: str, stage: str, limit: int) -> list[str]:
        self.flush()
        return self._tx.waiting(flow, stage, limit)

    def waiting_line(self, flow: str, stage: str, limit: int) -> list[tuple[Lead, datetime]]:
        self.flush()
        return self._tx.waiting_line(flow, stage, limit)

    def claim_due(self, now: datetime, flow: str | None = None, limit: int = 500) -> list[Lead]:
        """`SqlTransaction.claim_due`, after writing what is held; the
        claimed leads are then known to this transaction (no second read)."""
        self.flush()
        claimed = self._tx.claim_due(now, flow, limit)
        for lead in claimed:
            if lead.id not in self._leads:
                self._leads[lead.id] = lead.copy()
                self._stored[lead.id] = lead.revision
        return claimed

    def record_breach(self, breach: SlaBreach) -> bool:
        self.flush()
        return self._tx.record_breach(breach)

    # -- writing ----------------------------------------------------------------
    def flush(self) -> None:
        """Write what is held: new leads, changed leads, removals from the
        waiting line; one ``executemany`` each.  Journal entries are the
        real transaction's, written at its commit."""
        sql, cur = self._sql, self._cur
        try:
            if self._new:
                lead_row, lead = sql.lead_row, self._lead
                cur.executemany(sql.insert_lead.sql, [lead_row(lead(i)) for i in self._new])
            if self._dirty:
                update = _update_to_revision(sql)
                rows = [update.params(self._update_params(i)) for i in self._dirty]
                cur.executemany(update.sql, rows)
                if cur.rowcount >= 0 and cur.rowcount != len(rows):
                    raise Conflict("a lead of this chunk was changed by another process")
            if self._unwait:
                remove = sql.remove_waiting
                cur.executemany(remove.sql, [remove.params({"lead_id": i}) for i in self._unwait])
        except sql.error as exc:
            raise translate(
                exc, self._where, "a concurrent write to a lead of this chunk won the race"
            ) from exc
        for lead_id in (*self._new, *self._dirty):
            self._stored[lead_id] = self._lead(lead_id).revision
        self._new.clear()
        self._dirty.clear()
        self._unwait.clear()
        self._tx.spill_journal()  # on SQLite, once enough entries wait: memory stays bounded

    def _lead(self, lead_id: str) -> Lead:
        lead = self._leads[lead_id]
        assert lead is not None
        return lead

    def _update_params(self, lead_id: str) -> dict[str, Any]:
        lead = self._lead(lead_id)
        params = {f"v_{name}": getattr(lead, name) for name in (*LEAD_UPDATED, "revision")}
        params["b_id"] = lead_id
        params["b_revision"] = self._stored[lead_id]
        return params


if TYPE_CHECKING:  # mypy proves the class implements the protocol of records.py

    def _implements(tx: BufferedTransaction) -> Transaction:
        return tx


__all__ = ["BufferedTransaction", "lead_flows"]
