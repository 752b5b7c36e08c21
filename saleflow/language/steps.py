"""Lark's tree → the steps of test blocks (SPEC §7): one method per rule.

The part of the tree builder for `test "…" { … }`; every step keeps the
span of the step and of the names it writes.
"""

from __future__ import annotations

from typing import Any

from lark import Token

from ..model import flow as m
from .tokens import TokenReader, in_days, unquote


class StepBuilder(TokenReader):
    """Builder methods for test blocks, called as `method(meta, children)`."""

    def _step(self, meta: Any, kind: m.StepKind, name: Token | None = None, **values: Any) -> m.FlowTestStep:
        name_span = self._tspan(name) if name is not None else self._span(meta)
        text = str(name) if name is not None else None
        return m.FlowTestStep(kind, text, span=self._span(meta), name_span=name_span, **values)

    def at_step(self, meta: Any, children: list[Token]) -> m.FlowTestStep:
        return self._step(meta, "at", time=str(children[0]))

    def lead_step(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        assignments = tuple(children[1]) if len(children) > 1 else ()
        return self._step(meta, "lead", children[0], assignments=assignments)

    def use_step(self, meta: Any, children: list[Token]) -> m.FlowTestStep:
        return self._step(meta, "use", children[0])

    def set_step(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        return self._step(meta, "set", assignments=tuple(children[0]))

    def event_step(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        name, *rest = children
        count: int | None = None
        channel: Token | None = None
        for item in rest:
            if isinstance(item, tuple):
                count = item[1]
            else:
                channel = item
        if channel is None:
            return self._step(meta, "event", name, number=count)
        return self._step(
            meta, "event", name, number=count, channel=str(channel), channel_span=self._tspan(channel)
        )

    def repeat(self, meta: Any, children: list[Token]) -> tuple[str, int]:
        return ("repeat", self._whole(children[0], "an event's count"))

    def wait_step(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        return self._step(meta, "wait", number=in_days(self._number(children[0]), children[1]))

    def reason(self, meta: Any, children: list[Token]) -> tuple[str, str]:
        return ("reason", unquote(children[0]))

    def advance_step(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        reason = children[1][1] if len(children) > 1 else None
        return self._step(meta, "advance", children[0], reason=reason)

    def force_step(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        return self._step(meta, "force", children[0], reason=children[1][1])

    def expect_stage(self, meta: Any, children: list[Token]) -> m.FlowTestStep:
        return self._step(meta, "expect_stage", children[0])

    def expect_waiting(self, meta: Any, children: list[Token]) -> m.FlowTestStep:
        return self._step(meta, "expect_waiting", children[0])

    def expect_refused(self, meta: Any, children: list[Token]) -> m.FlowTestStep:
        return self._step(meta, "expect_refused", children[0])

    def expect_cycle(self, meta: Any, children: list[Token]) -> m.FlowTestStep:
        return self._step(meta, "expect_cycle", number=self._whole(children[0], "a cycle"))

    def expect_sla_breached(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        return self._step(meta, "expect_sla_breached")

    def expect_expr(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        return self._step(meta, "expect", expr=children[0])

    def assignments(self, meta: Any, children: list[m.Assignment]) -> list[m.Assignment]:
        return children

    def assignment(self, meta: Any, children: list[Any]) -> m.Assignment:
        name, value = children
        if isinstance(value, m.Literal):
            return m.Assignment(
                str(name), value.value, False, self._span(meta), value.span, self._tspan(name)
            )
        return m.Assignment(
            str(name), str(value), True, self._span(meta), self._tspan(value), self._tspan(name)
        )

    def test_block(self, meta: Any, children: list[Any]) -> m.FlowTest:
        title, *steps = children
        return m.FlowTest(unquote(title), tuple(steps), self._tspan(title))
