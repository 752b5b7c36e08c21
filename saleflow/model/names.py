"""Every name a flow writes, with the span where it is written.

Layer 1.  The parser keeps a span per name token; this walks them all: the
flow's name, declarations, enum values, a default or a test's value written
as a bare name, channels, the stages that moves, targets and test steps
name, and every name inside expressions.  The checker reads it (SF120, a
name too long to be a key), and the tests hold it to the source: each span
slices exactly the name's text.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import NO_SPAN, Span
from .flow import DaysSince, Expr, Flow, Ref, Window, walk


def written_names(flow: Flow) -> Iterator[tuple[str, Span]]:
    """(name, span) of every name written in `flow`, declarations first,
    then moves and targets, expressions, test blocks.  A flow built in
    Python has no spans: its names come with `NO_SPAN`."""
    yield flow.name, flow.name_span
    for definition in flow.fields:
        yield definition.name, definition.name_span
        yield from _paired(definition.type.choices, definition.type.choice_spans)
        if definition.default_is_name and isinstance(definition.default, str):
            yield definition.default, definition.default_span
    for event in flow.events:
        yield event.name, event.name_span
        if event.channel is not None:
            yield event.channel, event.channel_span
    for condition in flow.conditions:
        yield condition.name, condition.name_span
    for team in flow.teams:
        yield team.name, team.name_span
        for target in team.targets:
            yield target.stage, target.stage_span
            if target.to is not None:
                yield target.to, target.to_span
    for stage in flow.stages:
        yield stage.name, stage.name_span
    for skip in flow.skips:
        yield skip.source, skip.source_span
        yield skip.target, skip.target_span
    for recycle in flow.recycles:
        yield from _paired(recycle.sources, recycle.source_spans)
        yield recycle.target, recycle.target_span
    for top in _expressions(flow):
        yield from expression_names(top)
    for test in flow.tests:
        for step in test.steps:
            if step.name is not None:
                yield step.name, step.name_span
            if step.channel is not None:
                yield step.channel, step.channel_span
            for assignment in step.assignments:
                yield assignment.field, assignment.field_span
                if assignment.bare and isinstance(assignment.value, str):
                    yield assignment.value, assignment.value_span
            if step.expr is not None:
                yield from expression_names(step.expr)


def expression_names(expr: Expr) -> Iterator[tuple[str, Span]]:
    """(name, span) of every name inside `expr`: names, enum values written
    bare, the events of windows and `days_since`.  (`score` is a word of
    the language, but it stands where a name does, so it is here too.)"""
    for node in walk(expr):
        if isinstance(node, Ref):
            yield node.name, node.span
        elif isinstance(node, (Window, DaysSince)):
            yield node.event, node.event_span


def _expressions(flow: Flow) -> Iterator[Expr]:
    for condition in flow.conditions:
        yield condition.expr
    for rule in flow.score_rules:
        if rule.each is not None:
            yield rule.each
        if rule.condition is not None:
            yield rule.condition
    for stage in flow.stages:
        if stage.when is not None:
            yield stage.when
    for skip in flow.skips:
        if skip.when is not None:
            yield skip.when
    for recycle in flow.recycles:
        if recycle.when is not None:
            yield recycle.when


def _paired(names: tuple[str, ...], spans: tuple[Span, ...]) -> Iterator[tuple[str, Span]]:
    """Each of `names` with its span; `NO_SPAN` where a flow built in Python has none."""
    for index, name in enumerate(names):
        yield name, spans[index] if index < len(spans) else NO_SPAN
