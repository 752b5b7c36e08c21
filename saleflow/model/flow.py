"""The flow definition: its declarations as frozen dataclasses with source spans.

Layer 1.  Fields, events, conditions, score rules, teams, stages, skips,
recycles, targets, the test blocks, and the `Flow` that holds them; the
expressions inside them are `expr`'s.  The `language` package builds these
from text, `check` judges them, `guards` evaluates their expressions,
`compile.py` turns them into a state machine.  Nothing here knows Lark,
transitions or SQLAlchemy, and nothing mutates a `Flow` after it is built;
lookups are computed once in ``__post_init__``.

Every name keeps the span of where it is written (`name_span`,
`event_span`, `source_spans`, ...), and so do the numbers and words a
diagnostic points at, so that the checker never searches the source again.
Spans are excluded from equality (and so from hashing and from a flow's
identity) so that two flows (or expressions) that say the same thing
compare equal wherever they were written.

The expression nodes are re-exported here, so that `model.flow` still names
the whole definition for code that reads it as one vocabulary (the parser's
``m.Compare``); new code imports them from `model.expr`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as attr
from typing import Literal as TypingLiteral
from typing import Protocol, TypeVar

from ..errors import NO_SPAN, Span
from .expr import (
    BUILTINS,
    COMPARE,
    COMPARE_OPS,
    And,
    AtLeast,
    Compare,
    CompareOp,
    DaysSince,
    Expr,
    InList,
    IsSet,
    Literal,
    Not,
    Or,
    Ref,
    Value,
    Window,
    children,
    duration_text,
    walk,
)

# --------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------

FieldKind = TypingLiteral["text", "int", "number", "money", "bool", "date", "enum"]
NUMERIC_KINDS: tuple[FieldKind, ...] = ("int", "number", "money")


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_N = TypeVar("_N", bound=_Named)


def first_of(items: Iterable[_N]) -> dict[str, _N]:
    """Each name's first declaration (a duplicate is the checker's SF101)."""
    table: dict[str, _N] = {}
    for item in items:
        table.setdefault(item.name, item)
    return table


@dataclass(frozen=True, slots=True)
class FieldType:
    kind: FieldKind
    choices: tuple[str, ...] = ()
    choice_spans: tuple[Span, ...] = attr(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "enum":
            return "one of [" + ", ".join(self.choices) + "]"
        return self.kind


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: FieldType
    default: Value | None = None
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    name_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    default_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    # `default abc` rather than `default "abc"`: the same value, written as a name.
    default_is_name: bool = attr(default=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EventDef:
    name: str
    channel: str | None = None
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    name_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    channel_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ConditionDef:
    name: str
    expr: Expr
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    name_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ScoreRule:
    """`+N each EVENT [in last D days]` (`each` is a `Ref` or `Window`) or
    `+N if EXPR` (`condition`).  Exactly one of the two is set."""

    points: int
    each: Ref | Window | None = None
    condition: Expr | None = None
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    points_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    team: str | None = None
    initial: bool = False
    final: bool = False
    manual: bool = False
    when: Expr | None = None
    sla_days: float | None = None
    capacity: int | None = None
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    # Where the name, the words `initial` and `final`, and the numbers of
    # `sla` and `capacity` are written.  `span` is the name's too.
    name_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    initial_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    final_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    sla_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    capacity_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Target:
    """`target conversion A -> B >= P%` (kind "conversion", value in percent)
    or `target time in S <= N days` (kind "time", `stage` is S, value in days)."""

    kind: TypingLiteral["conversion", "time"]
    stage: str
    to: str | None
    op: CompareOp
    value: float
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    stage_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    to_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    value_span: Span = attr(default=NO_SPAN, compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "conversion":
            return f"conversion {self.stage} -> {self.to} {self.op} {self.value:g}%"
        return f"time in {self.stage} {self.op} {duration_text(self.value)}"


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    title: str | None
    stages: tuple[str, ...]
    targets: tuple[Target, ...] = ()
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    name_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Skip:
    source: str
    target: str
    when: Expr | None = None
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    source_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    target_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Recycle:
    sources: tuple[str, ...]
    target: str
    when: Expr | None = None
    auto: bool = False
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    source_spans: tuple[Span, ...] = attr(default=(), compare=False, repr=False)
    target_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


# --------------------------------------------------------------------------
# Test blocks (SPEC §7): scenarios at the end of a flow file.  They are not
# part of the flow's meaning, so `Flow` keeps them out of its equality.
# --------------------------------------------------------------------------

StepKind = TypingLiteral[
    "at",
    "lead",
    "use",
    "set",
    "event",
    "wait",
    "advance",
    "force",
    "expect_stage",
    "expect_cycle",
    "expect_waiting",
    "expect_refused",
    "expect_sla_breached",
    "expect",
]


@dataclass(frozen=True, slots=True)
class Assignment:
    """`F = V` in `lead … with` and `set`; `bare` when V is an unquoted name
    (an enum value)."""

    field: str
    value: Value
    bare: bool = False
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    value_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    field_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FlowTestStep:
    """One step of a test block.  `name` is what the step names (the lead of
    `lead`/`use`, the event of `event`, the stage of `advance`, `force`,
    `expect stage|waiting|refused`); `number` is `x N`, `expect cycle N` or
    the days of `wait` (hours as a fraction); `time` is the ISO text of `at`."""

    kind: StepKind
    name: str | None = None
    assignments: tuple[Assignment, ...] = ()
    number: float | None = None
    channel: str | None = None
    reason: str | None = None
    time: str | None = None
    expr: Expr | None = None
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    name_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    channel_span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FlowTest:
    """`test "name" { steps }`."""

    name: str
    steps: tuple[FlowTestStep, ...] = ()
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Flow:
    """A parsed flow.  Collections keep declaration order; duplicates are kept
    too (the checker reports them), the lookups keep the first of a name."""

    name: str
    version: int = 1
    title: str | None = None
    fields: tuple[FieldDef, ...] = ()
    events: tuple[EventDef, ...] = ()
    conditions: tuple[ConditionDef, ...] = ()
    score_rules: tuple[ScoreRule, ...] = ()
    teams: tuple[Team, ...] = ()
    stages: tuple[Stage, ...] = ()
    skips: tuple[Skip, ...] = ()
    recycles: tuple[Recycle, ...] = ()
    tests: tuple[FlowTest, ...] = attr(default=(), compare=False, repr=False)
    path: str = attr(default="<string>", compare=False)
    source: str = attr(default="", compare=False, repr=False)
    span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    name_span: Span = attr(default=NO_SPAN, compare=False, repr=False)
    version_span: Span = attr(default=NO_SPAN, compare=False, repr=False)

    _stages: dict[str, Stage] = attr(init=False, compare=False, repr=False)
    _fields: dict[str, FieldDef] = attr(init=False, compare=False, repr=False)
    _events: dict[str, EventDef] = attr(init=False, compare=False, repr=False)
    _conditions: dict[str, ConditionDef] = attr(init=False, compare=False, repr=False)
    _teams: dict[str, Team] = attr(init=False, compare=False, repr=False)
    _main_line: tuple[str, ...] = attr(init=False, compare=False, repr=False)
    _position: dict[str, int] = attr(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        main = tuple(s.name for s in self.stages if s.team is not None)
        position: dict[str, int] = {}
        for index, name in enumerate(main):
            position.setdefault(name, index)
        setattr_ = object.__setattr__
        setattr_(self, "_stages", first_of(self.stages))
        setattr_(self, "_fields", first_of(self.fields))
        setattr_(self, "_events", first_of(self.events))
        setattr_(self, "_conditions", first_of(self.conditions))
        setattr_(self, "_teams", first_of(self.teams))
        setattr_(self, "_main_line", main)
        setattr_(self, "_position", position)

    # lookups ------------------------------------------------------------
    def stage(self, name: str) -> Stage | None:
        return self._stages.get(name)

    def field(self, name: str) -> FieldDef | None:
        return self._fields.get(name)

    def event(self, name: str) -> EventDef | None:
        return self._events.get(name)

    def condition(self, name: str) -> ConditionDef | None:
        return self._conditions.get(name)

    def team(self, name: str) -> Team | None:
        return self._teams.get(name)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(self._stages)

    @property
    def main_line(self) -> tuple[str, ...]:
        """Stages declared inside teams, in declaration order."""
        return self._main_line

    def position(self, stage: str) -> int | None:
        """Index of `stage` on the main line, or None for a side stage."""
        return self._position.get(stage)

    @property
    def initial(self) -> Stage | None:
        for stage in self.stages:
            if stage.initial:
                return stage
        return None

    def next_on_main_line(self, stage: str) -> str | None:
        index = self._position.get(stage)
        if index is None or index + 1 >= len(self._main_line):
            return None
        return self._main_line[index + 1]


__all__ = [  # the declarations, and the expressions re-exported from expr.py
    "BUILTINS",
    "COMPARE",
    "COMPARE_OPS",
    "NUMERIC_KINDS",
    "And",
    "Assignment",
    "AtLeast",
    "Compare",
    "CompareOp",
    "ConditionDef",
    "DaysSince",
    "EventDef",
    "Expr",
    "FieldDef",
    "FieldKind",
    "FieldType",
    "Flow",
    "FlowTest",
    "FlowTestStep",
    "InList",
    "IsSet",
    "Literal",
    "Not",
    "Or",
    "Recycle",
    "Ref",
    "ScoreRule",
    "Skip",
    "Stage",
    "StepKind",
    "Target",
    "Team",
    "Value",
    "Window",
    "children",
    "duration_text",
    "walk",
]
