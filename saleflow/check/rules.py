"""Static checks of a parsed flow (SPEC §2, "Static checks").

Layer 2.  The parser builds a `Flow` without judging it; this module judges
it.  Every rule is one small function registered in `RULES`; `check` runs them
all and returns every diagnostic, sorted by position, so that one run of
`saleflow check` reports every problem (sqlglot style: collect, then raise
once, in the caller).  No rule raises on a bad flow: a rule that cannot judge
something because another rule already reported it stays silent, so one
mistake gives one diagnostic.

Codes are stable (docs/diagnostics.md lists them with an example each):
SF1xx names and types, SF2xx structure, SF3xx warnings.
"""

from __future__ import annotations

import bisect
import datetime as dt
import difflib
import gc
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..errors import Diagnostic, Span, did_you_mean
from ..limits import (
    MAX_AT_LEAST,
    MAX_CAPACITY,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_ID_LENGTH,
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
from ..model import graph
from ..model.flow import (
    BUILTINS,
    NUMERIC_KINDS,
    And,
    AtLeast,
    Compare,
    DaysSince,
    Expr,
    FieldDef,
    Flow,
    InList,
    IsSet,
    Literal,
    Not,
    Or,
    Recycle,
    Ref,
    Stage,
    Window,
    children,
    duration_text,
    walk,
)
from ..model.unparse import literal_text, shorten, unparse
from .tests import check_tests

ORDERING_OPS = ("<", "<=", ">", ">=")


def check(flow: Flow) -> list[Diagnostic]:
    """Every diagnostic of every rule for `flow`, sorted by position."""
    # As in parse.py: the cyclic collector would walk the big flow's nodes
    # again and again while the rules make their small objects.
    collecting = gc.isenabled()
    gc.disable()
    try:
        ctx = _Context(flow)
        found: dict[tuple[object, ...], Diagnostic] = {}
        too_deep = list(_too_deep(ctx))
        if too_deep:  # the rules recurse over expressions: judge nothing else
            return too_deep
        for rule in RULES:
            for diagnostic in rule(ctx):
                key = (diagnostic.code, diagnostic.span, diagnostic.message)
                found.setdefault(key, diagnostic)
        return sorted(found.values(), key=_position)
    finally:
        if collecting:
            gc.enable()


def _too_deep(ctx: _Context) -> Iterator[Diagnostic]:
    """SF007 for an expression nested past MAX_DEPTH.  The parser refuses
    them in flow text; a `Flow` built in Python may still hold one (a chain
    of 50,000 `Or` nodes), and the rules would recurse over it."""
    for top, _ in ctx.expressions():
        if _levels(top, {}) > MAX_DEPTH:
            yield ctx.error(
                "SF007",
                top.span,
                f"expression nested too deeply (more than {MAX_DEPTH} levels)",
                "name parts of it with condition NAME = … and use the names",
            )


def _position(d: Diagnostic) -> tuple[str, int, int, int, str]:
    return (d.span.file, d.span.line, d.span.column, 0 if d.is_error else 1, d.code)


# --------------------------------------------------------------------------
# Context: the flow, its name tables, and spans of names inside declarations
# --------------------------------------------------------------------------

_WORD = "[a-z0-9_]"


class _Locator:
    """Finds a word inside a declaration's span in the source text, so that a
    diagnostic about a skip's target points at the target, not the skip."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.starts = [0, *(match.end() for match in re.finditer("\n", source))]

    def _offset(self, line: int, column: int) -> int | None:
        if not self.source or line < 1 or line > len(self.starts):
            return None
        return self.starts[line - 1] + max(column, 1) - 1

    def at(self, file: str, start: int, end: int) -> Span:
        """The span of the characters `start`…`end` of the source."""
        return self._span(file, start, end)

    def _span(self, file: str, start: int, end: int) -> Span:
        line = bisect.bisect_right(self.starts, start)
        end_line = bisect.bisect_right(self.starts, end)
        return Span(
            file,
            line,
            start - self.starts[line - 1] + 1,
            end_line,
            end - self.starts[end_line - 1] + 1,
        )

    def find(self, span: Span, pattern: str, *, after: str | None = None, nth: int = 0) -> Span:
        """The span of the `nth` match of `pattern` (a regex whose group 1, if
        any, is the part to point at) inside `span`, searching from the end of
        the first match of `after`; `span` itself when not found."""
        start = self._offset(span.line, span.column)
        end = self._offset(span.end_line, span.end_column)
        if start is None or end is None or end <= start:
            return span
        text = self.source[start:end]
        position = 0
        if after is not None:
            anchor = re.search(after, text)
            if anchor is None:
                return span
            position = anchor.end()
        matches = list(re.compile(pattern).finditer(text, position))
        if len(matches) <= nth:
            return span
        match = matches[nth]
        group = 1 if match.re.groups else 0
        return self._span(span.file, start + match.start(group), start + match.end(group))

    def until(self, span: Span, stop: str) -> Span:
        """From the start of `span` to the first match of `stop` after its
        end (or the end of the source)."""
        start = self._offset(span.line, span.column)
        end = self._offset(span.end_line, span.end_column)
        if start is None or end is None:
            return span
        match = re.compile(stop).search(self.source, end)
        return self._span(span.file, start, match.start() if match else len(self.source))

    def names(self, span: Span, *, after: str) -> list[Span]:
        """The span of every name written inside `span` after the first
        match of `after`, in order, comments and strings left out: the
        values of `one of [..]`, the stages of a recycle.  One pass, so that
        a list of 100,000 names is located in linear time."""
        start = self._offset(span.line, span.column)
        end = self._offset(span.end_line, span.end_column)
        if start is None or end is None or end <= start:
            return []
        anchor = re.compile(after).search(self.source, start, end)
        if anchor is None:
            return []
        return [
            self._span(span.file, match.start(1), match.end(1))
            for match in _NAME_OR_SKIPPED.finditer(self.source, anchor.end(), end)
            if match.group(1)
        ]

    def word(self, span: Span, word: str, *, after: str | None = None, nth: int = 0) -> Span:
        return self.find(span, rf"(?<!{_WORD}){re.escape(word)}(?!{_WORD})", after=after, nth=nth)


# A name, or something whose words are not names (a comment, a string).
_NAME_OR_SKIPPED = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|([a-z_][a-z0-9_]*)')


def _keyword(word: str) -> str:
    return rf"(?<!{_WORD}){word}(?!{_WORD})"


# Where a stage's declaration ends at the latest.
_NEXT_DECLARATION = (
    _keyword("(?:stage|target|field|event|condition|team|skip|recycle|flow)")
    + r"|\}|#|"
    + _keyword("score")
    + r"\s*\{"
)


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


class _Context:
    """What the rules share: the flow, a locator and name lookups."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.locate = _Locator(flow.source)
        self.facts = _fact_declarations(flow)
        kinds = {name: "builtin" for name in BUILTINS}
        for kind, name, _ in self.facts:
            kinds.setdefault(name, kind)  # on a clash (reported), the first declaration wins
        self.kinds = kinds
        self.names = set(kinds)
        self._recycles: dict[int, tuple[Recycle, list[Span]]] = {}

    # diagnostics ----------------------------------------------------------
    @staticmethod
    def error(code: str, span: Span, message: str, hint: str | None = None) -> Diagnostic:
        return Diagnostic(code, "error", span, message, hint)

    @staticmethod
    def warning(code: str, span: Span, message: str, hint: str | None = None) -> Diagnostic:
        return Diagnostic(code, "warning", span, message, hint)

    # spans of names -------------------------------------------------------
    def name_span(self, span: Span, name: str, keyword: str) -> Span:
        """Where `name` is written after `keyword` in a declaration."""
        return self.locate.word(span, name, after=_keyword(keyword))

    def recycle_source(self, recycle: Recycle, nth: int) -> Span:
        """Where the `nth` source stage of `recycle` is written (the list
        is located once, however many of its stages have a diagnostic)."""
        located = self._recycles.get(id(recycle))
        if located is None or located[0] is not recycle:
            located = (recycle, self.locate.names(recycle.span, after=_keyword("recycle")))
            self._recycles[id(recycle)] = located
        spans = located[1]
        return spans[nth] if nth < len(spans) else recycle.span

    def stage_name_span(self, stage: Stage) -> Span:
        return self.locate.word(stage.span, stage.name)

    def stage_option(self, stage: Stage, pattern: str) -> Span:
        """Where `pattern` (e.g. the word "final") is written in the
        declaration of `stage`, whose span may cover only its name."""
        declaration = self.locate.until(self.stage_name_span(stage), _NEXT_DECLARATION)
        found = self.locate.find(declaration, pattern)
        return self.stage_name_span(stage) if found == declaration else found

    # name lookups ---------------------------------------------------------
    def kind_of(self, name: str) -> str | None:
        """What `name` is: "field", "condition", "event", "builtin" or None."""
        return self.kinds.get(name)

    def enum_field(self, expr: Expr) -> FieldDef | None:
        if isinstance(expr, Ref) and self.kind_of(expr.name) == "field":
            definition = self.flow.field(expr.name)
            if definition is not None and definition.type.kind == "enum":
                return definition
        return None

    def expressions(self) -> Iterator[tuple[Expr, bool]]:
        """Every top-level expression of the flow, with whether it stands in
        a boolean position (a gate, a condition, a score rule's `if`)."""
        flow = self.flow
        for condition in flow.conditions:
            yield condition.expr, True
        for rule in flow.score_rules:
            if rule.condition is not None:
                yield rule.condition, True
            if rule.each is not None:
                yield rule.each, False
        for stage in flow.stages:
            if stage.when is not None:
                yield stage.when, True
        for skip in flow.skips:
            if skip.when is not None:
                yield skip.when, True
        for recycle in flow.recycles:
            if recycle.when is not None:
                yield recycle.when, True


def _by_position(span: Span) -> tuple[int, int]:
    return (span.line, span.column)


def _fact_declarations(flow: Flow) -> list[tuple[str, str, Span]]:
    """(kind, name, span) of every field, condition and event, in source order."""
    declared = [
        *(("field", f.name, f.span) for f in flow.fields),
        *(("condition", c.name, c.span) for c in flow.conditions),
        *(("event", e.name, e.span) for e in flow.events),
    ]
    return sorted(declared, key=lambda d: _by_position(d[2]))


Rule = Callable[[_Context], Iterable[Diagnostic]]
RULES: list[Rule] = []


def rule(function: Rule) -> Rule:
    RULES.append(function)
    return function


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


# --------------------------------------------------------------------------
# SF1xx: names
# --------------------------------------------------------------------------


@rule
def duplicate_names(ctx: _Context) -> Iterator[Diagnostic]:
    """SF101 a name declared twice; SF102 a field, condition and event share
    one name; SF103 a name that shadows a builtin."""
    flow = ctx.flow
    declared = sorted(
        [
            *ctx.facts,
            *(("stage", s.name, s.span) for s in flow.stages),
            *(("team", t.name, t.span) for t in flow.teams),
        ],
        key=lambda d: _by_position(d[2]),
    )
    first: dict[tuple[str, str], Span] = {}
    facts: dict[str, tuple[str, Span]] = {}  # fields, conditions, events share one namespace
    for kind, name, span in declared:
        # Located only for a diagnostic (costly on flows with thousands of stages).
        def where(span: Span = span, name: str = name, kind: str = kind) -> Span:
            return ctx.name_span(span, name, kind)

        if (kind, name) in first:
            yield ctx.error(
                "SF101",
                where(),
                f'{kind} "{name}" is declared twice',
                f"the first declaration is on line {first[kind, name].line}",
            )
            continue
        first[kind, name] = span
        if kind in ("stage", "team"):
            continue
        if name in BUILTINS:
            yield ctx.error(
                "SF103",
                where(),
                f'{kind} "{name}" has the name of the builtin "{name}"',
                "choose another name",
            )
        elif name in RESERVED_WORDS:
            yield ctx.error(
                "SF103",
                where(),
                f'{kind} "{name}" is named like the word "{name}" of expressions, so no expression can use it',
                "choose another name",
            )
        elif name in facts:
            other, other_span = facts[name]
            yield ctx.error(
                "SF102",
                where(),
                f'{kind} "{name}" has the same name as the {other} on line {other_span.line}',
                "fields, conditions and events share one set of names; rename one of them",
            )
        else:
            facts[name] = (kind, span)


@rule
def long_names(ctx: _Context) -> Iterator[Diagnostic]:
    """SF120 a name longer than MAX_ID_LENGTH characters: flows, stages,
    fields, events and their channels become keys in the database."""
    source = ctx.flow.source
    for match in _NAME_OR_SKIPPED.finditer(source):
        name = match.group(1)
        if name is None or len(name) <= MAX_ID_LENGTH:
            continue
        span = ctx.locate.at(ctx.flow.path, match.start(1), match.end(1))
        yield ctx.error(
            "SF120",
            span,
            f"a name of {len(name):,} characters; names have at most {MAX_ID_LENGTH:,}",
            "choose a shorter name",
        )


# Words an expression reads as part of the language wherever a name could
# stand (`true`, `not b`, `at least`, `days_since e`): a field, condition,
# event or enum value spelt like one could never be written bare.
RESERVED_WORDS = ("true", "false", "not", "at", "days_since")


@rule
def enum_values(ctx: _Context) -> Iterator[Diagnostic]:
    """SF101 a value listed twice in `one of [..]`; SF103 a value spelt like
    a word of expressions."""
    for definition in ctx.flow.fields:
        choices = definition.type.choices
        located: list[Span] | None = None
        seen: dict[str, int] = {}
        for index, choice in enumerate(choices):
            earlier = seen.get(choice, 0)
            seen[choice] = earlier + 1
            if choice not in RESERVED_WORDS and not earlier:
                continue  # the usual case: no diagnostic, nothing to locate
            if located is None:  # every value at once: one pass over the list
                located = ctx.locate.names(definition.span, after=r"\[")
            where = located[index] if index < len(located) else definition.span
            if choice in RESERVED_WORDS and not earlier:
                yield ctx.error(
                    "SF103",
                    where,
                    f'value "{choice}" of field "{definition.name}" is spelt like the word "{choice}" of expressions',
                    f"a bare {choice} would never mean the value; choose another value",
                )
            if earlier:
                message = f'value "{choice}" is listed twice in field "{definition.name}"'
                yield ctx.error("SF101", where, message)


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _default_fits(definition: FieldDef) -> bool:
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


@rule
def field_defaults(ctx: _Context) -> Iterator[Diagnostic]:
    """SF107 a default that is not a value of the field's type."""
    for definition in ctx.flow.fields:
        if definition.default is None or _default_fits(definition):
            continue
        if (
            isinstance(definition.default, bool)
            and literal_text(definition.default) in definition.type.choices
        ):
            continue  # an enum value `true`/`false`, refused where declared (SF103)
        where = ctx.locate.find(definition.span, r'\s*("(?:[^"\\]|\\.)*"|\S+)', after=_keyword("default"))
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


def _finite_number(value: int | float) -> bool:
    """Whether `value` lies within ±MAX_NUMBER (never inf, never NaN)."""
    if isinstance(value, int):
        return -MAX_NUMBER <= value <= MAX_NUMBER
    return math.isfinite(value) and abs(value) <= MAX_NUMBER


@rule
def default_ranges(ctx: _Context) -> Iterator[Diagnostic]:
    """SF108 a default of the right type that no field can hold."""
    for definition in ctx.flow.fields:
        if definition.default is None or not _default_fits(definition):
            continue  # a default of the wrong type is SF107
        problem = _default_range(definition)
        if problem is None:
            continue
        where = ctx.locate.find(definition.span, r'\s*("(?:[^"\\]|\\.)*"|\S+)', after=_keyword("default"))
        value = definition.default
        shown = (
            number_text(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "value"
        )
        yield ctx.error("SF108", where, f'default {shown} of field "{definition.name}" {problem}')


# --------------------------------------------------------------------------
# SF1xx: expressions (names and types)
# --------------------------------------------------------------------------


class _Expressions:
    """Infers the type of every expression and reports what does not fit."""

    def __init__(self, ctx: _Context) -> None:
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
        if isinstance(expr, DaysSince):
            where = self.ctx.locate.word(expr.span, expr.event, after=_keyword("days_since"))
        else:
            where = self.ctx.locate.word(expr.span, expr.event)
        self.event_name(expr.event, where)
        if isinstance(expr, Window) and expr.days <= 0:
            days = self.ctx.locate.find(expr.span, r"(\S+)\s+(?:days?|hours?)\b", after=_keyword("last"))
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
        even when it is also one of the values (SF305), as in `guards.py`."""
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
            where = self.ctx.locate.find(expr.span, r"(\S+)", after=_keyword("least"))
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


@rule
def expression_types(ctx: _Context) -> Iterator[Diagnostic]:
    """SF104 unknown names, SF105 events, SF110 to SF116 types, SF305."""
    checker = _Expressions(ctx)
    for expr, boolean in ctx.expressions():
        if boolean:
            checker.boolean(expr)
        else:
            assert isinstance(expr, (Ref, Window))
            checker.each(expr)
    yield from checker.found


def _number_in_range(value: int | float) -> bool:
    """A number in an expression: a whole one fits 64 bits, any other lies
    within ±MAX_NUMBER (what an int, number or money field can hold)."""
    if isinstance(value, int):
        return MIN_INT <= value <= MAX_INT
    return _finite_number(value)


def _counts_days(ctx: _Context, expr: Expr) -> bool:
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


@rule
def expression_numbers(ctx: _Context) -> Iterator[Diagnostic]:
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
                    ctx.locate.find(node.span, r"(\S+)\s+days", after=_keyword("last")),
                    f"a window of {number_text(node.days)} days is longer than {MAX_DAYS:,} days",
                )
            elif isinstance(node, AtLeast) and node.count > MAX_AT_LEAST:
                yield ctx.error(
                    "SF118",
                    ctx.locate.find(node.span, r"(\S+)", after=_keyword("least")),
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
                ctx.locate.find(score_rule.span, r"([+-]\s*[0-9.]+)"),
                f"{number_text(abs(score_rule.points))} points is out of range: a rule gives at most "
                f"{MAX_POINTS:,} points",
            )


def _levels(expr: Expr, conditions: dict[str, int]) -> int:
    """How deeply `expr` nests, as SF007 counts, plus the depth of every
    condition it names (`conditions`, those judged so far).  No recursion."""
    deepest = 0
    stack: list[tuple[Expr, int]] = [(expr, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (Not, AtLeast, Compare, InList, IsSet)) or (
            isinstance(node, (And, Or)) and len(node.items) > 1
        ):
            depth += 1
        if isinstance(node, Ref):
            depth += conditions.get(node.name, 0)
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children(node))
    return deepest


def _condition_depths(flow: Flow) -> dict[str, int]:
    """The depth of every condition, conditions it names included: those it
    names are judged first (a depth-first walk without recursion; a cycle,
    SF117, is cut where it closes)."""
    depths: dict[str, int] = {}
    started: set[str] = set()
    for root in flow.conditions:
        if root.name in started:
            continue
        started.add(root.name)
        work: list[tuple[str, Iterator[str]]] = [(root.name, _named_conditions(flow, root.name))]
        while work:
            name, pending = work[-1]
            nxt = next(pending, None)
            if nxt is None:
                work.pop()
                definition = flow.condition(name)
                assert definition is not None
                depths[name] = _levels(definition.expr, depths)
            elif nxt not in started:
                started.add(nxt)
                work.append((nxt, _named_conditions(flow, nxt)))
    return depths


def _named_conditions(flow: Flow, name: str) -> Iterator[str]:
    definition = flow.condition(name)
    assert definition is not None
    return (
        node.name for node in walk(definition.expr) if isinstance(node, Ref) and flow.condition(node.name)
    )


@rule
def condition_depth(ctx: _Context) -> Iterator[Diagnostic]:
    """SF119 an expression that nests too deeply through the conditions it
    names (one diagnostic per chain: where it first passes the limit)."""
    flow = ctx.flow
    depths = _condition_depths(flow)
    for top, _ in ctx.expressions():
        if _levels(top, depths) <= MAX_DEPTH:
            continue
        named = [node for node in walk(top) if isinstance(node, Ref) and node.name in depths]
        if any(depths[node.name] > MAX_DEPTH for node in named):
            continue  # that condition is reported itself
        deepest = max(named, key=lambda node: depths[node.name], default=None)
        yield ctx.error(
            "SF119",
            top.span if deepest is None else deepest.span,
            f"expression nested too deeply through the conditions it names (more than {MAX_DEPTH} levels)",
            "a condition that names a condition that names a condition … is evaluated inside all of them; "
            "write some of them out",
        )


@rule
def test_blocks(ctx: _Context) -> Iterator[Diagnostic]:
    """SF4xx test blocks (`checktests.py`), and the types and names of
    their `expect EXPR` steps, judged like gates."""
    checker = _Expressions(ctx)
    for test in ctx.flow.tests:
        for step in test.steps:
            if step.expr is not None:
                checker.boolean(step.expr)
    yield from checker.found
    yield from check_tests(ctx.flow)


@rule
def condition_cycles(ctx: _Context) -> Iterator[Diagnostic]:
    """SF117 a condition that depends on itself."""
    flow = ctx.flow
    order = [c.name for c in flow.conditions if flow.condition(c.name) is c]
    position = {name: index for index, name in enumerate(order)}
    uses: dict[str, list[Ref]] = {}
    for name in order:
        definition = flow.condition(name)
        assert definition is not None
        uses[name] = [
            node for node in walk(definition.expr) if isinstance(node, Ref) and flow.condition(node.name)
        ]
    for component in _cycles(order, {name: [r.name for r in refs] for name, refs in uses.items()}):
        head = min(component, key=position.__getitem__)
        path = _path_back(head, component, {n: [r.name for r in uses[n]] for n in component})
        ref = next(r for r in uses[head] if r.name == path[1])
        yield ctx.error(
            "SF117",
            ref.span,
            f'condition "{head}" depends on itself: {" -> ".join(path)}',
            "a condition may use other conditions, but not in a cycle",
        )


def _cycles(order: list[str], edges: dict[str, list[str]]) -> list[set[str]]:
    """Strongly connected components that contain a cycle (Tarjan's
    algorithm, without recursion: a chain of 50,000 conditions is fine)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in order:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges.get(root, [])))]
        while work:
            node, pending = work[-1]
            nxt = next(pending, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges.get(nxt, []))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, []):
                    found.append(component)
    return found


def _path_back(head: str, component: set[str], edges: dict[str, list[str]]) -> list[str]:
    """The shortest path head -> … -> head inside `component`."""
    previous: dict[str, str] = {}
    queue = deque([head])
    while queue:
        node = queue.popleft()
        for nxt in edges[node]:
            if nxt == head:
                path = [node]
                while path[-1] != head:
                    path.append(previous[path[-1]])
                return [*reversed(path), head]
            if nxt in component and nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return [head, head]


# --------------------------------------------------------------------------
# SF106: stage and team names
# --------------------------------------------------------------------------


def _unknown_stage(ctx: _Context, name: str, where: Span, role: str) -> Diagnostic:
    return ctx.error(
        "SF106",
        where,
        f'unknown stage "{name}" in {role}',
        did_you_mean(name, ctx.flow.stage_names),
    )


@rule
def unknown_stages(ctx: _Context) -> Iterator[Diagnostic]:
    """SF106 a skip, recycle, target or team that names no declared stage."""
    flow = ctx.flow
    for skip in flow.skips:
        for name, keyword in ((skip.source, "skip"), (skip.target, "->")):
            if flow.stage(name) is None:
                yield _unknown_stage(ctx, name, ctx.name_span(skip.span, name, keyword), "a skip")
    for recycle in flow.recycles:
        first: dict[str, int] = {}
        for nth, name in enumerate(recycle.sources):
            first.setdefault(name, nth)
            if flow.stage(name) is None:
                where = ctx.recycle_source(recycle, first[name])
                yield _unknown_stage(ctx, name, where, "a recycle")
        if flow.stage(recycle.target) is None:
            where = ctx.locate.word(recycle.span, recycle.target, after="->")
            yield _unknown_stage(ctx, recycle.target, where, "a recycle")
    for team in flow.teams:
        for name in team.stages:
            if flow.stage(name) is None:
                yield _unknown_stage(ctx, name, ctx.name_span(team.span, name, "team"), f'team "{team.name}"')
        for target in team.targets:
            keyword = "conversion" if target.kind == "conversion" else "in"
            if flow.stage(target.stage) is None:
                where = ctx.name_span(target.span, target.stage, keyword)
                yield _unknown_stage(ctx, target.stage, where, "a target")
            if target.to is not None and flow.stage(target.to) is None:
                where = ctx.locate.word(target.span, target.to, after="->")
                yield _unknown_stage(ctx, target.to, where, "a target")
    teams = [team.name for team in flow.teams]
    for stage in flow.stages:
        if stage.team is not None and flow.team(stage.team) is None:
            yield ctx.error(
                "SF106",
                ctx.stage_name_span(stage),
                f'stage "{stage.name}" belongs to unknown team "{stage.team}"',
                did_you_mean(stage.team, teams),
            )


# --------------------------------------------------------------------------
# SF2xx: structure
# --------------------------------------------------------------------------


@rule
def initial_stage(ctx: _Context) -> Iterator[Diagnostic]:
    """SF201 no initial stage; SF202 more than one; SF203 an initial side
    stage; SF204 a gate on the initial stage."""
    flow = ctx.flow
    initials = [stage for stage in flow.stages if stage.initial]
    if not initials:
        hint = "declare a team with its stages, the first one marked initial"
        if flow.main_line:
            hint = f'mark the first stage of the main line "initial": stage {flow.main_line[0]} initial'
        yield ctx.error(
            "SF201",
            ctx.name_span(flow.span, flow.name, "flow"),
            f'flow "{flow.name}" has no initial stage',
            hint,
        )
        return
    first = initials[0]
    for stage in initials[1:]:
        yield ctx.error(
            "SF202",
            ctx.stage_option(stage, _keyword("initial")),
            f'stage "{stage.name}" is marked initial, but "{first.name}" already is',
            "a flow has exactly one initial stage, where every lead starts",
        )
    for stage in initials:
        if stage.team is None:
            yield ctx.error(
                "SF203",
                ctx.stage_name_span(stage),
                f'initial stage "{stage.name}" is a side stage',
                "declare it as the first stage of a team, on the main line",
            )
        if stage.when is not None:
            yield ctx.error(
                "SF204",
                stage.when.span,
                f'initial stage "{stage.name}" cannot have a gate: leads start there, no move enters it',
                'remove the "when"',
            )


@rule
def final_in_main_line(ctx: _Context) -> Iterator[Diagnostic]:
    """SF205 a final stage inside the main line that is not its last stage."""
    flow = ctx.flow
    main = flow.main_line
    for stage in flow.stages:
        index = flow.position(stage.name)
        if not stage.final or stage.team is None or index is None or index == len(main) - 1:
            continue
        if flow.stage(stage.name) is not stage:
            continue  # a duplicate, reported as such
        after = main[index + 1 :]
        more = ", …" if len(after) > 2 else ""
        yield ctx.error(
            "SF205",
            ctx.stage_option(stage, _keyword("final")),
            f'final stage "{stage.name}" is not the last stage of the main line',
            f"no lead can advance past it to {_quoted(after[:2])}{more}; "
            "declare it outside the teams to make it a side stage",
        )


@rule
def skips(ctx: _Context) -> Iterator[Diagnostic]:
    """SF207 a skip to or from a side stage; SF206 a skip that does not go
    forward along the main line."""
    flow = ctx.flow
    for skip in flow.skips:
        source, target = flow.stage(skip.source), flow.stage(skip.target)
        if source is None or target is None:
            continue
        # Spans are located only for a diagnostic: on a flow with thousands
        # of skips, locating every name costs more than the whole check.
        side = False
        for stage, role in ((source, "from"), (target, "to")):
            if flow.position(stage.name) is None:
                side = True
                hint = "a skip jumps forward along the main line"
                if role == "to" and stage.final:
                    hint = f'leads leave for final side stage "{stage.name}" by exit, from any stage'
                if role == "from":
                    where = ctx.name_span(skip.span, skip.source, "skip")
                else:
                    where = ctx.locate.word(skip.span, skip.target, after="->")
                yield ctx.error("SF207", where, f'skip {role} side stage "{stage.name}"', hint)
        if side:
            continue
        source_index, target_index = flow.position(skip.source), flow.position(skip.target)
        assert source_index is not None and target_index is not None
        if target_index > source_index:
            continue
        target_at = ctx.locate.word(skip.span, skip.target, after="->")
        if target_index == source_index:
            yield ctx.error("SF206", target_at, f'skip from "{skip.source}" to itself goes nowhere')
        else:
            yield ctx.error(
                "SF206",
                target_at,
                f'skip from "{skip.source}" goes backwards: "{skip.target}" comes before it on the main line',
                "use recycle to move leads back",
            )


@rule
def recycles(ctx: _Context) -> Iterator[Diagnostic]:
    """SF209 a recycle to or from a side or final stage; SF208 a recycle
    that does not go back along the main line."""
    flow = ctx.flow
    for recycle in flow.recycles:
        target = flow.stage(recycle.target)
        target_at = ctx.locate.word(recycle.span, recycle.target, after="->")
        if target is not None:
            problem = _recycle_stage_problem(flow, target)
            if problem:
                yield ctx.error(
                    "SF209",
                    target_at,
                    f'recycle to {problem} "{target.name}"',
                    "a recycle moves leads back to an earlier stage of the main line",
                )
                target = None
        for nth, name in enumerate(recycle.sources):
            source = flow.stage(name)
            if source is None:
                continue
            problem = _recycle_stage_problem(flow, source)
            source_index = flow.position(name)
            target_index = None if target is None else flow.position(target.name)
            if not problem and (target_index is None or source_index is None or source_index > target_index):
                continue  # fine, or judged elsewhere: locating the name is costly, skip it
            where = ctx.recycle_source(recycle, nth)
            if problem:
                hint = "a recycle moves leads back from a later stage of the main line"
                if source.final:
                    hint = "a final stage ends the lead's way; recycle it before it gets there"
                yield ctx.error("SF209", where, f'recycle from {problem} "{name}"', hint)
                continue
            assert target is not None and source_index is not None and target_index is not None
            if source_index == target_index:
                yield ctx.error("SF208", where, f'recycle from "{name}" to itself goes nowhere')
            elif source_index < target_index:
                yield ctx.error(
                    "SF208",
                    where,
                    f'recycle from "{name}" goes forwards: "{target.name}" comes after it on the main line',
                    "use skip to jump forward",
                )


def _recycle_stage_problem(flow: Flow, stage: Stage) -> str | None:
    if flow.position(stage.name) is None:
        return "final side stage" if stage.final else "side stage"
    return "final stage" if stage.final else None


@rule
def targets(ctx: _Context) -> Iterator[Diagnostic]:
    """SF210 a target value out of range; SF211 a conversion target that
    goes backwards along the main line."""
    flow = ctx.flow
    for team in flow.teams:
        for target in team.targets:
            if target.kind == "conversion":
                if not 0 <= target.value <= 100:
                    yield ctx.error(
                        "SF210",
                        ctx.locate.find(target.span, r"(-?[0-9.]+)\s*%"),
                        f"conversion target {number_text(target.value)}% is not a percentage between 0 and 100",
                    )
                start = flow.position(target.stage)
                end = flow.position(target.to) if target.to is not None else None
                if start is not None and end is not None and end <= start:
                    yield ctx.error(
                        "SF211",
                        ctx.locate.word(target.span, target.to or "", after="->"),
                        f'conversion target from "{target.stage}" to "{target.to}" does not go forward '
                        "along the main line",
                        "a conversion counts leads that reach a later stage",
                    )
            elif target.value < 0:
                yield ctx.error(
                    "SF210",
                    ctx.locate.find(target.span, r"(-?[0-9.]+)\s*days"),
                    f"time target of {number_text(target.value)} days is negative",
                )
            elif target.value > MAX_DAYS:
                yield ctx.error(
                    "SF210",
                    ctx.locate.find(target.span, r"(-?[0-9.]+)\s*days"),
                    f"time target of {number_text(target.value)} days is more than {MAX_DAYS:,} days",
                )


@rule
def stage_limits(ctx: _Context) -> Iterator[Diagnostic]:
    """SF212 an `sla` or a `capacity` that is not positive."""
    for stage in ctx.flow.stages:
        if stage.sla_days is not None and stage.sla_days <= 0:
            yield ctx.error(
                "SF212",
                ctx.stage_option(stage, _keyword("sla") + r"\s*(-?[0-9.]+)"),
                f'sla of stage "{stage.name}" must be more than 0 days',
            )
        if stage.capacity is not None and stage.capacity < 1:
            yield ctx.error(
                "SF212",
                ctx.stage_option(stage, _keyword("capacity") + r"\s*(-?[0-9.]+)"),
                f'capacity of stage "{stage.name}" must be at least 1 lead',
            )


@rule
def flow_numbers(ctx: _Context) -> Iterator[Diagnostic]:
    """SF213 a version, an `sla` or a `capacity` beyond its range."""
    flow = ctx.flow
    if not 1 <= flow.version <= MAX_VERSION:
        yield ctx.error(
            "SF213",
            ctx.locate.find(flow.span, _keyword("version") + r"\s*(\S+)"),
            f"version {number_text(flow.version)} is out of range: a version is from 1 to {MAX_VERSION:,}",
        )
    for stage in flow.stages:
        if stage.sla_days is not None and stage.sla_days > MAX_DAYS:
            yield ctx.error(
                "SF213",
                ctx.stage_option(stage, _keyword("sla") + r"\s*(-?[0-9.]+)"),
                f'sla of stage "{stage.name}" is {number_text(stage.sla_days)} days; the limit is {MAX_DAYS:,} days',
            )
        if stage.capacity is not None and stage.capacity > MAX_CAPACITY:
            yield ctx.error(
                "SF213",
                ctx.stage_option(stage, _keyword("capacity") + r"\s*(-?[0-9.]+)"),
                f'capacity of stage "{stage.name}" is {number_text(stage.capacity)} leads; '
                f"the limit is {MAX_CAPACITY:,}",
            )


# --------------------------------------------------------------------------
# SF3xx: warnings
# --------------------------------------------------------------------------


def _reachable(flow: Flow) -> set[str] | None:
    """The stages a lead can get to from the initial stage without force;
    None when there is no initial stage on the main line to start from."""
    initial = flow.initial
    if initial is None or flow.position(initial.name) is None:
        return None
    moves = graph.successors(flow)
    seen = {initial.name}
    todo = [initial.name]
    while todo:
        for nxt in moves[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@rule
def unreachable_stages(ctx: _Context) -> Iterator[Diagnostic]:
    """SF301 a stage no move leads to from the initial stage."""
    flow = ctx.flow
    reachable = _reachable(flow)
    if reachable is None or flow.initial is None:
        return
    for stage in flow.stages:
        if stage.name in reachable or flow.stage(stage.name) is not stage:
            continue
        if flow.position(stage.name) is None:
            hint = 'only a final side stage is entered by exit; mark it "final" or move it into a team'
        else:
            hint = "no advance, skip or recycle leads here"
        yield ctx.warning(
            "SF301",
            ctx.stage_name_span(stage),
            f'stage "{stage.name}" can never be reached from initial stage "{flow.initial.name}"',
            hint,
        )


@rule
def dead_ends(ctx: _Context) -> Iterator[Diagnostic]:
    """SF302 a stage that is not final and has no way out (only reported
    for stages a lead can reach)."""
    flow = ctx.flow
    moves = graph.successors(flow)
    reachable = _reachable(flow)
    for stage in flow.stages:
        if stage.final or flow.stage(stage.name) is not stage or moves[stage.name] - {stage.name}:
            continue
        if reachable is not None and stage.name not in reachable:
            continue
        yield ctx.warning(
            "SF302",
            ctx.stage_name_span(stage),
            f'stage "{stage.name}" is not final and has no way out',
            'mark it "final", or declare a final side stage (e.g. "stage lost final") for leads to exit to',
        )


# How deep `_static` looks (expression levels plus condition names
# followed); beyond it a value counts as unknown, which is always safe for a
# warning.  It keeps a chain of 50,000 conditions from exhausting the stack.
_STATIC_DEPTH = 200


def _static(flow: Flow, expr: Expr, memo: dict[str, bool | None], depth: int = 0) -> bool | None:
    """The value of `expr` when it is the same for every lead, else None.
    `memo` holds what is known of each condition, so that every condition
    is judged once however many expressions use it."""
    if depth > _STATIC_DEPTH:
        return None
    if isinstance(expr, Literal):
        return expr.value if isinstance(expr.value, bool) else None
    if isinstance(expr, Not):
        inner = _static(flow, expr.operand, memo, depth + 1)
        return None if inner is None else not inner
    if isinstance(expr, Ref):
        condition = flow.condition(expr.name)
        if condition is None:
            return None
        if expr.name in memo:  # judged already, or being judged (a cycle)
            return memo[expr.name]
        memo[expr.name] = None
        value = _static(flow, condition.expr, memo, depth + 1)
        memo[expr.name] = value
        return value
    if isinstance(expr, (And, Or, AtLeast)):
        values = [_static(flow, item, memo, depth + 1) for item in expr.items]
        need = len(values) if isinstance(expr, And) else 1 if isinstance(expr, Or) else expr.count
        if values.count(True) >= need:
            return True
        if len(values) - values.count(False) < need:
            return False
        return None
    if isinstance(expr, Compare) and isinstance(expr.left, Literal) and isinstance(expr.right, Literal):
        left, right = expr.left.value, expr.right.value
        if type(left) is not type(right) and not {type(left), type(right)} <= {int, float}:
            return None
        if expr.op == "==":
            return left == right
        if expr.op == "!=":
            return left != right
        if isinstance(left, bool) or isinstance(right, bool) or isinstance(left, str):
            return None
        assert isinstance(right, (int, float))
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[expr.op]
    return None


@rule
def impossible_at_least(ctx: _Context) -> Iterator[Diagnostic]:
    """SF303 `at least N of {..}` with fewer than N items that can be true."""
    flow = ctx.flow
    memo: dict[str, bool | None] = {}
    for top, _ in ctx.expressions():
        for node in walk(top):
            if not isinstance(node, AtLeast) or node.count < 1:
                continue
            possible = [item for item in node.items if _static(flow, item, memo) is not False]
            if node.count <= len(possible):
                continue
            where = ctx.locate.find(node.span, r"(\S+)", after=_keyword("least"))
            size = len(node.items)
            count = number_text(node.count)
            if size < node.count:
                message = f"at least {count} of {size} items can never be true"
            elif possible:
                message = (
                    f"at least {count} of {{..}} can never be true: "
                    f"only {len(possible)} of its {size} items can ever be true"
                )
            else:
                message = f"at least {count} of {{..}} can never be true: none of its items can ever be true"
            # A count of 0 is an error of its own (SF115): never suggest it.
            hint = f"lower the count to {len(possible)} or fewer" if possible else "fix or replace its items"
            yield ctx.warning("SF303", where, message, hint)


@rule
def unused_events(ctx: _Context) -> Iterator[Diagnostic]:
    """SF304 an event no expression or score rule uses (a misspelt use,
    reported as unknown, counts as a use of the event it is close to)."""
    used: set[str] = set()
    for top, _ in ctx.expressions():
        for node in walk(top):
            if isinstance(node, Ref):
                used.add(node.name)
            elif isinstance(node, (Window, DaysSince)):
                used.add(node.event)
    events = [event.name for event in ctx.flow.events]
    for name in used - ctx.names:
        used.update(difflib.get_close_matches(name, events, n=1, cutoff=0.6))
    for event in ctx.flow.events:
        if event.name in used or ctx.flow.event(event.name) is not event:
            continue
        yield ctx.warning(
            "SF304",
            ctx.name_span(event.span, event.name, "event"),
            f'event "{event.name}" is declared but never used',
            "use it in a gate, a condition or a score rule, or remove it",
        )


@rule
def repeated_recycle_sources(ctx: _Context) -> Iterator[Diagnostic]:
    """SF306 a stage listed twice in one recycle (reported where repeated)."""
    for recycle in ctx.flow.recycles:
        sources = recycle.sources
        if len(set(sources)) == len(sources):
            continue  # the usual case: locating names is costly, skip it
        seen: dict[str, int] = {}
        for index, name in enumerate(sources):
            earlier = seen[name] = seen.get(name, -1) + 1
            if not earlier:
                continue
            yield ctx.warning(
                "SF306",
                ctx.recycle_source(recycle, index),
                f'stage "{name}" is listed twice in the recycle to "{recycle.target}"',
                f'the first "{name}" already moves its leads back; remove this one',
            )


@rule
def empty_lists(ctx: _Context) -> Iterator[Diagnostic]:
    """SF307 `x in []` is always false; `x not in []` always true (once x
    is set: an unset value makes `not in` false too)."""
    for top, _ in ctx.expressions():
        for node in walk(top):
            if not isinstance(node, InList) or node.items:
                continue
            text = shorten(unparse(node))
            if not node.negated:
                yield ctx.warning(
                    "SF307",
                    node.span,
                    f'"{text}" is always false: the list is empty',
                    "list the values to compare with",
                )
                continue
            operand = node.operand
            unset = isinstance(operand, DaysSince) or (
                isinstance(operand, Ref) and ctx.kind_of(operand.name) == "field"
            )
            if unset:
                operand_text = shorten(unparse(operand))
                yield ctx.warning(
                    "SF307",
                    node.span,
                    f'"{text}" is always true once "{operand_text}" is set: the list is empty',
                    f'write "{operand_text} is set" to require a value',
                )
            else:
                yield ctx.warning(
                    "SF307",
                    node.span,
                    f'"{text}" is always true: the list is empty',
                    "list the values to exclude, or write true",
                )


@rule
def score_without_rules(ctx: _Context) -> Iterator[Diagnostic]:
    """SF308 `score` used in a flow with no score rules: it is always 0."""
    flow = ctx.flow
    if flow.score_rules or any(name == "score" for _, name, _ in ctx.facts):
        return  # a fact named "score" is an error of its own (SF103)
    numbers = [definition.name for definition in flow.fields if definition.type.kind in NUMERIC_KINDS]
    for top, _ in ctx.expressions():
        for node in walk(top):
            if isinstance(node, Ref) and node.name == "score":
                yield ctx.warning(
                    "SF308",
                    node.span,
                    f'"score" is always 0: flow "{flow.name}" has no score rules',
                    did_you_mean("score", numbers) or "declare its rules in a score { … } block",
                )


@rule
def teams_without_stages(ctx: _Context) -> Iterator[Diagnostic]:
    """SF309 a team with no stages (a duplicate team is reported as such)."""
    flow = ctx.flow
    for team in flow.teams:
        if team.stages or flow.team(team.name) is not team:
            continue
        hint = "declare its stages inside it, or remove it"
        if team.targets:
            hint = "declare its stages inside it, or move its targets into the team that owns their stages"
        yield ctx.warning(
            "SF309",
            ctx.name_span(team.span, team.name, "team"),
            f'team "{team.name}" has no stages',
            hint,
        )
