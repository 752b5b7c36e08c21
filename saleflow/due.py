"""A lead's due time: the earliest moment one of its time-dependent
conditions could change value (SPEC §8).

Layer 3, beside `compile.py`; pure: no SQL, no clock.  `tick` and the
workers visit only the leads whose stored due time has come (the `due_at`
column, written with every change to a lead), so a tick costs in
proportion to the leads due, not to all leads.

What can change with time alone, for a lead at a moment `now` (the gates
are judged at the later of `now` and its entry into its stage, as
automatic progress judges them):

- `EVENT in last N days` changes when an event of the current cycle enters
  the window (its time, if still ahead) or leaves it (its time plus the
  window, plus one microsecond);
- `days_since EVENT` changes its reference when a later event's time comes;
- `days_in_stage`, `days_since_created` and `days_since EVENT` grow without
  anything happening: a comparison of one with a value (`days_in_stage >
  90`, `days_since_created >= trial_days`, an `in [..]` list, or the bare
  name read as true when non-zero) flips at the first microsecond at which
  the evaluator's own arithmetic says it does (found by bisection, so float
  rounding cannot make it late); the compared value is read now, and
  changes only at one of the other times listed here;
- an SLA runs out one microsecond after its due time (a breach is then
  recorded); a breach that is due but not known to be recorded makes the
  lead due at once;
- the score (stored with the lead, ranking a capacity's waiting line)
  changes when one of its rules' windows, days or conditions does.

Only what automatic progress reads is looked at: the gates of the
automatic advances, skips and auto recycles from the lead's stage, the
score rules, and the stage's SLA.  A flow without any of these is never
due.  The time returned may be early (one extra visit) but never late.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from .compile import CompiledFlow
from .guards.facts import Facts
from .limits import MAX_TIME, MIN_TIME
from .model.flow import (
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
    Stage,
    Window,
)
from .records import EventRecord, FieldValue, Lead

MICROSECOND = timedelta(microseconds=1)
_SECONDS_PER_DAY = 86400.0
# Names whose value grows with the clock (`days_since EVENT` too).
_DAYS = frozenset({"days_in_stage", "days_since_created"})


def sla_days(stage: Stage | None) -> float | None:
    """The SLA of `stage` (None without one; a final stage has none)."""
    return None if stage is None or stage.final else stage.sla_days


def sla_due(stage: Stage | None, entered_at: datetime) -> datetime | None:
    """When a lead that entered `stage` at `entered_at` is past its SLA;
    None without an SLA or after the last representable instant (never)."""
    days = sla_days(stage)
    if days is None:
        return None
    try:
        return entered_at + timedelta(days=days)
    except OverflowError:
        return None


def due_time(
    cf: CompiledFlow,
    lead: Lead,
    events: Sequence[EventRecord],
    now: datetime,
    *,
    sla_recorded: bool = False,
) -> datetime | None:
    """The earliest time after `now` at which anything automatic progress
    or `tick` reads about `lead` could change value, for a lead that has
    just been brought up to date at `now` (progressed as far as its gates
    allow).  `events` are the lead's events (other cycles' are ignored).

    `now` itself when the lead's stage is past its SLA and the breach is
    not known to be recorded (`sla_recorded` says a tick has just recorded
    or found it).  None when nothing time-dependent applies: the lead is
    never due until something else changes it."""
    stage = cf.flow.stage(lead.stage)
    if stage is None:
        return None  # a stage its version lacks: a batch skips the lead
    found: list[datetime] = []
    sla = sla_due(stage, lead.entered_at)
    if sla is not None:
        if now > sla:
            if not sla_recorded:
                return now
        else:
            breach = _plus(sla, MICROSECOND)
            if breach is not None:
                found.append(breach)
    plan = _plan(cf, lead.stage)
    if plan is not None:
        at = max(now, lead.entered_at)  # when automatic progress judges the gates
        plan.times(cf, lead, events, at, found)
    return min(found) if found else None


@lru_cache(maxsize=256)
def _plan(cf: CompiledFlow, stage_name: str) -> _Plan | None:
    """What automatic progress from `stage_name` reads, if any of it reads
    time: the score rules' conditions and windows, and the gates of the
    automatic moves (none from a final stage), walked once into a `_Plan`.
    None when none of it reads time."""
    exprs = list(_score_exprs(cf))
    stage = cf.flow.stage(stage_name)
    if stage is not None and not stage.final:
        for move in (*cf.forward_from(stage_name), *cf.recycles_from(stage_name)):
            exprs.extend(gate.expr for gate in move.gates)
    return _planned(cf, exprs)


def score_until(cf: CompiledFlow, lead: Lead, events: Sequence[EventRecord], at: datetime) -> datetime | None:
    """The first time after `at` at which `lead`'s score (as it stands,
    with `events`, judged at `at`) could change with time alone: a rule's
    window gaining or losing an event, days it reads crossing a value.
    None when nothing but a change to the lead can change it.  A score
    computed at `at` holds from `at` up to (not at) this time, for the same
    revision of the lead: what lets a waiting line be ranked without
    scoring every waiting lead again each time room frees."""
    plan = _score_plan(cf)
    if plan is None:
        return None
    found: list[datetime] = []
    plan.times(cf, lead, events, at, found)
    return min(found) if found else None


@lru_cache(maxsize=64)
def _score_plan(cf: CompiledFlow) -> _Plan | None:
    return _planned(cf, list(_score_exprs(cf)))


def _score_exprs(cf: CompiledFlow) -> Iterator[Expr]:
    """What the score reads: each rule's counted events and its condition."""
    for rule in cf.flow.score_rules:
        if rule.each is not None:
            yield rule.each
        if rule.condition is not None:
            yield rule.condition


def _planned(cf: CompiledFlow, exprs: list[Expr]) -> _Plan | None:
    if not any(_reads_time(cf, expr, set()) for expr in exprs):
        return None
    planner = _Planner(cf)
    for expr in exprs:
        planner.walk(expr)
    return planner.plan()


def _reads_time(cf: CompiledFlow, expr: Expr, seen: set[str]) -> bool:
    """Whether `expr` (conditions and the score expanded) reads time."""
    flow = cf.flow
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Window | DaysSince):
            return True
        if isinstance(node, Ref):
            if node.name in _DAYS:
                return True
            if node.name == "score" and "score" not in seen:
                seen.add("score")
                for rule in flow.score_rules:
                    stack.extend(x for x in (rule.each, rule.condition) if x is not None)
            elif flow.field(node.name) is None and node.name not in seen:
                condition = flow.condition(node.name)
                if condition is not None:
                    seen.add(node.name)
                    stack.append(condition.expr)
        else:
            stack.extend(_children(node))
    return False


def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Compare):
        return (expr.left, expr.right)
    if isinstance(expr, InList):
        return (expr.operand, *expr.items)
    if isinstance(expr, IsSet | Not):
        return (expr.operand,)
    if isinstance(expr, And | Or | AtLeast):
        return tuple(expr.items)
    return ()


# A growing value: what its days count from ("in_stage", "created", or the
# latest event of a name), and what it is compared with (an expression read
# from the facts, or a constant).
_IN_STAGE = "days_in_stage"
_CREATED = "days_since_created"


@dataclass(frozen=True, slots=True)
class _Growing:
    origin: str  # _IN_STAGE, _CREATED, or "event" (then `event` names it)
    event: str | None
    other: Expr | None  # None: compared with `constant`
    constant: FieldValue
    # The constant's type: the planner keeps one of each growing value, and
    # true == 1 in Python (not in the flow language: true never crosses days)
    constant_type: type


@dataclass(frozen=True, slots=True)
class _Plan:
    """The walk of one stage's expressions, done once (`_Planner`): which
    events' times enter and leave which windows, which events' arrivals
    matter, and which growing days cross which values.  `times` applies it
    to one lead, which costs a pass over its events and a few bisections,
    not a walk of the expressions."""

    windows: tuple[tuple[str, timedelta | None], ...]  # (event, window length + 1 µs; None: never leaves)
    arrivals: tuple[str, ...]
    growing: tuple[_Growing, ...]
    names: frozenset[str]  # every event name the above reads
    reads_facts: bool  # a growing value is compared with something read from the facts

    def times(
        self, cf: CompiledFlow, lead: Lead, events: Sequence[EventRecord], at: datetime, found: list[datetime]
    ) -> None:
        """Add to `found` every time after `at` at which the plan's values
        could change for `lead` (its events of other cycles ignored)."""
        cycle, names = lead.cycle, self.names
        by_name: dict[str, list[datetime]] = {}
        for event in events:
            if event.cycle == cycle and event.name in names:
                by_name.setdefault(event.name, []).append(event.at)
        add = found.append
        for name, span in self.windows:
            for when in by_name.get(name, ()):
                if at < when < MAX_TIME:
                    add(when)
                if span is not None:
                    leaves = _plus(when, span)
                    if leaves is not None and at < leaves:
                        add(leaves)
        for name in self.arrivals:
            for when in by_name.get(name, ()):
                if at < when < MAX_TIME:
                    add(when)
        if not self.growing:
            return
        facts: Facts | None = None
        if self.reads_facts:
            current = [event for event in events if event.cycle == cycle]
            facts = Facts(lead.fields, current, at, lead.entered_at, lead.created_at)
        for growing in self.growing:
            if growing.other is None:
                against = growing.constant
            else:
                assert facts is not None
                against = cf.evaluator.value(growing.other, facts)
            if isinstance(against, bool) or not isinstance(against, int | float):
                continue  # never compares with days (unset, text, a truth)
            if against != against or against in (float("inf"), float("-inf")):
                continue
            if growing.origin == _IN_STAGE:
                origin = lead.entered_at
            elif growing.origin == _CREATED:
                origin = lead.created_at
            else:
                latest = max(
                    (when for when in by_name.get(growing.event or "", ()) if when <= at), default=None
                )
                if latest is None:
                    continue  # unset until an event comes (an arrival)
                origin = latest
            for strict in (False, True):
                flips = _first_true(_crossing(origin, against, strict), origin, against)
                if flips is not None and at < flips < MAX_TIME:
                    add(flips)


class _Planner:
    """Walks the expressions a stage's automatic progress reads, once, and
    notes what `_Plan.times` must look at for a lead (see the module
    docstring): the same walk for every lead, so it is done per stage."""

    def __init__(self, cf: CompiledFlow) -> None:
        self.flow = cf.flow
        self._seen: set[str] = set()
        self._times: set[tuple[str, float | None]] = set()
        self._windows: list[tuple[str, timedelta | None]] = []
        self._arrived: list[str] = []
        self._growing: dict[_Growing, None] = {}

    def plan(self) -> _Plan:
        names = {name for name, _ in self._windows} | set(self._arrived)
        names |= {g.event for g in self._growing if g.event is not None}
        return _Plan(
            tuple(self._windows),
            tuple(self._arrived),
            tuple(self._growing),
            frozenset(names),
            any(g.other is not None for g in self._growing),
        )

    # -- the tree ------------------------------------------------------------
    def walk(self, expr: Expr) -> None:
        """`expr`, read as a value or in boolean context."""
        if isinstance(expr, Window):
            self._window(expr.event, expr.days)
        elif isinstance(expr, DaysSince):
            self._arrivals(expr.event)
            self._grow(expr, None)  # as a truth: true once non-zero
        elif isinstance(expr, Ref):
            self._ref(expr)
        elif isinstance(expr, Compare):
            self._pair(expr.left, [expr.right])
            self._pair(expr.right, [expr.left])
        elif isinstance(expr, InList):
            self._pair(expr.operand, list(expr.items))
            for item in expr.items:
                self._pair(item, [expr.operand])
        elif isinstance(expr, IsSet):
            operand = expr.operand
            if isinstance(operand, DaysSince):
                self._arrivals(operand.event)  # set once one has happened
            elif not _grows(operand):
                self.walk(operand)
        else:
            for child in _children(expr):
                self.walk(child)

    def _ref(self, ref: Ref) -> None:
        name = ref.name
        if name in _DAYS:
            self._grow(ref, None)
        elif name == "score":
            if "score" not in self._seen:
                self._seen.add("score")
                for rule in self.flow.score_rules:
                    for part in (rule.each, rule.condition):
                        if part is not None:
                            self.walk(part)
        elif self.flow.field(name) is None and name not in self._seen:
            condition = self.flow.condition(name)
            if condition is not None:
                self._seen.add(name)
                self.walk(condition.expr)

    def _pair(self, side: Expr, others: list[Expr]) -> None:
        """One side of a comparison (or `in` list) against the others: a
        growing side flips when it crosses another's value now (which the
        other changes only at times found elsewhere); two growing sides grow
        alike, so their order changes only when a reference event comes."""
        if not _grows(side):
            self.walk(side)
            return
        if isinstance(side, DaysSince):
            self._arrivals(side.event)
        for other in others:
            if not _grows(other):
                self._grow(side, other)

    def _window(self, event: str, days: float) -> None:
        """An event enters a window at its time and leaves it when the
        window's start (now minus `days`, as `Facts.window` computes it)
        passes it."""
        if (event, days) in self._times:
            return
        self._times.add((event, days))
        try:
            span: timedelta | None = timedelta(days=days) + MICROSECOND
        except OverflowError:
            span = None  # reaches back past year 1: no event ever leaves
        self._windows.append((event, span))

    def _arrivals(self, event: str) -> None:
        """`days_since EVENT` takes a new reference when an event still
        ahead happens."""
        if (event, None) in self._times:
            return
        self._times.add((event, None))
        self._arrived.append(event)

    def _grow(self, side: Expr, other: Expr | None) -> None:
        """Days counted from the reference of `side` crossing the value of
        `other` (0 when None, a truth: true once non-zero)."""
        if isinstance(side, DaysSince):
            origin, event = "event", side.event
        else:
            assert isinstance(side, Ref)
            origin, event = side.name, None
        if other is None or isinstance(other, Literal):
            constant: FieldValue = 0 if other is None else other.value
            key = _Growing(origin, event, None, constant, type(constant))
        else:
            key = _Growing(origin, event, other, None, type(None))
        self._growing.setdefault(key, None)


def _grows(expr: Expr) -> bool:
    return isinstance(expr, DaysSince) or (isinstance(expr, Ref) and expr.name in _DAYS)


def _days(delta: timedelta) -> float:
    """Days as `guards.Facts` computes them (the same float arithmetic)."""
    return delta.total_seconds() / _SECONDS_PER_DAY


def _crossing(origin: datetime, threshold: int | float, strict: bool) -> Callable[[datetime], bool]:
    """Whether the days since `origin` are at (or, `strict`, above) the
    threshold at a moment, compared as the evaluator compares them."""
    if strict:
        return lambda moment: _days(moment - origin) > threshold
    return lambda moment: _days(moment - origin) >= threshold


def _plus(when: datetime, span: timedelta) -> datetime | None:
    try:
        moment = when + span
    except OverflowError:
        return None
    return moment if moment < MAX_TIME else None


def _first_true(holds: Callable[[datetime], bool], origin: datetime, days: float) -> datetime | None:
    """The first microsecond at which `holds` (false, then true for ever
    after, as days since `origin` grow past `days`) is true; None when
    that lies beyond the times saleflow stores.  The guess `origin + days`
    is within a microsecond or two of it but for float rounding, so the
    answer is bracketed around it (widening as far as needed) and then
    bisected: it is the evaluator's own arithmetic that decides."""
    guess = _plus(origin, _span(days))
    if guess is None:
        guess = MAX_TIME if days > 0 else MIN_TIME
    step = 2 * MICROSECOND
    low = _minus(guess, step)
    while holds(low):
        if low <= MIN_TIME:
            return MIN_TIME
        step *= 2
        low = _minus(guess, step)
    step = 2 * MICROSECOND
    high = _plus(guess, step) or MAX_TIME
    while not holds(high):
        if high >= MAX_TIME:
            return None
        step *= 2
        high = _plus(guess, step) or MAX_TIME
    while high - low > MICROSECOND:
        middle = low + (high - low) // 2
        if holds(middle):
            high = middle
        else:
            low = middle
    return high


def _minus(when: datetime, span: timedelta) -> datetime:
    try:
        return max(MIN_TIME, when - span)
    except OverflowError:
        return MIN_TIME


def _span(days: float) -> timedelta:
    try:
        return timedelta(days=days)
    except OverflowError:
        return timedelta.max if days > 0 else timedelta.min


__all__ = ["MICROSECOND", "due_time", "score_until", "sla_days", "sla_due"]
