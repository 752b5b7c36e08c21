"""`saleflow report` and `leads --overdue`: every figure of a small
hand-built history, worked out by hand, on SQLite and PostgreSQL; and, for
random histories, the report against the audit log counted directly.

The history (`build_kpi_history` in conftest.py), by day (day 0 = 2026-01-01);
main line new(0) -> mql(1) -> sql(2) -> won(3), side stage lost:

    a (east)   created 0, web_visit 0.5, -> mql 1, -> sql 3, -> won 4
    b (west)   created 0, call 1, skip -> sql 2, recycle -> mql 5 (cycle 2), -> sql 6
    c (unset)  created 1, -> mql 2, exit -> lost 3
    d (east)   created 2, stays in new

Lead-cycles: a1, b1, b2, c1, d1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import KPI_FLOW, build_kpi_history, kpi_day
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saleflow.cli.app import main
from saleflow.errors import BadInput, NotFound, Rejected
from saleflow.language.parse import parse_flow
from saleflow.runtime.engine import Engine
from saleflow.store import open_store
from saleflow.views.report import Period, build_report, overdue_leads, render_csv, render_table, report_for

NOW = kpi_day(10)


def engine_at(url: str, when: datetime) -> Engine:
    return Engine(open_store(url), actor="test", now=when)


def report_json(url: str, *args: str, now: datetime = NOW) -> dict[str, Any]:
    result = CliRunner().invoke(
        main, ["--db", url, "--now", now.isoformat(), "report", "--format", "json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def by_name(rows: list[dict[str, Any]], key: str = "stage") -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


# --------------------------------------------------------------------------
# The whole period
# --------------------------------------------------------------------------


def test_stage_figures(kpi_db: str) -> None:
    report = report_json(kpi_db)
    assert (report["flow"], report["version"]) == ("kpi", 1)
    stages = report["stages"]
    assert [s["stage"] for s in stages] == ["new", "mql", "sql", "won", "lost"]
    figures = {
        s["stage"]: (s["team"], s["entered"], s["current"], s["advanced"], s["conversion"], s["median_days"])
        for s in stages
    }
    # new: entered a1 b1 c1 d1 = 4; advanced a (mql), b (sql), c (mql) = 3; d is
    #   there now; left after 1 (a), 2 (b), 1 (c) days: median 1.
    assert figures["new"] == ("marketing", 4, 1, 3, 0.75, 1.0)
    # mql: entered a1 (day 1), c1 (2), b2 (5) = 3; a and b2 reach sql, c is
    #   lost: 2; nobody is there now; stayed 2 (a), 1 (c), 1 (b2): median 1.
    assert figures["mql"] == ("marketing", 3, 0, 2, 2 / 3, 1.0)
    # sql: entered a1 (3), b1 (2), b2 (6) = 3; only a reaches won (b1 was
    #   recycled: a new cycle; b2 is still there): 1; stays that ended:
    #   a 1 day, b1 3 days: median 2.
    assert figures["sql"] == ("sales", 3, 1, 1, 1 / 3, 2.0)
    # won: a; the end of the line, nothing further: 0 advanced, never left.
    assert figures["won"] == ("sales", 1, 1, 0, 0.0, None)
    # lost, a side stage: c; advanced would mean back on the main line.
    assert figures["lost"] == (None, 1, 1, 0, 0.0, None)
    assert [s["main_line"] for s in stages] == [True, True, True, True, False]


def test_team_and_end_to_end_figures(kpi_db: str) -> None:
    report = report_json(kpi_db)
    teams = by_name(report["teams"], "team")
    # Marketing: lead-cycles entering new or mql: a1 b1 c1 d1 b2 = 5; handed to
    # Sales (sql or beyond) later in the same cycle: a1, b1 (skip), b2 = 3.
    # End to end (leads entering new: a b c d; reaching mql or beyond in any
    # cycle: a b c) = 3/4.
    marketing = teams["marketing"]
    assert (marketing["entered"], marketing["handed_off"], marketing["conversion"]) == (5, 3, 0.6)
    assert marketing["end_to_end"] == 0.75
    assert marketing["stages"] == ["new", "mql"]
    # Sales: a1 b1 b2 = 3; the last team hands off to nobody: null.  End to
    # end: of a b c d only a reached won = 1/4.
    sales = teams["sales"]
    assert (sales["entered"], sales["handed_off"], sales["conversion"]) == (3, None, None)
    assert sales["end_to_end"] == 0.25
    assert report["end_to_end"] == {
        "from": "new",
        "entered": 4,
        "to": "won",
        "reached": 1,
        "conversion": 0.25,
        "teams": [
            {"team": "marketing", "stage": "mql", "reached": 3, "conversion": 0.75},
            {"team": "sales", "stage": "won", "reached": 1, "conversion": 0.25},
        ],
    }


def test_targets(kpi_db: str) -> None:
    targets = by_name(report_json(kpi_db)["targets"], "target")
    # conversion new -> sql: of a1 b1 c1 d1, a1 and b1 (skip) reach sql: 50% >= 50%.
    conversion = targets["conversion new -> sql >= 50%"]
    assert (conversion["actual"], conversion["unit"], conversion["met"]) == (50.0, "%", True)
    assert conversion["basis"] == 4
    # time in sql: median 2 days (see test_stage_figures) <= 3.
    time_in = targets["time in sql <= 3 days"]
    assert (time_in["actual"], time_in["unit"], time_in["met"], time_in["basis"]) == (2.0, "days", True, 2)
    # conversion mql -> won: of a1 c1 b2 only a1 reaches won: 33.3% < 60%.
    missed = targets["conversion mql -> won >= 60%"]
    assert missed["actual"] == pytest.approx(100 / 3)
    assert missed["met"] is False
    assert missed["team"] == "sales"


def test_recycled_and_channels(kpi_db: str) -> None:
    report = report_json(kpi_db)
    # One recycle (b, sql -> mql on day 5).  Before it b had reached sql (2);
    # afterwards it reached sql again, not further: 0.
    assert report["recycled"] == {
        "lead_cycles": 1,
        "later_advanced": 0,
        "conversion": 0.0,
        "by_stage": [{"stage": "sql", "lead_cycles": 1, "later_advanced": 0}],
    }
    # Last touch before each entry: every creation precedes every event (none);
    # a's web_visit (0.5) precedes a's mql, sql, won; b's call (1) precedes
    # b's sql (2), mql (5), sql (6); c never had an event.
    channels = {c["channel"]: by_name(c["stages"]) for c in report["channels"]}
    assert list(channels) == ["web", "phone", None]
    figures = {
        channel: {stage: (s["entered"], s["advanced"]) for stage, s in stages.items()}
        for channel, stages in channels.items()
    }
    assert figures["web"] == {"mql": (1, 1), "sql": (1, 1), "won": (1, 0)}
    assert figures["phone"] == {"mql": (1, 1), "sql": (2, 0)}
    assert figures[None] == {"new": (4, 3), "mql": (1, 0), "lost": (1, 0)}


# --------------------------------------------------------------------------
# Periods
# --------------------------------------------------------------------------


def test_since_until_counts_entries_in_the_period(kpi_db: str) -> None:
    # [day 2, day 4], both ends included: d created (2), c -> mql (2),
    # b -> sql (2), a -> sql (3), c -> lost (3), a -> won (4, the very end).
    report = report_json(kpi_db, "--since", kpi_day(2).isoformat(), "--until", kpi_day(4).isoformat())
    figures = {s["stage"]: (s["entered"], s["advanced"], s["median_days"]) for s in report["stages"]}
    assert figures == {
        "new": (1, 0, None),  # d, never left
        "mql": (1, 0, 1.0),  # c, lost after a day
        "sql": (2, 1, 2.0),  # b1 (recycled after 3 days), a (won after 1): median 2
        "won": (1, 0, None),
        "lost": (1, 0, None),
    }
    # `current` is now, whatever the period.
    assert [s["current"] for s in report["stages"]] == [1, 0, 1, 1, 1]
    teams = by_name(report["teams"], "team")
    assert (teams["marketing"]["entered"], teams["marketing"]["handed_off"]) == (2, 0)
    assert (teams["sales"]["entered"], teams["sales"]["handed_off"]) == (2, None)
    # The recycle (day 5) is outside; so is every SLA breach (none recorded).
    assert report["recycled"]["lead_cycles"] == 0
    assert report["period"] == {"since": kpi_day(2).isoformat(), "until": kpi_day(4).isoformat()}


def test_until_a_date_means_the_whole_day(kpi_db: str) -> None:
    # --until 2026-01-04 ends with day 3: a -> won (day 4, 2026-01-05) is out;
    # --since 2026-01-04 starts at day 3.
    report = report_json(kpi_db, "--since", "2026-01-04", "--until", "2026-01-04")
    entered = {s["stage"]: s["entered"] for s in report["stages"]}
    assert entered == {"new": 0, "mql": 0, "sql": 1, "won": 0, "lost": 1}  # a -> sql, c -> lost
    assert report["period"]["until"] == "2026-01-04T23:59:59.999999+00:00"


def test_period_parsing() -> None:
    assert Period.parse(None, None) == Period()
    period = Period.parse("2026-03-01", "2026-03-31")
    assert period.since == datetime(2026, 3, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 4, 1, tzinfo=UTC)
    assert str(period) == "2026-03-01 to 2026-03-31"
    with pytest.raises(BadInput, match="before --since"):
        Period.parse("2026-03-02", "2026-03-01")
    with pytest.raises(BadInput, match="ISO 8601"):
        Period.parse("March", None)


# --------------------------------------------------------------------------
# --by FIELD
# --------------------------------------------------------------------------


def test_groups_by_field(kpi_db: str) -> None:
    report = report_json(kpi_db, "--by", "region")
    assert report["by"] == "region"
    # Enum values in declared order, unset last.
    assert [g["value"] for g in report["groups"]] == ["east", "west", None]
    figures = {
        g["value"]: {s["stage"]: (s["entered"], s["current"], s["advanced"]) for s in g["stages"]}
        for g in report["groups"]
    }
    # east: a and d.  a goes all the way; d stays in new.
    assert figures["east"] == {
        "new": (2, 1, 1),
        "mql": (1, 0, 1),
        "sql": (1, 0, 1),
        "won": (1, 1, 0),
        "lost": (0, 0, 0),
    }
    # west: b.  new -> sql (skip), sql (cycle 1) recycled, mql (cycle 2) ->
    # sql (cycle 2), still there.
    assert figures["west"] == {
        "new": (1, 0, 1),
        "mql": (1, 0, 1),
        "sql": (2, 1, 0),
        "won": (0, 0, 0),
        "lost": (0, 0, 0),
    }
    # unset: c.
    assert figures[None] == {
        "new": (1, 0, 1),
        "mql": (1, 0, 0),
        "sql": (0, 0, 0),
        "won": (0, 0, 0),
        "lost": (1, 1, 0),
    }
    east = by_name(report["groups"][0]["stages"])
    assert east["new"]["median_days"] == 1.0  # a left new after a day; d never did
    # Groups add up to the totals.
    for index, stage in enumerate(report["stages"]):
        assert stage["entered"] == sum(g["stages"][index]["entered"] for g in report["groups"])


def test_group_by_a_field_with_a_default_and_by_unknown_field(db_url: str) -> None:
    flow = KPI_DEFAULTS
    with Engine.open(db=db_url, now=kpi_day(0), actor="test") as engine:
        engine.deploy(parse_flow(flow, "d.flow"))
        engine.add_lead("x", at=kpi_day(0))  # tier unset: its default, gold
        engine.add_lead("y", at=kpi_day(0), tier="silver", vip=True, size=12)
        engine.add_lead("z", at=kpi_day(0), tier="gold", size=2.5)
        report = report_for(engine, by="tier")
        assert [(g.value, g.stages[0].entered) for g in report.groups] == [("gold", 2), ("silver", 1)]
        assert [(g.value, g.stages[0].entered) for g in report_for(engine, by="vip").groups] == [
            ("false", 2),
            ("true", 1),
        ]
        assert [g.value for g in report_for(engine, by="size").groups] == ["2.5", "12", None]
        with pytest.raises(NotFound, match=r'no field "tiers".*did you mean "tier"'):
            report_for(engine, by="tiers")


KPI_DEFAULTS = """\
flow dflt
field tier  one of [gold, silver]  default gold
field vip   bool  default false
field size  number
team t { stage s initial }
"""


# --------------------------------------------------------------------------
# SLAs
# --------------------------------------------------------------------------


def test_sla_breach_recorded_once_by_tick_and_listed_as_overdue(kpi_db: str) -> None:
    # b entered sql (cycle 2) on day 6 with an SLA of 2 days: due day 8.
    # In cycle 1 b sat in sql from day 2 to day 5 (due day 4): that breach was
    # recorded when b left the stage late, though no tick ran meanwhile.
    with engine_at(kpi_db, kpi_day(7.5)) as engine:
        engine.tick()
        assert report_for(engine).sla_breaches == 1
        assert list(overdue_leads(engine)) == []
    for day in (9, 10, 11):
        with engine_at(kpi_db, kpi_day(day)) as engine:
            engine.tick()
    with engine_at(kpi_db, NOW) as engine:
        report = report_for(engine)
        assert report.sla_breaches == 2  # three ticks past due, one more breach
        [sla] = report.sla
        assert (sla.stage, sla.sla_days, sla.breaches, sla.overdue_now) == ("sql", 2, 2, 1)
        [late] = overdue_leads(engine)
        assert (late.lead.id, late.due_at, late.overdue_days) == ("b", kpi_day(8), 2.0)
    # A breach is counted in the period its SLA ran out (day 4, day 8).
    assert report_json(kpi_db, "--since", kpi_day(8).isoformat())["sla_breaches"] == 1
    between = report_json(kpi_db, "--since", kpi_day(5).isoformat(), "--until", kpi_day(7).isoformat())
    assert between["sla_breaches"] == 0
    assert report_json(kpi_db, "--until", kpi_day(7).isoformat())["sla_breaches"] == 1
    assert report_json(kpi_db)["sla"] == [
        {"stage": "sql", "team": "sales", "sla_days": 2, "breaches": 2, "overdue_now": 1}
    ]


def test_sla_breach_counted_when_the_lead_leaves_late_without_a_tick(db_url: str) -> None:
    # How often tick runs decides how soon a breach is seen, not whether it
    # is counted: a lead that overstays and leaves between ticks breached.
    with Engine.open(db=db_url, now=kpi_day(0), actor="test") as engine:
        engine.deploy(parse_flow(KPI_FLOW, "kpi.flow"))
        for lead_id, left in (("late", 5), ("on-time", 1)):
            engine.add_lead(lead_id, flow="kpi", at=kpi_day(0))
            engine.advance(lead_id, to="sql", at=kpi_day(0))
            engine.advance(lead_id, to="won", at=kpi_day(left))
            engine.advance(lead_id, to="lost", at=kpi_day(left + 0.5))  # won has no SLA
    with engine_at(db_url, kpi_day(10)) as engine:
        engine.tick()
        engine.tick()
        report = report_for(engine)
        assert report.sla_breaches == 1
        assert [(s.stage, s.breaches, s.overdue_now) for s in report.sla] == [("sql", 1, 0)]


def test_leads_overdue_command(kpi_db: str) -> None:
    runner = CliRunner()
    base = ["--db", kpi_db, "--now", NOW.isoformat(), "leads", "--overdue"]
    result = runner.invoke(main, base)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("b ")
    assert "overdue 2 days (SLA 2 days, due 2026-01-09T00:00:00+00:00)" in result.output
    assert result.output.splitlines()[-1] == "1 lead overdue"
    listed = json.loads(runner.invoke(main, [*base, "--json"]).output)
    assert listed == [
        {
            "id": "b",
            "flow": "kpi",
            "stage": "sql",
            "score": 0,
            "entered_at": kpi_day(6).isoformat(),
            "sla_days": 2,
            "due_at": kpi_day(8).isoformat(),
            "overdue_days": 2.0,
        }
    ]
    assert json.loads(runner.invoke(main, [*base, "--json", "--team", "marketing"]).output) == []
    assert json.loads(runner.invoke(main, [*base, "--json", "--stage", "sql"]).output)[0]["id"] == "b"
    # Not yet overdue on day 8 itself (a breach is *past* the due time).
    early = runner.invoke(main, ["--db", kpi_db, "--now", kpi_day(8).isoformat(), "leads", "--overdue"])
    assert early.output.strip() == "0 leads overdue"
    unknown = runner.invoke(main, [*base, "--team", "nobody"])
    assert unknown.exit_code == 3
    assert 'no deployed flow with leads has a team "nobody"' in unknown.output


# --------------------------------------------------------------------------
# Formats and errors
# --------------------------------------------------------------------------


def test_table_csv_and_html_formats(kpi_db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--db", kpi_db, "--now", NOW.isoformat(), "report"]
    table = runner.invoke(main, base)
    assert table.exit_code == 0, table.output
    assert "KPI <test> & co — flow kpi version 1" in table.output
    assert "  mql          marketing        3    0         2       66.7%            1" in table.output
    assert "conversion mql -> won >= 60%  sales       33.3%   missed" in table.output
    assert "end to end: 4 entered new, 1 reached won (25.0%)" in table.output

    csv_text = runner.invoke(main, [*base, "--format", "csv"]).output
    lines = csv_text.splitlines()
    assert lines[0] == "flow,version,stage,team,main_line,entered,current,advanced,conversion,median_days"
    assert lines[1:] == [
        "kpi,1,new,marketing,true,4,1,3,0.75,1",
        "kpi,1,mql,marketing,true,3,0,2,0.666667,1",
        "kpi,1,sql,sales,true,3,1,1,0.333333,2",
        "kpi,1,won,sales,true,1,1,0,0,",
        "kpi,1,lost,,false,1,1,0,0,",
    ]
    grouped = runner.invoke(main, [*base, "--format", "csv", "--by", "region"]).output.splitlines()
    assert grouped[0].startswith("flow,version,region,stage,")
    assert len(grouped) == 1 + 3 * 5  # a row per group and stage
    assert grouped[1] == "kpi,1,east,new,marketing,true,2,1,1,0.5,1"

    out = tmp_path / "report.html"
    result = runner.invoke(main, [*base, "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the page went to the file; stderr says where
    assert f"wrote html report of flow kpi to {out}" in result.stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "KPI &lt;test&gt; &amp; co" in page


def test_report_errors(db_url: str) -> None:
    runner = CliRunner()
    none = runner.invoke(main, ["--db", db_url, "report"])
    assert none.exit_code == 3
    assert "no flow is deployed" in none.output
    build_kpi_history(db_url)
    with Engine.open(db=db_url, now=kpi_day(0)) as engine:
        engine.deploy(parse_flow(KPI_DEFAULTS, "d.flow"))
    several = runner.invoke(main, ["--db", db_url, "report"])
    assert several.exit_code == 2
    assert "several flows are deployed (dflt, kpi); say which with --flow" in several.output
    assert runner.invoke(main, ["--db", db_url, "report", "--flow", "nope"]).exit_code == 3
    bad = runner.invoke(main, ["--db", db_url, "report", "--flow", "kpi", "--since", "yesterday"])
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output
    # An empty flow reports zeros and nulls, not errors.
    empty = report_json(db_url, "--flow", "dflt")
    assert empty["stages"][0] == {
        "stage": "s",
        "team": "t",
        "entered": 0,
        "current": 0,
        "advanced": 0,
        "conversion": None,
        "median_days": None,
        "main_line": True,
    }
    assert empty["targets"] == [] and empty["sla_breaches"] == 0


def test_import_moves_count_like_any_other(db_url: str, tmp_path: Path) -> None:
    # Imported history: lead i created in mql on day 0 (its first row's
    # stage: it never entered "new"), moved to sql on day 1 (both audited
    # "import"), then won on day 3 by hand.  mql: 1 entered, advanced,
    # 1 day; sql: 1, advanced, 2 days; the file's funnel, stage by stage.
    rows = tmp_path / "history.csv"
    rows.write_text("id,stage,at\ni,mql,2026-01-01T00:00:00Z\ni,sql,2026-01-02T00:00:00Z\n", encoding="utf-8")
    with Engine.open(db=db_url, now=kpi_day(0), actor="test") as engine:
        engine.deploy(parse_flow(KPI_FLOW_FOR_IMPORT, "k.flow"))
        engine.import_csv(rows, flow="imp", id_column="id", stage_column="stage", at_column="at")
        engine.advance("i", to="won", at=kpi_day(3))
        assert [e.kind for e in engine.history("i")] == ["import", "import", "advance"]
        report = report_for(engine)
    figures = {s.stage: (s.entered, s.advanced, s.median_days) for s in report.stages}
    assert figures == {"new": (0, 0, None), "mql": (1, 1, 1.0), "sql": (1, 1, 2.0), "won": (1, 0, None)}


KPI_FLOW_FOR_IMPORT = """\
flow imp
team t { stage new initial  stage mql manual  stage sql manual  stage won manual }
"""


def test_render_table_lists_groups_and_channels(kpi_db: str) -> None:
    with engine_at(kpi_db, NOW) as engine:
        text = render_table(report_for(engine, by="region"))
        csv_text = render_csv(report_for(engine))
    assert "region = east" in text and "region = (unset)" in text
    assert "Conversion by channel" in text
    assert "  mql    1/1 100%  1/1 100%   0/1 0%" in text
    assert csv_text.count("\n") == 6


# --------------------------------------------------------------------------
# Random histories against the audit log
# --------------------------------------------------------------------------

HYP_FLOW = """\
flow {name}
team a {{ stage s0 initial  stage s1 manual  stage s2 manual }}
team b {{ stage s3 manual  stage s4 manual }}
stage gone    final
stage parked  manual
skip s0 -> s2
skip s1 -> s4
recycle s2, s3, s4 -> s1
"""
HYP_STAGES = ("s0", "s1", "s2", "s3", "s4", "gone", "parked")
HYP_MAIN = ("s0", "s1", "s2", "s3", "s4")
START = datetime(2026, 1, 1, tzinfo=UTC)

# Mostly moves a flow allows (next, skips, recycles back to s1), some forced
# anywhere (backwards within a cycle too), a few refused (and ignored).
moves = st.lists(
    st.tuples(
        st.sampled_from(("next", "next", "next", "to", "to", "force")),
        st.sampled_from((*HYP_STAGES, "s1", "s1", "s2", "s4")),
        st.integers(0, 30),
    ),
    max_size=12,
)
histories = st.lists(st.tuples(st.integers(0, 30), moves), min_size=1, max_size=5)
bounds = st.one_of(st.none(), st.integers(0, 120))


def reference(engine: Engine, lead_ids: list[str], since: datetime | None, until: datetime | None) -> dict:
    """Per stage: (entered, advanced), counted straight from each history."""
    position = {s: i for i, s in enumerate(HYP_MAIN)}
    counts = {s: [0, 0] for s in HYP_STAGES}
    for lead_id in lead_ids:
        entries = engine.history(lead_id)
        seen: set[tuple[int, str]] = set()
        for index, entry in enumerate(entries):
            if (since is not None and entry.at < since) or (until is not None and entry.at > until):
                continue
            if (entry.cycle, entry.to_stage) in seen:
                continue
            seen.add((entry.cycle, entry.to_stage))
            counts[entry.to_stage][0] += 1
            threshold = position.get(entry.to_stage, -1)
            later = [
                position[e.to_stage]
                for e in entries[index + 1 :]
                if e.cycle == entry.cycle and e.to_stage in position
            ]
            if any(p > threshold for p in later):
                counts[entry.to_stage][1] += 1
    return {stage: tuple(n) for stage, n in counts.items()}


@pytest.fixture
def hyp_store(db_url: str) -> Any:
    with Engine.open(db=db_url, now=START, actor="test") as engine:
        engine.counter = iter(range(10**6))  # type: ignore[attr-defined]
        yield engine


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories=histories, since=bounds, until=bounds)
def test_random_histories_match_the_audit_log(
    hyp_store: Engine,
    histories: list[tuple[int, list[tuple[str, str, int]]]],
    since: int | None,
    until: int | None,
) -> None:
    engine = hyp_store
    name = f"hyp{next(engine.counter)}"  # type: ignore[attr-defined]
    engine.deploy(parse_flow(HYP_FLOW.format(name=name), f"{name}.flow"))
    lead_ids = []
    for number, (created, steps) in enumerate(histories):
        lead_id = f"{name}-{number}"
        lead_ids.append(lead_id)
        at = START + timedelta(hours=created)
        engine.add_lead(lead_id, flow=name, at=at)
        for kind, stage, hours in steps:
            at += timedelta(hours=hours)
            try:
                if kind == "next":
                    engine.advance(lead_id, at=at)
                elif kind == "to":
                    engine.advance(lead_id, to=stage, at=at)
                else:
                    engine.advance(lead_id, to=stage, force=True, reason="test", at=at)
            except Rejected:
                pass
    start = None if since is None else START + timedelta(hours=since)
    end = None if until is None else START + timedelta(hours=until)
    period = Period(start, end)
    compiled = engine.compiled(name)
    report = build_report(engine.store, compiled.flow, version=compiled.version, now=START, period=period)
    expected = reference(engine, lead_ids, start, end)
    for stage in report.stages:
        assert (stage.entered, stage.advanced) == expected[stage.stage], stage.stage
        assert stage.advanced <= stage.entered
        if stage.entered:
            assert stage.conversion == stage.advanced / stage.entered
        else:
            assert stage.conversion is None
    for team in report.teams:
        assert team.handed_off is None or team.handed_off <= team.entered
    assert sum(s.current for s in report.stages) == len(lead_ids)


@given(
    values=st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(0, 1e4, allow_nan=False)), min_size=1, max_size=300
    ),
    limit=st.integers(1, 50),
)
def test_medians_in_bounded_memory_are_exact(values: list[tuple[str, float]], limit: int) -> None:
    from statistics import median

    from saleflow.views.report.medians import Medians

    with Medians(limit=limit) as medians:
        for key, value in values:
            medians.add(key, value)
        for key in "abcd":
            wanted = [v for k, v in values if k == key]
            assert medians.median(key) == (median(wanted) if wanted else None)
            assert medians.counts.get(key, 0) == len(wanted)


# --------------------------------------------------------------------------
# CSV a spreadsheet opens safely (issue 8, item 5)
# --------------------------------------------------------------------------

FORMULA_FLOW = """\
flow formulas
field note text
team t "T" { stage new initial  stage done manual }
"""


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_report_csv_runs_no_formula(db_url: str, tmp_path: Path, start: str) -> None:
    """`report --format csv --by note`: a field value that a spreadsheet
    would run (=, +, -, @, tab, CR first) is written with a leading quote,
    and reads back as the value through csvcell.unescape_cell."""
    import csv
    import io

    from saleflow.csvcell import unescape_cell

    value = f'{start}HYPERLINK("http://evil.example","x")'
    with Engine.open(parse_flow(FORMULA_FLOW, "f.flow"), db=db_url, now=NOW, actor="t") as engine:
        engine.add_lead("l1", note=value, at=NOW - timedelta(days=1))
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(
        main,
        [
            "--db",
            db_url,
            "--now",
            NOW.isoformat(),
            "report",
            "--by",
            "note",
            "--format",
            "csv",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8"), newline="")))
    cells = [cell for row in rows for cell in row]
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in cells), cells
    assert "'" + value in cells
    assert value in [unescape_cell(cell) for cell in cells]
