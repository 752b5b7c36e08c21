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

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache

from .compile import CompiledFlow
from .guards.facts import Facts
from .limits import MAX_TIME, MIN_TIME
from .model.flow import And, AtLeast, Compare, DaysSince, Expr, InList, IsSet, Not, Or, Ref, Stage, Window
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
    exprs = _watched(cf, lead.stage)
    if exprs:
        at = max(now, lead.entered_at)  # when automatic progress judges the gates
        current = [event for event in events if event.cycle == lead.cycle]
        facts = Facts(lead.fields, current, at, lead.entered_at, lead.created_at)
        _Finder(cf, facts, current, found).watch(exprs)
    return min(found) if found else None


@lru_cache(maxsize=256)
def _watched(cf: CompiledFlow, stage_name: str) -> tuple[Expr, ...]:
    """What automatic progress from `stage_name` reads, if any of it reads
    time: the score rules' conditions and windows, and the gates of the
    automatic moves (none from a final stage).  () when none of it does."""
    exprs: list[Expr] = []
    for rule in cf.flow.score_rules:
        if rule.each is not None:
            exprs.append(rule.each)
        if rule.condition is not None:
            exprs.append(rule.condition)
    stage = cf.flow.stage(stage_name)
    if stage is not None and not stage.final:
        for move in (*cf.forward_from(stage_name), *cf.recycles_from(stage_name)):
            exprs.extend(gate.expr for gate in move.gates)
    return tuple(exprs) if any(_reads_time(cf, expr, set()) for expr in exprs) else ()


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


class _Finder:
    """Collects the times at which the expressions it is shown could change
    value for one lead (see the module docstring), into `found`."""

    def __init__(
        self, cf: CompiledFlow, facts: Facts, events: list[EventRecord], found: list[datetime]
    ) -> None:
        self.cf = cf
        self.flow = cf.flow
        self.facts = facts
        self.at = facts.now
        self.events = events
        self.found = found
        self._seen: set[str] = set()
        self._times: set[tuple[str, float | None]] = set()

    def watch(self, exprs: Sequence[Expr]) -> None:
        for expr in exprs:
            self._walk(expr)

    # -- the tree ------------------------------------------------------------
    def _walk(self, expr: Expr) -> None:
        """`expr`, read as a value or in boolean context."""
        if isinstance(expr, Window):
            self._window(expr.event, expr.days)
        elif isinstance(expr, DaysSince):
            self._arrivals(expr.event)
            self._growing(expr, 0)  # as a truth: true once non-zero
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
            elif not self._grows(operand):
                self._walk(operand)
        else:
            for child in _children(expr):
                self._walk(child)

    def _ref(self, ref: Ref) -> None:
        name = ref.name
        if name in _DAYS:
            self._growing(ref, 0)
        elif name == "score":
            if "score" not in self._seen:
                self._seen.add("score")
                for rule in self.flow.score_rules:
                    for part in (rule.each, rule.condition):
                        if part is not None:
                            self._walk(part)
        elif self.flow.field(name) is None and name not in self._seen:
            condition = self.flow.condition(name)
            if condition is not None:
                self._seen.add(name)
                self._walk(condition.expr)

    def _pair(self, side: Expr, others: list[Expr]) -> None:
        """One side of a comparison (or `in` list) against the others: a
        growing side flips when it crosses another's value now (which the
        other changes only at times found elsewhere); two growing sides grow
        alike, so their order changes only when a reference event comes."""
        if not self._grows(side):
            self._walk(side)
            return
        if isinstance(side, DaysSince):
            self._arrivals(side.event)
        for other in others:
            if self._grows(other):
                continue
            self._growing(side, self.cf.evaluator.value(other, self.facts))

    def _grows(self, expr: Expr) -> bool:
        return isinstance(expr, DaysSince) or (isinstance(expr, Ref) and expr.name in _DAYS)

    # -- times -----------------------------------------------------------------
    def _add(self, when: datetime | None) -> None:
        if when is not None and self.at < when < MAX_TIME:
            self.found.append(when)

    def _window(self, event: str, days: float) -> None:
        """An event enters a window at its time and leaves it when the
        window's start (now minus `days`, as `Facts.window` computes it)
        passes it."""
        if (event, days) in self._times:
            return
        self._times.add((event, days))
        try:
            span: timedelta | None = timedelta(days=days)
        except OverflowError:
            span = None  # reaches back past year 1: no event ever leaves
        for record in self.events:
            if record.name != event:
                continue
            self._add(record.at)
            if span is not None:
                self._add(_plus(record.at, span + MICROSECOND))

    def _arrivals(self, event: str) -> None:
        """`days_since EVENT` takes a new reference when an event still
        ahead happens."""
        if (event, None) in self._times:
            return
        self._times.add((event, None))
        for record in self.events:
            if record.name == event:
                self._add(record.at)

    def _growing(self, expr: Expr, against: FieldValue) -> None:
        """When days counted from the reference of `expr` cross `against`."""
        if isinstance(against, bool) or not isinstance(against, int | float):
            return  # never compares with days (unset, text, a truth)
        if against != against or against in (float("inf"), float("-inf")):
            return
        facts = self.facts
        if isinstance(expr, DaysSince):
            latest = max(
                (e.at for e in self.events if e.name == expr.event and e.at <= facts.now), default=None
            )
            if latest is None:
                return  # unset until an event comes (`_arrivals`)
            origin = latest
        elif isinstance(expr, Ref) and expr.name == "days_in_stage":
            origin = facts.entered_at
        else:
            origin = facts.created_at
        for strict in (False, True):
            self._add(_first_true(_crossing(origin, against, strict), origin, against))


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


__all__ = ["MICROSECOND", "due_time", "sla_days", "sla_due"]
