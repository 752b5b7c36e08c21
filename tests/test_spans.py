"""Every name keeps its own span (issue 10, item 3).

The parser records where each name is written, and the checker points its
diagnostics there instead of searching the source again.  These tests hold
the spans to the source: each one slices exactly the name's text, every
name token Lark saw has one, spans stay out of equality, hashing and a
flow's identity, and the carets the old source search put in the wrong
place (a window in hours, a word inside a string, a comment inside a
declaration) now point at the right characters.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from flowgen import mutated_flows, valid_flows
from hypothesis import HealthCheck, assume, given, settings
from lark import Token

from saleflow.check.rules import check
from saleflow.errors import NO_SPAN, FlowInvalid, Span
from saleflow.language.grammar import parser
from saleflow.language.parse import parse_flow
from saleflow.limits import MAX_ID_LENGTH
from saleflow.model.flow import FieldDef, FieldType, Flow, Skip, Stage, Team
from saleflow.model.identity import identity
from saleflow.model.names import written_names

SPANS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def text_at(source: str, span: Span) -> str:
    """The characters of `source` that `span` covers (columns count from 1,
    the end column is one past the last character, as Lark counts)."""
    starts = [0]
    for index, char in enumerate(source):
        if char == "\n":
            starts.append(index + 1)
    start = starts[span.line - 1] + span.column - 1
    end = starts[span.end_line - 1] + span.end_column - 1
    return source[start:end]


def name_tokens(source: str) -> set[tuple[int, int, int, int]]:
    """Where Lark's own parse of `source` has a NAME token."""
    tree = parser().parse(source, start="start")
    return {
        (token.line, token.column, token.end_line, token.end_column)
        for token in tree.scan_values(lambda value: isinstance(value, Token) and value.type == "NAME")
    }


def assert_names_hold(flow: Flow) -> None:
    names = list(written_names(flow))
    assert names, "a parsed flow has a name at least"
    for name, span in names:
        assert span != NO_SPAN, name
        assert span.file == flow.path
        assert text_at(flow.source, span) == name, (name, span)
    kept = {(s.line, s.column, s.end_line, s.end_column) for name, s in names if name != "score"}
    # `score` is a word of the language that stands where a name does: it is
    # in the walk, but it is no NAME token.
    assert kept == name_tokens(flow.source)


@SPANS
@given(valid_flows())
def test_every_name_of_a_generated_flow_slices_its_own_text(text: str) -> None:
    assert_names_hold(parse_flow(text, "gen.flow"))


@SPANS
@given(mutated_flows())
def test_every_name_of_a_mutated_flow_that_parses_slices_its_own_text(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        flow = parse_flow(text, "mut.flow")
    except FlowInvalid:
        assume(False)
        return
    assert_names_hold(flow)


@SPANS
@given(valid_flows())
def test_spans_stay_out_of_equality_hashing_and_identity(text: str) -> None:
    """The same flow written two lines lower is the same flow: same
    equality, same hash, same identity, though every span has moved."""
    here = parse_flow(text, "a.flow")
    lower = parse_flow("# moved\n\n" + text, "b.flow")
    assert here == lower
    assert hash(here) == hash(lower)
    assert identity(here) == identity(lower)
    assert [n for n, _ in written_names(here)] == [n for n, _ in written_names(lower)]
    for (_, above), (_, below) in zip(written_names(here), written_names(lower), strict=True):
        assert below.line == above.line + 2


def test_each_kind_of_name_has_its_own_span() -> None:
    source = (
        'flow deals version 3 "Deals"\n'
        "field tier one of [gold, silver] default gold\n"
        "event call channel phone\n"
        "condition hot = tier == gold and days_since call < 3\n"
        "score { +5 each call in last 7 days }\n"
        "team sales { stage new initial sla 2 days capacity 9 stage won final\n"
        "  target conversion new -> won >= 20% target time in new <= 3 days }\n"
        "stage lost final\n"
        "skip new -> won when hot\n"
        "recycle won, lost -> new\n"
        'test "t" { lead l1 with tier = silver event call channel phone expect stage new }\n'
    )
    flow = parse_flow(source, "d.flow")
    at = lambda span: text_at(source, span)  # noqa: E731
    assert at(flow.name_span) == "deals" and at(flow.version_span) == "3"
    tier = flow.fields[0]
    assert at(tier.name_span) == "tier" and at(tier.default_span) == "gold" and tier.default_is_name
    assert [at(s) for s in tier.type.choice_spans] == ["gold", "silver"]
    call = flow.events[0]
    assert (at(call.name_span), at(call.channel_span)) == ("call", "phone")
    assert at(flow.conditions[0].name_span) == "hot"
    rule = flow.score_rules[0]
    assert at(rule.points_span) == "+5"
    assert rule.each is not None and at(rule.each.event_span) == "call"  # type: ignore[union-attr]
    assert at(rule.each.amount_span) == "7"  # type: ignore[union-attr]
    team = flow.teams[0]
    assert at(team.name_span) == "sales"
    conversion, time = team.targets
    assert (at(conversion.stage_span), at(conversion.to_span), at(conversion.value_span)) == (
        "new",
        "won",
        "20",
    )
    assert (at(time.stage_span), at(time.value_span)) == ("new", "3")
    new = flow.stages[0]
    assert (at(new.name_span), at(new.initial_span), at(new.sla_span), at(new.capacity_span)) == (
        "new",
        "initial",
        "2",
        "9",
    )
    assert at(flow.stages[1].final_span) == "final" and flow.stages[1].initial_span == NO_SPAN
    skip = flow.skips[0]
    assert (at(skip.source_span), at(skip.target_span)) == ("new", "won")
    recycle = flow.recycles[0]
    assert [at(s) for s in recycle.source_spans] == ["won", "lost"] and at(recycle.target_span) == "new"
    lead, event, _ = flow.tests[0].steps
    assert at(lead.name_span) == "l1"
    (assignment,) = lead.assignments
    assert (at(assignment.field_span), at(assignment.value_span)) == ("tier", "silver")
    assert (at(event.name_span), at(event.channel_span)) == ("call", "phone")


# ---- carets the source search put in the wrong place ------------------------
# Each case: flow text, code, (line, column, end_line, end_column) as now
# reported.  The comment says where the old locator pointed.

FIXED_CARETS = [
    pytest.param(
        "flow f\nevent e\nteam t { stage a initial stage b when e in last 9999999 hours >= 1 final }",
        "SF118",
        (3, 49, 3, 56),
        id="window-in-hours-too-long",  # was the whole window: it looked for "days"
    ),
    pytest.param(
        "flow f\nevent e\nteam t { stage a initial stage b when e in last 0days >= 1 final }",
        "SF116",
        (3, 49, 3, 50),
        id="window-unit-without-space",  # was the whole window
    ),
    pytest.param(
        "flow f\nteam t { stage a initial stage b final target time in a <= 99999999 hours }",
        "SF210",
        (2, 60, 2, 68),
        id="time-target-in-hours",  # was the whole target
    ),
    pytest.param(
        "flow f\nteam t { stage a initial stage b final target time in a <= 99999999 day }",
        "SF210",
        (2, 60, 2, 68),
        id="time-target-in-day",  # was the whole target
    ),
    pytest.param(
        'flow f version 99999999999"title"\nteam t { stage a initial }',
        "SF213",
        (1, 16, 1, 27),
        id="version-then-title",  # took the title too
    ),
    pytest.param(
        "flow f\nfield x int default - 99999999999999999999\nteam t { stage a initial }",
        "SF108",
        (2, 21, 2, 43),
        id="negative-default-with-space",  # was the minus sign alone
    ),
    pytest.param(
        "flow f\nteam t { stage a initial # c\n sla 0 days stage b final stage c final }",
        "SF212",
        (3, 6, 3, 7),
        id="sla-after-a-comment",  # was the stage's name: the search stopped at "#"
    ),
    pytest.param(
        "flow f\nteam t { stage a initial stage b # x\n final stage c final }",
        "SF205",
        (3, 2, 3, 7),
        id="final-after-a-comment",  # was the stage's name
    ),
    pytest.param(
        'flow f\nfield x text\nteam t { stage a initial stage b when x == "final" final stage c final }',
        "SF205",
        (3, 52, 3, 57),
        id="final-inside-a-string",  # was the word inside the string
    ),
    pytest.param(
        'flow f\nfield x text\nteam t { stage a initial stage b when x == "sla 3" sla 0 days stage c final }',
        "SF212",
        (3, 56, 3, 57),
        id="sla-inside-a-string",  # was the "3" inside the string
    ),
    pytest.param(
        "flow f\nevent e\nteam t { stage a initial stage b when at least 3of { e e } stage c final }",
        "SF303",
        (3, 48, 3, 49),
        id="count-then-of-without-space",  # took "3of"
    ),
    pytest.param(
        "flow f\nevent e\nteam t { stage a initial stage b when at least # c\n 0 of { e } stage c final }",
        "SF115",
        (4, 2, 4, 3),
        id="count-after-a-comment",  # was the "#"
    ),
]


@pytest.mark.parametrize(("source", "code", "where"), FIXED_CARETS)
def test_caret_points_at_the_written_value(source: str, code: str, where: tuple[int, int, int, int]) -> None:
    found = [d for d in check(parse_flow(source, "c.flow")) if d.code == code]
    assert [(d.span.line, d.span.column, d.span.end_line, d.span.end_column) for d in found] == [where]


# ---- flows built in Python: no spans of names ------------------------------


def test_a_flow_built_in_python_points_at_its_declarations() -> None:
    """Without a parser, nodes have no name spans: diagnostics fall back
    to the declaration's span, as when they were searched in no source."""
    skip_span = Span("py", 7, 1, 7, 12)
    flow = Flow(
        "f",
        teams=(Team("t", None, ("a", "b")),),
        stages=(Stage("a", team="t", initial=True), Stage("b", team="t", final=True)),
        skips=(Skip("a", "ghost", span=skip_span),),
    )
    (unknown,) = [d for d in check(flow) if d.code == "SF106"]
    assert unknown.span == skip_span


def test_a_flow_built_in_python_has_its_long_names_refused() -> None:
    """SF120 reads the names from the model, so a flow built in Python is
    held to the same limit as a flow file (the source search saw none)."""
    long = "v" * (MAX_ID_LENGTH + 1)
    flow = Flow(
        "f",
        fields=(FieldDef("x", FieldType("enum", ("a", long))),),
        teams=(Team("t", None, ("a",)),),
        stages=(Stage("a", team="t", initial=True, final=True),),
    )
    assert [d.code for d in check(flow)] == ["SF120"]
    assert [d.code for d in check(replace(flow, fields=(FieldDef("x", FieldType("enum", ("a",))),)))] == []
