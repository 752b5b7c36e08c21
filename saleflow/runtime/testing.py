"""Runs a flow's test blocks (SPEC §7): `saleflow test` and `run_tests`.

Layer 4, on top of the engine.  Each test gets its own fresh in-memory
SQLite store and a real `Engine` with the flow deployed, so a scenario goes
through exactly the code production runs (add_lead, set, record, advance,
tick, lead and its blockers); nothing is simulated here.  The test's clock
starts at 2026-01-01T00:00:00Z; `at` sets it and `wait` moves it on and
ticks every lead of the test.  A failing step becomes a `TestResult` that
says where (the step's span), what was expected and found, and why the
current lead cannot move: never an exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..check.rules import check
from ..check.tests import TEST_START
from ..coerce import parse_time
from ..errors import Diagnostic, FlowInvalid, Rejected, SaleflowError, Span
from ..limits import check_time
from ..model.flow import Flow, FlowTest, FlowTestStep
from ..model.unparse import unparse
from ..records import MoveVerdict
from ..store import open_store
from .engine import Engine
from .moves import Step

MEMORY = "sqlite:///:memory:"
ACTOR = "saleflow-test"


@dataclass(frozen=True, slots=True)
class TestResult:
    """The verdict on one test; `span` is the failing step's (or the
    test's own when it passed)."""

    __test__ = False  # not a pytest class

    test: str
    passed: bool
    span: Span
    message: str = ""
    blockers: tuple[str, ...] = ()
    source_line: str = field(default="", repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "passed": self.passed,
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "message": self.message or None,
            "blockers": list(self.blockers),
        }

    def render(self, source: str | None) -> str:
        """`PASS name`, or `FAIL name` then where, the line with a caret,
        what was expected and found, and the blockers."""
        if self.passed:
            return f"PASS {self.test}"
        shown = Diagnostic("test", "error", self.span, self.message).render(source).split("\n")
        lines = [f"FAIL {self.test}", f"  {self.span}: {self.message}", *("  " + line for line in shown[1:])]
        lines.extend(f"  blocked: {blocker}" for blocker in self.blockers if blocker not in self.message)
        return "\n".join(lines)


class _Failed(Exception):
    def __init__(self, message: str, blockers: Iterable[str] = (), *, inline: bool = False) -> None:
        self.blockers = tuple(blockers)
        if inline and self.blockers:
            message += "; " + "; ".join(self.blockers)
        super().__init__(message)
        self.message = message


class _Clocked(Engine):
    """An engine whose `now` is the test's clock."""

    clock: datetime = TEST_START

    def now(self) -> datetime:
        return self.clock


def run_tests(flow: Flow, *, select: str | None = None) -> list[TestResult]:
    """Run the test blocks of `flow` (those whose name contains `select`,
    when given).  Raises `FlowInvalid` when the flow does not check."""
    diagnostics = check(flow)
    if any(d.is_error for d in diagnostics):
        raise FlowInvalid(flow.path, diagnostics, flow.source)
    return [_run(flow, test) for test in flow.tests if select is None or select in test.name]


def _run(flow: Flow, test: FlowTest) -> TestResult:
    engine = _Clocked(open_store(MEMORY), actor=ACTOR)
    try:
        engine.deploy(flow)
        runner = _Runner(engine, flow)
        for step in test.steps:
            try:
                runner.step(step)
            except _Failed as failed:
                return TestResult(test.name, False, step.span, failed.message, failed.blockers)
            except SaleflowError as err:  # the engine refused the step's input
                return TestResult(test.name, False, step.span, str(err), runner.blockers())
        return TestResult(test.name, True, test.span)
    finally:
        engine.close()


class _Runner:
    """One test's state: its engine, leads and current lead."""

    def __init__(self, engine: _Clocked, flow: Flow) -> None:
        self.engine = engine
        self.flow = flow
        self.current: str | None = None

    # -- steps ------------------------------------------------------------
    def step(self, step: FlowTestStep) -> None:
        getattr(self, f"_{step.kind}")(step)

    def _at(self, step: FlowTestStep) -> None:
        when = check_time(parse_time(str(step.time), "the test's time"), "the test's time")
        if when < self.engine.clock:
            raise _Failed(f"the test's clock cannot go back to {step.time}")
        self.engine.clock = when

    def _lead(self, step: FlowTestStep) -> None:
        assert step.name is not None
        values = {a.field: a.value for a in step.assignments}
        self.engine.add_lead(step.name, flow=self.flow.name, at=self.engine.clock, fields=values)
        self.current = step.name

    def _use(self, step: FlowTestStep) -> None:
        self.current = step.name

    def _set(self, step: FlowTestStep) -> None:
        values = {a.field: a.value for a in step.assignments}
        self.engine.set(self._lead_id(), values, at=self.engine.clock)

    def _event(self, step: FlowTestStep) -> None:
        assert step.name is not None
        count = int(step.number) if step.number is not None else 1
        self.engine.record(
            self._lead_id(), step.name, at=self.engine.clock, channel=step.channel, count=count
        )

    def _wait(self, step: FlowTestStep) -> None:
        try:
            later = self.engine.clock + timedelta(days=float(step.number or 0))
        except OverflowError:
            raise _Failed("the test's clock would run past the year 9999") from None
        self.engine.clock = check_time(later, "the test's clock")
        self.engine.tick(at=self.engine.clock)

    def _advance(self, step: FlowTestStep) -> None:
        try:
            self.engine.advance(self._lead_id(), to=step.name, reason=step.reason, at=self.engine.clock)
        except Rejected as err:
            raise _Failed(f"advance to {step.name} was refused: {err}", self.blockers(step.name)) from None

    def _force(self, step: FlowTestStep) -> None:
        self.engine.advance(
            self._lead_id(), to=step.name, force=True, reason=step.reason, at=self.engine.clock
        )

    def _expect_stage(self, step: FlowTestStep) -> None:
        view = self.engine.lead(self._lead_id())
        if view.stage != step.name:
            raise _Failed(
                f'expected stage {step.name}, lead "{view.id}" is in {view.stage}',
                self.blockers(step.name),
                inline=True,
            )

    def _expect_cycle(self, step: FlowTestStep) -> None:
        view = self.engine.lead(self._lead_id())
        if view.cycle != step.number:
            raise _Failed(f'expected cycle {step.number:g}, lead "{view.id}" is in cycle {view.cycle}')

    def _expect_waiting(self, step: FlowTestStep) -> None:
        lead_id = self._lead_id()
        assert step.name is not None
        with self.engine.store.transaction() as tx:
            waiting = lead_id in tx.waiting(self.flow.name, step.name, 1_000_000)
        if not waiting:
            view = self.engine.lead(lead_id)
            raise _Failed(
                f'expected lead "{lead_id}" to wait for room in {step.name}; it is in {view.stage}, not waiting',
                self.blockers(step.name),
                inline=True,
            )

    def _expect_refused(self, step: FlowTestStep) -> None:
        view = self.engine.lead(self._lead_id())
        for verdict in view.next:
            if verdict.to == step.name and verdict.allowed:
                raise _Failed(
                    f'expected a move to {step.name} to be refused; lead "{view.id}" in {view.stage} '
                    f"may {verdict.kind} to it now"
                )

    def _expect_sla_breached(self, step: FlowTestStep) -> None:
        view = self.engine.lead(self._lead_id())
        if view.sla_days is None:
            raise _Failed(f'expected a breached SLA; stage {view.stage} of lead "{view.id}" has no SLA')
        if not view.overdue:
            raise _Failed(
                f'expected a breached SLA; lead "{view.id}" is in {view.stage} until '
                f"{view.due_at.isoformat() if view.due_at else '?'} within its SLA"
            )

    def _expect(self, step: FlowTestStep) -> None:
        assert step.expr is not None
        lead_id = self._lead_id()
        cf = self.engine.compiled(self.flow.name)
        lead = self.engine.store.get_lead(lead_id)
        assert lead is not None
        events = [e for e in self.engine.store.events_of(lead_id) if e.cycle == lead.cycle]
        facts = Step(cf, lead, events, self.engine.clock).facts
        if not cf.evaluator.test(step.expr, facts):
            why = cf.evaluator.explain(step.expr, facts) or [f"{unparse(step.expr)} is false"]
            raise _Failed(f'expected {unparse(step.expr)}; for lead "{lead_id}" ' + "; ".join(why))

    # -- helpers ----------------------------------------------------------
    def _lead_id(self) -> str:
        if self.current is None:  # check reports this (SF402); a Flow built in code may not be checked
            raise _Failed("no lead yet: start the test with lead NAME")
        return self.current

    def blockers(self, toward: str | None = None) -> tuple[str, ...]:
        """Why the current lead cannot move: the moves to `toward` when it
        has any, else every refused move from its stage."""
        if self.current is None:
            return ()
        try:
            verdicts = self.engine.lead(self.current).next
        except SaleflowError:
            return ()
        chosen = [v for v in verdicts if v.to == toward] or list(verdicts)
        return tuple(_blocked(v) for v in chosen if not v.allowed)


def _blocked(verdict: MoveVerdict) -> str:
    reasons = "; ".join(dict.fromkeys(b.message for b in verdict.blockers))
    return f"{verdict.kind} → {verdict.to} is blocked: {reasons}"


def summary(results: Iterable[TestResult]) -> str:
    """The last line: `N passed, N failed`."""
    passed = failed = 0
    for result in results:
        if result.passed:
            passed += 1
        else:
            failed += 1
    return f"{passed} passed, {failed} failed"


__all__ = ["TestResult", "run_tests", "summary"]
