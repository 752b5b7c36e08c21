"""Expressions back to flow-language text.

Layer 1.  Explanations ("budget >= 10000 is false …"), `show`, diagram edge
labels and error messages all quote expressions; they must quote them the way
an author would write them, and the text must parse back to the same AST
(a property the tests check against `parse.py`).  So there is one canonical
spelling, with parentheses only where the grammar's precedence needs them:
``or`` < ``and`` < ``not`` < comparison / ``in`` / ``is set`` < operands.
"""

from __future__ import annotations

import math
from decimal import Decimal

from ..errors import BadInput
from .expr import (
    And,
    AtLeast,
    Compare,
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
    duration_text,
)

# Binding strength, loosest first.  An operand is anything the grammar lets
# stand on either side of `==`: literals, names, windows, `days_since`,
# `at least … { }` and parenthesised expressions.
_OR, _AND, _NOT, _PREDICATE, _OPERAND = range(5)


def unparse(expr: Expr) -> str:
    """Canonical flow-language text for `expr`."""
    return _text(expr)


def shorten(text: str, limit: int = 40) -> str:
    """`text` on one line and at most `limit` characters, with an ellipsis
    when cut (for diagram edge labels)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    if limit <= 1:
        return "…"[: max(limit, 0)]
    cut = flat[: limit - 1]
    if flat[limit - 1] != " ":
        # End on a whole word when that keeps at least half the room.
        space = cut.rfind(" ")
        if space >= limit // 2:
            cut = cut[:space]
    return cut.rstrip() + "…"


def literal_text(value: Value) -> str:
    """A literal as the flow language spells it: `true`, `12`, `0.5`, `"x"`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return _string_text(value)
    raise BadInput(f"cannot write {value!r} as a flow literal")


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"})


def _string_text(value: str) -> str:
    """JSON-style quoting: `\\"`, `\\\\`, `\\n` and `\\t` are escaped, the
    rest is written as is (the grammar takes any character but a newline)."""
    return '"' + value.translate(_ESCAPES) + '"'


def _float_text(value: float) -> str:
    """Shortest round-tripping decimal, never an exponent (the grammar has none)."""
    if not math.isfinite(value):
        raise BadInput(f"cannot write {value!r} as a flow literal")
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if "." not in text:
        text += ".0"
    return text


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Or):
        return _OR if len(expr.items) > 1 else _precedence_of_single(expr.items)
    if isinstance(expr, And):
        return _AND if len(expr.items) > 1 else _precedence_of_single(expr.items)
    if isinstance(expr, Not):
        return _NOT
    if isinstance(expr, (Compare, InList, IsSet)):
        return _PREDICATE
    return _OPERAND


def _precedence_of_single(items: tuple[Expr, ...]) -> int:
    return _precedence(items[0]) if items else _OPERAND


def _wrapped(expr: Expr, at_least: int) -> str:
    """`expr`'s text, in parentheses if it binds more loosely than `at_least`."""
    text = _text(expr)
    return f"({text})" if _precedence(expr) < at_least else text


def _text(expr: Expr) -> str:
    if isinstance(expr, Literal):
        return _literal(expr)
    if isinstance(expr, Ref):
        return expr.name
    if isinstance(expr, Window):
        return f"{expr.event} in last {duration_text(expr.days, singular=False)}"
    if isinstance(expr, DaysSince):
        return f"days_since {expr.event}"
    if isinstance(expr, Compare):
        return f"{_wrapped(expr.left, _OPERAND)} {expr.op} {_wrapped(expr.right, _OPERAND)}"
    if isinstance(expr, InList):
        return _in_list(expr)
    if isinstance(expr, IsSet):
        return f"{_wrapped(expr.operand, _OPERAND)} is {'not set' if expr.negated else 'set'}"
    if isinstance(expr, Not):
        return f"not {_wrapped(expr.operand, _NOT)}"
    if isinstance(expr, And):
        return _joined(expr.items, " and ", _NOT, empty="true")
    if isinstance(expr, Or):
        return _joined(expr.items, " or ", _AND, empty="false")
    if isinstance(expr, AtLeast):
        return _at_least(expr)
    raise BadInput(f"not an expression: {expr!r}")


def _literal(expr: Literal) -> str:
    return literal_text(expr.value)


def _in_list(expr: InList) -> str:
    items = ", ".join(_wrapped(item, _OPERAND) for item in expr.items)
    keyword = "not in" if expr.negated else "in"
    return f"{_wrapped(expr.operand, _OPERAND)} {keyword} [{items}]"


def _joined(items: tuple[Expr, ...], separator: str, at_least: int, empty: str) -> str:
    """`a and b` / `a or b`; an empty conjunction is `true`, an empty
    disjunction `false` (the parser never builds either)."""
    if not items:
        return empty
    if len(items) == 1:
        return _text(items[0])
    return separator.join(_wrapped(item, at_least) for item in items)


def _at_least(expr: AtLeast) -> str:
    items = " ".join(_item(item, index) for index, item in enumerate(expr.items))
    return f"at least {expr.count} of {{ {items} }}" if items else f"at least {expr.count} of {{ }}"


def _item(expr: Expr, index: int) -> str:
    """One item of `at least`.  After another item, `-1` would lex as score
    points (`+N`/`-N`, a single token), so an item that starts with a minus
    sign is put in parentheses there."""
    text = _text(expr)
    return f"({text})" if index and text.startswith("-") else text
