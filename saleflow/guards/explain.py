"""Explanations, the "why not" of a false expression: the failing parts,
one line each, with the values they saw (`budget >= 10000 is false (budget
is 5000)`), and how values and expressions are shown in them.

Layer 2, part of the guards; `Explaining` is mixed into `Evaluator`, whose
`test` and `reads` it calls.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from ..errors import BadInput
from ..model.flow import BUILTINS, And, AtLeast, Expr, Flow, Or, Ref
from ..model.unparse import literal_text, unparse
from ..records import FieldValue
from .facts import Facts

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


class Explaining:
    """`explain`, mixed into `Evaluator` (which provides `flow`, `test`,
    `reads` and `_opening`)."""

    if TYPE_CHECKING:  # Evaluator's
        flow: Flow

        def test(self, expr: Expr, facts: Facts) -> bool: ...
        def reads(self, expr: Expr, facts: Facts) -> dict[str, FieldValue]: ...
        def _opening(self, what: str) -> AbstractContextManager[None]: ...

    def explain(self, expr: Expr, facts: Facts) -> list[str]:
        """Why `expr` is false, one line per failing part; [] when it is true."""
        if self.test(expr, facts):
            return []
        try:
            return self._why(expr, facts) or [self._failed(expr, facts)]
        except RecursionError:
            raise BadInput(f"expression nests too deeply to explain: {short_text(expr)}") from None

    def _is_condition(self, expr: Expr) -> bool:
        """True when `expr` is a name that resolves to a condition."""
        return (
            isinstance(expr, Ref)
            and expr.name not in BUILTINS
            and self.flow.field(expr.name) is None
            and self.flow.condition(expr.name) is not None
        )

    def _why(self, expr: Expr, facts: Facts) -> list[str]:
        """The failing parts of `expr`, which is false."""
        if isinstance(expr, And):
            failing = [item for item in expr.items if not self.test(item, facts)]
            return [line for item in failing for line in self._why(item, facts)]
        if isinstance(expr, Or):
            return [line for item in expr.items for line in self._why(item, facts)]
        if isinstance(expr, AtLeast):
            return self._why_at_least(expr, facts)
        if isinstance(expr, Ref) and self._is_condition(expr):
            return self._why_condition(expr.name, facts)
        return [self._failed(expr, facts)]

    def _why_at_least(self, expr: AtLeast, facts: Facts) -> list[str]:
        failing = [item for item in expr.items if not self.test(item, facts)]
        true = len(expr.items) - len(failing)
        lines = [f"at least {expr.count} of {{…}}: {true} of {len(expr.items)} true"]
        for item in failing:
            lines.extend(self._why(item, facts))
        return lines

    def _why_condition(self, name: str, facts: Facts) -> list[str]:
        condition = self.flow.condition(name)
        assert condition is not None
        with self._opening(f"condition {name}"):
            lines = self._why(condition.expr, facts)
        return [f"{name}: {line}" for line in lines]

    def _failed(self, expr: Expr, facts: Facts) -> str:
        """`budget >= 10000 is false (budget is 5000)`."""
        seen = self.reads(expr, facts)
        head = f"{unparse(expr)} is false"
        if not seen or (isinstance(expr, Ref) and len(seen) == 1 and seen.get(expr.name) is False):
            return head
        detail = ", ".join(f"{key} is {format_value(value)}" for key, value in seen.items())
        return f"{head} ({detail})"


def format_value(value: FieldValue) -> str:
    """A value as explanations show it: `5000`, `"user"`, `true`, `not set`."""
    if value is None:
        return "not set"
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, (bool, int, str)):
        return literal_text(value)
    return json.dumps(value, default=str)


def _format_float(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value.is_integer():
        return str(int(value))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("0", "-0") else f"{value:.3g}"


def short_text(expr: Expr) -> str:
    try:
        text = unparse(expr)
    except RecursionError:
        return type(expr).__name__
    return text if len(text) <= 60 else text[:59] + "…"
