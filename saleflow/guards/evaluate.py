"""Evaluate and explain flow expressions against one lead's facts.

Layer 2.  Gates are data written by ops, so saleflow evaluates them itself:
no `eval`, `exec` or `compile`, and no name in a flow file can reach Python.
An `Evaluator` turns each expression into a tree of small closures once per
flow (names are resolved then, not on every call), because the engine
evaluates gates on every lead operation and for batches of many thousands of
leads.  The same evaluator answers the "why not": `explain` (mixed in from
`Explaining`, guards/explain.py) lists the failing parts of a false
expression with the values they saw, and `reads` lists every value an
expression read, for the audit entry.  The facts an expression reads are
`Facts` (guards/facts.py).

A little over 500 lines: the compiler (`Evaluator`), the value tests and the
closures it builds are one job, each closure a few lines, kept together so
the hot path reads in one place.

Semantics (SPEC §2 and §3): an unset value (None) makes every comparison and
`in` / `not in` false, and is false in boolean context; booleans are not
numbers; values of different types never compare equal, and never raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from ..errors import BadInput
from ..model.flow import (
    BUILTINS,
    COMPARE,
    And,
    AtLeast,
    Compare,
    CompareOp,
    DaysSince,
    Expr,
    Flow,
    InList,
    IsSet,
    Literal,
    Not,
    Or,
    Ref,
    Window,
)
from ..model.unparse import unparse
from ..records import FieldValue
from .explain import Explaining, short_text
from .facts import Facts, Number, window_span, window_start

Compiled = Callable[["Facts"], FieldValue]
Counted = Callable[["Facts"], int]
Scored = Callable[["Facts"], Number]
Test = Callable[[FieldValue, FieldValue], bool]

_MAX_CACHED = 4096


# --------------------------------------------------------------------------
# Comparing values
# --------------------------------------------------------------------------

_OPERATORS = COMPARE


def _value_test(op: CompareOp) -> Test:
    """`a op b` under the flow language's rules: unset or mismatched types
    are false; booleans are not numbers and only compare for (in)equality."""
    apply = _OPERATORS[op]
    ordered = op not in ("==", "!=")

    def test(a: FieldValue, b: FieldValue) -> bool:
        if a is None or b is None:
            return False
        if isinstance(a, bool) or isinstance(b, bool):
            return not ordered and isinstance(a, bool) and isinstance(b, bool) and apply(a, b)
        if isinstance(a, str):
            return isinstance(b, str) and apply(a, b)
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and apply(a, b)

    return test


def _date_test(op: CompareOp) -> Test:
    """Like `_value_test`, but two strings compare as dates (a `date` field
    against a string): by instant when both carry a time, else by day."""
    apply = _OPERATORS[op]
    plain = _value_test(op)

    def test(a: FieldValue, b: FieldValue) -> bool:
        if not (isinstance(a, str) and isinstance(b, str)):
            return plain(a, b)
        left, right = _when(a), _when(b)
        if left is None or right is None:
            return False
        if left[1] is not None and right[1] is not None:
            return apply(left[1], right[1])
        return apply(left[0], right[0])

    return test


@lru_cache(maxsize=4096)
def _when(text: str) -> tuple[date, datetime | None] | None:
    """An ISO date (`2024-05-01`) or datetime as (day, instant or None)."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text), None
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.date(), moment


_VALUE_TESTS = {op: _value_test(op) for op in _OPERATORS}
_DATE_TESTS = {op: _date_test(op) for op in _OPERATORS}


# --------------------------------------------------------------------------
# The evaluator
# --------------------------------------------------------------------------


class Evaluator(Explaining):
    """Evaluates, explains and lists the reads of expressions of one flow.

    Build it once per `Flow`; it compiles each expression it is given on
    first use and keeps the result, so later calls cost a few closure calls.
    """

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self._date_fields = frozenset(f.name for f in flow.fields if f.type.kind == "date")
        self._compiled: dict[int, tuple[Expr, Compiled]] = {}
        self._read_lists: dict[int, tuple[Expr, tuple[tuple[str, Compiled], ...]]] = {}
        self._conditions: dict[str, Compiled] = {}
        self._condition_reads: dict[str, dict[str, Compiled]] = {}
        self._score: Scored | None = None
        self._open: list[str] = []

    # public -------------------------------------------------------------
    def value(self, expr: Expr, facts: Facts) -> FieldValue:
        """The value of `expr`: a number, string or bool; None when unset."""
        run = self._function(expr)
        try:
            return run(facts)
        except RecursionError:
            raise BadInput(f"expression nests too deeply to evaluate: {short_text(expr)}") from None

    def test(self, expr: Expr, facts: Facts) -> bool:
        """`expr` in boolean context: unset and zero are false."""
        return bool(self.value(expr, facts))

    def conjunction(self, exprs: Sequence[Expr]) -> Callable[[Facts], bool]:
        """One predicate for "every one of `exprs` holds", compiled once:
        what a move's gates come to (checked in order, first false stops)."""
        runs = tuple(self._function(expr) for expr in exprs)

        def holds(facts: Facts) -> bool:
            try:
                for run in runs:
                    if not run(facts):
                        return False
            except RecursionError:
                raise BadInput("a gate's expression nests too deeply to evaluate") from None
            return True

        return holds

    def score(self, facts: Facts) -> Number:
        """The lead score: the sum of the flow's score rules."""
        tally = facts._counts()
        found = tally.scores.get(self)
        if found is None:
            found = self._score_function()(facts)
            tally.scores[self] = found
        return found

    def reads(self, expr: Expr, facts: Facts) -> dict[str, FieldValue]:
        """Every name `expr` reads (conditions expanded) and its value now."""
        return {key: read(facts) for key, read in self._reads(expr)}

    # compiling -----------------------------------------------------------
    def _function(self, expr: Expr) -> Compiled:
        cached = self._compiled.get(id(expr))
        if cached is not None and cached[0] is expr:
            return cached[1]
        try:
            run = self._compile(expr)
        except RecursionError:
            raise BadInput(f"expression nests too deeply to evaluate: {short_text(expr)}") from None
        if len(self._compiled) >= _MAX_CACHED:
            self._compiled.clear()
        self._compiled[id(expr)] = (expr, run)
        return run

    def _compile(self, expr: Expr) -> Compiled:
        if isinstance(expr, Literal):
            return _constant(expr.value)
        if isinstance(expr, Ref):
            return self._ref(expr.name)
        if isinstance(expr, Window):
            return _window(expr.event, expr.days)
        if isinstance(expr, DaysSince):
            return _days_since(expr.event)
        if isinstance(expr, Compare):
            return self._compare(expr)
        if isinstance(expr, InList):
            return self._in_list(expr)
        if isinstance(expr, IsSet):
            return _is_set(self._compile(expr.operand), expr.negated)
        if isinstance(expr, Not):
            return _not(self._compile(expr.operand))
        if isinstance(expr, And):
            return _all([self._compile(item) for item in expr.items])
        if isinstance(expr, Or):
            return _any([self._compile(item) for item in expr.items])
        if isinstance(expr, AtLeast):
            return _at_least(expr.count, [self._compile(item) for item in expr.items])
        raise BadInput(f"not an expression: {expr!r}")

    def _ref(self, name: str) -> Compiled:
        """A name resolves to a builtin, a field, a condition, an event (its
        count), or else stands for itself (a bare enum value)."""
        if name == "score":
            self._score_function()
            return self.score
        if name == "days_in_stage":
            return _days_in_stage
        if name == "days_since_created":
            return _days_since_created
        field = self.flow.field(name)
        if field is not None:
            return _field(name, field.default)
        if self.flow.condition(name) is not None:
            return self._condition(name)
        if self.flow.event(name) is not None:
            return _count(name)
        return _constant(name)

    def _condition(self, name: str) -> Compiled:
        found = self._conditions.get(name)
        if found is None:
            condition = self.flow.condition(name)
            assert condition is not None
            with self._opening(f"condition {name}"):
                body = self._compile(condition.expr)
            found = _truth(body)
            self._conditions[name] = found
        return found

    def _score_function(self) -> Scored:
        if self._score is None:
            with self._opening("score"):
                counted: dict[str, list[tuple[int, float | None]]] = {}
                others: list[Scored] = []
                for rule in self.flow.score_rules:
                    if isinstance(rule.each, Window):
                        counted.setdefault(rule.each.event, []).append((rule.points, rule.each.days))
                    elif isinstance(rule.each, Ref):
                        counted.setdefault(rule.each.name, []).append((rule.points, None))
                    else:
                        others.append(self._score_rule(rule.points, rule.condition))
            self._score = _score(counted, others)
        return self._score

    def _score_rule(self, points: int, condition: Expr | None) -> Scored:
        if condition is None:
            return _no_points
        return _points_if(points, self._compile(condition))

    def _compare(self, expr: Compare) -> Compiled:
        dates = self._is_date(expr.left) or self._is_date(expr.right)
        test = self._tests(dates)[expr.op]
        right = expr.right
        number = right.value if isinstance(right, Literal) else None
        if not dates and (type(number) is int or type(number) is float):
            return _compare_number(_OPERATORS[expr.op], test, self._compile(expr.left), number)
        return _compare(test, self._compile(expr.left), self._compile(right))

    def _in_list(self, expr: InList) -> Compiled:
        operand_is_date = self._is_date(expr.operand)
        if not operand_is_date and all(
            isinstance(item, Literal) and isinstance(item.value, str) for item in expr.items
        ):
            strings = frozenset(
                item.value for item in expr.items if isinstance(item, Literal) and isinstance(item.value, str)
            )
            return _in_strings(self._compile(expr.operand), strings, expr.negated)
        items = [
            (self._tests(operand_is_date or self._is_date(item))["=="], self._compile(item))
            for item in expr.items
        ]
        return _in_list(self._compile(expr.operand), items, expr.negated)

    def _tests(self, dates: bool) -> dict[CompareOp, Test]:
        return _DATE_TESTS if dates else _VALUE_TESTS

    def _is_date(self, expr: Expr) -> bool:
        return isinstance(expr, Ref) and expr.name not in BUILTINS and expr.name in self._date_fields

    def _opening(self, what: str) -> _Opening:
        return _Opening(self._open, what)

    # reads ---------------------------------------------------------------
    def _reads(self, expr: Expr) -> tuple[tuple[str, Compiled], ...]:
        cached = self._read_lists.get(id(expr))
        if cached is not None and cached[0] is expr:
            return cached[1]
        table: dict[str, Compiled] = {}
        try:
            self._collect_reads(expr, table)
        except RecursionError:
            raise BadInput(f"expression nests too deeply to evaluate: {short_text(expr)}") from None
        found = tuple(table.items())
        if len(self._read_lists) >= _MAX_CACHED:
            self._read_lists.clear()
        self._read_lists[id(expr)] = (expr, found)
        return found

    def _collect_reads(self, expr: Expr, table: dict[str, Compiled]) -> None:
        if isinstance(expr, Ref):
            self._ref_reads(expr.name, table)
        elif isinstance(expr, Window):
            table.setdefault(unparse(expr), _window(expr.event, expr.days))
        elif isinstance(expr, DaysSince):
            table.setdefault(unparse(expr), _days_since(expr.event))
        else:
            for child in _children(expr):
                self._collect_reads(child, table)

    def _ref_reads(self, name: str, table: dict[str, Compiled]) -> None:
        """What a name reads, in the order `_ref` resolves names."""
        if name in BUILTINS or self.flow.field(name) is not None:
            table.setdefault(name, self._ref(name))
        elif self.flow.condition(name) is not None:
            for key, read in self._condition_read_table(name).items():
                table.setdefault(key, read)
        elif self.flow.event(name) is not None:
            table.setdefault(name, _count(name))

    def _condition_read_table(self, name: str) -> dict[str, Compiled]:
        found = self._condition_reads.get(name)
        if found is None:
            condition = self.flow.condition(name)
            assert condition is not None
            found = {}
            with self._opening(f"condition {name}"):
                self._collect_reads(condition.expr, found)
            self._condition_reads[name] = found
        return found


class _Opening:
    """Marks a condition (or the score) as being compiled, to report a cycle
    as a clear error instead of recursing until Python gives up."""

    __slots__ = ("_stack", "_what")

    def __init__(self, stack: list[str], what: str) -> None:
        self._stack = stack
        self._what = what

    def __enter__(self) -> None:
        if self._what in self._stack:
            loop = [*self._stack[self._stack.index(self._what) :], self._what]
            raise BadInput(f"{self._what} refers to itself: {' -> '.join(loop)}")
        self._stack.append(self._what)

    def __exit__(self, *exc: object) -> None:
        self._stack.pop()


def _children(expr: Expr) -> Iterator[Expr]:
    if isinstance(expr, Compare):
        yield expr.left
        yield expr.right
    elif isinstance(expr, InList):
        yield expr.operand
        yield from expr.items
    elif isinstance(expr, (IsSet, Not)):
        yield expr.operand
    elif isinstance(expr, (And, Or, AtLeast)):
        yield from expr.items


# --------------------------------------------------------------------------
# Closures: one small function per node kind
# --------------------------------------------------------------------------


def _constant(value: FieldValue) -> Compiled:
    return lambda facts: value


def _field(name: str, default: FieldValue) -> Compiled:
    def read(facts: Facts) -> FieldValue:
        value = facts.fields.get(name)
        return default if value is None else value

    return read


def _count(event: str) -> Counted:
    return lambda facts: facts.count(event)


def _window(event: str, days: float) -> Counted:
    return lambda facts: facts.window(event, days)


def _days_since(event: str) -> Compiled:
    return lambda facts: facts.days_since(event)


def _days_in_stage(facts: Facts) -> FieldValue:
    return facts.days_in_stage


def _days_since_created(facts: Facts) -> FieldValue:
    return facts.days_since_created


def _truth(run: Compiled) -> Compiled:
    return lambda facts: bool(run(facts))


def _compare(test: Test, left: Compiled, right: Compiled) -> Compiled:
    return lambda facts: test(left(facts), right(facts))


def _compare_number(apply: Test, test: Test, left: Compiled, number: Number) -> Compiled:
    """`_compare` against a number literal (`visits >= 3`, the common case):
    an int or float value is compared at once; anything else (unset, a
    bool, text) gets the full rules of `test`."""

    def run(facts: Facts) -> bool:
        value = left(facts)
        kind = type(value)
        if kind is int or kind is float:
            return apply(value, number)
        return test(value, number)

    return run


def _in_list(operand: Compiled, items: list[tuple[Test, Compiled]], negated: bool) -> Compiled:
    def run(facts: Facts) -> bool:
        value = operand(facts)
        if value is None:
            return False
        for equal, item in items:
            if equal(value, item(facts)):
                return not negated
        return negated

    return run


def _in_strings(operand: Compiled, strings: frozenset[str], negated: bool) -> Compiled:
    """`_in_list` over string literals only: one set lookup (a string equals
    only a string, so the answer is the same)."""

    def run(facts: Facts) -> bool:
        value = operand(facts)
        if value is None:
            return False
        return (isinstance(value, str) and value in strings) != negated

    return run


def _is_set(operand: Compiled, negated: bool) -> Compiled:
    return lambda facts: (operand(facts) is None) == negated


def _not(operand: Compiled) -> Compiled:
    return lambda facts: not operand(facts)


def _all(items: list[Compiled]) -> Compiled:
    if len(items) == 2:
        first, second = items
        return lambda facts: bool(first(facts)) and bool(second(facts))

    def run(facts: Facts) -> bool:
        for item in items:  # noqa: SIM110 -- a loop: no generator per evaluation
            if not item(facts):
                return False
        return True

    return run


def _any(items: list[Compiled]) -> Compiled:
    if len(items) == 2:
        first, second = items
        return lambda facts: bool(first(facts)) or bool(second(facts))

    def run(facts: Facts) -> bool:
        for item in items:  # noqa: SIM110 -- a loop: no generator per evaluation
            if item(facts):
                return True
        return False

    return run


def _at_least(count: int, items: list[Compiled]) -> Compiled:
    def run(facts: Facts) -> bool:
        true = 0
        for item in items:
            if item(facts):
                true += 1
        return true >= count

    return run


def _score(counted: dict[str, list[tuple[int, float | None]]], others: list[Scored]) -> Scored:
    """The score: `+N each EVENT [in last D days]` rules, counted in one
    pass over the events (as `Facts.count` and `Facts.window` count them:
    an event is in a window of D days when it happened at or after now
    minus D days and at or before now), plus the `+N if EXPR` rules."""
    spans: list[timedelta] = []  # `window_span`s; timedelta.max for one that holds everything
    index: dict[float, int] = {}
    table: dict[str, tuple[tuple[int, int], ...]] = {}  # event -> (points, window's index or -1)
    for event, rules in counted.items():
        row = []
        for points, days in rules:
            if days is None:
                row.append((points, -1))
                continue
            if days not in index:
                index[days] = len(spans)
                span = window_span(days)
                spans.append(timedelta.max if span is None else span)
            row.append((points, index[days]))
        table[event] = tuple(row)

    def run(facts: Facts) -> Number:
        now = facts.now
        starts: list[datetime] = []
        try:
            for span in spans:
                starts.append(now - span)
        except OverflowError:  # a window reaching back past year 1
            starts = [window_start(now, span) for span in spans]
        total: Number = 0
        for event in facts.events:
            rules = table.get(event.name)
            if rules is None:
                continue
            at = event.at
            for points, window in rules:
                if window < 0 or starts[window] <= at <= now:
                    total += points * event.count
        for rule in others:
            total += rule(facts)
        return total

    return run


def _points_if(points: int, condition: Compiled) -> Scored:
    return lambda facts: points if condition(facts) else 0


def _no_points(facts: Facts) -> Number:
    return 0
