"""A checked flow → one shared `transitions` state machine per flow version.

Layer 3; the only module that knows `transitions` (its words, "state" and
"trigger", stay in here).  The machine is built once per flow version with
`model=None` and fired against a light per-operation token, never one Machine
per lead and never `add_model` (quadratic in transitions 0.9).

The machine is load-bearing, through transitions' public API only: the move
table that `moves_from` (and so `allowed`, `show`, `audit verify`) answers
from is read back from the machine (`get_triggers`, `get_transitions`); its
conditions are the gates; a move happens by firing its trigger
(`Event.trigger`), and only when the machine moved the token.  A machine
that lacks a transition, or whose condition refuses, stops the move
(`tests/test_compile.py` proves it by tampering with the machine).

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
from transitions.core import MachineError

from .errors import NO_SPAN, Span
from .guards.evaluate import Evaluator
from .guards.facts import Facts
from .model import flow as m
from .model import graph

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
    """The flow's move graph (`graph.moves`) with each move's gates, trigger
    and whether automatic progress may take it."""
    out: list[Move] = []
    for mv in graph.moves(flow):
        target = flow.stage(mv.target)
        manual = target is not None and target.manual
        own = () if mv.when is None else (Gate(f"{mv.kind} condition", mv.when, mv.span),)
        if mv.kind == "advance":
            out.append(
                Move("advance", mv.source, mv.target, "advance", _gate_of(flow, mv.target), not manual)
            )
        elif mv.kind == "exit":
            out.append(Move("exit", mv.source, mv.target, f"exit_to_{mv.target}", _gate_of(flow, mv.target)))
        elif mv.kind == "skip":
            trigger = f"skip{mv.index}_to_{mv.target}"
            out.append(
                Move("skip", mv.source, mv.target, trigger, own + _gate_of(flow, mv.target), not manual)
            )
        else:
            trigger = f"recycle{mv.index}_to_{mv.target}"
            out.append(Move("recycle", mv.source, mv.target, trigger, own, mv.auto))
    return out


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
        defined: dict[tuple[str, str, str], Move] = {}
        for move in _moves(flow):
            key = (move.trigger, move.source, move.target)
            if flow.stage(move.source) is not None and key not in defined:
                defined[key] = move
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
                for move in defined.values()
            ],
            auto_transitions=False,
            send_event=True,
        )
        # The move table, as the machine holds it: for each stage, the
        # transitions of each event (trigger) from it, in the order the
        # events were declared (advance, exits, skips, recycles), mapped back
        # to the moves' kinds and gates.  One pass over the events: asking
        # `get_triggers` stage by stage would walk every event per stage.
        machine = self._machine
        self._by_source: dict[str, list[Move]] = {name: [] for name in flow.stage_names}
        for trigger, event in machine.events.items():
            for source, transitions in event.transitions.items():
                table = self._by_source[source]
                table.extend(defined[(trigger, source, t.dest or "")] for t in transitions)
        self._events = {trigger: machine.events[trigger] for trigger, _, _ in defined}
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
        """Whether the machine holds this move (replay of the journal)."""
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

    def fire(self, move: Move, facts: Facts, *, judged: bool = False) -> bool:
        """Fire `move`'s trigger on a fresh token in the move's source; True
        when the machine moved it to the target (its conditions, the gates,
        held).  The gates are tried first without the machine (unless the
        caller has just seen them hold on these facts: `judged`): most
        evaluations find a gate closed, and an event costs more than the
        gate itself; the conditions then know the gates just held
        (`held`) and do not evaluate them twice."""
        if not judged and not self.passes(move, facts):
            return False
        token = _Token(move.source)
        try:
            moved = self._events[move.trigger].trigger(token, facts=facts, held=move)
        except MachineError:  # the machine holds no such move from the source
            return False
        return bool(moved) and token.state == move.target


def compile_flow(flow: m.Flow, version: int | None = None) -> CompiledFlow:
    return CompiledFlow(flow, version)
