"""Rules about the shape of the flow (SF007, SF119, SF201-SF211).

One initial stage on the main line, a final stage only at its end, skips
that go forward and recycles that go back along it, targets that name a
forward conversion, and expressions that do not nest too deeply, through
the conditions they name included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..errors import Diagnostic
from ..limits import MAX_DAYS, MAX_DEPTH, number_text
from ..model.flow import And, AtLeast, Compare, Expr, Flow, InList, IsSet, Not, Or, Ref, Stage, children, walk
from .context import Context, at, recycle_source


def too_deep(ctx: Context) -> Iterator[Diagnostic]:
    """SF007 for an expression nested past MAX_DEPTH.  The parser refuses
    them in flow text; a `Flow` built in Python may still hold one (a chain
    of 50,000 `Or` nodes), and the rules would recurse over it."""
    for top, _ in ctx.expressions():
        if levels(top, {}) > MAX_DEPTH:
            yield ctx.error(
                "SF007",
                top.span,
                f"expression nested too deeply (more than {MAX_DEPTH} levels)",
                "name parts of it with condition NAME = … and use the names",
            )


def levels(expr: Expr, conditions: dict[str, int]) -> int:
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
                depths[name] = levels(definition.expr, depths)
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


def condition_depth(ctx: Context) -> Iterator[Diagnostic]:
    """SF119 an expression that nests too deeply through the conditions it
    names (one diagnostic per chain: where it first passes the limit)."""
    flow = ctx.flow
    depths = _condition_depths(flow)
    for top, _ in ctx.expressions():
        if levels(top, depths) <= MAX_DEPTH:
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


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def initial_stage(ctx: Context) -> Iterator[Diagnostic]:
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
            at(flow.name_span, flow.span),
            f'flow "{flow.name}" has no initial stage',
            hint,
        )
        return
    first = initials[0]
    for stage in initials[1:]:
        yield ctx.error(
            "SF202",
            at(stage.initial_span, stage.span),
            f'stage "{stage.name}" is marked initial, but "{first.name}" already is',
            "a flow has exactly one initial stage, where every lead starts",
        )
    for stage in initials:
        if stage.team is None:
            yield ctx.error(
                "SF203",
                stage.span,
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


def final_in_main_line(ctx: Context) -> Iterator[Diagnostic]:
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
            at(stage.final_span, stage.span),
            f'final stage "{stage.name}" is not the last stage of the main line',
            f"no lead can advance past it to {_quoted(after[:2])}{more}; "
            "declare it outside the teams to make it a side stage",
        )


def skips(ctx: Context) -> Iterator[Diagnostic]:
    """SF207 a skip to or from a side stage; SF206 a skip that does not go
    forward along the main line."""
    flow = ctx.flow
    for skip in flow.skips:
        source, target = flow.stage(skip.source), flow.stage(skip.target)
        if source is None or target is None:
            continue
        side = False
        for stage, role in ((source, "from"), (target, "to")):
            if flow.position(stage.name) is None:
                side = True
                hint = "a skip jumps forward along the main line"
                if role == "to" and stage.final:
                    hint = f'leads leave for final side stage "{stage.name}" by exit, from any stage'
                where = at(skip.source_span if role == "from" else skip.target_span, skip.span)
                yield ctx.error("SF207", where, f'skip {role} side stage "{stage.name}"', hint)
        if side:
            continue
        source_index, target_index = flow.position(skip.source), flow.position(skip.target)
        assert source_index is not None and target_index is not None
        if target_index > source_index:
            continue
        target_at = at(skip.target_span, skip.span)
        if target_index == source_index:
            yield ctx.error("SF206", target_at, f'skip from "{skip.source}" to itself goes nowhere')
        else:
            yield ctx.error(
                "SF206",
                target_at,
                f'skip from "{skip.source}" goes backwards: "{skip.target}" comes before it on the main line',
                "use recycle to move leads back",
            )


def recycles(ctx: Context) -> Iterator[Diagnostic]:
    """SF209 a recycle to or from a side or final stage; SF208 a recycle
    that does not go back along the main line."""
    flow = ctx.flow
    for recycle in flow.recycles:
        target = flow.stage(recycle.target)
        target_at = at(recycle.target_span, recycle.span)
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
                continue  # fine, or judged elsewhere
            where = recycle_source(recycle, nth)
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


def targets(ctx: Context) -> Iterator[Diagnostic]:
    """SF210 a target value out of range; SF211 a conversion target that
    goes backwards along the main line."""
    flow = ctx.flow
    for team in flow.teams:
        for target in team.targets:
            if target.kind == "conversion":
                if not 0 <= target.value <= 100:
                    yield ctx.error(
                        "SF210",
                        at(target.value_span, target.span),
                        f"conversion target {number_text(target.value)}% is not a percentage between 0 and 100",
                    )
                start = flow.position(target.stage)
                end = flow.position(target.to) if target.to is not None else None
                if start is not None and end is not None and end <= start:
                    yield ctx.error(
                        "SF211",
                        at(target.to_span, target.span),
                        f'conversion target from "{target.stage}" to "{target.to}" does not go forward '
                        "along the main line",
                        "a conversion counts leads that reach a later stage",
                    )
            elif target.value < 0:
                yield ctx.error(
                    "SF210",
                    at(target.value_span, target.span),
                    f"time target of {number_text(target.value)} days is negative",
                )
            elif target.value > MAX_DAYS:
                yield ctx.error(
                    "SF210",
                    at(target.value_span, target.span),
                    f"time target of {number_text(target.value)} days is more than {MAX_DAYS:,} days",
                )
