"""`audit verify` against tampering done with raw SQL, on SQLite and PostgreSQL.

A clean history verifies; an edited, deleted or inserted entry, or a lead row
changed behind the engine's back, is caught and the lead is named, through
the API (`Engine.verify`) and the CLI (exit 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from saleflow import Engine
from saleflow.cli import main
from saleflow.records import AuditEntry
from saleflow.store.schema import audit

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = ROOT / "flows" / "the_model.flow"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
BANT = {"budget": 20000, "authority": "decision_maker", "need": True, "timeframe_days": 30}


def raw(engine: Engine, sql: str, **params: Any) -> None:
    """Change the database behind the engine's back."""
    with engine.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text(sql), params)


def insert_entry(engine: Engine, entry: AuditEntry) -> None:
    """Write an audit row straight into the table, as a forger would."""
    row = {f.name: getattr(entry, f.name) for f in fields(AuditEntry) if f.init}
    row["values"] = dict(entry.values)
    with engine.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(audit.insert().values(**row))


def forged_after(last: AuditEntry, to: str, seq: int | None = None, kind: str = "advance") -> AuditEntry:
    """A well-formed entry that follows `last`: right seq, chained, hashed."""
    draft = replace(
        last,
        seq=last.seq + 1 if seq is None else seq,
        from_stage=last.to_stage,
        to_stage=to,
        kind=kind,
        actor="mallory",
        reason=None,
        at=last.at + timedelta(hours=1),
        values={},
        prev_hash=last.hash,
        hash="",
    )
    return replace(draft, hash=draft.compute_hash())


def build(db_url: str, lead_ids: list[str]) -> Engine:
    """Leads with a few moves each: create, lead, sql (skip), opportunity."""
    engine = Engine.open(THE_MODEL, db=db_url, now=T0, actor="tester")
    for lead_id in lead_ids:
        engine.add_lead(lead_id, email=f"{lead_id}@x.example", owner="ann", **BANT)
        engine.record(lead_id, "inbound_question")
        engine.record(lead_id, "meeting_held")
        assert [e.to_stage for e in engine.history(lead_id)] == ["awareness", "lead", "sql", "opportunity"]
    return engine


def verify_cli(db_url: str) -> Any:
    return CliRunner().invoke(main, ["--db", db_url, "audit", "verify"], catch_exceptions=False)


def test_clean_history_verifies(db_url: str) -> None:
    engine = build(db_url, ["a", "b"])
    engine.set("a", lost_reason="timing")
    engine.advance("a", to="nurturing")  # a recycle: cycle 2
    engine.advance("b", to="disqualified", force=True, reason="duplicate")
    Engine(engine.store, now=T0 + timedelta(days=200)).tick()
    assert engine.verify() == []
    result = verify_cli(db_url)
    assert result.exit_code == 0, result.output
    assert "agrees" in result.stdout
    assert result.stderr == ""


# Each tampering, done to its own lead; the fragment its problem must contain.
Tamper = Callable[[Engine, str], None]


def _edit_reason(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE audit SET reason = 'nothing to see' WHERE lead_id = :id AND seq = 2", id=lead_id)


def _edit_actor(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE audit SET actor = 'somebody else' WHERE lead_id = :id AND seq = 3", id=lead_id)


def _delete_middle(engine: Engine, lead_id: str) -> None:
    raw(engine, "DELETE FROM audit WHERE lead_id = :id AND seq = 2", id=lead_id)


def _delete_last(engine: Engine, lead_id: str) -> None:
    raw(engine, "DELETE FROM audit WHERE lead_id = :id AND seq = 4", id=lead_id)


def _delete_all(engine: Engine, lead_id: str) -> None:
    raw(engine, "DELETE FROM audit WHERE lead_id = :id", id=lead_id)


def _insert_at_end(engine: Engine, lead_id: str) -> None:
    # well formed, hashed and chained: only the replay can tell
    insert_entry(engine, forged_after(engine.history(lead_id)[-1], "proposal"))


def _insert_in_middle(engine: Engine, lead_id: str) -> None:
    history = engine.history(lead_id)
    # make room for seq 3 (two steps: a unique key must hold after each statement)
    raw(engine, "UPDATE audit SET seq = seq + 100 WHERE lead_id = :id AND seq >= 3", id=lead_id)
    raw(engine, "UPDATE audit SET seq = seq - 99 WHERE lead_id = :id AND seq >= 100", id=lead_id)
    insert_entry(engine, forged_after(history[1], "nurturing", seq=3))


def _insert_impossible_move(engine: Engine, lead_id: str) -> None:
    # opportunity -> retained is no move of the flow, even with a perfect chain
    last = engine.history(lead_id)[-1]
    insert_entry(engine, forged_after(last, "retained"))
    raw(engine, "UPDATE leads SET stage = 'retained' WHERE id = :id", id=lead_id)


def _move_lead_row(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE leads SET stage = 'closed_won' WHERE id = :id", id=lead_id)


def _move_lead_row_and_entry(engine: Engine, lead_id: str) -> None:
    # cover the tracks: the last entry now agrees with the row, but its hash does not
    raw(engine, "UPDATE leads SET stage = 'negotiation' WHERE id = :id", id=lead_id)
    raw(engine, "UPDATE audit SET to_stage = 'negotiation' WHERE lead_id = :id AND seq = 4", id=lead_id)


def _change_cycle(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE leads SET cycle = 3 WHERE id = :id", id=lead_id)


def _change_version(engine: Engine, lead_id: str) -> None:
    # the row now claims a version its history never ran on
    raw(engine, "UPDATE leads SET version = 7 WHERE id = :id", id=lead_id)


def _change_flow(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE leads SET flow = 'another_flow' WHERE id = :id", id=lead_id)


TAMPERING: dict[str, tuple[Tamper, str]] = {
    "edited-reason": (_edit_reason, "does not match its hash (edited)"),
    "edited-actor": (_edit_actor, "does not match its hash (edited)"),
    "deleted-middle": (_delete_middle, "sequence number should be 2"),
    "deleted-last": (_delete_last, 'history ends in "sql" but the lead is stored in "opportunity"'),
    "deleted-all": (_delete_all, "has no audit entries"),
    "inserted-end": (_insert_at_end, 'history ends in "proposal" but the lead is stored in "opportunity"'),
    "inserted-middle": (_insert_in_middle, "does not chain to the entry before it"),
    "impossible-move": (_insert_impossible_move, 'no advance move from "opportunity" to "retained"'),
    "row-moved": (_move_lead_row, 'the lead is stored in "closed_won"'),
    "row-and-entry": (_move_lead_row_and_entry, "does not match its hash (edited)"),
    "row-cycle": (_change_cycle, "stored in cycle 3"),
    "row-version": (_change_version, 'stored in flow "the_model" version 7'),
    "row-flow": (_change_flow, 'stored in flow "another_flow" version 1'),
}


def test_every_tampering_is_caught_and_the_lead_named(db_url: str) -> None:
    names = sorted(TAMPERING)
    engine = build(db_url, [*names, "untouched"])
    for name in names:
        TAMPERING[name][0](engine, name)

    problems = engine.verify()
    by_lead: dict[str, list[str]] = {}
    for problem in problems:
        by_lead.setdefault(problem.lead_id, []).append(problem.message)
    assert set(by_lead) == set(names), by_lead  # every tampered lead, and only those
    for name in names:
        fragment = TAMPERING[name][1]
        assert any(fragment in message for message in by_lead[name]), (name, by_lead[name])

    result = verify_cli(db_url)
    assert result.exit_code == 1
    for name in names:
        assert f'lead "{name}":' in result.stdout
    assert "untouched" not in result.stdout
    assert result.stderr.strip() == f"audit verify: {len(names)} leads with problems"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["edited-reason", "deleted-middle", "inserted-end", "row-moved"])
def test_one_tampered_lead_fails_the_cli(sqlite_url: str, name: str) -> None:
    engine = build(sqlite_url, ["x", "y"])
    assert verify_cli(sqlite_url).exit_code == 0
    TAMPERING[name][0](engine, "y")
    result = verify_cli(sqlite_url)
    assert result.exit_code == 1
    assert result.stdout.startswith('lead "y": ')
    assert 'lead "x"' not in result.stdout
    assert TAMPERING[name][1] in result.stdout
