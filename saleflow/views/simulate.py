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
watched as the engine fills and empties it.
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, Union, cast

from ..coerce import coerce
from ..compile import CompiledFlow, compile_flow
from ..errors import BadInput, NotFound, Rejected
from ..journal import JournalEntry
from ..model.expr import (
    And,
    AtLeast,
    Compare,
    DaysSince,
    Expr,
    InList,
    IsSet,
    Literal,
    Not,
    Or,
    Ref,
    Window,
)
from ..model.flow import Flow
from ..records import EventRecord, FieldValue, Lead, Transaction
from ..runtime.engine import Engine
from ..runtime.moves import FlowLookup, Work
from ..store import open_store
from ..store.memory import MemoryStore
from .report import Period, Report, StageFigures, days, percent
from .report.build import build_report

DAY = timedelta(days=1)
ACTOR = "saleflow-simulate"
SCRATCH = "sqlite:///:memory:"
LISTED = 20  # refused requests listed by name (all are counted)
OPS_PER_TRANSACTION = 2000
_TIME_REFS = ("days_in_stage", "days_since_created")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A recorded request the simulated flow refused."""

    lead: str
    at: datetime
    stage: str  # where the simulated lead was
    to: str
    kind: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "lead": self.lead,
            "at": self.at.isoformat(),
            "from": self.stage,
            "to": self.to,
            "kind": self.kind,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Waiting:
    """The queue for room in one capacity stage, as the replay saw it."""

    stage: str
    most: int = 0
    most_at: datetime | None = None
    waited: list[float] = field(default_factory=list)  # days, of the leads that got out of the queue
    still: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "most_at_once": self.most,
            "most_at": None if self.most_at is None else self.most_at.isoformat(),
            "leads_waited": len(self.waited) + self.still,
            "still_waiting": self.still,
            "median_days": _round(statistics.median(self.waited)) if self.waited else None,
            "max_days": _round(max(self.waited)) if self.waited else None,
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    actual: Report
    simulated: Report
    refused_requests: int
    refused: tuple[Refusal, ...]  # the first `LISTED`
    refused_by_stage: dict[str, int]  # refused requests per stage asked for
    most_waiting: int
    waiting: tuple[Waiting, ...]
    replayed: int
    skipped: int
    ticks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.simulated.flow,
            "version": self.simulated.version,
            "actual": self.actual.to_json(),
            "simulated": self.simulated.to_json(),
            "refused_requests": self.refused_requests,
            "refused": [r.to_json() for r in self.refused],
            "refused_by_stage": dict(self.refused_by_stage),
            "most_waiting": self.most_waiting,
            "waiting": [w.to_json() for w in self.waiting],
            "replayed": self.replayed,
            "skipped": self.skipped,
            "ticks": self.ticks,
        }


def _round(days: float) -> float:
    return round(days, 2)


Entry = Union["Recorded", JournalEntry]  # what a replay is fed


def is_requested(entry: Entry) -> bool:
    """A move someone asked for, not one the gates made."""
    if entry.entry != "moved":
        return False
    if entry.data.get("requested") is True:
        return True
    return entry.kind in ("force", "exit")  # journals from before the mark


# --------------------------------------------------------------------------
# When a lead's time-dependent conditions can change
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Timing:
    """The moments, relative to a lead's own times, at which passing time
    can change what a tick decides for it."""

    windows: tuple[tuple[str, timedelta], ...]  # (event, length): each such event leaving the window
    since_event: tuple[tuple[str, timedelta], ...]  # (event, k): days since each such event reaching k
    in_stage: tuple[timedelta, ...]  # days in stage reaching k
    since_created: tuple[timedelta, ...]  # days since created reaching k
    daily: bool  # a time-dependent value the above cannot place: every midnight


# How a value moves as time passes (and nothing else happens): a window's
# count can only fall, days in stage or since something only rise.  A tick
# matters when a gate can turn true; `want` says which way of an expression
# matters: +1 turning true (or rising), -1 turning false (or falling), 0
# either.  A time-dependent value that can only move the other way is not
# watched: `score >= 60` with positive points on windows cannot open as
# windows close.


class _Watch:
    """What `timing` collects while walking the expressions."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.windows: set[tuple[str, float]] = set()
        self.since_event: set[tuple[str, float]] = set()
        self.in_stage: set[float] = set()
        self.since_created: set[float] = set()
        self.daily = False
        self._seen: set[tuple[str, int, bool]] = set()  # (name, want, numeric) already walked

    def truth(self, expr: Expr, want: int) -> None:
        """`expr` in a boolean context; `want`: which change of its truth matters."""
        if isinstance(expr, Not):
            self.truth(expr.operand, -want)
        elif isinstance(expr, And | Or | AtLeast):
            for item in expr.items:
                self.truth(item, want)
        elif isinstance(expr, Compare):
            self.compare(expr, want)
        elif isinstance(expr, InList):
            self.number(expr.operand, 0)
            for item in expr.items:
                self.number(item, 0)
        elif isinstance(expr, IsSet):
            self.number(expr.operand, 0)
        elif isinstance(expr, Ref) and self.flow.condition(expr.name) is not None:
            self.named(expr.name, want, False)
        else:
            # a value as a truth: set and non-zero; a count is true as it rises
            self.number(expr, want if isinstance(expr, Window | DaysSince) or _is_time(expr) else 0)

    def compare(self, expr: Compare, want: int) -> None:
        for side, other, sign in ((expr.left, expr.right, 1), (expr.right, expr.left, -1)):
            if not (
                isinstance(other, Literal)
                and isinstance(other.value, int | float)
                and not isinstance(other.value, bool)
            ):
                continue
            # which way `side` must move for the comparison to turn true
            if expr.op in (">", ">="):
                rises = sign
            elif expr.op in ("<", "<="):
                rises = -sign
            else:
                rises = 0
            self.number(side, want * rises, float(other.value))
            return
        self.number(expr.left, 0)
        self.number(expr.right, 0)

    def number(self, expr: Expr, want: int, k: float | None = None) -> None:
        """`expr` as a value; `want`: which way of moving matters; `k`: the
        number it is compared with, when it is."""
        if isinstance(expr, Window):
            if want <= 0:  # it can only fall
                self.windows.add((expr.event, expr.days))
        elif _is_time(expr):
            if want < 0:
                return  # it can only rise (a new event resets it, and is replayed)
            if k is None:
                self.daily = True
            elif isinstance(expr, DaysSince):
                self.since_event.add((expr.event, k))
            elif isinstance(expr, Ref) and expr.name == "days_in_stage":
                self.in_stage.add(k)
            else:
                self.since_created.add(k)
        elif isinstance(expr, Ref):
            if expr.name == "score":
                self.named("score", want, True)
            elif self.flow.condition(expr.name) is not None:
                self.named(expr.name, 0, False)
        elif not isinstance(expr, Literal):
            self.truth(expr, 0)

    def named(self, name: str, want: int, numeric: bool) -> None:
        key = (name, want, numeric)
        if key in self._seen:
            return
        self._seen.add(key)
        if name == "score":
            for rule in self.flow.score_rules:
                way = want * (1 if rule.points > 0 else -1 if rule.points < 0 else 0)
                if rule.points == 0:
                    continue
                if rule.each is not None:
                    self.number(rule.each, way)
                if rule.condition is not None:
                    self.truth(rule.condition, way)
            return
        condition = self.flow.condition(name)
        if condition is not None:
            self.truth(condition.expr, want)

    def timing(self) -> _Timing:
        def spans(values: Iterable[float]) -> tuple[timedelta, ...]:
            out = []
            for value in sorted(values):
                try:
                    out.append(timedelta(days=value))
                except OverflowError:
                    continue
            return tuple(out)

        def pairs(values: set[tuple[str, float]]) -> tuple[tuple[str, timedelta], ...]:
            out = []
            for event, value in sorted(values):
                try:
                    out.append((event, timedelta(days=value)))
                except OverflowError:
                    continue
            return tuple(out)

        return _Timing(
            pairs(self.windows),
            pairs(self.since_event),
            spans(self.in_stage),
            spans(self.since_created),
            self.daily,
        )


def _is_time(node: Any) -> bool:
    return isinstance(node, DaysSince) or (isinstance(node, Ref) and node.name in _TIME_REFS)


def stage_timing(cf: CompiledFlow, stage: str, waiting: bool) -> _Timing:
    """What a tick can find changed for a lead in `stage`: a gate of a move
    automatic progress tries from there turning true (and, for a lead
    waiting for room, any change of the score that orders the queue)."""
    watch = _Watch(cf.flow)
    for move in (*cf.forward_from(stage), *cf.recycles_from(stage)):
        for gate in move.gates:
            watch.truth(gate.expr, 1)
    if waiting:
        watch.named("score", 0, True)
    return watch.timing()


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
    writes)."""

    def __init__(self, store: Scratch, flows: FlowLookup, cf: CompiledFlow, end: datetime) -> None:
        self.store = store
        self.flows = flows
        self.cf = cf
        self.flow = cf.flow
        self.end = end
        self.timings: dict[tuple[str, bool], _Timing] = {}
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

    # -- the scratch transaction, one per batch of operations ---------------
    def tx(self) -> Transaction:
        if self._tx is None:
            self._ctx = self.store.transaction()
            self._tx = _Watched(self._ctx.__enter__(), self)
        self._ops += 1
        return cast(Transaction, self._tx)

    def commit(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx, self._tx = self._ctx, None, None
            ctx.__exit__(None, None, None)
        self._ops = 0

    def abort(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx, self._tx = self._ctx, None, None
            ctx.__exit__(RuntimeError, RuntimeError("abandoned"), None)

    def work(self, at: datetime, entries: list[JournalEntry]) -> Work:
        return Work(self.tx(), self.flows, at, ACTOR, entries, at)

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

    def _timing(self, lead_id: str, state: _Lead) -> _Timing | None:
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
            for name, event_at in state.events:
                moments.extend(event_at + w for event, w in t.windows if event == name)
                moments.extend(event_at + k for event, k in t.since_event if event == name)
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
        moments: list[datetime] = []
        try:
            moments.extend(at + w for event, w in t.windows if event == name)
            moments.extend(at + k for event, k in t.since_event if event == name)
        except OverflowError:
            pass
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


def _recorded(engine: Engine, name: str, end: datetime) -> Iterator[Recorded]:
    """The flow's recorded entries up to `end` that a replay may feed
    (not breaches nor migrations), in time order, streamed: only the
    columns the replay reads, so the database sorts and sends less."""
    read = getattr(engine.store, "iter_recorded", None)
    if read is None:
        raise BadInput(f"the store {engine.store!r} cannot be replayed")
    make = Recorded._make
    for row in read(name, end, _REPLAYED):
        yield make(row)


def simulate(
    engine: Engine, flow: Flow, *, period: Period | None = None, scratch: str = "memory"
) -> Simulation:
    """Replay the recorded journal of `flow`'s leads (all of it, up to the
    engine's now) through `flow`; the recorded and simulated reports over
    `period`.  `engine`'s store is only read; `flow` must have passed
    `check`.  The replay runs in a `MemoryStore`; ``scratch="sqlite"`` runs
    it in the engine's SQL store on an in-memory SQLite database instead
    (slower: the reference the tests compare the memory store with)."""
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
    actual = build_report(
        engine.store,
        recorded.flow,
        version=recorded.version,
        now=end,
        period=period,
        definitions=lambda version: engine.compiled(name, version).flow,
    )
    if scratch == "memory":
        # Plain dicts: nothing of it reaches a disk or a SQL engine.
        cf = compile_flow(flow, flow.version)
        store = MemoryStore()

        def flows(flow_name: str, version: int) -> CompiledFlow:
            if flow_name != cf.name or version != cf.version:
                raise NotFound(f'the replay knows only flow "{cf.name}" version {cf.version}')
            return cf

        replay = Replay(store, flows, cf, end).run(_recorded(engine, name, end))
        simulated = build_report(store, cf.flow, version=cf.version, now=end, period=period)
    else:
        # The engine's own SQLite store, in memory: the reference the
        # memory store is tested against.
        sql = Engine(open_store(SCRATCH), actor=ACTOR, now=end)
        try:
            deployed = sql.deploy(flow)
            cf = sql.compiled(name, deployed.version)
            replay = Replay(sql.store, sql.compiled, cf, end).run(_recorded(engine, name, end))
            simulated = build_report(sql.store, cf.flow, version=cf.version, now=end, period=period)
        finally:
            sql.close()
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


# --------------------------------------------------------------------------
# Rendering: a text table and an HTML page, recorded beside simulated
# --------------------------------------------------------------------------


def _pairs(sim: Simulation) -> list[tuple[str, str | None, StageFigures | None, StageFigures | None]]:
    """Stage rows in the simulated flow's order, then stages only the
    recorded flow has."""
    Row = tuple[str, str | None, StageFigures | None, StageFigures | None]
    rows: list[Row] = [(s.stage, s.team, sim.actual.stage(s.stage), s) for s in sim.simulated.stages]
    known = {s.stage for s in sim.simulated.stages}
    rows += [(s.stage, s.team, s, None) for s in sim.actual.stages if s.stage not in known]
    return rows


def _both(before: str, after: str) -> str:
    return before if before == after else f"{before} → {after}"


def _waiting_line(w: Waiting) -> str:
    data = w.to_json()
    median = "-" if data["median_days"] is None else days(data["median_days"])
    longest = "-" if data["max_days"] is None else days(data["max_days"])
    when = "" if w.most_at is None else f" on {w.most_at.date().isoformat()}"
    return (
        f"{w.stage}: at most {w.most:,} at once{when}; {data['leads_waited']:,} waited, "
        f"median {median} days, longest {longest} days, {w.still:,} still waiting"
    )


def render_simulation_table(sim: Simulation, path: str | None = None) -> str:
    a, s = sim.actual, sim.simulated
    where = f" ({path})" if path else ""
    lines = [
        f"Simulation of flow {s.flow} version {s.version}{where} over the recorded history "
        f"(recorded: version {a.version}); period: {s.period}",
        f"{sim.replayed:,} recorded entries replayed, {sim.skipped:,} skipped, {sim.ticks:,} ticks",
        "",
        "Funnel, recorded → simulated:",
    ]
    headers = ["stage", "team", "entered", "advanced", "conversion", "median days"]
    rows = []
    for name, team, before, after in _pairs(sim):

        def cell(f: Any, stage: StageFigures | None) -> str:
            return "-" if stage is None else str(f(stage))

        rows.append(
            [
                name,
                team or "-",
                _both(cell(lambda x: f"{x.entered:,}", before), cell(lambda x: f"{x.entered:,}", after)),
                _both(cell(lambda x: f"{x.advanced:,}", before), cell(lambda x: f"{x.advanced:,}", after)),
                _both(
                    cell(lambda x: percent(x.conversion), before),
                    cell(lambda x: percent(x.conversion), after),
                ),
                _both(
                    cell(lambda x: days(x.median_days), before), cell(lambda x: days(x.median_days), after)
                ),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, ["-" * w for w in widths], *rows]:
        lines.append(
            "  "
            + "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    lines += [
        "",
        f"SLA breaches: {_both(f'{a.sla_breaches:,}', f'{s.sla_breaches:,}')}",
        f"recycled lead-cycles: {_both(f'{a.recycled.lead_cycles:,}', f'{s.recycled.lead_cycles:,}')}",
        f"most leads waiting for capacity at once (simulated): {sim.most_waiting:,}",
        *(f"  {_waiting_line(w)}" for w in sim.waiting),
        f"requested moves the simulated flow refuses: {sim.refused_requests:,}",
        *(
            f"  {r.lead} at {r.at.isoformat(timespec='seconds')}: {r.stage} -> {r.to} ({r.kind}): {r.reason}"
            for r in sim.refused
        ),
    ]
    if sim.refused_requests > len(sim.refused):
        lines.append(f"  … and {sim.refused_requests - len(sim.refused):,} more")
    return "\n".join(lines) + "\n"


def render_simulation_html(sim: Simulation) -> str:
    """Both funnels side by side, then the comparison table, the queue and
    the refused requests; built from the report page's own parts."""
    from . import page

    a, s = sim.actual, sim.simulated
    e = page.esc
    rows = []
    for name, team, before, after in _pairs(sim):
        cells = [page.td(name, False), page.td(team or "-", False)]
        for f in (
            lambda x: f"{x.entered:,}",
            lambda x: f"{x.advanced:,}",
            lambda x: percent(x.conversion),
            lambda x: days(x.median_days),
        ):
            cells.append(page.td("-" if before is None else f(before)))
            cells.append(page.td("-" if after is None else f(after)))
        rows.append(f'<tr data-stage="{e(name)}">' + "".join(cells) + "</tr>")
    headers = [("stage", False), ("team", False)]
    for what in ("entered", "advanced", "conversion", "median days"):
        headers += [(f"{what} (recorded)", True), (f"{what} (simulated)", True)]
    waiting = "".join(f"<li>{e(_waiting_line(w))}</li>" for w in sim.waiting) or "<li>no lead waited</li>"
    refused = "".join(
        f"<li><code>{e(r.lead)}</code> at {e(r.at.isoformat(timespec='seconds'))}: {e(r.stage)} → {e(r.to)} "
        f"({e(r.kind)}): {e(r.reason)}</li>"
        for r in sim.refused
    )
    more = sim.refused_requests - len(sim.refused)
    title = f"{s.title} — what if (saleflow simulate)"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>{page.CSS}\n.pair {{ display: grid; "
        "grid-template-columns: 1fr 1fr; gap: 20px; }}</style>\n</head>\n<body>\n"
        f'<header><h1>{e(title)}</h1><p class="meta">flow <code>{e(s.flow)}</code> version {s.version} '
        f"replayed over the recorded history (version {a.version}) · period: {e(s.period)} · "
        f"{sim.replayed:,} entries replayed, {sim.ticks:,} ticks</p></header>\n"
        '<div class="pair">'
        f'<section id="recorded"><h2>Recorded (version {a.version})</h2>\n{page.funnel(a)}</section>'
        f'<section id="simulated"><h2>Simulated (version {s.version})</h2>\n{page.funnel(s)}</section>'
        "</div>\n"
        f'<section id="stages"><h2>Stages, recorded and simulated</h2>\n{page.table(headers, rows)}</section>\n'
        f'<section id="sla"><h2>SLA breaches: {a.sla_breaches:,} recorded, {s.sla_breaches:,} simulated</h2></section>\n'
        f'<section id="waiting"><h2>Waiting for capacity: at most {sim.most_waiting:,} at once</h2>'
        f"<ul>{waiting}</ul></section>\n"
        f'<section id="refused"><h2>Requested moves refused: {sim.refused_requests:,}</h2>'
        f"<ul>{refused}</ul>{f'<p class=note>… and {more:,} more</p>' if more > 0 else ''}</section>\n"
        "</body>\n</html>\n"
    )
