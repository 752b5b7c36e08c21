"""The change feed: journal entries in `seq` order, from a cursor on.

Layer 3, beside `sql.py`.  `read_changes(store, since)` returns the entries
with ``since < seq <= store.high_water()`` (optionally of one flow, of some
kinds of entry, at most `limit` of them), read a page at a time: each page
is one query of its own (``seq > last AND seq <= top ORDER BY seq LIMIT
n``, a range scan of the primary key), so memory stays flat and no
snapshot is held between pages.  `JournalWaiter` waits for new entries:
``LISTEN saleflow_journal`` on PostgreSQL (every write transaction notifies
at its commit, `SqlTransaction.write_journal`), a plain sleep on SQLite.

Why the read never skips an entry (SPEC §6, "Change feed"): a consumer
saves the last `seq` it handled and resumes from it, so the feed must never
show an entry after one with a higher `seq` was shown.

- On SQLite one writer at a time holds the database (``BEGIN IMMEDIATE``)
  and counts on from the largest `seq`, so `seq` order is commit order:
  whatever a reader sees is final below it.
- On PostgreSQL `seq` comes from a sequence and transactions commit in any
  order: 11 may be committed and visible while 10 is still in flight, and a
  reader that returned 11 and resumed from it would never see 10.  So the
  read is bounded by `SqlStore.high_water`, never by ``max(seq)``: a writer
  holds the journal's publication lock *shared* from drawing its values to
  its commit, and `high_water` takes it *exclusive* for a moment before it
  reads the sequence's last value `top`.  When it is granted, every value
  at or below `top` was drawn by a transaction that has ended (committed or
  rolled back), and every later writer draws values above `top`.  A
  committed transaction is visible to new snapshots before its locks are
  released, and each page is a new statement (autocommit: a new snapshot)
  taken after `high_water` returned, so every committed entry at or below
  `top` is in it; one that is not was rolled back and will never appear.
  The set ``since < seq <= top`` is therefore final: paging through it by
  `seq` sees exactly it, and the next read, from `top` or from the last
  entry returned, misses nothing and repeats nothing.

`Changes.position` is where to resume: the last entry returned when
`limit` cut the read short, otherwise `top` (a filtered reader need not
read again what it has already passed over).  Entries are never updated
(`audit rekey` re-seals hashes, not positions) nor deleted, so a cursor
stays valid for the life of the database.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from contextlib import suppress
from functools import partial
from typing import Any

from sqlalchemy import BigInteger, Integer, bindparam, select
from sqlalchemy.engine import Connection

from ..journal import JournalEntry
from ..records import Store
from .connect import translate
from .schema import Corrupt, journal
from .sql import SqlStore
from .transaction import JOURNAL_CHANNEL

J = journal.c
PAGE = 500  # entries per query
# How long `JournalWaiter.wait` sleeps between looks on SQLite, and at most
# between wake-ups on PostgreSQL (in case a notification is missed: a
# dropped connection, a writer of an older saleflow).
SQLITE_POLL = 0.5
PG_FALLBACK = 1.0


def _sql(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise TypeError("the change feed needs the SQL store")
    return store


class Changes(Iterator[JournalEntry]):
    """The entries of one read of the feed, in `seq` order (see the module's
    docstring); `position` is the cursor to resume from once it is spent."""

    def __init__(
        self,
        store: SqlStore,
        since: int,
        *,
        flow: str | None = None,
        kinds: Collection[str] | None = None,
        limit: int | None = None,
        page: int = PAGE,
    ) -> None:
        if page < 1:
            raise ValueError("page must be at least 1")
        self.position = since
        self._store = store
        self._left = limit
        self._page = page
        after, top = bindparam("after", type_=BigInteger), bindparam("top", type_=BigInteger)
        stmt = select(*journal.c).where(J.seq > after, J.seq <= top)
        if flow is not None:
            stmt = stmt.where(J.flow == flow)
        if kinds is not None:
            stmt = stmt.where(J.entry.in_(sorted(set(kinds))))
        self._stmt = stmt.order_by(J.seq).limit(bindparam("size", type_=Integer))
        self._entries = self._read()

    def __iter__(self) -> Changes:
        return self

    def __next__(self) -> JournalEntry:
        return next(self._entries)

    def _read(self) -> Iterator[JournalEntry]:
        if self._left is not None and self._left < 1:
            return
        top = self._store.high_water()  # taken at the first next(), not at the call
        while self.position < top:
            size = self._page if self._left is None else min(self._page, self._left)
            params = {"after": self.position, "top": top, "size": size}
            entries = self._store._query(partial(self._fetch, params=params))
            for entry in entries:
                self.position = entry.seq
                if self._left is not None:
                    self._left -= 1
                yield entry
            if self._left is not None and self._left < 1:
                return  # resume after the last entry returned
            if len(entries) < size:
                self.position = top  # every entry up to `top` that matches has been read
                return

    def _fetch(self, conn: Connection, params: dict[str, Any]) -> list[JournalEntry]:
        entries: list[JournalEntry] = []
        try:
            for row in conn.execute(self._stmt, params):
                entries.append(JournalEntry(*row))
        except Corrupt as err:
            # Name the lead of the first row after the last one read.
            after = entries[-1].seq if entries else params["after"]
            culprit = self._stmt.with_only_columns(J.lead_id).limit(1)
            found = conn.execute(culprit, {**params, "after": after}).scalar()
            raise err if found is None else err.naming(found) from None
        return entries


def read_changes(
    store: Store,
    since: int = 0,
    *,
    flow: str | None = None,
    kinds: Collection[str] | None = None,
    limit: int | None = None,
    page: int = PAGE,
) -> Changes:
    """The journal entries after `since` up to the published position, in
    `seq` order (values are the caller's to check: `Engine.changes` does)."""
    return Changes(_sql(store), since, flow=flow, kinds=kinds, limit=limit, page=page)


class JournalWaiter:
    """Waits for new journal entries (``with JournalWaiter(store) as w:
    w.wait()``).  Open it *before* the first read, so that an entry
    committed between that read and the wait wakes it.

    On PostgreSQL it holds a connection of its own (out of the pool, since
    it keeps listening) with ``LISTEN saleflow_journal``; `wait` returns on
    the first notification or after `timeout` seconds, whichever comes
    first, so a missed notification costs at most that delay.  On SQLite,
    which has no notifications, it sleeps `timeout` seconds.

    A cost to know of: PostgreSQL serialises the commits of transactions
    that NOTIFY (a cluster-wide lock held from queueing the notification
    until after the commit record is flushed, `PreCommit_Notify` in
    async.c), so journal writers give up group commit.  Should that bound
    write throughput, drop the NOTIFY from `write_journal`: followers then
    wake at the fallback interval, and nothing else changes."""

    def __init__(self, store: Store) -> None:
        self._store = _sql(store)
        self._raw: Any = None
        self._conn: Any = None

    def __enter__(self) -> JournalWaiter:
        store = self._store
        if store.dialect != "postgresql":
            return self
        try:
            raw = store.engine.raw_connection()
            conn: Any = raw.driver_connection  # psycopg's own connection
            raw.detach()  # never back into the pool: it keeps listening
            self._raw = raw
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"LISTEN {JOURNAL_CHANNEL}")
            self._conn = conn
        except store._errors as exc:
            self.close()
            raise translate(exc, store._where) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, timeout: float | None = None) -> None:
        """Until a writer commits journal entries (PostgreSQL) or `timeout`
        seconds pass."""
        conn = self._conn
        if conn is None:
            time.sleep(SQLITE_POLL if timeout is None else timeout)
            return
        timeout = PG_FALLBACK if timeout is None else timeout
        try:
            notified = conn.notifies(timeout=timeout, stop_after=1)
        except TypeError:  # psycopg before 3.2: no timeout, so poll
            time.sleep(timeout)
            return
        try:
            try:
                woken = any(True for _ in notified)
            finally:
                notified.close()
            if woken:
                # One read serves every commit so far: drop the rest.  (A
                # notification comes after its commit, so the read that
                # follows this sees every entry of those it drops.)
                drain = conn.notifies(timeout=0)
                try:
                    for _ in drain:
                        pass
                finally:
                    drain.close()
        except self._store._errors as exc:
            raise translate(exc, self._store._where) from exc

    def close(self) -> None:
        raw, self._raw, self._conn = self._raw, None, None
        if raw is not None:
            with suppress(Exception):
                raw.close()


__all__ = ["Changes", "JournalWaiter", "read_changes"]
