"""Flow text → `model.Flow`: the only module that knows Lark.

It loads `grammar/saleflow.lark` (from the installed package or the source
tree), builds the LALR parser once per process, and reuses a built parser
across processes through a cache file in a folder the user owns, keyed by the
grammar's hash and Lark's version (building costs ~0.3 s, loading ~20 ms).

Parsing judges only syntax.  Names, types and structure are `check.py`'s job,
so every node keeps its `Span` for the checker to point at.  Lark's
exceptions never leave this module: they become `Diagnostic`s inside a
`FlowInvalid`.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import re
import stat
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import BadInput, Diagnostic, FlowInvalid, Span
from ..limits import MAX_DEPTH, MAX_FLOW_BYTES, MAX_NUMBER_LENGTH
from ..model import flow as m

_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "contextual",
    "propagate_positions": True,
    "start": ["start", "expr"],
    "maybe_placeholders": False,
}


def grammar_path() -> Path:
    """The grammar file: packaged copy first (a wheel), else the source tree."""
    packaged = resources.files("saleflow").joinpath("grammar", "saleflow.lark")
    if packaged.is_file():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parents[2] / "grammar" / "saleflow.lark"
    if source_tree.is_file():
        return source_tree
    raise BadInput("the saleflow grammar file is missing from this installation; reinstall saleflow")


def _cache_dir() -> Path | None:
    """A private cache folder, or None when no safe one can be had."""
    explicit = os.environ.get("SALEFLOW_CACHE_DIR")
    if explicit == "":
        return None
    if explicit:
        base = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "saleflow"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.stat()
    except OSError:
        return None
    # Only trust a folder this user owns and nobody else can write to:
    # the cache holds a pickled parser.
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    if not os.access(base, os.W_OK | os.X_OK):
        return None
    return base


_PARSER: Lark | None = None


def parser() -> Lark:
    """The process-wide parser, loaded from the user's cache when possible."""
    global _PARSER
    if _PARSER is None:
        text = grammar_path().read_text(encoding="utf-8")
        key = hashlib.sha256(f"{lark.__version__}\n{sorted(_OPTIONS.items())}\n{text}".encode()).hexdigest()
        folder = _cache_dir()
        cache: str | bool = str(folder / f"parser-{key[:20]}.lark") if folder else False
        # A stale or unreadable cache is rebuilt; Lark would log that loudly.
        logging.getLogger("lark").setLevel(logging.CRITICAL)
        _PARSER = Lark(text, cache=cache, **_OPTIONS)
    return _PARSER


# --------------------------------------------------------------------------
# Tree → model
# --------------------------------------------------------------------------


class _Builder:
    """Builds model nodes bottom-up from Lark's tree: one method per rule,
    each called as `method(meta, children)`.  (A plain walk: Lark's
    `Transformer` with `v_args` costs more than the parse on big flows.)
    Problems that the grammar cannot express (a whole number where a
    decimal was written) are collected in `problems`, not raised, so that
    one run reports them all."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Diagnostic] = []

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

    # -- positions --------------------------------------------------------
    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.path, 0, 0, 0, 0)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, token: Token) -> Span:
        return Span(
            self.path,
            token.line or 0,
            token.column or 0,
            token.end_line or token.line or 0,
            token.end_column or token.column or 0,
        )

    def _whole(self, token: Token, what: str) -> int:
        text = str(token)
        if self._too_long(token):
            return 0
        if "." in text:
            self.problems.append(
                Diagnostic("SF004", "error", self._tspan(token), f"{what} must be a whole number, not {text}")
            )
            return int(text.partition(".")[0])  # never through float: 1e400 has no int
        return int(text)

    def _number(self, token: Token) -> int | float:
        """A number as written; a float beyond the largest one is inf, for
        the checker to refuse where it goes (SF108, SF118, SF210, SF213)."""
        return 0 if self._too_long(token) else _number(token)

    def _too_long(self, token: Token) -> bool:
        """SF008 a number of more than MAX_NUMBER_LENGTH characters: no value
        in range needs them, and Python's int() refuses past 4,300 digits."""
        if len(token) <= MAX_NUMBER_LENGTH:
            return False
        self.problems.append(
            Diagnostic(
                "SF008",
                "error",
                self._tspan(token),
                f"a number written with {len(token):,} characters; the limit is {MAX_NUMBER_LENGTH:,}",
            )
        )
        return True

    # -- literals ---------------------------------------------------------
    def number(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(self._number(children[0]), self._span(meta))

    def negative(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(-self._number(children[0]), self._span(meta))

    def string(self, meta: Any, children: list[Token]) -> m.Literal:
        return m.Literal(_unquote(children[0]), self._span(meta))

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
        return m.Window(str(name), _in_days(whole, unit), self._span(meta))

    # -- durations --------------------------------------------------------
    def days(self, meta: Any, _: list[Any]) -> str:
        return "days"

    def hours(self, meta: Any, _: list[Any]) -> str:
        return "hours"

    def days_since(self, meta: Any, children: list[Token]) -> m.DaysSince:
        return m.DaysSince(str(children[0]), self._span(meta))

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
        return m.AtLeast(self._whole(count, "at least"), tuple(items), self._span(meta))

    # -- declarations -----------------------------------------------------
    def header(self, meta: Any, children: list[Any]) -> tuple[str, str, int, str | None, Span]:
        name = str(children[0])
        version = 1
        title = None
        for child in children[1:]:
            if isinstance(child, int):
                version = child
            elif isinstance(child, Token) and child.type == "STRING":
                title = _unquote(child)
        return ("header", name, version, title, self._span(meta))

    def version(self, meta: Any, children: list[Token]) -> int:
        return self._whole(children[0], "a flow's version")

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
        return m.FieldType("enum", tuple(str(name) for name in children[0]))

    def name_list(self, meta: Any, children: list[Token]) -> list[Token]:
        return children

    def default(self, meta: Any, children: list[Any]) -> tuple[str, Any]:
        value = children[0]
        return ("default", value.value if isinstance(value, m.Literal) else str(value))

    def field_decl(self, meta: Any, children: list[Any]) -> m.FieldDef:
        name, ftype, *rest = children
        default = rest[0][1] if rest else None
        return m.FieldDef(str(name), ftype, default, self._span(meta))

    def channel(self, meta: Any, children: list[Token]) -> str:
        return str(children[0])

    def event_decl(self, meta: Any, children: list[Any]) -> m.EventDef:
        return m.EventDef(str(children[0]), children[1] if len(children) > 1 else None, self._span(meta))

    def condition_decl(self, meta: Any, children: list[Any]) -> m.ConditionDef:
        return m.ConditionDef(str(children[0]), children[1], self._span(meta))

    def plus_points(self, meta: Any, children: list[Token]) -> int:
        return self._whole(children[0], "points")

    def minus_points(self, meta: Any, children: list[Token]) -> int:
        return -self._whole(children[0], "points")

    def score_each(self, meta: Any, children: list[Any]) -> m.ScoreRule:
        return m.ScoreRule(children[0], each=children[1], span=self._span(meta))

    def score_if(self, meta: Any, children: list[Any]) -> m.ScoreRule:
        return m.ScoreRule(children[0], condition=children[1], span=self._span(meta))

    def score_decl(self, meta: Any, children: list[m.ScoreRule]) -> tuple[str, tuple[m.ScoreRule, ...]]:
        return ("score", tuple(children))

    # stage options arrive as (keyword, value, span) triples
    def initial(self, meta: Any, _: list[Any]) -> tuple[str, Any, Span]:
        return ("initial", True, self._span(meta))

    def final(self, meta: Any, _: list[Any]) -> tuple[str, Any, Span]:
        return ("final", True, self._span(meta))

    def manual(self, meta: Any, _: list[Any]) -> tuple[str, Any, Span]:
        return ("manual", True, self._span(meta))

    def when(self, meta: Any, children: list[Any]) -> tuple[str, Any, Span]:
        return ("when", children[0], self._span(meta))

    def sla(self, meta: Any, children: list[Any]) -> tuple[str, Any, Span]:
        return ("sla_days", _in_days(self._number(children[0]), children[1]), self._span(meta))

    def capacity(self, meta: Any, children: list[Token]) -> tuple[str, Any, Span]:
        return ("capacity", self._whole(children[0], "a capacity"), self._span(meta))

    def stage_decl(self, meta: Any, children: list[Any]) -> m.Stage:
        name, *options = children
        values: dict[str, Any] = {}
        for key, value, span in options:
            if key in values:
                self.problems.append(
                    Diagnostic("SF005", "error", span, f'stage "{name}" says "{_OPTION_WORD[key]}" twice')
                )
            values[key] = value
        return m.Stage(str(name), span=self._tspan(name), **values)

    def when_clause(self, meta: Any, children: list[Any]) -> tuple[str, Any]:
        return ("when", children[0])

    def skip_decl(self, meta: Any, children: list[Any]) -> m.Skip:
        source, target, *rest = children
        when = rest[0][1] if rest else None
        return m.Skip(str(source), str(target), when, self._span(meta))

    def recycle_decl(self, meta: Any, children: list[Any]) -> m.Recycle:
        sources, target, *rest = children
        when = None
        auto = False
        for item in rest:
            if isinstance(item, Token) and item.type == "AUTO":
                auto = True
            else:
                when = item[1]
        return m.Recycle(tuple(str(s) for s in sources), str(target), when, auto, self._span(meta))

    def conversion_target(self, meta: Any, children: list[Token]) -> m.Target:
        source, to, op, value = children
        return m.Target("conversion", str(source), str(to), str(op), self._number(value), self._span(meta))  # type: ignore[arg-type]

    def time_target(self, meta: Any, children: list[Any]) -> m.Target:
        stage, op, value, unit = children
        days = _in_days(self._number(value), unit)
        return m.Target("time", str(stage), None, str(op), days, self._span(meta))  # type: ignore[arg-type]

    # -- test blocks ------------------------------------------------------
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
        channel: str | None = None
        for item in rest:
            if isinstance(item, tuple):
                count = item[1]
            else:
                channel = item
        return self._step(meta, "event", name, number=count, channel=channel)

    def repeat(self, meta: Any, children: list[Token]) -> tuple[str, int]:
        return ("repeat", self._whole(children[0], "an event's count"))

    def wait_step(self, meta: Any, children: list[Any]) -> m.FlowTestStep:
        return self._step(meta, "wait", number=_in_days(self._number(children[0]), children[1]))

    def reason(self, meta: Any, children: list[Token]) -> tuple[str, str]:
        return ("reason", _unquote(children[0]))

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
            return m.Assignment(str(name), value.value, False, self._span(meta), value.span)
        return m.Assignment(str(name), str(value), True, self._span(meta), self._tspan(value))

    def test_block(self, meta: Any, children: list[Any]) -> m.FlowTest:
        title, *steps = children
        return m.FlowTest(_unquote(title), tuple(steps), self._tspan(title))

    def team_decl(self, meta: Any, children: list[Any]) -> tuple[str, m.Team, tuple[m.Stage, ...]]:
        name = str(children[0])
        title = None
        stages: list[m.Stage] = []
        targets: list[m.Target] = []
        for child in children[1:]:
            if isinstance(child, Token):
                title = _unquote(child)
            elif isinstance(child, m.Stage):
                stages.append(replace(child, team=name))
            else:
                targets.append(child)
        team = m.Team(name, title, tuple(s.name for s in stages), tuple(targets), self._span(meta))
        return ("team", team, tuple(stages))

    def start(self, meta: Any, children: list[Any]) -> dict[str, Any]:
        _, name, version, title, span = children[0]
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
            "name": name,
            "version": version,
            "title": title,
            "span": span,
            "tests": tuple(tests),
            **{key: tuple(value) for key, value in parts.items()},
        }


_OPTION_WORD = {
    "initial": "initial",
    "final": "final",
    "manual": "manual",
    "when": "when",
    "sla_days": "sla",
    "capacity": "capacity",
}


def _number(token: Token | str) -> int | float:
    text = str(token)
    return float(text) if "." in text else int(text)


def _in_days(amount: int | float, unit: str) -> int | float:
    """A duration written in `unit` as days: whole days stay an int, hours
    become a fraction of a day (48 hours is 2)."""
    if unit == "days":
        return amount
    try:
        days = amount / 24
    except OverflowError:  # an integer past any float: out of range, for check to say
        return int(amount) // 24
    return int(days) if days.is_integer() else days


def _unquote(token: Token | str) -> str:
    body = str(token)[1:-1]
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
        else:
            out.append(char)
    return "".join(out)


# --------------------------------------------------------------------------
# Syntax errors → diagnostics
# --------------------------------------------------------------------------

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


def _syntax_diagnostic(err: UnexpectedInput, text: str, path: str, start: str) -> Diagnostic:
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


def _too_deep(tree: Tree[Token], path: str) -> Diagnostic | None:
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


def _parse(text: str, path: str, start: str) -> tuple[Any, list[Diagnostic]]:
    nul = _nul(text, path)
    if nul is not None:
        raise FlowInvalid(path, [nul], text)
    p = parser()
    # A big flow makes millions of small objects that all live until the
    # parse ends; the cyclic collector would walk them again and again
    # (superlinear time), and they hold no cycles worth collecting early.
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            tree = p.parse(text, start=start)
        except (UnexpectedCharacters, UnexpectedToken, UnexpectedEOF) as err:
            raise FlowInvalid(path, [_syntax_diagnostic(err, text, path, start)], text) from None
        deep = _too_deep(tree, path)
        if deep is not None:
            raise FlowInvalid(path, [deep], text)
        builder = _Builder(path)
        return builder.build(tree), builder.problems
    finally:
        if collecting:
            gc.enable()


def _nul(text: str, path: str) -> Diagnostic | None:
    """SF002 at the first NUL character: the grammar lets comments and
    strings hold any character, but no database stores a NUL in text."""
    at = text.find("\x00")
    if at < 0:
        return None
    line = text.count("\n", 0, at) + 1
    column = at - text.rfind("\n", 0, at)
    span = Span(path, line, column, line, column + 1)
    return Diagnostic("SF002", "error", span, "unexpected character '\\x00' (a NUL byte)")


def parse_flow(text: str, path: str = "<string>") -> m.Flow:
    """Parse flow text into a `Flow`; raise `FlowInvalid` on syntax errors."""
    # Old Mac files end lines with a lone "\r": count them as lines too.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        span = Span(path, 1, 1, 1, 1)
        raise FlowInvalid(
            path,
            [Diagnostic("SF003", "error", span, 'the file is empty; a flow file starts with "flow NAME"')],
            text,
        )
    parts, problems = _parse(text, path, "start")
    if problems:
        raise FlowInvalid(path, problems, text)
    return m.Flow(path=path, source=text, **parts)


def parse_expr(text: str, path: str = "<expr>") -> m.Expr:
    """Parse one expression (tests, the REPL, the evaluator's callers)."""
    expr, problems = _parse(text, path, "expr")
    if problems:
        raise FlowInvalid(path, problems, text)
    return expr  # type: ignore[no-any-return]


def read_source(path: str | os.PathLike[str]) -> str:
    """Read a flow file as UTF-8, turning every way it can fail into `BadInput`."""
    where = Path(path)
    if where.is_dir():
        raise BadInput(f"{where} is a folder, not a flow file")
    try:
        with where.open("rb") as file:
            data = file.read(MAX_FLOW_BYTES + 1)  # /dev/zero or a 1 GB file is not read whole
    except FileNotFoundError:
        raise BadInput(f"flow file {where} does not exist") from None
    except OSError as err:
        raise BadInput(f"cannot read flow file {where}: {err.strerror}") from None
    if len(data) > MAX_FLOW_BYTES:
        raise BadInput(f"{where} is larger than {MAX_FLOW_BYTES // 2**20} MiB, the limit for a flow file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BadInput(f"{where} is not UTF-8 text (invalid byte at line {line})") from None


def load_flow(path: str | os.PathLike[str]) -> m.Flow:
    """Read and parse a flow file."""
    return parse_flow(read_source(path), str(path))
