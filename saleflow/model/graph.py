"""The move graph of a flow: every move it defines, built once.

Layer 1, beside the model (in the manner of Symfony Workflow's `Definition`
or python-statemachine's `graph.py`).  "The moves of a flow" has one
meaning, and the compiler (its state machine), the checker (reachability,
dead ends), the diagrams and the HTML page all read it here, so their
semantics cannot drift apart.

The moves, in the order the compiler declares them:

- ``advance``: from each stage of the main line to the next one, unless the
  stage ends the way (a final stage at the end of the main line);
- ``exit``: from every stage that does not end the way to every final side
  stage;
- ``skip``: each declared skip;
- ``recycle``: each declared recycle, once per source stage.

It reads a flow as written, checked or not: a move naming a stage the flow
does not declare is left out (the checker reports the name, SF106), and a
final stage in the middle of the main line (SF205) is judged as if it were
not final, so one error does not hide the rest of the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as attr
from itertools import pairwise

from ..errors import NO_SPAN, Span
from .expr import Expr
from .flow import Flow


@dataclass(frozen=True, slots=True)
class MoveDef:
    """A move the flow defines: its kind, from where to where, the move's
    own condition (a skip's or recycle's `when`; a target stage's gate is
    the target's), whether a recycle is `auto`, and which skip or recycle
    declared it (its index among them; -1 for advances and exits)."""

    kind: str
    source: str
    target: str
    when: Expr | None = None
    auto: bool = False
    index: int = -1
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


def ends(flow: Flow, name: str) -> bool:
    """Whether a lead's way ends in stage `name`: a final side stage, or a
    final stage at the end of the main line."""
    stage = flow.stage(name)
    if stage is None or not stage.final:
        return False
    return flow.position(name) is None or name == flow.main_line[-1]


def moves(flow: Flow) -> tuple[MoveDef, ...]:
    """Every move of `flow`, in declaration order (see the module docstring);
    a move declared twice is listed once."""
    declared = set(flow.stage_names)
    exits = [s.name for s in flow.stages if s.final and flow.position(s.name) is None]
    found: dict[tuple[str, str, str, int], MoveDef] = {}

    def add(move: MoveDef) -> None:
        if move.source in declared and move.target in declared:
            found.setdefault((move.kind, move.source, move.target, move.index), move)

    for source, target in pairwise(flow.main_line):
        if source != target and not ends(flow, source):
            add(MoveDef("advance", source, target))
    for stage in dict.fromkeys(flow.stage_names):
        if not ends(flow, stage):
            for target in exits:
                if target != stage:
                    add(MoveDef("exit", stage, target))
    for index, skip in enumerate(flow.skips):
        add(MoveDef("skip", skip.source, skip.target, skip.when, index=index, span=skip.span))
    for index, recycle in enumerate(flow.recycles):
        for source in dict.fromkeys(recycle.sources):
            add(MoveDef("recycle", source, recycle.target, recycle.when, recycle.auto, index, recycle.span))
    return tuple(found.values())


def successors(flow: Flow) -> dict[str, set[str]]:
    """Every declared stage and the stages a lead can move to from it
    without force."""
    out: dict[str, set[str]] = {name: set() for name in flow.stage_names}
    for move in moves(flow):
        out[move.source].add(move.target)
    return out


__all__ = ["MoveDef", "ends", "moves", "successors"]
