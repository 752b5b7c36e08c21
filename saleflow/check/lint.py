"""Warnings (SF301-SF309): a flow that is valid but probably not meant.

Stages no move reaches, stages with no way out, an `at least` that can never
hold, an event nobody uses, a recycle source listed twice, an empty list,
`score` without score rules, a team without stages.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from ..errors import Diagnostic, did_you_mean
from ..limits import number_text
from ..model import graph
from ..model.flow import (
    NUMERIC_KINDS,
    And,
    AtLeast,
    Compare,
    DaysSince,
    Expr,
    Flow,
    InList,
    Literal,
    Not,
    Or,
    Ref,
    Window,
    walk,
)
from ..model.unparse import shorten, unparse
from .context import Context, at, recycle_source


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


def unreachable_stages(ctx: Context) -> Iterator[Diagnostic]:
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
            stage.span,
            f'stage "{stage.name}" can never be reached from initial stage "{flow.initial.name}"',
            hint,
        )


def dead_ends(ctx: Context) -> Iterator[Diagnostic]:
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
            stage.span,
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


def impossible_at_least(ctx: Context) -> Iterator[Diagnostic]:
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
            where = at(node.count_span, node.span)
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


def unused_events(ctx: Context) -> Iterator[Diagnostic]:
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
            at(event.name_span, event.span),
            f'event "{event.name}" is declared but never used',
            "use it in a gate, a condition or a score rule, or remove it",
        )


def repeated_recycle_sources(ctx: Context) -> Iterator[Diagnostic]:
    """SF306 a stage listed twice in one recycle (reported where repeated)."""
    for recycle in ctx.flow.recycles:
        sources = recycle.sources
        if len(set(sources)) == len(sources):
            continue  # the usual case
        seen: dict[str, int] = {}
        for index, name in enumerate(sources):
            earlier = seen[name] = seen.get(name, -1) + 1
            if not earlier:
                continue
            yield ctx.warning(
                "SF306",
                recycle_source(recycle, index),
                f'stage "{name}" is listed twice in the recycle to "{recycle.target}"',
                f'the first "{name}" already moves its leads back; remove this one',
            )


def empty_lists(ctx: Context) -> Iterator[Diagnostic]:
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


def score_without_rules(ctx: Context) -> Iterator[Diagnostic]:
    """SF308 `score` used in a flow with no score rules: it is always 0."""
    flow = ctx.flow
    if flow.score_rules or any(name == "score" for _, name, _, _ in ctx.facts):
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


def teams_without_stages(ctx: Context) -> Iterator[Diagnostic]:
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
            at(team.name_span, team.span),
            f'team "{team.name}" has no stages',
            hint,
        )
