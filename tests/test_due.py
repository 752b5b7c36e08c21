"""Due times (SPEC §8, saleflow/due.py): `tick` visits only the leads whose
due time has come, and that must change nothing: for random flows full of
time-dependent rules and random histories, a tick that visits only the due
leads leaves the database exactly as a tick that visits every lead
(`tick(every=True)`), row for row, journal hashes included.

Then one test per kind of rule (windows in and out, days in stage, days
since an event, days since created, a field as threshold, SLAs, score
windows, auto recycles, skips, capacity), the storage on both backends
(the column, the indexes, `iter_due`, `claim_due`), and a flow with no
time-dependent rule is never due.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import dump
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from saleflow import Engine
from saleflow.check.rules import check
from saleflow.compile import compile_flow
from saleflow.due import MICROSECOND, due_time
from saleflow.errors import SaleflowError
from saleflow.guards.facts import Facts
from saleflow.language.parse import parse_flow
from saleflow.records import EventRecord, Lead
from saleflow.store.sql import open_store

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
END = T0 + timedelta(days=400)  # the engine's clock: every operation is dated before it
EVENTS = ("ev0", "ev1")
SPANS = ("1 day", "2 days", "12 hours", "5 days", "36 hours")
DAYS = ("0", "0.5", "1", "1.5", "2", "3", "4")
OPS = ("==", "!=", "<", "<=", ">", ">=")

# ---------------------------------------------------------------------------
# random flows full of time
# ---------------------------------------------------------------------------


@st.composite
def atoms(draw: Any, scored: bool, conditions: bool) -> str:
    ev = draw(st.sampled_from(EVENTS))
    op = draw(st.sampled_from(OPS))
    day = draw(st.sampled_from(DAYS))
    choices = [
        f"{ev} in last {draw(st.sampled_from(SPANS))} >= {draw(st.integers(1, 2))}",
        f"{ev} in last {draw(st.sampled_from(SPANS))} == 0",
        f"days_in_stage {op} {day}",
        f"days_since {ev} {op} {day}",
        f"days_since {ev} is set",
        f"days_since_created {op} {day}",
        f"days_in_stage {op} n",
        f"days_since {ev} {op} days_in_stage",
        "days_in_stage in [1, 2, 3]",
        f"{ev} >= {draw(st.integers(1, 2))}",
        f"n >= {draw(st.integers(0, 3))}",
        "flag",
    ]
    if scored:
        choices.append(f"score >= {draw(st.sampled_from(['1', '5', '10', '20']))}")
        choices.append("days_in_stage >= score")
    if conditions:
        choices.append("hot")
    return draw(st.sampled_from(choices))


@st.composite
def gates(draw: Any, scored: bool, conditions: bool) -> str:
    parts = [draw(atoms(scored, conditions))]
    if draw(st.integers(0, 2)) == 0:
        parts += draw(st.lists(atoms(scored, conditions), min_size=1, max_size=2))
    if len(parts) == 1:
        text = parts[0]
    else:
        text = f" {draw(st.sampled_from(['and', 'or', 'or']))} ".join(f"({p})" for p in parts)
    return f"not ({text})" if draw(st.integers(0, 7)) == 0 else text


@st.composite
def time_flows(draw: Any) -> str:
    lines = ["flow timed", "field n int default 0", "field flag bool default false"]
    lines += [f"event {ev}" for ev in EVENTS]
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        points = draw(st.integers(1, 10))
        ev = draw(st.sampled_from(EVENTS))
        rules.append(
            draw(
                st.sampled_from(
                    [
                        f"  +{points} each {ev} in last {draw(st.sampled_from(SPANS))}",
                        f"  +{points} each {ev}",
                        f"  -{points} if days_in_stage >= {draw(st.sampled_from(DAYS))}",
                        f"  +{points} if days_since {ev} <= {draw(st.sampled_from(DAYS))}",
                        f"  +{points} if days_since_created > {draw(st.sampled_from(DAYS))}",
                    ]
                )
            )
        )
    scored = bool(rules)
    conditions = draw(st.booleans())
    if conditions:
        lines.append(f"condition hot = {draw(gates(scored, False))}")
    if rules:
        lines += ["score {", *rules, "}"]
    main = [f"s{i}" for i in range(draw(st.integers(2, 5)))]
    lines.append("team t {")
    for i, name in enumerate(main):
        options = ["initial"] if i == 0 else []
        if i > 0 and draw(st.integers(0, 4)) > 0:
            options.append(f"when {draw(gates(scored, conditions))}")
        if i > 0 and draw(st.integers(0, 11)) == 0:
            options.append("manual")
        if draw(st.integers(0, 2)) == 0:
            options.append(f"sla {draw(st.sampled_from(['1 day', '2 days', '12 hours', '3 days']))}")
        if i > 0 and draw(st.integers(0, 3)) == 0:
            options.append(f"capacity {draw(st.integers(1, 2))}")
        lines.append(f"  stage {name} {' '.join(options)}".rstrip())
    lines.append("}")
    lines.append("stage lost final")
    if len(main) > 2 and draw(st.booleans()):
        source = draw(st.integers(0, len(main) - 3))
        target = draw(st.integers(source + 2, len(main) - 1))
        lines.append(f"skip {main[source]} -> {main[target]} when {draw(gates(scored, conditions))}")
    for _ in range(draw(st.integers(0, 2))):
        to = draw(st.integers(0, len(main) - 2))
        sources = draw(st.lists(st.sampled_from(main[to + 1 :]), min_size=1, max_size=2, unique=True))
        auto = " auto" if draw(st.integers(0, 3)) > 0 else ""
        lines.append(
            f"recycle {', '.join(sources)} -> {main[to]} when {draw(gates(scored, conditions))}{auto}"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# random histories
# ---------------------------------------------------------------------------

LEAD_IDS = ("a", "b", "c")


def operation(stages: int) -> st.SearchStrategy[tuple[Any, ...]]:
    lead = st.sampled_from(LEAD_IDS)
    event = st.tuples(st.just("event"), lead, st.sampled_from(EVENTS), st.integers(0, 30), st.integers(1, 2))
    tick = st.tuples(st.just("tick"))
    return st.one_of(
        event,
        tick,
        st.tuples(st.just("event"), lead, st.sampled_from(EVENTS), st.just(0), st.just(1)),
        tick,
        st.tuples(st.just("set"), lead, st.integers(0, 3), st.booleans()),
        st.tuples(st.just("advance"), lead, st.sampled_from([None, "lost", *range(stages)]), st.booleans()),
        st.tuples(st.just("add"), st.sampled_from(("d", "e")), st.integers(0, 3), st.booleans()),
        event,
    )


@st.composite
def histories(draw: Any) -> tuple[str, list[tuple[int, tuple[Any, ...]]], list[int]]:
    source = draw(time_flows())
    stages = source.count("  stage ")
    steps: list[tuple[int, tuple[Any, ...]]] = [
        (draw(st.integers(0, 12)), ("add", lead, draw(st.integers(0, 3)), draw(st.booleans())))
        for lead in LEAD_IDS
    ]
    steps += draw(st.lists(st.tuples(st.integers(0, 40), operation(stages)), min_size=1, max_size=25))
    later = draw(st.lists(st.integers(1, 24 * 6), min_size=1, max_size=5))
    return source, steps, later


def apply(engine: Engine, at: datetime, op: tuple[Any, ...], every: bool) -> str:
    """One operation of a history; what happened, for both databases to agree on."""
    kind = op[0]
    try:
        if kind == "add":
            engine.add_lead(op[1], at=at, n=op[2], flag=op[3])
        elif kind == "set":
            engine.set(op[1], at=at, n=op[2], flag=op[3])
        elif kind == "event":
            engine.record(op[1], op[2], at=at - timedelta(hours=op[3]), count=op[4])
        elif kind == "advance":
            to = op[2] if op[2] is None or op[2] == "lost" else f"s{op[2]}"
            engine.advance(op[1], to=to, at=at, force=op[3], reason="test" if op[3] else None)
        else:
            ticked = engine.tick(at=at, every=every, chunk=2)
            return f"tick {ticked.moves} {ticked.sla_breaches}"
    except SaleflowError as err:
        return type(err).__name__
    return "ok"


def replay(
    url: str, source: str, steps: list[tuple[int, tuple[Any, ...]]], later: list[int], every: bool
) -> list[Any]:
    """The history into `url`, ticking as `every` says; what each step said
    and the database after each later tick."""
    said: list[Any] = []
    flow = parse_flow(source, "timed.flow")
    with Engine.open(flow, db=url, now=END, actor="test") as engine:
        at = T0
        for hours, op in steps:
            at += timedelta(hours=hours)
            said.append(apply(engine, at, op, every))
        for hours in later:
            at += timedelta(hours=hours)
            said.append(apply(engine, at, ("tick",), every))
            said.append(state(url))
    return said


def state(url: str) -> dict[str, list[str]]:
    """Every row of every table but `flows` (its deployment time is the
    wall clock's)."""
    tables = dump(url)
    del tables["flows"]
    return tables


def checked(source: str) -> bool:
    return not any(d.is_error for d in check(parse_flow(source, "timed.flow")))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(histories())
def test_a_tick_of_the_due_leads_leaves_what_a_tick_of_every_lead_leaves(
    history: tuple[str, list[tuple[int, tuple[Any, ...]]], list[int]],
) -> None:
    source, steps, later = history
    assert checked(source), source
    with tempfile.TemporaryDirectory() as folder:
        due = replay(f"sqlite:///{Path(folder) / 'due.db'}", source, steps, later, every=False)
        every = replay(f"sqlite:///{Path(folder) / 'every.db'}", source, steps, later, every=True)
    assert due == every
    ticks = [said.split() for said in every if isinstance(said, str) and said.startswith("tick")]
    event("ticks moved leads" if any(int(t[1]) for t in ticks) else "ticks moved no lead")
    event("ticks recorded breaches" if any(int(t[2]) for t in ticks) else "ticks recorded no breach")


# ---------------------------------------------------------------------------
# the pure function, rule by rule
# ---------------------------------------------------------------------------


def flow_of(body: str) -> Any:
    source = "flow f\nfield n int default 0\nevent ping\nevent call\n" + body
    flow = parse_flow(source, "f.flow")
    assert not any(d.is_error for d in check(flow)), [str(d) for d in check(flow)]
    return compile_flow(flow)


def lead_in(stage: str, entered: datetime = T0, created: datetime = T0, **fields: Any) -> Lead:
    return Lead("x", "f", 1, stage, dict(fields), 1, entered, created, entered)


def ping(at: datetime, name: str = "ping", cycle: int = 1) -> EventRecord:
    return EventRecord(name, at, None, None, 1, cycle)


def test_a_flow_without_time_is_never_due() -> None:
    cf = flow_of("team t {\n  stage a initial\n  stage b when ping >= 2 and n > 1\n}\n")
    assert due_time(cf, lead_in("a"), [ping(T0)], T0) is None
    assert due_time(cf, lead_in("b"), [ping(T0), ping(T0)], T0 + timedelta(days=3)) is None


def test_a_window_is_due_when_an_event_leaves_it_and_when_one_enters_it() -> None:
    cf = flow_of("team t {\n  stage a initial\n  stage b when ping in last 2 days >= 2\n}\n")
    events = [ping(T0), ping(T0 + timedelta(hours=5)), ping(T0 + timedelta(days=10))]
    now = T0 + timedelta(hours=6)
    assert due_time(cf, lead_in("a"), events, now) == T0 + timedelta(days=2) + MICROSECOND
    after = T0 + timedelta(days=2, hours=1)
    assert due_time(cf, lead_in("a"), events, after) == T0 + timedelta(days=2, hours=5) + MICROSECOND
    past = T0 + timedelta(days=3)  # both left: the one ahead is next
    assert due_time(cf, lead_in("a"), events, past) == T0 + timedelta(days=10)
    # another cycle's events are not the lead's any more
    assert due_time(cf, lead_in("a"), [ping(T0, cycle=0)], now) is None


def test_days_in_stage_is_due_when_it_crosses_its_threshold() -> None:
    cf = flow_of("team t {\n  stage a initial\n  stage b when days_in_stage > 3\n}\n")
    entered = T0 + timedelta(hours=7)
    lead = lead_in("a", entered)
    due = due_time(cf, lead, [], entered)
    assert due is not None
    gate = cf.flow.stage("b").when

    def holds(at: datetime) -> bool:
        return cf.evaluator.test(gate, Facts.of(lead, [], at))

    # never late: the gate is false until the due time, and true within
    # two microseconds of it (the crossings of >= 3 and of > 3 are both due)
    assert not holds(due - MICROSECOND) and not holds(due)
    assert holds(due + 2 * MICROSECOND) or holds(due + MICROSECOND)
    assert abs(due - (entered + timedelta(days=3))) <= 2 * MICROSECOND
    # a threshold already crossed is not due again
    assert due_time(cf, lead_in("a", entered), [], entered + timedelta(days=4)) is None


def test_days_since_an_event_and_since_created_and_a_field_as_threshold() -> None:
    cf = flow_of(
        "team t {\n  stage a initial\n  stage b when days_since ping >= 2 or days_since_created >= n\n}\n"
    )
    lead = lead_in("a", T0 + timedelta(days=1), T0, n=5)
    events = [ping(T0 + timedelta(hours=1)), ping(T0 + timedelta(days=9))]
    now = T0 + timedelta(days=1)
    due = due_time(cf, lead, events, now)
    assert due is not None and T0 + timedelta(days=2, hours=1) <= due <= T0 + timedelta(
        days=2, hours=1, microseconds=2
    )
    later = T0 + timedelta(days=3)  # days since ping past 2; next: created 5 days ago
    due = due_time(cf, lead, events, later)
    assert due is not None and T0 + timedelta(days=5) <= due <= T0 + timedelta(days=5, microseconds=2)
    # after that, the event still ahead resets days_since ping
    assert due_time(cf, lead, events, T0 + timedelta(days=6)) == T0 + timedelta(days=9)


def test_an_sla_is_due_just_after_it_runs_out_and_at_once_when_its_breach_may_be_unrecorded() -> None:
    cf = flow_of("team t {\n  stage a initial sla 2 days\n  stage b when ping >= 1\n}\n")
    lead = lead_in("a")
    assert due_time(cf, lead, [], T0) == T0 + timedelta(days=2) + MICROSECOND
    late = T0 + timedelta(days=3)
    assert due_time(cf, lead, [], late) == late
    assert due_time(cf, lead, [], late, sla_recorded=True) is None


def test_score_windows_make_a_lead_due_in_every_stage() -> None:
    cf = flow_of(
        "score {\n  +5 each ping in last 1 day\n}\nteam t {\n  stage a initial\n  stage b final\n}\n"
    )
    events = [ping(T0)]
    assert due_time(cf, lead_in("b"), events, T0) == T0 + timedelta(days=1) + MICROSECOND


def test_only_the_moves_from_the_lead_stage_count() -> None:
    cf = flow_of(
        "team t {\n  stage a initial\n  stage b when ping >= 1\n  stage c when days_in_stage >= 2\n}\n"
        "stage lost final\n"
        "recycle c -> a when days_in_stage > 30 auto\n"
    )
    assert due_time(cf, lead_in("a"), [], T0) is None  # a -> b reads no time
    due = due_time(cf, lead_in("b"), [], T0)
    assert due is not None and abs(due - (T0 + timedelta(days=2))) <= timedelta(microseconds=2)
    due = due_time(cf, lead_in("c"), [], T0)  # the auto recycle's days
    assert due is not None and abs(due - (T0 + timedelta(days=30))) <= timedelta(microseconds=2)
    assert due_time(cf, lead_in("lost"), [], T0) is None


def test_a_lead_entering_later_is_judged_from_its_entry() -> None:
    cf = flow_of("team t {\n  stage a initial\n  stage b when ping in last 1 day == 0\n}\n")
    entered = T0 + timedelta(days=5)
    # gates are judged at the entry (later than now): the event is out of the window by then
    assert due_time(cf, lead_in("a", entered), [ping(T0)], T0) is None


# ---------------------------------------------------------------------------
# the engine keeps due_at, and tick walks only the due leads
# ---------------------------------------------------------------------------

TIMED = """\
flow timed
event ping
team t {
  stage a initial sla 2 days
  stage b when ping in last 1 day >= 1
  stage c when days_in_stage >= 3
}
stage lost final
recycle c -> a when days_in_stage > 10 auto
"""

PLAIN = """\
flow plain
field n int default 0
team t {
  stage a initial
  stage b when n >= 1
}
"""


def test_every_write_stores_the_due_time_and_tick_visits_only_due_leads(db_url: str) -> None:
    with Engine.open(parse_flow(TIMED, "timed.flow"), db=db_url, now=END) as engine:
        engine.deploy(parse_flow(PLAIN, "plain.flow"))
        for i in range(5):
            engine.add_lead(f"t{i}", flow="timed", at=T0)
            engine.add_lead(f"p{i}", flow="plain", at=T0)
        store = engine.store
        assert all(store.get_lead(f"p{i}").due_at is None for i in range(5))  # type: ignore[union-attr]
        assert store.get_lead("t0").due_at == T0 + timedelta(days=2) + MICROSECOND  # type: ignore[union-attr]
        engine.record("t1", "ping", at=T0 + timedelta(hours=1))  # moves to b
        t1 = store.get_lead("t1")
        assert t1 is not None and t1.stage == "b"
        assert t1.due_at is not None and abs(t1.due_at - (T0 + timedelta(days=3, hours=1))) <= timedelta(
            microseconds=2
        )
        # nothing due before the SLA runs out
        assert list(store.iter_due(T0 + timedelta(days=1))) == []
        at = T0 + timedelta(days=2, hours=1)
        due = [lead.id for chunk in store.iter_due(at, chunk=2) for lead in chunk]
        assert due == ["t0", "t2", "t3", "t4"]  # id order; t1 (in b) is not due yet
        assert [lead.id for chunk in store.iter_due(at, flow="plain") for lead in chunk] == []
        ticked = engine.tick(at=at)
        assert ticked.sla_breaches == 4 and ticked.moves == 0
        assert list(store.iter_due(at)) == []  # the breaches are recorded: nothing more until t1's day
        assert store.get_lead("t0").due_at is None  # type: ignore[union-attr]
        # t1 reaches c on day 3, and recycles to a after 10 more days
        engine.tick(at=T0 + timedelta(days=3, hours=2))
        t1 = store.get_lead("t1")
        assert t1 is not None and t1.stage == "c"
        engine.tick(at=T0 + timedelta(days=14))
        t1 = store.get_lead("t1")
        assert t1 is not None and t1.stage == "a" and t1.cycle == 2


def test_claim_due_returns_the_earliest_due_first_and_locks_them(db_url: str) -> None:
    with Engine.open(parse_flow(TIMED, "timed.flow"), db=db_url, now=END) as engine:
        engine.deploy(parse_flow(PLAIN, "plain.flow"))
        for i, hours in enumerate((5, 1, 3)):
            engine.add_lead(f"t{i}", flow="timed", at=T0 + timedelta(hours=hours))
        engine.add_lead("p", flow="plain", at=T0)
        now = T0 + timedelta(days=3)
        with engine.store.transaction() as tx:
            claimed = tx.claim_due(now, limit=2)
            assert [lead.id for lead in claimed] == ["t1", "t2"]
            assert [lead.id for lead in tx.claim_due(now, flow="plain")] == []
            assert [lead.id for lead in tx.claim_due(now, flow="timed", limit=10)] == ["t1", "t2", "t0"]
            with pytest.raises(ValueError):
                tx.claim_due(now, limit=0)


def test_claimers_on_postgresql_get_disjoint_leads(pg_url: str) -> None:
    with Engine.open(parse_flow(TIMED, "timed.flow"), db=pg_url, now=END) as engine:
        for i in range(6):
            engine.add_lead(f"t{i}", at=T0)
        now = T0 + timedelta(days=3)
        other = open_store(pg_url)
        try:
            with engine.store.transaction() as first:
                mine = {lead.id for lead in first.claim_due(now, limit=4)}
                with other.transaction() as second:
                    theirs = {lead.id for lead in second.claim_due(now, limit=10)}
            assert len(mine) == 4 and len(theirs) == 2 and not mine & theirs
        finally:
            other.close()


def test_the_due_walk_reads_the_due_index(db_url: str) -> None:
    """Each page of `iter_due` reads the range of due leads from the due
    index and sorts it by id; it never walks the primary key testing every
    lead's due time (which both planners would otherwise pick)."""
    with Engine.open(parse_flow(TIMED, "timed.flow"), db=db_url, now=END) as engine:
        engine.add_lead("t0", at=T0)
        store = engine.store
        sql = store._sql  # the compiled statements: their plans are what this checks
        params = {"now": T0, "chunk": 10, "after": "t", "flow": "timed"}
        for first in (True, False):
            for by_flow in (False, True):
                stmt = sql.due_page(first, by_flow)
                with store.read() as conn:
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny table: no seq scan
                        text = str(stmt.compile(dialect=conn.dialect))
                        rows = conn.exec_driver_sql("EXPLAIN " + text, params)
                    else:
                        text = str(stmt.compile(dialect=conn.dialect))
                        rows = conn.exec_driver_sql(
                            "EXPLAIN QUERY PLAN " + text, tuple("x" * text.count("?"))
                        )
                    plan = " ".join(str(row[-1]) for row in rows)
                assert "ix_leads_due_at_id" in plan or "ix_leads_flow_due_at_id" in plan, plan
                assert "pk_leads" not in plan and "autoindex" not in plan, plan


# ---------------------------------------------------------------------------
# the migration from a database before due times (0005)
# ---------------------------------------------------------------------------


def alembic_to(url: str, target: str) -> None:
    """Bring the database at `url` to revision `target` (down or up)."""
    from alembic import command
    from alembic.config import Config

    from saleflow.store.connect import make_engine, parse_url

    engine = make_engine(parse_url(url))
    config = Config()
    config.set_main_option("script_location", "saleflow:migrations")
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, target)
    finally:
        engine.dispose()


def history_into(url: str) -> datetime:
    """Leads of a timed flow and of a plain one, with a history; returns its end."""
    with Engine.open(parse_flow(TIMED, "timed.flow"), db=url, now=END) as engine:
        engine.deploy(parse_flow(PLAIN, "plain.flow"))
        for i in range(4):
            engine.add_lead(f"t{i}", flow="timed", at=T0 + timedelta(hours=i))
            engine.add_lead(f"p{i}", flow="plain", at=T0 + timedelta(hours=i))
        engine.record("t1", "ping", at=T0 + timedelta(hours=5))
        engine.record("t2", "ping", at=T0 + timedelta(days=1))
        engine.set("p1", {"n": 2}, at=T0 + timedelta(days=1))
        engine.tick(at=T0 + timedelta(days=1, hours=1))
    return T0 + timedelta(days=4)


def outcome(url: str) -> dict[str, list[Any]]:
    """What a tick decides: stages, scores and due times of the leads, the
    journal, the breaches and the waiting lines (not when rows were written)."""
    store = open_store(url)
    try:
        leads = [
            (lead.id, lead.stage, lead.cycle, lead.entered_at, lead.score, lead.due_at)
            for chunk in store.iter_leads()
            for lead in chunk
        ]
        journal = [
            (entry.seq, entry.hash, entry.payload()) for chunk in store.iter_journal() for entry in chunk
        ]
        breaches = [b for lead in leads for b in store.breaches_of(lead[0])]
    finally:
        store.close()
    return {"leads": leads, "journal": journal, "breaches": breaches}


def test_a_0005_database_upgrades_with_every_lead_due_and_the_first_tick_sets_the_real_times(
    db_url: str, tmp_path: Path
) -> None:
    end = history_into(db_url)
    alembic_to(db_url, "0005")
    store = open_store(db_url)  # upgrades to 0006: back-fills due_at
    try:
        leads = [lead for chunk in store.iter_leads() for lead in chunk]
        assert leads and all(lead.due_at == lead.created_at for lead in leads)
        assert {lead.id for chunk in store.iter_due(T0 + timedelta(hours=4)) for lead in chunk} == {
            lead.id for lead in leads
        }
    finally:
        store.close()
    # the same history never downgraded, ticked over every lead
    twin = f"sqlite:///{tmp_path / 'twin.db'}"
    history_into(twin)
    with Engine.open(db=db_url, now=END) as engine:
        engine.tick(at=end)
    with Engine.open(db=twin, now=END) as engine:
        engine.tick(at=end, every=True)
    upgraded, expected = outcome(db_url), outcome(twin)
    assert upgraded == expected
    # plain leads are never due again; timed ones at their real times
    assert all(due is None for lead_id, *_, due in upgraded["leads"] if lead_id.startswith("p"))
    assert any(due is not None for lead_id, *_, due in upgraded["leads"] if lead_id.startswith("t"))
