"""Expressions of the flow language: gates, conditions, score rules.

Layer 1.  Frozen dataclasses with source spans (excluded from equality), the
comparison operators and what they do, the builtin names, `children`/`walk`
over a tree, and `duration_text`, how a flow file writes a duration.  Built
by the parser, judged by the checker, evaluated by `guards`, written back by
`unparse`; `flow` holds them in its declarations.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as attr
from typing import Any
from typing import Literal as TypingLiteral

from ..errors import NO_SPAN, Span

CompareOp = TypingLiteral["==", "!=", "<", "<=", ">", ">="]
COMPARE_OPS: tuple[CompareOp, ...] = ("==", "!=", "<", "<=", ">", ">=")
# What each comparison does, for the evaluator and the report's targets.
COMPARE: dict[CompareOp, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

# Names every flow knows without declaring them.
BUILTINS = ("score", "days_in_stage", "days_since_created")

Value = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Literal:
    """A number, a "string" or true/false.  Bare enum values are `Ref`s."""

    value: Value
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Ref:
    """A bare name: a field, a condition, an event (its count in the current
    cycle), a builtin (`score`, `days_in_stage`, `days_since_created`), or an
    enum value where the other side of a comparison is an enum field."""

    name: str
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


def duration_text(days: float, *, singular: bool = True) -> str:
    """A duration as a flow file writes it: whole days as `N days`, whole
    hours as `N hours` (`sla 4 hours` is stored as 4/24 of a day), any
    other fraction as decimal days; `1 day`, `1 hour` in the singular
    unless `singular` is false (expression text, which keys the values an
    audit entry records, has always said `1 days`)."""
    if float(days).is_integer():
        number, unit = f"{int(days)}", "day"
    elif abs(days * 24 - round(days * 24)) < 1e-9:
        number, unit = f"{round(days * 24)}", "hour"
    else:
        number, unit = f"{days:g}", "day"
    return f"{number} {unit}" if singular and number == "1" else f"{number} {unit}s"


@dataclass(frozen=True, slots=True)
class Window:
    """`EVENT in last N days` (or `N hours`): the event's count within the
    window.  `days` is a whole number of days, or a fraction for hours."""

    event: str
    days: float
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    event_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    amount_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DaysSince:
    """`days_since EVENT`: days since its latest occurrence; unset if none."""

    event: str
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    event_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    left: Expr
    right: Expr
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class InList:
    """`x in [a, b]` / `x not in [a, b]`."""

    operand: Expr
    items: tuple[Expr, ...]
    negated: bool = False
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class IsSet:
    """`x is set` / `x is not set`."""

    operand: Expr
    negated: bool = False
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class AtLeast:
    """`at least N of { e1 e2 … }`."""

    count: int
    items: tuple[Expr, ...]
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    count_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


Expr = Literal | Ref | Window | DaysSince | Compare | InList | IsSet | Not | And | Or | AtLeast


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `expr`, in source order."""
    if isinstance(expr, Compare):
        return (expr.left, expr.right)
    if isinstance(expr, InList):
        return (expr.operand, *expr.items)
    if isinstance(expr, (IsSet, Not)):
        return (expr.operand,)
    if isinstance(expr, (And, Or, AtLeast)):
        return expr.items
    return ()


def walk(expr: Expr):  # type: ignore[no-untyped-def]
    """Every node of `expr`, pre-order."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))
