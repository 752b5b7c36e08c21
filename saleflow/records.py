"""Runtime values and the `Store` protocol.

Layer 1.  These are what the engine reads and writes: a `Lead` and its
`EventRecord`s, the `AuditEntry` chain, the `Blocker` that says why a move is
refused.  `Store`/`Transaction` is the contract `store.py` implements with
SQLAlchemy; the engine only ever talks to the protocol, so the engine never
learns SQL and the store never learns flow semantics.

All times are timezone-aware UTC `datetime`s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from .errors import NO_SPAN, Span
from .jsontext import canonical, quote

MoveKind = Literal["create", "advance", "skip", "recycle", "exit", "force", "import", "migrate"]
MOVE_KINDS: tuple[str, ...] = ("create", "advance", "skip", "recycle", "exit", "force", "import", "migrate")

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


@dataclass(slots=True)
class AuditEntry:
    """One change of stage.  `hash` chains it to the lead's previous entry.

    Read-only by convention, not frozen: an import builds one per move (some
    25,000 a run) and a frozen dataclass costs several times as much to
    build.  Changing a stored entry changes nothing stored, and an edited
    row fails `audit verify`."""

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
    values: Mapping[str, Any]
    prev_hash: str
    hash: str = ""
    # `canonical(values)` as `sealed` hashed it: the store writes this text
    # instead of encoding the values again.  Not a column and not copied by
    # `dataclasses.replace`; None on entries read back.
    values_text: str | None = field(default=None, init=False, repr=False, compare=False)

    def payload(self) -> dict[str, Any]:
        """The hashed content: everything but the hash itself."""
        return {
            "lead_id": self.lead_id,
            "seq": self.seq,
            "from": self.from_stage,
            "to": self.to_stage,
            "kind": self.kind,
            "actor": self.actor,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "flow": self.flow,
            "version": self.version,
            "cycle": self.cycle,
            "values": dict(self.values),
            "prev_hash": self.prev_hash,
        }

    @classmethod
    def sealed(cls, *values: Any, **fields: Any) -> AuditEntry:
        """A new entry with its hash computed from its content (once)."""
        entry = cls(*values, **fields)
        entry.values_text = entry.canonical_values()
        entry.hash = entry.compute_hash()
        return entry

    def canonical_values(self) -> str:
        """`canonical(values)`: the text the hash covers (kept by `sealed`)."""
        if self.values_text is not None:
            return self.values_text
        values = self.values
        return canonical(values if type(values) is dict else dict(values)) if values else "{}"

    def compute_hash(self) -> str:
        """SHA-256 of `canonical(self.payload())`.  The text is written out
        key by key in sorted order, which is a third cheaper than building
        the payload and encoding it (`tests/test_jsontext.py` proves them
        equal); a value of an unexpected type takes the general way."""
        try:
            text = self._canonical_text()
        except TypeError:  # not a str where one is expected
            text = canonical(self.payload())
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _canonical_text(self) -> str:
        seq, version, cycle = self.seq, self.version, self.cycle
        if type(seq) is not int or type(version) is not int or type(cycle) is not int:
            raise TypeError("a counter that is not an int")
        return _CANONICAL_ENTRY % (
            quote(self.actor),
            _quoted_time(self.at),
            cycle,
            quote(self.flow),
            "null" if self.from_stage is None else quote(self.from_stage),
            quote(self.kind),
            quote(self.lead_id),
            quote(self.prev_hash),
            "null" if self.reason is None else quote(self.reason),
            seq,
            quote(self.to_stage),
            self.canonical_values(),
            version,
        )


# `canonical(payload)` of an entry, its keys in sorted order; each %s is a
# JSON text (a quoted string, null, an object), each %d an int.
_CANONICAL_ENTRY = (
    '{"actor":%s,"at":%s,"cycle":%d,"flow":%s,"from":%s,"kind":%s,"lead_id":%s,'
    '"prev_hash":%s,"reason":%s,"seq":%d,"to":%s,"values":%s,"version":%d}'
)

# The last time quoted, with its text: a lead's entries, and all the leads
# of an import without times, share one instant.  Replaced whole (a tuple),
# so a thread never sees a half-written pair.
_last_time: tuple[datetime | None, str] = (None, "")


def _quoted_time(at: datetime) -> str:
    global _last_time
    last = _last_time
    if last[0] is at:
        return last[1]
    text = quote(at.isoformat())
    _last_time = (at, text)
    return text


GENESIS_HASH = "0" * 64


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
    def insert_event(self, lead_id: str, event: EventRecord) -> None: ...
    def last_audit(self, lead_id: str) -> AuditEntry | None: ...
    def append_audit(self, entry: AuditEntry) -> AuditEntry:
        """Store `entry` (its seq, prev_hash and hash already computed)."""
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

    def record_breach(self, breach: SlaBreach) -> bool:
        """Store a breach once per (lead, stage, cycle, entry); True if new."""
        ...


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

    def history(self, lead_id: str) -> list[AuditEntry]: ...
    def iter_audit(self, chunk: int = 1000) -> Iterator[list[AuditEntry]]:
        """Every audit entry ordered by (lead_id, seq), in chunks."""
        ...

    def events_of(self, lead_id: str) -> list[EventRecord]: ...
    def close(self) -> None: ...
