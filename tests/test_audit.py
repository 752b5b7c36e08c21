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
from saleflow.cli.app import main
from saleflow.journal import JournalEntry
from saleflow.store.schema import journal

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = ROOT / "flows" / "the_model.flow"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
BANT = {"budget": 20000, "authority": "decision_maker", "need": True, "timeframe_days": 30}


def raw(engine: Engine, sql: str, **params: Any) -> None:
    """Change the database behind the engine's back.  ``CAST(:x AS json)``
    is written ``:x`` on SQLite, where JSON is text."""
    if engine.store.engine.dialect.name == "sqlite":  # type: ignore[attr-defined]
        sql = sql.replace(" AS jsonb)", ")").replace(" AS json)", ")").replace("CAST(", "(")
    with engine.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text(sql), params)


def stored_time(engine: Engine, at: datetime) -> Any:
    """`at` as raw SQL binds it to a time column: saleflow's fixed-width
    ISO text on SQLite, a timestamp on PostgreSQL."""
    if engine.store.engine.dialect.name == "sqlite":  # type: ignore[attr-defined]
        return at.isoformat(timespec="microseconds")
    return at


def insert_entry(engine: Engine, entry: JournalEntry) -> None:
    """Write a journal row straight into the table, as a forger would."""
    row = {f.name: getattr(entry, f.name) for f in fields(JournalEntry) if f.name != "data_text"}
    row["data"] = dict(entry.data)
    with engine.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(journal.insert().values(**row))


def forged_after(
    last: JournalEntry, to: str, lead_seq: int | None = None, kind: str = "advance", key: bytes | None = None
) -> JournalEntry:
    """A well-formed move that follows `last`: right numbers, chained, sealed
    (with `key`, as someone holding it would)."""
    draft = replace(
        last,
        entry="moved",
        kind=kind,
        from_stage=last.stage,
        stage=to,
        actor="mallory",
        reason=None,
        at=last.at + timedelta(hours=1),
        data={"values": {}},
        data_text=None,
    )
    draft.seal(last.seq + 1000, last.lead_seq + 1 if lead_seq is None else lead_seq, last.hash, key)
    return draft


def build(db_url: str, lead_ids: list[str]) -> Engine:
    """Leads with seven journal entries each: 1 created (awareness), 2 moved
    (lead), 3 event (inbound_question), 4 moved (skip to sql), 5 event
    (meeting_held), 6 moved (opportunity), 7 set (budget 20000 → 30000)."""
    engine = Engine.open(THE_MODEL, db=db_url, now=T0, actor="tester")
    for lead_id in lead_ids:
        engine.add_lead(lead_id, email=f"{lead_id}@x.example", owner="ann", **BANT)
        engine.record(lead_id, "inbound_question")
        engine.record(lead_id, "meeting_held")
        engine.set(lead_id, budget=30000)
        assert [e.to_stage for e in engine.history(lead_id)] == ["awareness", "lead", "sql", "opportunity"]
        entries = engine.history(lead_id, moves_only=False)
        assert [e.entry for e in entries] == ["created", "moved", "event", "moved", "event", "moved", "set"]
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
    raw(
        engine,
        "UPDATE journal SET reason = 'nothing to see' WHERE lead_id = :id AND lead_seq = 2",
        id=lead_id,
    )


def _edit_actor(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE journal SET actor = 'somebody else' WHERE lead_id = :id AND lead_seq = 3", id=lead_id)


def _edit_field_change(engine: Engine, lead_id: str) -> None:
    # the field's history now says 99; the row still says 30000, and the hash neither
    data = '{"fields":{"budget":[20000,99]}}'
    raw(
        engine,
        "UPDATE journal SET data = CAST(:d AS json) WHERE lead_id = :id AND lead_seq = 7",
        id=lead_id,
        d=data,
    )


def _edit_event(engine: Engine, lead_id: str) -> None:
    data = '{"channel":"field","content":null,"count":5,"event":"meeting_held"}'
    raw(
        engine,
        "UPDATE journal SET data = CAST(:d AS json) WHERE lead_id = :id AND lead_seq = 5",
        id=lead_id,
        d=data,
    )


def _delete_middle(engine: Engine, lead_id: str) -> None:
    raw(engine, "DELETE FROM journal WHERE lead_id = :id AND lead_seq = 2", id=lead_id)


def _delete_event(engine: Engine, lead_id: str) -> None:
    raw(engine, "DELETE FROM journal WHERE lead_id = :id AND lead_seq = 5", id=lead_id)


def _delete_last(engine: Engine, lead_id: str) -> None:
    # the last field change: the chain that is left is perfect, the fold is not
    raw(engine, "DELETE FROM journal WHERE lead_id = :id AND lead_seq = 7", id=lead_id)


def _delete_all(engine: Engine, lead_id: str) -> None:
    raw(engine, "DELETE FROM journal WHERE lead_id = :id", id=lead_id)


def _insert_at_end(engine: Engine, lead_id: str) -> None:
    # well formed, sealed and chained: only the replay can tell
    insert_entry(engine, forged_after(engine.history(lead_id, moves_only=False)[-1], "proposal"))


def _insert_in_middle(engine: Engine, lead_id: str) -> None:
    entries = engine.history(lead_id, moves_only=False)
    # make room for lead_seq 3 (two steps: a unique key must hold after each statement)
    raw(
        engine,
        "UPDATE journal SET lead_seq = lead_seq + 100 WHERE lead_id = :id AND lead_seq >= 3",
        id=lead_id,
    )
    raw(
        engine,
        "UPDATE journal SET lead_seq = lead_seq - 99 WHERE lead_id = :id AND lead_seq >= 100",
        id=lead_id,
    )
    insert_entry(engine, forged_after(entries[1], "nurturing", lead_seq=3))


def _reorder(engine: Engine, lead_id: str) -> None:
    # the event and the move it caused change places
    raw(engine, "UPDATE journal SET lead_seq = 103 WHERE lead_id = :id AND lead_seq = 3", id=lead_id)
    raw(engine, "UPDATE journal SET lead_seq = 3 WHERE lead_id = :id AND lead_seq = 4", id=lead_id)
    raw(engine, "UPDATE journal SET lead_seq = 4 WHERE lead_id = :id AND lead_seq = 103", id=lead_id)


def _renumber(engine: Engine, lead_id: str) -> None:
    # a new global position for an entry: the feed's order is sealed too
    raw(engine, "UPDATE journal SET seq = seq + 100000 WHERE lead_id = :id AND lead_seq = 6", id=lead_id)


def _insert_impossible_move(engine: Engine, lead_id: str) -> None:
    # opportunity -> retained is no move of the flow, even with a perfect chain
    last = engine.history(lead_id, moves_only=False)[-1]
    insert_entry(engine, forged_after(last, "retained"))
    raw(engine, "UPDATE leads SET stage = 'retained' WHERE id = :id", id=lead_id)


def _move_lead_row(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE leads SET stage = 'closed_won' WHERE id = :id", id=lead_id)


def _move_lead_row_and_entry(engine: Engine, lead_id: str) -> None:
    # cover the tracks: the last move now agrees with the row, but its hash does not
    raw(engine, "UPDATE leads SET stage = 'negotiation' WHERE id = :id", id=lead_id)
    raw(engine, "UPDATE journal SET stage = 'negotiation' WHERE lead_id = :id AND lead_seq >= 6", id=lead_id)


def _change_cycle(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE leads SET cycle = 3 WHERE id = :id", id=lead_id)


def _change_version(engine: Engine, lead_id: str) -> None:
    # the row now claims a version its history never ran on
    raw(engine, "UPDATE leads SET version = 7 WHERE id = :id", id=lead_id)


def _change_flow(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE leads SET flow = 'another_flow' WHERE id = :id", id=lead_id)


def _change_fields(engine: Engine, lead_id: str) -> None:
    fields_text = (
        '{"authority":"decision_maker","budget":1000000,"email":"x@x.example","need":true,'
        '"owner":"ann","timeframe_days":30}'
    )
    raw(engine, "UPDATE leads SET fields = CAST(:f AS jsonb) WHERE id = :id", id=lead_id, f=fields_text)


def _change_score(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE leads SET score = 999 WHERE id = :id", id=lead_id)


def _edit_event_row(engine: Engine, lead_id: str) -> None:
    raw(engine, "UPDATE events SET count = 9 WHERE lead_id = :id AND name = 'meeting_held'", id=lead_id)


def _insert_event_row(engine: Engine, lead_id: str) -> None:
    raw(
        engine,
        "INSERT INTO events (lead_id, name, at, channel, content, count, cycle) "
        "VALUES (:id, 'web_visit', :at, 'web', NULL, 3, 1)",
        id=lead_id,
        at=stored_time(engine, T0),
    )


def _insert_breach_row(engine: Engine, lead_id: str) -> None:
    at = stored_time(engine, T0)
    raw(
        engine,
        "INSERT INTO sla_breaches (lead_id, flow, stage, cycle, entered_at, due_at, detected_at) "
        "VALUES (:id, 'the_model', 'opportunity', 1, :at, :at, :at)",
        id=lead_id,
        at=at,
    )


def _back_date_entry(engine: Engine, lead_id: str) -> None:
    # an old entry into the stage makes days_in_stage, SLAs and recycles fire early
    at = T0 - timedelta(days=365)
    raw(
        engine,
        "UPDATE leads SET entered_at = :at WHERE id = :id",
        id=lead_id,
        at=stored_time(engine, at),
    )


def _back_date_creation(engine: Engine, lead_id: str) -> None:
    at = T0 - timedelta(days=30)
    raw(
        engine,
        "UPDATE leads SET created_at = :at WHERE id = :id",
        id=lead_id,
        at=stored_time(engine, at),
    )


def _move_event_row(engine: Engine, lead_id: str) -> None:
    at = T0 - timedelta(days=200)
    raw(
        engine,
        "UPDATE events SET at = :at WHERE lead_id = :id AND name = 'meeting_held'",
        id=lead_id,
        at=stored_time(engine, at),
    )


def _edit_event_content(engine: Engine, lead_id: str) -> None:
    raw(
        engine, "UPDATE events SET content = 'evil' WHERE lead_id = :id AND name = 'meeting_held'", id=lead_id
    )


TAMPERING: dict[str, tuple[Tamper, str]] = {
    "edited-reason": (_edit_reason, "does not match its hash"),
    "edited-actor": (_edit_actor, "does not match its hash"),
    "edited-field-change": (_edit_field_change, "does not match its hash"),
    "edited-event": (_edit_event, "does not match its hash"),
    "deleted-middle": (_delete_middle, "its number should be 2"),
    "deleted-event": (_delete_event, "its number should be 5"),
    "deleted-last": (_delete_last, "stored fields differ from the journal: budget"),
    "deleted-all": (_delete_all, "has no journal entries"),
    "inserted-end": (_insert_at_end, 'journal ends in "proposal" but the lead is stored in "opportunity"'),
    "inserted-middle": (_insert_in_middle, "does not chain to the entry before it"),
    "reordered": (_reorder, "does not match its hash"),
    "renumbered": (_renumber, "does not match its hash"),
    "impossible-move": (_insert_impossible_move, 'no advance move from "opportunity" to "retained"'),
    "row-moved": (_move_lead_row, 'the lead is stored in "closed_won"'),
    "row-and-entry": (_move_lead_row_and_entry, "does not match its hash"),
    "row-cycle": (_change_cycle, "stored in cycle 3"),
    "row-version": (_change_version, 'stored in flow "the_model" version 7'),
    "row-flow": (_change_flow, 'stored in flow "another_flow" version 1'),
    "row-fields": (_change_fields, "stored fields differ from the journal: budget, email"),
    "row-score": (_change_score, "stored score 999"),
    "events-row-edited": (_edit_event_row, "stored events differ from the journal"),
    "events-row-inserted": (_insert_event_row, "stored events differ from the journal"),
    "breach-row-inserted": (_insert_breach_row, "stored SLA breaches differ from the journal"),
    "row-entered-at": (_back_date_entry, 'journal says it entered "opportunity" at'),
    "row-created-at": (_back_date_creation, "journal says it was created at"),
    "events-row-moved": (_move_event_row, "stored events differ from the journal"),
    "events-row-content": (_edit_event_content, "stored events differ from the journal"),
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


def test_an_edited_flow_source_is_caught(db_url: str) -> None:
    """A deployed flow's stored text is not chained, but it must still mean
    what was deployed: an edited gate (the engine would run it) is named."""
    engine = build(db_url, ["a"])
    raw(
        engine,
        "UPDATE flows SET source = replace(source, 'when score >= 60', 'when score >= -100') WHERE name = 'the_model'",
    )
    problems = Engine(engine.store).verify()
    assert [str(p) for p in problems] == [
        'flow "the_model" version 1: its stored source is not what was deployed (edited behind saleflow\'s back)'
    ]
    result = verify_cli(db_url)
    assert result.exit_code == 1
    assert "its stored source is not what was deployed" in result.stdout
    assert "Traceback" not in result.output
