"""What every rule of the checker shares: the `Context` of one check.

It holds the flow, its table of declared names (what each field,
condition, event and builtin is), the expressions to judge, and helpers
that make diagnostics.  The rule families (names, types, numbers,
structure, lint) each take a `Context` and yield `Diagnostic`s.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator

from ..errors import Diagnostic, Span
from ..model.flow import BUILTINS, Expr, FieldDef, Flow, Recycle, Ref, Stage

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
            for match in NAME_OR_SKIPPED.finditer(self.source, anchor.end(), end)
            if match.group(1)
        ]

    def word(self, span: Span, word: str, *, after: str | None = None, nth: int = 0) -> Span:
        return self.find(span, rf"(?<!{_WORD}){re.escape(word)}(?!{_WORD})", after=after, nth=nth)


# A name, or something whose words are not names (a comment, a string).
NAME_OR_SKIPPED = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|([a-z_][a-z0-9_]*)')


def keyword_pattern(word: str) -> str:
    return rf"(?<!{_WORD}){word}(?!{_WORD})"


# Where a stage's declaration ends at the latest.
_NEXT_DECLARATION = (
    keyword_pattern("(?:stage|target|field|event|condition|team|skip|recycle|flow)")
    + r"|\}|#|"
    + keyword_pattern("score")
    + r"\s*\{"
)


class Context:
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
        return self.locate.word(span, name, after=keyword_pattern(keyword))

    def recycle_source(self, recycle: Recycle, nth: int) -> Span:
        """Where the `nth` source stage of `recycle` is written (the list
        is located once, however many of its stages have a diagnostic)."""
        located = self._recycles.get(id(recycle))
        if located is None or located[0] is not recycle:
            located = (recycle, self.locate.names(recycle.span, after=keyword_pattern("recycle")))
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


def by_position(span: Span) -> tuple[int, int]:
    return (span.line, span.column)


def _fact_declarations(flow: Flow) -> list[tuple[str, str, Span]]:
    """(kind, name, span) of every field, condition and event, in source order."""
    declared = [
        *(("field", f.name, f.span) for f in flow.fields),
        *(("condition", c.name, c.span) for c in flow.conditions),
        *(("event", e.name, e.span) for e in flow.events),
    ]
    return sorted(declared, key=lambda d: by_position(d[2]))
