"""A scratch store in plain dicts: the `Transaction` protocol and the
`ReportSource` reads of records.py, in memory, for one process.

Layer 3, beside the SQL store.  `saleflow simulate` replays a recorded
journal through the engine's own `Work` (runtime/moves.py) into one of these,
then builds the simulated report from it: no SQL, no sealing, no disk.

What it keeps, per lead: the lead itself, its events (by cycle, in time
order, and all of them in the order they were recorded), and what a report
reads of its journal (the `created` and `moved` entries as `ReportEntry`
tuples); the capacity waiting lines and the SLA breaches.  The full journal
is kept only when asked (`MemoryStore(journal=True)`, for tests that compare
it with a SQL store's); a simulation does not need it and would hold every
entry of the history.

Semantics are the SQL store's, method by method (tests/test_memory_store.py
runs the same operations through both and compares what they hold): events
in (time, recording) order, waiting lines best stored score first, then the
time a lead started waiting, then its id; a lead already waiting for the
same stage keeps its place; a breach is recorded once per lead, stage,
cycle and entry into the stage; `update_lead` refuses a stale revision.

There is no rollback: the store serves one single-threaded replay, which
discards it on any error.  A `with store.transaction()` block left by an
exception marks the store broken, and every later transaction refuses.
"""

from __future__ import annotations

import json
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import Conflict
from ..journal import JournalEntry
from ..records import CountRow, EventRecord, History, Lead, ReportEntry, SlaBreach

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """A time as whole microseconds since the epoch (as the SQL store's
    report reads compute them: exactly)."""
    return (moment - _EPOCH) // _MICROSECOND


def _at(event: EventRecord) -> datetime:
    return event.at


def _micros(touch: tuple[str, int, str]) -> int:
    return touch[1]


@dataclass(slots=True)
class _Kept:
    """One lead and what is kept of it."""

    lead: Lead
    placed: tuple[str, str]  # (flow, stage) it is counted in: where it was last saved
    cycles: dict[int, list[EventRecord]] = field(default_factory=dict)  # time order
    events: list[EventRecord] = field(default_factory=list)  # recording order
    # Its events with a channel as a report reads them, (lead, micros,
    # channel), in time order (equal times: in recording order).
    touches: list[tuple[str, int, str]] = field(default_factory=list)
    moves: list[ReportEntry] = field(default_factory=list)  # created and moved entries
    journal: list[JournalEntry] = field(default_factory=list)  # only with journal=True


class MemoryStore:
    """Leads, events, waiting lines and breaches in dicts (see the module
    docstring).  `transaction()` gives the one `MemoryTransaction`."""

    def __init__(self, *, journal: bool = False) -> None:
        self.keeps_journal = journal
        self._leads: dict[str, _Kept] = {}
        self._counts: Counter[tuple[str, str]] = Counter()  # (flow, stage) -> leads
        # (flow, stage) -> the line, in order: (-score, since, lead) ascending
        self._lines: dict[tuple[str, str], list[tuple[float, datetime, str]]] = {}
        self._waiting: dict[
            str, tuple[tuple[str, str], tuple[float, datetime, str]]
        ] = {}  # lead -> line, place
        self._breaches: dict[tuple[str, str, int, datetime], SlaBreach] = {}
        self._seq = 0
        self._broken = False
        self._tx = MemoryTransaction(self)

    @contextmanager
    def transaction(self) -> Iterator[MemoryTransaction]:
        if self._broken:
            raise RuntimeError("this scratch store was abandoned by an error and cannot be used again")
        try:
            yield self._tx
        except BaseException:
            self._broken = True
            raise

    # -- reads beside the transaction (what tests and reports look at) --------
    def get_lead(self, lead_id: str) -> Lead | None:
        kept = self._leads.get(lead_id)
        return None if kept is None else kept.lead.copy()

    def lead_ids(self) -> list[str]:
        return sorted(self._leads)

    def events_of(self, lead_id: str) -> list[EventRecord]:
        """Every event of a lead, all cycles, oldest first."""
        kept = self._leads.get(lead_id)
        return [] if kept is None else sorted(kept.events, key=_at)

    def breaches_of(self, lead_id: str) -> list[SlaBreach]:
        """A lead's recorded SLA breaches, in the order they were detected
        (recorded, for equal times)."""
        found = [b for b in self._breaches.values() if b.lead_id == lead_id]
        return sorted(found, key=lambda b: b.detected_at)

    def waiting_of(self, flow: str) -> list[tuple[str, str, float, datetime]]:
        """The waiting lines of `flow`: (lead, stage, score, since), by lead."""
        out: list[tuple[str, str, float, datetime]] = []
        for (line_flow, stage), line in self._lines.items():
            if line_flow == flow:
                out.extend((lead_id, stage, -score, since) for score, since, lead_id in line)
        return sorted(out)

    def journal(self, lead_id: str) -> list[JournalEntry]:
        """A lead's journal entries, oldest first (kept with journal=True)."""
        if not self.keeps_journal:
            raise RuntimeError("this scratch store keeps no journal (MemoryStore(journal=True) does)")
        kept = self._leads.get(lead_id)
        return [] if kept is None else list(kept.journal)

    # -- ReportSource ---------------------------------------------------------
    def iter_histories(
        self,
        flow: str,
        *,
        group: str | None = None,
        group_default: Any = None,
        touches: bool = False,
        chunk: int = 2000,
    ) -> Iterator[list[History]]:
        """Every lead of `flow`, in id order, with its moves (and, with
        `touches`, its events that have a channel), `chunk` leads at a time."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        ids = sorted(lead_id for lead_id, kept in self._leads.items() if kept.lead.flow == flow)
        for start in range(0, len(ids), chunk):
            out = []
            for lead_id in ids[start : start + chunk]:
                kept = self._leads[lead_id]
                value = _group_text(kept.lead, group, group_default)
                found = list(kept.touches) if touches else []
                out.append(History(lead_id, value, list(kept.moves), found))
            yield out

    def stage_counts(
        self, flow: str, *, group: str | None = None, group_default: Any = None
    ) -> list[CountRow]:
        """How many leads of `flow` are in each stage now."""
        counted: Counter[tuple[str | None, str]] = Counter()
        for kept in self._leads.values():
            lead = kept.lead
            if lead.flow == flow:
                counted[(_group_text(lead, group, group_default), lead.stage)] += 1
        return [CountRow(g, stage, n) for (g, stage), n in counted.items()]

    def lead_versions(self, flow: str | None = None) -> list[tuple[str, int]]:
        """The (flow, version) pairs that have leads."""
        pairs = {(k.lead.flow, k.lead.version) for k in self._leads.values()}
        return sorted(p for p in pairs if flow is None or p[0] == flow)

    def _overdue(self, flow: str, version: int, cutoffs: Mapping[str, datetime]) -> Iterator[Lead]:
        for kept in self._leads.values():
            lead = kept.lead
            if lead.flow == flow and lead.version == version:
                cutoff = cutoffs.get(lead.stage)
                if cutoff is not None and lead.entered_at < cutoff:
                    yield lead

    def overdue_counts(self, flow: str, version: int, cutoffs: Mapping[str, datetime]) -> dict[str, int]:
        """Leads of `flow` `version` per stage that entered it before the
        stage's cutoff (now minus its SLA)."""
        return dict(Counter(lead.stage for lead in self._overdue(flow, version, cutoffs)))

    def iter_overdue(
        self, flow: str, version: int, cutoffs: Mapping[str, datetime], chunk: int = 1000
    ) -> Iterator[list[Lead]]:
        """Those leads themselves, in id order, a chunk at a time."""
        found = sorted((lead.copy() for lead in self._overdue(flow, version, cutoffs)), key=lambda x: x.id)
        for start in range(0, len(found), chunk):
            yield found[start : start + chunk]

    def sla_breach_counts(
        self, flow: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, int]:
        """Recorded SLA breaches per stage whose SLA ran out in the period."""
        return dict(
            Counter(
                b.stage
                for b in self._breaches.values()
                if b.flow == flow
                and (since is None or b.due_at >= since)
                and (until is None or b.due_at < until)
            )
        )


def _group_text(lead: Lead, group: str | None, default: Any) -> str | None:
    """The lead's value of `group` as text, as PostgreSQL's JSON-to-text
    extraction spells it (the report normalises both backends' spellings)."""
    if group is None:
        return None
    value = lead.fields.get(group)
    if value is None:
        value = default
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


class MemoryTransaction:
    """The `Transaction` protocol over a `MemoryStore`.  Changes are seen at
    once (there is one writer and no rollback: see the module docstring);
    locks are no-ops, as one thread holds the store.

    `lock_lead`, `update_lead` and `waiting_line` hand out the stored lead
    itself, not a copy (a replay saves a lead a million times; three copies
    per operation were a tenth of its time).  So a caller that changes a
    lead must save it before anything else reads it, which `Work` does:
    every change it makes to a lead is followed by `update_lead`, and a
    refused request changes nothing.  `update_lead` stores a new object at
    the next revision, so the one given to it is stale after it, as with
    the SQL store, and the stage counts follow saves only."""

    __slots__ = ("_store",)

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def lock_lead(self, lead_id: str) -> Lead | None:
        kept = self._store._leads.get(lead_id)
        return None if kept is None else kept.lead  # the stored lead itself: see the class

    def latest_version(self, flow: str) -> int | None:
        # This store holds no flows; the newest version its leads are on.
        versions = [v for f, v in self._store.lead_versions(flow)]
        return max(versions) if versions else None

    def insert_lead(self, lead: Lead) -> None:
        store = self._store
        if lead.id in store._leads:
            raise Conflict(f'lead "{lead.id}" was created at the same time by another process')
        store._leads[lead.id] = _Kept(lead.copy(), (lead.flow, lead.stage))
        store._counts[(lead.flow, lead.stage)] += 1

    def update_lead(self, lead: Lead) -> Lead:
        store = self._store
        kept = store._leads.get(lead.id)
        if kept is None or kept.lead.revision != lead.revision:
            raise Conflict(
                f'lead "{lead.id}" was changed by another process (revision {lead.revision} is stale)'
            )
        placed = (lead.flow, lead.stage)
        if kept.placed != placed:  # counted where it was saved, not where a change left it
            store._counts[kept.placed] -= 1
            store._counts[placed] += 1
            kept.placed = placed
        new = lead.copy(revision=lead.revision + 1)
        kept.lead = new
        return new

    def events(self, lead_id: str, cycle: int) -> list[EventRecord]:
        kept = self._store._leads.get(lead_id)
        if kept is None:
            return []
        found = kept.cycles.get(cycle)
        return [] if found is None else list(found)

    def journal(self, lead_id: str) -> list[JournalEntry]:
        return self._store.journal(lead_id)

    def insert_event(self, lead_id: str, event: EventRecord) -> None:
        kept = self._store._leads.get(lead_id)
        if kept is None:
            raise Conflict(f'lead "{lead_id}" does not exist (an event needs its lead)')
        kept.events.append(event)
        insort(kept.cycles.setdefault(event.cycle, []), event, key=_at)
        if event.channel is not None:
            touch = (lead_id, micros(event.at), event.channel)
            touches = kept.touches
            if touches and touches[-1][1] > touch[1]:
                insort(touches, touch, key=_micros)  # an event back-dated behind others
            else:
                touches.append(touch)

    def append(self, entry: JournalEntry) -> None:
        store = self._store
        kept = store._leads.get(entry.lead_id)
        if kept is None:
            raise Conflict(f'lead "{entry.lead_id}" does not exist (a journal entry needs its lead)')
        if entry.entry == "created" or entry.entry == "moved":
            kept.moves.append(
                (
                    entry.lead_id,
                    entry.cycle,
                    entry.from_stage,
                    entry.stage,
                    entry.kind or "",
                    micros(entry.at),
                )
            )
        if store.keeps_journal:
            store._seq += 1
            kept.journal.append(replace(entry, seq=store._seq, lead_seq=len(kept.journal) + 1))

    def lock_stage(self, flow: str, stage: str) -> None:
        return None  # one thread holds the store

    def count_in_stage(self, flow: str, stage: str) -> int:
        return self._store._counts[(flow, stage)]

    def add_waiting(self, lead_id: str, flow: str, stage: str, score: float, at: datetime) -> None:
        """Queue a lead for room in `stage`; a lead already waiting for the
        same stage keeps its place in time and takes the new score."""
        store = self._store
        key = (flow, stage)
        since = at
        found = store._waiting.get(lead_id)
        if found is not None:
            if found[0] == key:
                since = found[1][1]
            self.remove_waiting(lead_id)
        place = (-score, since, lead_id)
        insort(store._lines.setdefault(key, []), place)
        store._waiting[lead_id] = (key, place)

    def remove_waiting(self, lead_id: str) -> None:
        store = self._store
        found = store._waiting.pop(lead_id, None)
        if found is not None:
            line = store._lines[found[0]]
            del line[bisect_left(line, found[1])]

    def waiting(self, flow: str, stage: str, limit: int) -> list[str]:
        """Highest score first; equal scores in the order they started waiting."""
        return [lead_id for _, _, lead_id in self._store._lines.get((flow, stage), [])[:limit]]

    def waiting_line(self, flow: str, stage: str, limit: int) -> list[tuple[Lead, datetime]]:
        """Up to `limit` leads waiting for `stage`, each with the time it
        started waiting; best stored score first."""
        leads = self._store._leads
        line = self._store._lines.get((flow, stage), [])
        return [(leads[lead_id].lead, since) for _, since, lead_id in line[:limit]]

    def claim_due(self, now: datetime, flow: str | None = None, limit: int = 500) -> list[Lead]:
        """Up to `limit` leads due at `now` (of `flow`), earliest due first,
        then by id: the protocol's claim, by a scan (a replay ticks leads on
        its own schedule and never claims; one thread holds the store, so
        there is nothing to skip)."""
        due = [
            kept.lead
            for kept in self._store._leads.values()
            if kept.lead.due_at is not None and kept.lead.due_at <= now and flow in (None, kept.lead.flow)
        ]
        due.sort(key=lambda lead: (lead.due_at or now, lead.id))
        return [lead.copy() for lead in due[:limit]]

    def record_breach(self, breach: SlaBreach) -> bool:
        key = (breach.lead_id, breach.stage, breach.cycle, breach.entered_at)
        breaches = self._store._breaches
        if key in breaches:
            return False
        breaches[key] = breach
        return True


__all__ = ["MemoryStore", "MemoryTransaction", "micros"]
