"""`SqlStore` and `SqlTransaction`: the `Store` protocol on SQLAlchemy.

A transaction is one pooled connection: ``BEGIN IMMEDIATE`` on SQLite (the
write lock is taken before anything is read, so writers queue on the busy
timeout instead of failing on a lock upgrade), row locks (``SELECT … FOR
UPDATE``) and advisory locks on PostgreSQL; the revision check in
`update_lead` guards both.  Reads outside a transaction (`get_lead`,
`history`, `iter_leads`) are single statements in autocommit: no BEGIN or
COMMIT round trips, never blocking a writer; batch reads page by key, one
chunk per query, so memory stays flat and no long snapshot is held.  Reports
that need one consistent snapshot over several queries use `read`.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from ..errors import BadInput, Conflict, NotFound, WrongKey
from ..journal import GENESIS_HASH, JournalEntry, key_fingerprint, key_from_environment
from ..model.identity import is_identity
from ..records import DEFAULT_URL, EventRecord, Lead, SlaBreach, Store, Transaction
from .connect import (
    BEGIN_OPTION,
    advisory_key,
    autocommit,
    check_sqlite_file,
    db_errors,
    describe,
    ensure_schema,
    make_engine,
    parse_url,
    sqlite_file,
    translate,
)
from .exporting import ExportQueries
from .reporting import ReportQueries
from .schema import JOURNAL_SEQUENCE, Corrupt, events, flows, journal, journal_seal, leads, waiting
from .statements import EVENT_COLUMNS, LEAD_UPDATED, Compiled, Statements, read_leads, statements

if TYPE_CHECKING:
    from .bulk import BufferedTransaction

T = TypeVar("T")
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


def deployed_as(
    name: str,
    declared_version: int,
    content_hash: str,
    existing: Sequence[Sequence[Any]],
    identity_of: Callable[[str], str | None] | None,
) -> int | None:
    """What deploying content `content_hash` at `declared_version` means
    against the deployed rows `existing` (version, hash, source): the
    version it already is, None when it is new and may be stored at its
    declared version, or `BadInput` naming the version to use.  Shared by
    `deploy_flow` and the dry run (`deployed_versions`)."""
    for version, known_hash, known_source in existing:
        if known_hash == content_hash:
            return int(version)
        legacy = identity_of is not None and not is_identity(known_hash)
        if legacy and identity_of(known_source) == content_hash:  # type: ignore[misc]
            return int(version)
    latest = max((int(version) for version, _, _ in existing), default=0)
    if declared_version <= latest:
        taken = any(int(version) == declared_version for version, _, _ in existing)
        why = (
            "is already deployed with other content"
            if taken
            else f"is below the latest deployed version {latest}"
        )
        raise BadInput(
            f'flow "{name}" version {declared_version} {why}; raise its version to '
            f'{latest + 1} ("flow {name} version {latest + 1}") to deploy this change'
        )
    return None


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
        if _is_broken(self.connection):
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


# The one row of `journal_seal`.
SEAL_ROW = 1
_SEAL_READ = "SELECT fingerprint FROM journal_seal WHERE id = 1"
_SEAL_CLAIM = "INSERT INTO journal_seal (id, fingerprint) VALUES (1, %s) ON CONFLICT (id) DO NOTHING"


class Seal:
    """Which key seals a store's journal, checked against the store's key.

    `journal_seal` holds the key's fingerprint (`key_fingerprint`).  A
    write with a key of another fingerprint is refused (`WrongKey`) rather
    than mixing seals in one chain.  A database without the row has not
    been sealed yet: the first write claims it for its key.

    Checked once per store, at its first write of journal entries, not at
    every transaction: the row changes only by `audit rekey`, which must
    run with the writers stopped (a process that stays open across a
    rekey keeps the key it checked; it is refused at its next open)."""

    __slots__ = ("checked", "fingerprint", "where")

    def __init__(self, key: bytes | None, where: str) -> None:
        self.fingerprint = key_fingerprint(key)
        self.where = where
        self.checked = False

    def check_writing(self, cur: Any, pg: bool) -> None:
        """In a write transaction: claim the row if there is none, refuse a
        write with another key.  `cur` is a driver cursor."""
        claim = _SEAL_CLAIM if pg else _SEAL_CLAIM.replace("%s", "?")
        # ON CONFLICT DO NOTHING: two first writers at once both succeed,
        # and both read the row the first one committed.
        cur.execute(claim, (self.fingerprint,))
        cur.execute(_SEAL_READ)
        row = cur.fetchone()
        self.refuse_other(None if row is None else row[0])
        self.checked = True

    def refuse_other(self, sealed: str | None, reading: bool = False) -> None:
        """Raise `WrongKey` if `sealed` (a fingerprint, None: not sealed
        yet) is not this store's key's.  `reading`: for `audit verify`,
        whose user may be right about the key."""
        if sealed is None or sealed == self.fingerprint:
            return
        message = wrong_key_message(self.where, sealed, self.fingerprint)
        if reading:
            # journal_seal is a guard against mistakes, not a seal itself:
            # whoever can write the journal can write it too.
            message += (
                "; if SALEFLOW_AUDIT_KEY is right as it is, the journal was re-sealed or its "
                "seal changed behind saleflow's back"
            )
        raise WrongKey(message)


def wrong_key_message(where: str, sealed: str, fingerprint: str) -> str:
    """The one sentence for a journal sealed with another key than ours."""
    unkeyed = key_fingerprint(None)
    if sealed == unkeyed:
        return (
            f"the journal of {where} is sealed without a key, but SALEFLOW_AUDIT_KEY is set: unset it, "
            "or move the journal to this key with `saleflow audit rekey`"
        )
    if fingerprint == unkeyed:
        return (
            f"the journal of {where} is sealed with a key, but SALEFLOW_AUDIT_KEY is not set: set it to "
            "the key the journal was sealed with"
        )
    return (
        f"the journal of {where} is sealed with another key: set SALEFLOW_AUDIT_KEY to the key it "
        "was sealed with, or move it to this key with `saleflow audit rekey`"
    )


class SqlStore(ReportQueries, ExportQueries):
    """A saleflow database (the `Store` protocol of records.py); see `open_store`."""

    def __init__(self, url: str, engine: Engine, where: str, key: bytes | None = None) -> None:
        self.url = url
        self._key = key
        self._seal = Seal(key, where)
        self._engine = engine
        self._where = where
        self._sql = statements(engine.dialect)
        self._errors = db_errors(engine)
        self._pinned = threading.local()

    # -- plumbing -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for read-only views (reports)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def _writer(self) -> Connection | None:
        """This thread's write connection, kept between transactions: a pool
        checkout and return per operation cost about a third of a small
        write.  None while it is busy (a transaction inside a transaction
        takes a pooled connection); dropped after any failure."""
        conn: Connection | None = getattr(self._pinned, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._engine.connect()
            self._pinned.conn = conn
        return None if conn.in_transaction() else conn

    def _unpin(self) -> None:
        conn: Connection | None = getattr(self._pinned, "conn", None)
        self._pinned.conn = None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def _begin(self, read: bool) -> tuple[Connection, bool]:
        """A connection in a new transaction, and whether it is the pinned one."""
        try:
            pinned = None if read else self._writer()
            conn = pinned or self._engine.connect()
        except self._errors as exc:
            raise translate(exc, self._where) from exc
        try:
            if read:
                conn.execution_options(**{BEGIN_OPTION: "deferred"})
            conn.begin()  # on SQLite the "begin" event emits BEGIN IMMEDIATE / BEGIN
        except self._errors as exc:
            conn.close()
            raise translate(exc, self._where) from exc
        except BaseException:
            conn.close()
            raise
        return conn, pinned is not None

    @contextmanager
    def _session(self, read: bool) -> Iterator[Connection]:
        """A transaction: committed when the block ends, rolled back on an error."""
        conn, pinned = self._begin(read)
        try:
            yield conn
            conn.commit()
        except self._errors as exc:
            _abandon(conn)
            if pinned:
                self._unpin()
            raise translate(exc, self._where) from exc
        except BaseException:
            _abandon(conn)
            if pinned:
                self._unpin()
            raise
        finally:
            if not pinned:
                conn.close()

    def _query(self, run: Callable[[Connection], T]) -> T:
        """`run` on a connection in autocommit, for reads that are one
        statement each: no BEGIN and COMMIT round trips.  A pooled connection
        the server dropped is replaced once, transparently (reads are safe to
        repeat)."""
        for attempt in (1, 2):
            try:
                conn = autocommit(self._engine.connect())
            except self._errors as exc:
                raise translate(exc, self._where) from exc
            try:
                return run(conn)
            except self._errors as exc:
                broken = _is_broken(conn)
                _abandon(conn)
                if broken and attempt == 1:
                    continue
                raise translate(exc, self._where) from exc
            finally:
                conn.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, stmt: Compiled, params: dict[str, Any]) -> list[list[Any]]:
        """The rows of one precompiled read statement."""

        def run(conn: Connection) -> list[list[Any]]:
            cur = _cursor(conn)
            try:
                return stmt.all(cur, params)
            finally:
                cur.close()

        return self._query(run)

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """One write transaction: commits when the block ends, rolls back when
        it raises.  Database failures surface as `Conflict` (retry) or
        `StoreError`."""
        with self._session(read=False) as conn:
            tx = SqlTransaction(conn, self._sql, self._where, self._key, self._seal)
            try:
                yield tx
                tx.write_journal()
            finally:
                tx.close()

    def high_water(self) -> int:
        """The journal's published position: every entry at or below it is
        committed, or was rolled back and will never appear, so a reader
        that has read everything up to it and resumes above it misses
        nothing (see `SqlTransaction.write_journal` for why).  0 when the
        journal is empty."""

        if not self._sql.pg:
            # One writer at a time, committing in `seq` order: what is
            # visible is final.
            return int(
                self._query(
                    lambda conn: conn.execute(select(func.coalesce(func.max(journal.c.seq), 0))).scalar_one()
                )
            )
        with self._session(read=False) as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({JOURNAL_LOCK})")
            value = conn.exec_driver_sql(
                f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {JOURNAL_SEQUENCE}"
            ).scalar_one()
        return int(value)

    @property
    def key(self) -> bytes | None:
        """The key the journal is sealed with (None: plain SHA-256)."""
        return self._key

    @property
    def where(self) -> str:
        """How messages name this database."""
        return self._where

    def sealed_with(self) -> str | None:
        """The fingerprint in `journal_seal` (`key_fingerprint` of the key
        the journal is sealed with), None if it has not been sealed yet."""
        stmt = select(journal_seal.c.fingerprint).where(journal_seal.c.id == SEAL_ROW)
        return self._query(lambda conn: conn.execute(stmt).scalar())

    def check_key(self) -> None:
        """Raise `WrongKey` (one sentence) if the journal is sealed with
        another key than this store's; a read, for `audit verify`."""
        self._seal.refuse_other(self.sealed_with(), reading=True)

    def forget_seal(self) -> None:
        """Check the key again at the next write (after `audit rekey`)."""
        self._seal = Seal(self._key, self._where)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (one consistent snapshot) for queries the
        protocol does not cover, such as reports: a plain ``BEGIN`` that never
        blocks writers.  Do not write through it."""
        with self._session(read=True) as conn:
            yield conn

    def close(self) -> None:
        self._unpin()
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self._where})"

    # -- flows ----------------------------------------------------------------

    def deploy_flow(
        self,
        name: str,
        declared_version: int,
        content_hash: str,
        source: str,
        path: str,
        at: datetime | None = None,
        *,
        identity_of: Callable[[str], str | None] | None = None,
    ) -> tuple[int, bool]:
        """Register a flow's source at its declared version; returns
        (version, created).

        Content already deployed (the same `content_hash`, or a stored
        source whose `identity_of` is it: rows written before identities
        existed hold a hash of the raw text) returns the version it has.
        Changed content is stored at its declared version, which must be
        above every deployed one: never silently renumbered (SPEC §7)."""
        with self._session(read=False) as conn:
            cur = _cursor(conn)
            try:
                lock = self._sql.advisory_lock
                if lock is not None:
                    lock.execute(cur, {"key": advisory_key("deploy", name)})
                existing = self._sql.flow_versions.all(cur, {"name": name})
                known = deployed_as(name, declared_version, content_hash, existing, identity_of)
                if known is not None:
                    return known, False
                row = {
                    "name": name,
                    "version": declared_version,
                    "content_hash": content_hash,
                    "source": source,
                    "path": path,
                    "deployed_at": at or datetime.now(UTC),
                }
                self._sql.insert_flow.execute(cur, row)
                return declared_version, True
            finally:
                cur.close()

    def flow_source(self, name: str, version: int | None = None) -> tuple[int, str, str]:
        """(version, source, path) of a deployed flow; the latest when version is None."""
        F = flows.c
        stmt = select(F.version, F.source, F.path).where(F.name == name)
        if version is None:
            stmt = stmt.order_by(F.version.desc()).limit(1)
        else:
            stmt = stmt.where(F.version == version)

        def query(conn: Connection) -> tuple[Any, list[Any]]:
            row = conn.execute(stmt).first()
            known = [] if row is not None else list(conn.execute(select(F.version).where(F.name == name)))
            return row, known

        row, known = self._query(query)
        if row is None:
            if not known:
                raise NotFound(f'flow "{name}" is not deployed')
            listed = ", ".join(str(v) for (v,) in sorted(known))
            raise NotFound(f'flow "{name}" has no version {version} (deployed versions: {listed})')
        return int(row[0]), row[1], row[2]

    def latest_version(self, name: str) -> int:
        stmt = select(func.max(flows.c.version)).where(flows.c.name == name)
        found = self._query(lambda conn: conn.execute(stmt).scalar())
        if found is None:
            raise NotFound(f'flow "{name}" is not deployed')
        return int(found)

    def flow_names(self) -> list[str]:
        stmt = select(flows.c.name).distinct().order_by(flows.c.name)
        return self._query(lambda conn: list(conn.execute(stmt).scalars()))

    # -- reads for dry runs (migration.py): nothing here writes ----------------

    def deployed_versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, content hash, source) of every deployed version of `name`."""
        stmt = self._sql.flow_versions
        return [(int(v), h, s) for v, h, s in self._fetch(stmt, {"name": name})]

    def waiting_of(self, flow: str) -> list[tuple[str, str, float, datetime]]:
        """The waiting line of every stage of `flow`: (lead, stage, score, since)."""
        W = waiting.c
        stmt = select(W.lead_id, W.stage, W.score, W.since).where(W.flow == flow).order_by(W.lead_id)
        return self._query(lambda conn: [tuple(row) for row in conn.execute(stmt)])  # type: ignore[misc]

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

    def lead_flows(self, ids: Iterable[str]) -> dict[str, tuple[str, int, datetime]]:
        from .bulk import lead_flows

        return lead_flows(self, ids)

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


def _cursor(conn: Connection) -> Any:
    """A driver cursor of `conn`, for the precompiled statements; close it."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _is_broken(conn: Connection) -> bool:
    """Whether the driver says the server dropped this connection."""
    if conn.closed or conn.invalidated:
        return False
    raw = conn.connection.dbapi_connection
    return bool(getattr(raw, "broken", False) or getattr(raw, "closed", False) is True)


def _abandon(conn: Connection) -> None:
    """Roll back; drop the connection from the pool if the server dropped it."""
    broken = _is_broken(conn)
    with suppress(Exception):
        conn.rollback()
    if broken:
        with suppress(Exception):
            conn.invalidate()


def open_store(url: str = DEFAULT_URL, *, lock_timeout: float = 5.0, key: bytes | None = None) -> SqlStore:
    """Open the saleflow database at `url`, creating or migrating its schema
    on first use.

    `lock_timeout` is how many seconds a writer waits for another one (SQLite
    busy timeout, PostgreSQL ``lock_timeout``) before its transaction fails
    with `Conflict`.  Raises `StoreError`, one sentence, when the database
    cannot be used: a bad URL, an unreachable server, a read-only or
    non-database file, a schema written by a newer saleflow.

    `key` seals the journal (HMAC-SHA256); by default ``SALEFLOW_AUDIT_KEY``,
    and ``b""`` for none whatever the environment says."""
    parsed = parse_url(url)
    where = describe(parsed)
    path = sqlite_file(parsed)
    if path is not None:
        check_sqlite_file(path)
    engine = make_engine(parsed, busy_timeout_ms=max(1, round(lock_timeout * 1000)))
    try:
        ensure_schema(engine, where)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(url, engine, where, key_from_environment() if key is None else key or None)


if TYPE_CHECKING:  # mypy proves the classes implement the protocols of records.py

    def _implements(store: SqlStore, tx: SqlTransaction) -> tuple[Store, Transaction]:
        return store, tx


__all__ = ["SqlStore", "SqlTransaction", "open_store"]
