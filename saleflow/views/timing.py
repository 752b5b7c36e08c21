"""When a simulated lead's time-dependent conditions can change: the
moments, relative to a lead's own times, at which passing time could open
a gate automatic progress tries from its stage (`stage_timing`), so a
replay ticks a lead only then.

Layer 5, part of the views, for the replay in views/simulate.py.  A value
time can only move the other way is not watched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..compile import CompiledFlow
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

_TIME_REFS = ("days_in_stage", "days_since_created")


@dataclass(frozen=True, slots=True)
class Timing:
    """The moments, relative to a lead's own times, at which passing time
    can change what a tick decides for it."""

    windows: tuple[tuple[str, timedelta], ...]  # (event, length): each such event leaving the window
    since_event: tuple[tuple[str, timedelta], ...]  # (event, k): days since each such event reaching k
    in_stage: tuple[timedelta, ...]  # days in stage reaching k
    since_created: tuple[timedelta, ...]  # days since created reaching k
    daily: bool  # a time-dependent value the above cannot place: every midnight
    # `windows` and `since_event` by event, derived from them: the spans
    # after one event's time at which it matters (most events have none)
    after_event: Mapping[str, tuple[timedelta, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        after_event: dict[str, tuple[timedelta, ...]] = {}
        for event, span in (*self.windows, *self.since_event):
            after_event[event] = (*after_event.get(event, ()), span)
        object.__setattr__(self, "after_event", after_event)


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

    def timing(self) -> Timing:
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

        return Timing(
            pairs(self.windows),
            pairs(self.since_event),
            spans(self.in_stage),
            spans(self.since_created),
            self.daily,
        )


def _is_time(node: Any) -> bool:
    return isinstance(node, DaysSince) or (isinstance(node, Ref) and node.name in _TIME_REFS)


def stage_timing(cf: CompiledFlow, stage: str, waiting: bool) -> Timing:
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
