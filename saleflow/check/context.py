"""What every rule of the checker shares: the `Context` of one check.

It holds the flow, its table of declared names (what each field,
condition, event and builtin is), the expressions to judge, and helpers
that make diagnostics.  The rule families (names, types, numbers,
structure, lint) each take a `Context` and yield `Diagnostic`s.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import NO_SPAN, Diagnostic, Span
from ..model.flow import BUILTINS, Expr, FieldDef, Flow, Recycle, Ref


class Context:
    """What the rules share: the flow and its name lookups."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.facts = _fact_declarations(flow)
        kinds = {name: "builtin" for name in BUILTINS}
        for kind, name, _, _ in self.facts:
            kinds.setdefault(name, kind)  # on a clash (reported), the first declaration wins
        self.kinds = kinds
        self.names = set(kinds)

    # diagnostics ----------------------------------------------------------
    @staticmethod
    def error(code: str, span: Span, message: str, hint: str | None = None) -> Diagnostic:
        return Diagnostic(code, "error", span, message, hint)

    @staticmethod
    def warning(code: str, span: Span, message: str, hint: str | None = None) -> Diagnostic:
        return Diagnostic(code, "warning", span, message, hint)

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


def by_position(span: Span) -> tuple[int, int]:
    return (span.line, span.column)


def _fact_declarations(flow: Flow) -> list[tuple[str, str, Span, Span]]:
    """(kind, name, span, name_span) of every field, condition and event, in
    source order."""
    declared = [
        *(("field", f.name, f.span, f.name_span) for f in flow.fields),
        *(("condition", c.name, c.span, c.name_span) for c in flow.conditions),
        *(("event", e.name, e.span, e.name_span) for e in flow.events),
    ]
    return sorted(declared, key=lambda d: by_position(d[2]))


def at(span: Span, fallback: Span) -> Span:
    """`span`, the position of a name or number that the parser kept; or
    `fallback` (its declaration) for a flow built in Python, whose nodes
    carry no such span."""
    return fallback if span == NO_SPAN else span


def recycle_source(recycle: Recycle, nth: int) -> Span:
    """Where the `nth` source stage of `recycle` is written."""
    spans = recycle.source_spans
    return spans[nth] if nth < len(spans) else recycle.span
