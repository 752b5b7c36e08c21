"""The journal: every change to a lead, appended and hash-chained (SPEC §6).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Creates ``journal`` (with the sequence ``journal_seq`` on PostgreSQL) and
``journal_seal``, moves what a 0001/0002 database holds into the journal
(docs/journal.md, "Upgrade in place"), and drops ``audit``.  Types are
spelled out here, as in 0001, so that this migration keeps creating the same
tables whatever the live code becomes.

Over 500 lines on purpose: a migration is frozen once released (databases
in the field ran it), so it carries its own copies of what it converts and
is never split or edited.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def _time() -> sa.types.TypeEngine[Any]:
    return sa.String(32).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    if pg:
        op.execute("CREATE SEQUENCE journal_seq AS bigint START WITH 1 INCREMENT BY 1 NO CYCLE")
    op.create_table(
        "journal",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False
        ),
        sa.Column("lead_id", _key(), nullable=False),
        sa.Column("lead_seq", sa.Integer(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("from_stage", sa.Text(), nullable=True),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("recorded_at", _time(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("flow", _key(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_journal"),
        sa.UniqueConstraint("lead_id", "lead_seq", name="uq_journal_lead_id_lead_seq"),
    )
    op.create_index("ix_journal_flow_stage_at", "journal", ["flow", "stage", "at"])
    op.create_table(
        "journal_seal",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_journal_seal"),
    )
    _move_history_into_journal(bind)
    op.drop_index("ix_audit_flow_to_stage_at", table_name="audit")
    op.drop_table("audit")


# ---------------------------------------------------------------------------
# Moving a 0001/0002 database's history into the journal
# ---------------------------------------------------------------------------
#
# Written against the 0001 tables as they are (column names, JSON as text on
# SQLite, timestamptz on PostgreSQL), not against `saleflow.store`: the live
# store describes the newest schema.  Only the sealing is the live code's
# (`JournalEntry.seal`), so that `audit verify` checks the converted
# entries with the very function that checks new ones.
#
# Choices (docs/journal.md, "Upgrade in place"):
# - A lead's entries are its `created` entry, then its old audit entries,
#   events and SLA breaches merged in time order: the old entries keep their
#   order (seq), and an event or a breach at the same instant as a move comes
#   before it (an event is what made the lead move); among themselves events
#   come before breaches at one instant, each in stored order.
# - `recorded_at` is the entry's own `at` (0001 kept no write time), and the
#   final `set` entry's `at` and `recorded_at` are the lead's `updated_at`
#   (or its last entry's `at`, if later).  The upgrade thus reads no clock:
#   upgrading the same rows gives the same journal, hashes included, on
#   SQLite and on PostgreSQL (the tests compare them).
# - Entries 0001 kept no actor for (events, breaches, the stored fields) are
#   by actor "upgrade".

CHUNK = 1000  # leads read per round trip (keyset pagination)
ROWS = 5000  # journal rows per executemany
SHOWN = 20  # leads a refusal names before "and N more"

UPGRADE_ACTOR = "upgrade"
FIELDS_REASON = "fields as stored before the journal (0001 kept no field history)"

_GENESIS = "0" * 64
_OLD_KINDS = ("create", "advance", "skip", "recycle", "exit", "force", "import", "migrate")


class _Lead(NamedTuple):
    id: str
    flow: str
    version: int
    stage: str
    fields: dict[str, Any]
    cycle: int
    updated_at: datetime


class _Audit(NamedTuple):
    lead_id: str
    seq: int
    from_stage: str | None
    to_stage: str
    kind: str
    actor: str
    reason: str | None
    at: datetime
    flow: str
    version: int
    cycle: int
    values: Any
    prev_hash: str
    hash: str


class _Event(NamedTuple):
    name: str
    at: datetime
    channel: str | None
    content: str | None
    times: int  # events.count (`count` is a tuple's method)
    cycle: int


class _Breach(NamedTuple):
    stage: str
    cycle: int
    entered_at: datetime
    due_at: datetime
    detected_at: datetime


# A lead, its audit entries, events and breaches, and why they cannot be read.
_History = tuple[_Lead, list[_Audit], list[_Event], list[_Breach], str | None]

# What reading a value saleflow never wrote raises (a time that does not
# parse, JSON that does not decode: `json.JSONDecodeError` is a ValueError).
_UNREADABLE = (ValueError, TypeError, OverflowError)


def _move_history_into_journal(bind: sa.engine.Connection) -> None:
    """Write the journal of every lead from the 0001 tables (issue 9 item 7).

    Leads are read in id order, `CHUNK` at a time, with their audit
    entries, events and SLA breaches; a lead's old audit chain is verified
    under the 0001 rules before anything of it is converted.  If any lead
    fails, the upgrade is refused with a `StoreError` naming the leads (the
    migration runs in one transaction, so the database is left as it was):
    an upgrade must not launder an edit.
    """
    from saleflow.errors import StoreError
    from saleflow.journal import key_fingerprint, key_from_environment

    key = key_from_environment()
    reader = _Reader(bind)
    writer = _Writer(bind, key)
    failures = reader.orphans()
    failed = len(failures)  # the first SHOWN are kept, to be named: memory stays flat
    for chunk in reader.chunks():
        for lead, audit, events, breaches, unreadable in chunk:
            problem = unreadable or _old_chain_problem(lead, audit)
            if problem is not None:
                failed += 1
                if len(failures) < SHOWN:
                    failures.append((lead.id, problem))
            elif not failed:  # after a failure only verify: nothing will be kept
                writer.add(_journal_of(lead, audit, events, breaches))
        if not failed:
            writer.flush()
    if failed:
        raise StoreError(_refusal(failures, failed))
    written = writer.finish()
    if written:
        # Sealed here, so the seal says with what.  An empty journal stays
        # unclaimed: its first write seals it with that writer's key.
        bind.execute(
            sa.text("INSERT INTO journal_seal (id, fingerprint) VALUES (1, :fingerprint)"),
            {"fingerprint": key_fingerprint(key)},
        )


# -- reading the 0001 tables -------------------------------------------------


def _utc(value: Any) -> datetime:
    """A stored time as an aware UTC datetime (ISO text on SQLite)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Reader:
    """The 0001 rows, a chunk of leads at a time, in id order."""

    def __init__(self, bind: sa.engine.Connection) -> None:
        self.bind = bind
        self.sqlite = bind.dialect.name == "sqlite"

    def _json(self, value: Any) -> Any:
        # JSON is text on SQLite; psycopg hands PostgreSQL's json/jsonb parsed.
        return json.loads(value) if self.sqlite and isinstance(value, str | bytes) else value

    def orphans(self) -> list[tuple[str, str]]:
        """Rows of a lead that does not exist (0001 leaves foreign keys to
        SQLite's pragma): they would be lost, so they refuse the upgrade."""
        found: list[tuple[str, str]] = []
        for table, what in (
            ("audit", "audit entries"),
            ("events", "events"),
            ("sla_breaches", "SLA breaches"),
        ):
            rows = self.bind.execute(
                sa.text(
                    f"SELECT DISTINCT lead_id FROM {table} t "  # a fixed table name
                    "WHERE NOT EXISTS (SELECT 1 FROM leads WHERE leads.id = t.lead_id) ORDER BY lead_id"
                )
            )
            found.extend((lead_id, f"has {what} but the lead does not exist") for (lead_id,) in rows)
        return found

    def chunks(self) -> Iterator[list[_History]]:
        """Each lead with its rows, and why they cannot be read (None: they
        can): a time or a JSON value saleflow never wrote refuses the
        upgrade like an edit, naming the lead."""
        after: str | None = None
        while True:
            rows = self.bind.execute(
                sa.text(
                    "SELECT id, flow, version, stage, fields, cycle, updated_at FROM leads "
                    + ("" if after is None else "WHERE id > :after ")
                    + "ORDER BY id LIMIT :limit"
                ),
                {"after": after, "limit": CHUNK} if after is not None else {"limit": CHUNK},
            ).all()
            if not rows:
                return
            unreadable: dict[str, str] = {}
            leads: list[_Lead] = []
            for id, flow, version, stage, fields, cycle, updated_at in rows:
                try:
                    lead = _Lead(id, flow, version, stage, self._json(fields), cycle, _utc(updated_at))
                    if not isinstance(lead.fields, dict):
                        raise TypeError("fields that are not a JSON object")
                except _UNREADABLE as exc:
                    unreadable.setdefault(id, f"its stored row cannot be read ({exc})")
                    lead = _Lead(id, flow, version, stage, {}, cycle, datetime.min.replace(tzinfo=UTC))
                leads.append(lead)
            span = {"first": leads[0].id, "last": leads[-1].id}
            where = "WHERE lead_id >= :first AND lead_id <= :last ORDER BY lead_id, "
            audit: dict[str, list[_Audit]] = {}
            for row in self.bind.execute(
                sa.text(
                    "SELECT lead_id, seq, from_stage, to_stage, kind, actor, reason, at, flow, version, "
                    'cycle, "values", prev_hash, hash FROM audit ' + where + "seq"
                ),
                span,
            ):
                lead_id, seq, from_stage, to_stage, kind, actor, reason, at = row[:8]
                flow, version, cycle, values, prev_hash, hash_ = row[8:]
                try:
                    entry = _Audit(
                        lead_id, seq, from_stage, to_stage, kind, actor, reason, _utc(at),
                        flow, version, cycle, self._json(values), prev_hash, hash_,
                    )  # fmt: skip
                except _UNREADABLE as exc:
                    unreadable.setdefault(lead_id, f"audit entry {seq} cannot be read ({exc})")
                    continue
                audit.setdefault(entry.lead_id, []).append(entry)
            events: dict[str, list[_Event]] = {}
            for lead_id, name, at, channel, content, count, cycle in self.bind.execute(
                sa.text(
                    "SELECT lead_id, name, at, channel, content, count, cycle FROM events " + where + "at, id"
                ),
                span,
            ):
                try:
                    event = _Event(name, _utc(at), channel, content, count, cycle)
                except _UNREADABLE as exc:
                    unreadable.setdefault(lead_id, f'its event "{name}" cannot be read ({exc})')
                    continue
                events.setdefault(lead_id, []).append(event)
            breaches: dict[str, list[_Breach]] = {}
            for lead_id, stage, cycle, entered_at, due_at, detected_at in self.bind.execute(
                sa.text(
                    "SELECT lead_id, stage, cycle, entered_at, due_at, detected_at FROM sla_breaches "
                    + where
                    + "detected_at, entered_at, stage, cycle"
                ),
                span,
            ):
                try:
                    breach = _Breach(stage, cycle, _utc(entered_at), _utc(due_at), _utc(detected_at))
                except _UNREADABLE as exc:
                    unreadable.setdefault(lead_id, f'its SLA breach in "{stage}" cannot be read ({exc})')
                    continue
                breaches.setdefault(lead_id, []).append(breach)
            yield [
                (
                    lead,
                    audit.get(lead.id, []),
                    events.get(lead.id, []),
                    breaches.get(lead.id, []),
                    unreadable.get(lead.id),
                )
                for lead in leads
            ]
            if len(rows) < CHUNK:
                return
            after = leads[-1].id


# -- verifying the 0001 chains ------------------------------------------------


def _old_hash(entry: _Audit) -> str:
    """The 0001 `AuditEntry` hash: SHA-256 of the canonical JSON of the
    entry without its hash (keys sorted, no spaces, ASCII only, `str()` of
    anything JSON has no type for)."""
    payload = {
        "lead_id": entry.lead_id,
        "seq": entry.seq,
        "from": entry.from_stage,
        "to": entry.to_stage,
        "kind": entry.kind,
        "actor": entry.actor,
        "reason": entry.reason,
        "at": entry.at.isoformat(),
        "flow": entry.flow,
        "version": entry.version,
        "cycle": entry.cycle,
        "values": entry.values,
        "prev_hash": entry.prev_hash,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _old_chain_problem(lead: _Lead, entries: list[_Audit]) -> str | None:
    """Why a lead's 0001 audit chain does not verify, or None.  The checks
    of 0001's `audit verify` that need no compiled flow: numbering, links,
    hashes, each entry starting where the last ended, a create or import
    first, cycles growing exactly at recycles, and the replay ending where
    the lead is stored.  (Whether each move is one the flow defines is left
    to the journal's `audit verify`, which asks the compiled flow.)"""
    if not entries:
        return "it has no audit entries"
    prev_hash, stage, cycle = _GENESIS, None, 1
    for number, entry in enumerate(entries, start=1):
        where = f"audit entry {entry.seq}"
        if entry.seq != number:
            return f"{where} should be number {number}: an entry is missing or inserted"
        if entry.prev_hash != prev_hash:
            return f"{where} does not chain to the entry before it"
        if not isinstance(entry.values, dict) or _old_hash(entry) != entry.hash:
            return f"{where} does not match its hash: it was edited"
        if entry.from_stage != stage:
            return f'{where} starts in "{entry.from_stage}" but the lead was in "{stage}"'
        if entry.kind not in _OLD_KINDS:
            return f'{where} has the unknown kind "{entry.kind}"'
        if number == 1 and entry.kind not in ("create", "import"):
            return f"{where} is a {entry.kind}, but a lead's history starts with a create or an import"
        if number > 1 and entry.kind == "create":
            return f"{where} is a create, but only the first entry may be"
        if entry.kind == "recycle":
            cycle += 1
        if entry.cycle != cycle:
            return f"{where} is in cycle {entry.cycle}, but the recycles before it give cycle {cycle}"
        prev_hash, stage = entry.hash, entry.to_stage
    last = entries[-1]
    if (last.flow, last.version) != (lead.flow, lead.version):
        return (
            f'its history ends in flow "{last.flow}" version {last.version}, but the lead is stored '
            f'in flow "{lead.flow}" version {lead.version}'
        )
    if last.to_stage != lead.stage:
        return f'its history ends in "{last.to_stage}", but the lead is stored in "{lead.stage}"'
    if cycle != lead.cycle:
        return f"its history gives cycle {cycle}, but the lead is stored in cycle {lead.cycle}"
    return None


def _refusal(failures: list[tuple[str, str]], failed: int) -> str:
    """One sentence naming the (first) leads that refuse the upgrade."""
    shown = "; ".join(f'lead "{lead_id}": {problem}' for lead_id, problem in failures[:SHOWN])
    more = f"; and {failed - SHOWN} more leads" if failed > SHOWN else ""
    leads = "a lead's history does not" if failed == 1 else f"{failed} leads' histories do not"
    return (
        f"cannot upgrade the database to the journal, because {leads} verify under the 0001 audit "
        f"rules ({shown}{more}), and an upgrade must not launder an edit; the database is unchanged: "
        "restore it from a backup or correct those rows, then open it again"
    )


# -- converting ----------------------------------------------------------------


def _entry(
    lead_id: str,
    entry: str,
    *,
    kind: str | None = None,
    from_stage: str | None = None,
    stage: str,
    cycle: int,
    at: datetime,
    actor: str = UPGRADE_ACTOR,
    reason: str | None = None,
    flow: str,
    version: int,
    data: dict[str, Any],
) -> Any:
    """A journal entry (`entry`: its kind of entry; `kind`: its kind of
    move), not yet sealed; written when it happened (`at`)."""
    from saleflow.journal import JournalEntry

    return JournalEntry(
        seq=0,
        lead_id=lead_id,
        lead_seq=0,
        entry=entry,
        kind=kind,
        from_stage=from_stage,
        stage=stage,
        cycle=cycle,
        at=at,
        recorded_at=at,
        actor=actor,
        reason=reason,
        flow=flow,
        version=version,
        data=data,
    )


def _journal_of(lead: _Lead, audit: list[_Audit], events: list[_Event], breaches: list[_Breach]) -> list[Any]:
    """A lead's journal entries, oldest first, not yet sealed.

    The old audit entries keep their order; events and breaches go between
    them in time order, before a move at the same instant.  A breach is
    recorded in the stage and cycle it is about, while the lead is there:
    if a move out of that stay is dated before the breach was detected (a
    back-dated ``--at`` after a tick), the breach goes just before it."""
    first = audit[0]
    entries = [
        _entry(
            lead.id,
            "created",
            kind=first.kind,
            stage=first.to_stage,
            cycle=first.cycle,
            at=first.at,
            actor=first.actor,
            reason=first.reason,
            flow=first.flow,
            version=first.version,
            data={"fields": {}, "upgraded": True},
        )
    ]
    stage, cycle, flow, version = first.to_stage, first.cycle, first.flow, first.version

    def event_entry(event: _Event) -> Any:
        data = {"event": event.name, "count": event.times, "channel": event.channel, "content": event.content}
        return _entry(
            lead.id,
            "event",
            stage=stage,
            cycle=event.cycle,
            at=event.at,
            flow=flow,
            version=version,
            data=data,
        )

    def breach_entry(breach: _Breach) -> Any:
        data = {"entered_at": breach.entered_at.isoformat(), "due_at": breach.due_at.isoformat()}
        return _entry(
            lead.id,
            "sla_breach",
            stage=breach.stage,
            cycle=breach.cycle,
            at=breach.detected_at,
            flow=flow,
            version=version,
            data=data,
        )

    # Events, then breaches, at one instant; each in stored (time) order.
    others: list[tuple[datetime, int, int]] = sorted(
        [(event.at, 0, i) for i, event in enumerate(events)]
        + [(breach.detected_at, 1, i) for i, breach in enumerate(breaches)]
    )
    taken = 0
    recorded: set[int] = set()  # breaches written
    moves: list[_Audit | None] = [*audit[1:], None]
    for move in moves:
        # What happened up to this move (an event at its instant made it), then the move.
        while taken < len(others) and (move is None or others[taken][0] <= move.at):
            _, rank, i = others[taken]
            taken += 1
            if rank == 0:
                entries.append(event_entry(events[i]))
            elif i not in recorded:
                recorded.add(i)
                entries.append(breach_entry(breaches[i]))
        if move is None:
            break
        if (move.to_stage, move.cycle) != (stage, cycle):  # the lead leaves its stay
            for i, breach in enumerate(breaches):
                stay = (breach.stage, breach.cycle) == (stage, cycle) and breach.entered_at <= move.at
                if stay and i not in recorded:
                    recorded.add(i)
                    entries.append(breach_entry(breach))
        if move.kind == "migrate":
            data: dict[str, Any] = {"to_version": move.version}
            if "from_version" in move.values:
                data["from_version"] = move.values["from_version"]
        else:
            data = {"values": move.values}
        entries.append(
            _entry(
                lead.id,
                "migrated" if move.kind == "migrate" else "moved",
                kind=move.kind,
                from_stage=move.from_stage,
                stage=move.to_stage,
                cycle=move.cycle,
                at=move.at,
                actor=move.actor,
                reason=move.reason,
                flow=move.flow,
                version=move.version,
                data=data,
            )
        )
        stage, cycle, flow, version = move.to_stage, move.cycle, move.flow, move.version
    if lead.fields:
        at = max(lead.updated_at, *(entry.at for entry in entries))
        fields = {name: [None, value] for name, value in lead.fields.items()}
        entries.append(
            _entry(
                lead.id,
                "set",
                stage=stage,
                cycle=cycle,
                at=at,
                reason=FIELDS_REASON,
                flow=flow,
                version=version,
                data={"fields": fields, "upgraded": True},
            )
        )
    return entries


class _Writer:
    """Seals entries (`JournalEntry.seal`, the live rules) and writes them
    with executemany; global `seq` from ``journal_seq`` on PostgreSQL, counted
    from 1 on SQLite."""

    def __init__(self, bind: sa.engine.Connection, key: bytes | None) -> None:
        self.bind, self.key = bind, key
        self.pg = bind.dialect.name == "postgresql"
        self.pending: list[list[Any]] = []
        self.count = 0
        self.next_seq = 1
        self.written = 0
        # Positional parameters through the driver (`exec_driver_sql`): an
        # upgrade writes every entry ever made, and SQLAlchemy's per-row
        # parameter processing would cost a third of the time.
        mark = "%s" if self.pg else "?"
        data = f"CAST({mark} AS json)" if self.pg else mark
        self.insert = (
            "INSERT INTO journal (seq, lead_id, lead_seq, entry, kind, from_stage, stage, cycle, at, "
            "recorded_at, actor, reason, flow, version, data, prev_hash, hash) VALUES ("
            + ", ".join([mark] * 14 + [data, mark, mark])
            + ")"
        )

    def add(self, entries: list[Any]) -> None:
        self.pending.append(entries)
        self.count += len(entries)

    def _seqs(self, count: int) -> list[int]:
        if self.pg:
            values = self.bind.execute(
                sa.text("SELECT nextval('journal_seq') FROM generate_series(1, :count)"), {"count": count}
            ).scalars()
            return sorted(values)
        start, self.next_seq = self.next_seq, self.next_seq + count
        return list(range(start, self.next_seq))

    def _time(self, at: datetime) -> Any:
        # SQLite keeps times as fixed-width ISO text (`UtcDateTime`).
        return at if self.pg else at.isoformat(timespec="microseconds")

    def flush(self) -> None:
        if not self.count:
            return
        seqs = iter(self._seqs(self.count))
        rows: list[tuple[Any, ...]] = []
        for entries in self.pending:
            prev_hash = _GENESIS
            for lead_seq, entry in enumerate(entries, start=1):
                entry.seal(next(seqs), lead_seq, prev_hash, self.key)
                prev_hash = entry.hash
                rows.append(
                    (
                        entry.seq,
                        entry.lead_id,
                        entry.lead_seq,
                        entry.entry,
                        entry.kind,
                        entry.from_stage,
                        entry.stage,
                        entry.cycle,
                        self._time(entry.at),
                        self._time(entry.recorded_at),
                        entry.actor,
                        entry.reason,
                        entry.flow,
                        entry.version,
                        entry.canonical_data(),  # the text the hash covers
                        entry.prev_hash,
                        entry.hash,
                    )
                )
        for start in range(0, len(rows), ROWS):
            self.bind.exec_driver_sql(self.insert, rows[start : start + ROWS])
        self.written += len(rows)
        self.pending, self.count = [], 0

    def finish(self) -> int:
        """New entries continue after the converted ones; how many were written."""
        if self.pg and self.written:
            self.bind.execute(sa.text("SELECT setval('journal_seq', (SELECT max(seq) FROM journal))"))
        return int(self.written)


def downgrade() -> None:
    raise NotImplementedError("the journal cannot be folded back into the 0001 audit table")
