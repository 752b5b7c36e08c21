"""Rules about names (SF101-SF103, SF106, SF117, SF120).

Every name is declared once and in one namespace, is not spelt like a
builtin or a word of expressions, is not too long to be a key, and every
stage a skip, recycle, target or team names exists; a condition does not
name itself through others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..errors import Diagnostic, Span, did_you_mean
from ..limits import MAX_ID_LENGTH
from ..model.flow import BUILTINS, Ref, walk
from ..model.names import written_names
from .context import Context, at, by_position, recycle_source


def duplicate_names(ctx: Context) -> Iterator[Diagnostic]:
    """SF101 a name declared twice; SF102 a field, condition and event share
    one name; SF103 a name that shadows a builtin."""
    flow = ctx.flow
    declared = sorted(
        [
            *ctx.facts,
            *(("stage", s.name, s.span, s.name_span) for s in flow.stages),
            *(("team", t.name, t.span, t.name_span) for t in flow.teams),
        ],
        key=lambda d: by_position(d[2]),
    )
    first: dict[tuple[str, str], Span] = {}
    facts: dict[str, tuple[str, Span]] = {}  # fields, conditions, events share one namespace
    for kind, name, span, name_span in declared:
        where = at(name_span, span)

        if (kind, name) in first:
            yield ctx.error(
                "SF101",
                where,
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
                where,
                f'{kind} "{name}" has the name of the builtin "{name}"',
                "choose another name",
            )
        elif name in RESERVED_WORDS:
            yield ctx.error(
                "SF103",
                where,
                f'{kind} "{name}" is named like the word "{name}" of expressions, so no expression can use it',
                "choose another name",
            )
        elif name in facts:
            other, other_span = facts[name]
            yield ctx.error(
                "SF102",
                where,
                f'{kind} "{name}" has the same name as the {other} on line {other_span.line}',
                "fields, conditions and events share one set of names; rename one of them",
            )
        else:
            facts[name] = (kind, span)


def long_names(ctx: Context) -> Iterator[Diagnostic]:
    """SF120 a name longer than MAX_ID_LENGTH characters: flows, stages,
    fields, events and their channels become keys in the database."""
    for name, span in written_names(ctx.flow):
        if len(name) <= MAX_ID_LENGTH:
            continue
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


def enum_values(ctx: Context) -> Iterator[Diagnostic]:
    """SF101 a value listed twice in `one of [..]`; SF103 a value spelt like
    a word of expressions."""
    for definition in ctx.flow.fields:
        choices = definition.type.choices
        spans = definition.type.choice_spans
        seen: dict[str, int] = {}
        for index, choice in enumerate(choices):
            earlier = seen.get(choice, 0)
            seen[choice] = earlier + 1
            if choice not in RESERVED_WORDS and not earlier:
                continue
            where = spans[index] if index < len(spans) else definition.span
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


def condition_cycles(ctx: Context) -> Iterator[Diagnostic]:
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


def _unknown_stage(ctx: Context, name: str, where: Span, role: str) -> Diagnostic:
    return ctx.error(
        "SF106",
        where,
        f'unknown stage "{name}" in {role}',
        did_you_mean(name, ctx.flow.stage_names),
    )


def unknown_stages(ctx: Context) -> Iterator[Diagnostic]:
    """SF106 a skip, recycle, target or team that names no declared stage."""
    flow = ctx.flow
    for skip in flow.skips:
        for name, where in ((skip.source, skip.source_span), (skip.target, skip.target_span)):
            if flow.stage(name) is None:
                yield _unknown_stage(ctx, name, at(where, skip.span), "a skip")
    for recycle in flow.recycles:
        first: dict[str, int] = {}
        for nth, name in enumerate(recycle.sources):
            first.setdefault(name, nth)
            if flow.stage(name) is None:
                yield _unknown_stage(ctx, name, recycle_source(recycle, first[name]), "a recycle")
        if flow.stage(recycle.target) is None:
            yield _unknown_stage(ctx, recycle.target, at(recycle.target_span, recycle.span), "a recycle")
    for team in flow.teams:
        for name in team.stages:
            if flow.stage(name) is None:
                # Only a flow built in Python: a parsed team's stages are declared in it.
                yield _unknown_stage(ctx, name, team.span, f'team "{team.name}"')
        for target in team.targets:
            if flow.stage(target.stage) is None:
                where = at(target.stage_span, target.span)
                yield _unknown_stage(ctx, target.stage, where, "a target")
            if target.to is not None and flow.stage(target.to) is None:
                where = at(target.to_span, target.span)
                yield _unknown_stage(ctx, target.to, where, "a target")
    teams = [team.name for team in flow.teams]
    for stage in flow.stages:
        if stage.team is not None and flow.team(stage.team) is None:
            yield ctx.error(
                "SF106",
                stage.span,
                f'stage "{stage.name}" belongs to unknown team "{stage.team}"',
                did_you_mean(stage.team, teams),
            )
