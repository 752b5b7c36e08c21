"""Storage for webhooks: their settings, and the entries each still owes.

Layer 3, beside `service.py`: the only SQL of webhooks.  The delivery loop
(`saleflow.webhooks.delivery`) calls these functions and never holds a
transaction while it sends: each function here is one short transaction.
docs/webhooks.md explains the design; in short:

- `webhooks.cursor`: every entry at or below it that matches the hook's
  filters has been queued (`enqueue` moves it, compare-and-set, so two
  workers never queue the same range twice);
- `webhook_queue`: one row per entry owed.  Per (hook, lead) the live rows
  (``failed_at IS NULL``) are a queue sent in order, and exactly one of
  them, the *head*, has `next_at` (when it is due); the others wait with
  ``next_at IS NULL``.  So a lead whose head keeps failing holds up only
  itself, and `claim` finds due heads through an index without looking at
  what waits behind them;
- `claim` leases due heads (``FOR UPDATE SKIP LOCKED`` on PostgreSQL:
  concurrent workers take disjoint heads without waiting for each other)
  and returns each with the entries waiting behind it: the lease on the
  head covers the lead's whole queue, since nothing else can make any of
  them due;
- `record` writes what happened (delivered rows deleted, a failure's
  attempt, back-off and error, or its giving up) and makes the next row
  the head, only if the lease is still the caller's.

Every function that changes a hook's rows (`enqueue`, `record`, `retry`,
`remove_hook`) first locks the hook's row (PostgreSQL ``FOR UPDATE``;
SQLite's writers are serial anyway): they are short, and with it "does
this lead have a live row?" cannot change between the question and the
insert that depends on the answer.  `claim` takes no hook lock; it only
leases rows that are due, and leased rows are touched by their lessee
alone.  The engine's transactions never touch these tables.

Over 500 lines on purpose: the queue's invariant (one head per hook and
lead, moved only under the hook's lock or the caller's lease) is kept by
every function here together; apart, no module could be read alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, delete, exists, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from ..errors import BadInput, NotFound
from ..journal import JournalEntry
from ..records import Store
from .connect import translate
from .schema import journal, webhook_queue, webhooks
from .sql import SqlStore

T = TypeVar("T")
H = webhooks.c
Q = webhook_queue.c
CHUNK = 500  # values bound in one IN (…) list


@dataclass(frozen=True, slots=True)
class Hook:
    """A webhook's settings.  `kinds` and `stages` empty mean every one;
    `secret_env` names the environment variable holding the signing secret
    (None: unsigned).  `cursor` is where queueing has got to."""

    name: str
    url: str
    flow: str | None
    kinds: tuple[str, ...]
    stages: tuple[str, ...]
    secret_env: str | None
    created_at: datetime
    cursor: int = 0

    def settings(self) -> tuple[Any, ...]:
        """What `add` compares to tell "the same webhook again" from a clash."""
        return (self.url, self.flow, self.kinds, self.stages, self.secret_env)

    def matches(self, entry: JournalEntry) -> bool:
        """Whether an entry of the feed (already of the hook's flow and
        kinds: the feed's filters) is one for this hook: its lead's stage
        after the entry is one of `stages`, if any are named."""
        return not self.stages or entry.stage in self.stages


@dataclass(frozen=True, slots=True)
class Pending:
    """One queued entry as `claim` returns it."""

    seq: int
    attempts: int
    queued_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A due head and the entries of its lead queued behind it, in the order
    to send them; leased to `owner` until the lease runs out."""

    hook: str
    lead_id: str
    entries: tuple[Pending, ...]
    owner: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failed attempt to record: the entry, why, and when to try again
    (`next_at`), or None to give it up."""

    seq: int
    error: str
    next_at: datetime | None


@dataclass(frozen=True, slots=True)
class Failure:
    """An entry a webhook gave up on (`webhook failures`)."""

    hook: str
    seq: int
    lead_id: str
    attempts: int
    queued_at: datetime
    first_failed_at: datetime | None
    failed_at: datetime
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Backlog:
    """How much a webhook owes: entries queued (due or waiting), of them
    those that have failed at least once and are retrying, and those given
    up."""

    queued: int = 0
    retrying: int = 0
    failed: int = 0


def _sql(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise TypeError("webhooks need the SQL store")
    return store


def _write(store: Store, run: Callable[[Connection], T]) -> T:
    """`run` in one write transaction (BEGIN IMMEDIATE on SQLite)."""
    sql = _sql(store)
    try:
        with sql.engine.begin() as conn:
            return run(conn)
    except DBAPIError as exc:
        raise translate(exc, sql.where) from exc


def _read(store: Store, run: Callable[[Connection], T]) -> T:
    sql = _sql(store)
    try:
        with sql.engine.connect() as conn:
            return run(conn)
    except DBAPIError as exc:
        raise translate(exc, sql.where) from exc


def _chunks(values: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _lock_hook(conn: Connection, name: str) -> int | None:
    """Lock the hook's row for this transaction; its cursor, None if gone."""
    row = conn.execute(select(H.cursor).where(H.name == name).with_for_update()).first()
    return None if row is None else int(row[0])


def _hook(row: Any) -> Hook:
    kinds = tuple(row.kinds.split(",")) if row.kinds else ()
    stages = tuple(json.loads(row.stages)) if row.stages else ()
    return Hook(row.name, row.url, row.flow, kinds, stages, row.secret_env, row.created_at, int(row.cursor))


# -- settings -------------------------------------------------------------------


def add_hook(store: Store, hook: Hook) -> bool:
    """Store a new webhook with its cursor at the journal's published
    position (it delivers what happens from now on).  False when one of
    that name exists with the same settings (nothing changes); `BadInput`
    when it exists with others."""
    top = _sql(store).high_water()

    def run(conn: Connection) -> bool:
        row = conn.execute(select(webhooks).where(H.name == hook.name)).first()
        if row is not None:
            if _hook(row).settings() == hook.settings():
                return False
            raise BadInput(
                f'a webhook named "{hook.name}" exists with other settings; '
                f'remove it first (saleflow webhook remove "{hook.name}") or choose another name'
            )
        conn.execute(
            insert(webhooks).values(
                name=hook.name,
                url=hook.url,
                flow=hook.flow,
                kinds=",".join(hook.kinds) or None,
                stages=json.dumps(list(hook.stages), ensure_ascii=False) if hook.stages else None,
                secret_env=hook.secret_env,
                created_at=hook.created_at,
                cursor=top,
            )
        )
        return True

    return _write(store, run)


def list_hooks(store: Store) -> list[Hook]:
    stmt = select(webhooks).order_by(H.name)
    return _read(store, lambda conn: [_hook(row) for row in conn.execute(stmt)])


def get_hook(store: Store, name: str) -> Hook:
    stmt = select(webhooks).where(H.name == name)
    row = _read(store, lambda conn: conn.execute(stmt).first())
    if row is None:
        raise NotFound(f'there is no webhook named "{name}" (saleflow webhook list shows them)')
    return _hook(row)


def remove_hook(store: Store, name: str) -> int:
    """Delete a webhook and everything it still owed; how many entries that was."""

    def run(conn: Connection) -> int | None:
        if _lock_hook(conn, name) is None:
            return None
        owed = conn.execute(delete(webhook_queue).where(Q.hook == name)).rowcount
        conn.execute(delete(webhooks).where(H.name == name))
        return int(owed)

    owed = _write(store, run)
    if owed is None:
        raise NotFound(f'there is no webhook named "{name}" (saleflow webhook list shows them)')
    return owed


def backlogs(store: Store) -> dict[str, Backlog]:
    """Every webhook's `Backlog`, by name (webhooks that owe nothing are absent)."""
    live = Q.failed_at.is_(None)
    stmt = select(
        Q.hook,
        func.count().filter(live),
        func.count().filter(and_(live, Q.attempts > 0)),
        func.count().filter(Q.failed_at.is_not(None)),
    ).group_by(Q.hook)
    rows = _read(store, lambda conn: list(conn.execute(stmt)))
    return {row[0]: Backlog(int(row[1]), int(row[2]), int(row[3])) for row in rows}


# -- queueing -------------------------------------------------------------------


def enqueue(
    store: Store, hook: str, read_from: int, cursor: int, found: Sequence[tuple[int, str]], now: datetime
) -> bool:
    """Queue the matching entries `found` ((seq, lead), in seq order) of the
    feed read after `read_from`, and move the hook's cursor to `cursor`.
    False (nothing written) when the cursor is no longer `read_from`:
    another worker queued that range first, or the hook was removed."""

    def run(conn: Connection) -> bool:
        if _lock_hook(conn, hook) != read_from:
            return False
        if found:
            # Entries queued already (a replay over a range still owed).
            present: set[int] = set()
            seqs = [seq for seq, _ in found]
            for chunk in _chunks(seqs):
                present.update(conn.execute(select(Q.seq).where(Q.hook == hook, Q.seq.in_(chunk))).scalars())
            leads = sorted({lead for _, lead in found})
            busy: set[str] = set()
            for part in _chunks(leads):
                stmt = (
                    select(Q.lead_id)
                    .distinct()
                    .where(Q.hook == hook, Q.lead_id.in_(part), Q.failed_at.is_(None))
                )
                busy.update(conn.execute(stmt).scalars())
            rows = []
            for seq, lead in found:
                if seq in present:
                    continue
                rows.append(
                    {
                        "hook": hook,
                        "seq": seq,
                        "lead_id": lead,
                        "queued_at": now,
                        "next_at": None if lead in busy else now,
                        "attempts": 0,
                    }
                )
                busy.add(lead)
            if rows:
                conn.execute(insert(webhook_queue), rows)
        conn.execute(update(webhooks).where(H.name == hook).values(cursor=cursor))
        return True

    return _write(store, run)


def claim(
    store: Store,
    hook: str,
    *,
    now: datetime,
    wall: datetime,
    lease_until: datetime,
    owner: str,
    limit: int,
    run: int,
) -> list[Claim]:
    """Lease at most `limit` heads of `hook` due at `now` (engine clock)
    whose lease, if any, ran out before `wall` (the wall clock), each with
    up to `run - 1` entries of its lead waiting behind it."""

    def take(conn: Connection) -> list[Claim]:
        due = (
            select(Q.seq, Q.lead_id, Q.attempts, Q.queued_at)
            .where(
                Q.hook == hook,
                Q.next_at <= now,
                Q.failed_at.is_(None),
                (Q.lease_until.is_(None)) | (Q.lease_until < wall),
            )
            .order_by(Q.next_at, Q.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        heads = list(conn.execute(due))
        if not heads:
            return []
        for part in _chunks([row.seq for row in heads]):
            conn.execute(
                update(webhook_queue)
                .where(Q.hook == hook, Q.seq.in_(part))
                .values(lease_owner=owner, lease_until=lease_until)
            )
        behind: dict[str, list[Pending]] = {row.lead_id: [] for row in heads}
        if run > 1:
            for part in _chunks(sorted(behind)):
                ranked = (
                    select(
                        Q.seq,
                        Q.lead_id,
                        Q.attempts,
                        Q.queued_at,
                        func.row_number().over(partition_by=Q.lead_id, order_by=Q.seq).label("n"),
                    )
                    .where(
                        Q.hook == hook,
                        Q.lead_id.in_(part),
                        Q.failed_at.is_(None),
                        Q.next_at.is_(None),
                    )
                    .subquery()
                )
                stmt = (
                    select(ranked.c.seq, ranked.c.lead_id, ranked.c.attempts, ranked.c.queued_at)
                    .where(ranked.c.n < run)
                    .order_by(ranked.c.lead_id, ranked.c.seq)
                )
                for row in conn.execute(stmt):
                    behind[row.lead_id].append(Pending(int(row.seq), int(row.attempts), row.queued_at))
        return [
            Claim(
                hook,
                row.lead_id,
                (Pending(int(row.seq), int(row.attempts), row.queued_at), *behind[row.lead_id]),
                owner,
            )
            for row in heads
        ]

    return _write(store, take)


def record(
    store: Store,
    claimed: Claim,
    *,
    delivered: Collection[int],
    failed: Attempt | None,
    now: datetime,
) -> bool:
    """Write the outcome of sending a claim: the `delivered` entries are
    done, `failed` (the first entry that failed; those after it were not
    sent) gets its attempt; then the lead's next live entry is its head.
    False (nothing written) when the lease is no longer the caller's: it
    ran out and another worker took the lead's queue over, and its outcome
    counts."""
    head = claimed.entries[0].seq

    def run(conn: Connection) -> bool:
        if _lock_hook(conn, claimed.hook) is None:
            return False
        owner = conn.execute(select(Q.lease_owner).where(Q.hook == claimed.hook, Q.seq == head)).first()
        if owner is None or owner[0] != claimed.owner:
            return False
        mine = Q.hook == claimed.hook
        for part in _chunks(sorted(delivered)):
            conn.execute(delete(webhook_queue).where(mine, Q.seq.in_(part)))
        conn.execute(
            update(webhook_queue).where(mine, Q.seq == head).values(lease_owner=None, lease_until=None)
        )
        if failed is not None:
            conn.execute(
                update(webhook_queue)
                .where(mine, Q.seq == failed.seq)
                .values(
                    attempts=Q.attempts + 1,
                    last_error=failed.error,
                    last_attempt_at=now,
                    first_failed_at=func.coalesce(Q.first_failed_at, now),
                    next_at=failed.next_at,
                    failed_at=None if failed.next_at is not None else now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
        _promote(conn, claimed.hook, now, [claimed.lead_id])
        return True

    return _write(store, run)


def _promote(conn: Connection, hook: str, now: datetime, leads: Sequence[str] | None = None) -> None:
    """Make the lowest live entry of each lead of `hook` (of `leads`, if
    given) that has no head its head, due `now`."""
    other = webhook_queue.alias("other")
    O_ = other.c
    lowest = (
        select(func.min(O_.seq))
        .where(O_.hook == Q.hook, O_.lead_id == Q.lead_id, O_.failed_at.is_(None))
        .scalar_subquery()
    )
    has_head = exists().where(
        O_.hook == Q.hook, O_.lead_id == Q.lead_id, O_.failed_at.is_(None), O_.next_at.is_not(None)
    )
    base = update(webhook_queue).where(
        Q.hook == hook, Q.failed_at.is_(None), Q.next_at.is_(None), Q.seq == lowest, ~has_head
    )
    if leads is None:
        conn.execute(base.values(next_at=now))
        return
    for part in _chunks(list(leads)):
        conn.execute(base.where(Q.lead_id.in_(part)).values(next_at=now))


# -- failures and retries ---------------------------------------------------------


def failures(store: Store, hook: str | None = None, *, limit: int | None = None) -> list[Failure]:
    """The entries given up on, of one webhook or all, by hook and seq."""
    stmt: Select[Any] = select(
        Q.hook, Q.seq, Q.lead_id, Q.attempts, Q.queued_at, Q.first_failed_at, Q.failed_at, Q.last_error
    ).where(Q.failed_at.is_not(None))
    if hook is not None:
        stmt = stmt.where(Q.hook == hook)
    stmt = stmt.order_by(Q.hook, Q.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return _read(store, lambda conn: [Failure(*row) for row in conn.execute(stmt)])


def retry(store: Store, hook: str, now: datetime, since: int | None = None) -> tuple[int, int]:
    """Re-queue what `hook` gave up on (with `since`: only entries after it,
    and move the cursor back to `since`, so that every matching entry after
    it is delivered again).  Returns (entries re-queued, the old cursor)."""

    def run(conn: Connection) -> tuple[int, int] | None:
        cursor = _lock_hook(conn, hook)
        if cursor is None:
            return None
        stmt = update(webhook_queue).where(Q.hook == hook, Q.failed_at.is_not(None))
        if since is not None:
            stmt = stmt.where(Q.seq > since)
        revived = conn.execute(
            stmt.values(
                failed_at=None,
                next_at=None,
                attempts=0,
                first_failed_at=None,
                queued_at=now,
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
        _promote(conn, hook, now)
        if since is not None and since < cursor:
            conn.execute(update(webhooks).where(H.name == hook).values(cursor=since))
        return int(revived), cursor

    done = _write(store, run)
    if done is None:
        raise NotFound(f'there is no webhook named "{hook}" (saleflow webhook list shows them)')
    return done


# -- what to send -----------------------------------------------------------------


def entries_at(store: Store, seqs: Collection[int]) -> dict[int, JournalEntry]:
    """The journal entries at these positions, by seq."""
    wanted = sorted(seqs)

    def run(conn: Connection) -> dict[int, JournalEntry]:
        found: dict[int, JournalEntry] = {}
        for part in _chunks(wanted):
            for row in conn.execute(select(*journal.c).where(journal.c.seq.in_(part))):
                entry = JournalEntry(*row)
                found[entry.seq] = entry
        return found

    return _read(store, run) if wanted else {}


__all__ = [
    "Attempt",
    "Backlog",
    "Claim",
    "Failure",
    "Hook",
    "Pending",
    "add_hook",
    "backlogs",
    "claim",
    "enqueue",
    "entries_at",
    "failures",
    "get_hook",
    "list_hooks",
    "record",
    "remove_hook",
    "retry",
]
