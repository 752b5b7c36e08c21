"""Rules about types (SF104, SF105, SF107, SF110-SF116, SF305).

Infers the static type of every expression (gates, conditions, score rules,
the `expect` steps of test blocks) and reports what does not fit: unknown
names, a comparison of a number with text, an enum value not in the list,
a default of the wrong type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import Diagnostic, Span, did_you_mean
from ..limits import number_text
from ..model.flow import (
    NUMERIC_KINDS,
    And,
    AtLeast,
    Compare,
    DaysSince,
    Expr,
    FieldDef,
    InList,
    IsSet,
    Literal,
    Not,
    Or,
    Ref,
    Window,
    duration_text,
)
from ..model.unparse import literal_text, shorten, unparse
from .context import Context, at
from .tests import check_tests

ORDERING_OPS = ("<", "<=", ">", ">=")


@dataclass(frozen=True, slots=True)
class _Type:
    """The static type of an expression: number, text, bool, date, or an
    enum (`field` is the enum field it comes from)."""

    kind: str
    field: FieldDef | None = None

    def describe(self) -> str:
        if self.kind == "enum" and self.field is not None:
            return str(self.field.type)
        return {"number": "a number", "text": "text", "bool": "true or false", "date": "a date"}[self.kind]


NUMBER = _Type("number")
TEXT = _Type("text")
BOOL = _Type("bool")
DATE = _Type("date")


class Expressions:
    """Infers the type of every expression and reports what does not fit."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.flow = ctx.flow
        self.found: list[Diagnostic] = []

    def report(self, diagnostic: Diagnostic) -> None:
        self.found.append(diagnostic)

    # boolean positions -----------------------------------------------------
    def boolean(self, expr: Expr) -> None:
        """`expr` stands where true or false is needed (a gate, `and`, …)."""
        kind = self.infer(expr)
        if kind is None or kind == BOOL:
            return
        self.report(
            self.ctx.error(
                "SF113",
                expr.span,
                f"{self.describe(expr)} is {self.counted_kind(expr, kind)}, not true or false",
                self.bool_hint(expr, kind),
            )
        )

    def describe(self, expr: Expr) -> str:
        if isinstance(expr, Ref):
            kind = self.ctx.kind_of(expr.name)
            return f'{kind} "{expr.name}"' if kind in ("field", "event", "condition") else f'"{expr.name}"'
        if isinstance(expr, Literal):
            return literal_text(expr.value)
        return f'"{shorten(unparse(expr))}"'

    def counted_kind(self, expr: Expr, kind: _Type) -> str:
        if isinstance(expr, Window) or (isinstance(expr, Ref) and self.ctx.kind_of(expr.name) == "event"):
            return "a count"
        return kind.describe()

    def bool_hint(self, expr: Expr, kind: _Type) -> str:
        text = shorten(unparse(expr))
        if isinstance(expr, Window) or (isinstance(expr, Ref) and self.ctx.kind_of(expr.name) == "event"):
            return f'write "{text} >= 1" to require that it happened'
        if isinstance(expr, Literal):
            return "write true or false"
        if kind == NUMBER:
            return f'compare it, e.g. "{text} > 0"'
        if isinstance(expr, Ref) and self.ctx.kind_of(expr.name) == "field":
            return f'write "{text} is set" to require a value'
        return "compare it with a value"

    # inference -------------------------------------------------------------
    def infer(self, expr: Expr) -> _Type | None:
        """The type of `expr`, reporting problems inside it; None when it
        cannot be known (already reported)."""
        if isinstance(expr, Literal):
            value = expr.value
            if isinstance(value, bool):
                return BOOL
            return TEXT if isinstance(value, str) else NUMBER
        if isinstance(expr, Ref):
            return self.ref(expr)
        if isinstance(expr, (Window, DaysSince)):
            self.counted(expr)
            return NUMBER
        if isinstance(expr, Compare):
            self.compare(expr)
        elif isinstance(expr, InList):
            self.in_list(expr)
        elif isinstance(expr, IsSet):
            self.is_set(expr)
        elif isinstance(expr, AtLeast):
            self.at_least(expr)
        elif isinstance(expr, (Not, And, Or)):
            for item in (expr.operand,) if isinstance(expr, Not) else expr.items:
                self.boolean(item)
        return BOOL

    def ref(self, expr: Ref) -> _Type | None:
        kind = self.ctx.kind_of(expr.name)
        if kind == "field":
            definition = self.flow.field(expr.name)
            assert definition is not None
            return _field_type(definition)
        if kind == "condition":
            return BOOL
        if kind in ("event", "builtin"):
            return NUMBER
        self.unknown(expr)
        return None

    def unknown(self, expr: Ref) -> None:
        hint = did_you_mean(expr.name, sorted(self.ctx.names))
        if hint is None:
            owners = [f.name for f in self.flow.fields if expr.name in f.type.choices]
            if owners:
                hint = f'"{expr.name}" is a value of field "{owners[0]}"; compare the field with it'
        self.report(self.ctx.error("SF104", expr.span, f'unknown name "{expr.name}"', hint))

    def counted(self, expr: Window | DaysSince) -> None:
        """SF105 `EVENT in last N days` / `days_since EVENT` / `each EVENT`
        must name an event; SF116 a window must be at least one day."""
        where = at(expr.event_span, expr.span)
        self.event_name(expr.event, where)
        if isinstance(expr, Window) and expr.days <= 0:
            days = at(expr.amount_span, expr.span)
            length = duration_text(expr.days)
            self.report(self.ctx.error("SF116", days, f"a window of {length} never holds any event"))

    def event_name(self, name: str, where: Span) -> None:
        if self.flow.event(name) is not None:
            return
        kind = self.ctx.kind_of(name)
        if kind is not None:
            self.report(self.ctx.error("SF105", where, f'"{name}" is a {kind}, not an event'))
            return
        hint = did_you_mean(name, [e.name for e in self.flow.events])
        self.report(self.ctx.error("SF105", where, f'unknown event "{name}"', hint))

    def each(self, expr: Ref | Window) -> None:
        if isinstance(expr, Ref):
            self.event_name(expr.name, expr.span)
        else:
            self.counted(expr)

    # comparisons -------------------------------------------------------------
    def enum_value_candidate(self, expr: Expr, enum: FieldDef) -> bool:
        """Whether `expr` stands for a value of `enum`: a string, or a bare
        name that is not a known name.  A known name means what it names,
        even when it is also one of the values (SF305), as in `guards`."""
        if isinstance(expr, Literal):
            # `true`/`false` as values are refused where declared (SF103).
            reserved = isinstance(expr.value, bool) and literal_text(expr.value) in enum.type.choices
            return isinstance(expr.value, str) or reserved
        if isinstance(expr, Ref):
            if self.ctx.kind_of(expr.name) is None:
                return True
            if expr.name in enum.type.choices:
                self.shadowed_value(enum, expr)
        return False

    def shadowed_value(self, enum: FieldDef, expr: Ref) -> None:
        """SF305 a bare name that is a value of `enum` and also a declared name."""
        kind = self.ctx.kind_of(expr.name)
        self.report(
            self.ctx.warning(
                "SF305",
                expr.span,
                f'"{expr.name}" here is the {kind} "{expr.name}", not the value "{expr.name}" '
                f'of field "{enum.name}"',
                f'write "{expr.name}" in quotes to mean the value, or rename the {kind}',
            )
        )

    def enum_value(self, enum: FieldDef, expr: Literal | Ref) -> None:
        """SF112 a value not in the enum's list."""
        value = expr.name if isinstance(expr, Ref) else str(expr.value)
        if isinstance(expr, Literal) and isinstance(expr.value, bool):
            value = literal_text(expr.value)
        choices = enum.type.choices
        if value not in choices:
            self.report(
                self.ctx.error(
                    "SF112",
                    expr.span,
                    f'"{value}" is not one of field "{enum.name}"\'s values [{", ".join(choices)}]',
                    did_you_mean(value, choices),
                )
            )

    def compare(self, expr: Compare) -> None:
        left, right = expr.left, expr.right
        for enum, other in ((self.ctx.enum_field(left), right), (self.ctx.enum_field(right), left)):
            if enum is not None and self.enum_value_candidate(other, enum):
                assert isinstance(other, (Literal, Ref))
                if expr.op in ORDERING_OPS:
                    self.ordering(expr, _field_type(enum))
                else:
                    self.enum_value(enum, other)
                return
        left_type, right_type = self.infer(left), self.infer(right)
        if left_type is None or right_type is None:
            return
        if expr.op in ORDERING_OPS:
            if _orderable(left, left_type, right, right_type):
                return
            if {left_type.kind, right_type.kind} & {"number", "date"}:
                self.mismatch(expr, left_type, right_type)
            else:
                self.ordering(expr, left_type)
        elif not _equatable(left, left_type, right, right_type):
            self.mismatch(expr, left_type, right_type)

    def ordering(self, expr: Compare, kind: _Type) -> None:
        self.report(
            self.ctx.error(
                "SF111",
                expr.span,
                f'"{expr.op}" compares numbers or dates, but {self.describe(expr.left)} is {kind.describe()}',
                'use "==", "!=" or "in [..]"' if kind.kind in ("enum", "text", "bool") else None,
            )
        )

    def mismatch(self, expr: Compare, left: _Type, right: _Type) -> None:
        at = expr.right if isinstance(expr.right, Literal) else expr
        at = expr.left if isinstance(expr.left, Literal) and at is expr else at
        self.report(
            self.ctx.error(
                "SF110",
                at.span,
                f"type mismatch: {self.describe(expr.left)} is {left.describe()} "
                f"but {self.describe(expr.right)} is {right.describe()}",
            )
        )

    def in_list(self, expr: InList) -> None:
        enum = self.ctx.enum_field(expr.operand)
        if enum is not None:
            for item in expr.items:
                if self.enum_value_candidate(item, enum):
                    assert isinstance(item, (Literal, Ref))
                    self.enum_value(enum, item)
                    continue
                kind = self.infer(item)
                if kind is not None and not _equatable(expr.operand, _field_type(enum), item, kind):
                    self.item_mismatch(expr, item, _field_type(enum), kind)
            return
        operand = self.infer(expr.operand)
        for item in expr.items:
            if operand is None and isinstance(item, Ref) and self.ctx.kind_of(item.name) is None:
                continue  # `foo in [a, b]`: "foo" is the mistake, not a and b
            kind = self.infer(item)
            if operand is not None and kind is not None and not _equatable(expr.operand, operand, item, kind):
                self.item_mismatch(expr, item, operand, kind)

    def item_mismatch(self, expr: InList, item: Expr, operand: _Type, kind: _Type) -> None:
        self.report(
            self.ctx.error(
                "SF110",
                item.span,
                f"type mismatch: {self.describe(expr.operand)} is {operand.describe()} "
                f"but {self.describe(item)} is {kind.describe()}",
            )
        )

    def is_set(self, expr: IsSet) -> None:
        operand = expr.operand
        if isinstance(operand, Ref):
            kind = self.ctx.kind_of(operand.name)
            if kind is None:
                self.unknown(operand)
            elif kind != "field":
                what = "builtin" if kind == "builtin" else kind
                self.report(
                    self.ctx.error(
                        "SF114",
                        operand.span,
                        f'{what} "{operand.name}" always has a value; only fields can be unset',
                        self.is_set_hint(operand.name, kind),
                    )
                )
            return
        self.infer(operand)

    def is_set_hint(self, name: str, kind: str) -> str | None:
        if kind == "event":
            return f'write "{name} >= 1" to require that it happened, or "days_since {name} is set"'
        if kind == "condition":
            return f'write "{name}" on its own'
        return None

    def at_least(self, expr: AtLeast) -> None:
        if expr.count < 1:
            where = at(expr.count_span, expr.span)
            self.report(
                self.ctx.error(
                    "SF115",
                    where,
                    f"at least {number_text(expr.count)} of {{..}} is always true",
                    "the count must be 1 or more",
                )
            )
        for item in expr.items:
            self.boolean(item)


def _field_type(definition: FieldDef) -> _Type:
    kind = definition.type.kind
    if kind in NUMERIC_KINDS:
        return NUMBER
    if kind == "enum":
        return _Type("enum", definition)
    return {"text": TEXT, "bool": BOOL, "date": DATE}.get(kind, TEXT)


def _date_literal(expr: Expr) -> bool:
    return isinstance(expr, Literal) and isinstance(expr.value, str) and _is_date(expr.value)


def _orderable(left: Expr, left_type: _Type, right: Expr, right_type: _Type) -> bool:
    """Whether `<`, `<=`, `>`, `>=` may compare the two sides."""
    if left_type == NUMBER and right_type == NUMBER:
        return True
    return _dates(left, left_type, right, right_type)


def _dates(left: Expr, left_type: _Type, right: Expr, right_type: _Type) -> bool:
    """A date against a date, or against a "YYYY-MM-DD" string."""
    sides = ((left, left_type), (right, right_type))
    return any(kind == DATE for _, kind in sides) and all(
        kind == DATE or _date_literal(expr) for expr, kind in sides
    )


def _equatable(left: Expr, left_type: _Type, right: Expr, right_type: _Type) -> bool:
    """Whether `==`, `!=`, `in` may compare the two sides."""
    kinds = {left_type.kind, right_type.kind}
    if left_type.kind == right_type.kind == "enum":
        assert left_type.field is not None and right_type.field is not None
        return bool(set(left_type.field.type.choices) & set(right_type.field.type.choices))
    if "enum" in kinds:
        return kinds == {"enum", "text"}
    if "date" in kinds:
        return _dates(left, left_type, right, right_type)
    return left_type == right_type


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def default_fits(definition: FieldDef) -> bool:
    value = definition.default
    kind = definition.type.kind
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in NUMERIC_KINDS:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "text":
        return isinstance(value, str)
    if kind == "date":
        return isinstance(value, str) and _is_date(value)
    return isinstance(value, str) and value in definition.type.choices


def field_defaults(ctx: Context) -> Iterator[Diagnostic]:
    """SF107 a default that is not a value of the field's type."""
    for definition in ctx.flow.fields:
        if definition.default is None or default_fits(definition):
            continue
        if (
            isinstance(definition.default, bool)
            and literal_text(definition.default) in definition.type.choices
        ):
            continue  # an enum value `true`/`false`, refused where declared (SF103)
        where = at(definition.default_span, definition.span)
        value = definition.default
        shown = literal_text(value)
        if definition.type.kind == "enum":
            hint = did_you_mean(str(value), definition.type.choices)
            yield ctx.error(
                "SF107",
                where,
                f'default {shown} is not one of field "{definition.name}"\'s values '
                f"[{', '.join(definition.type.choices)}]",
                hint,
            )
            continue
        kind = definition.type.kind
        wanted = {
            "int": "a whole number",
            "number": "a number",
            "money": "a number",
            "bool": "true or false",
            "text": 'a "string"',
            "date": 'a date like "2024-01-31"',
        }[kind]
        yield ctx.error(
            "SF107",
            where,
            f'default {shown} does not fit field "{definition.name}" of type {kind}',
            f"write {wanted}",
        )


def expression_types(ctx: Context) -> Iterator[Diagnostic]:
    """SF104 unknown names, SF105 events, SF110 to SF116 types, SF305."""
    checker = Expressions(ctx)
    for expr, boolean in ctx.expressions():
        if boolean:
            checker.boolean(expr)
        else:
            assert isinstance(expr, (Ref, Window))
            checker.each(expr)
    yield from checker.found


def test_blocks(ctx: Context) -> Iterator[Diagnostic]:
    """SF4xx test blocks (`tests.py`), and the types and names of
    their `expect EXPR` steps, judged like gates."""
    checker = Expressions(ctx)
    for test in ctx.flow.tests:
        for step in test.steps:
            if step.expr is not None:
                checker.boolean(step.expr)
    yield from checker.found
    yield from check_tests(ctx.flow)
