"""Properties of the engine under random operations, on SQLite and PostgreSQL.

hypothesis drives random sequences of operations (set a field, record an
event, tick with an advancing clock, ask for an advance, a recycle, an exit,
force a move) on a few fresh leads of `flows/the_model.flow`.  After every
operation each new audit entry is checked against a model the test keeps on
its own (the fields it set, the events it recorded, the clock):

- a gated move (advance, skip, exit, recycle) is one the flow defines, and its
  gates were true at its time, re-evaluated from the model's facts; the
  values the entry stores are exactly what those gates read;
- automatic steps never enter a manual stage and never exit;
- the stored lead agrees with the model and with its last entry;

- the lead's whole journal folds, by this test's own simple replay, to the
  stored fields, events, stage and cycle;

and `audit verify` (chains, replay, projection) finds nothing (`verify() == []`).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saleflow import Engine
from saleflow.compile import CompiledFlow, Move
from saleflow.errors import SaleflowError
from saleflow.guards.facts import Facts
from saleflow.journal import JournalEntry
from saleflow.language.parse import parse_flow
from saleflow.records import AuditEntry, EventRecord, FieldValue

ROOT = Path(__file__).resolve().parent.parent
SOURCE = (ROOT / "flows" / "the_model.flow").read_text(encoding="utf-8")
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
LEADS = 3
EPOCHS = itertools.count()

FIELD_VALUES: dict[str, list[FieldValue]] = {
    "email": ["a@x.example", None],
    "owner": ["ann", None],
    "employees": [10, 800],
    "industry": ["saas", "retail"],
    "budget": [5000, 20000, 60000, None],
    "authority": ["none", "influencer", "decision_maker"],
    "need": [True, False],
    "timeframe_days": [30, 200],
    "problem_known": [True, False],
    "solution_fit": [True, False],
    "expected_value": [0, 50000],
    "lost_reason": ["timing", "no_budget", "competitor", None],
}
EVENTS = [
    "web_visit",
    "content_download",
    "seminar_attended",
    "inbound_question",
    "call_connected",
    "meeting_held",
    "contract_signed",
    "product_login",
]
STAGES = [
    "awareness",
    "lead",
    "nurturing",
    "mql",
    "contacting",
    "sal",
    "sql",
    "opportunity",
    "proposal",
    "negotiation",
    "closed_won",
    "onboarding",
    "adoption",
    "retained",
    "lost",
    "disqualified",
]

lead_no = st.integers(0, LEADS - 1)
operation = st.one_of(
    st.tuples(st.just("set"), lead_no, st.sampled_from(sorted(FIELD_VALUES)), st.integers(0, 3)),
    st.tuples(st.just("event"), lead_no, st.sampled_from(EVENTS), st.integers(1, 12)),
    st.tuples(st.just("tick"), st.sampled_from([1, 7, 31, 61, 92, 370])),
    st.tuples(st.just("advance"), lead_no, st.sampled_from([None, *STAGES])),
    st.tuples(st.just("force"), lead_no, st.sampled_from(STAGES)),
)


@dataclass
class Model:
    """What the test itself knows about one lead."""

    lead_id: str
    flow: str
    created_at: datetime
    fields: dict[str, FieldValue] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    cycle: int = 1
    seen: int = 1  # audit entries already checked


def gated_moves(cf: CompiledFlow, entry: AuditEntry) -> list[Move]:
    """The flow's moves that could have written `entry` (two recycle rules
    may share a source and a target)."""
    return [
        move
        for move in cf.moves_from(entry.from_stage or "")
        if move.kind == entry.kind and move.target == entry.to_stage
    ]


def check_new_entries(
    engine: Engine, model: Model, explicit: tuple[str, str | None] | None, now: datetime
) -> None:
    """Every entry the last operation wrote for this lead, against the model.
    `explicit` is (kind, target) when the operation was a request on it."""
    cf = engine.compiled(model.flow, 1)
    history = engine.history(model.lead_id)
    new = history[model.seen :]
    for index, entry in enumerate(new):
        previous = history[model.seen + index - 1]
        assert entry.at == now
        assert entry.from_stage == previous.to_stage
        requested = explicit is not None and index == 0
        if entry.kind == "force":
            assert requested and explicit is not None and explicit[0] == "force"
            assert entry.reason
            continue
        assert entry.kind in ("advance", "skip", "exit", "recycle"), entry
        candidates = gated_moves(cf, entry)
        assert candidates, f"{entry.kind} {entry.from_stage} -> {entry.to_stage} is no move of the flow"
        if not requested:
            target = cf.flow.stage(entry.to_stage)
            assert target is not None and not target.manual, entry
            candidates = [move for move in candidates if move.automatic]
            assert candidates, f"{entry} is no automatic move"
        # the facts when it moved: the events of the cycle it moved in
        cycle = entry.cycle - 1 if entry.kind == "recycle" else entry.cycle
        facts = Facts(
            fields=model.fields,
            events=[e for e in model.events if e.cycle == cycle],
            now=entry.at,
            entered_at=previous.at,
            created_at=model.created_at,
        )
        verdicts = []
        for move in candidates:
            reads: dict[str, Any] = {}
            for gate in move.gates:
                reads.update(cf.evaluator.reads(gate.expr, facts))
            held = all(cf.evaluator.test(gate.expr, facts) for gate in move.gates)
            verdicts.append((held, reads))
        # some move that could have written it had true gates, and the entry
        # stores exactly what that move's gates read
        assert (True, dict(entry.values)) in verdicts, (entry, verdicts)
    model.seen = len(history)
    model.cycle = history[-1].cycle

    stored = engine.lead(model.lead_id)
    assert stored.stage == history[-1].to_stage
    assert stored.cycle == model.cycle
    assert {k: v for k, v in stored.fields.items() if k in model.fields} == model.fields
    counts: dict[str, int] = {}
    for event in model.events:
        if event.cycle == model.cycle:
            counts[event.name] = counts.get(event.name, 0) + event.count
    assert {k: v for k, v in stored.events.items() if v} == counts
    assert fold(engine.history(model.lead_id, moves_only=False)) == (
        stored.stage,
        stored.cycle,
        dict(engine.store.get_lead(model.lead_id).fields),  # type: ignore[union-attr]
        counts,
    )


def fold(journal: list[JournalEntry]) -> tuple[str, int, dict[str, Any], dict[str, int]]:
    """The journal replayed, independently of saleflow.runtime.audit: the stage and
    cycle after the last entry, the fields from `created` and `set`, the
    current cycle's event counts."""
    stage, cycle, fields = "", 1, {}
    events: list[tuple[str, int, int]] = []
    for entry in journal:
        stage = entry.stage
        if entry.entry == "created":
            fields = dict(entry.data["fields"])
        elif entry.entry == "set":
            for name, (_old, new) in entry.data["fields"].items():
                if new is None:
                    fields.pop(name, None)
                else:
                    fields[name] = new
        elif entry.entry == "event":
            events.append((entry.data["event"], entry.cycle, entry.data["count"]))
        elif entry.kind == "recycle":
            cycle += 1
    counts: dict[str, int] = {}
    for name, in_cycle, count in events:
        if in_cycle == cycle:
            counts[name] = counts.get(name, 0) + count
    return stage, cycle, fields, counts


def run(engine: Engine, ops: list[tuple[Any, ...]]) -> None:
    # Each example gets a flow of its own (The Model under another name), so
    # its ticks and capacity counts see its own leads only, and a clock that
    # starts after the previous example's.
    prefix = uuid.uuid4().hex[:8]
    name = f"the_model_{prefix}"
    engine.deploy(parse_flow(SOURCE.replace("flow the_model ", f"flow {name} ", 1), f"{name}.flow"))
    start = T0 + timedelta(days=1000 * next(EPOCHS))
    now = start
    models = [Model(f"{prefix}-{n}", name, start) for n in range(LEADS)]
    for model in models:
        engine.add_lead(model.lead_id, flow=name, at=now)
        check_new_entries(engine, model, None, now)

    for op in ops:
        kind = op[0]
        explicit: dict[str, tuple[str, str | None]] = {}
        if kind == "tick":
            now += timedelta(days=op[1])
            engine.tick(flow=name, at=now, actor="clock")
        else:
            model = models[op[1]]
            try:
                if kind == "set":
                    value = FIELD_VALUES[op[2]][op[3] % len(FIELD_VALUES[op[2]])]
                    engine.set(model.lead_id, {op[2]: value}, at=now)
                    if value is None:
                        model.fields.pop(op[2], None)
                    else:
                        model.fields[op[2]] = value
                elif kind == "event":
                    engine.record(model.lead_id, op[2], at=now, count=op[3])
                    model.events.append(EventRecord(op[2], now, None, None, op[3], model.cycle))
                elif kind == "advance":
                    engine.advance(model.lead_id, to=op[2], at=now)
                    explicit[model.lead_id] = ("request", op[2])
                else:
                    engine.advance(model.lead_id, to=op[2], force=True, reason="property test", at=now)
                    explicit[model.lead_id] = ("force", op[2])
            except SaleflowError:
                pass  # refused: nothing may have changed, which the checks below see
        for model in models:
            check_new_entries(engine, model, explicit.get(model.lead_id), now)
        # the clock only moves forward, so the next operation happens later
        now += timedelta(minutes=1)
    assert engine.verify() == []


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """One engine (and database) for a whole hypothesis run: each example
    makes fresh leads, and the engine's compiled flows stay cached."""
    with Engine.open(db=db_url, now=T0, actor="tester") as opened:
        yield opened


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operation, min_size=1, max_size=14))
def test_random_operations_keep_gates_and_audit_true(engine: Engine, ops: list[tuple[Any, ...]]) -> None:
    run(engine, ops)
