"""`unparse` writes canonical flow text that parses back to the same AST."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saleflow.errors import BadInput
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
from saleflow.model.unparse import literal_text, shorten, unparse

FLOWS = Path(__file__).resolve().parent.parent / "flows"

a, b, c, d = Ref("a"), Ref("b"), Ref("c"), Ref("d")
one = Literal(1)


# --------------------------------------------------------------------------
# Every form, and where parentheses go
# --------------------------------------------------------------------------

CASES: list[tuple[Expr, str]] = [
    (Literal(True), "true"),
    (Literal(False), "false"),
    (Literal(10000), "10000"),
    (Literal(-5), "-5"),
    (Literal(0.5), "0.5"),
    (Literal(2.0), "2.0"),
    (Literal(-2.25), "-2.25"),
    (Literal("user"), '"user"'),
    (Literal('say "hi"'), r'"say \"hi\""'),
    (Literal("back\\slash"), r'"back\\slash"'),
    (Literal("two\nlines\tand tab"), r'"two\nlines\tand tab"'),
    (Literal(""), '""'),
    (Ref("budget"), "budget"),
    (Ref("score"), "score"),
    (Window("web_visit", 30), "web_visit in last 30 days"),
    (DaysSince("meeting_held"), "days_since meeting_held"),
    (Compare(">=", Ref("budget"), Literal(10000)), "budget >= 10000"),
    (Compare("==", Ref("authority"), Ref("none")), "authority == none"),
    (Compare(">=", Window("product_login", 30), Literal(10)), "product_login in last 30 days >= 10"),
    (Compare("<=", DaysSince("meeting_held"), Literal(7)), "days_since meeting_held <= 7"),
    (InList(a, (Ref("influencer"), Ref("decision_maker"))), "a in [influencer, decision_maker]"),
    (InList(a, (Ref("x"), Literal("y")), negated=True), 'a not in [x, "y"]'),
    (InList(a, ()), "a in []"),
    (IsSet(Ref("email")), "email is set"),
    (IsSet(Ref("email"), negated=True), "email is not set"),
    (Not(a), "not a"),
    (Not(Not(a)), "not not a"),
    (And((a, b, c)), "a and b and c"),
    (Or((a, b)), "a or b"),
    (AtLeast(3, (a, b, c, d)), "at least 3 of { a b c d }"),
    # precedence: or < and < not < predicates < operands
    (And((Or((a, b)), c)), "(a or b) and c"),
    (Or((And((a, b)), c)), "a and b or c"),
    (Or((Or((a, b)), c)), "(a or b) or c"),
    (And((a, And((b, c)))), "a and (b and c)"),
    (Not(And((a, b))), "not (a and b)"),
    (Not(Or((a, b))), "not (a or b)"),
    (And((Not(a), b)), "not a and b"),
    (Not(Compare("==", a, one)), "not a == 1"),
    (Compare("==", Compare("==", a, b), c), "(a == b) == c"),
    (Compare("==", a, Not(b)), "a == (not b)"),
    (Compare("==", IsSet(a), Literal(True)), "(a is set) == true"),
    (IsSet(Compare("==", a, b)), "(a == b) is set"),
    (IsSet(Not(a)), "(not a) is set"),
    (InList(Or((a, b)), (And((c, d)), one)), "(a or b) in [(c and d), 1]"),
    (InList(a, (InList(b, (c,)),)), "a in [(b in [c])]"),
    (Compare(">", AtLeast(1, (a,)), Literal(False)), "at least 1 of { a } > false"),
    (Not(AtLeast(2, (a, b))), "not at least 2 of { a b }"),
    (
        AtLeast(2, (Or((a, b)), Not(c), InList(d, (one,), negated=True))),
        "at least 2 of { a or b not c d not in [1] }",
    ),
    (AtLeast(1, (AtLeast(1, (a,)), b)), "at least 1 of { at least 1 of { a } b }"),
    # after an item, "-1" would lex as score points: parenthesised there only
    (
        AtLeast(1, (Literal(-1), a, Literal(-2), Compare("<", Literal(-3), b))),
        "at least 1 of { -1 a (-2) (-3 < b) }",
    ),
]


@pytest.mark.parametrize(("expr", "text"), CASES, ids=[text for _, text in CASES])
def test_unparse_writes_canonical_text(expr: Expr, text: str) -> None:
    assert unparse(expr) == text


@pytest.mark.parametrize(("expr", "text"), CASES, ids=[text for _, text in CASES])
def test_canonical_text_parses_back(expr: Expr, text: str) -> None:
    parse_expr = _parser()
    assert parse_expr(text) == expr


def test_degenerate_and_or_still_print_something_meaningful() -> None:
    assert unparse(And(())) == "true"
    assert unparse(Or(())) == "false"
    assert unparse(And((a,))) == "a"
    assert unparse(Not(Or((And((a, b)),)))) == "not (a and b)"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e20, "100000000000000000000.0"),
        (1.5e-7, "0.00000015"),
        (-1e16, "-10000000000000000.0"),
        (0.1, "0.1"),
        (123456789012345678, "123456789012345678"),
    ],
)
def test_numbers_are_written_without_exponent(value: float | int, text: str) -> None:
    assert literal_text(value) == text
    assert type(value)(text) == value


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_cannot_be_written(value: float) -> None:
    with pytest.raises(BadInput):
        literal_text(value)


def test_example_flow_expressions_unparse_to_their_source_text() -> None:
    """Every gate in the example flow is already written canonically."""
    from saleflow.language.parse import load_flow

    path = FLOWS / "the_model.flow"
    source = path.read_text(encoding="utf-8")
    flow = load_flow(path)
    gates = [s.when for s in flow.stages] + [s.when for s in flow.skips] + [r.when for r in flow.recycles]
    written = [unparse(expr) for expr in gates if expr is not None]
    assert "web_visit >= 1 or seminar_attended >= 1" in written
    assert "days_in_stage > 90 and meeting_held in last 60 days == 0" in written
    for text in written:
        assert text in source


# --------------------------------------------------------------------------
# shorten
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("budget >= 10000", 40, "budget >= 10000"),
        ("a" * 40, 40, "a" * 40),
        ("a" * 41, 40, "a" * 39 + "…"),
        ("web_visit >= 1 or seminar_attended >= 1", 20, "web_visit >= 1 or…"),
        ("at least 3 of {\n  a\n  b\n}", 40, "at least 3 of { a b }"),
        ("abcdef", 1, "…"),
        ("abcdef", 0, ""),
    ],
)
def test_shorten(text: str, limit: int, expected: str) -> None:
    assert shorten(text, limit) == expected
    assert len(shorten(text, limit)) <= max(limit, 0)


# --------------------------------------------------------------------------
# Property: unparse, then parse, gives the same AST
# --------------------------------------------------------------------------

# Words the grammar treats specially somewhere; a random name avoids them all.
KEYWORDS = frozenset(
    [
        "flow",
        "version",
        "field",
        "text",
        "int",
        "number",
        "money",
        "bool",
        "date",
        "one",
        "of",
        "default",
        "event",
        "channel",
        "condition",
        "score",
        "each",
        "if",
        "in",
        "last",
        "days",
        "team",
        "stage",
        "initial",
        "final",
        "manual",
        "when",
        "sla",
        "capacity",
        "skip",
        "recycle",
        "auto",
        "target",
        "conversion",
        "time",
        "not",
        "and",
        "or",
        "is",
        "set",
        "at",
        "least",
        "days_since",
        "true",
        "false",
    ]
)

names = st.from_regex(r"[a-z_][a-z0-9_]{0,7}", fullmatch=True).filter(lambda n: n not in KEYWORDS)
literals = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_characters="\x00"), max_size=12),  # a NUL is refused (SF002)
).map(Literal)
operands_base = st.one_of(
    literals,
    names.map(Ref),
    st.just(Ref("score")),
    st.builds(Window, names, st.integers(min_value=0, max_value=400)),
    st.builds(DaysSince, names),
)


def _extend(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    several = st.lists(inner, min_size=2, max_size=4).map(tuple)
    return st.one_of(
        st.builds(Compare, st.sampled_from(COMPARE_OPS), inner, inner),
        st.builds(InList, inner, st.lists(inner, max_size=3).map(tuple), st.booleans()),
        st.builds(IsSet, inner, st.booleans()),
        st.builds(Not, inner),
        st.builds(And, several),
        st.builds(Or, several),
        st.builds(
            AtLeast, st.integers(min_value=0, max_value=5), st.lists(inner, min_size=1, max_size=4).map(tuple)
        ),
    )


expressions = st.recursive(operands_base, _extend, max_leaves=14)


@settings(max_examples=400, deadline=None)
@given(expressions)
def test_unparse_then_parse_is_identity(expr: Expr) -> None:
    parse_expr = _parser()
    text = unparse(expr)
    assert parse_expr(text) == expr, text


@settings(max_examples=200, deadline=None)
@given(expressions)
def test_unparse_is_canonical(expr: Expr) -> None:
    """Writing the parsed text again gives the very same text."""
    parse_expr = _parser()
    text = unparse(expr)
    assert unparse(parse_expr(text)) == text


def _parser():  # type: ignore[no-untyped-def]
    from saleflow.language.parse import parse_expr

    return parse_expr
