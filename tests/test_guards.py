"""The evaluator: values, unset semantics, explanations, reads, and agreement
with a plain-Python reference on random flows and facts."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saleflow.errors import BadInput
from saleflow.guards.evaluate import Evaluator
from saleflow.guards.explain import format_value
from saleflow.guards.facts import Facts
from saleflow.model.expr import (
    COMPARE_OPS,
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
    Window,
)
from saleflow.model.flow import ConditionDef, EventDef, FieldDef, FieldType, Flow, ScoreRule
from saleflow.records import EventRecord, Lead

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

FLOW_TEXT = """
flow t
field budget         money
field employees      int      default 0
field ratio          number
field authority      one of [none, user, influencer, decision_maker]  default none
field need           bool     default false
field owner          text
field signed_on      date
field timeframe_days int

event web_visit
event seminar_attended
event meeting_held

score {
  +5  each web_visit in last 30 days
  +15 each seminar_attended
  +10 if employees >= 500
  -20 if authority == none
}

condition bant = at least 3 of {
  budget >= 10000
  authority in [influencer, decision_maker]
  need
  timeframe_days <= 90
}
condition hot = bant and web_visit >= 2

stage a initial
"""


def _parse_flow(text: str) -> Flow:
    from saleflow.language.parse import parse_flow

    return parse_flow(text, "t.flow")


def _parse_expr(text: str) -> Expr:
    from saleflow.language.parse import parse_expr

    return parse_expr(text)


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator(_parse_flow(FLOW_TEXT))


def visit(days_ago: float, name: str = "web_visit", count: int = 1) -> EventRecord:
    return EventRecord(name, NOW - timedelta(days=days_ago), count=count)


def facts(
    fields: dict[str, Any] | None = None,
    events: list[EventRecord] | None = None,
    *,
    in_stage: float = 2.5,
    age: float = 10,
) -> Facts:
    return Facts(
        fields or {},
        events or [],
        NOW,
        NOW - timedelta(days=in_stage),
        NOW - timedelta(days=age),
    )


# --------------------------------------------------------------------------
# Values of every form
# --------------------------------------------------------------------------

VISITS = [visit(1), visit(10, count=2), visit(40), visit(-1), visit(5, "meeting_held")]

VALUE_CASES: list[tuple[str, dict[str, Any], list[EventRecord], Any]] = [
    # literals and names
    ("10000", {}, [], 10000),
    ("-2.5", {}, [], -2.5),
    ('"x"', {}, [], "x"),
    ("true", {}, [], True),
    ("budget", {"budget": 5000}, [], 5000),
    ("budget", {}, [], None),
    ("budget", {"budget": None}, [], None),
    ("employees", {}, [], 0),  # declared default
    ("authority", {}, [], "none"),
    ("authority", {"authority": "user"}, [], "user"),
    ("decision_maker", {}, [], "decision_maker"),  # a bare enum value is itself
    ("web_visit", {}, VISITS, 5),  # every count of the cycle, whenever
    ("seminar_attended", {}, VISITS, 0),
    ("web_visit in last 30 days", {}, VISITS, 3),
    ("web_visit in last 40 days", {}, VISITS, 4),  # the window's edge is inside
    ("web_visit in last 0 days", {}, VISITS, 0),
    ("days_since meeting_held", {}, VISITS, 5.0),
    ("days_since web_visit", {}, VISITS, 1.0),  # the future visit does not count
    ("days_since seminar_attended", {}, VISITS, None),
    ("days_in_stage", {}, [], 2.5),
    ("days_since_created", {}, [], 10.0),
    ("score", {}, [], -20),
    ("score", {"authority": "user", "employees": 800}, [visit(1), visit(31)], 15),
    ("score", {"authority": "user"}, [visit(1, "seminar_attended", count=2)], 30),
    # comparisons
    ("budget >= 10000", {"budget": 12000}, [], True),
    ("budget >= 10000", {"budget": 5000}, [], False),
    ("budget == 5000", {"budget": 5000.0}, [], True),
    ("ratio < 0.5", {"ratio": 0.25}, [], True),
    ("budget != 1", {"budget": 2}, [], True),
    ('owner == "ann"', {"owner": "ann"}, [], True),
    ('owner < "bob"', {"owner": "ann"}, [], True),
    ("authority == user", {"authority": "user"}, [], True),
    ("authority == none", {}, [], True),
    ("authority != none", {}, [], False),
    ("need == true", {"need": True}, [], True),
    ("need != false", {"need": True}, [], True),
    ("web_visit >= 1", {}, VISITS, True),
    ("web_visit in last 30 days >= 4", {}, VISITS, False),
    ("days_since meeting_held <= 7", {}, VISITS, True),
    ("days_in_stage > 2", {}, [], True),
    # unset: every comparison is false, never an error
    ("budget >= 0", {}, [], False),
    ("budget < 0", {}, [], False),
    ("budget == 1", {}, [], False),
    ("budget != 1", {}, [], False),
    ("timeframe_days <= 90", {}, [], False),
    ("days_since seminar_attended < 1000", {}, VISITS, False),
    ("days_since seminar_attended > 0", {}, VISITS, False),
    ("budget in [1, 2]", {}, [], False),
    ("budget not in [1, 2]", {}, [], False),
    ("budget is set", {}, [], False),
    ("budget is not set", {}, [], True),
    ("budget is set", {"budget": 0}, [], True),
    ("days_since seminar_attended is set", {}, VISITS, False),
    # booleans are not numbers; mismatched types compare false
    ("need == 1", {"need": True}, [], False),
    ("need != 1", {"need": True}, [], False),
    ("need > false", {"need": True}, [], False),
    ("employees == 1", {"employees": True}, [], False),
    ('employees == "10"', {"employees": 10}, [], False),
    ('employees != "10"', {"employees": 10}, [], False),
    ('employees < "10"', {"employees": 10}, [], False),
    ("owner > 3", {"owner": "ann"}, [], False),
    # dates compare as dates
    ('signed_on >= "2024-01-01"', {"signed_on": "2024-03-05"}, [], True),
    ('signed_on < "2024-01-01"', {"signed_on": "2024-03-05"}, [], False),
    ('signed_on == "2024-03-05"', {"signed_on": "2024-03-05T23:30:00+00:00"}, [], True),
    ('signed_on > "2024-03-05T10:00:00Z"', {"signed_on": "2024-03-05T11:00:00+01:00"}, [], False),
    ('signed_on < "2024-03-05T10:00:01Z"', {"signed_on": "2024-03-05T11:00:00+01:00"}, [], True),
    ('signed_on == "2024-3-5"', {"signed_on": "2024-03-05"}, [], False),  # not a date
    ('signed_on in ["2024-01-01", "2024-03-05"]', {"signed_on": "2024-03-05T08:00:00Z"}, [], True),
    ('"2024-03-05" == signed_on', {"signed_on": "2024-03-05T08:00:00"}, [], True),
    ("signed_on is set", {"signed_on": "2024-03-05"}, [], True),
    # in / not in
    ("authority in [influencer, decision_maker]", {"authority": "influencer"}, [], True),
    ("authority in [influencer, decision_maker]", {"authority": "user"}, [], False),
    ("authority not in [influencer, decision_maker]", {"authority": "user"}, [], True),
    ("employees in [1, 2.0]", {"employees": 2}, [], True),
    ("employees in [true]", {"employees": 1}, [], False),
    ('employees not in ["x"]', {"employees": 1}, [], True),
    ("employees in []", {}, [], False),
    ("employees not in []", {}, [], True),
    # boolean context: unset and zero are false
    ("need", {}, [], False),
    ("need", {"need": True}, [], True),
    ("not need", {}, [], True),
    ("not budget", {}, [], True),
    ("not not need", {"need": True}, [], True),
    ("need and budget >= 1", {"need": True, "budget": 5}, [], True),
    ("need and budget >= 1", {"need": True}, [], False),
    ("need or budget >= 1", {"budget": 5}, [], True),
    ("need or budget >= 1", {}, [], False),
    ("at least 2 of { need budget is set web_visit >= 1 }", {"budget": 1}, VISITS, True),
    ("at least 2 of { need budget is set web_visit >= 1 }", {"budget": 1}, [], False),
    ("at least 0 of { need }", {}, [], True),
    ("at least 2 of { budget need }", {"budget": 7, "need": True}, [], True),
    # conditions
    ("bant", {"budget": 20000, "authority": "user", "need": True, "timeframe_days": 30}, [], True),
    ("bant", {"budget": 20000, "need": True}, [], False),
    ("hot", {"budget": 20000, "need": True, "timeframe_days": 1}, VISITS, True),
    ("hot", {"budget": 20000, "need": True, "timeframe_days": 1}, [], False),
    ("not bant", {}, [], True),
]


@pytest.mark.parametrize(
    ("text", "fields", "events", "expected"),
    VALUE_CASES,
    ids=[f"{i}:{case[0]}" for i, case in enumerate(VALUE_CASES)],
)
def test_value(
    evaluator: Evaluator, text: str, fields: dict[str, Any], events: list[EventRecord], expected: Any
) -> None:
    expr = _parse_expr(text)
    got = evaluator.value(expr, facts(fields, events))
    assert got == expected
    assert type(got) is type(expected) or {type(got), type(expected)} <= {int, float}
    assert evaluator.test(expr, facts(fields, events)) is bool(expected)


def test_value_of_ast_nodes_without_parser(evaluator: Evaluator) -> None:
    f = facts({"budget": 5}, VISITS)
    assert evaluator.value(Window("web_visit", 30), f) == 3
    assert evaluator.value(DaysSince("meeting_held"), f) == 5.0
    assert evaluator.value(And(()), f) is True
    assert evaluator.value(Or(()), f) is False
    assert evaluator.value(AtLeast(1, ()), f) is False
    assert evaluator.value(Compare(">", Ref("budget"), Literal(4)), f) is True


def test_score_method_matches_the_score_name(evaluator: Evaluator) -> None:
    f = facts({"authority": "user", "employees": 800}, [visit(1), visit(2, count=3)])
    assert evaluator.score(f) == 30
    assert evaluator.value(Ref("score"), f) == 30
    assert evaluator.score(facts()) == -20


def test_facts_of_lead_keeps_the_current_cycle_only(evaluator: Evaluator) -> None:
    lead = Lead(
        id="l1",
        flow="t",
        version=1,
        stage="a",
        fields={"budget": 3},
        cycle=2,
        entered_at=NOW - timedelta(days=1),
        created_at=NOW - timedelta(days=9),
        updated_at=NOW,
    )
    events = [
        EventRecord("web_visit", NOW - timedelta(days=3), cycle=1),
        EventRecord("web_visit", NOW, cycle=2),
    ]
    f = Facts.of(lead, events, NOW)
    assert evaluator.value(Ref("web_visit"), f) == 1
    assert evaluator.value(Ref("budget"), f) == 3
    assert evaluator.value(Ref("days_in_stage"), f) == 1.0
    assert evaluator.value(Ref("days_since_created"), f) == 9.0


def test_event_after_now_counts_in_total_but_not_in_windows(evaluator: Evaluator) -> None:
    f = facts({}, [visit(-2)])
    assert evaluator.value(Ref("web_visit"), f) == 1
    assert evaluator.value(_parse_expr("web_visit in last 30 days"), f) == 0
    assert evaluator.value(_parse_expr("days_since web_visit"), f) is None


# --------------------------------------------------------------------------
# Explanations
# --------------------------------------------------------------------------

EXPLAIN_CASES: list[tuple[str, dict[str, Any], list[EventRecord], list[str]]] = [
    ("budget >= 10000", {"budget": 5000}, [], ["budget >= 10000 is false (budget is 5000)"]),
    ("budget >= 10000", {}, [], ["budget >= 10000 is false (budget is not set)"]),
    ("budget >= 10000", {"budget": 5000.5}, [], ["budget >= 10000 is false (budget is 5000.5)"]),
    ("need", {}, [], ["need is false"]),
    ("need", {"need": None}, [], ["need is false"]),  # unset falls back to the default
    ("web_visit >= 1", {}, [], ["web_visit >= 1 is false (web_visit is 0)"]),
    ("web_visit", {}, [], ["web_visit is false (web_visit is 0)"]),
    (
        "authority in [influencer, decision_maker]",
        {"authority": "user"},
        [],
        ['authority in [influencer, decision_maker] is false (authority is "user")'],
    ),
    ("owner is set", {}, [], ["owner is set is false (owner is not set)"]),
    ("owner is not set", {"owner": "ann"}, [], ['owner is not set is false (owner is "ann")']),
    ("not need", {"need": True}, [], ["not need is false (need is true)"]),
    (
        "web_visit in last 30 days >= 10",
        {},
        [visit(3)],
        ["web_visit in last 30 days >= 10 is false (web_visit in last 30 days is 1)"],
    ),
    (
        "days_since meeting_held <= 7",
        {},
        [],
        ["days_since meeting_held <= 7 is false (days_since meeting_held is not set)"],
    ),
    (
        "days_since meeting_held <= 7",
        {},
        [visit(8.25, "meeting_held")],
        ["days_since meeting_held <= 7 is false (days_since meeting_held is 8.25)"],
    ),
    ("days_in_stage >= 365", {}, [], ["days_in_stage >= 365 is false (days_in_stage is 2.5)"]),
    ("score >= 60", {}, [], ["score >= 60 is false (score is -20)"]),
    ("false", {}, [], ["false is false"]),
    ("decision_maker == user", {}, [], ["decision_maker == user is false"]),
    (
        "budget >= employees",
        {"employees": 3},
        [],
        ["budget >= employees is false (budget is not set, employees is 3)"],
    ),
    # and: the failing items only
    (
        "budget >= 1 and need and employees >= 0",
        {"budget": 0},
        [],
        ["budget >= 1 is false (budget is 0)", "need is false"],
    ),
    # or: each item
    (
        "web_visit >= 1 or seminar_attended >= 1",
        {},
        [],
        [
            "web_visit >= 1 is false (web_visit is 0)",
            "seminar_attended >= 1 is false (seminar_attended is 0)",
        ],
    ),
    # at least: a count line, then the failing items
    (
        "at least 3 of { budget >= 10000 need employees >= 0 owner is set }",
        {"budget": 5000},
        [],
        [
            "at least 3 of {…}: 1 of 4 true",
            "budget >= 10000 is false (budget is 5000)",
            "need is false",
            "owner is set is false (owner is not set)",
        ],
    ),
    # a condition explains its body, prefixed with its name
    (
        "bant",
        {"budget": 20000, "authority": "user", "timeframe_days": 120},
        [],
        [
            "bant: at least 3 of {…}: 1 of 4 true",
            'bant: authority in [influencer, decision_maker] is false (authority is "user")',
            "bant: need is false",
            "bant: timeframe_days <= 90 is false (timeframe_days is 120)",
        ],
    ),
    (
        "hot",
        {"budget": 20000, "need": True, "timeframe_days": 1},
        [visit(1)],
        ["hot: web_visit >= 2 is false (web_visit is 1)"],
    ),
    (
        "not bant",
        {"budget": 20000, "need": True, "timeframe_days": 1},
        [],
        [
            'not bant is false (budget is 20000, authority is "none", need is true, timeframe_days is 1)',
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "fields", "events", "expected"),
    EXPLAIN_CASES,
    ids=[f"{i}:{case[0]}" for i, case in enumerate(EXPLAIN_CASES)],
)
def test_explain(
    evaluator: Evaluator, text: str, fields: dict[str, Any], events: list[EventRecord], expected: list[str]
) -> None:
    assert evaluator.explain(_parse_expr(text), facts(fields, events)) == expected


@pytest.mark.parametrize(
    "text", ["budget >= 10000", "need or owner is set", "bant", "at least 0 of { need }"]
)
def test_explain_is_empty_when_true(evaluator: Evaluator, text: str) -> None:
    f = facts({"budget": 20000, "need": True, "authority": "user", "timeframe_days": 3})
    assert evaluator.explain(_parse_expr(text), f) == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "not set"),
        (True, "true"),
        (False, "false"),
        (5000, "5000"),
        (5000.0, "5000"),
        (2.345, "2.35"),
        (0.0001, "0.0001"),
        (-3.5, "-3.5"),
        ("user", '"user"'),
        ('a"b', '"a\\"b"'),
    ],
)
def test_format_value(value: Any, shown: str) -> None:
    assert format_value(value) == shown


# --------------------------------------------------------------------------
# Reads (audit values)
# --------------------------------------------------------------------------


def test_reads_lists_every_name_read_with_its_value(evaluator: Evaluator) -> None:
    expr = _parse_expr(
        "hot and score >= 1 and days_in_stage > 1 and days_since_created > 1"
        " and web_visit in last 30 days >= 1 and days_since meeting_held < 3"
        " and authority == decision_maker and budget > ratio"
    )
    f = facts({"budget": 5000, "need": True}, VISITS)
    reads = evaluator.reads(expr, f)
    assert reads == {
        "budget": 5000,
        "authority": "none",
        "need": True,
        "timeframe_days": None,
        "web_visit": 5,
        "score": -5,
        "days_in_stage": 2.5,
        "days_since_created": 10.0,
        "web_visit in last 30 days": 3,
        "days_since meeting_held": 5.0,
        "ratio": None,
    }
    json.dumps(reads)  # the audit entry stores them as JSON


def test_reads_is_empty_for_constants(evaluator: Evaluator) -> None:
    assert evaluator.reads(_parse_expr("user == decision_maker or true"), facts()) == {}


# --------------------------------------------------------------------------
# Runaway recursion is a clear error
# --------------------------------------------------------------------------


def test_condition_cycle_is_bad_input() -> None:
    flow = _parse_flow("flow t\ncondition a = b and true\ncondition b = not c\ncondition c = a\n")
    evaluator = Evaluator(flow)
    with pytest.raises(BadInput, match="condition a refers to itself: condition a -> condition b"):
        evaluator.test(Ref("a"), facts())
    with pytest.raises(BadInput, match="refers to itself"):
        evaluator.reads(Ref("c"), facts())
    with pytest.raises(BadInput, match="refers to itself"):
        evaluator.explain(Ref("b"), facts())


def test_score_that_reads_itself_is_bad_input() -> None:
    flow = _parse_flow("flow t\nevent e\ncondition warm = score > 10\nscore {\n +5 each e\n +1 if warm\n}\n")
    evaluator = Evaluator(flow)
    with pytest.raises(BadInput, match="score refers to itself"):
        evaluator.score(facts())
    with pytest.raises(BadInput, match="refers to itself"):
        evaluator.test(Ref("warm"), facts())


def test_very_deep_expression_is_bad_input_not_recursion_error() -> None:
    expr: Expr = Ref("need")
    for _ in range(5000):
        expr = Not(expr)
    with pytest.raises(BadInput, match="too deeply"):
        Evaluator(Flow("t")).test(expr, facts())


def test_flow_text_can_never_run_code() -> None:
    """Names are data: nothing resolves to Python objects."""
    flow = _parse_flow('flow t\ncondition c = __import__ == "os" or __class__ is set\n')
    evaluator = Evaluator(flow)
    assert evaluator.value(Ref("__import__"), facts()) == "__import__"
    assert evaluator.test(Ref("c"), facts()) is True  # `__class__` is a bare value: set


def test_compiled_expressions_are_cached(evaluator: Evaluator) -> None:
    expr = _parse_expr("budget >= 10000 and need")
    first = evaluator._function(expr)
    assert evaluator._function(expr) is first


# --------------------------------------------------------------------------
# Property: the evaluator agrees with a plain-Python reference
# --------------------------------------------------------------------------

FIELD_KINDS = ("int", "number", "money", "bool", "text", "enum", "date")
CHOICES = ("red", "green", "blue")
EVENTS = ("e1", "e2", "e3")
STRINGS = ("red", "green", "blue", "other", "", "2024-05-01", "2024-05-31T08:00:00+00:00", "2024-05-31")
NUMBERS = (-3, 0, 1, 2, 2.0, 2.5, 10000)

values_pool = st.one_of(
    st.sampled_from(NUMBERS),
    st.booleans(),
    st.sampled_from(STRINGS),
    st.integers(min_value=-5, max_value=5),
    st.floats(min_value=-5, max_value=5, allow_nan=False),
)


def default_for(kind: str) -> st.SearchStrategy[Any]:
    typed: dict[str, st.SearchStrategy[Any]] = {
        "int": st.integers(-3, 3),
        "number": st.floats(-3, 3, allow_nan=False),
        "money": st.sampled_from((0, 100.5, 10000)),
        "bool": st.booleans(),
        "text": st.sampled_from(STRINGS),
        "enum": st.sampled_from(CHOICES),
        "date": st.sampled_from(("2024-05-01", "2024-05-31")),
    }
    return st.one_of(st.none(), typed[kind])


def expressions(names: list[str], max_leaves: int) -> st.SearchStrategy[Expr]:
    """Random expressions over `names`, the builtins, an undeclared name and
    the enum values.  Names a flow does not declare resolve as bare values."""
    all_names = [*names, "days_in_stage", "days_since_created", "ghost", *CHOICES]
    leaves = st.one_of(
        values_pool.map(Literal),
        st.sampled_from(all_names).map(Ref),
        st.builds(Window, st.sampled_from(EVENTS), st.integers(0, 60)),
        st.builds(DaysSince, st.sampled_from(EVENTS)),
    )

    def extend(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        items = st.lists(inner, min_size=0, max_size=4).map(tuple)
        return st.one_of(
            st.builds(Compare, st.sampled_from(COMPARE_OPS), inner, inner),
            st.builds(InList, inner, items, st.booleans()),
            st.builds(IsSet, inner, st.booleans()),
            st.builds(Not, inner),
            st.builds(And, items),
            st.builds(Or, items),
            st.builds(AtLeast, st.integers(0, 4), items),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


# Strategies are built once: condition `cN` may read only `c0`…`cN-1` (the
# checker forbids cycles), score rules read no condition and not the score.
MAX_FIELDS = 5
BASE_NAMES = [f"f{i}" for i in range(MAX_FIELDS)] + list(EVENTS)
CONDITION_EXPRS = [expressions([*BASE_NAMES, "score", *(f"c{j}" for j in range(i))], 6) for i in range(3)]
GATE_EXPRS = expressions([*BASE_NAMES, "score", "c0", "c1", "c2"], 10)
SCORE_RULES = st.one_of(
    st.builds(
        ScoreRule,
        st.integers(-20, 20),
        each=st.one_of(
            st.sampled_from(EVENTS).map(Ref),
            st.builds(Window, st.sampled_from(EVENTS), st.integers(0, 60)),
        ),
    ),
    st.builds(ScoreRule, st.integers(-20, 20), condition=expressions(BASE_NAMES, 4)),
)
DEFAULTS = {kind: default_for(kind) for kind in FIELD_KINDS}


@st.composite
def random_flows(draw: st.DrawFn) -> Flow:
    kinds = draw(st.lists(st.sampled_from(FIELD_KINDS), min_size=1, max_size=MAX_FIELDS))
    fields = tuple(
        FieldDef(f"f{i}", FieldType(kind, CHOICES if kind == "enum" else ()), draw(DEFAULTS[kind]))
        for i, kind in enumerate(kinds)
    )
    events = tuple(EventDef(name) for name in EVENTS[: draw(st.integers(1, 3))])
    conditions = tuple(
        ConditionDef(f"c{i}", draw(CONDITION_EXPRS[i])) for i in range(draw(st.integers(0, 3)))
    )
    rules = tuple(draw(st.lists(SCORE_RULES, max_size=4)))
    return Flow("random", fields=fields, events=events, conditions=conditions, score_rules=rules)


@st.composite
def random_facts(draw: st.DrawFn, flow: Flow) -> Facts:
    fields: dict[str, Any] = {}
    for f in flow.fields:
        if draw(st.booleans()):
            fields[f.name] = draw(st.one_of(st.none(), values_pool, default_for(f.type.kind)))
    events = draw(
        st.lists(
            st.builds(
                EventRecord,
                st.sampled_from(EVENTS),
                st.integers(-5 * 24, 90 * 24).map(lambda hours: NOW - timedelta(hours=hours)),
                count=st.integers(1, 3),
            ),
            max_size=8,
        )
    )
    in_stage = timedelta(hours=draw(st.integers(0, 2000)))
    age = in_stage + timedelta(hours=draw(st.integers(0, 2000)))
    return Facts(fields, events, NOW, NOW - in_stage, NOW - age)


# The reference: a direct reading of the semantics, one node at a time, with
# nothing precomputed.


class Reference:
    def __init__(self, flow: Flow, facts: Facts) -> None:
        self.flow = flow
        self.facts = facts

    def eval(self, expr: Expr) -> Any:
        if isinstance(expr, Literal):
            return expr.value
        if isinstance(expr, Ref):
            return self.name(expr.name)
        if isinstance(expr, Window):
            return self.window(expr.event, expr.days)
        if isinstance(expr, DaysSince):
            times = [e.at for e in self.facts.events if e.name == expr.event and e.at <= self.facts.now]
            if not times:
                return None
            return (self.facts.now - max(times)).total_seconds() / 86400
        if isinstance(expr, Compare):
            dates = self.is_date(expr.left) or self.is_date(expr.right)
            return compare(expr.op, self.eval(expr.left), self.eval(expr.right), dates)
        if isinstance(expr, InList):
            value = self.eval(expr.operand)
            if value is None:
                return False
            found = any(
                compare("==", value, self.eval(item), self.is_date(expr.operand) or self.is_date(item))
                for item in expr.items
            )
            return not found if expr.negated else found
        if isinstance(expr, IsSet):
            is_set = self.eval(expr.operand) is not None
            return not is_set if expr.negated else is_set
        if isinstance(expr, Not):
            return not truthy(self.eval(expr.operand))
        if isinstance(expr, And):
            return all(truthy(self.eval(item)) for item in expr.items)
        if isinstance(expr, Or):
            return any(truthy(self.eval(item)) for item in expr.items)
        if isinstance(expr, AtLeast):
            return len([item for item in expr.items if truthy(self.eval(item))]) >= expr.count
        raise AssertionError(expr)

    def name(self, name: str) -> Any:
        now = self.facts.now
        if name == "score":
            return self.score()
        if name == "days_in_stage":
            return (now - self.facts.entered_at).total_seconds() / 86400
        if name == "days_since_created":
            return (now - self.facts.created_at).total_seconds() / 86400
        for f in self.flow.fields:
            if f.name == name:
                value = self.facts.fields.get(name)
                return f.default if value is None else value
        for c in self.flow.conditions:
            if c.name == name:
                return truthy(self.eval(c.expr))
        for e in self.flow.events:
            if e.name == name:
                return sum(r.count for r in self.facts.events if r.name == name)
        return name

    def window(self, event: str, days: int) -> int:
        now = self.facts.now
        start = now - timedelta(days=days)
        return sum(r.count for r in self.facts.events if r.name == event and start <= r.at <= now)

    def score(self) -> int:
        total = 0
        for rule in self.flow.score_rules:
            if isinstance(rule.each, Window):
                total += rule.points * self.window(rule.each.event, rule.each.days)
            elif isinstance(rule.each, Ref):
                total += rule.points * sum(r.count for r in self.facts.events if r.name == rule.each.name)
            elif rule.condition is not None and truthy(self.eval(rule.condition)):
                total += rule.points
        return total

    def is_date(self, expr: Expr) -> bool:
        if not isinstance(expr, Ref) or expr.name in ("score", "days_in_stage", "days_since_created"):
            return False
        return any(f.name == expr.name and f.type.kind == "date" for f in self.flow.fields)

    def reads(self, expr: Expr) -> set[str]:
        if isinstance(expr, Ref):
            name = expr.name
            if name in ("score", "days_in_stage", "days_since_created"):
                return {name}
            if any(f.name == name for f in self.flow.fields):
                return {name}
            for c in self.flow.conditions:
                if c.name == name:
                    return self.reads(c.expr)
            if any(e.name == name for e in self.flow.events):
                return {name}
            return set()
        if isinstance(expr, Window):
            return {f"{expr.event} in last {expr.days} days"}
        if isinstance(expr, DaysSince):
            return {f"days_since {expr.event}"}
        found: set[str] = set()
        for child in sub_expressions(expr):
            found |= self.reads(child)
        return found


def sub_expressions(expr: Expr) -> list[Expr]:
    if isinstance(expr, Compare):
        return [expr.left, expr.right]
    if isinstance(expr, InList):
        return [expr.operand, *expr.items]
    if isinstance(expr, (IsSet, Not)):
        return [expr.operand]
    if isinstance(expr, (And, Or, AtLeast)):
        return list(expr.items)
    return []


def truthy(value: Any) -> bool:
    return value is not None and value is not False and value != 0 and value != ""


PYTHON_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def kind_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def compare(op: str, a: Any, b: Any, dates: bool) -> bool:
    if kind_of(a) is None or kind_of(a) != kind_of(b):
        return False
    if kind_of(a) == "bool" and op not in ("==", "!="):
        return False
    if dates and kind_of(a) == "string":
        left, right = as_date(a), as_date(b)
        if left is None or right is None:
            return False
        if isinstance(left, datetime) and isinstance(right, datetime):
            return PYTHON_OPS[op](left, right)
        return PYTHON_OPS[op](day_of(left), day_of(right))
    return PYTHON_OPS[op](a, b)


def as_date(text: str) -> date | datetime | None:
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def day_of(value: date | datetime) -> date:
    return value.astimezone(UTC).date() if isinstance(value, datetime) else value


def same(a: Any, b: Any) -> bool:
    return kind_of(a) == kind_of(b) and a == b


@st.composite
def flow_facts_expr(draw: st.DrawFn) -> tuple[Flow, Facts, Expr]:
    flow = draw(random_flows())
    return flow, draw(random_facts(flow)), draw(GATE_EXPRS)


@settings(max_examples=500, deadline=None)
@given(flow_facts_expr())
def test_evaluator_agrees_with_reference(case: tuple[Flow, Facts, Expr]) -> None:
    flow, f, expr = case
    evaluator = Evaluator(flow)
    reference = Reference(flow, f)
    expected = reference.eval(expr)
    got = evaluator.value(expr, f)
    assert same(got, expected), (got, expected)
    assert evaluator.test(expr, f) == truthy(expected)
    assert same(evaluator.score(f), reference.score())


@settings(max_examples=300, deadline=None)
@given(flow_facts_expr())
def test_explain_and_reads_agree_with_reference(case: tuple[Flow, Facts, Expr]) -> None:
    flow, f, expr = case
    evaluator = Evaluator(flow)
    reference = Reference(flow, f)
    lines = evaluator.explain(expr, f)
    assert (lines == []) == truthy(reference.eval(expr))
    assert all(isinstance(line, str) and line for line in lines)
    reads = evaluator.reads(expr, f)
    assert set(reads) == reference.reads(expr)
    for key, value in reads.items():
        if key in {fd.name for fd in flow.fields} or key in EVENTS or key == "score":
            assert same(value, reference.name(key))
    json.dumps(reads)


@settings(max_examples=100, deadline=None)
@given(flow_facts_expr())
def test_evaluator_is_pure(case: tuple[Flow, Facts, Expr]) -> None:
    """Evaluating twice, or on fresh facts, gives the same answer."""
    flow, f, expr = case
    evaluator = Evaluator(flow)
    first = evaluator.value(expr, f)
    assert same(evaluator.value(expr, f), first)
    fresh = Facts(dict(f.fields), list(f.events), f.now, f.entered_at, f.created_at)
    assert same(Evaluator(flow).value(expr, fresh), first)
