"""Two caches that must never change an answer, checked against the
computation they stand for.

- `due.score_until` says how long a waiting lead's score holds, so that
  `_ranked` (runtime/moves.py) can reuse it instead of scoring the lead
  again: for random score rules of checked flows (windows, plain counts,
  field conditions, days in stage, days since created, days since an
  event) and random events before and after the moment, the score the evaluator computes is
  the same at every sampled moment before that time (never late), sampled
  at random and around every microsecond at which a window or a day count
  could flip it.
- An `Evaluator` keeps what it compiled and what each `Facts` derived
  (counts, the score): one evaluator fed random field values many times,
  in random order, answers exactly what a fresh evaluator answers for each
  set of values once, with the awkward pairs of the language's rules (true
  and 1, false and 0, 1.0 and 1, unset, text that looks like a number)
  drawn often.  (Written against a per-value memo of field-only rules,
  since removed: it paid off only on benchmarks.)  These flows are not
  checked, nor the values set: the answers must agree whatever the
  evaluator is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from saleflow.check.rules import check
from saleflow.compile import CompiledFlow, compile_flow
from saleflow.due import MICROSECOND, score_until
from saleflow.guards.facts import Facts
from saleflow.language.parse import parse_flow
from saleflow.model.flow import Expr, Flow, Ref
from saleflow.records import EventRecord, FieldValue, Lead

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CYCLE = 2  # the lead's cycle; events of cycle 1 are an earlier cycle's
EVENTS = ("ev0", "ev1")
SPANS = {"1 day": 1.0, "2 days": 2.0, "12 hours": 0.5, "5 days": 5.0, "36 hours": 1.5, "1 hour": 1 / 24}
DAYS = ("0", "0.5", "1", "1.5", "2", "3", "4")
OPS = ("==", "!=", "<", "<=", ">", ">=")
DAY_US = 86_400 * 10**6

# ---------------------------------------------------------------------------
# score_until: random score rules that read time, random events
# ---------------------------------------------------------------------------


@st.composite
def time_atoms(draw: st.DrawFn) -> str:
    """A condition over time, fields and events, as score rules write them
    (and as check accepts them: no day count read as a truth or compared
    with one; `test_score_until_tells_true_from_1_in_a_flow_check_refuses`
    is about those)."""
    ev = draw(st.sampled_from(EVENTS))
    op = draw(st.sampled_from(OPS))
    day = draw(st.sampled_from(DAYS))
    span = draw(st.sampled_from(sorted(SPANS)))
    k = draw(st.integers(0, 3))
    return draw(
        st.sampled_from(
            [
                f"days_in_stage {op} {day}",
                f"days_since_created {op} {day}",
                f"days_since {ev} {op} {day}",
                f"days_since {ev} is set",
                f"days_since {ev} is not set",
                f"days_in_stage {op} n",
                f"days_since_created {op} n",
                f"days_since {ev} {op} days_in_stage",
                f"days_in_stage {op} {ev} in last {span}",
                f"{ev} in last {span} {op} {k}",
                "days_in_stage in [1, 2, 3]",
                f"days_since {ev} in [0, 1, 1.5]",
                f"days_since_created not in [{day}, 4]",
                f"{ev} >= {k}",
                f"n >= {k}",
                "flag",
            ]
        )
    )


@st.composite
def time_conditions(draw: st.DrawFn) -> str:
    parts = draw(st.lists(time_atoms(), min_size=1, max_size=3))
    if len(parts) == 1:
        text = parts[0]
    elif draw(st.integers(0, 3)) == 0:
        text = f"at least {draw(st.integers(1, len(parts)))} of {{ {' '.join(f'({p})' for p in parts)} }}"
    else:
        text = f" {draw(st.sampled_from(['and', 'or']))} ".join(f"({p})" for p in parts)
    return f"not ({text})" if draw(st.integers(0, 5)) == 0 else text


@st.composite
def score_rules(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["+", "+", "-"]))
    points = draw(st.integers(1, 10))
    ev = draw(st.sampled_from(EVENTS))
    span = draw(st.sampled_from(sorted(SPANS)))
    kind = draw(st.sampled_from(["window", "count", "field", "hot", "time", "time", "time", "time"]))
    if kind == "window":
        body = f"each {ev} in last {span}"
    elif kind == "count":
        body = f"each {ev}"
    elif kind == "field":
        body = draw(st.sampled_from([f"if n >= {draw(st.integers(0, 3))}", "if flag"]))
    elif kind == "hot":
        body = "if hot"
    else:
        body = f"if {draw(time_conditions())}"
    return f"  {sign}{points} {body}"


@st.composite
def scored_flows(draw: st.DrawFn) -> str:
    lines = [
        "flow scored",
        "field n int default 0",
        "field flag bool default false",
        *(f"event {ev}" for ev in EVENTS),
        f"condition hot = {draw(time_conditions())}",
        "score {",
        *draw(st.lists(score_rules(), min_size=1, max_size=5)),
        "}",
        "team sales {",
        "  stage a initial",
        "  stage b when n >= 100",
        "}",
        "stage lost final",
    ]
    return "\n".join(lines) + "\n"


def moments(low_days: float, high_days: float) -> st.SearchStrategy[timedelta]:
    """An offset between the two: any microsecond, a whole hour, or a day
    count a rule compares with (a moment exactly on a threshold)."""
    low, high = int(low_days * DAY_US), int(high_days * DAY_US)
    exact = sorted({float(d) for d in DAYS} | set(SPANS.values()))
    return st.one_of(
        st.integers(low, high).map(lambda us: timedelta(microseconds=us)),
        st.integers(int(low_days * 24), int(high_days * 24)).map(lambda h: timedelta(hours=h)),
        st.sampled_from([d for d in exact if low_days <= d <= high_days]).map(lambda d: timedelta(days=d)),
        st.sampled_from([-d for d in exact if low_days <= -d <= high_days]).map(lambda d: timedelta(days=d)),
    )


@st.composite
def scored_leads(draw: st.DrawFn) -> tuple[str, Lead, list[EventRecord], datetime, list[timedelta]]:
    source = draw(scored_flows())
    created = T0
    entered = created + draw(moments(0, 4))
    at = entered + draw(moments(0, 5))
    fields: dict[str, FieldValue] = {}
    if draw(st.booleans()):
        fields["n"] = draw(st.integers(0, 3))
    if draw(st.booleans()):
        fields["flag"] = draw(st.booleans())
    lead = Lead("x", "scored", 1, "a", fields, CYCLE, entered, created, entered)
    events = [
        EventRecord(
            draw(st.sampled_from(EVENTS)),
            at + draw(moments(-9, 9)),
            None,
            None,
            draw(st.integers(1, 2)),
            CYCLE if draw(st.integers(0, 4)) else CYCLE - 1,
        )
        for _ in range(draw(st.integers(0, 6)))
    ]
    later = draw(st.lists(moments(0, 15), max_size=20))
    return source, lead, events, at, later


def score_at(cf: CompiledFlow, lead: Lead, current: Sequence[EventRecord], t: datetime) -> Any:
    return cf.evaluator.score(Facts(lead.fields, current, t, lead.entered_at, lead.created_at))


def critical_moments(lead: Lead, current: Sequence[EventRecord]) -> set[datetime]:
    """Every microsecond (give or take two) at which a rule of
    `scored_flows` could change value, found here without due.py: events
    entering and leaving windows, and the days since each possible origin
    crossing each threshold a rule compares them with."""
    found: set[datetime] = set()
    jitter = [timedelta(microseconds=us) for us in range(-2, 3)]
    # the day counts of DAYS, the values of n and the counts a window may hold
    thresholds = {float(d) for d in DAYS} | {float(k) for k in range(13)}
    for record in current:
        found.update(record.at + j for j in jitter)
        for days in SPANS.values():
            found.update(record.at + timedelta(days=days) + j for j in jitter)
    origins = [lead.entered_at, lead.created_at, *(record.at for record in current)]
    for origin in origins:
        for days in thresholds:
            found.update(origin + timedelta(days=days) + j for j in jitter)
    return found


@settings(max_examples=300, deadline=None)
@given(scored_leads())
def test_a_score_holds_until_score_until_and_score_until_is_never_late(
    case: tuple[str, Lead, list[EventRecord], datetime, list[timedelta]],
) -> None:
    source, lead, events, at, later = case
    flow = parse_flow(source, "scored.flow")
    assert not [d for d in check(flow) if d.is_error], source
    cf = compile_flow(flow, flow.version)
    current = [record for record in events if record.cycle == lead.cycle]
    until = score_until(cf, lead, events, at)
    assert until is None or until > at, (source, at, until)
    base = score_at(cf, lead, current, at)
    samples = {at + offset for offset in later} | critical_moments(lead, current)
    if until is not None:
        samples |= {until - MICROSECOND, until, until + MICROSECOND}
    changed = False
    for t in sorted(s for s in samples if s >= at):
        now = score_at(cf, lead, current, t)
        if now != base:
            changed = True
            assert until is not None and until <= t, (
                f"score {base} at {at} became {now} at {t}, before score_until said it could "
                f"({until})\n{source}\nlead: {lead}\nevents: {events}"
            )
    if until is None:
        event("score_until: never")
    elif score_at(cf, lead, current, until) != base:
        event("score_until: exactly when the score changes")
    else:
        event("score_until: early (the score still holds there)")
    event("the score changed in the samples" if changed else "the score never changed in the samples")


def timed_flow(body: str) -> CompiledFlow:
    flow = parse_flow(
        "flow f\nfield n int default 0\nevent ping\n" + body + "team sales {\n  stage a initial\n}\n"
    )
    return compile_flow(flow, flow.version)


def test_score_until_for_a_window_and_for_days_in_stage() -> None:
    cf = timed_flow("score {\n  +5 each ping in last 2 days\n  +1 if days_in_stage > 3\n}\n")
    entered = T0 + timedelta(hours=7)
    lead = Lead("x", "f", 1, "a", {}, 1, entered, T0, entered)
    pings = [EventRecord("ping", entered + timedelta(hours=1))]
    at = entered + timedelta(hours=2)
    # the ping leaves its window one microsecond after two days
    assert score_until(cf, lead, pings, at) == pings[0].at + timedelta(days=2) + MICROSECOND
    after = entered + timedelta(days=2, hours=5)
    until = score_until(cf, lead, pings, after)
    assert until is not None and abs(until - (entered + timedelta(days=3))) <= 2 * MICROSECOND
    assert score_at(cf, lead, pings, until - MICROSECOND) == score_at(cf, lead, pings, after)
    # a score that reads no time holds until the lead changes
    plain = timed_flow("score {\n  +5 each ping\n  +1 if n >= 1\n}\n")
    assert score_until(plain, lead, pings, at) is None


def test_score_until_tells_true_from_1_in_a_flow_check_refuses() -> None:
    """Found by the property test before it kept to checked flows: the
    score below is 1 for exactly one microsecond, at one day in the stage,
    and score_until said it never changes (the planner kept one growing
    value per constant, and true == 1 in Python: the constant true, planned
    first, stood for the 1 after it).  Deploy refuses the flow (SF110);
    due_time shares the planner."""
    cf = timed_flow("score {\n  +1 if days_in_stage == true or days_in_stage == 1\n}\n")
    lead = Lead("x", "f", 1, "a", {}, 1, T0, T0, T0)
    assert score_at(cf, lead, [], T0 + timedelta(days=1)) != score_at(cf, lead, [], T0)
    until = score_until(cf, lead, [], T0)
    assert until is not None and until <= T0 + timedelta(days=1)
    for text in (
        "days_in_stage == true or days_in_stage == 1",
        "days_in_stage == false or days_in_stage > 0",
    ):
        gated = timed_flow(f"score {{\n  +1 if {text}\n}}\n")
        assert score_until(gated, lead, [], T0) is not None, text


# ---------------------------------------------------------------------------
# One evaluator, many values, in any order
# ---------------------------------------------------------------------------

NUMBERS = ("0", "1", "1.0", "-1", "2", "0.5", "true", "false", '"1"', '"a"')


@st.composite
def field_atoms(draw: st.DrawFn, conditions: int) -> str:
    op = draw(st.sampled_from(OPS))
    number = draw(st.sampled_from(NUMBERS))
    numeric = draw(st.sampled_from(["x", "m"]))
    name = draw(st.sampled_from(["x", "b", "t", "m"]))
    other = draw(st.sampled_from(["x", "b", "t", "m"]))
    items = ", ".join(draw(st.lists(st.sampled_from([*NUMBERS, "x", "m", "b"]), min_size=1, max_size=3)))
    choices = [
        f"{numeric} {op} {number}",
        f"{name} {op} {number}",
        f"{name} {op} {other}",
        f"b {draw(st.sampled_from(['==', '!=']))} {draw(st.sampled_from(['true', 'false']))}",
        f't {op} "{draw(st.sampled_from(["a", "b", "1", ""]))}"',
        't in ["a", "b"]',
        't not in ["a", "1"]',
        f"{name} in [{items}]",
        f"{name} not in [{items}]",
        f"{name} is set",
        f"{name} is not set",
        name,
    ]
    if conditions:
        choices.append(f"c{draw(st.integers(0, conditions - 1))}")
    return draw(st.sampled_from(choices))


@st.composite
def field_exprs(draw: st.DrawFn, conditions: int, depth: int = 2) -> str:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(field_atoms(conditions))
    parts = draw(st.lists(field_exprs(conditions, depth - 1), min_size=1, max_size=3))
    kind = draw(st.sampled_from(["and", "or", "not", "at least"]))
    if kind == "not":
        return f"not ({parts[0]})"
    if kind == "at least":
        return f"at least {draw(st.integers(1, len(parts)))} of {{ {' '.join(f'({p})' for p in parts)} }}"
    return f" {kind} ".join(f"({p})" for p in parts)


@st.composite
def field_flows(draw: st.DrawFn) -> str:
    lines = [
        "flow fields",
        "field x int" + draw(st.sampled_from(["", " default 0", " default 2"])),
        "field b bool" + draw(st.sampled_from(["", " default false", " default true"])),
        "field t text" + draw(st.sampled_from(["", ' default "a"'])),
        "field m money" + draw(st.sampled_from(["", " default 0", " default 1.5"])),
        "event ev",
    ]
    count = draw(st.integers(1, 4))
    for i in range(count):
        body = draw(field_exprs(i))
        if i and draw(st.booleans()):  # a condition read through another
            joined = draw(st.sampled_from(["and", "or", "and not"]))
            body = f"c{draw(st.integers(0, i - 1))} {joined} ({body})"
        lines.append(f"condition c{i} = {body}")
    lines.append("score {")
    for _ in range(draw(st.integers(1, 4))):
        lines.append(
            f"  {draw(st.sampled_from(['+', '-']))}{draw(st.integers(1, 9))} if {draw(field_exprs(count))}"
        )
    if draw(st.booleans()):  # rules that read events, beside the remembered ones
        lines.append(f"  +{draw(st.integers(1, 9))} each ev")
        lines.append(f"  +{draw(st.integers(1, 9))} if ev >= 1 and ({draw(field_exprs(count, 1))})")
    lines += ["}", "team sales {", "  stage a initial", "}"]
    return "\n".join(lines) + "\n"


# Values Python calls equal, some of which the language tells apart (true
# and 1, false and 0) and some not (1 and 1.0, 0 and 0.0 and -0.0), text
# that looks like a number or a truth, and floats that never order (NaN).
AWKWARD: tuple[FieldValue, ...] = (
    0,
    1,
    2,
    -1,
    0.0,
    -0.0,
    1.0,
    2.0,
    0.5,
    1.5,
    True,
    False,
    None,
    "",
    "a",
    "b",
    "1",
    "true",
    float("nan"),
    float("inf"),
)
VALUES: st.SearchStrategy[FieldValue] = st.one_of(
    st.sampled_from(AWKWARD),
    st.sampled_from(AWKWARD),
    st.sampled_from(AWKWARD),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=2),
)
# A value's twins: values Python calls equal (and hashes alike) that the
# language tells apart, or that a remembered answer must not mix up.  Keyed
# by repr, since a dict keyed by the values would itself mix them up.
TWINS: dict[str, tuple[FieldValue, ...]] = {
    "True": (1, 1.0),
    "1": (True, 1.0),
    "1.0": (1, True),
    "False": (0, 0.0, -0.0),
    "0": (False, 0.0, -0.0),
    "0.0": (0, False, -0.0),
    "-0.0": (0, False, 0.0),
    "2": (2.0,),
    "2.0": (2,),
    "'1'": (1, True),
    "None": (0, False, ""),
}
FIELD_NAMES = ("x", "b", "t", "m")
FIELD_SETS = st.one_of(
    st.fixed_dictionaries({name: VALUES for name in FIELD_NAMES}),
    st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES),
)


@st.composite
def field_sets(draw: st.DrawFn) -> list[tuple[dict[str, FieldValue], int]]:
    """Sets of field values (and how many `ev` events), most of them one
    field away from an earlier set, often by a twin of its value: what a
    remembered answer keyed on too few fields, or too loosely, gets wrong."""
    sets = [(draw(FIELD_SETS), draw(st.integers(0, 2)))]
    for _ in range(draw(st.integers(0, 12))):
        how = draw(st.sampled_from(["new", "twin", "twin", "twin", "twin", "value", "unset", "events"]))
        if how == "new":
            sets.append((draw(FIELD_SETS), draw(st.integers(0, 2))))
            continue
        fields, events = draw(st.sampled_from(sets))
        fields = dict(fields)
        name = draw(st.sampled_from(FIELD_NAMES))
        if how == "events":
            events = draw(st.integers(0, 2))
        elif how == "unset":
            fields.pop(name, None)
        elif how == "twin":
            fields[name] = draw(st.sampled_from(TWINS.get(repr(fields.get(name)), AWKWARD)))
        else:
            fields[name] = draw(VALUES)
        sets.append((fields, events))
    return sets


def observed(cf: CompiledFlow, flow: Flow, fields: Mapping[str, FieldValue], events: int) -> list[str]:
    """What the evaluator says on these fields: the score, each condition's
    value and truth, each score rule's condition; each on facts of its own
    (facts remember a score).  repr keeps the type (True is not 1) and
    lets NaN equal itself."""
    pings = [EventRecord("ev", T0)] * events
    evaluator = cf.evaluator

    def facts() -> Facts:
        return Facts(fields, pings, T0, T0, T0)

    said = [repr(evaluator.score(facts()))]
    exprs: list[Expr] = [Ref(c.name) for c in flow.conditions]
    exprs += [rule.condition for rule in flow.score_rules if rule.condition is not None]
    for expr in exprs:
        said.append(repr(evaluator.value(expr, facts())))
        said.append(repr(evaluator.test(expr, facts())))
    return said


@settings(max_examples=200, deadline=None)
@given(
    source=field_flows(),
    sets=field_sets(),
    data=st.data(),
)
def test_one_evaluator_remembering_field_values_answers_as_a_fresh_one(
    source: str, sets: list[tuple[dict[str, FieldValue], int]], data: st.DataObject
) -> None:
    flow = parse_flow(source, "fields.flow")
    expected = [observed(compile_flow(flow, flow.version), flow, fields, n) for fields, n in sets]
    extra = data.draw(st.lists(st.integers(0, len(sets) - 1), max_size=3 * len(sets)))
    order = data.draw(st.permutations([*range(len(sets)), *extra]))
    shared = compile_flow(flow, flow.version)
    for i in order:
        fields, n = sets[i]
        assert observed(shared, flow, fields, n) == expected[i], (source, fields, n, order)


def test_a_true_flag_is_not_taken_for_an_int_one_the_evaluator_saw_as_true() -> None:
    flow = parse_flow(
        "flow f\nfield flag bool\nfield x int\n"
        "condition on = flag == true\ncondition off = flag == false\ncondition one = x == 1\n"
        "score {\n  +5 if flag == true\n  +7 if x == 1\n}\n"
        "team sales {\n  stage a initial\n}\n"
    )

    def facts(**fields: FieldValue) -> Facts:
        return Facts(fields, [], T0, T0, T0)

    # booleans are not numbers: flag = 1 is not flag == true, whatever came first
    for first, then in (({"flag": True}, {"flag": 1}), ({"flag": 1}, {"flag": True})):
        evaluator = compile_flow(flow, flow.version).evaluator
        for fields in (first, then, first, then):
            is_true = fields["flag"] is True
            assert evaluator.test(Ref("on"), facts(**fields)) is is_true, fields
            assert evaluator.score(facts(**fields)) == (5 if is_true else 0), fields
    evaluator = compile_flow(flow, flow.version).evaluator
    assert evaluator.test(Ref("off"), facts(flag=False))
    assert not evaluator.test(Ref("off"), facts(flag=0))
    assert not evaluator.test(Ref("off"), facts(flag=0.0))
    assert evaluator.test(Ref("off"), facts(flag=False))
    # and the other way round: x == 1 holds for 1 and 1.0, not for true
    assert evaluator.test(Ref("one"), facts(x=1))
    assert not evaluator.test(Ref("one"), facts(x=True))
    assert evaluator.test(Ref("one"), facts(x=1.0))
    assert not evaluator.test(Ref("one"), facts(x=True))
    assert [evaluator.score(facts(x=v)) for v in (1, True, 1.0, True, 1)] == [7, 0, 7, 0, 7]
