"""Running at scale (SPEC §8, issue 12 items 4 and 5): capacity is fair when
room frees (waiting leads ranked by their score at that moment), listings
that stream (``leads --json``, ``--jsonl``), the indexes keyset pages by
flow and stage need, and an import whose memory does not grow with its ids.
No timed assertions here: speed and peak RSS are measured in bench/scale.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from saleflow import Engine
from saleflow.parse import parse_flow

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

# One seat in "slot"; a demo counts 30 points for 7 days, a big company 20 for good.
FAIR = """\
flow fair
field ready bool default false
field big bool default false
event demo
score {
  +30 each demo in last 7 days
  +20 if big
}
team t "T" {
  stage start initial
  stage slot when ready capacity 1
  stage done manual
}
stage out final
"""


def fair(db_url: str, now: datetime = T0) -> Engine:
    return Engine.open(parse_flow(FAIR, "fair.flow"), db=db_url, now=now, actor="tester")


def at(engine: Engine, days: float) -> Engine:
    """The same database, the clock `days` after T0."""
    return Engine(engine.store, now=T0 + timedelta(days=days), actor="tester")


# ---------------------------------------------------------------------------
# Capacity is fair when room frees
# ---------------------------------------------------------------------------


def test_room_goes_to_the_best_score_now_not_when_queued(db_url: str) -> None:
    engine = fair(db_url)
    assert engine.add_lead("seated", ready=True).stage == "slot"
    # queued with 30 (a fresh demo): its window closes after 7 days
    engine.add_lead("hot")
    engine.record("hot", "demo")
    assert engine.set("hot", ready=True).stage == "start"
    # queued later with a steady 20
    assert engine.add_lead("steady", big=True, ready=True).stage == "start"
    assert engine.lead("hot").score == 30
    later = at(engine, 10)
    assert later.lead("hot").score == 0
    assert later.lead("steady").score == 20
    later.advance("seated", to="out")  # room frees: 0 must not enter ahead of 20
    assert later.lead("steady").stage == "slot"
    assert later.lead("hot").stage == "start"
    entry = later.history("steady")[-1]
    assert (entry.from_stage, entry.stage, entry.reason) == ("start", "slot", "room freed")
    assert later.verify() == []


def test_equal_scores_now_enter_in_the_order_they_started_waiting(db_url: str) -> None:
    engine = fair(db_url)
    engine.add_lead("seated", ready=True)
    assert engine.add_lead("first", ready=True).stage == "start"  # waits first, 0 points
    second = at(engine, 1)
    second.add_lead("second")
    second.record("second", "demo")  # 30 points, for a week
    assert second.set("second", ready=True).stage == "start"
    later = at(engine, 20)  # both at 0 now
    later.advance("seated", to="out")
    assert later.lead("first").stage == "slot"
    assert later.lead("second").stage == "start"


# ---------------------------------------------------------------------------
# Keyset pages by flow and by stage come in order from an index
# ---------------------------------------------------------------------------


def _plan(store: Any, stmt: Any, params: dict[str, Any]) -> str:
    """The query plan of one page (EXPLAIN QUERY PLAN on SQLite; EXPLAIN on
    PostgreSQL with sorting disabled, so a plan that still sorts has no
    index that gives the order)."""
    with store.read() as conn:
        sql = (
            stmt.params(**params)
            .compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True, "render_postcompile": True})
            .string
        )
        if store.dialect == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
        else:
            conn.exec_driver_sql("SET LOCAL enable_sort = off")
            rows = conn.exec_driver_sql("EXPLAIN " + sql)
        return "\n".join(" ".join(map(str, row)) for row in rows)


@pytest.mark.parametrize("first", [True, False], ids=["first-page", "next-page"])
@pytest.mark.parametrize("stages", [None, ["slot"]], ids=["by-flow", "by-flow-and-stage"])
def test_pages_by_flow_and_stage_are_read_in_index_order(db_url: str, first: bool, stages: Any) -> None:
    engine = fair(db_url)
    for number in range(30):
        engine.add_lead(f"p-{number:03d}", ready=number % 2 == 0)
    store = engine.store
    params: dict[str, Any] = {"chunk": 10, "flow": "fair"}
    if not first:
        params["after"] = "p-010"
    if stages is not None:
        params["stages"] = stages
    stmt = store._sql.lead_page(first, True, stages is not None)
    found = _plan(store, stmt, params)
    index = "ix_leads_flow_id" if stages is None else "ix_leads_flow_stage_id"
    assert index in found, found
    if store.dialect == "sqlite":
        assert "TEMP B-TREE" not in found, found
    else:
        assert "Sort" not in found, found
    # and the pages read are the leads, in id order, once each
    assert [lead.id for lead in engine.leads(flow="fair")] == [f"p-{n:03d}" for n in range(30)]
