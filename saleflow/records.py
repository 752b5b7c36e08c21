"""Runtime values and the `Store` protocol.

Layer 1.  These are what the engine reads and writes: a `Lead` and its
`EventRecord`s, its `JournalEntry`s (journal.py), the `Blocker` that says why a move is
refused.  `Store`/`Transaction` is the contract `store.py` implements with
SQLAlchemy; the engine only ever talks to the protocol, so the engine never
learns SQL and the store never learns flow semantics.

All times are timezone-aware UTC `datetime`s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from .errors import NO_SPAN, Span
from .journal import JournalEntry

# The kinds of move of SPEC §3 (`JournalEntry.kind`), plus "create" (the
# first entry of a lead made here) and "migrate" (a `migrated` entry): an
# entry with a kind of move is what SPEC §3 calls an audit entry, and what
# plain `history` shows.
MoveKind = Literal["create", "advance", "skip", "recycle", "exit", "force", "import", "migrate"]

FieldValue = int | float | str | bool | None


@dataclass(slots=True)
class Lead:
    """One lead as stored.  `revision` is the optimistic-lock counter."""

    id: str
    flow: str
    version: int
    stage: str
    fields: dict[str, FieldValue]
    cycle: int
    entered_at: datetime
    created_at: datetime
    updated_at: datetime
    score: float = 0
    revision: int = 0
    # When one of its time-dependent conditions could next change value
    # (`due.due_time`): `tick` and the workers visit it then; None: never.
    due_at: datetime | None = None
    # What `on_enter` callbacks raised after the operation that returned
    # this lead committed (`Engine.on_enter`); not stored.
    callback_errors: tuple[Exception, ...] = field(default=(), compare=False, repr=False)

    def copy(self, revision: int | None = None) -> Lead:
        """A separate copy (the fields dict is shared: it is replaced, never
        mutated), optionally at another revision."""
        return Lead(
            self.id,
            self.flow,
            self.version,
            self.stage,
            self.fields,
            self.cycle,
            self.entered_at,
            self.created_at,
            self.updated_at,
            self.score,
            self.revision if revision is None else revision,
            self.due_at,
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened to a lead; `count` > 1 records a batch at once."""

    name: str
    at: datetime
    channel: str | None = None
    content: str | None = None
    count: int = 1
    cycle: int = 1


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why a move is refused: a code, a human sentence, where in the flow,
    and the values that were read."""

    code: str
    message: str
    span: Span = field(default=NO_SPAN, compare=False)
    values: Mapping[str, Any] = field(default_factory=dict, compare=False)


# A §3 audit entry is a journal entry with a move (SPEC §6).
AuditEntry = JournalEntry


@dataclass(frozen=True, slots=True)
class MoveVerdict:
    """A move defined from the lead's stage and whether it can be made now."""

    kind: str
    to: str
    allowed: bool
    blockers: tuple[Blocker, ...] = ()
    automatic: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "kind": self.kind,
            "allowed": self.allowed,
            "failing": [b.message for b in self.blockers],
            "automatic": self.automatic,
        }


@dataclass(frozen=True, slots=True)
class LeadView:
    """What `Engine.lead()` returns: the stored lead plus what is derived
    from its flow (team, score, current-cycle event counts, next moves)."""

    id: str
    flow: str
    version: int
    stage: str
    team: str | None
    score: float
    fields: Mapping[str, FieldValue]
    events: Mapping[str, int]
    cycle: int
    entered_at: datetime
    created_at: datetime
    next: tuple[MoveVerdict, ...] = ()
    sla_days: float | None = None  # the stage's SLA, when it has one
    due_at: datetime | None = None  # when that SLA runs out for this lead
    overdue: bool = False  # past it now

    def to_json(self) -> dict[str, Any]:
        sla = (
            None
            if self.sla_days is None
            else {
                "days": self.sla_days,
                "due_at": None if self.due_at is None else self.due_at.isoformat(),
                "overdue": self.overdue,
            }
        )
        return {
            "id": self.id,
            "flow": self.flow,
            "version": self.version,
            "stage": self.stage,
            "team": self.team,
            "score": self.score,
            "fields": dict(self.fields),
            "events": dict(self.events),
            "cycle": self.cycle,
            "entered_at": self.entered_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "next": [v.to_json() for v in self.next],
            "sla": sla,
        }


@dataclass(frozen=True, slots=True)
class SlaBreach:
    lead_id: str
    flow: str
    stage: str
    cycle: int
    entered_at: datetime
    due_at: datetime
    detected_at: datetime


class Transaction(Protocol):
    """One database transaction.  Leaving the `with` block commits; an
    exception rolls back.  On SQLite the transaction is `BEGIN IMMEDIATE`;
    on PostgreSQL `lock_lead` is `SELECT … FOR UPDATE`."""

    def lock_lead(self, lead_id: str) -> Lead | None: ...
    def latest_version(self, flow: str) -> int | None:
        """The newest deployed version of `flow` (None if none), read in
        this transaction: a new lead starts on what is deployed when it
        is written, with no query on another connection."""
        ...

    def insert_lead(self, lead: Lead) -> None: ...
    def update_lead(self, lead: Lead) -> Lead:
        """Write `lead` if its stored revision is still `lead.revision`;
        returns it with the revision bumped; raises `Conflict` otherwise."""
        ...

    def events(self, lead_id: str, cycle: int) -> list[EventRecord]: ...
    def journal(self, lead_id: str) -> list[JournalEntry]:
        """The lead's journal as this transaction sees it (written entries;
        those appended here are sealed and written at the commit)."""
        ...

    def insert_event(self, lead_id: str, event: EventRecord) -> None: ...
    def append(self, entry: JournalEntry) -> None:
        """Append `entry` to its lead's journal.  The store gives it its
        `seq`, `lead_seq`, `prev_hash` and hash (`JournalEntry.seal`) no
        later than the commit, in the order entries were appended."""
        ...

    def lock_stage(self, flow: str, stage: str) -> None:
        """Serialise capacity decisions for one stage (advisory lock on PG)."""
        ...

    def count_in_stage(self, flow: str, stage: str) -> int: ...
    def add_waiting(self, lead_id: str, flow: str, stage: str, score: float, at: datetime) -> None: ...
    def remove_waiting(self, lead_id: str) -> None: ...
    def waiting(self, flow: str, stage: str, limit: int) -> list[str]:
        """Lead ids waiting for room in `stage`, highest score first."""
        ...

    def waiting_line(self, flow: str, stage: str, limit: int) -> list[tuple[Lead, datetime]]:
        """Up to `limit` leads waiting for room in `stage` (read, not
        locked), each with when it started waiting; best stored score first."""
        ...

    def record_breach(self, breach: SlaBreach) -> bool:
        """Store a breach once per (lead, stage, cycle, entry); True if new."""
        ...

    def claim_due(self, now: datetime, flow: str | None = None, limit: int = 500) -> list[Lead]:
        """Up to `limit` leads with ``due_at <= now`` (of `flow`), earliest
        due first, then by id; on PostgreSQL locked for this transaction
        with ``FOR UPDATE SKIP LOCKED`` (leads another transaction holds are
        skipped), on SQLite the plain select.  See `SqlTransaction.claim_due`."""
        ...


GroupValue = str | None

# One move as a report reads it: (lead id, cycle, from stage, to stage, kind
# of move, time in microseconds since the epoch).  Plain tuples, as the
# driver returns them: a report reads hundreds of thousands.
ReportEntry = tuple[str, int, str | None, str, str, int]


class History(NamedTuple):
    """One lead for a report: its group value, its moves in order, and its
    events with a channel as (lead id, time, channel), oldest first."""

    lead_id: str
    group: GroupValue
    entries: list[ReportEntry]
    touches: list[tuple[str, int, str]]


class CountRow(NamedTuple):
    """How many leads of a group are in a stage now."""

    group: GroupValue
    stage: str
    leads: int


class BatchTransaction(Transaction, Protocol):
    """A `Transaction` with write-behind for batch work (`store/bulk.py`):
    `prefetch` reads (and on PostgreSQL locks) a chunk's leads at once,
    writes are held until `flush`."""

    def prefetch(self, ids: Iterable[str]) -> None: ...
    def flush(self) -> None: ...


@runtime_checkable
class Batching(Protocol):
    """A transaction that offers write-behind (`SqlTransaction`)."""

    def buffered(self) -> BatchTransaction: ...


@runtime_checkable
class ReportSource(Protocol):
    """The reads reports are built from (`store/reporting.py`)."""

    def iter_histories(
        self,
        flow: str,
        *,
        group: str | None = None,
        group_default: Any = None,
        touches: bool = False,
        chunk: int = 2000,
    ) -> Iterator[list[History]]: ...

    def stage_counts(
        self, flow: str, *, group: str | None = None, group_default: Any = None
    ) -> list[CountRow]: ...

    def lead_versions(self, flow: str | None = None) -> list[tuple[str, int]]: ...

    def overdue_counts(self, flow: str, version: int, cutoffs: Mapping[str, datetime]) -> dict[str, int]: ...

    def iter_overdue(
        self, flow: str, version: int, cutoffs: Mapping[str, datetime], chunk: int = 1000
    ) -> Iterator[list[Lead]]: ...

    def sla_breach_counts(
        self, flow: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, int]: ...


# Where a store is opened when no URL is given: `--db`, `SALEFLOW_DB`,
# `Engine.open`, `open_store`, the service and the migrations all default to it.
DEFAULT_URL = "sqlite:///saleflow.db"


class Store(Protocol):
    url: str

    def transaction(self) -> AbstractContextManager[Transaction]: ...
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
        (version, created).  Known content returns its version; changed
        content must declare a version above every deployed one (`BadInput`
        otherwise).  `identity_of(source)` gives the identity of a stored
        source whose hash is of another kind (see `identity.py`)."""
        ...

    def flow_source(self, name: str, version: int | None = None) -> tuple[int, str, str]:
        """(version, source, path) of a deployed flow; latest when version is None."""
        ...

    def latest_version(self, name: str) -> int:
        """The newest deployed version of flow `name` (`NotFound` if none)."""
        ...

    def flow_names(self) -> list[str]: ...
    def get_lead(self, lead_id: str) -> Lead | None: ...
    def count_leads(self, flow: str | None = None, stage: str | None = None) -> int:
        """How many leads there are (of a flow, in a stage)."""
        ...

    def iter_leads(
        self,
        *,
        flow: str | None = None,
        stages: Sequence[str] | None = None,
        chunk: int = 1000,
    ) -> Iterator[list[Lead]]:
        """Leads in id order, a chunk (list) at a time: memory stays flat."""
        ...

    def count_due(self, now: datetime, flow: str | None = None) -> int:
        """How many leads (of a flow) are due at `now`."""
        ...

    def iter_due(self, now: datetime, flow: str | None = None, chunk: int = 500) -> Iterator[list[Lead]]:
        """The leads with ``due_at <= now`` (of `flow`), in id order, a chunk
        (list) at a time through the due index; see `SqlStore.iter_due`."""
        ...

    def journal(self, lead_id: str) -> list[JournalEntry]:
        """A lead's journal entries, oldest first."""
        ...

    def iter_journal(self, chunk: int = 1000) -> Iterator[list[JournalEntry]]:
        """Every journal entry ordered by (lead_id, lead_seq), in chunks."""
        ...

    def high_water(self) -> int:
        """The journal's published position: every entry at or below it
        is committed, or rolled back never to appear (0 when empty)."""
        ...

    @property
    def key(self) -> bytes | None:
        """The key the journal is sealed with (None: plain SHA-256)."""
        ...

    def check_key(self) -> None:
        """Raise `WrongKey` if the journal is sealed with another key."""
        ...

    def events_of(self, lead_id: str) -> list[EventRecord]: ...
    def lead_flows(self, ids: Iterable[str]) -> dict[str, tuple[str, int, datetime]]:
        """The flow, version and last change (the later of its entry into
        its stage and its last update) of each of `ids` that is a stored
        lead, in a few queries."""
        ...

    # Reads for dry runs (migration.py).
    def deployed_versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, content hash, source) of every deployed version of `name`."""
        ...

    def waiting_of(self, flow: str) -> list[tuple[str, str, float, datetime]]:
        """The waiting lines of `flow`: (lead, stage, score, since)."""
        ...

    def events_of_leads(self, lead_ids: Sequence[str]) -> dict[str, list[EventRecord]]:
        """The events of each lead (all cycles, oldest first), in few queries."""
        ...

    def breaches_of(self, lead_id: str) -> list[SlaBreach]:
        """A lead's recorded SLA breaches."""
        ...

    def close(self) -> None: ...
