"""What if: a flow's recorded journal replayed through another flow file
(SPEC §7, `saleflow simulate`).

Layer 5.  The recorded entries of the flow's leads are read from the user's
database in time order (`at`, then `seq`; `SqlStore.iter_recorded`, only
the columns a replay reads) and fed, one by one, to the real engine's
`Work` (runtime/moves.py: the move semantics are the engine's, not a copy)
on a scratch `MemoryStore` (store/memory.py: plain dicts, gone when it
ends): leads created with their first fields, fields set, events, imported
placements, and the moves someone asked for (entries marked
``"requested": true`` by `Work.request`; in journals written before that
mark, the kinds no gate makes on its own: force and exit).  Automatic moves
and SLA breaches are not replayed: FLOW's own gates make them again.

Time passes as it did: between entries the engine ticks a lead at each
midnight (UTC) at which time could open one of the gates automatic
progress tries from its stage — a window closing on one of that window's
events, `days_in_stage`/`days_since…` reaching a number the flow compares
them with, its stage's SLA running out — so a history that was ticked every
midnight (a daily worker) is replayed exactly.  A value that time can only
move the other way is not watched (a window closing under `score >= 60`
with positive points: the score only falls); a lead waiting in a queue is
watched for any change of its score, which orders the queue.  Ticking a
lead when nothing can change is a no-op, so only due leads are visited:
the cost grows with the entries, not with leads times days.

The user's database is only read.  The recorded report and the simulated
one are both built by `saleflow.views.report`; the queue for capacity is
watched as the engine fills and empties it.  On a large history another
process reads the journal and builds the recorded report while this one
replays (views/apart.py); if it fails, this process does it all.

Which moments can change a lead is views/timing.py (`stage_timing`); the
results and their table and page are views/whatif.py; the other process
is views/apart.py.  This module is the replay itself and `simulate`, which
runs it: over 500 lines (near 700), `Replay` about 450 of them, because it
is one piece of state (the scratch store, the clock, every lead's times and
the queues) that each kind of entry updates; split, its halves would share
all of it.  `simulate` and its journal reading (about 150 lines) could
stand in a module of their own.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, Union, cast

from .. import collecting
from ..coerce import coerce
from ..compile import CompiledFlow, compile_flow
from ..errors import BadInput, NotFound, Rejected
from ..journal import JournalEntry
from ..model.flow import Flow
from ..records import EventRecord, FieldValue, Lead, Transaction
from ..runtime.engine import Engine
from ..runtime.moves import FlowLookup, ScoreCache, Work
from ..store import open_store
from ..store.memory import MemoryStore
from .apart import Apart, Lost
from .report import Period, Report
from .report.build import build_report, report_for
from .timing import Timing, stage_timing
from .whatif import Refusal, Simulation, Waiting, render_simulation_html, render_simulation_table

DAY = timedelta(days=1)
ACTOR = "saleflow-simulate"
SCRATCH = "sqlite:///:memory:"
LISTED = 20  # refused requests listed by name (all are counted)
OPS_PER_TRANSACTION = 2000
# From how many leads another process reads the journal and builds the
# recorded report (`simulate`'s `apart`): starting one costs about as much
# as reporting on a few thousand leads.
APART_LEADS = 5000


Entry = Union["Recorded", JournalEntry]  # what a replay is fed


def is_requested(entry: Entry) -> bool:
    """A move someone asked for, not one the gates made."""
    if entry.entry != "moved":
        return False
    if entry.data.get("requested") is True:
        return True
    return entry.kind in ("force", "exit")  # journals from before the mark


def _midnight_after(moment: datetime) -> datetime:
    """The first midnight (UTC) at or after `moment`."""
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if day == moment else day + DAY


@dataclass(slots=True)
class _Lead:
    stage: str
    entered: datetime
    created: datetime
    cycle: int
    events: list[tuple[str, datetime]] = field(default_factory=list)  # (name, at), of the current cycle
    recycles: list[datetime] = field(default_factory=list)


# --------------------------------------------------------------------------
# The watched transaction: the capacity queue as the engine keeps it
# --------------------------------------------------------------------------


class _Watched:
    """A store transaction that notes who joins and leaves the queue."""

    _PASSED = (
        "lock_lead",
        "latest_version",
        "insert_lead",
        "update_lead",
        "events",
        "journal",
        "insert_event",
        "append",
        "lock_stage",
        "count_in_stage",
        "waiting",
        "waiting_line",
        "record_breach",
    )

    def __init__(self, tx: Transaction, replay: Replay) -> None:
        self._tx = tx
        self._replay = replay
        for name in self._PASSED:  # bound once: the replay calls them millions of times
            setattr(self, name, getattr(tx, name))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def add_waiting(self, lead_id: str, flow: str, stage: str, score: float, at: datetime) -> None:
        self._tx.add_waiting(lead_id, flow, stage, score, at)
        self._replay.joined(lead_id, stage)

    def remove_waiting(self, lead_id: str) -> None:
        self._tx.remove_waiting(lead_id)
        self._replay.left(lead_id)


# --------------------------------------------------------------------------
# The replay
# --------------------------------------------------------------------------


class Scratch(Protocol):
    """Where a replay writes: a `MemoryStore`, or a SQL store."""

    def transaction(self) -> AbstractContextManager[Transaction]: ...


class Replay:
    """Feeds recorded entries, in time order, to `Work` on `store` (a
    `MemoryStore`, or any store's transactions: leads of the compiled flow
    `cf`, whose versions `flows` gives), ticking due leads at midnights up to
    `end`.  `run` is the whole of it; the bench also uses it to record a
    large history quickly into a SQL store (a history the engine itself
    writes: `keep_due` then saves each lead's due time, as the engine does;
    a replay's own store is never walked for due leads, so by default it
    is not computed)."""

    def __init__(
        self, store: Scratch, flows: FlowLookup, cf: CompiledFlow, end: datetime, *, keep_due: bool = False
    ) -> None:
        self.store = store
        self.flows = flows
        self.cf = cf
        self.flow = cf.flow
        self.end = end
        self.timings: dict[tuple[str, bool], Timing] = {}
        self.leads: dict[str, _Lead] = {}
        self.due: dict[datetime, set[str]] = {}
        self.heap: list[datetime] = []
        self.clock: datetime | None = None
        self.queue: dict[str, tuple[str, datetime]] = {}  # lead -> (stage, since)
        self.queues: dict[str, Waiting] = {}
        self.most = 0
        self.refusals: list[Refusal] = []
        self.refused = 0
        self.refused_to: Counter[str] = Counter()
        self.replayed = self.skipped = self.ticks = 0
        self._reschedule: set[str] = set()  # leads whose moments all need placing again
        self.sla: dict[str, timedelta] = {}
        for stage in self.flow.stages:
            if stage.sla_days is not None and not stage.final:
                try:
                    self.sla[stage.name] = timedelta(days=stage.sla_days)
                except OverflowError:
                    continue
        self._ctx: Any = None
        self._tx: _Watched | None = None
        self._ops = 0
        self._keep_due = keep_due
        self._scores: ScoreCache = {}  # waiting leads' scores and how long they hold, across works
        self._work: Work | None = None  # the current transaction's

    # -- the scratch transaction, one per batch of operations ---------------
    def tx(self) -> Transaction:
        if self._tx is None:
            self._ctx = self.store.transaction()
            self._tx = _Watched(self._ctx.__enter__(), self)
        self._ops += 1
        return cast(Transaction, self._tx)

    def commit(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx, self._tx, self._work = self._ctx, None, None, None
            ctx.__exit__(None, None, None)
        self._ops = 0

    def abort(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx, self._tx, self._work = self._ctx, None, None, None
            ctx.__exit__(RuntimeError, RuntimeError("abandoned"), None)

    def work(self, at: datetime, entries: list[JournalEntry]) -> Work:
        """The engine's work for one operation at `at`: one `Work` per
        transaction, moved on to each operation's time (as a batch of the
        engine's runs many operations in one)."""
        tx = self.tx()
        if self._work is None:
            self._work = Work(
                tx, self.flows, at, ACTOR, entries, at, scores=self._scores, keep_due=self._keep_due
            )
            return self._work
        return self._work.moment(at, entries)

    def after(self, entries: list[JournalEntry]) -> None:
        """Follow what the engine did; schedule the leads it touched: all of
        a lead's moments when it was created, moved or joined or left a
        queue, an event's own moments when it only had events."""
        whole = self._reschedule
        events: list[JournalEntry] = []
        for e in entries:
            state = self.leads.get(e.lead_id)
            if e.entry == "created":
                self.leads[e.lead_id] = _Lead(e.stage, e.at, e.at, e.cycle)
                whole.add(e.lead_id)
            elif state is None:
                continue
            elif e.entry == "moved":
                state.stage, state.entered = e.stage, e.at
                if e.kind == "recycle":
                    state.cycle = e.cycle
                    state.events = []
                    state.recycles.append(e.at)
                whole.add(e.lead_id)
            elif e.entry == "event" and e.cycle == state.cycle:
                state.events.append((e.data["event"], e.at))
                events.append(e)
        for e in events:
            if e.lead_id not in whole:
                self.schedule_event(e.lead_id, e.data["event"], e.at)
        if whole:
            for lead_id in whole:
                self.schedule(lead_id)
            whole.clear()
        if self._ops >= OPS_PER_TRANSACTION:
            self.commit()

    def _timing(self, lead_id: str, state: _Lead) -> Timing | None:
        stage = self.flow.stage(state.stage)
        if stage is None or stage.final or self.clock is None:
            return None
        key = (state.stage, lead_id in self.queue)
        t = self.timings.get(key)
        if t is None:
            t = self.timings[key] = stage_timing(self.cf, *key)
        return t

    def schedule(self, lead_id: str) -> None:
        """Every moment at which time can change what a tick decides for the lead."""
        state = self.leads.get(lead_id)
        t = None if state is None else self._timing(lead_id, state)
        if state is None or t is None:
            return
        moments: list[datetime] = []
        try:
            after_event = t.after_event
            for name, event_at in state.events:
                spans = after_event.get(name)
                if spans is not None:
                    moments.extend(event_at + span for span in spans)
            moments.extend(state.entered + k for k in t.in_stage)
            moments.extend(state.created + k for k in t.since_created)
            sla = self.sla.get(state.stage)
            if sla is not None:
                moments.append(state.entered + sla)
        except OverflowError:
            pass
        if t.daily:
            moments.append(self.clock)  # type: ignore[arg-type]
        self._due(lead_id, moments)

    def schedule_event(self, lead_id: str, name: str, at: datetime) -> None:
        """The moments one new event adds (its stage and times unchanged)."""
        state = self.leads[lead_id]
        t = self._timing(lead_id, state)
        if t is None:
            return
        spans = t.after_event.get(name)
        if spans is None and not t.daily:
            return  # nothing time does after this event matters
        moments: list[datetime] = []
        with suppress(OverflowError):
            moments.extend(at + span for span in spans or ())
        if t.daily:
            moments.append(self.clock)  # type: ignore[arg-type]
        self._due(lead_id, moments)

    def _due(self, lead_id: str, moments: list[datetime]) -> None:
        clock, end, due = self.clock, self.end, self.due
        assert clock is not None
        for moment in moments:
            if moment > end:
                continue
            try:
                first = _midnight_after(moment)
                # a value that changes exactly at midnight may change just
                # after it (a strict or a non-strict comparison): then the
                # next midnight sees it
                both = (first, first + DAY) if first == moment else (first,)
            except OverflowError:
                continue
            for b in both:
                if clock < b <= end:
                    found = due.get(b)
                    if found is None:
                        found = due[b] = set()
                        heapq.heappush(self.heap, b)
                    found.add(lead_id)

    # -- the queue -------------------------------------------------------------
    def joined(self, lead_id: str, stage: str) -> None:
        found = self.queue.get(lead_id)
        if found is not None:
            if found[0] == stage:
                return  # it keeps its place
            self.left(lead_id)
        assert self.clock is not None
        self.queue[lead_id] = (stage, self.clock)
        queue = self.queues.setdefault(stage, Waiting(stage))
        queue.still += 1
        if queue.still > queue.most:
            queue.most, queue.most_at = queue.still, self.clock
        self.most = max(self.most, len(self.queue))
        self._reschedule.add(lead_id)  # a waiting lead's score orders the queue

    def left(self, lead_id: str) -> None:
        found = self.queue.pop(lead_id, None)
        if found is None:
            return
        stage, since = found
        queue = self.queues[stage]
        queue.still -= 1
        assert self.clock is not None
        queue.waited.append((self.clock - since).total_seconds() / 86400)
        self._reschedule.add(lead_id)

    # -- time ------------------------------------------------------------------
    def advance_to(self, moment: datetime) -> None:
        """Tick every midnight before `moment` at which some lead is due."""
        while self.heap and self.heap[0] <= moment:
            b = heapq.heappop(self.heap)
            ids = self.due.pop(b, set())
            self.clock = b
            self.tick(b, ids)
        if self.clock is None or moment > self.clock:
            self.clock = moment

    def tick(self, at: datetime, ids: set[str]) -> None:
        """As `Engine.tick` at `at`, for the leads whose time may have come
        (in id order, as the engine visits leads)."""
        self.ticks += 1
        for lead_id in sorted(ids):
            entries: list[JournalEntry] = []
            work = self.work(at, entries)
            lead = work.tx.lock_lead(lead_id)
            if lead is not None:
                work.reevaluate(lead, sla=True)
            self.after(entries)

    # -- the recorded entries ----------------------------------------------
    def feed(self, entry: Entry) -> None:
        if entry.entry not in ("created", "set", "event", "moved"):
            return  # migrations are not the flow's doing; breaches are judged again
        if entry.entry == "moved" and entry.kind != "import" and not is_requested(entry):
            return  # an automatic move: FLOW's gates decide
        self.advance_to(entry.at)
        entries: list[JournalEntry] = []
        work = self.work(entry.at, entries)
        if entry.entry == "created":
            done = self.create(work, entry)
        else:
            lead = work.tx.lock_lead(entry.lead_id)
            if lead is None:
                done = False
            elif entry.entry == "set":
                done = self.set_fields(work, lead, entry)
            elif entry.entry == "event":
                done = self.record(work, lead, entry)
            else:
                done = self.move(work, lead, entry)
        if done:
            self.replayed += 1
        else:
            self.skipped += 1
        self.after(entries)

    def _typed(self, raw: Any) -> dict[str, FieldValue]:
        typed: dict[str, FieldValue] = {}
        if not isinstance(raw, dict):
            return typed
        for name, value in raw.items():
            definition = self.flow.field(name)
            if definition is None:
                continue  # FLOW does not have the field
            try:
                typed[name] = coerce(definition, value)
            except BadInput:
                continue
        return typed

    def create(self, work: Work, entry: Entry) -> bool:
        if work.tx.lock_lead(entry.lead_id) is not None:
            return False
        fields = self._typed(entry.data.get("fields"))
        stage = None
        if entry.kind == "import" and self.cf.has_stage(entry.stage) and self.flow.initial is not None:
            stage = entry.stage if entry.stage != self.flow.initial.name else None
        if stage is None:
            work.create(entry.lead_id, self.cf, fields)
        else:
            work.create(entry.lead_id, self.cf, fields, stage=stage, reason=entry.reason)
        return True

    def set_fields(self, work: Work, lead: Lead, entry: Entry) -> bool:
        changes = entry.data.get("fields")
        if not isinstance(changes, dict):
            return False
        new = {k: v[1] if isinstance(v, list) and len(v) == 2 else None for k, v in changes.items()}
        typed = self._typed({k: v for k, v in new.items() if v is not None})
        typed.update({k: None for k, v in new.items() if v is None and self.flow.field(k) is not None})
        if not typed:
            return False
        work.set_fields(lead, typed)
        return True

    def record(self, work: Work, lead: Lead, entry: Entry) -> bool:
        data = entry.data
        name = data.get("event")
        definition = self.flow.event(name) if isinstance(name, str) else None
        if definition is None:
            return False
        count = data.get("count")
        count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else 1
        channel = data.get("channel") if isinstance(data.get("channel"), str) else None
        content = data.get("content") if isinstance(data.get("content"), str) else None
        state = self.leads.get(lead.id)
        cycle = lead.cycle
        if state is not None and lead.cycle > 1 and entry.at < lead.entered_at:
            cycle = 1 + sum(1 for at in state.recycles if at <= entry.at)
        work.record_event(
            lead, EventRecord(definition.name, entry.at, channel or definition.channel, content, count, cycle)
        )
        return True

    def move(self, work: Work, lead: Lead, entry: Entry) -> bool:
        target = entry.stage
        kind = entry.kind or "advance"
        if kind == "import":
            if not self.cf.has_stage(target):
                return False
            work.place(lead, target, "import", entry.reason)
            return True
        if not self.cf.has_stage(target):
            self.refuse(
                lead, entry, f'flow "{self.cf.name}" version {self.cf.version} has no stage "{target}"'
            )
            return True
        if lead.stage == target and kind != "force":
            return True  # FLOW's gates took it there already: nothing to ask for
        try:
            work.request(lead, target, force=kind == "force", reason=entry.reason)
        except (Rejected, BadInput) as err:
            self.refuse(lead, entry, err.message)
        return True

    def refuse(self, lead: Lead, entry: Entry, reason: str) -> None:
        self.refused += 1
        self.refused_to[entry.stage] += 1
        if len(self.refusals) < LISTED:
            self.refusals.append(
                Refusal(lead.id, entry.at, lead.stage, entry.stage, entry.kind or "", reason)
            )

    def run(self, entries: Iterable[Entry]) -> Replay:
        # Every lead, event and entry of the history lives until the replay
        # ends: the cyclic collector would walk them over and over.
        with collecting.paused():
            try:
                for entry in entries:
                    self.feed(entry)
                self.finish()
            except BaseException:
                self.abort()
                raise
        return self

    def finish(self) -> None:
        self.advance_to(self.end)
        self.commit()


class Recorded(NamedTuple):
    """What the replay reads of one recorded journal entry (a
    `JournalEntry` has these attributes too, and can be fed as well)."""

    lead_id: str
    entry: str
    kind: str | None
    stage: str
    at: datetime
    reason: str | None
    data: Mapping[str, Any]


_REPLAYED = ("created", "set", "event", "moved")
# Moves replayed though not marked requested: imports, and (journals from
# before the mark) the kinds no gate makes on its own (`is_requested`).
_UNMARKED = ("import", "force", "exit")


def _recorded(engine: Engine, name: str, end: datetime) -> Iterator[Recorded]:
    """The flow's recorded entries up to `end` that a replay may feed
    (not breaches nor migrations), in time order, streamed: only the
    columns the replay reads, so the database sorts and sends less."""
    read = getattr(engine.store, "iter_recorded", None)
    if read is None:
        raise BadInput(f"the store {engine.store!r} cannot be replayed")
    return map(Recorded._make, read(name, end, _REPLAYED, _UNMARKED))


def _replay(
    engine: Engine,
    flow: Flow,
    end: datetime,
    period: Period,
    scratch: str,
    recorded: Iterable[Entry] | None = None,
) -> tuple[Replay, Report]:
    """The replay of the recorded journal of `flow`'s leads up to `end`
    through `flow` (`recorded`, when another process reads it), and the
    simulated report over `period`."""
    name = flow.name
    entries = _recorded(engine, name, end) if recorded is None else recorded
    if scratch == "memory":
        # Plain dicts: nothing of it reaches a disk or a SQL engine.
        cf = compile_flow(flow, flow.version)
        store = MemoryStore()

        def flows(flow_name: str, version: int) -> CompiledFlow:
            if flow_name != cf.name or version != cf.version:
                raise NotFound(f'the replay knows only flow "{cf.name}" version {cf.version}')
            return cf

        replay = Replay(store, flows, cf, end).run(entries)
        # The scratch store's millions of objects live on until the report
        # is built: the collector, back after the replay, would walk them
        # all, two thirds of the report's time at 100,000 leads.
        with collecting.paused():
            return replay, build_report(store, cf.flow, version=cf.version, now=end, period=period)
    # The engine's own SQLite store, in memory: the reference the memory
    # store is tested against.
    sql = Engine(open_store(SCRATCH), actor=ACTOR, now=end)
    try:
        deployed = sql.deploy(flow)
        cf = sql.compiled(name, deployed.version)
        replay = Replay(sql.store, sql.compiled, cf, end).run(entries)
        return replay, build_report(sql.store, cf.flow, version=cf.version, now=end, period=period)
    finally:
        sql.close()


def _leads(engine: Engine, name: str) -> int:
    counts = getattr(engine.store, "stage_counts", None)
    return 0 if counts is None else sum(row.leads for row in counts(name))


def simulate(
    engine: Engine,
    flow: Flow,
    *,
    period: Period | None = None,
    scratch: str = "memory",
    apart: bool | None = None,
) -> Simulation:
    """Replay the recorded journal of `flow`'s leads (all of it, up to the
    engine's now) through `flow`; the recorded and simulated reports over
    `period`.  `engine`'s store is only read; `flow` must have passed
    `check`.  The replay runs in a `MemoryStore`; ``scratch="sqlite"`` runs
    it in the engine's SQL store on an in-memory SQLite database instead
    (slower: the reference the tests compare the memory store with).
    `apart` has another process read the journal and build the recorded
    report while the replay runs (where the store is a file or a server;
    views/apart.py): by default from `APART_LEADS` leads on, below which
    starting a process costs more than it saves; True and False force it.
    Whatever that process cannot give, this one does itself."""
    if scratch not in ("memory", "sqlite"):
        raise ValueError(f"scratch is memory or sqlite, not {scratch!r}")
    period = period or Period()
    name = flow.name
    if name not in engine.store.flow_names():
        raise NotFound(
            f'no flow "{name}" is deployed in this database, so there is no history of it to replay '
            "(simulate replays the leads of the flow FLOW names)"
        )
    versions = getattr(engine.store, "lead_versions", None)
    if versions is not None and not versions(name):
        raise NotFound(f'flow "{name}" has no leads in this database, so there is no history of it to replay')
    now = engine.now()
    # The whole history is replayed, up to now: a period chooses what the
    # reports count (entries into stages within it, as `report` does, and
    # whether they advanced later), not what happened.
    end = now
    recorded = engine.compiled(name)

    url = getattr(engine.store, "shared_url", None)
    if apart is None:
        apart = url is not None and _leads(engine, name) >= APART_LEADS
    # On a large history another process reads and decodes the journal and
    # builds the recorded report, on another core, while this one replays
    # (views/apart.py says why not a thread); if it fails, all is done here.
    pending = (
        Apart.start(url, name, recorded.version, end, period, _REPLAYED, _UNMARKED) if apart and url else None
    )
    try:
        done: tuple[Replay, Report] | None = None
        if pending is not None:
            try:
                done = _replay(engine, flow, end, period, scratch, map(Recorded._make, pending.entries()))
            except Lost:
                pending.cancel()
        replay, simulated = done or _replay(engine, flow, end, period, scratch)
        actual = None if pending is None else pending.report(recorded.flow)
    finally:
        if pending is not None:
            pending.cancel()
    if actual is None:
        actual = report_for(engine, name, period=period, version=recorded.version, now=end)
    return Simulation(
        actual=actual,
        simulated=simulated,
        refused_requests=replay.refused,
        refused=tuple(replay.refusals),
        refused_by_stage=dict(sorted(replay.refused_to.items())),
        most_waiting=replay.most,
        waiting=tuple(sorted(replay.queues.values(), key=lambda w: w.stage)),
        replayed=replay.replayed,
        skipped=replay.skipped,
        ticks=replay.ticks,
    )


# The renderers live in whatif.py; `saleflow simulate` (cli) imports them from here.
__all__ = [
    "ACTOR",
    "Replay",
    "Simulation",
    "is_requested",
    "render_simulation_html",
    "render_simulation_table",
    "simulate",
]
