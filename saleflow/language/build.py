"""Lark's tree → `model.Flow`: one builder method per grammar rule.

Declarations and expressions are built here, test blocks in `steps.py`, and
positions and numbers are read off tokens in `tokens.py`.

Building judges nothing but what the grammar cannot say (a whole number
where a decimal was written, an option given twice); every node keeps its
`Span` for the checker to point at.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lark import Token, Tree

from ..errors import NO_SPAN, Diagnostic, Span
from ..model import flow as m
from .steps import StepBuilder
from .tokens import in_days, unquote


class Builder(StepBuilder):
    """Builds model nodes bottom-up from Lark's tree: one method per rule,
    each called as `method(meta, children)`.  (A plain walk: Lark's
    `Transformer` with `v_args` costs more than the parse on big flows.)
    Problems that the grammar cannot express (a whole number where a
    decimal was written) are collected in `problems`, not raised, so that
    one run reports them all."""

    def build(self, tree: Tree[Token]) -> Any:
        stack: list[tuple[Tree[Token], list[Any]]] = [(tree, [])]
        result: Any = None
        while stack:
            node, done = stack[-1]
            if len(done) < len(node.children):
                child = node.children[len(done)]
                if isinstance(child, Tree):
                    stack.append((child, []))
                else:
                    done.append(child)
                continue
            stack.pop()
            result = getattr(self, str(node.data))(node.meta, done)
            if stack:
                stack[-1][1].append(result)
        return result

    # -- literals ---------------------------------------------------------
    def number(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(self._number(children[0]), self._span(meta))

    def negative(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(-self._number(children[0]), self._span(meta))

    def string(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(unquote(children[0]), self._span(meta))

    def true(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(True, self._span(meta))

    def false(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(False, self._span(meta))

    # -- expressions ------------------------------------------------------
    def ref(self, meta: Any, children: list[Token]) -> m.Ref:
        return m.Ref(str(children[0]), self._tspan(children[0]))

    def score_ref(self, meta: Any, children: list[Token]) -> m.Ref:
        return m.Ref("score", self._span(meta))

    count_ref = ref

    def window(self, meta: Any, children: list[Any]) -> m.Window:
        name, _in_last, amount, unit = children
        whole = self._whole(amount, f"a window's {unit}")
        return m.Window(
            str(name),
            in_days(whole, unit),
            self._span(meta),
            event_span=self._tspan(name),
            amount_span=self._tspan(amount),
        )

    # -- durations --------------------------------------------------------
    def days(self, meta: Any, _: list[Any]) -> str:
        return "days"

    def hours(self, meta: Any, _: list[Any]) -> str:
        return "hours"

    def days_since(self, meta: Any, children: list[Token]) -> m.DaysSince:
        return m.DaysSince(str(children[0]), self._span(meta), event_span=self._tspan(children[0]))

    def compare(self, meta: Any, children: list[Any]) -> m.Compare:
        left, op, right = children
        return m.Compare(str(op), left, right, self._span(meta))  # type: ignore[arg-type]

    def in_list(self, meta: Any, children: list[Any]) -> m.InList:
        operand, items = children
        return m.InList(operand, items, False, self._span(meta))

    def not_in_list(self, meta: Any, children: list[Any]) -> m.InList:
        operand, _not_in, items = children
        return m.InList(operand, items, True, self._span(meta))

    def value_list(self, meta: Any, children: list[Any]) -> tuple[m.Expr, ...]:
        return tuple(child for child in children if child is not None)

    def is_set(self, meta: Any, children: list[Any]) -> m.IsSet:
        return m.IsSet(children[0], False, self._span(meta))

    def is_not_set(self, meta: Any, children: list[Any]) -> m.IsSet:
        return m.IsSet(children[0], True, self._span(meta))

    def not_(self, meta: Any, children: list[Any]) -> m.Not:
        return m.Not(children[0], self._span(meta))

    def and_(self, meta: Any, children: list[Any]) -> m.Expr:
        return children[0] if len(children) == 1 else m.And(tuple(children), self._span(meta))

    def or_(self, meta: Any, children: list[Any]) -> m.Expr:
        return children[0] if len(children) == 1 else m.Or(tuple(children), self._span(meta))

    def at_least(self, meta: Any, children: list[Any]) -> m.AtLeast:
        count, *items = children
        whole = self._whole(count, "at least")
        return m.AtLeast(whole, tuple(items), self._span(meta), count_span=self._tspan(count))

    # -- declarations -----------------------------------------------------
    def header(self, meta: Any, children: list[Any]) -> tuple[str, dict[str, Any]]:
        name = children[0]
        parts: dict[str, Any] = {"name": str(name), "name_span": self._tspan(name), "span": self._span(meta)}
        for child in children[1:]:
            if isinstance(child, tuple):  # ("version", number, span)
                parts["version"], parts["version_span"] = child[1], child[2]
            elif isinstance(child, Token) and child.type == "STRING":
                parts["title"] = unquote(child)
        return ("header", parts)

    def version(self, meta: Any, children: list[Token]) -> tuple[str, int, Span]:
        return ("version", self._whole(children[0], "a flow's version"), self._tspan(children[0]))

    def text_type(self, meta: Any, _: list[Any]) -> m.FieldType:
        return m.FieldType("text")

    def int_type(self, meta: Any, _: list[Any]) -> m.FieldType:
        return m.FieldType("int")

    def number_type(self, meta: Any, _: list[Any]) -> m.FieldType:
        return m.FieldType("number")

    def money_type(self, meta: Any, _: list[Any]) -> m.FieldType:
        return m.FieldType("money")

    def bool_type(self, meta: Any, _: list[Any]) -> m.FieldType:
        return m.FieldType("bool")

    def date_type(self, meta: Any, _: list[Any]) -> m.FieldType:
        return m.FieldType("date")

    def enum_type(self, meta: Any, children: list[Any]) -> m.FieldType:
        names = children[0]
        return m.FieldType("enum", tuple(str(n) for n in names), tuple(self._tspan(n) for n in names))

    def name_list(self, meta: Any, children: list[Token]) -> list[Token]:
        return children

    def default(self, meta: Any, children: list[Any]) -> tuple[str, Any, Span, bool]:
        value = children[0]
        if isinstance(value, m.Literal):
            return ("default", value.value, value.span, False)
        return ("default", str(value), self._tspan(value), True)

    def field_decl(self, meta: Any, children: list[Any]) -> m.FieldDef:
        name, ftype, *rest = children
        if not rest:
            return m.FieldDef(str(name), ftype, None, self._span(meta), name_span=self._tspan(name))
        _, default, default_span, is_name = rest[0]
        return m.FieldDef(
            str(name),
            ftype,
            default,
            self._span(meta),
            name_span=self._tspan(name),
            default_span=default_span,
            default_is_name=is_name,
        )

    def channel(self, meta: Any, children: list[Token]) -> Token:
        return children[0]

    def event_decl(self, meta: Any, children: list[Any]) -> m.EventDef:
        name = children[0]
        if len(children) == 1:
            return m.EventDef(str(name), None, self._span(meta), name_span=self._tspan(name))
        channel = children[1]
        return m.EventDef(
            str(name),
            str(channel),
            self._span(meta),
            name_span=self._tspan(name),
            channel_span=self._tspan(channel),
        )

    def condition_decl(self, meta: Any, children: list[Any]) -> m.ConditionDef:
        name = children[0]
        return m.ConditionDef(str(name), children[1], self._span(meta), name_span=self._tspan(name))

    # points arrive as (number, span of the sign and the number)
    def plus_points(self, meta: Any, children: list[Token]) -> tuple[int, Span]:
        return (self._whole(children[0], "points"), self._span(meta))

    def minus_points(self, meta: Any, children: list[Token]) -> tuple[int, Span]:
        return (-self._whole(children[0], "points"), self._span(meta))

    def score_each(self, meta: Any, children: list[Any]) -> m.ScoreRule:
        (points, where), each = children
        return m.ScoreRule(points, each=each, span=self._span(meta), points_span=where)

    def score_if(self, meta: Any, children: list[Any]) -> m.ScoreRule:
        (points, where), condition = children
        return m.ScoreRule(points, condition=condition, span=self._span(meta), points_span=where)

    def score_decl(self, meta: Any, children: list[m.ScoreRule]) -> tuple[str, tuple[m.ScoreRule, ...]]:
        return ("score", tuple(children))

    # Stage options arrive as (keyword, value, span, where) tuples: `span`
    # covers the option, `where` is what a diagnostic about its value
    # points at (the word itself, or the number of `sla` and `capacity`).
    def initial(self, meta: Any, _: list[Any]) -> tuple[str, Any, Span, Span]:
        return ("initial", True, self._span(meta), self._span(meta))

    def final(self, meta: Any, _: list[Any]) -> tuple[str, Any, Span, Span]:
        return ("final", True, self._span(meta), self._span(meta))

    def manual(self, meta: Any, _: list[Any]) -> tuple[str, Any, Span, Span]:
        return ("manual", True, self._span(meta), self._span(meta))

    def when(self, meta: Any, children: list[Any]) -> tuple[str, Any, Span, Span]:
        return ("when", children[0], self._span(meta), self._span(meta))

    def sla(self, meta: Any, children: list[Any]) -> tuple[str, Any, Span, Span]:
        days = in_days(self._number(children[0]), children[1])
        return ("sla_days", days, self._span(meta), self._tspan(children[0]))

    def capacity(self, meta: Any, children: list[Token]) -> tuple[str, Any, Span, Span]:
        return (
            "capacity",
            self._whole(children[0], "a capacity"),
            self._span(meta),
            self._tspan(children[0]),
        )

    def stage_decl(self, meta: Any, children: list[Any]) -> m.Stage:
        name, *options = children
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for key, value, span, where in options:
            if key in values:
                self.problems.append(
                    Diagnostic("SF005", "error", span, f'stage "{name}" says "{_OPTION_WORD[key]}" twice')
                )
            values[key] = value
            # A flag is where it is first said; a number where the value in effect (the last) is.
            if key in _VALUE_SPANS and (key not in spans or key in ("sla_days", "capacity")):
                spans[key] = where
        name_span = self._tspan(name)
        return m.Stage(
            str(name),
            span=name_span,
            name_span=name_span,
            initial_span=spans.get("initial", NO_SPAN),
            final_span=spans.get("final", NO_SPAN),
            sla_span=spans.get("sla_days", NO_SPAN),
            capacity_span=spans.get("capacity", NO_SPAN),
            **values,
        )

    def when_clause(self, meta: Any, children: list[Any]) -> tuple[str, Any]:
        return ("when", children[0])

    def skip_decl(self, meta: Any, children: list[Any]) -> m.Skip:
        source, target, *rest = children
        when = rest[0][1] if rest else None
        return m.Skip(
            str(source),
            str(target),
            when,
            self._span(meta),
            source_span=self._tspan(source),
            target_span=self._tspan(target),
        )

    def recycle_decl(self, meta: Any, children: list[Any]) -> m.Recycle:
        sources, target, *rest = children
        when = None
        auto = False
        for item in rest:
            if isinstance(item, Token) and item.type == "AUTO":
                auto = True
            else:
                when = item[1]
        return m.Recycle(
            tuple(str(s) for s in sources),
            str(target),
            when,
            auto,
            self._span(meta),
            source_spans=tuple(self._tspan(s) for s in sources),
            target_span=self._tspan(target),
        )

    def conversion_target(self, meta: Any, children: list[Token]) -> m.Target:
        source, to, op, value = children
        return m.Target(
            "conversion",
            str(source),
            str(to),
            str(op),  # type: ignore[arg-type]
            self._number(value),
            self._span(meta),
            stage_span=self._tspan(source),
            to_span=self._tspan(to),
            value_span=self._tspan(value),
        )

    def time_target(self, meta: Any, children: list[Any]) -> m.Target:
        stage, op, value, unit = children
        days = in_days(self._number(value), unit)
        return m.Target(
            "time",
            str(stage),
            None,
            str(op),  # type: ignore[arg-type]
            days,
            self._span(meta),
            stage_span=self._tspan(stage),
            value_span=self._tspan(value),
        )

    def team_decl(self, meta: Any, children: list[Any]) -> tuple[str, m.Team, tuple[m.Stage, ...]]:
        name = str(children[0])
        name_span = self._tspan(children[0])
        title = None
        stages: list[m.Stage] = []
        targets: list[m.Target] = []
        for child in children[1:]:
            if isinstance(child, Token):
                title = unquote(child)
            elif isinstance(child, m.Stage):
                stages.append(replace(child, team=name))
            else:
                targets.append(child)
        team = m.Team(
            name, title, tuple(s.name for s in stages), tuple(targets), self._span(meta), name_span=name_span
        )
        return ("team", team, tuple(stages))

    def start(self, meta: Any, children: list[Any]) -> dict[str, Any]:
        _, header = children[0]
        parts: dict[str, list[Any]] = {
            "fields": [],
            "events": [],
            "conditions": [],
            "score_rules": [],
            "teams": [],
            "stages": [],
            "skips": [],
            "recycles": [],
        }
        kinds = {
            m.FieldDef: "fields",
            m.EventDef: "events",
            m.ConditionDef: "conditions",
            m.Stage: "stages",
            m.Skip: "skips",
            m.Recycle: "recycles",
        }
        tests: list[m.FlowTest] = []
        for decl in children[1:]:
            if isinstance(decl, m.FlowTest):
                tests.append(decl)
            elif isinstance(decl, tuple) and decl[0] == "score":
                parts["score_rules"].extend(decl[1])
            elif isinstance(decl, tuple) and decl[0] == "team":
                parts["teams"].append(decl[1])
                parts["stages"].extend(decl[2])
            elif isinstance(decl, m.Target):
                self.problems.append(
                    Diagnostic(
                        "SF006",
                        "error",
                        decl.span,
                        "a target belongs inside the team whose numbers it sets",
                        "move this line into a team { … } block",
                    )
                )
            else:
                parts[kinds[type(decl)]].append(decl)
        return {
            **header,
            "tests": tuple(tests),
            **{key: tuple(value) for key, value in parts.items()},
        }


# Stage options whose position a diagnostic may point at.
_VALUE_SPANS = frozenset({"initial", "final", "sla_days", "capacity"})

_OPTION_WORD = {
    "initial": "initial",
    "final": "final",
    "manual": "manual",
    "when": "when",
    "sla_days": "sla",
    "capacity": "capacity",
}
