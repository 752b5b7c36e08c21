"""Syntax errors → `Diagnostic`s: Lark's exceptions, said in one sentence.

Also the two refusals made before or beside the grammar: a NUL character
(SF002) and an expression nested past `MAX_DEPTH` (SF007).  Lark's
exceptions never leave the language package.
"""

from __future__ import annotations

import re

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ..errors import Diagnostic, Span
from ..limits import MAX_DEPTH
from .grammar import parser

_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "string"',
    "COMPARE": "a comparison (==, !=, <, <=, >, >=)",
    "IN_LAST": '"in last"',
    "NOT_IN": '"not in"',
    "AUTO": '"auto"',
    "$END": "the end of the file",
}

# Labelled examples for Lark's match_examples: a wrong program → one sentence.
_EXAMPLES: dict[str, list[str]] = {
    'a flow file starts with "flow NAME"': ["field x text", "stage a initial", "team t { }", "# c\nevent e"],
    'compare with "==", not "="': [
        "flow f stage a when x = 1",
        "flow f condition c = x = 1",
        "flow f team t { stage a when x = 1 }",
        "flow f team t { stage a stage b when x = 1 }",
        "flow f team t { target time in a <= 1 days stage b when x = 1 }",
        "flow f stage a stage b when x = 1",
        "flow f field x int stage b when x = 1",
        "flow f skip a -> b when x = 1",
    ],
    "a list is written in square brackets, like [a, b]": [
        "flow f stage a when x in (a, b)",
        "flow f field x one of (a, b)",
    ],
    "expected a type: text, int, number, money, bool, date or one of [ … ]": [
        "flow f field x string",
        "flow f field x",
        "flow f field x field",
    ],
    'a window is written "EVENT in last N days"': [
        "flow f stage a when e in last 3 >= 1",
        "flow f stage a when e in last days",
    ],
    'a score rule is "+N each EVENT" or "+N if CONDITION"': [
        "flow f score { 5 each e }",
        "flow f score { +5 e }",
        "flow f score { +5 when x }",
    ],
    'a gate needs a condition after "when"': ["flow f stage a when", "flow f stage a when stage b"],
    'a target reads "target conversion A -> B >= P%" or "target time in S <= N days"': [
        "flow f team t { target conversion a b >= 5% }",
        "flow f team t { target conversion a -> b >= 5 }",
        "flow f team t { target a -> b }",
        "flow f team t { target time s <= 2 days }",
    ],
}


def _human(parser_: Lark, name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        pattern = parser_.get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if pattern.type == "str":
        return f'"{pattern.value}"'
    return name.lower()


def _expected(parser_: Lark, names: set[str]) -> str:
    words = sorted({_human(parser_, n) for n in names})
    if len(words) > 8:
        words = [*words[:8], "…"]
    return ", ".join(words)


# Mistakes recognised by the offending token and what was expected there,
# whatever the surrounding LALR state (examples only match one state each).
_TOKEN_LABELS: tuple[tuple[str, str, str], ...] = (
    ("EQUAL", "COMPARE", 'compare with "==", not "="'),
    ("LPAR", "LSQB", "a list is written in square brackets, like [a, b]"),
)


def _label(err: UnexpectedInput, parser_: Lark, start: str) -> str | None:
    if isinstance(err, UnexpectedToken):
        expected = set(err.accepts or err.expected)
        for token_type, wanted, sentence in _TOKEN_LABELS:
            if err.token.type == token_type and wanted in expected:
                return sentence
    if start != "start":
        return None
    try:
        label = err.match_examples(
            lambda text: parser_.parse(text, start="start"), _EXAMPLES, use_accepts=True
        )
    except Exception:  # a broken example must never hide the real error
        return None
    return label if isinstance(label, str) else None


_DATE_AROUND = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?![0-9A-Za-z_.:-])")


def _unquoted_date(text: str, token: Token) -> bool:
    """Whether the unexpected `token` is the first "-" of a date written
    without quotes (`default 2026-01-31`), which lexes as a number."""
    start = token.start_pos
    if str(token) != "-" or start is None or start < 4:
        return False
    return _DATE_AROUND.match(text, start - 4) is not None and not text[start - 5 : start - 4].isalnum()


def syntax_diagnostic(err: UnexpectedInput, text: str, path: str, start: str) -> Diagnostic:
    p = parser()
    line = getattr(err, "line", 0) or 0
    column = getattr(err, "column", 0) or 0
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream or 0
        char = text[pos] if pos < len(text) else ""
        span = Span(path, line, column, line, column + 1)
        hint = None
        if char.isalpha() and char.isupper():
            hint = "names are written in lower case: letters, digits and _"
        elif char == "'":
            hint = 'strings use double quotes: "like this"'
        message = f"unexpected character {char!r}"
        allowed = getattr(err, "allowed", None)
        if allowed:
            message += f"; expected {_expected(p, set(allowed))}"
        return Diagnostic("SF002", "error", span, message, hint)
    if isinstance(err, UnexpectedToken) and err.token.type != "$END":
        token = err.token
        span = Span(
            path,
            token.line or line,
            token.column or column,
            token.end_line or token.line or line,
            token.end_column or column + 1,
        )
        label = _label(err, p, start)
        if _unquoted_date(text, token):
            label = 'a date is written in quotes, like "2026-01-31"'
        expected = f"expected {_expected(p, set(err.accepts or err.expected))}"
        message = f'unexpected "{token}": {label}' if label else f'unexpected "{token}"; {expected}'
        return Diagnostic("SF001", "error", span, message, expected if label else None)
    # end of input
    expected_names: set[str] = set(getattr(err, "expected", None) or [])
    if isinstance(err, UnexpectedToken):
        expected_names = set(err.accepts or err.expected)
    # Only "\n" ends a line for Lark; a final newline does not start one.
    lines = text.removesuffix("\n").split("\n")
    last = len(lines)
    end = len(lines[-1].removesuffix("\r"))
    span = Span(path, last, end + 1, last, end + 2)
    label = _label(err, p, start)
    message = "unexpected end of file"
    if label:
        message += f": {label}"
    elif expected_names:
        message += f"; expected {_expected(p, expected_names)}"
    return Diagnostic("SF003", "error", span, message)


_NESTING = frozenset({"not_", "at_least", "compare", "in_list", "not_in_list", "is_set", "is_not_set"})


def too_deep(tree: Tree[Token], path: str) -> Diagnostic | None:
    """SF007 when an expression nests deeper than `MAX_DEPTH`, pointing at
    the first node past the limit.  Levels are counted as the model has
    them: parentheses and one-item `and`/`or` wrappers do not count."""
    stack: list[tuple[Tree[Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        data = str(node.data)
        if data in _NESTING or (data in ("and_", "or_") and len(node.children) > 1):
            depth += 1
        if depth > MAX_DEPTH:
            meta = node.meta
            line, column = getattr(meta, "line", 0), getattr(meta, "column", 0)
            span = Span(path, line, column, line, column + 1)
            return Diagnostic(
                "SF007",
                "error",
                span,
                f"expression nested too deeply (more than {MAX_DEPTH} levels)",
                "name parts of it with condition NAME = … and use the names",
            )
        stack.extend((child, depth) for child in node.children if isinstance(child, Tree))
    return None


def nul_character(text: str, path: str) -> Diagnostic | None:
    """SF002 at the first NUL character: the grammar lets comments and
    strings hold any character, but no database stores a NUL in text."""
    at = text.find("\x00")
    if at < 0:
        return None
    line = text.count("\n", 0, at) + 1
    column = at - text.rfind("\n", 0, at)
    span = Span(path, line, column, line, column + 1)
    return Diagnostic("SF002", "error", span, "unexpected character '\\x00' (a NUL byte)")
