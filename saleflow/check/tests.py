"""Static checks of a flow's test blocks (SPEC §7): codes SF4xx.

Layer 2, beside `check`, which runs these as one of its rules (and types the
`expect EXPR` steps with its own expression checker).  A test block is judged
like the rest of the file before anything runs, so `saleflow test` never
starts a scenario that names a field, event, stage or lead the flow or the
test does not have, sets a field to a value of the wrong type, or moves its
clock backwards.  Each rule reports the step's own position.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from ..coerce import coerce, parse_time
from ..errors import BadInput, Diagnostic, Span, did_you_mean
from ..limits import MAX_DAYS, MAX_INT32, check_time
from ..model.flow import Assignment, Flow, FlowTest, FlowTestStep

# The test clock starts here (SPEC §7).
TEST_START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")

# Steps that act on the current lead: they need a `lead` step before them.
_NEEDS_LEAD = frozenset(
    {
        "set",
        "event",
        "advance",
        "force",
        "expect_stage",
        "expect_cycle",
        "expect_waiting",
        "expect_refused",
        "expect_sla_breached",
        "expect",
    }
)
_STAGE_STEPS = frozenset({"advance", "force", "expect_stage", "expect_waiting", "expect_refused"})


def _error(code: str, span: Span, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, "error", span, message, hint)


def check_tests(flow: Flow) -> Iterator[Diagnostic]:
    """Every SF4xx diagnostic of `flow`'s test blocks, in source order."""
    seen: dict[str, FlowTest] = {}
    for test in flow.tests:
        if test.name in seen:
            yield _error(
                "SF401",
                test.span,
                f'test "{test.name}" is declared twice (first at line {seen[test.name].span.line})',
                "give each test its own name, so -k and the report can tell them apart",
            )
        else:
            seen[test.name] = test
        yield from _check_test(flow, test)


def _check_test(flow: Flow, test: FlowTest) -> Iterator[Diagnostic]:
    leads: set[str] = set()
    current: str | None = None
    clock = TEST_START
    told = False  # a missing lead is said once per test
    for step in test.steps:
        if step.kind in _NEEDS_LEAD and current is None and not told:
            told = True
            yield _error(
                "SF402",
                step.span,
                f'test "{test.name}" has no lead yet at this step',
                'start the test with "lead NAME"',
            )
        if step.kind == "lead":
            assert step.name is not None
            if step.name in leads:
                yield _error(
                    "SF403",
                    step.name_span,
                    f'lead "{step.name}" is created twice in test "{test.name}"',
                    f'use "use {step.name}" to make it the current lead again',
                )
            leads.add(step.name)
            current = step.name
        elif step.kind == "use":
            assert step.name is not None
            if step.name not in leads:
                hint = did_you_mean(step.name, sorted(leads))
                yield _error(
                    "SF404",
                    step.name_span,
                    f'test "{test.name}" has no lead "{step.name}" yet',
                    hint or f'create it first with "lead {step.name}"',
                )
            else:
                current = step.name
        elif step.kind == "at":
            found = _time(step)
            if isinstance(found, Diagnostic):
                yield found
            elif found < clock:
                yield _error(
                    "SF405",
                    step.span,
                    f"the test's clock cannot go back: {step.time} is before {_iso(clock)}",
                    "a test's time only moves forward; use a later time",
                )
            else:
                clock = found
        elif step.kind == "wait":
            assert step.number is not None
            if not 0 < step.number <= MAX_DAYS:
                yield _error(
                    "SF406", step.span, f"a wait must be longer than 0 and at most {MAX_DAYS:,} days"
                )
            else:
                clock = _moved(clock, step.number)
        elif step.kind == "event":
            yield from _event(flow, step)
        elif step.kind == "expect_cycle" and step.number is not None and not 1 <= step.number <= MAX_INT32:
            yield _error("SF406", step.span, f"a cycle is a number from 1 to {MAX_INT32:,}")
        if step.kind in ("lead", "set"):
            yield from _assignments(flow, step.assignments)
        if step.kind in _STAGE_STEPS:
            yield from _stage(flow, step)


def _time(step: FlowTestStep) -> datetime | Diagnostic:
    try:
        return check_time(parse_time(str(step.time), "the test's time"), "the test's time")
    except BadInput as err:
        return _error("SF405", step.span, str(err), "write it as ISO 8601, like 2026-03-02T09:00:00Z")


def _moved(clock: datetime, days: float) -> datetime:
    try:
        return clock + timedelta(days=days)
    except OverflowError:
        return clock


def _event(flow: Flow, step: FlowTestStep) -> Iterator[Diagnostic]:
    assert step.name is not None
    if flow.event(step.name) is None:
        hint = did_you_mean(step.name, [e.name for e in flow.events])
        yield _error("SF105", step.name_span, f'unknown event "{step.name}"', hint)
    if step.number is not None and not 1 <= step.number <= MAX_INT32:
        yield _error("SF406", step.span, f"an event is recorded from 1 to {MAX_INT32:,} times at once")


def _assignments(flow: Flow, assignments: tuple[Assignment, ...]) -> Iterator[Diagnostic]:
    for item in assignments:
        definition = flow.field(item.field)
        if definition is None:
            hint = did_you_mean(item.field, [f.name for f in flow.fields])
            yield _error("SF104", item.span, f'unknown field "{item.field}"', hint)
            continue
        if (
            item.bare
            and definition.type.kind != "enum"
            and not (definition.type.kind == "bool" and item.value in ("true", "false"))
        ):
            yield _error(
                "SF407",
                item.value_span,
                f'field "{item.field}" is {definition.type}; {item.value} is a bare name',
                'write text in double quotes, like "this"',
            )
            continue
        if item.bare and definition.type.kind == "enum" and item.value not in definition.type.choices:
            hint = did_you_mean(str(item.value), definition.type.choices)
            yield _error(
                "SF112",
                item.value_span,
                f'"{item.value}" is not one of the values of field "{item.field}" ({definition.type})',
                hint,
            )
            continue
        try:
            coerce(definition, item.value)
        except BadInput as err:
            yield _error("SF407", item.value_span, str(err))


def _stage(flow: Flow, step: FlowTestStep) -> Iterator[Diagnostic]:
    assert step.name is not None
    stage = flow.stage(step.name)
    if stage is None:
        hint = did_you_mean(step.name, flow.stage_names)
        yield _error("SF106", step.name_span, f'unknown stage "{step.name}"', hint)
    elif step.kind == "expect_waiting" and stage.capacity is None:
        yield _error(
            "SF408",
            step.name_span,
            f'stage "{step.name}" has no capacity, so no lead ever waits for it',
            "expect waiting names a stage declared with capacity N",
        )


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")
