"""Test blocks in flow files (SPEC §7): syntax, checks, the runner and
`saleflow test`; durations in hours; a flow's identity.

The runner works on real in-memory SQLite stores through the real engine,
so every verdict here is the engine's own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saleflow.check.rules import check
from saleflow.cli.app import main
from saleflow.errors import FlowInvalid
from saleflow.language.parse import parse_flow
from saleflow.model.expr import duration_text
from saleflow.model.identity import identity
from saleflow.model.unparse import unparse
from saleflow.runtime.testing import run_tests

FLOW = """\
flow shop version 1
field email  text
field size   int default 0
field tier   one of [free, pro] default free
field owner  text
event visit  channel web
event demo   channel inbound
event closed
score {
  +10 each visit in last 48 hours
}
team marketing {
  stage new  initial
  stage lead when email is set
}
team sales {
  stage call  when owner is set  sla 4 hours
  stage deal  when demo >= 1  capacity 1
  stage won   when closed >= 1
  target time in call <= 6 hours
}
stage lost final
skip lead -> deal when tier == pro
recycle call, deal -> lead when size == 0
"""


def flow_with(tests: str, path: str = "shop.flow"):  # type: ignore[no-untyped-def]
    return parse_flow(FLOW + tests, path)


def results(tests: str):  # type: ignore[no-untyped-def]
    return run_tests(flow_with(tests))


# ---------------------------------------------------------------- durations


def test_hours_are_exact_fractions_of_a_day_wherever_a_duration_is_written() -> None:
    flow = parse_flow(FLOW)
    call = flow.stage("call")
    assert call is not None and call.sla_days == 4 / 24
    assert duration_text(4 / 24) == "4 hours"
    assert duration_text(2) == "2 days" and duration_text(1) == "1 day" and duration_text(1 / 24) == "1 hour"
    each = flow.score_rules[0].each
    assert each is not None and unparse(each) == "visit in last 2 days"  # 48 hours is 2 days
    target = flow.team("sales").targets[0]  # type: ignore[union-attr]
    assert str(target) == "time in call <= 6 hours"
    assert parse_flow(FLOW.replace("4 hours", "1 hour")).stage("call").sla_days == 1 / 24  # type: ignore[union-attr]
    assert parse_flow(FLOW.replace("48 hours", "1 day")) == parse_flow(FLOW.replace("48 hours", "24 hours"))
    assert check(flow) == []


def test_check_judges_durations_in_hours_too() -> None:
    bad = parse_flow(FLOW.replace("visit in last 48 hours", "visit in last 0 hours"), "shop.flow")
    line = FLOW.splitlines().index("  +10 each visit in last 48 hours") + 1
    [diagnostic] = [d for d in check(bad) if d.is_error]
    assert diagnostic.code == "SF116"
    assert diagnostic.message == "a window of 0 days never holds any event"
    assert (diagnostic.span.line, diagnostic.span.column) == (line, 26)  # the 0 of "0 hours"
    with pytest.raises(FlowInvalid) as caught:
        parse_flow(FLOW.replace("48 hours", "1.5 hours"), "shop.flow")
    assert caught.value.diagnostics[0].code == "SF004"


def test_an_sla_in_hours_runs_out_on_the_hour() -> None:
    [early, late] = results(
        """
test "early" {
  lead a with email = "a@x", owner = "ann"
  expect stage call
  wait 3 hours
  expect sla breached
}
test "late" {
  lead a with email = "a@x", owner = "ann"
  wait 4 hours
  wait 1 hour
  expect sla breached
  expect days_in_stage > 0.2
}
"""
    )
    assert not early.passed and "within its SLA" in early.message
    assert early.span.line == FLOW.count("\n") + 6
    assert late.passed, late.message


def test_a_window_in_hours_closes_as_the_test_clock_moves() -> None:
    [result] = results(
        """
test "window" {
  lead a with email = "a@x"
  event visit x 2
  expect score == 20 and visit in last 48 hours == 2
  wait 47 hours
  expect score == 20
  wait 2 hours
  expect visit in last 48 hours == 0 and score == 0
  expect visit == 2
}
"""
    )
    assert result.passed, result.message


# ---------------------------------------------------------------- the runner


def test_the_spec_example_scenario_passes_and_a_wrong_expectation_fails_with_blockers() -> None:
    flow = flow_with(
        """
test "pro leads with a demo skip to deal" {
  lead acme with email = "cto@acme.example", tier = pro,
                 size = 40
  event demo channel inbound
  expect stage deal
  expect refused won
}
test "free leads do not" {
  lead acme with email = "cto@acme.example", tier = free
  event demo
  expect stage deal
}
"""
    )
    passed, failed = run_tests(flow)
    assert passed.passed and passed.message == ""
    assert not failed.passed
    blocker = 'skip → deal is blocked: skip condition: tier == pro is false (tier is "free")'
    assert failed.message == f'expected stage deal, lead "acme" is in lead; {blocker}'
    assert failed.blockers == (blocker,)
    line = FLOW.count("\n") + 12
    assert (failed.span.file, failed.span.line, failed.span.column) == ("shop.flow", line, 3)
    rendered = failed.render(flow.source).splitlines()
    assert rendered[0] == "FAIL free leads do not"
    assert rendered[1] == f"  shop.flow:{line}:3: {failed.message}"
    assert rendered[2].endswith("|   expect stage deal")
    assert rendered[3].endswith("|   ^^^^^^^^^^^^^^^^^")


def test_every_step_kind_runs_through_the_engine() -> None:
    [result] = results(
        """
test "everything" {
  at 2026-03-02T09:00:00Z
  lead a with email = "a@x", size = 5
  lead b with email = "b@x", size = 5
  use a
  set owner = "ann"
  expect stage call
  event demo channel inbound
  expect stage deal
  use b
  set owner = "bob"
  event demo
  expect stage call
  expect waiting deal
  use a
  force to lost reason "went quiet"
  use b
  expect stage deal
  set size = 0
  advance to lead reason "no budget"
  expect cycle 2
  expect stage call
  expect not (size > 0) and tier == free
}
"""
    )
    assert result.passed, result.message


def test_a_refused_advance_fails_the_step_and_names_why() -> None:
    [result] = results(
        """
test "refused" {
  lead a with email = "a@x", owner = "ann", size = 3
  advance to lead reason "try"
}
"""
    )
    assert not result.passed
    assert result.message.startswith("advance to lead was refused: ")
    assert "size == 0 is false (size is 3)" in result.message


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ("expect cycle 2", 'expected cycle 2, lead "a" is in cycle 1'),
        ("expect waiting deal", 'expected lead "a" to wait for room in deal; it is in lead, not waiting'),
        ("expect refused lost", 'expected a move to lost to be refused; lead "a" in lead may exit to it now'),
        ("expect sla breached", 'expected a breached SLA; stage lead of lead "a" has no SLA'),
        ("expect size >= 10", 'expected size >= 10; for lead "a" size >= 10 is false (size is 0)'),
    ],
)
def test_each_expectation_can_fail(steps: str, fragment: str) -> None:
    flow = flow_with(
        f'test "t" {{\n  lead a with email = "a@x"\n  event visit x 2\n  wait 1 hour\n{steps}\n}}\n'
    )
    [result] = run_tests(flow)
    assert not result.passed
    assert fragment in result.message, result.message


def test_each_test_has_its_own_store_and_k_selects_by_name() -> None:
    flow = flow_with(
        """
test "one" { lead a with email = "a@x" }
test "two" { lead a with email = "a@x" expect stage lead }
"""
    )
    assert [r.passed for r in run_tests(flow)] == [True, True]  # lead "a" twice: two stores
    assert [r.test for r in run_tests(flow, select="tw")] == ["two"]
    assert run_tests(flow, select="none") == []


def test_the_runner_refuses_a_flow_that_does_not_check() -> None:
    with pytest.raises(FlowInvalid):
        run_tests(flow_with('test "t" { lead a with emial = "x" }'))


# ---------------------------------------------------------------- the command


def write(tmp_path: Path, tests: str, name: str = "shop.flow") -> str:
    path = tmp_path / name
    path.write_text(FLOW + tests, encoding="utf-8")
    return str(path)


def test_saleflow_test_prints_a_line_per_test_and_exits_by_verdict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
test "passes" { lead a with email = "a@x" expect stage lead }
test "fails" {
  lead a with email = "a@x"
  expect stage won
}
""",
    )
    runner = CliRunner()
    result = runner.invoke(main, ["test", path])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    line = FLOW.count("\n") + 5
    assert lines[0] == "PASS passes"
    assert lines[1] == "FAIL fails"
    assert lines[2].startswith(
        f'  {path}:{line}:3: expected stage won, lead "a" is in lead; advance → call is'
    )
    assert lines[3] == f"  {line:>4} |   expect stage won"
    assert lines[-1] == "1 passed, 1 failed"
    only = runner.invoke(main, ["test", path, "-k", "pass"])
    assert (only.exit_code, only.stdout.splitlines()[-1]) == (0, "1 passed, 0 failed")
    listed = json.loads(runner.invoke(main, ["test", path, "--json"]).stdout)
    assert [set(item) for item in listed] == [
        {"test", "passed", "file", "line", "column", "message", "blockers"}
    ] * 2
    assert [(item["test"], item["passed"], item["line"]) for item in listed] == [
        ("passes", True, FLOW.count("\n") + 2),
        ("fails", False, line),
    ]


def test_saleflow_test_exits_2_when_the_file_does_not_check(tmp_path: Path) -> None:
    path = write(tmp_path, 'test "t" {\n  lead a\n  expect stage wun\n}\n')
    result = CliRunner().invoke(main, ["test", path])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert 'error[SF106]: unknown stage "wun"' in result.stderr
    assert 'hint: did you mean "won"?' in result.stderr
    assert result.stderr.splitlines()[-1] == f"error: {path} is not a valid flow (1 error)"
    missing = CliRunner().invoke(main, ["test", str(tmp_path / "nope.flow")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


# ---------------------------------------------------------------- checks


CHECKS = [
    ('test "a" { lead x }\ntest "a" { lead y }', "SF401", 'test "a" is declared twice'),
    ('test "a" { expect stage lead }', "SF402", "has no lead yet"),
    ('test "a" { lead x lead x }', "SF403", 'lead "x" is created twice'),
    ('test "a" { lead x use y }', "SF404", 'has no lead "y" yet'),
    ('test "a" { at 2025-12-31T23:59:59Z }', "SF405", "cannot go back"),
    ('test "a" { at 2026-02-30T00:00:00Z }', "SF405", "2026-02-30"),
    ('test "a" { at 9999-12-31T00:00:00Z }', "SF405", "out of range"),
    ('test "a" { lead x event visit x 0 }', "SF406", "from 1 to"),
    ('test "a" { wait 0 hours }', "SF406", "longer than 0"),
    ('test "a" { lead x expect cycle 0 }', "SF406", "cycle"),
    ('test "a" { lead x with size = "big" }', "SF407", "not a number"),
    ('test "a" { lead x with email = bob }', "SF407", "bare name"),
    ('test "a" { lead x expect waiting call }', "SF408", "no capacity"),
    ('test "a" { lead x with emial = "e" }', "SF104", 'unknown field "emial"'),
    ('test "a" { lead x event vist }', "SF105", 'unknown event "vist"'),
    ('test "a" { lead x advance to wun }', "SF106", 'unknown stage "wun"'),
    ('test "a" { lead x force to wun reason "r" }', "SF106", 'unknown stage "wun"'),
    ('test "a" { lead x with tier = gold }', "SF112", '"gold" is not one of the values'),
    ('test "a" { lead x expect siez > 1 }', "SF104", 'unknown name "siez"'),
    ('test "a" { lead x expect size > "big" }', "SF110", ""),
]


@pytest.mark.parametrize(("tests", "code", "fragment"), CHECKS, ids=[c[1] + "-" + c[2][:20] for c in CHECKS])
def test_check_judges_test_blocks(tests: str, code: str, fragment: str) -> None:
    try:
        diagnostics = check(flow_with(tests))
    except FlowInvalid as err:
        diagnostics = list(err.diagnostics)
    found = [d for d in diagnostics if d.code == code]
    assert found, [d.headline() for d in diagnostics]
    assert fragment in found[0].message
    assert found[0].span.line > FLOW.count("\n")  # points into the test block


def test_a_well_formed_test_block_checks_clean() -> None:
    flow = flow_with(
        """
test "all steps" {
  at 2026-03-02T09:00:00Z
  lead a with email = "a@x", size = 3, tier = pro, owner = "ann"
  lead b
  use a
  set size = 4, tier = free
  event visit x 2 channel web
  wait 2 days
  wait 1 hour
  advance to call reason "r"
  force to lost reason "r"
  expect stage lost
  expect cycle 1
  expect waiting deal
  expect refused won
  expect sla breached
  expect size >= 4 and tier == free
}
"""
    )
    assert check(flow) == []
    assert [s.kind for s in flow.tests[0].steps][:4] == ["at", "lead", "lead", "use"]


# ---------------------------------------------------------------- identity


def test_identity_is_the_meaning_not_tests_comments_or_layout() -> None:
    plain = parse_flow(FLOW)
    dressed = parse_flow(
        "# a comment\n"
        + FLOW.replace("field email  text", "field   email text   # who")
        + 'test "t" { lead a }\n'
    )
    assert identity(plain) == identity(dressed)
    assert identity(plain) == identity(parse_flow(FLOW.replace("48 hours", "2 days")))
    assert identity(plain) != identity(parse_flow(FLOW.replace("capacity 1", "capacity 2")))
    assert identity(plain) != identity(parse_flow(FLOW.replace("version 1", "version 2")))


# ---------------------------------------------------------------- bad input

WORDS = [
    "test",
    '"t"',
    "{",
    "}",
    "lead",
    "a",
    "b",
    "with",
    "email",
    "=",
    '"x"',
    ",",
    "use",
    "set",
    "size",
    "3",
    "-1",
    "event",
    "visit",
    "x",
    "0",
    "99999999999999999999",
    "channel",
    "web",
    "wait",
    "2",
    "hours",
    "days",
    "advance",
    "force",
    "to",
    "call",
    "won",
    "reason",
    "expect",
    "stage",
    "cycle",
    "waiting",
    "deal",
    "refused",
    "sla",
    "breached",
    "at",
    "2026-02-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    ">=",
    "and",
    "not",
    "(",
    ")",
    "tier",
    "pro",
    "gold",
    "\n",
    "1.5",
    "at least",
    "of",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(WORDS), max_size=30))
def test_any_test_block_text_gives_results_or_diagnostics_never_a_traceback(words: list[str]) -> None:
    source = FLOW + 'test "fuzz" {\n  lead a with email = "x"\n  ' + " ".join(words) + "\n}\n"
    try:
        flow = parse_flow(source, "fuzz.flow")
        diagnostics = check(flow)
    except FlowInvalid as err:
        assert err.diagnostics and all(d.span.line >= 1 for d in err.diagnostics)
        return
    if any(d.is_error for d in diagnostics):
        return
    for result in run_tests(flow):
        assert result.passed or result.message


def test_a_wait_past_the_year_9000_is_a_failed_step_not_a_crash() -> None:
    waits = "  wait 364999 days\n" * 8  # each one in range, together past the year 9000
    [result] = results('test "far" {\n  lead a with email = "x"\n' + waits + "}\n")
    assert not result.passed
    assert "out of range" in result.message, result.message
    assert result.span.line == FLOW.count("\n") + 2 + 7  # the wait that went too far


def test_the_readme_example_flow_passes_its_tests_and_fails_as_shown() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [source] = [text for text in re.findall(r"```flow\n(.*?)```", readme, re.S) if "\ntest " in text]
    assert all(r.passed for r in run_tests(parse_flow(source, "flows/inbound.flow")))
    broken = source.replace(
        'lead acme with email = "cto@acme.example", tier = pro', 'lead acme with email = "cto@acme.example"'
    )
    flow = parse_flow(broken, "flows/inbound.flow")
    shown = re.search(r"```text\n(FAIL a pro demo.*?)```", readme, re.S)
    assert shown is not None
    assert run_tests(flow)[0].render(flow.source) + "\n" == shown.group(1)


def test_a_database_from_before_identities_keeps_its_versions(db_url: str) -> None:
    """Rows deployed by an earlier saleflow hold a hash of the raw text, and
    may have been renumbered silently (a `version 1` file stored as 2)."""
    from saleflow.errors import BadInput
    from saleflow.model.identity import content_hash
    from saleflow.runtime.engine import Engine
    from saleflow.store import open_store

    changed = FLOW.replace("capacity 1", "capacity 2")
    store = open_store(db_url)
    store.deploy_flow("shop", 1, content_hash(FLOW), FLOW, "shop.flow")
    store.deploy_flow("shop", 2, content_hash(changed), changed, "shop.flow")  # says version 1
    with Engine(store, now="2026-01-01T00:00:00Z") as engine:
        relaid = "# moved around\n" + FLOW.replace("field size   int default 0", "field size int  default 0")
        assert engine.deploy(parse_flow(relaid, "shop.flow")).version == 1
        assert engine.deploy(parse_flow(changed + 'test "t" { lead a }\n', "shop.flow")).version == 2
        with pytest.raises(BadInput, match=r"raise its version to 3"):
            engine.deploy(parse_flow(FLOW.replace("capacity 1", "capacity 5"), "shop.flow"))
        assert store.latest_version("shop") == 2
