"""`SqlTransaction`: one database transaction of a `SqlStore` (the
`Transaction` protocol of records.py), and the sealing and writing of the
journal entries it appends, at its commit.

Layer 3, part of the store.  A transaction is one pooled connection:
``BEGIN IMMEDIATE`` on SQLite, row locks (``SELECT … FOR UPDATE``) and
advisory locks on PostgreSQL; the revision check in `update_lead` guards
both.  `write_journal` explains how journal positions become final.
"""

from __future__ import annotations

import pickle
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..errors import Conflict
from ..journal import GENESIS_HASH, JournalEntry
from ..records import EventRecord, Lead, SlaBreach
from .connect import advisory_key, translate
from .schema import Corrupt, journal
from .seal import Seal
from .statements import LEAD_UPDATED, Statements

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .bulk import BufferedTransaction

# The journal's publication lock (PostgreSQL advisory lock): a write
# transaction holds it shared from drawing its positions to its commit;
# `high_water` takes it exclusive for a moment to learn which are final.
JOURNAL_LOCK = advisory_key("journal", "publication")
# Notified (PostgreSQL) at the commit of every write of journal entries,
# with the last `seq` written: the change feed's followers listen on it.
JOURNAL_CHANNEL = "saleflow_journal"
# Batch work: entries put out of memory once this many are pending, and the
# newest entry of at most this many leads kept in memory (`spill_journal`);
# PostgreSQL parks spilled entries in this temporary table until the commit.
SPILL_ENTRIES = 5000
KEPT_HEADS = 20_000
SPILL_TABLE = "saleflow_journal_spill"
_UPDATE_KEYS = tuple((f"v_{name}", name) for name in LEAD_UPDATED)


class SqlTransaction:
    """One database transaction (the `Transaction` protocol of records.py).

    A method that raises `Conflict` has lost a race and the transaction is
    dead (PostgreSQL aborts it): leave the ``with`` block, which rolls back,
    and retry the whole operation."""

    __slots__ = (
        "_cur",
        "_heads",
        "_journal",
        "_key",
        "_seal",
        "_spilled",
        "_sql",
        "_where",
        "connection",
        "spilling",
    )

    def __init__(
        self,
        conn: Connection,
        sql: Statements,
        where: str,
        key: bytes | None = None,
        seal: Seal | None = None,
    ) -> None:
        self.connection = conn  # the SQLAlchemy connection, for queries the protocol lacks
        self._cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        self._sql = sql
        self._where = where
        self._key = key
        self._seal = seal if seal is not None else Seal(key, where)
        # Entries appended, sealed and written at `write_journal` (commit).
        self._journal: list[JournalEntry] = []
        # Each lead's newest entry as this transaction knows it: (lead_seq, hash).
        # Only a cache: a lead missing from it is read from the journal.
        self._heads: dict[str, tuple[int, str]] = {}
        # Batch work that may append millions of entries sets `spilling`:
        # see `spill_journal`.  `_spilled` entries wait in a temporary table.
        self.spilling = False
        self._spilled = 0

    def _fail(self, exc: BaseException, conflict: str | None = None) -> NoReturn:
        if is_broken(self.connection):
            # A pooled connection the server dropped (restart, idle timeout).
            # Nothing was committed, so a retry on a fresh connection is safe.
            raise Conflict(f"the connection to the database {self._where} was lost") from exc
        raise translate(exc, self._where, conflict) from exc

    def lock_lead(self, lead_id: str) -> Lead | None:
        try:
            row = self._sql.lock_lead.first(self._cur, {"id": lead_id})
        except self._sql.error as exc:
            try:
                self._fail(exc, f'lead "{lead_id}" is held by another process')
            except Corrupt as err:
                raise err.naming(lead_id) from None
        return None if row is None else Lead(*row)

    def latest_version(self, flow: str) -> int | None:
        try:
            row = self._sql.latest_version.first(self._cur, {"name": flow})
        except self._sql.error as exc:
            self._fail(exc)
        return None if row is None or row[0] is None else int(row[0])

    def insert_lead(self, lead: Lead) -> None:
        self._heads[lead.id] = (0, GENESIS_HASH)  # a new lead's journal starts here
        try:
            self._cur.execute(self._sql.insert_lead.sql, self._sql.lead_row(lead))
        except self._sql.error as exc:
            self._fail(exc, f'lead "{lead.id}" was created at the same time by another process')

    def update_lead(self, lead: Lead) -> Lead:
        params = {key: getattr(lead, name) for key, name in _UPDATE_KEYS}
        params["b_id"] = lead.id
        params["b_revision"] = lead.revision
        stale = f'lead "{lead.id}" was changed by another process (revision {lead.revision} is stale)'
        try:
            cur = self._sql.update_lead.execute(self._cur, params)
        except self._sql.error as exc:
            self._fail(exc, stale)
        if cur.rowcount != 1:
            raise Conflict(stale)
        return lead.copy(revision=lead.revision + 1)

    def events(self, lead_id: str, cycle: int) -> list[EventRecord]:
        try:
            try:
                rows = self._sql.events.all(self._cur, {"lead_id": lead_id, "cycle": cycle})
            except self._sql.error as exc:
                self._fail(exc)
        except Corrupt as err:
            raise err.naming(lead_id) from None
        return [EventRecord(*row) for row in rows]

    def journal(self, lead_id: str) -> list[JournalEntry]:
        try:
            try:
                rows = self._sql.lead_journal.all(self._cur, {"lead_id": lead_id})
            except self._sql.error as exc:
                self._fail(exc)
        except Corrupt as err:
            raise err.naming(lead_id) from None
        return [JournalEntry(*row) for row in rows]

    def insert_event(self, lead_id: str, event: EventRecord) -> None:
        params = {
            "lead_id": lead_id,
            "name": event.name,
            "at": event.at,
            "channel": event.channel,
            "content": event.content,
            "count": event.count,
            "cycle": event.cycle,
        }
        try:
            self._sql.insert_event.execute(self._cur, params)
        except self._sql.error as exc:
            self._fail(exc)

    def append(self, entry: JournalEntry) -> None:
        self._journal.append(entry)

    def know_heads(self, heads: dict[str, tuple[int, str]]) -> None:
        """Heads read by a batch prefetch (`bulk.py`): no query per lead."""
        self._heads.update(heads)

    def write_journal(self) -> None:
        """Seal and write the entries appended in this transaction, in order:
        each gets the next global `seq`, its lead's next `lead_seq` and the
        hash of its lead's previous entry.  Called just before the commit.

        On SQLite one writer at a time holds the database (``BEGIN
        IMMEDIATE``), so counting on from the largest `seq` is safe and `seq`
        order is commit order.  On PostgreSQL the values come from the
        sequence, and commits come in any order; `SqlStore.high_water` says
        which positions are final, and this is the other half of how:

        - the journal's publication lock is taken *shared* here, right
          before the values are drawn, and held until the commit (an
          ``xact`` lock).  Writers share it, so they never wait for each
          other on it;
        - `high_water` takes it *exclusive* for a moment.  Granting that
          waits for every transaction between drawing its values and
          committing (or rolling back); the sequence's last value is then
          final up to and including itself: every value at or below it was
          drawn by a transaction that has ended.  Writers that come later
          draw higher values.

        The lock is taken last, after every row lock this transaction holds
        and with nothing left to lock but the journal's own rows (of leads
        it holds), so a writer holding it never waits for another writer,
        and a reader waiting for it can close no deadlock cycle.  The wait
        either side sees is the width of this window: one INSERT and the
        commit, since entries are held until here."""
        if not self._journal and not self._spilled:
            return
        sql, cur = self._sql, self._cur
        try:
            if not self._seal.checked:
                self._seal.check_writing(cur, sql.pg)
            if sql.pg:
                cur.execute(f"SELECT pg_advisory_xact_lock_shared({JOURNAL_LOCK})")
            last = 0
            for chunk in self._pending_chunks():
                last = self._seal_and_write(chunk)
            if self._spilled:
                cur.execute(f"DELETE FROM {SPILL_TABLE}")
            if sql.pg and last:  # delivered at the commit, dropped by a rollback
                cur.execute(f"SELECT pg_notify('{JOURNAL_CHANNEL}', %s)", (str(last),))
        except sql.error as exc:
            self._fail(exc, "a journal entry of this transaction was written concurrently")
        self._journal = []
        self._spilled = 0

    def _pending_chunks(self) -> Iterator[list[JournalEntry]]:
        """The entries to write, in the order they were appended: those
        spilled to the temporary table (a chunk at a time), then the rest."""
        cur = self._cur
        for first in range(0, self._spilled, SPILL_ENTRIES):
            cur.execute(
                f"SELECT entry FROM {SPILL_TABLE} WHERE n >= %(first)s AND n < %(last)s ORDER BY n",
                {"first": first, "last": first + SPILL_ENTRIES},
            )
            # Written by this transaction (`spill_journal`) a moment ago, in a
            # table no other session can see: never data from outside.
            yield [pickle.loads(row[0]) for row in cur.fetchall()]
        if self._journal:
            yield self._journal

    def _seal_and_write(self, pending: list[JournalEntry]) -> int:
        """Seal `pending` and write it; the last `seq` it took."""
        sql, cur = self._sql, self._cur
        if sql.pg:
            cur.execute(sql.next_seqs(len(pending)))
            seqs = sorted(int(row[0]) for row in cur.fetchall())
        else:
            first = int(sql.journal_last_seq.first(cur, {})[0]) + 1  # type: ignore[index]
            seqs = list(range(first, first + len(pending)))
        heads = self._heads
        missing = list(dict.fromkeys(e.lead_id for e in pending if e.lead_id not in heads))
        if len(missing) <= 2:  # one operation's lead: the precompiled statement
            for lead_id in missing:
                row = sql.journal_head.first(cur, {"lead_id": lead_id})
                heads[lead_id] = (0, GENESIS_HASH) if row is None else (int(row[0]), row[1])
        else:
            heads.update(self.read_heads(missing))
        key = self._key
        for seq, entry in zip(seqs, pending, strict=True):
            lead_seq, prev_hash = heads[entry.lead_id]
            entry.seal(seq, lead_seq + 1, prev_hash, key)
            heads[entry.lead_id] = (entry.lead_seq, entry.hash)
        cur.executemany(sql.insert_journal.sql, list(map(sql.journal_row, pending)))
        if len(heads) > KEPT_HEADS:
            heads.clear()  # written: the journal itself holds them now
        return seqs[-1]

    def read_heads(self, lead_ids: list[str]) -> dict[str, tuple[int, str]]:
        """The newest entry of each lead, as this transaction sees the
        journal: one query per `ID_BATCH` leads."""
        from .bulk import ID_BATCH

        J = journal.c
        found: dict[str, tuple[int, str]] = {}
        for start in range(0, len(lead_ids), ID_BATCH):
            batch = lead_ids[start : start + ID_BATCH]
            latest = (
                select(J.lead_id, func.max(J.lead_seq).label("lead_seq"))
                .where(J.lead_id.in_(batch))
                .group_by(J.lead_id)
                .subquery()
            )
            last = select(J.lead_id, J.lead_seq, J.hash).join(
                latest, (J.lead_id == latest.c.lead_id) & (J.lead_seq == latest.c.lead_seq)
            )
            found.update(dict.fromkeys(batch, (0, GENESIS_HASH)))
            found.update((row[0], (int(row[1]), row[2])) for row in self.connection.execute(last))
        return found

    def spill_journal(self) -> None:
        """Batch work that set `spilling` (an import's one transaction): once
        `SPILL_ENTRIES` entries are pending, put them out of memory, so the
        transaction's memory does not grow with its entries.  On SQLite they
        are written at once: one writer at a time holds the database, so
        `seq` stays commit order, and a rollback takes the rows back.  On
        PostgreSQL positions must not be drawn before the commit (see
        `write_journal`: the publication lock would hold `high_water` readers,
        and every writer queued behind them, for the rest of the
        transaction), so the entries wait, unsealed, in a temporary table of
        this session, and `write_journal` seals and writes them a chunk at a
        time."""
        pending = self._journal
        if not self.spilling or len(pending) < SPILL_ENTRIES:
            return
        if not self._sql.pg:
            self.write_journal()
            return
        sql, cur = self._sql, self._cur
        try:
            if not self._spilled:
                cur.execute(
                    f"CREATE TEMPORARY TABLE IF NOT EXISTS {SPILL_TABLE} "
                    "(n bigint PRIMARY KEY, entry bytea NOT NULL) ON COMMIT DROP"
                )
            first = self._spilled
            rows = [
                {"n": first + i, "entry": pickle.dumps(entry, pickle.HIGHEST_PROTOCOL)}
                for i, entry in enumerate(pending)
            ]
            cur.executemany(f"INSERT INTO {SPILL_TABLE} (n, entry) VALUES (%(n)s, %(entry)s)", rows)
        except sql.error as exc:
            self._fail(exc)
        self._spilled += len(pending)
        self._journal = []
        if len(self._heads) > KEPT_HEADS:
            self._heads.clear()

    def lock_stage(self, flow: str, stage: str) -> None:
        lock = self._sql.advisory_lock
        if lock is None:
            return  # SQLite: BEGIN IMMEDIATE already serialises every writer
        try:
            lock.execute(self._cur, {"key": advisory_key("stage", flow, stage)})
        except self._sql.error as exc:
            self._fail(exc, f'stage "{stage}" of flow "{flow}" is held by another process')

    def count_in_stage(self, flow: str, stage: str) -> int:
        try:
            row = self._sql.count_in_stage.first(self._cur, {"flow": flow, "stage": stage})
        except self._sql.error as exc:
            self._fail(exc)
        return int(row[0]) if row else 0

    def add_waiting(self, lead_id: str, flow: str, stage: str, score: float, at: datetime) -> None:
        """Queue a lead for room in `stage`; a lead already waiting for the
        same stage keeps its place in time and takes the new score."""
        params = {"lead_id": lead_id, "flow": flow, "stage": stage, "score": score, "since": at}
        try:
            self._sql.add_waiting.execute(self._cur, params)
        except self._sql.error as exc:
            self._fail(exc)

    def remove_waiting(self, lead_id: str) -> None:
        try:
            self._sql.remove_waiting.execute(self._cur, {"lead_id": lead_id})
        except self._sql.error as exc:
            self._fail(exc)

    def waiting(self, flow: str, stage: str, limit: int) -> list[str]:
        """Highest score first; equal scores in the order they started waiting."""
        try:
            rows = self._sql.waiting.all(self._cur, {"flow": flow, "stage": stage, "limit": limit})
        except self._sql.error as exc:
            self._fail(exc)
        return [row[0] for row in rows]

    def waiting_line(self, flow: str, stage: str, limit: int) -> list[tuple[Lead, datetime]]:
        """Up to `limit` leads waiting for `stage`, each with the time it
        started waiting; best stored score first (not locked)."""
        try:
            rows = self._sql.waiting_line.all(self._cur, {"flow": flow, "stage": stage, "limit": limit})
        except self._sql.error as exc:
            self._fail(exc)
        return [(Lead(*row[:-1]), row[-1]) for row in rows]

    def claim_due(self, now: datetime, flow: str | None = None, limit: int = 500) -> list[Lead]:
        """Claim up to `limit` leads whose due time has come, for this
        transaction to tick.

        Returns the leads (as `Lead` records, with every stored column) whose
        ``due_at <= now`` (NULL is never due), of `flow` when it is given,
        earliest ``due_at`` first and then by id; [] when none is due.  On
        PostgreSQL the rows are selected ``FOR UPDATE SKIP LOCKED``: each
        returned lead is locked until this transaction ends, and leads that
        another transaction holds are skipped, so concurrent claimers get
        disjoint sets.  On SQLite it is the plain select (the transaction
        holds the database's write lock already: one claimer at a time).

        Claiming changes nothing: ticking the leads (`Work.reevaluate(lead,
        sla=True)`) stores each one's next due time, after `now` (or none);
        a claimed lead left untouched stays due.  `limit` must be at least 1."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        params: dict[str, Any] = {"now": now, "limit": min(limit, 2**31 - 1)}
        if flow is not None:
            params["flow"] = flow
        try:
            rows = self._sql.claim_due(flow is not None).all(self._cur, params)
        except self._sql.error as exc:
            self._fail(exc, "the due leads are held by another process")
        return [Lead(*row) for row in rows]

    def record_breach(self, breach: SlaBreach) -> bool:
        params = {
            "lead_id": breach.lead_id,
            "flow": breach.flow,
            "stage": breach.stage,
            "cycle": breach.cycle,
            "entered_at": breach.entered_at,
            "due_at": breach.due_at,
            "detected_at": breach.detected_at,
        }
        try:
            cur = self._sql.record_breach.execute(self._cur, params)
        except self._sql.error as exc:
            self._fail(exc)
        return bool(cur.rowcount == 1)

    def buffered(self) -> BufferedTransaction:
        """This transaction with write-behind for batch work (imports): see
        `saleflow.store.bulk`; call its `flush()` before committing."""
        from .bulk import BufferedTransaction

        return BufferedTransaction(self, self._cur, self._sql, self._where)

    def close(self) -> None:
        with suppress(Exception):
            self._cur.close()


def is_broken(conn: Connection) -> bool:
    """Whether the driver says the server dropped this connection."""
    if conn.closed or conn.invalidated:
        return False
    raw = conn.connection.dbapi_connection
    return bool(getattr(raw, "broken", False) or getattr(raw, "closed", False) is True)
