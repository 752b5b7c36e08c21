"""`saleflow simulate` (SPEC §7): a recorded journal replayed through a flow
file in a scratch store, on SQLite and PostgreSQL as the recorded database.

The correctness test: replaying the same flow over a recorded history
(events, sets, requested and forced moves, recycles, a capacity queue, SLAs,
windows, ticked every midnight) reproduces the recorded report exactly.
Then what changes when the flow does, and bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simhistory import DEMO_FLOW, record_history

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.compile import compile_flow
from saleflow.language.parse import load_flow, parse_flow
from saleflow.views.apart import Apart, Lost
from saleflow.views.report import Period
from saleflow.views.report.build import build_report
from saleflow.views.simulate import _REPLAYED, _UNMARKED, is_requested, simulate
from saleflow.views.timing import stage_timing

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = ROOT / "flows" / "the_model.flow"
DEMO_TEXT = DEMO_FLOW.read_text(encoding="utf-8")


def variant(tmp_path: Path, name: str, *changes: tuple[str, str]) -> Path:
    """The demo flow with text replaced (each change must apply) and its
    version raised."""
    text = DEMO_TEXT.replace("version 1", "version 2")
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.flow"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def recorded(db_url: str) -> tuple[str, datetime]:
    return db_url, record_history(db_url, days=40)


def run(url: str, flow: Path, end: datetime, period: Period | None = None):  # type: ignore[no-untyped-def]
    with Engine.open(db=url, now=end) as engine:
        return simulate(engine, load_flow(flow), period=period)


def test_same_flow_replay_reproduces_the_recorded_report(recorded: tuple[str, datetime]) -> None:
    url, end = recorded
    with Engine.open(db=url, now=end) as engine:
        entries = [e for chunk in engine.store.iter_journal() for e in chunk]
    kinds = {e.entry for e in entries}
    assert {"created", "set", "event", "moved", "sla_breach"} <= kinds
    moves = [e for e in entries if e.entry == "moved"]
    assert any(is_requested(e) and e.kind == "force" for e in moves)
    assert any(is_requested(e) and e.kind == "recycle" for e in moves)
    assert any(is_requested(e) and e.kind == "exit" for e in moves)
    assert any(is_requested(e) and e.stage == "proposal" for e in moves)
    assert any(e.kind == "recycle" and not is_requested(e) for e in moves)  # the auto recycle, on time
    assert any(e.reason == "room freed" for e in moves)  # the capacity queue
    before = dump(url)

    sim = run(url, DEMO_FLOW, end)

    assert sim.simulated.to_json() == sim.actual.to_json()
    assert sim.refused_requests == 0
    assert sim.most_waiting > 0
    assert sim.simulated.sla_breaches > 0
    assert sim.replayed > 0 and sim.skipped == 0
    assert dump(url) == before


def test_same_flow_over_a_period_reproduces_that_period(recorded: tuple[str, datetime]) -> None:
    url, end = recorded
    period = Period.parse("2026-03-10", "2026-03-20")
    sim = run(url, DEMO_FLOW, end, period)
    assert sim.simulated.to_json()["stages"] == sim.actual.to_json()["stages"]
    assert sim.simulated.sla_breaches == sim.actual.sla_breaches


def test_capacity_changes_the_queue(recorded: tuple[str, datetime], tmp_path: Path) -> None:
    url, end = recorded
    same = run(url, DEMO_FLOW, end)
    halved = run(url, variant(tmp_path, "one", ("capacity 3", "capacity 1")), end)
    ample = run(url, variant(tmp_path, "ample", ("capacity 3", "capacity 500")), end)

    def entered(sim, stage: str) -> int:  # type: ignore[no-untyped-def]
        found = sim.simulated.stage(stage)
        assert found is not None
        return int(found.entered)

    assert ample.most_waiting == 0 and ample.waiting == ()
    assert entered(ample, "opportunity") > entered(same, "opportunity") > entered(halved, "opportunity")
    assert halved.most_waiting >= same.most_waiting > 0
    waited = {w.stage: w for w in halved.waiting}["opportunity"]
    assert waited.most == halved.most_waiting
    assert same.actual.to_json() == halved.actual.to_json()  # the recorded side does not change


def test_threshold_change_refuses_recorded_requests(recorded: tuple[str, datetime], tmp_path: Path) -> None:
    url, end = recorded
    with Engine.open(db=url, now=end) as engine:
        asked = sum(
            1
            for chunk in engine.store.iter_journal()
            for e in chunk
            if is_requested(e) and e.stage == "proposal"
        )
    assert asked > 0
    before = dump(url)
    sim = run(
        url, variant(tmp_path, "strict", ("manual  when score >= 20", "manual  when score >= 1000")), end
    )
    assert sim.refused_by_stage.get("proposal") == asked
    assert sim.refused_requests >= asked
    assert sim.refused and all(r.reason for r in sim.refused)
    proposal = sim.simulated.stage("proposal")
    assert proposal is not None and proposal.entered == 0
    assert dump(url) == before


def test_time_is_judged_as_it_passes(db_url: str, tmp_path: Path) -> None:
    """A window closing and days in stage recycle a lead at the midnight
    after they allow it, not when the replay ends (judged once at the end,
    the lead would have spent 30 days in opportunity, not 5.5)."""
    day0 = datetime(2026, 3, 2, tzinfo=UTC)
    end = day0 + timedelta(days=30)
    with Engine.open(DEMO_FLOW, db=db_url, now=end) as engine:
        for lead_id in ("a", "b"):
            engine.add_lead(
                lead_id, at=day0 + timedelta(hours=9), email=f"{lead_id}@x.example", employees=800
            )
            engine.record(lead_id, "web_visit", at=day0 + timedelta(hours=9, minutes=30), count=2)
            engine.set(lead_id, at=day0 + timedelta(hours=10), owner="ana")
        engine.set("a", at=day0 + timedelta(hours=11), need=True)
        engine.record("a", "call_connected", at=day0 + timedelta(hours=11))
        engine.record("a", "meeting_held", at=day0 + timedelta(hours=12))
        assert engine.store.get_lead("a").stage == "opportunity"  # type: ignore[union-attr]
        engine.set("b", at=day0 + timedelta(days=5), need=True)
        engine.record("b", "call_connected", at=day0 + timedelta(days=5, hours=1))
        assert engine.store.get_lead("b").stage == "sql"  # type: ignore[union-attr]
    flow = variant(
        tmp_path,
        "quick",
        (
            "days_in_stage > 10 and meeting_held in last 5 days == 0",
            "days_in_stage > 2 and meeting_held in last 5 days == 0",
        ),
        ("sla 2 days", "sla 1 day"),
    )
    sim = run(db_url, flow, end)
    # the meeting (day 0, 12:00) leaves the 5-day window on day 5 at 12:00;
    # the next midnight recycles the lead: 5.5 days in opportunity
    opportunity = sim.simulated.stage("opportunity")
    assert opportunity is not None and opportunity.median_days == 5.5
    assert sim.simulated.recycled.lead_cycles == 1
    # b overstays contacting's 1-day SLA (day 0, 10:00 to day 5): one breach
    assert sim.simulated.sla_breaches == 1
    # and the recycled lead is back in "lead" from day 6 on, not at the end
    lead = sim.simulated.stage("lead")
    assert lead is not None and lead.current == 1


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def cli(url: str, *args: str, now: str = "2026-04-11T00:00:00Z"):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["--db", url, "--now", now, "simulate", *args])


def test_cli_formats(recorded: tuple[str, datetime], tmp_path: Path) -> None:
    url, end = recorded
    now = end.isoformat()
    before = dump(url)
    result = cli(url, str(DEMO_FLOW), "--format", "json", now=now)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["actual"] == data["simulated"]
    assert data["refused_requests"] == 0
    assert set(data["actual"]) >= {
        "flow",
        "version",
        "stages",
        "teams",
        "targets",
        "sla_breaches",
        "recycled",
    }
    table = cli(url, str(DEMO_FLOW), now=now)
    assert table.exit_code == 0 and "opportunity" in table.stdout and "refuses: 0" in table.stdout
    page = tmp_path / "what-if.html"
    html = cli(url, str(DEMO_FLOW), "--format", "html", "-o", str(page), now=now)
    assert html.exit_code == 0, html.output
    text = page.read_text(encoding="utf-8")
    assert 'id="recorded"' in text and 'id="simulated"' in text and "<script" not in text
    assert dump(url) == before


def _bad(url: str, args: list[str], code: int, words: str, before: dict[str, list[str]]) -> None:
    result = cli(url, *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert dump(url) == before


def test_bad_input(recorded: tuple[str, datetime], tmp_path: Path) -> None:
    url, _ = recorded
    before = dump(url)
    # a flow of another name: nothing of it was recorded here
    _bad(url, [str(THE_MODEL)], 3, 'no flow "the_model" is deployed', before)
    # a flow that does not check: the same code `deploy` gives
    broken = tmp_path / "broken.flow"
    broken.write_text(DEMO_TEXT.replace("when score >= 40", "when scor >= 40"), encoding="utf-8")
    deploy = CliRunner().invoke(main, ["--db", url, "deploy", str(broken)])
    assert deploy.exit_code in (1, 2)
    _bad(url, [str(broken)], deploy.exit_code, "not a valid flow", before)
    _bad(url, [str(tmp_path / "missing.flow")], 2, "missing.flow", before)
    _bad(url, [str(DEMO_FLOW), "--since", "2026-03-20", "--until", "2026-03-10"], 2, "before --since", before)
    _bad(url, [str(DEMO_FLOW), "--since", "yesterday-ish"], 2, "--since", before)
    _bad(url, [str(DEMO_FLOW), "--format", "pdf"], 2, "pdf", before)
    _bad(
        url,
        [str(DEMO_FLOW), "-o", str(tmp_path / "no" / "such" / "dir" / "out.txt")],
        2,
        "cannot write",
        before,
    )
    _bad(url, [str(DEMO_FLOW), "-o", str(tmp_path)], 2, "cannot write", before)
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("keep me", encoding="utf-8")
    _bad(url, [str(DEMO_FLOW), "-o", str(a_file / "out.json")], 2, "cannot write", before)
    assert a_file.read_text(encoding="utf-8") == "keep me"
    assert not (tmp_path / "no").exists()


def test_a_flow_that_is_only_a_name(sqlite_url: str, tmp_path: Path) -> None:
    """A flow file naming a flow with no leads deployed: one sentence, 3."""
    lone = tmp_path / "lone.flow"
    lone.write_text(DEMO_TEXT.replace("flow sim_demo", "flow lonely"), encoding="utf-8")
    with Engine.open(DEMO_FLOW, db=sqlite_url):
        pass
    before = dump(sqlite_url)
    _bad(sqlite_url, [str(lone)], 3, 'no flow "lonely"', before)
    # deployed, but no lead ever lived in it
    _bad(sqlite_url, [str(DEMO_FLOW)], 3, "has no leads", before)


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sim') / 'small.db'}"
    record_history(url, days=4, per_day=2)
    return url


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    since=st.one_of(
        st.none(),
        st.text(max_size=30),
        st.sampled_from(
            [
                "9999-12-31",
                "0001-01-01",
                "2026-02-30",
                "2026-03-03T25:00",
                "1e400",
                "\x00",
                "\uff12\uff10\uff12\uff16",
            ]
        ),
    ),
    until=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["9999-12-31T23:59:59Z", "-1"])),
)
def test_any_period_text_is_an_answer_or_one_sentence(
    small_db: str, since: str | None, until: str | None
) -> None:
    args = [str(DEMO_FLOW), "--format", "json"]
    if since is not None:
        args += ["--since", since]
    if until is not None:
        args += ["--until", until]
    before = dump(small_db)
    result = cli(small_db, *args, now="2026-03-06T00:00:00Z")
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        data = json.loads(result.stdout)
        assert data["actual"] == data["simulated"]
    else:
        assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert dump(small_db) == before


def test_journal_marks_requested_moves(sqlite_url: str) -> None:
    flow = parse_flow(DEMO_TEXT, "demo.flow")
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    with Engine.open(flow, db=sqlite_url, now=at + timedelta(days=1)) as engine:
        engine.add_lead("x", at=at, email="x@x.example")  # created, then moved on its own to lead
        engine.advance("x", to="lost", force=True, reason="test", at=at + timedelta(hours=1))
        moves = engine.history("x")
    assert [(m.stage, is_requested(m), m.data.get("requested")) for m in moves] == [
        ("awareness", False, None),
        ("lead", False, None),
        ("lost", True, True),
    ]


# --------------------------------------------------------------------------
# The replay's scratch store, and when it ticks
# --------------------------------------------------------------------------


def test_memory_store_and_sql_store_replays_agree(recorded: tuple[str, datetime], tmp_path: Path) -> None:
    """The memory store (what `simulate` uses) gives the same simulation as
    the engine's own SQL store, for the same flow and for changed ones:
    funnels, queue, refusals, counts of replayed entries and ticks."""
    url, end = recorded
    flows = [
        DEMO_FLOW,
        variant(tmp_path, "one", ("capacity 3", "capacity 1")),
        variant(tmp_path, "strict", ("manual  when score >= 20", "manual  when score >= 1000")),
        variant(
            tmp_path,
            "quick",
            (
                "days_in_stage > 10 and meeting_held in last 5 days == 0",
                "days_in_stage > 2 and meeting_held in last 5 days == 0",
            ),
            ("sla 2 days", "sla 1 day"),
        ),
    ]
    before = dump(url)
    with Engine.open(db=url, now=end) as engine:
        for path in flows:
            flow = load_flow(path)
            memory = simulate(engine, flow).to_json()
            sql = simulate(engine, flow, scratch="sqlite").to_json()
            assert memory == sql, path.name
    assert dump(url) == before


NEGATIVE = """flow calming version 1
field email text
event complaint channel web
score {
  -10 each complaint in last 3 days
}
team t "T" {
  stage awareness initial
  stage calm  when email is set and score >= 0
}
"""


def test_a_window_closing_that_raises_the_score_is_ticked(db_url: str, tmp_path: Path) -> None:
    """A tick is skipped only when time cannot open a gate: a complaint
    counted against the score leaves its 3-day window, the score rises to
    0 and the next midnight moves the lead (a replay that skipped that
    window would move it at the end, 10 days later)."""
    day0 = datetime(2026, 3, 2, tzinfo=UTC)
    end = day0 + timedelta(days=10)
    path = tmp_path / "calming.flow"
    path.write_text(NEGATIVE, encoding="utf-8")
    with Engine.open(path, db=db_url, now=end) as engine:
        engine.add_lead("a", at=day0 + timedelta(hours=9))
        engine.record("a", "complaint", at=day0 + timedelta(hours=10))
        engine.set("a", at=day0 + timedelta(hours=11), email="a@x.example")
        for day in range(1, 11):
            engine.tick(at=day0 + timedelta(days=day))  # a daily worker
        assert engine.history("a")[-1].at == day0 + timedelta(days=4)
    sim = run(db_url, path, end)
    assert sim.simulated.to_json() == sim.actual.to_json()
    awareness = sim.simulated.stage("awareness")
    assert awareness is not None and awareness.median_days == 3.625  # 09:00 on day 0 to midnight on day 4
    assert 0 < sim.ticks < 10


def test_what_a_tick_watches() -> None:
    """Per stage, the moments that can open a gate: the_model's nurturing
    waits for `score >= 60`, whose windows only close, so none are watched
    (unless the lead waits in a queue: then its score orders it);
    opportunity's auto recycle watches 90 days in stage and the 60-day
    meeting window."""
    cf = compile_flow(load_flow(THE_MODEL), 1)
    nurturing = stage_timing(cf, "nurturing", waiting=False)
    assert nurturing.windows == () and nurturing.in_stage == () and not nurturing.daily
    queued = stage_timing(cf, "nurturing", waiting=True)
    assert {(event, w.days) for event, w in queued.windows} == {("web_visit", 30), ("content_download", 90)}
    opportunity = stage_timing(cf, "opportunity", waiting=False)
    assert [(event, w.days) for event, w in opportunity.windows] == [("meeting_held", 60)]
    assert [k.days for k in opportunity.in_stage] == [90]
    assert stage_timing(cf, "adoption", waiting=False).in_stage == (timedelta(days=365),)


def _apart(url: str, name: str, version: int, end: datetime) -> Apart:
    return Apart.start(url, name, version, end, Period(), _REPLAYED, _UNMARKED)


def test_the_journal_and_report_read_apart_are_the_same(recorded: tuple[str, datetime]) -> None:
    """On a file or a server, another process can read the recorded journal
    and build the recorded report while the replay runs: the same entries,
    in the same order, as this process reads, and the same report; and
    simulate's result is the same either way."""
    url, end = recorded
    with Engine.open(db=url, now=end) as engine:
        flow = load_flow(DEMO_FLOW)
        recorded_flow = engine.compiled(flow.name)
        assert engine.store.shared_url == url
        here = build_report(
            engine.store, recorded_flow.flow, version=recorded_flow.version, now=end, period=Period()
        )
        there = _apart(url, flow.name, recorded_flow.version, end)
        assert list(there.entries()) == list(engine.store.iter_recorded(flow.name, end, _REPLAYED, _UNMARKED))
        report = there.report(recorded_flow.flow)
        assert report is not None, "the other process gave no report"
        assert report.definition is recorded_flow.flow
        assert report.to_json() == here.to_json()
        apart = simulate(engine, flow, apart=True).to_json()
        assert simulate(engine, flow, apart=False).to_json() == apart


def test_what_the_other_process_cannot_give_is_done_here(
    recorded: tuple[str, datetime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the other process fails (no such database, no such flow
    version, killed while it sends, asked for the report before the
    journal) `entries` raises `Lost` and `report` is None; where no Python
    can be started none is.  Simulate then reads and reports itself, with
    the same result (an error reaches the user as it would have)."""
    from saleflow.views import apart as apart_module

    url, end = recorded
    folder = tmp_path / "missing"
    folder.mkdir()
    gone = _apart(f"sqlite:///{folder}/x.db", "demo", 1, end)
    assert gone.started
    with pytest.raises(Lost):
        list(gone.entries())
    assert gone.report(load_flow(DEMO_FLOW)) is None
    assert not list(folder.iterdir()), "the other process created a database"
    with Engine.open(db=url, now=end) as engine:
        flow = load_flow(DEMO_FLOW)
        version = engine.compiled(flow.name).version
        with pytest.raises(Lost):
            next(_apart(url, flow.name, version + 1, end).entries())  # checked before anything is sent
        killed = _apart(url, flow.name, version, end)
        entries = killed.entries()
        next(entries)
        killed.cancel()  # kills it mid-stream
        with pytest.raises(Lost):
            list(entries)
        unread = _apart(url, flow.name, version, end)
        assert unread.report(flow) is None  # the journal comes first
        expected = simulate(engine, flow, apart=False).to_json()
        # no Python to start (an embedding host's binary): simulate does it all here
        monkeypatch.setattr(apart_module.sys, "executable", "/usr/bin/uwsgi")
        assert not _apart(url, flow.name, version, end).started
        assert simulate(engine, flow, apart=True).to_json() == expected


def test_simulate_apart_uses_the_other_process(
    recorded: tuple[str, datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`apart=True` really takes the journal and the report from the other
    process (a fallback would give the same figures, only slower)."""
    answers: list[object] = []
    report = Apart.report

    def spied(self: Apart, definition: object) -> object:
        answers.append(report(self, definition))  # type: ignore[arg-type]
        return answers[-1]

    monkeypatch.setattr(Apart, "report", spied)
    url, end = recorded
    with Engine.open(db=url, now=end) as engine:
        simulate(engine, load_flow(DEMO_FLOW), apart=True)
    assert len(answers) == 1 and answers[0] is not None


def test_the_other_process_finds_the_database_and_modules_this_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative SQLite URL is the file where the store was opened, even
    after this process changes directory; and the child imports nothing
    from the current folder (a stray `json.py` or `random.py` there)."""
    path = tmp_path / "here" / "recorded.db"
    path.parent.mkdir()
    end = record_history(f"sqlite:///{path}", days=10)
    monkeypatch.chdir(path.parent)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    marker = tmp_path / "imported"
    for name in ("json", "random", "marshal", "pickle"):
        (elsewhere / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('{name}')\n")
    with Engine.open(db=f"sqlite:///{path.name}", now=end) as engine:
        flow = load_flow(DEMO_FLOW)
        expected = simulate(engine, flow, apart=False).to_json()
        monkeypatch.chdir(elsewhere)
        assert engine.store.shared_url == f"sqlite:///{path}"
        there = _apart(
            engine.store.shared_url,
            flow.name,
            engine.compiled(flow.name).version,
            end,
        )
        assert (
            len(list(there.entries()))
            == len(list(engine.store.iter_recorded(flow.name, end, _REPLAYED, _UNMARKED)))
            > 50
        )
        assert there.report(flow) is not None
        assert simulate(engine, flow, apart=True).to_json() == expected
    assert not marker.exists(), marker.read_text()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["json.py", "marshal.py", "pickle.py", "random.py"]


def test_which_stores_are_shared(sqlite_url: str, tmp_path: Path) -> None:
    from saleflow.store import open_store

    for url, shared in (
        (sqlite_url, True),
        ("sqlite:///:memory:", False),
        (f"sqlite:///{tmp_path}/x.db", True),
    ):
        store = open_store(url)
        try:
            assert store.shared_url == (url if shared else None), url
        finally:
            store.close()
