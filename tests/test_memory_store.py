"""The scratch `MemoryStore` (saleflow/store/memory.py) holds what the SQL
store holds after the same work.

A recorded demo history (tests/simhistory.py: creates, sets, events,
requested, refused and forced moves, recycles, a capacity queue, SLA
breaches) is replayed by `saleflow.views.simulate.Replay`, the engine's own
`Work`, once into a fresh SQL store on each backend and once into a
`MemoryStore`; then every lead, event, journal entry, breach and waiting
line, and every read a report makes, must be the same."""

from __future__ import annotations

from dataclasses import astuple
from datetime import datetime, timedelta
from typing import Any

import pytest
from simhistory import DEMO_FLOW, record_history

from saleflow import Engine
from saleflow.compile import compile_flow
from saleflow.errors import Conflict
from saleflow.journal import JournalEntry
from saleflow.language.parse import load_flow
from saleflow.records import EventRecord, Lead, ReportSource, SlaBreach
from saleflow.store import open_store
from saleflow.store.memory import MemoryStore, micros
from saleflow.views.simulate import ACTOR, Replay, _recorded


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, datetime]:
    url = f"sqlite:///{tmp_path_factory.mktemp('mem') / 'recorded.db'}"
    return url, record_history(url, days=30, per_day=3)


def _entry(e: JournalEntry) -> tuple[object, ...]:
    """An entry as both stores agree on it: not its position or seal."""
    return (
        e.lead_seq,
        e.entry,
        e.kind,
        e.from_stage,
        e.stage,
        e.cycle,
        e.at,
        e.recorded_at,
        e.actor,
        e.reason,
        e.flow,
        e.version,
        dict(e.data),
    )


def _counts(source: Any, flow: str, group: str | None) -> list[tuple[str, str, int]]:
    return sorted((str(r.group), r.stage, r.leads) for r in source.stage_counts(flow, group=group))


def test_memory_store_holds_what_the_sql_store_holds(history: tuple[str, datetime], db_url: str) -> None:
    recorded_url, end = history
    flow = load_flow(DEMO_FLOW)
    memory = MemoryStore(journal=True)
    cf = compile_flow(flow, flow.version)
    with Engine.open(db=recorded_url, now=end) as recorded:
        Replay(memory, lambda name, version: cf, cf, end).run(_recorded(recorded, flow.name, end))
        sql = Engine(open_store(db_url), actor=ACTOR, now=end)
        try:
            assert isinstance(sql.store, ReportSource)
            sql.deploy(flow)
            reference = sql.compiled(flow.name, flow.version)
            Replay(sql.store, sql.compiled, reference, end).run(_recorded(recorded, flow.name, end))
            store: Any = sql.store
            ids = [lead.id for chunk in store.iter_leads() for lead in chunk]
            assert ids == memory.lead_ids() and len(ids) > 50
            for lead_id in ids:
                theirs, ours = store.get_lead(lead_id), memory.get_lead(lead_id)
                assert theirs is not None and ours is not None
                assert astuple(ours) == astuple(theirs), lead_id
                assert memory.events_of(lead_id) == store.events_of(lead_id)
                assert memory.breaches_of(lead_id) == store.breaches_of(lead_id)
                assert [_entry(e) for e in memory.journal(lead_id)] == [
                    _entry(e) for e in store.journal(lead_id)
                ]
            assert memory.waiting_of(flow.name) == store.waiting_of(flow.name)
            assert memory.waiting_of(flow.name), "the history has a queue"
            with store.transaction() as tx:
                mine = memory._tx
                for stage in ("opportunity", "proposal"):
                    assert mine.count_in_stage(flow.name, stage) == tx.count_in_stage(flow.name, stage)
                    for limit in (1, 2, 50):
                        assert mine.waiting(flow.name, stage, limit) == tx.waiting(flow.name, stage, limit)
                        assert [
                            (astuple(lead), since)
                            for lead, since in mine.waiting_line(flow.name, stage, limit)
                        ] == [
                            (astuple(lead), since) for lead, since in tx.waiting_line(flow.name, stage, limit)
                        ]
            # what a report reads
            for group in (None, "employees", "owner"):
                assert list(memory.iter_histories(flow.name, group=group, touches=True, chunk=7)) == list(
                    store.iter_histories(flow.name, group=group, touches=True, chunk=7)
                )

                assert _counts(memory, flow.name, group) == _counts(store, flow.name, group)
            assert memory.lead_versions(flow.name) == store.lead_versions(flow.name)
            middle = end - timedelta(days=12)
            assert memory.sla_breach_counts(flow.name) == store.sla_breach_counts(flow.name)
            assert memory.sla_breach_counts(flow.name, since=middle, until=end) == store.sla_breach_counts(
                flow.name, since=middle, until=end
            )
            assert memory.sla_breach_counts(flow.name), "the history has breaches"
            cutoffs = {"contacting": end - timedelta(days=2), "lead": end - timedelta(days=5)}
            assert memory.overdue_counts(flow.name, 1, cutoffs) == store.overdue_counts(flow.name, 1, cutoffs)
            assert [
                [astuple(x) for x in chunk] for chunk in memory.iter_overdue(flow.name, 1, cutoffs, 3)
            ] == [[astuple(x) for x in chunk] for chunk in store.iter_overdue(flow.name, 1, cutoffs, 3)]
        finally:
            sql.close()


def _lead(lead_id: str, at: datetime, stage: str = "a") -> Lead:
    return Lead(lead_id, "f", 1, stage, {}, 1, at, at, at)


def test_the_transaction_refuses_what_the_sql_one_refuses() -> None:
    at = datetime.fromisoformat("2026-03-02T09:00:00+00:00")
    store = MemoryStore()
    with store.transaction() as tx:
        tx.insert_lead(_lead("x", at))
        with pytest.raises(Conflict):
            tx.insert_lead(_lead("x", at))  # created twice
        lead = tx.lock_lead("x")
        assert lead is not None
        lead.stage = "b"
        saved = tx.update_lead(lead)
        assert saved.revision == 1 and tx.count_in_stage("f", "b") == 1 and tx.count_in_stage("f", "a") == 0
        with pytest.raises(Conflict):
            tx.update_lead(lead)  # revision 0 is stale now
        # a lead is counted in the stage it was saved in, not one a change left unsaved
        moving = tx.lock_lead("x")
        assert moving is not None
        moving.stage = "c"
        assert tx.count_in_stage("f", "c") == 0 and tx.count_in_stage("f", "b") == 1
        assert tx.update_lead(moving).revision == 2
        assert tx.count_in_stage("f", "c") == 1 and tx.count_in_stage("f", "b") == 0
        with pytest.raises(Conflict):
            tx.insert_event("nobody", EventRecord("e", at))
        # events come back in time order, recording order for equal times, by cycle
        later, earlier = EventRecord("e", at + timedelta(hours=2)), EventRecord("e", at)
        twin = EventRecord("f", at)
        for event in (later, earlier, twin, EventRecord("e", at, cycle=2)):
            tx.insert_event("x", event)
        assert tx.events("x", 1) == [earlier, twin, later]
        assert [e.at for e in store.events_of("x")] == [at, at, at, at + timedelta(hours=2)]
        breach = SlaBreach("x", "f", "b", 1, at, at + timedelta(days=1), at + timedelta(days=2))
        assert tx.record_breach(breach) is True
        assert tx.record_breach(breach) is False  # once per lead, stage, cycle and entry
        hour = timedelta(hours=1)
        for event in (EventRecord("v", at + hour, "web"), EventRecord("v", at, "phone")):
            tx.insert_event("x", event)
        tx.insert_event("x", EventRecord("v", at, "mail"))
    # a report reads the events with a channel in time order (recording
    # order for equal times), however they were recorded
    [[history]] = list(store.iter_histories("f", touches=True))
    assert history.touches == [
        ("x", micros(at), "phone"),
        ("x", micros(at), "mail"),
        ("x", micros(at + hour), "web"),
    ]
    # an error inside a transaction abandons the store: there is no rollback
    with pytest.raises(ZeroDivisionError), store.transaction():
        _ = 1 / 0
    with pytest.raises(RuntimeError, match="abandoned"), store.transaction():
        pass
    with pytest.raises(RuntimeError, match="keeps no journal"):
        store.journal("x")


def test_micros_is_exact() -> None:
    at = datetime.fromisoformat("2026-03-02T09:00:00.000001+00:00")
    assert micros(at) == 1772442000000001
    assert micros(datetime.fromisoformat("1900-01-01T00:00:00+00:00")) == -2208988800000000


def test_report_reads_times_to_the_microsecond(db_url: str) -> None:
    """SQLite rounded a time's seconds to the nearest (.5 and up: one too
    many) when the report read it in microseconds; the memory store's exact
    figure is what both backends read now."""
    flow = load_flow(DEMO_FLOW)
    times = [
        datetime.fromisoformat(f"2026-03-02T09:00:0{i}.{f}+00:00")
        for i, f in enumerate(("999758", "5", "499999", "000001"))
    ]
    with Engine.open(flow, db=db_url, now=times[-1] + timedelta(days=1)) as engine:
        for i, at in enumerate(times):
            engine.add_lead(f"t{i}", at=at)
        store = engine.store
        assert isinstance(store, ReportSource)
        read = {h.lead_id: h.entries[0][5] for chunk in store.iter_histories(flow.name) for h in chunk}
    assert read == {f"t{i}": micros(at) for i, at in enumerate(times)}


def test_claim_due_matches_the_sql_claim(sqlite_url: str) -> None:
    """The memory store's claim picks what the SQL store's claim picks:
    due at `now` (never-due and later leads left), of the flow asked for,
    earliest due first then by id, at most `limit`."""
    at = datetime.fromisoformat("2026-03-02T09:00:00+00:00")
    dues = {"b": at, "a": at, "c": at - timedelta(days=1), "late": at + timedelta(seconds=1), "never": None}
    memory = MemoryStore()
    sql = open_store(sqlite_url)
    try:
        for store in (memory, sql):
            with store.transaction() as tx:
                for lead_id, due in dues.items():
                    lead = _lead(lead_id, at)
                    lead.due_at = due
                    tx.insert_lead(lead)
                other = _lead("z-other", at)
                other.flow, other.due_at = "g", at
                tx.insert_lead(other)
        for flow, limit in ((None, 10), ("f", 10), ("f", 2), ("g", 10)):
            with memory.transaction() as mtx, sql.transaction() as stx:
                claimed = [lead.id for lead in mtx.claim_due(at, flow, limit)]
                assert claimed == [lead.id for lead in stx.claim_due(at, flow, limit)]
        with memory.transaction() as tx:
            assert [lead.id for lead in tx.claim_due(at, "f", 10)] == ["c", "a", "b"]
    finally:
        sql.close()
