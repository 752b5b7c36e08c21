"""SPEC §3 through the Python API, on real SQLite files and PostgreSQL.

Every test runs on both backends (`db_url`) with a fixed clock, using
`flows/the_model.flow` and a few small flows written for one rule each.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from saleflow import Engine
from saleflow.errors import BadInput, NotFound, Rejected, SaleflowError
from saleflow.language.parse import parse_flow
from saleflow.limits import MAX_DAYS, MAX_TIME, MIN_TIME
from saleflow.records import AuditEntry
from saleflow.views.report import Period, report_for

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = ROOT / "flows" / "the_model.flow"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

BANT = {"budget": 20000, "authority": "decision_maker", "need": True, "timeframe_days": 30}

# A capacity of 2 in "slot"; leaving it is an exit to "out".
CAPACITY = """\
flow cap
field ready bool default false
event ping
score {
  +1 each ping
}
team t "T" {
  stage start initial
  stage slot when ready capacity 2
  stage done manual
}
stage out final
"""

# Two skips and an advance all enabled at once: the furthest wins.
JUMPS = """\
flow jumps
field go bool default false
team t "T" {
  stage a initial
  stage b when go
  stage c when go
  stage d when go
  stage e manual
}
stage gone final
skip a -> c when go
skip a -> d when go
"""


def model(db_url: str, now: datetime = T0, **kwargs: Any) -> Engine:
    return Engine.open(THE_MODEL, db=db_url, now=now, actor="tester", **kwargs)


def small(db_url: str, source: str, now: datetime = T0) -> Engine:
    name = source.split()[1]
    return Engine.open(parse_flow(source, f"{name}.flow"), db=db_url, now=now, actor="tester")


def later(engine: Engine, days: float) -> Engine:
    """The same database, the clock `days` after T0."""
    return Engine(engine.store, now=T0 + timedelta(days=days), actor="tester")


def moves(engine: Engine, lead_id: str) -> list[tuple[str | None, str, str]]:
    return [(e.from_stage, e.to_stage, e.kind) for e in engine.history(lead_id)]


def raw(engine: Engine, sql: str, **params: Any) -> None:
    """Change the database behind the engine's back."""
    with engine.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text(sql), params)


def to_opportunity(engine: Engine, lead_id: str) -> None:
    """awareness → lead (email) → sql (skip: inbound question and bant) →
    opportunity (a meeting)."""
    engine.add_lead(lead_id, email=f"{lead_id}@example.com", owner="ann", **BANT)
    engine.record(lead_id, "inbound_question")
    engine.record(lead_id, "meeting_held")


# ---------------------------------------------------------------------------
# main line, skips, furthest move first, manual stages
# ---------------------------------------------------------------------------


def test_main_line_advance_step_by_step(db_url: str) -> None:
    engine = model(db_url)
    lead = engine.add_lead("acme-1", company="Acme")
    assert lead.stage == "awareness"
    assert engine.set("acme-1", email="cto@acme.example").stage == "lead"
    assert engine.record("acme-1", "web_visit").stage == "nurturing"
    assert engine.record("acme-1", "seminar_attended", count=5).stage == "mql"  # 5 + 75 - 20 >= 60
    view = engine.lead("acme-1")
    assert view.score >= 60
    assert engine.set("acme-1", owner="ann").stage == "contacting"
    assert engine.set("acme-1", need=True).stage == "contacting"
    assert engine.record("acme-1", "call_connected").stage == "sal"
    assert moves(engine, "acme-1") == [
        (None, "awareness", "create"),
        ("awareness", "lead", "advance"),
        ("lead", "nurturing", "advance"),
        ("nurturing", "mql", "advance"),
        ("mql", "contacting", "advance"),
        ("contacting", "sal", "advance"),
    ]
    assert engine.verify() == []


def test_skip_lead_to_sql_on_inbound_question_and_bant(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("in-1", email="vp@in.example", **BANT)
    assert engine.lead("in-1").stage == "lead"
    lead = engine.record("in-1", "inbound_question")
    assert lead.stage == "sql"
    history = engine.history("in-1")
    assert (history[-1].from_stage, history[-1].to_stage, history[-1].kind) == ("lead", "sql", "skip")
    # the entry holds the values both gates read: the skip's own and sql's `bant`
    assert history[-1].values["inbound_question"] == 1
    assert history[-1].values["budget"] == 20000
    assert history[-1].values["authority"] == "decision_maker"

    # without bant the inbound question alone does not skip
    engine.add_lead("in-2", email="intern@in.example", budget=100)
    assert engine.record("in-2", "inbound_question").stage == "lead"


def test_furthest_enabled_move_first_each_step_audited(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("far-1", **BANT)  # no email: stays in awareness
    engine.record("far-1", "web_visit")
    engine.record("far-1", "inbound_question")
    assert engine.lead("far-1").stage == "awareness"
    # lead -> nurturing (advance) and lead -> sql (skip) are both enabled: sql is further
    assert engine.set("far-1", email="x@far.example").stage == "sql"
    history = engine.history("far-1")
    assert [(e.from_stage, e.to_stage, e.kind) for e in history[-2:]] == [
        ("awareness", "lead", "advance"),
        ("lead", "sql", "skip"),
    ]
    assert history[-2].values == {"email": "x@far.example"}
    assert history[-1].values["inbound_question"] == 1
    assert all(e.at == T0 and e.actor == "tester" for e in history)


def test_furthest_of_several_skips_and_never_into_a_manual_stage(db_url: str) -> None:
    engine = small(db_url, JUMPS)
    assert engine.add_lead("j", go=True).stage == "d"
    assert moves(engine, "j") == [(None, "a", "create"), ("a", "d", "skip")]
    # e is manual: allowed on request, never taken automatically
    assert engine.tick() == 0
    verdicts = {v.to: v for v in engine.lead("j").next}
    assert verdicts["e"].allowed and not verdicts["e"].automatic
    assert engine.advance("j").stage == "e"
    assert moves(engine, "j")[-1] == ("d", "e", "advance")


def test_manual_stage_of_the_model(db_url: str) -> None:
    engine = model(db_url)
    to_opportunity(engine, "m-1")
    assert engine.lead("m-1").stage == "opportunity"
    assert engine.set("m-1", problem_known=True, solution_fit=True).stage == "opportunity"
    assert engine.advance_all() == 0
    assert engine.lead("m-1").stage == "opportunity"
    # explicit: `advance ID` and `advance ID --to proposal` both enter it
    engine.add_lead("m-2", email="m2@x.example", owner="ann", **BANT)
    engine.record("m-2", "inbound_question")
    engine.record("m-2", "meeting_held")
    engine.set("m-2", problem_known=True, solution_fit=True)
    assert engine.advance("m-1").stage == "proposal"
    assert engine.advance("m-2", to="proposal", reason="proposal sent").stage == "proposal"
    entry = engine.history("m-2")[-1]
    assert (entry.kind, entry.reason, entry.values) == (
        "advance",
        "proposal sent",
        {"problem_known": True, "solution_fit": True},
    )
    # the manual stage's own gate still applies to a request
    engine.add_lead("m-3", email="m3@x.example", owner="ann", **BANT)
    engine.record("m-3", "inbound_question")
    engine.record("m-3", "meeting_held")
    with pytest.raises(Rejected, match='cannot enter "proposal"') as caught:
        engine.advance("m-3")
    assert "problem_known" in str(caught.value)
    assert [b.code for b in caught.value.blockers] == ["gate", "gate"]
    assert engine.lead("m-3").stage == "opportunity"
    assert engine.verify() == []


def test_a_failing_request_names_the_lead_the_stage_and_the_values(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("r-1", email="a@b.example", budget=5000)
    with pytest.raises(Rejected) as caught:
        engine.advance("r-1", to="sql")
    message = str(caught.value)
    assert '"r-1"' in message
    assert "sql" in message
    # there is no move lead -> sql without the skip's condition
    assert caught.value.stage == "sql"
    before = len(engine.history("r-1"))
    with pytest.raises(Rejected, match="defines no such move"):
        engine.advance("r-1", to="closed_won")
    with pytest.raises(NotFound, match='no stage "sqll"; did you mean "sql"'):
        engine.advance("r-1", to="sqll")
    with pytest.raises(NotFound, match='lead "ghost" does not exist'):
        engine.advance("ghost")
    assert len(engine.history("r-1")) == before


# ---------------------------------------------------------------------------
# capacity and the waiting line
# ---------------------------------------------------------------------------


def test_capacity_refuses_queues_and_admits_by_descending_score(db_url: str) -> None:
    engine = small(db_url, CAPACITY)
    for lead_id in ("a", "b"):
        assert engine.add_lead(lead_id, ready=True).stage == "slot"
    # three more want in; their scores are 1, 3 and 2 pings
    for lead_id, pings in (("c", 1), ("d", 3), ("e", 2)):
        engine.add_lead(lead_id)
        engine.record(lead_id, "ping", count=pings)
        assert engine.set(lead_id, ready=True).stage == "start"

    verdict = next(v for v in engine.lead("c").next if v.to == "slot")
    assert not verdict.allowed
    assert [b.code for b in verdict.blockers] == ["capacity"]
    assert "capacity" in verdict.blockers[0].message
    with pytest.raises(Rejected, match="capacity") as caught:
        engine.advance("c")
    assert caught.value.blockers[0].code == "capacity"
    assert engine.lead("c").stage == "start"

    # a leaves (exit on request): the best waiting lead, d, takes its place
    assert engine.advance("a", to="out").stage == "out"
    assert {x.id for x in engine.leads(stage="slot")} == {"b", "d"}
    admitted = engine.history("d")[-1]
    assert (admitted.from_stage, admitted.to_stage, admitted.kind) == ("start", "slot", "advance")
    assert admitted.values == {"ready": True}
    # b leaves: e (score 2) before c (score 1)
    engine.advance("b", to="out")
    assert {x.id for x in engine.leads(stage="slot")} == {"d", "e"}
    assert engine.lead("c").stage == "start"
    engine.advance("d", to="out")
    assert {x.id for x in engine.leads(stage="slot")} == {"c", "e"}
    assert engine.verify() == []


def test_waiting_order_follows_the_latest_score(db_url: str) -> None:
    engine = small(db_url, CAPACITY)
    engine.add_lead("full", ready=True)
    engine.add_lead("full2", ready=True)
    engine.add_lead("early", ready=True)  # waits first, score 0
    engine.add_lead("late", ready=True)
    engine.record("late", "ping", count=5)  # overtakes while waiting
    engine.advance("full", to="out")
    assert engine.lead("late").stage == "slot"
    assert engine.lead("early").stage == "start"


def test_a_lead_that_no_longer_qualifies_is_not_admitted(db_url: str) -> None:
    engine = small(db_url, CAPACITY)
    engine.add_lead("a", ready=True)
    engine.add_lead("b", ready=True)
    engine.add_lead("w", ready=True)
    engine.record("w", "ping", count=9)
    engine.add_lead("v", ready=True)
    engine.set("w", ready=False)  # its gate is false now
    engine.advance("a", to="out")
    assert engine.lead("w").stage == "start"
    assert engine.lead("v").stage == "slot"


# ---------------------------------------------------------------------------
# exits and force
# ---------------------------------------------------------------------------


def test_exits_only_on_request_and_gated(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("x-1", email="x@x.example")
    assert engine.set("x-1", lost_reason="competitor").stage == "lead"  # no automatic exit
    assert engine.tick() == 0 and engine.advance_all() == 0
    assert engine.lead("x-1").stage == "lead"
    lost = next(v for v in engine.lead("x-1").next if v.to == "lost")
    assert (lost.kind, lost.allowed, lost.automatic) == ("exit", True, False)
    assert engine.advance("x-1", to="lost", reason="chose a competitor").stage == "lost"
    assert moves(engine, "x-1")[-1] == ("lead", "lost", "exit")

    engine.add_lead("x-2", email="y@x.example")
    with pytest.raises(Rejected, match="lost_reason"):
        engine.advance("x-2", to="lost")
    assert engine.advance("x-2", to="disqualified").stage == "disqualified"  # no gate
    # a final stage has no way out but force
    with pytest.raises(Rejected, match="final stage"):
        engine.advance("x-2")
    with pytest.raises(Rejected, match="defines no such move"):
        engine.advance("x-2", to="lost")
    assert engine.lead("x-2").next == ()


def test_force_needs_a_reason_and_is_audited(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("f-1")
    for reason in (None, "", "   "):
        with pytest.raises(BadInput, match="reason"):
            engine.advance("f-1", to="sql", force=True, reason=reason)
    assert len(engine.history("f-1")) == 1
    lead = engine.advance("f-1", to="negotiation", force=True, reason="met at a fair", actor="boss")
    assert lead.stage == "negotiation"
    entry = engine.history("f-1")[-1]
    assert (entry.from_stage, entry.to_stage, entry.kind, entry.reason, entry.actor) == (
        "awareness",
        "negotiation",
        "force",
        "met at a fair",
        "boss",
    )
    # force may also leave a final stage
    engine.advance("f-1", to="lost", force=True, reason="refunded")
    assert engine.advance("f-1", to="nurturing", force=True, reason="back in play").stage == "nurturing"
    assert engine.verify() == []


# ---------------------------------------------------------------------------
# cycles and time
# ---------------------------------------------------------------------------


def test_recycle_starts_a_new_cycle_counting_only_its_events(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("c-1", email="c@c.example", owner="ann", employees=800)
    engine.record("c-1", "web_visit", count=2)
    engine.record("c-1", "seminar_attended", count=4)
    assert engine.lead("c-1").stage == "contacting"
    before = engine.lead("c-1")
    assert before.events["seminar_attended"] == 4 and before.score == 10 + 60 + 10 - 20

    with pytest.raises(Rejected, match="lost_reason"):
        engine.advance("c-1", to="nurturing")  # the recycle's own condition
    engine.set("c-1", lost_reason="timing")
    lead = engine.advance("c-1", to="nurturing", reason="call back in Q3")
    assert (lead.stage, lead.cycle) == ("nurturing", 2)
    entry = engine.history("c-1")[-1]
    assert (entry.kind, entry.cycle, entry.values) == ("recycle", 2, {"lost_reason": "timing"})

    view = engine.lead("c-1")
    assert view.cycle == 2
    assert view.events["seminar_attended"] == 0 and view.events["web_visit"] == 0
    assert view.score == 10 - 20  # fields keep their values, events do not count
    assert view.fields["owner"] == "ann"
    # it stays where it was put; new engagement moves it again
    assert engine.tick() == 0
    assert engine.record("c-1", "seminar_attended", count=3).stage == "nurturing"
    assert engine.record("c-1", "seminar_attended", count=2).stage == "contacting"
    assert engine.lead("c-1").events["seminar_attended"] == 5
    assert engine.verify() == []


def test_event_windows_count_the_current_cycle_only(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("w-1", email="w@w.example", owner="ann")
    engine.record("w-1", "web_visit", count=3)
    engine.set("w-1", lost_reason="no_budget")
    # walk to contacting by force so that a recycle is defined
    engine.advance("w-1", to="contacting", force=True, reason="hand-off")
    engine.advance("w-1", to="nurturing")
    assert engine.lead("w-1").score == -20  # no web visits in the last 30 days of this cycle
    # A visit dated before the recycle belongs to the old cycle ...
    assert engine.record("w-1", "web_visit", at=T0 - timedelta(days=1)).score == -20
    # ... one at or after it counts in the new one.
    assert engine.record("w-1", "web_visit", at=T0).score == 5 - 20


def test_auto_recycle_fires_on_tick_when_days_in_stage_pass(db_url: str) -> None:
    engine = model(db_url)
    to_opportunity(engine, "o-1")
    assert engine.lead("o-1").stage == "opportunity"
    assert later(engine, 30).tick() == 0
    assert later(engine, 90).tick() == 0  # days_in_stage > 90 is not yet true
    assert engine.lead("o-1").stage == "opportunity"
    assert later(engine, 91).tick() == 1
    lead = engine.lead("o-1")
    assert (lead.stage, lead.cycle) == ("nurturing", 2)
    entry = engine.history("o-1")[-1]
    assert (entry.kind, entry.at, entry.actor) == ("recycle", T0 + timedelta(days=91), "tester")
    assert entry.values["meeting_held in last 60 days"] == 0
    assert entry.values["days_in_stage"] > 90
    assert later(engine, 92).tick() == 0
    assert engine.verify() == []


def test_recent_meeting_keeps_the_opportunity(db_url: str) -> None:
    engine = model(db_url)
    to_opportunity(engine, "o-2")
    engine.record("o-2", "meeting_held", at=T0 + timedelta(days=80))
    assert later(engine, 100).tick() == 0
    assert engine.lead("o-2").stage == "opportunity"


# ---------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------


def test_on_enter_runs_after_commit_and_not_on_failure(db_url: str) -> None:
    engine = model(db_url)
    seen: list[tuple[str, str, str | None]] = []

    def notify(entry: AuditEntry) -> None:
        # after the commit: another connection already sees the lead there
        stored = engine.store.get_lead(entry.lead_id)
        seen.append((entry.lead_id, entry.to_stage, stored.stage if stored else None))

    engine.on_enter("lead", notify)
    engine.on_enter("sql", notify)
    engine.add_lead("cb-1", email="cb@x.example", **BANT)
    engine.record("cb-1", "inbound_question")
    assert seen == [("cb-1", "lead", "lead"), ("cb-1", "sql", "sql")]

    seen.clear()
    with pytest.raises(BadInput, match="already exists"):
        # the first row enters "lead", the second fails: all rolled back, no callback
        engine.add_leads([("cb-2", {"email": "a@x.example"}), ("cb-1", {"email": "b@x.example"})])
    assert seen == []
    assert engine.store.get_lead("cb-2") is None

    with pytest.raises(Rejected):
        engine.advance("cb-1", to="opportunity")
    assert seen == []


# ---------------------------------------------------------------------------
# versions
# ---------------------------------------------------------------------------


def test_versions_keep_old_leads_on_their_version(db_url: str, tmp_path: Path) -> None:
    engine = model(db_url)
    assert engine.deploy(THE_MODEL).created is False  # idempotent by content
    engine.add_lead("v1-lead")
    changed = tmp_path / "the_model.flow"
    source = THE_MODEL.read_text(encoding="utf-8")
    changed.write_text(
        source.replace("stage lead       when email is set", "stage lead  when company is set").replace(
            "flow the_model version 1", "flow the_model version 2"
        )
    )
    deployment = engine.deploy(changed)
    assert (deployment.name, deployment.version, deployment.created) == ("the_model", 2, True)

    assert engine.lead("v1-lead").version == 1
    engine.add_lead("v2-lead", email="new@x.example")
    assert engine.lead("v2-lead").version == 2
    assert engine.lead("v2-lead").stage == "awareness"  # v2 wants a company
    # a fresh engine (another process) also starts new leads on the latest version
    fresh = Engine(engine.store, now=T0)
    fresh.add_lead("v2-other", company="Acme")
    assert (fresh.lead("v2-other").version, fresh.lead("v2-other").stage) == (2, "lead")
    # the old lead still runs on version 1's gates: an email is enough
    assert engine.set("v1-lead", email="old@x.example").stage == "lead"
    assert {e.version for e in engine.history("v1-lead")} == {1}
    assert engine.verify() == []


def test_a_stage_missing_from_the_leads_version_is_a_clear_error(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("lost-stage", email="z@x.example")
    engine.add_lead("fine", email="f@x.example")
    raw(engine, "UPDATE leads SET stage = 'limbo' WHERE id = 'lost-stage'")
    for call in (
        lambda: engine.lead("lost-stage"),
        lambda: engine.set("lost-stage", owner="ann"),
        lambda: engine.record("lost-stage", "web_visit"),
        lambda: engine.advance("lost-stage"),
    ):
        with pytest.raises(SaleflowError, match='"limbo"') as caught:
            call()
        assert "lost-stage" in str(caught.value)
    assert {p.lead_id for p in engine.verify()} == {"lost-stage"}
    # batches go on with the other leads
    engine.record("fine", "web_visit", at=T0)
    assert engine.tick() == 0
    assert later(engine, 1).advance_all() == 0
    # force puts it back into a stage of its version
    assert engine.advance("lost-stage", to="lead", force=True, reason="repair").stage == "lead"
    assert engine.lead("lost-stage").stage == "lead"


# ---------------------------------------------------------------------------
# reads: lead(), next moves, history
# ---------------------------------------------------------------------------


def test_lead_view_lists_next_moves_with_verdicts(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("s-1", email="s@x.example", budget=5000, employees=800, industry="saas")
    engine.record("s-1", "web_visit")
    view = engine.lead("s-1")
    assert (view.id, view.flow, view.version, view.stage, view.team) == (
        "s-1",
        "the_model",
        1,
        "nurturing",
        "marketing",
    )
    assert view.score == 5 + 10 + 5 - 20
    assert view.fields["budget"] == 5000 and view.fields["need"] is False  # defaults filled in
    assert view.events["web_visit"] == 1 and view.events["meeting_held"] == 0
    assert view.entered_at == T0
    verdicts = {(v.kind, v.to): v for v in view.next}
    assert set(verdicts) == {
        ("advance", "mql"),
        ("skip", "opportunity"),
        ("exit", "lost"),
        ("exit", "disqualified"),
    }
    mql = verdicts[("advance", "mql")]
    assert not mql.allowed and mql.automatic
    assert [b.message for b in mql.blockers] == ["score >= 60 is false (score is 0)"]
    skip = verdicts[("skip", "opportunity")]
    assert not skip.allowed
    assert any("budget >= 50000" in b.message and "5000" in b.message for b in skip.blockers)
    assert verdicts[("exit", "disqualified")].allowed
    as_json = view.to_json()
    assert {
        "id",
        "flow",
        "version",
        "stage",
        "team",
        "score",
        "fields",
        "events",
        "entered_at",
        "next",
    } <= set(as_json)
    assert {"to", "kind", "allowed", "failing"} <= set(as_json["next"][0])
    assert [v.to for v in engine.enabled("s-1")] == ["disqualified"]
    assert engine.blockers("s-1", "disqualified") == []
    with pytest.raises(Rejected):
        engine.blockers("s-1", "closed_won")
    with pytest.raises(NotFound):
        engine.lead("nobody")


def test_history_is_oldest_first_with_a_null_first_from(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("h-1", at=T0 - timedelta(days=3))
    engine.set("h-1", email="h@x.example", at=T0 - timedelta(days=2))
    engine.record("h-1", "web_visit", at=T0 - timedelta(days=1))
    history = engine.history("h-1")
    # Between the moves, the journal holds the field set and the event.
    assert [e.lead_seq for e in history] == [1, 3, 5]
    assert [e.seq for e in history] == sorted(e.seq for e in history)
    everything = engine.history("h-1", moves_only=False)
    assert [(e.lead_seq, e.entry) for e in everything] == [
        (1, "created"),
        (2, "set"),
        (3, "moved"),
        (4, "event"),
        (5, "moved"),
    ]
    assert history[0].from_stage is None and history[0].kind == "create"
    assert [e.at for e in history] == [T0 - timedelta(days=d) for d in (3, 2, 1)]
    for before, after in itertools.pairwise(history):
        assert after.from_stage == before.to_stage
    for before, after in itertools.pairwise(everything):
        assert after.prev_hash == before.hash
    with pytest.raises(NotFound):
        engine.history("nobody")


def test_leads_by_flow_stage_and_team(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("l-1", email="a@x.example")
    engine.add_lead("l-2")
    engine.add_lead("l-3", email="b@x.example", **BANT)
    engine.record("l-3", "inbound_question")
    assert [x.id for x in engine.leads()] == ["l-1", "l-2", "l-3"]
    assert [x.id for x in engine.leads(stage="lead")] == ["l-1"]
    assert [x.id for x in engine.leads(team="inside_sales")] == ["l-3"]
    assert [x.id for x in engine.leads(team="marketing", stage="awareness")] == ["l-2"]
    assert [x.id for x in engine.leads(flow="the_model")] == ["l-1", "l-2", "l-3"]
    # Refused by the call itself, not by the first next() of what it returns.
    with pytest.raises(NotFound, match='team "nobody"'):
        engine.leads(team="nobody")
    with pytest.raises(NotFound, match='stage "sqll"; did you mean "sql"'):
        engine.leads(stage="sqll")
    with pytest.raises(NotFound, match='flow "nope"'):
        engine.leads(flow="nope")


def test_api_bad_input(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("b-1")
    with pytest.raises(BadInput, match="already exists"):
        engine.add_lead("b-1")
    with pytest.raises(BadInput, match="must not be empty"):
        engine.add_lead(" ")
    with pytest.raises(NotFound, match=r'no field "budjet".*did you mean "budget"'):
        engine.set("b-1", budjet=5)
    with pytest.raises(BadInput, match='"employees" is int'):
        engine.set("b-1", employees="many")
    with pytest.raises(BadInput, match="one of"):
        engine.set("b-1", industry="mining")
    with pytest.raises(NotFound, match='no event "web_vist"'):
        engine.record("b-1", "web_vist")
    for count in (0, -1, True, 1.5):
        with pytest.raises(BadInput, match="count"):
            engine.record("b-1", "web_visit", count=count)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="ISO 8601"):
        engine.record("b-1", "web_visit", at="yesterday")
    with pytest.raises(NotFound, match="not deployed"):
        engine.add_lead("b-2", flow="nope")
    assert moves(engine, "b-1") == [(None, "awareness", "create")]
    assert engine.lead("b-1").events["web_visit"] == 0


def test_times_at_the_edges_of_the_range(db_url: str) -> None:
    """Times from MIN_TIME to just before MAX_TIME, with the longest SLA and
    window a flow may have (MAX_DAYS), overflow nowhere; times outside the
    range are refused with one sentence, and nothing is written."""
    wide = f"""\
flow wide
event ping
team t "T" {{
  stage a initial sla {MAX_DAYS} days
  stage b when ping in last {MAX_DAYS} days >= 1
}}
stage gone final
"""
    last = MAX_TIME - timedelta(microseconds=1)
    engine = Engine.open(parse_flow(wide, "wide.flow"), db=db_url, now=last)
    engine.add_lead("early", at=MIN_TIME)
    engine.add_lead("late", at=last)
    assert engine.tick() == 0  # "early" is overdue, "late" is not; no move
    assert engine.record("early", "ping", at=MIN_TIME + timedelta(days=1)).stage == "b"
    assert engine.lead("late").due_at == last + timedelta(days=MAX_DAYS)
    report_for(engine, "wide", period=Period.parse("1900-01-01", "8999-12-31"))
    before = engine.history("early")
    for bad in ("1899-12-31T23:59:59Z", "9000-01-01", "9999-12-31T23:00:00-05:00", "0001-01-01"):
        with pytest.raises(BadInput, match="out of range"):
            engine.record("early", "ping", at=bad)
    with pytest.raises(BadInput, match="out of range"):
        engine.add_lead("later", at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    with pytest.raises(BadInput, match="out of range"):
        Engine(engine.store, now="9000-01-01")
    with pytest.raises(BadInput, match="from 1 to 2147483647"):
        engine.record("early", "ping", count=2**31)
    assert engine.history("early") == before
    assert engine.store.get_lead("later") is None
    assert engine.verify() == []


def test_back_dated_fact_keeps_history_in_time_order(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("late-1", email="x@y.z", at=T0 + timedelta(days=5))
    assert engine.lead("late-1").stage == "lead"
    # A visit recorded as happening before the lead even entered "lead".
    engine.record("late-1", "web_visit", at=T0)
    history = engine.history("late-1")
    assert history[-1].to_stage == "nurturing"
    assert [e.at for e in history] == sorted(e.at for e in history)
    assert history[-1].at == T0 + timedelta(days=5)
    assert engine.verify() == []


def test_back_dated_fact_is_judged_when_the_move_is_recorded(db_url: str) -> None:
    engine = model(db_url, now=T0 + timedelta(days=60))
    engine.add_lead("late-2", flow="the_model", email="x@y.z", authority="user")
    # Twelve visits 60 days before the lead existed: +60 within their own
    # 30-day window, but the move would be recorded on day 60, when the
    # window holds none of them: the lead is nurtured, not an MQL.
    engine.record("late-2", "web_visit", count=12, at=T0)
    lead = engine.lead("late-2")
    assert (lead.stage, lead.score) == ("nurturing", 0)
    [*_, last] = engine.history("late-2")
    assert (last.to_stage, last.at) == ("nurturing", T0 + timedelta(days=60))
    assert engine.verify() == []


def test_every_callback_runs_when_one_fails(db_url: str) -> None:
    engine = model(db_url)
    seen: list[str] = []

    def broken(entry: AuditEntry) -> None:
        raise RuntimeError("mail server down")

    engine.on_enter("lead", broken)
    engine.on_enter("lead", lambda entry: seen.append(entry.lead_id))
    # Not raised: the lead is committed, and a caller that retried on an
    # exception would add it twice.  Logged, and collected on the result.
    with caplog_at_warning() as records:
        lead = engine.add_lead("cb-1", email="x@y.z")
    assert seen == ["cb-1"]
    assert [str(e) for e in lead.callback_errors] == ["mail server down"]
    assert [str(e) for e in engine.callback_errors] == ["mail server down"]
    assert any("mail server down" in r.getMessage() and "cb-1" in r.getMessage() for r in records)
    assert engine.lead("cb-1").stage == "lead"  # committed all the same
    assert engine.set("cb-1", company="C").callback_errors == ()  # no callback ran: nothing entered
    assert engine.callback_errors == ()


@contextmanager
def caplog_at_warning() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("saleflow")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_watching_an_unknown_stage_is_refused_with_a_suggestion(db_url: str) -> None:
    engine = model(db_url)
    with pytest.raises(
        NotFound, match='cannot watch stage "sqll": no deployed flow has it; did you mean "sql"'
    ):
        engine.on_enter("sqll", lambda entry: None)
    with (
        Engine.open(db=db_url) as bare,
        pytest.raises(NotFound, match=r"no deployed flow has it"),
    ):
        bare.on_enter("nowhere", lambda entry: None)


def test_new_leads_get_the_version_another_process_deployed(db_url: str, tmp_path: Path) -> None:
    running = model(db_url)
    changed = (
        THE_MODEL.read_text()
        .replace("stage disqualified  final", "stage disqualified  final\nstage parked final")
        .replace("flow the_model version 1", "flow the_model version 2")
    )
    (tmp_path / "the_model.flow").write_text(changed)
    other = Engine.open(tmp_path / "the_model.flow", db=db_url, now=T0, actor="deployer")
    assert other.compiled("the_model").version == 2
    lead = running.add_lead("v-1", flow="the_model")
    assert lead.version == 2


def test_migrate_moves_a_lead_to_the_new_version_keeping_its_stage(db_url: str, tmp_path: Path) -> None:
    engine = model(db_url)
    engine.add_lead("mig-1", email="x@y.z")
    assert engine.lead("mig-1").stage == "lead"
    # Version 2: nurturing also accepts a content download.
    changed = (
        THE_MODEL.read_text()
        .replace(
            "stage nurturing  when web_visit >= 1 or seminar_attended >= 1",
            "stage nurturing  when web_visit >= 1 or seminar_attended >= 1 or content_download >= 1",
        )
        .replace("flow the_model version 1", "flow the_model version 2")
    )
    (tmp_path / "the_model.flow").write_text(changed)
    assert engine.deploy(tmp_path / "the_model.flow").version == 2
    engine.record("mig-1", "content_download")
    assert (engine.lead("mig-1").stage, engine.lead("mig-1").version) == ("lead", 1)  # old gates
    lead = engine.migrate("mig-1")
    assert (lead.version, lead.stage) == (2, "nurturing")  # new gates, then progress
    kinds = [(e.kind, e.from_stage, e.to_stage, e.version) for e in engine.history("mig-1")][-2:]
    assert kinds == [("migrate", "lead", "lead", 2), ("advance", "lead", "nurturing", 2)]
    assert engine.verify() == []
    assert engine.migrate("mig-1").version == 2  # already there: nothing to do
    assert len(engine.history("mig-1")) == 4


def test_migrate_refuses_a_version_without_the_lead_stage(db_url: str, tmp_path: Path) -> None:
    engine = model(db_url)
    engine.add_lead("mig-2")
    changed = (
        THE_MODEL.read_text()
        .replace("stage awareness  initial", "stage aware  initial")
        .replace("flow the_model version 1", "flow the_model version 2")
    )
    (tmp_path / "the_model.flow").write_text(changed)
    engine.deploy(tmp_path / "the_model.flow")
    with pytest.raises(Rejected, match='has no stage "awareness"'):
        engine.migrate("mig-2")
    assert engine.lead("mig-2").version == 1
    assert len(engine.history("mig-2")) == 1


def test_cli_lead_migrate(sqlite_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from saleflow.cli.app import main

    base = ["--db", sqlite_url, "--now", "2024-05-01T09:00:00Z"]
    runner = CliRunner()
    assert runner.invoke(main, [*base, "lead", "add", "c-1", "--flow", str(THE_MODEL)]).exit_code == 0
    changed = (
        THE_MODEL.read_text()
        .replace("stage disqualified  final", "stage disqualified  final\nstage parked final")
        .replace("flow the_model version 1", "flow the_model version 2")
    )
    (tmp_path / "the_model.flow").write_text(changed)
    assert runner.invoke(main, [*base, "deploy", str(tmp_path / "the_model.flow")]).exit_code == 0
    result = runner.invoke(main, [*base, "lead", "migrate", "c-1"])
    assert result.exit_code == 0, result.output
    assert 'lead "c-1" is on flow the_model version 2 (was version 1), in "awareness"' in result.output
    missing = runner.invoke(main, [*base, "lead", "migrate", "c-1", "--version", "7"])
    assert missing.exit_code == 3
    assert "version 7" in missing.stderr


def test_a_back_dated_event_before_a_recycle_counts_in_its_own_cycle(db_url: str) -> None:
    engine = model(db_url)
    engine.add_lead("bd-1", email="x@y.z", **BANT)
    engine.record("bd-1", "inbound_question", at=T0 + timedelta(days=1))
    assert engine.lead("bd-1").stage == "sql"
    engine.set("bd-1", lost_reason="timing", at=T0 + timedelta(days=10))
    engine.advance("bd-1", to="nurturing", at=T0 + timedelta(days=10))
    late = later(engine, 11)
    # A visit that happened before the recycle, entered late.
    late.record("bd-1", "web_visit", at=T0 + timedelta(days=5))
    lead = late.lead("bd-1")
    assert (lead.cycle, lead.events["web_visit"]) == (2, 0)
    assert [e.cycle for e in late.store.events_of("bd-1") if e.name == "web_visit"] == [1]
    late.record("bd-1", "web_visit", at=T0 + timedelta(days=11))
    assert late.lead("bd-1").events["web_visit"] == 1
    assert late.verify() == []


def test_a_requested_move_cannot_be_dated_before_the_leads_last_move(db_url: str) -> None:
    """Automatic progress after a back-dated fact waits for the lead's entry
    into its stage; a move someone asks for at an earlier time is refused,
    not silently re-dated."""
    engine = model(db_url)
    engine.add_lead("t-1", email="x@y.z", **BANT)
    engine.record("t-1", "inbound_question", at=T0 + timedelta(days=3))
    entered = engine.lead("t-1").entered_at
    before = [(e.seq, e.at) for e in engine.history("t-1")]
    with pytest.raises(BadInput, match="a move cannot be dated before the lead's last one"):
        engine.advance("t-1", to="nurturing", force=True, reason="test", at=T0 + timedelta(days=1))
    assert [(e.seq, e.at) for e in engine.history("t-1")] == before
    assert engine.lead("t-1").entered_at == entered
    engine.advance("t-1", to="nurturing", force=True, reason="test", at=entered)  # the same instant is fine
    assert engine.lead("t-1").stage == "nurturing"
