"""A checked flow → one shared `transitions` state machine per flow version.

Layer 3; the only module that knows `transitions` (its words, "state" and
"trigger", stay in here).  The machine is built once per flow version with
`model=None` and fired against a light per-operation token, never one Machine
per lead and never `add_model` (quadratic in transitions 0.9).

Safety: every condition handed to transitions is a Python callable made here
from `guards.Evaluator`; no text from a flow file ever reaches transitions,
which would resolve strings as attributes *and* importable dotted paths.

The moves the machine holds are the gated ones: `advance`, `skip`, `recycle`,
`exit`.  `force` and `import` are ungated by definition and are applied by the
engine directly; `create` is a lead's first entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as attr
from typing import Any

from transitions import Machine
from transitions.core import EventData, Transition

from . import model as m
from .errors import NO_SPAN, Span
from .guards import Evaluator, Facts

GATED_KINDS = ("advance", "skip", "recycle", "exit")
# Kinds that may set any stage (replay accepts them from anywhere);
# "migrate" keeps the stage and moves the lead to another flow version.
UNGATED_KINDS = ("create", "force", "import", "migrate")


@dataclass(frozen=True, slots=True)
class Gate:
    """One condition a move must satisfy, with a label for explanations."""

    label: str
    expr: m.Expr
    span: Span = attr(default=NO_SPAN, compare=False)


@dataclass(frozen=True, slots=True)
class Move:
    """A move defined from `source`: the structure, not a verdict."""

    kind: str
    source: str
    target: str
    trigger: str
    gates: tuple[Gate, ...] = ()
    automatic: bool = False  # may be taken by automatic progress

    def __str__(self) -> str:
        return f"{self.kind} {self.source} -> {self.target}"


class _Token:
    """The per-operation object transitions fires against."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


def _gate_of(flow: m.Flow, stage_name: str) -> tuple[Gate, ...]:
    stage = flow.stage(stage_name)
    if stage is None or stage.when is None:
        return ()
    return (Gate(f'gate of "{stage_name}"', stage.when, stage.span),)


def _moves(flow: m.Flow) -> list[Move]:
    moves: list[Move] = []
    finals = [s for s in flow.stages if s.final and s.team is None]
    for stage in flow.stages:
        if stage.final:
            continue
        nxt = flow.next_on_main_line(stage.name)
        if nxt is not None:
            target = flow.stage(nxt)
            moves.append(
                Move(
                    "advance", stage.name, nxt, "advance", _gate_of(flow, nxt), not (target and target.manual)
                )
            )
        for exit_to in finals:
            if exit_to.name != stage.name:
                moves.append(
                    Move(
                        "exit",
                        stage.name,
                        exit_to.name,
                        f"exit_to_{exit_to.name}",
                        _gate_of(flow, exit_to.name),
                    )
                )
    for index, skip in enumerate(flow.skips):
        target = flow.stage(skip.target)
        own = (Gate("skip condition", skip.when, skip.span),) if skip.when is not None else ()
        moves.append(
            Move(
                "skip",
                skip.source,
                skip.target,
                f"skip{index}_to_{skip.target}",
                own + _gate_of(flow, skip.target),
                not (target and target.manual),
            )
        )
    for index, recycle in enumerate(flow.recycles):
        own = (Gate("recycle condition", recycle.when, recycle.span),) if recycle.when is not None else ()
        for source in recycle.sources:
            moves.append(
                Move(
                    "recycle",
                    source,
                    recycle.target,
                    f"recycle{index}_to_{recycle.target}",
                    own,
                    recycle.auto,
                )
            )
    return moves


_TIME_NAMES = frozenset({"days_in_stage", "days_since_created"})


def _score_reads_time(flow: m.Flow) -> tuple[bool, bool]:
    """Whether a lead's score can change with time alone (a score rule, or
    a condition it reads, counts events in a window, reads the days since
    an event, or reads days): then a stored score may be stale, and the
    score at a moment is computed.  And whether it reads days (in stage,
    since created), which change without any event."""
    seen: set[str] = set()
    stack: list[m.Expr] = []
    by_events = days = False
    for rule in flow.score_rules:
        if isinstance(rule.each, m.Window):
            by_events = True
        if rule.condition is not None:
            stack.append(rule.condition)
    while stack:
        for node in m.walk(stack.pop()):
            if isinstance(node, m.Window | m.DaysSince):
                by_events = True
            if isinstance(node, m.Ref):
                if node.name in _TIME_NAMES:
                    days = True
                condition = flow.condition(node.name)
                if condition is not None and node.name not in seen:
                    seen.add(node.name)
                    stack.append(condition.expr)
    return by_events or days, days


class CompiledFlow:
    """A flow version ready to run: its moves by stage and its machine."""

    def __init__(self, flow: m.Flow, version: int | None = None) -> None:
        self.flow = flow
        self.name = flow.name
        self.version = flow.version if version is None else version
        self.evaluator = Evaluator(flow)
        # Whether a lead's score is the same in every stage (no score rule or
        # condition reads days_in_stage), so a move need not recompute it.
        exprs = [r.condition for r in flow.score_rules if r.condition is not None]
        exprs += [c.expr for c in flow.conditions]
        self.score_ignores_stage = not any(
            isinstance(node, m.Ref) and node.name == "days_in_stage" for e in exprs for node in m.walk(e)
        )
        # With no event in its cycle, a score that reads no days is what it
        # was when stored (windows over no events count nothing, always).
        self.score_reads_time, self.score_reads_days = _score_reads_time(flow)
        self._by_source: dict[str, list[Move]] = {name: [] for name in flow.stage_names}
        seen: set[tuple[str, str, str]] = set()
        for move in _moves(flow):
            key = (move.trigger, move.source, move.target)
            if move.source in self._by_source and key not in seen:
                seen.add(key)
                self._by_source[move.source].append(move)
        self._machine = Machine(
            model=None,
            states=list(flow.stage_names),
            initial=flow.initial.name if flow.initial else flow.stage_names[0],
            transitions=[
                {
                    "trigger": move.trigger,
                    "source": move.source,
                    "dest": move.target,
                    "conditions": [self._condition(move, gate) for gate in move.gates],
                }
                for moves in self._by_source.values()
                for move in moves
            ],
            auto_transitions=False,
            send_event=True,
        )
        self._transitions: dict[int, tuple[Transition, Any, Any]] = {}
        self._forward: dict[str, list[Move]] = {}
        self._recycles: dict[str, list[Move]] = {}
        self._holds: dict[int, Callable[[Facts], bool]] = {}

    def _condition(self, move: Move, gate: Gate) -> Callable[[Any], bool]:
        test = self.evaluator.test
        expr = gate.expr

        def condition(event: Any) -> bool:
            # `fire` says when it has just seen every gate of this move hold
            # on these facts.
            return event.kwargs.get("held") is move or test(expr, event.kwargs["facts"])

        return condition

    # -- structure ----------------------------------------------------------
    def has_stage(self, name: str) -> bool:
        return name in self._by_source

    def forward_from(self, stage: str) -> list[Move]:
        """The automatic advances and skips from `stage`, furthest along the
        main line first (the order automatic progress tries them in)."""
        found = self._forward.get(stage)
        if found is None:
            position = self.flow.position
            found = sorted(
                (mv for mv in self.moves_from(stage) if mv.kind in ("advance", "skip") and mv.automatic),
                key=lambda mv: -(position(mv.target) or 0),
            )
            self._forward[stage] = found
        return found

    def recycles_from(self, stage: str) -> list[Move]:
        """The automatic recycles from `stage`, in the flow's order."""
        found = self._recycles.get(stage)
        if found is None:
            found = [mv for mv in self.moves_from(stage) if mv.kind == "recycle" and mv.automatic]
            self._recycles[stage] = found
        return found

    def moves_from(self, stage: str) -> list[Move]:
        """Every move defined from `stage` (allowed, not necessarily enabled)."""
        return self._by_source.get(stage, [])

    def move_to(self, source: str, target: str) -> Move | None:
        """The defined move from `source` to `target`: advance, then skip,
        then exit, then recycle."""
        order = {"advance": 0, "skip": 1, "exit": 2, "recycle": 3}
        candidates = [mv for mv in self.moves_from(source) if mv.target == target]
        return min(candidates, key=lambda mv: order[mv.kind]) if candidates else None

    def is_defined(self, kind: str, source: str, target: str) -> bool:
        """Whether the machine holds this move (replay of the audit log)."""
        if kind in UNGATED_KINDS:
            return self.has_stage(target)
        return any(
            self._machine.get_transitions(mv.trigger, source, target)
            for mv in self.moves_from(source)
            if mv.kind == kind and mv.target == target
        )

    # -- firing ---------------------------------------------------------------
    def passes(self, move: Move, facts: Facts) -> bool:
        """Whether every gate of `move` holds."""
        holds = self._holds.get(id(move))  # by identity, as `_transition`
        if holds is None:
            holds = self._holds[id(move)] = self.evaluator.conjunction([gate.expr for gate in move.gates])
        return holds(facts)

    def fire(self, move: Move, facts: Facts) -> bool:
        """Fire `move` on a fresh token; True when transitions moved it to
        the target (the gates held).  Gates are tried first without the
        machine: most evaluations find a gate closed, and transitions'
        event bookkeeping costs more than the gate itself."""
        if not self.passes(move, facts):
            return False
        transition, event, state = self._transition(move)
        token = _Token(move.source)
        # The machine's own Transition runs its conditions and changes the
        # token's state; calling it directly skips the event queue that a
        # model-less machine does not need (a third of the cost of a move).
        data = EventData(state, event, self._machine, token, (), {"facts": facts, "held": move})
        return bool(transition.execute(data)) and token.state == move.target

    def _transition(self, move: Move) -> tuple[Transition, Any, Any]:
        # Keyed by identity: moves are built once per compiled flow, and
        # hashing one would walk its gates' expressions.
        found = self._transitions.get(id(move))
        if found is None:
            transition = self._machine.get_transitions(move.trigger, move.source, move.target)[0]
            found = (transition, self._machine.events[move.trigger], self._machine.get_state(move.source))
            self._transitions[id(move)] = found
        return found


def compile_flow(flow: m.Flow, version: int | None = None) -> CompiledFlow:
    return CompiledFlow(flow, version)
