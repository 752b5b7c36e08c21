"""What if: a flow's recorded journal replayed through another flow file
(SPEC §7, `saleflow simulate`).

Layer 5.  The recorded entries of the flow's leads are read from the user's
database in time order (`at`, then `seq`) and fed, one by one, to the real
engine's `Work` on a scratch SQLite store in memory (gone when it ends):
leads created with their first fields, fields set, events, imported placements, and the moves someone asked for (entries marked
``"requested": true`` by `Work.request`; in journals written before that
mark, the kinds no gate makes on its own: force and exit).  Automatic moves
and SLA breaches are not replayed: FLOW's own gates make them again.

Time passes as it did: between entries the engine ticks at each midnight
(UTC) at which a lead's time-dependent conditions could have changed — a
window closing on one of its events, `days_in_stage`/`days_since…` crossing
a number the flow compares them with, its stage's SLA running out — so a
history that was ticked every midnight (a daily worker) is replayed exactly.
Ticking a lead when nothing changed for it is a no-op, so only those leads
are visited: the cost grows with the entries, not with leads times days.

The user's database is only read.  The recorded report and the simulated
one are both built by `saleflow.report`; the queue for capacity is watched
as the engine fills and empties it.
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import select

from ..coerce import coerce
from ..compile import CompiledFlow
from ..errors import BadInput, NotFound, Rejected
from ..journal import JournalEntry
from ..model.expr import Compare, DaysSince, Expr, Literal, Ref, Window, walk
from ..model.flow import Flow
from ..records import EventRecord, FieldValue, Lead, Transaction
from ..runtime.engine import Engine
from ..runtime.moves import Work
from ..store import open_store
from ..store.schema import journal
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


def is_requested(entry: JournalEntry) -> bool:
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
    windows: tuple[timedelta, ...]  # every window length in the flow
    offsets: tuple[timedelta, ...]  # every number compared with days_in_stage, days_since…
    daily: bool  # a time-dependent value the above cannot place: every midnight


def _expand(flow: Flow, exprs: list[Expr]) -> list[Expr]:
    """`exprs` and what they read through names: conditions, and the score
    rules when they read `score`."""
    out: list[Expr] = []
    seen: set[str] = set()
    stack = list(exprs)
    while stack:
        expr = stack.pop()
        out.append(expr)
        for node in walk(expr):
            if not isinstance(node, Ref) or node.name in seen:
                continue
            if node.name == "score":
                seen.add("score")
                for rule in flow.score_rules:
                    stack.extend(x for x in (rule.each, rule.condition) if x is not None)
            else:
                condition = flow.condition(node.name)
                if condition is not None:
                    seen.add(node.name)
                    stack.append(condition.expr)
    return out


def _is_time(node: Any) -> bool:
    return isinstance(node, DaysSince) or (isinstance(node, Ref) and node.name in _TIME_REFS)


def timing(exprs: list[Expr]) -> _Timing:
    """When values read by `exprs` can change truth: the windows, and the
    numbers compared with days in stage or since creation or an event."""
    windows: set[float] = set()
    offsets: set[float] = set()
    placed: set[int] = set()
    seen: list[Any] = []
    for expr in exprs:
        for node in walk(expr):
            if isinstance(node, Window):
                windows.add(node.days)
            elif _is_time(node):
                seen.append(node)
            elif isinstance(node, Compare):
                for side, other in ((node.left, node.right), (node.right, node.left)):
                    if (
                        _is_time(side)
                        and isinstance(other, Literal)
                        and isinstance(other.value, int | float)
                        and not isinstance(other.value, bool)
                    ):
                        offsets.add(float(other.value))
                        placed.add(id(side))
    daily = any(id(node) not in placed for node in seen)

    def spans(values: set[float]) -> tuple[timedelta, ...]:
        out = []
        for value in sorted(values):
            try:
                out.append(timedelta(days=value))
            except OverflowError:
                continue
        return tuple(out)

    return _Timing(spans(windows), spans(offsets), daily)


def stage_timing(cf: CompiledFlow, stage: str, waiting: bool) -> _Timing:
    """What a tick can find changed for a lead in `stage`: the gates of
    the moves automatic progress tries from there (and, for a lead waiting
    for room, the score that orders the queue)."""
    exprs = [gate.expr for move in cf.moves_from(stage) for gate in move.gates]
    if waiting:
        exprs += [x for rule in cf.flow.score_rules for x in (rule.each, rule.condition) if x is not None]
    return timing(_expand(cf.flow, exprs))


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
    events: list[datetime] = field(default_factory=list)  # of the current cycle
    recycles: list[datetime] = field(default_factory=list)


# --------------------------------------------------------------------------
# The watched transaction: the capacity queue as the engine keeps it
# --------------------------------------------------------------------------


class _Watched:
    """A store transaction that notes who joins and leaves the queue."""

    def __init__(self, tx: Transaction, replay: Replay) -> None:
        self._tx = tx
        self._replay = replay

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


class Replay:
    """Feeds recorded entries, in time order, to `Work` on `scratch`'s store
    (leads of the compiled flow `cf`), ticking due leads at midnights up to
    `end`.  `run` is the whole of it; the bench also uses it to record a
    large history quickly (a history the engine itself writes)."""

    def __init__(self, scratch: Engine, cf: CompiledFlow, end: datetime) -> None:
        self.scratch = scratch
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
        self._ctx: Any = None
        self._tx: _Watched | None = None
        self._ops = 0

    # -- the scratch transaction, one per batch of operations ---------------
    def tx(self) -> Transaction:
        if self._tx is None:
            self._ctx = self.scratch.store.transaction()
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
        return Work(self.tx(), self.scratch.compiled, at, ACTOR, entries, at)

    def after(self, entries: list[JournalEntry]) -> None:
        """Follow what the engine did; schedule the leads it touched."""
        touched: set[str] = set()
        for e in entries:
            state = self.leads.get(e.lead_id)
            if e.entry == "created":
                self.leads[e.lead_id] = state = _Lead(e.stage, e.at, e.at, e.cycle)
            elif state is None:
                continue
            elif e.entry == "moved":
                state.stage, state.entered = e.stage, e.at
                if e.kind == "recycle":
                    state.cycle = e.cycle
                    state.events = []
                    state.recycles.append(e.at)
            elif e.entry == "event" and e.cycle == state.cycle:
                state.events.append(e.at)
            touched.add(e.lead_id)
        for lead_id in touched:
            self.schedule(lead_id)
        if self._ops >= OPS_PER_TRANSACTION:
            self.commit()

    def schedule(self, lead_id: str) -> None:
        state = self.leads[lead_id]
        stage = self.flow.stage(state.stage)
        if stage is None or stage.final or self.clock is None:
            return
        key = (state.stage, lead_id in self.queue)
        t = self.timings.get(key)
        if t is None:
            t = self.timings[key] = stage_timing(self.cf, *key)
        moments: list[datetime] = []
        try:
            for event_at in state.events:
                moments.extend(event_at + w for w in t.windows)
                moments.extend(event_at + k for k in t.offsets)
            for k in t.offsets:
                moments.extend((state.entered + k, state.created + k))
            if stage.sla_days is not None:
                moments.append(state.entered + timedelta(days=stage.sla_days))
        except OverflowError:
            pass
        if t.daily:
            moments.append(self.clock)
        for moment in moments:
            try:
                first = _midnight_after(moment)
                # a value that changes exactly at midnight may change just
                # after it (a strict or a non-strict comparison): then the
                # next midnight sees it
                both = (first, first + DAY) if first == moment else (first,)
            except OverflowError:
                continue
            for b in both:
                if b > self.clock and b <= self.end:
                    if b not in self.due:
                        self.due[b] = set()
                        heapq.heappush(self.heap, b)
                    self.due[b].add(lead_id)

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

    def left(self, lead_id: str) -> None:
        found = self.queue.pop(lead_id, None)
        if found is None:
            return
        stage, since = found
        queue = self.queues[stage]
        queue.still -= 1
        assert self.clock is not None
        queue.waited.append((self.clock - since).total_seconds() / 86400)

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
    def feed(self, entry: JournalEntry) -> None:
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

    def create(self, work: Work, entry: JournalEntry) -> bool:
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

    def set_fields(self, work: Work, lead: Lead, entry: JournalEntry) -> bool:
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

    def record(self, work: Work, lead: Lead, entry: JournalEntry) -> bool:
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

    def move(self, work: Work, lead: Lead, entry: JournalEntry) -> bool:
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

    def refuse(self, lead: Lead, entry: JournalEntry, reason: str) -> None:
        self.refused += 1
        self.refused_to[entry.stage] += 1
        if len(self.refusals) < LISTED:
            self.refusals.append(
                Refusal(lead.id, entry.at, lead.stage, entry.stage, entry.kind or "", reason)
            )

    def run(self, entries: Iterable[JournalEntry]) -> Replay:
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


def _recorded(engine: Engine, name: str, end: datetime) -> Iterator[JournalEntry]:
    """The flow's recorded entries up to `end`, in time order, streamed."""
    store: Any = engine.store
    if not hasattr(store, "read"):
        raise BadInput(f"the store {store!r} cannot be replayed")
    query = (
        select(*journal.c)
        .where(journal.c.flow == name, journal.c.at <= end)
        .order_by(journal.c.at, journal.c.seq)
    )
    with store.read() as conn:
        for row in conn.execution_options(yield_per=5000, stream_results=True).execute(query):
            yield JournalEntry(*row)


def simulate(engine: Engine, flow: Flow, *, period: Period | None = None) -> Simulation:
    """Replay the recorded journal of `flow`'s leads (all of it, up to the
    engine's now) through `flow`; the recorded and simulated reports over
    `period`.  `engine`'s store is only
    read; `flow` must have passed `check`."""
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
    # The scratch store lives in memory: nothing of it reaches a disk.
    scratch = Engine(open_store(SCRATCH), actor=ACTOR, now=end)
    try:
        deployed = scratch.deploy(flow)
        cf = scratch.compiled(name, deployed.version)
        replay = Replay(scratch, cf, end).run(_recorded(engine, name, end))
        simulated = build_report(scratch.store, cf.flow, version=cf.version, now=end, period=period)
    finally:
        scratch.close()
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
    e = page._e
    rows = []
    for name, team, before, after in _pairs(sim):
        cells = [page._td(name, False), page._td(team or "-", False)]
        for f in (
            lambda x: f"{x.entered:,}",
            lambda x: f"{x.advanced:,}",
            lambda x: percent(x.conversion),
            lambda x: days(x.median_days),
        ):
            cells.append(page._td("-" if before is None else f(before)))
            cells.append(page._td("-" if after is None else f(after)))
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
        f"<title>{e(title)}</title>\n<style>{page._CSS}\n.pair {{ display: grid; "
        "grid-template-columns: 1fr 1fr; gap: 20px; }}</style>\n</head>\n<body>\n"
        f'<header><h1>{e(title)}</h1><p class="meta">flow <code>{e(s.flow)}</code> version {s.version} '
        f"replayed over the recorded history (version {a.version}) · period: {e(s.period)} · "
        f"{sim.replayed:,} entries replayed, {sim.ticks:,} ticks</p></header>\n"
        '<div class="pair">'
        f'<section id="recorded"><h2>Recorded (version {a.version})</h2>\n{page._funnel(a)}</section>'
        f'<section id="simulated"><h2>Simulated (version {s.version})</h2>\n{page._funnel(s)}</section>'
        "</div>\n"
        f'<section id="stages"><h2>Stages, recorded and simulated</h2>\n{page._table(headers, rows)}</section>\n'
        f'<section id="sla"><h2>SLA breaches: {a.sla_breaches:,} recorded, {s.sla_breaches:,} simulated</h2></section>\n'
        f'<section id="waiting"><h2>Waiting for capacity: at most {sim.most_waiting:,} at once</h2>'
        f"<ul>{waiting}</ul></section>\n"
        f'<section id="refused"><h2>Requested moves refused: {sim.refused_requests:,}</h2>'
        f"<ul>{refused}</ul>{f'<p class=note>… and {more:,} more</p>' if more > 0 else ''}</section>\n"
        "</body>\n</html>\n"
    )
