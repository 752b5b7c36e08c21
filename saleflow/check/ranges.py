"""Rules about numbers in range (SF108, SF118, SF212, SF213).

A number of the right type can still be one no field, window, score or
stage can hold: a default beyond 64 bits, a window of a million days, an sla
of 0 days, a version past the limit.  These rules refuse them before deploy.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator

from ..errors import Diagnostic
from ..limits import (
    MAX_AT_LEAST,
    MAX_CAPACITY,
    MAX_DAYS,
    MAX_INT,
    MAX_NUMBER,
    MAX_POINTS,
    MAX_TEXT_LENGTH,
    MAX_TIME,
    MAX_VERSION,
    MIN_INT,
    MIN_TIME,
    number_text,
)
from ..model.flow import AtLeast, Compare, DaysSince, Expr, FieldDef, Literal, Ref, Window, walk
from .context import Context, at
from .typecheck import default_fits


def _finite_number(value: int | float) -> bool:
    """Whether `value` lies within ±MAX_NUMBER (never inf, never NaN)."""
    if isinstance(value, int):
        return -MAX_NUMBER <= value <= MAX_NUMBER
    return math.isfinite(value) and abs(value) <= MAX_NUMBER


def _default_range(definition: FieldDef) -> str | None:
    """Why a default that has the field's type cannot be stored, or None."""
    value = definition.default
    kind = definition.type.kind
    if kind == "int" and isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        return f"is not a 64-bit integer: a whole number from {MIN_INT:,} to {MAX_INT:,}"
    if kind in ("number", "money") and isinstance(value, (int, float)) and not _finite_number(value):
        return f"is beyond {MAX_NUMBER:g}, the largest number a field holds"
    if kind == "text" and isinstance(value, str) and len(value) > MAX_TEXT_LENGTH:
        return f"is {len(value):,} characters long; the limit is {MAX_TEXT_LENGTH:,}"
    if kind == "date" and isinstance(value, str):
        day = dt.date.fromisoformat(value)
        if not MIN_TIME.date() <= day < MAX_TIME.date():
            return f"is out of range: dates are from {MIN_TIME.date()} up to {MAX_TIME.date()}"
    return None


def default_ranges(ctx: Context) -> Iterator[Diagnostic]:
    """SF108 a default of the right type that no field can hold."""
    for definition in ctx.flow.fields:
        if definition.default is None or not default_fits(definition):
            continue  # a default of the wrong type is SF107
        problem = _default_range(definition)
        if problem is None:
            continue
        where = at(definition.default_span, definition.span)
        value = definition.default
        shown = (
            number_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "value"
        )
        yield ctx.error("SF108", where, f'default {shown} of field "{definition.name}" {problem}')


def _number_in_range(value: int | float) -> bool:
    """A number in an expression: a whole one fits 64 bits, any other lies
    within ±MAX_NUMBER (what an int, number or money field can hold)."""
    if isinstance(value, int):
        return MIN_INT <= value <= MAX_INT
    return _finite_number(value)


def _counts_days(ctx: Context, expr: Expr) -> bool:
    """`days_since EVENT`, `days_in_stage`, `days_since_created`."""
    return isinstance(expr, DaysSince) or (
        isinstance(expr, Ref) and ctx.kind_of(expr.name) == "builtin" and expr.name.startswith("days_")
    )


def _numeric(expr: Expr) -> int | float | None:
    if (
        isinstance(expr, Literal)
        and isinstance(expr.value, (int, float))
        and not isinstance(expr.value, bool)
    ):
        return expr.value
    return None


def expression_numbers(ctx: Context) -> Iterator[Diagnostic]:
    """SF118 a number in an expression or a score rule beyond its range:
    numbers, window days, days compared with, `at least` counts, points."""
    for top, _ in ctx.expressions():
        for node in walk(top):
            value = _numeric(node)
            if value is not None and not _number_in_range(value):
                yield ctx.error(
                    "SF118",
                    node.span,
                    f"number {number_text(value)} is out of range: a whole number fits 64 bits "
                    f"({MIN_INT:,} to {MAX_INT:,}), any other lies within ±{MAX_NUMBER:g}",
                )
            elif isinstance(node, Window) and node.days > MAX_DAYS:
                yield ctx.error(
                    "SF118",
                    at(node.amount_span, node.span),
                    f"a window of {number_text(node.days)} days is longer than {MAX_DAYS:,} days",
                )
            elif isinstance(node, AtLeast) and node.count > MAX_AT_LEAST:
                yield ctx.error(
                    "SF118",
                    at(node.count_span, node.span),
                    f"at least {number_text(node.count)} of {{..}}: the count is at most {MAX_AT_LEAST:,}",
                )
            elif isinstance(node, Compare):
                for days, other in ((node.left, node.right), (node.right, node.left)):
                    number = _numeric(other)
                    if (
                        _counts_days(ctx, days)
                        and number is not None
                        and _number_in_range(number)
                        and abs(number) > MAX_DAYS
                    ):
                        yield ctx.error(
                            "SF118",
                            other.span,
                            f"{number_text(number)} days is out of range: days compared with lie within ±{MAX_DAYS:,}",
                        )
    for score_rule in ctx.flow.score_rules:
        if abs(score_rule.points) > MAX_POINTS:
            yield ctx.error(
                "SF118",
                at(score_rule.points_span, score_rule.span),
                f"{number_text(abs(score_rule.points))} points is out of range: a rule gives at most "
                f"{MAX_POINTS:,} points",
            )


def stage_limits(ctx: Context) -> Iterator[Diagnostic]:
    """SF212 an `sla` or a `capacity` that is not positive."""
    for stage in ctx.flow.stages:
        if stage.sla_days is not None and stage.sla_days <= 0:
            yield ctx.error(
                "SF212",
                at(stage.sla_span, stage.span),
                f'sla of stage "{stage.name}" must be more than 0 days',
            )
        if stage.capacity is not None and stage.capacity < 1:
            yield ctx.error(
                "SF212",
                at(stage.capacity_span, stage.span),
                f'capacity of stage "{stage.name}" must be at least 1 lead',
            )


def flow_numbers(ctx: Context) -> Iterator[Diagnostic]:
    """SF213 a version, an `sla` or a `capacity` beyond its range."""
    flow = ctx.flow
    if not 1 <= flow.version <= MAX_VERSION:
        yield ctx.error(
            "SF213",
            at(flow.version_span, flow.span),
            f"version {number_text(flow.version)} is out of range: a version is from 1 to {MAX_VERSION:,}",
        )
    for stage in flow.stages:
        if stage.sla_days is not None and stage.sla_days > MAX_DAYS:
            yield ctx.error(
                "SF213",
                at(stage.sla_span, stage.span),
                f'sla of stage "{stage.name}" is {number_text(stage.sla_days)} days; the limit is {MAX_DAYS:,} days',
            )
        if stage.capacity is not None and stage.capacity > MAX_CAPACITY:
            yield ctx.error(
                "SF213",
                at(stage.capacity_span, stage.span),
                f'capacity of stage "{stage.name}" is {number_text(stage.capacity)} leads; '
                f"the limit is {MAX_CAPACITY:,}",
            )
