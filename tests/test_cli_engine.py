"""The lead commands of the CLI (deploy, lead add/set, event, advance, tick,
show, history, leads) with click's CliRunner, on SQLite and PostgreSQL.

Each test asserts the exit code and the output *and* the state through the
Python API; `--json` output carries at least the keys of SPEC §4.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from saleflow import Engine
from saleflow.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = str(ROOT / "flows" / "the_model.flow")
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

SHOW_KEYS = {"id", "flow", "version", "stage", "team", "score", "fields", "events", "entered_at", "next"}
NEXT_KEYS = {"to", "kind", "allowed", "failing"}
HISTORY_KEYS = {"seq", "from", "to", "kind", "actor", "reason", "at"}
LEADS_KEYS = {"id", "flow", "stage", "score"}


class Cli:
    """`saleflow --db URL --now T --actor A …` with CliRunner."""

    def __init__(self, db_url: str, now: datetime = T0, actor: str = "ann") -> None:
        self.db_url = db_url
        self.now = now
        self.actor = actor

    def __call__(self, *args: str, code: int = 0, now: datetime | None = None) -> Result:
        when = (now or self.now).isoformat()
        result = CliRunner().invoke(
            main,
            ["--db", self.db_url, "--now", when, "--actor", self.actor, *args],
            catch_exceptions=False,
        )
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        if code == 0:
            assert result.stderr == "", result.stderr
        else:
            assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def api(self) -> Engine:
        return Engine.open(db=self.db_url, now=self.now)

    def stage(self, lead_id: str) -> str:
        with self.api() as engine:
            return engine.lead(lead_id).stage


def test_deploy_is_idempotent_and_versions_are_honest(db_url: str, tmp_path: Path) -> None:
    cli = Cli(db_url)
    assert cli("deploy", THE_MODEL).stdout == "deployed the_model version 1\n"
    assert cli("deploy", THE_MODEL).stdout == "already deployed, unchanged: the_model version 1\n"
    source = Path(THE_MODEL).read_text(encoding="utf-8")
    changed = tmp_path / "the_model.flow"
    # Comments, layout and tests are not the flow's meaning: still version 1.
    changed.write_text(
        "# reworded\n" + source.replace("field email          text", "field email text") + "\n# x\n"
    )
    assert cli("deploy", str(changed)).stdout == "already deployed, unchanged: the_model version 1\n"
    # A change that keeps version 1 is refused, naming the number to use.
    changed.write_text(source.replace("capacity 50", "capacity 40"))
    refused = cli("deploy", str(changed), code=2)
    assert refused.stdout == ""
    assert refused.stderr == (
        'error: flow "the_model" version 1 is already deployed with other content; '
        'raise its version to 2 ("flow the_model version 2") to deploy this change\n'
    )
    # Raised, it is stored as the version the file says, gaps and all.
    changed.write_text(source.replace("capacity 50", "capacity 40").replace("version 1", "version 3", 1))
    assert cli("deploy", str(changed)).stdout == "deployed the_model version 3\n"
    with cli.api() as engine:
        assert engine.store.flow_names() == ["the_model"]
        assert engine.compiled("the_model").version == 3
    # `lead add --flow FILE` uses the version FILE is, not the latest.
    cli("lead", "add", "old-1", "--flow", THE_MODEL)
    cli("lead", "add", "new-1", "--flow", str(changed))
    with cli.api() as engine:
        assert (engine.lead("old-1").version, engine.lead("new-1").version) == (1, 3)


def test_lead_add_set_event_and_show(db_url: str) -> None:
    cli = Cli(db_url)
    cli("deploy", THE_MODEL)
    out = cli(
        "lead", "add", "acme-1", "--flow", "the_model", "--set", "company=Acme", "--set", "employees=800"
    )
    assert out.stdout == 'created lead "acme-1" in flow the_model version 1; it is in "awareness"\n'
    assert cli("lead", "set", "acme-1", "email=cto@acme.example").stdout == (
        'lead "acme-1" is in "lead" (was "awareness")\n'
    )
    assert cli("event", "acme-1", "web_visit", "--count", "2").stdout == (
        'lead "acme-1" is in "nurturing" (was "lead")\n'
    )
    cli("event", "acme-1", "seminar_attended", "--channel", "webinar", "--content", "pricing 101")
    assert (
        cli("lead", "set", "acme-1", "industry=saas", "budget=5000").stdout
        == 'lead "acme-1" is in "nurturing"\n'
    )

    shown = cli.json("show", "acme-1")
    assert set(shown) >= SHOW_KEYS
    assert (shown["id"], shown["flow"], shown["version"], shown["stage"], shown["team"]) == (
        "acme-1",
        "the_model",
        1,
        "nurturing",
        "marketing",
    )
    assert shown["score"] == 10 + 15 + 10 + 5 - 20
    assert shown["fields"]["company"] == "Acme" and shown["fields"]["employees"] == 800
    assert shown["fields"]["budget"] == 5000 and shown["fields"]["owner"] is None
    assert shown["events"]["web_visit"] == 2 and shown["events"]["seminar_attended"] == 1
    assert datetime.fromisoformat(shown["entered_at"]) == T0
    for move in shown["next"]:
        assert set(move) >= NEXT_KEYS
        assert move["allowed"] == (move["failing"] == [])
    mql = next(m for m in shown["next"] if m["to"] == "mql")
    assert mql["kind"] == "advance" and mql["failing"] == ["score >= 60 is false (score is 20)"]

    text = cli("show", "acme-1").stdout
    assert "lead acme-1 — flow the_model version 1" in text
    assert "stage   nurturing (marketing)" in text
    assert "advance -> mql" in text and "blocked: score >= 60 is false (score is 20)" in text

    # an empty value unsets a field
    cli("lead", "set", "acme-1", "budget=")
    with cli.api() as engine:
        view = engine.lead("acme-1")
        assert view.fields["budget"] is None
        assert view.stage == "nurturing" and view.score == 20
        events = engine.store.events_of("acme-1")
        assert [(e.name, e.count, e.channel, e.content) for e in events] == [
            ("web_visit", 2, "web", None),
            ("seminar_attended", 1, "webinar", "pricing 101"),
        ]


def test_lead_add_with_a_flow_file_and_json(db_url: str) -> None:
    cli = Cli(db_url)
    shown = cli.json("lead", "add", "in-1", "--flow", THE_MODEL, "--set", "email=a@in.example")
    assert set(shown) >= SHOW_KEYS and shown["stage"] == "lead"
    # --at back-dates the lead
    cli("lead", "add", "old-1", "--at", "2024-01-01T00:00:00Z")
    with cli.api() as engine:
        assert engine.store.flow_names() == ["the_model"]
        old = engine.lead("old-1")
        assert old.created_at == datetime(2024, 1, 1, tzinfo=UTC)
        assert engine.history("old-1")[0].at == datetime(2024, 1, 1, tzinfo=UTC)


def test_advance_to_force_reason_and_all(db_url: str) -> None:
    cli = Cli(db_url)
    cli("deploy", THE_MODEL)
    cli(
        "lead",
        "add",
        "a",
        "--set",
        "email=a@x.example",
        "--set",
        "budget=20000",
        "--set",
        "authority=influencer",
    )
    cli("lead", "set", "a", "need=yes", "timeframe_days=30")
    cli("event", "a", "inbound_question")
    assert cli.stage("a") == "sql"

    # a refused request: exit 1, the reason on stderr, nothing moved
    refused = cli("advance", "a", code=1)
    assert 'cannot enter "opportunity": meeting_held >= 1 is false (meeting_held is 0)' in refused.stderr
    # --to an exit, with a reason and the actor recorded
    cli("lead", "add", "b", "--set", "email=b@x.example")
    assert cli("advance", "b", "--to", "disqualified", "--reason", "a student").stdout == (
        'lead "b" is in "disqualified" (was "lead")\n'
    )
    # --force with --reason goes anywhere
    assert cli("advance", "a", "--to", "negotiation", "--force", "--reason", "met at a fair").stdout == (
        'lead "a" is in "negotiation" (was "sql")\n'
    )
    with cli.api() as engine:
        b = engine.history("b")[-1]
        assert (b.kind, b.reason, b.actor) == ("exit", "a student", "ann")
        a = engine.history("a")[-1]
        assert (a.from_stage, a.to_stage, a.kind, a.reason) == (
            "sql",
            "negotiation",
            "force",
            "met at a fair",
        )

    # --all: every lead as far as its gates allow (here, once a year has passed)
    cli("lead", "add", "c", "--set", "email=c@x.example")
    cli("advance", "c", "--to", "adoption", "--force", "--reason", "signed offline")
    assert cli("advance", "--all").stdout == "0 moves made\n"
    later = T0 + timedelta(days=365)
    assert cli("advance", "--all", "--flow", "the_model", now=later).stdout == "1 move made\n"
    assert cli.stage("c") == "retained"
    assert (cli.stage("a"), cli.stage("b")) == ("negotiation", "disqualified")


def test_tick_applies_time(db_url: str) -> None:
    cli = Cli(db_url)
    cli("deploy", THE_MODEL)
    cli("lead", "add", "o", "--set", "email=o@x.example", "--set", "budget=20000")
    cli("lead", "set", "o", "authority=decision_maker", "need=true", "owner=ann")
    cli("event", "o", "inbound_question")
    cli("event", "o", "meeting_held")
    assert cli.stage("o") == "opportunity"
    assert cli("tick", now=T0 + timedelta(days=45)).stdout == "0 moves made, 0 SLA breaches recorded\n"
    assert cli("tick", now=T0 + timedelta(days=91)).stdout == "1 move made, 0 SLA breaches recorded\n"
    with cli.api() as engine:
        lead = engine.lead("o")
        assert (lead.stage, lead.cycle) == ("nurturing", 2)
        entry = engine.history("o")[-1]
        assert (entry.kind, entry.at, entry.actor) == ("recycle", T0 + timedelta(days=91), "ann")
    # SALEFLOW_NOW fixes the clock too
    result = CliRunner().invoke(
        main, ["--db", db_url, "tick"], env={"SALEFLOW_NOW": "2030-01-01"}, catch_exceptions=False
    )
    assert result.exit_code == 0 and result.stdout == "0 moves made, 0 SLA breaches recorded\n"


def test_tick_says_how_many_sla_breaches_it_recorded(db_url: str) -> None:
    """contacting has an SLA of 2 days; each breach is recorded, and counted,
    once: by the tick that first sees it."""
    cli = Cli(db_url)
    cli("deploy", THE_MODEL)
    for lead, entered in (("s1", T0), ("s2", T0), ("s3", T0 + timedelta(days=1))):
        cli("lead", "add", lead, "--set", f"email={lead}@x.example")
        cli("advance", lead, "--to", "contacting", "--force", "--reason", "called in", now=entered)

    def tick(days: float, *args: str) -> str:
        return str(cli("tick", *args, now=T0 + timedelta(days=days)).stdout)

    assert tick(1) == "0 moves made, 0 SLA breaches recorded\n"
    assert tick(2.1) == "0 moves made, 2 SLA breaches recorded\n"  # s1, s2
    assert tick(2.2) == "0 moves made, 0 SLA breaches recorded\n"
    assert json.loads(tick(3.1, "--json")) == {"moves": 0, "sla_breaches": 1}  # s3
    assert json.loads(tick(3.2, "--json", "--flow", "the_model")) == {"moves": 0, "sla_breaches": 0}
    assert tick(4) == "0 moves made, 0 SLA breaches recorded\n"
    # From Python: still the number of moves, with the breaches beside it.
    with Engine.open(db=db_url, now=T0 + timedelta(days=30)) as engine:
        engine.add_lead("s4", email="s4@x.example", at=T0 + timedelta(days=20))
        engine.advance("s4", to="contacting", force=True, reason="called in", at=T0 + timedelta(days=20))
        ticked = engine.tick()
        assert ticked == 0 and ticked.moves == 0 and ticked.sla_breaches == 1
        assert f"{ticked} moves" == "0 moves"
        assert engine.tick().sla_breaches == 0


def test_show_tells_the_stages_sla_and_whether_the_lead_is_past_it(db_url: str) -> None:
    cli = Cli(db_url)
    cli("deploy", THE_MODEL)
    cli("lead", "add", "s1", "--set", "email=s1@x.example")
    assert cli.json("show", "s1")["sla"] is None  # its stage has no SLA
    cli("advance", "s1", "--to", "contacting", "--force", "--reason", "called in")  # sla 2 days
    soon = cli("show", "s1", now=T0 + timedelta(days=1)).stdout
    assert "  sla     2 days in this stage, due 2024-05-03T09:00:00+00:00, 1 day left" in soon
    late = cli("show", "s1", now=T0 + timedelta(days=66, hours=18, minutes=30)).stdout
    assert "due 2024-05-03T09:00:00+00:00, overdue by 64.8 days" in late
    shown = json.loads(cli("show", "s1", "--json", now=T0 + timedelta(days=3)).stdout)
    assert shown["sla"] == {"days": 2, "due_at": "2024-05-03T09:00:00+00:00", "overdue": True}


def test_leads_overdue_rounds_days_for_people(db_url: str) -> None:
    cli = Cli(db_url)
    cli("deploy", THE_MODEL)
    cli("lead", "add", "o1", "--set", "email=o1@x.example")
    cli("advance", "o1", "--to", "contacting", "--force", "--reason", "called in")
    now = T0 + timedelta(days=66, hours=18, minutes=30)  # due on day 2: 64.7708… days late
    text = cli("leads", "--overdue", now=now).stdout.splitlines()
    assert text[-1] == "1 lead overdue"
    assert "overdue 64.8 days (SLA 2 days, due 2024-05-03T09:00:00+00:00)" in text[0]
    assert "64.77" not in text[0]
    listed = json.loads(cli("leads", "--overdue", "--json", now=now).stdout)
    assert listed[0]["overdue_days"] == 64.7708  # as before: not rounded for people
    # a few minutes late is not "0 days" late
    soon = cli("leads", "--overdue", now=T0 + timedelta(days=2, minutes=10)).stdout
    assert "overdue <0.1 days (SLA 2 days," in soon


def test_history_json(db_url: str) -> None:
    cli = Cli(db_url, actor="bob")
    cli("deploy", THE_MODEL)
    cli("lead", "add", "h", "--at", "2024-04-01")
    cli("lead", "set", "h", "email=h@x.example", "--at", "2024-04-02")
    cli("advance", "h", "--to", "lost", "--force", "--reason", "spam")
    history = cli.json("history", "h")
    assert [set(e) >= HISTORY_KEYS for e in history] == [True, True, True]
    assert [(e["seq"], e["from"], e["to"], e["kind"]) for e in history] == [
        (1, None, "awareness", "create"),
        (2, "awareness", "lead", "advance"),
        (3, "lead", "lost", "force"),
    ]
    assert [e["actor"] for e in history] == ["bob", "bob", "bob"]
    assert [e["reason"] for e in history] == [None, None, "spam"]
    assert [datetime.fromisoformat(e["at"]) for e in history] == [
        datetime(2024, 4, 1, tzinfo=UTC),
        datetime(2024, 4, 2, tzinfo=UTC),
        T0,
    ]
    header, *text = cli("history", "h").stdout.splitlines()
    assert header.split() == ["#", "AT", "FROM", "->", "TO", "KIND", "ACTOR"]
    assert len(text) == 3 and "create" in text[0] and "(spam)" in text[2]
    with cli.api() as engine:
        assert [e.lead_seq for e in engine.history("h", moves_only=False)] == [1, 2, 3, 4]


def test_leads_json_by_flow_stage_and_team(db_url: str) -> None:
    cli = Cli(db_url)
    cli("deploy", THE_MODEL)
    cli("lead", "add", "l1", "--set", "email=1@x.example")
    cli("lead", "add", "l2")
    cli("lead", "add", "l3", "--set", "email=3@x.example", "--set", "budget=20000", "--set", "need=yes")
    cli("lead", "set", "l3", "authority=influencer")
    cli("event", "l3", "inbound_question")
    leads = cli.json("leads")
    assert all(set(x) >= LEADS_KEYS for x in leads)
    assert [(x["id"], x["flow"], x["stage"]) for x in leads] == [
        ("l1", "the_model", "lead"),
        ("l2", "the_model", "awareness"),
        ("l3", "the_model", "sql"),
    ]
    assert [x["score"] for x in leads] == [-20, -20, 30]
    assert [x["id"] for x in cli.json("leads", "--stage", "lead")] == ["l1"]
    assert [x["id"] for x in cli.json("leads", "--team", "inside_sales")] == ["l3"]
    assert [x["id"] for x in cli.json("leads", "--flow", "the_model", "--team", "marketing")] == ["l1", "l2"]
    assert cli.json("leads", "--stage", "closed_won") == []
    header, *text = cli("leads").stdout.splitlines()
    assert header.split() == ["ID", "FLOW", "STAGE", "SCORE"]
    assert text[-1] == "3 leads" and text[0].split()[:3] == ["l1", "the_model", "lead"]
    with cli.api() as engine:
        assert [x.id for x in engine.leads(team="inside_sales")] == ["l3"]


def test_listings_stay_aligned_with_long_stage_names(db_url: str, tmp_path: Path) -> None:
    flow = tmp_path / "long.flow"
    flow.write_text(
        "flow long_names\nfield email text\n"
        'team t "T" {\n  stage subscriber initial\n  stage marketingqualifiedlead when email is set\n}\n',
        encoding="utf-8",
    )
    cli = Cli(db_url)
    cli("deploy", str(flow))
    cli("lead", "add", "a", "--set", "email=a@x.example")
    cli("lead", "add", "b")
    rows = cli("leads").stdout.splitlines()[:-1]
    assert [row.split()[2] for row in rows] == ["STAGE", "marketingqualifiedlead", "subscriber"]
    assert len({len(row) for row in rows}) == 1  # the score column lines up, the header too
    lines = cli("history", "a").stdout.splitlines()[1:]
    assert len(lines) == 2 and len({line.index(" -> ") for line in lines}) == 1
    assert (
        len({line.index(" advance") if "advance" in line else line.index(" create") for line in lines}) == 1
    )


def test_every_command_that_changes_something_speaks_json(db_url: str) -> None:
    """Issue 10 item 8: --json on deploy, lead set, event, advance (and
    --all), lead migrate and audit verify."""
    cli = Cli(db_url)
    deployed = cli.json("deploy", str(THE_MODEL))
    assert deployed == {"flow": "the_model", "version": 1, "created": True}
    assert cli.json("deploy", str(THE_MODEL))["created"] is False
    cli("lead", "add", "j", "--flow", "the_model")
    shown = cli.json("lead", "set", "j", "email=j@x.example")
    assert (shown["id"], shown["stage"], shown["previous_stage"], shown["previous_version"]) == (
        "j",
        "lead",
        "awareness",
        1,
    )
    assert {"fields", "events", "next", "score"} <= set(shown)
    event = cli.json("event", "j", "web_visit")
    assert event["events"]["web_visit"] == 1 and event["previous_stage"] == "lead"
    moved = cli.json("advance", "j", "--to", "disqualified", "--force", "--reason", "test")
    assert (moved["stage"], moved["previous_stage"]) == ("disqualified", event["stage"])
    assert cli.json("advance", "--all") == {"moves": 0}
    migrated = cli.json("lead", "migrate", "j")
    assert (migrated["version"], migrated["previous_version"]) == (1, 1)
    assert cli.json("audit", "verify") == {"ok": True, "problems": []}


def test_the_actor_comes_from_the_environment(db_url: str) -> None:
    runner = CliRunner(env={"SALEFLOW_ACTOR": "eve"})
    args = ["--db", db_url, "--now", T0.isoformat()]
    assert runner.invoke(main, [*args, "lead", "add", "e", "--flow", str(THE_MODEL)]).exit_code == 0
    with Engine.open(db=db_url) as engine:
        assert [entry.actor for entry in engine.history("e")] == ["eve"]
    # --actor wins over the environment
    assert runner.invoke(main, [*args, "--actor", "bob", "lead", "set", "e", "company=E"]).exit_code == 0
    with Engine.open(db=db_url) as engine:
        assert engine.history("e", moves_only=False)[-1].actor == "bob"


def test_batches_and_reports_say_how_far_they_are(db_url: str) -> None:
    """What the progress bars on a terminal are fed: every lead once."""
    from saleflow.views.report import report_for

    cli = Cli(db_url)
    cli("deploy", str(THE_MODEL))
    for n in range(7):
        cli("lead", "add", f"p{n}", "--flow", "the_model")
    with cli.api() as engine:
        seen: list[int] = []
        engine.advance_all(chunk=3, progress=seen.append)
        assert seen == [3, 3, 1]
        ticked: list[int] = []
        engine.tick(chunk=5, progress=ticked.append)
        assert ticked == []  # no lead is due: tick visits none (SPEC §8)
        assert engine.store.count_due(engine.now()) == 0
        engine.tick(chunk=5, progress=ticked.append, every=True)
        assert ticked == [5, 2]
        read: list[int] = []
        report_for(engine, "the_model", progress=read.append)
        assert sum(read) == 7
