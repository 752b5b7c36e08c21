"""The static checks, rule by rule: a table of (source, code, fragment, pointed)
where `pointed` is the source text the diagnostic's span must cover; then the
constructs that must *not* be flagged; then robustness (check never raises)."""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest

from saleflow.check.rules import RULES, check
from saleflow.errors import Diagnostic, FlowInvalid, Span
from saleflow.language.parse import parse_flow
from saleflow.model.expr import Compare, Literal, Ref
from saleflow.model.flow import Flow, Skip, Stage, Team

ROOT = Path(__file__).resolve().parent.parent

FACTS = """\
flow probe
field email       text
field employees   int default 0
field industry    one of [saas, finance, retail]
field authority   one of [none, user, decision_maker] default none
field budget      money
field need        bool default false
field signed_on   date
field lost_reason one of [no_budget, timing]
event web_visit   channel web
event meeting_held
"""

TEAMS = """\
team marketing {
  stage awareness initial
  stage lead      when email is set
  stage mql       when web_visit >= 1
}
team sales {
  stage opportunity when meeting_held >= 1
  stage won
}
stage lost final
"""


def flow(extra: str = "", *, facts: str = FACTS, teams: str = TEAMS) -> str:
    return facts + teams + extra


def cond(expr: str) -> str:
    """A flow whose one condition is `expr`."""
    return flow(f"condition probe = {expr}\n")


# (id, source, code, fragment of message or hint, text the span covers or None)
CASES: list[tuple[str, str, str, str, str | None]] = [
    # ---- SF101..SF103 names declared -------------------------------------
    ("dup-field", flow("field email text\n"), "SF101", 'field "email" is declared twice', "email"),
    ("dup-event", flow("event web_visit\n"), "SF101", 'event "web_visit" is declared twice', "web_visit"),
    ("dup-condition", flow("condition c = need\ncondition c = need\n"), "SF101", 'condition "c"', "c"),
    ("dup-stage", flow("stage lead final\n"), "SF101", 'stage "lead" is declared twice', "lead"),
    (
        "dup-team",
        flow('team sales "Again" { stage extra }\n'),
        "SF101",
        'team "sales" is declared twice',
        "sales",
    ),
    (
        "dup-enum-value",
        flow("field tier one of [gold, silver, gold]\n"),
        "SF101",
        'value "gold" is listed twice',
        "gold",
    ),
    (
        "clash-event-field",
        flow("event need\n"),
        "SF102",
        'event "need" has the same name as the field on line 7',
        "need",
    ),
    ("clash-condition-event", flow("condition web_visit = need\n"), "SF102", "same name as the event", None),
    (
        "shadow-builtin",
        flow("field days_in_stage int\n"),
        "SF103",
        'builtin "days_in_stage"',
        "days_in_stage",
    ),
    ("shadow-builtin-cond", flow("condition days_since_created = need\n"), "SF103", "builtin", None),
    # Regression: a field named like a word of expressions checked clean, yet
    # `when true` meant the literal and `when not` was a syntax error.
    ("reserved-field-true", flow("field true bool\n"), "SF103", 'the word "true"', "true"),
    ("reserved-event-not", flow("event not\n"), "SF103", 'the word "not"', "not"),
    ("reserved-cond-at", flow("condition at = need\n"), "SF103", 'the word "at"', "at"),
    ("reserved-field-days-since", flow("field days_since int\n"), "SF103", "days_since", "days_since"),
    ("reserved-enum-value", flow("field consent one of [yes, true]\n"), "SF103", 'value "true"', "true"),
    # ---- SF104 unknown names ---------------------------------------------
    ("unknown-name", cond("budjet >= 10"), "SF104", 'unknown name "budjet"', "budjet"),
    ("unknown-name-hint", cond("budjet >= 10"), "SF104", 'did you mean "budget"?', None),
    ("unknown-bool", cond("nede"), "SF104", 'did you mean "need"?', "nede"),
    ("unknown-in-gate", flow("stage extra final when emial is set\n"), "SF104", '"emial"', "emial"),
    ("unknown-in-skip", flow("skip lead -> mql when web_visits >= 1\n"), "SF104", "web_visits", "web_visits"),
    ("unknown-in-score", flow("score {\n  +5 if employess > 10\n}\n"), "SF104", "employess", "employess"),
    (
        "unknown-enum-value-alone",
        cond("saas"),
        "SF104",
        '"saas" is a value of field "industry"',
        "saas",
    ),
    ("unknown-in-list", cond("foo in [a, b]"), "SF104", 'unknown name "foo"', "foo"),
    # ---- SF105 events ----------------------------------------------------
    (
        "window-unknown",
        cond("web_vist in last 30 days >= 1"),
        "SF105",
        'unknown event "web_vist"',
        "web_vist",
    ),
    ("window-hint", cond("web_vist in last 30 days >= 1"), "SF105", 'did you mean "web_visit"?', None),
    ("days-since-unknown", cond("days_since meeting <= 3"), "SF105", 'unknown event "meeting"', "meeting"),
    (
        "window-field",
        cond("employees in last 30 days >= 1"),
        "SF105",
        '"employees" is a field, not an event',
        None,
    ),
    ("score-each-unknown", flow("score {\n  +5 each web_vist\n}\n"), "SF105", "web_vist", "web_vist"),
    (
        "score-each-field",
        flow("score {\n  +5 each employees\n}\n"),
        "SF105",
        "is a field, not an event",
        None,
    ),
    # ---- SF106 stages ----------------------------------------------------
    (
        "skip-unknown-target",
        flow("skip lead -> opportunty\n"),
        "SF106",
        'unknown stage "opportunty"',
        "opportunty",
    ),
    ("skip-unknown-hint", flow("skip lead -> opportunty\n"), "SF106", 'did you mean "opportunity"?', None),
    ("skip-unknown-source", flow("skip leed -> opportunity\n"), "SF106", 'unknown stage "leed"', "leed"),
    ("recycle-unknown-source", flow("recycle won, opp -> lead\n"), "SF106", 'unknown stage "opp"', "opp"),
    (
        "recycle-unknown-target",
        flow("recycle won -> nurture\n"),
        "SF106",
        '"nurture" in a recycle',
        "nurture",
    ),
    (
        "target-unknown",
        flow(
            teams=TEAMS.replace(
                "  stage won\n", "  stage won\n  target conversion opportunity -> wonn >= 20%\n"
            )
        ),
        "SF106",
        'unknown stage "wonn" in a target',
        "wonn",
    ),
    (
        "time-target-unknown",
        flow(teams=TEAMS.replace("  stage won\n", "  stage won\n  target time in oportunity <= 3 days\n")),
        "SF106",
        "oportunity",
        "oportunity",
    ),
    # ---- SF107 defaults --------------------------------------------------
    ("default-int-text", flow('field seats int default "many"\n'), "SF107", "does not fit", '"many"'),
    ("default-int-float", flow("field seats int default 2.5\n"), "SF107", "of type int", "2.5"),
    ("default-bool", flow("field vip bool default 1\n"), "SF107", "true or false", "1"),
    ("default-text", flow("field region text default 3\n"), "SF107", 'a "string"', "3"),
    ("default-date", flow('field renewal date default "soon"\n'), "SF107", "a date", '"soon"'),
    ("default-enum", flow("field tier one of [gold, silver] default gld\n"), "SF107", "not one of", "gld"),
    ("default-enum-hint", flow("field tier one of [gold, silver] default gld\n"), "SF107", '"gold"?', None),
    # ---- SF110 type mismatch ---------------------------------------------
    (
        "num-vs-text",
        cond('employees >= "many"'),
        "SF110",
        'field "employees" is a number but "many" is text',
        '"many"',
    ),
    ("bool-vs-num", cond("need == 1"), "SF110", 'field "need" is true or false but 1 is a number', "1"),
    ("text-vs-num", cond("email == 3"), "SF110", "type mismatch", "3"),
    ("event-vs-text", cond('web_visit == "x"'), "SF110", "type mismatch", '"x"'),
    ("date-vs-number", cond("signed_on > 5"), "SF110", "a date", "5"),
    ("enum-vs-number", cond("industry == 3"), "SF110", "one of [saas, finance, retail]", "3"),
    ("enum-vs-enum", cond("industry == authority"), "SF110", "type mismatch", "industry == authority"),
    ("list-item", cond('employees in [1, "two"]'), "SF110", '"two" is text', '"two"'),
    ("nested-num-text", cond('need and (budget < "lots")'), "SF110", "budget", '"lots"'),
    # ---- SF111 ordering --------------------------------------------------
    ("order-text", cond('email > "m"'), "SF111", '">" compares numbers or dates', 'email > "m"'),
    ("order-enum", cond("industry < saas"), "SF111", 'field "industry" is one of', "industry < saas"),
    ("order-bool", cond("need >= true"), "SF111", "true or false", None),
    # ---- SF112 enum values -----------------------------------------------
    (
        "enum-bare",
        cond("industry == retail2"),
        "SF112",
        '"retail2" is not one of field "industry"\'s values [saas, finance, retail]',
        "retail2",
    ),
    ("enum-bare-hint", cond("industry == retail2"), "SF112", 'did you mean "retail"?', None),
    ("enum-string", cond('industry != "bank"'), "SF112", '"bank" is not one of', '"bank"'),
    ("enum-left", cond("retial == industry"), "SF112", '"retial"', "retial"),
    ("enum-in", cond("lost_reason in [timing, budget_gone]"), "SF112", '"budget_gone"', "budget_gone"),
    ("enum-not-in", cond("authority not in [none, admin]"), "SF112", '"admin"', "admin"),
    ("enum-in-field", cond("authority in [none, employees]"), "SF110", "type mismatch", "employees"),
    # ---- SF113 boolean position ------------------------------------------
    (
        "bool-event",
        flow("stage extra final when web_visit\n"),
        "SF113",
        'event "web_visit" is a count',
        "web_visit",
    ),
    ("bool-event-hint", flow("stage extra final when web_visit\n"), "SF113", 'write "web_visit >= 1"', None),
    ("bool-int", cond("employees"), "SF113", 'field "employees" is a number', "employees"),
    ("bool-int-hint", cond("employees"), "SF113", '"employees > 0"', None),
    ("bool-text", cond("need and email"), "SF113", 'write "email is set"', "email"),
    ("bool-window", cond("web_visit in last 7 days"), "SF113", '"web_visit in last 7 days >= 1"', None),
    ("bool-score", cond("score"), "SF113", '"score" is a number', "score"),
    ("bool-literal", cond("not 3"), "SF113", "3 is a number", "3"),
    ("bool-at-least-item", cond("at least 1 of { need employees }"), "SF113", "employees", "employees"),
    ("bool-score-if", flow("score {\n  +5 if budget\n}\n"), "SF113", "budget", "budget"),
    # ---- SF114 is set ----------------------------------------------------
    ("is-set-event", cond("web_visit is set"), "SF114", 'event "web_visit" always has a value', "web_visit"),
    (
        "is-set-condition",
        flow("condition c = need\ncondition d = c is not set\n"),
        "SF114",
        'condition "c"',
        "c",
    ),
    ("is-set-builtin", cond("days_in_stage is set"), "SF114", 'builtin "days_in_stage"', "days_in_stage"),
    ("is-set-unknown", cond("phone is set"), "SF104", 'unknown name "phone"', "phone"),
    # ---- SF115..SF117 ----------------------------------------------------
    ("at-least-zero", cond("at least 0 of { need }"), "SF115", "at least 0", "0"),
    ("window-zero", cond("web_visit in last 0 days >= 1"), "SF116", "0 days", "0"),
    ("cycle", flow("condition a = b or need\ncondition b = a\n"), "SF117", "a -> b -> a", "b"),
    (
        "self-cycle",
        flow("condition a = need and a\n"),
        "SF117",
        'condition "a" depends on itself: a -> a',
        "a",
    ),
    (
        "long-cycle",
        flow("condition a = b\ncondition b = c\ncondition c = need and a\n"),
        "SF117",
        "a -> b -> c -> a",
        None,
    ),
    # ---- SF201..SF205 initial and final stages -----------------------------
    (
        "no-initial",
        flow(teams=TEAMS.replace("awareness initial", "awareness")),
        "SF201",
        'flow "probe" has no initial stage',
        "probe",
    ),
    (
        "no-initial-hint",
        flow(teams=TEAMS.replace("awareness initial", "awareness")),
        "SF201",
        "awareness",
        None,
    ),
    (
        "two-initial",
        flow(teams=TEAMS.replace("stage won", "stage won initial")),
        "SF202",
        '"awareness"',
        "initial",
    ),
    (
        "initial-side",
        flow("stage start initial\n", teams=TEAMS.replace("awareness initial", "awareness")),
        "SF203",
        'initial stage "start" is a side stage',
        "start",
    ),
    (
        "initial-gate",
        flow(teams=TEAMS.replace("awareness initial", "awareness initial when need")),
        "SF204",
        "cannot have a gate",
        "need",
    ),
    (
        "final-middle",
        flow(teams=TEAMS.replace("stage mql ", "stage mql final ")),
        "SF205",
        'final stage "mql" is not the last stage of the main line',
        "final",
    ),
    (
        "final-middle-hint",
        flow(teams=TEAMS.replace("stage mql ", "stage mql final ")),
        "SF205",
        '"opportunity"',
        None,
    ),
    # ---- SF206..SF209 skips and recycles ---------------------------------
    ("skip-backwards", flow("skip mql -> lead\n"), "SF206", "goes backwards", "lead"),
    ("skip-sideways", flow("skip mql -> mql\n"), "SF206", "to itself", None),
    ("skip-to-side", flow("skip lead -> lost\n"), "SF207", 'skip to side stage "lost"', "lost"),
    ("skip-to-side-hint", flow("skip lead -> lost\n"), "SF207", "by exit", None),
    (
        "skip-from-side",
        flow("stage hold\nskip hold -> won\n"),
        "SF207",
        'skip from side stage "hold"',
        "hold",
    ),
    ("recycle-forwards", flow("recycle lead -> won\n"), "SF208", 'recycle from "lead" goes forwards', "lead"),
    ("recycle-one-forward", flow("recycle won, lead -> mql\n"), "SF208", '"lead"', "lead"),
    ("recycle-itself", flow("recycle mql -> mql\n"), "SF208", "to itself", None),
    ("recycle-to-side", flow("recycle won -> lost\n"), "SF209", 'recycle to final side stage "lost"', "lost"),
    (
        "recycle-from-final",
        flow("recycle lost -> lead\n"),
        "SF209",
        'recycle from final side stage "lost"',
        "lost",
    ),
    (
        "recycle-from-final-main",
        flow(teams=TEAMS.replace("stage won", "stage won final")) + "recycle won -> lead\n",
        "SF209",
        'recycle from final stage "won"',
        "won",
    ),
    # ---- SF210..SF212 numbers --------------------------------------------
    (
        "target-percent",
        flow(
            teams=TEAMS.replace(
                "  stage won\n", "  stage won\n  target conversion opportunity -> won >= 120%\n"
            )
        ),
        "SF210",
        "120% is not a percentage",
        "120",
    ),
    (
        "target-backwards",
        flow(
            teams=TEAMS.replace(
                "  stage won\n", "  stage won\n  target conversion won -> opportunity >= 20%\n"
            )
        ),
        "SF211",
        "does not go forward",
        "opportunity",
    ),
    ("sla-zero", flow(teams=TEAMS.replace("stage won", "stage won sla 0 days")), "SF212", "sla", "0"),
    (
        "capacity-zero",
        flow(teams=TEAMS.replace("stage won", "stage won capacity 0")),
        "SF212",
        'capacity of stage "won"',
        "0",
    ),
    # ---- SF108, SF118, SF119, SF213: numbers beyond their range ------------
    ("int-default-2**63", flow("field big int default 9223372036854775808\n"), "SF108", "64-bit", None),
    ("int-default-400-digits", flow(f"field big int default {'9' * 400}\n"), "SF108", "(400 digits)", None),
    ("int-default-min", flow("field big int default -9223372036854775809\n"), "SF108", "64-bit", None),
    ("number-default-inf", flow(f"field big number default 1{'0' * 309}.5\n"), "SF108", "default inf", None),
    ("money-default-huge", flow(f"field big money default {'1' * 20}\n"), "SF108", "1e+18", None),
    (
        "text-default-long",
        flow(f'field note text default "{"a" * 100_001}"\n'),
        "SF108",
        "100,001 characters",
        None,
    ),
    ("date-default-far", flow('field due date default "9999-12-31"\n'), "SF108", "out of range", None),
    (
        "compare-2**63",
        cond("employees > 9223372036854775808"),
        "SF118",
        "fits 64 bits",
        "9223372036854775808",
    ),
    ("compare-inf", cond(f"budget < -1{'0' * 309}.0"), "SF118", "number -inf", None),
    ("in-list-huge", cond(f"employees in [1, {'7' * 400}]"), "SF118", "(400 digits)", None),
    ("window-days", cond("web_visit in last 365001 days >= 1"), "SF118", "longer than 365,000", "365001"),
    ("days-since-days", cond("days_since web_visit > 400000"), "SF118", "days compared with", "400000"),
    ("days-in-stage-days", cond("400000 <= days_in_stage"), "SF118", "days compared with", "400000"),
    ("at-least-huge", cond(f"at least {'5' * 400} of {{ need }}"), "SF118", "at most 2,147,483,647", None),
    ("points-huge", flow("score { +1000001 each web_visit }\n"), "SF118", "1,000,001 points", None),
    ("points-negative-huge", flow("score { -2000000 if need }\n"), "SF118", "2,000,000 points", None),
    (
        "condition-chain",
        flow(
            "".join(f"condition c{i} = c{i + 1} and need\n" for i in range(120)) + "condition c120 = need\n"
        ),
        "SF119",
        "nested too deeply through the conditions",
        None,
    ),
    (
        "version-2**63",
        "flow probe version 9223372036854775808\n" + flow(facts=FACTS[11:]),
        "SF213",
        "version",
        None,
    ),
    ("version-zero", "flow probe version 0\n" + flow(facts=FACTS[11:]), "SF213", "from 1 to", "0"),
    (
        "sla-long",
        flow(teams=TEAMS.replace("stage won", "stage won sla 365001 days")),
        "SF213",
        "sla",
        "365001",
    ),
    (
        "capacity-huge",
        flow(teams=TEAMS.replace("stage won", f"stage won capacity {'9' * 400}")),
        "SF213",
        "the limit is 1,000,000,000",
        None,
    ),
    (
        "target-days-long",
        flow(teams=TEAMS.replace("  stage won\n", "  stage won\n  target time in won <= 400000 days\n")),
        "SF210",
        "more than 365,000 days",
        "400000",
    ),
    ("long-stage-name", flow(f"stage {'s' * 256} final\n"), "SF120", "256 characters", "s" * 256),
    (
        "long-event-name",
        flow(f"event e{'1' * 300} channel {'c' * 256}\n"),
        "SF120",
        "names have at most",
        None,
    ),
    # ---- SF301..SF309 warnings -------------------------------------------
    ("unreachable-side", flow("stage parked\n"), "SF301", 'stage "parked" can never be reached', "parked"),
    (
        "unreachable-before-initial",
        flow(
            teams=TEAMS.replace(
                "stage awareness initial\n  stage lead ", "stage awareness\n  stage lead initial "
            )
        ),
        "SF301",
        '"awareness"',
        "awareness",
    ),
    (
        "no-way-out",
        flow(teams=TEAMS.replace("stage lost final\n", "")),
        "SF302",
        'stage "won" is not final and has no way out',
        "won",
    ),
    (
        "no-way-out-other-recycle",
        flow("recycle opportunity -> lead\n", teams=TEAMS.replace("stage lost final\n", "")),
        "SF302",
        '"won"',
        "won",
    ),
    ("at-least-too-many", cond("at least 3 of { need budget > 0 }"), "SF303", "at least 3 of 2 items", "3"),
    ("at-least-false", cond("at least 2 of { need false }"), "SF303", "only 1 of its 2 items", "2"),
    # Regression: the hint said "lower the count to 0 or fewer", an error (SF115).
    (
        "at-least-none-possible",
        cond("at least 1 of { false not true }"),
        "SF303",
        "fix or replace its items",
        "1",
    ),
    (
        "at-least-false-cond",
        flow("condition f = not true\ncondition g = at least 1 of { f }\n"),
        "SF303",
        "",
        "1",
    ),
    (
        "unused-event",
        flow("event demo_requested channel web\n"),
        "SF304",
        'event "demo_requested"',
        "demo_requested",
    ),
    (
        "ambiguous-value",
        flow("field user text\ncondition c = authority == user\n"),
        "SF305",
        'here is the field "user", not the value',
        "user",
    ),
    (
        "ambiguous-value-in-list",
        flow("condition user = need\ncondition c = authority in [none, user]\n"),
        "SF305",
        'the condition "user"',
        "user",
    ),
    (
        "recycle-twice",
        flow("recycle mql, opportunity, mql -> lead\n"),
        "SF306",
        'stage "mql" is listed twice in the recycle to "lead"',
        "mql",
    ),
    ("recycle-twice-hint", flow("recycle mql, mql -> lead\n"), "SF306", "remove this one", None),
    ("in-empty", cond("industry in []"), "SF307", '"industry in []" is always false', "industry in []"),
    ("in-empty-hint", cond("industry in []"), "SF307", "list the values to compare with", None),
    (
        "not-in-empty-event",
        cond("web_visit not in []"),
        "SF307",
        '"web_visit not in []" is always true: the list is empty',
        "web_visit not in []",
    ),
    (
        "not-in-empty-field",
        cond("need and industry not in [ ]"),
        "SF307",
        '"industry not in []" is always true once "industry" is set',
        "industry not in [ ]",
    ),
    ("not-in-empty-field-hint", cond("industry not in []"), "SF307", 'write "industry is set"', None),
    (
        "not-in-empty-days-since",
        cond("days_since web_visit not in []"),
        "SF307",
        'once "days_since web_visit" is set',
        "days_since web_visit not in []",
    ),
    ("in-empty-gate", flow("stage extra final when need or budget in []\n"), "SF307", "always false", None),
    ("in-empty-score-rule", flow("score {\n  +5 if employees in []\n}\n"), "SF307", "always false", None),
    (
        "score-no-rules",
        cond("score >= 60"),
        "SF308",
        '"score" is always 0: flow "probe" has no score rules',
        "score",
    ),
    ("score-no-rules-hint", cond("score >= 60"), "SF308", "score { … } block", None),
    ("score-no-rules-gate", flow("stage extra final when score >= 60\n"), "SF308", "always 0", "score"),
    ("score-no-rules-skip", flow("skip lead -> opportunity when score > 50\n"), "SF308", "always 0", "score"),
    ("score-no-rules-recycle", flow("recycle won -> lead when score < 10\n"), "SF308", "always 0", "score"),
    (
        "score-no-rules-did-you-mean",
        flow("field lead_score int\ncondition hot = score >= 60\n"),
        "SF308",
        'did you mean "lead_score"?',
        "score",
    ),
    ("score-empty-block", flow("score {\n}\ncondition hot = score >= 60\n"), "SF308", "always 0", "score"),
    ("team-empty", flow('team support "Support" { }\n'), "SF309", 'team "support" has no stages', "support"),
    (
        "team-empty-hint",
        flow("team support {\n}\n"),
        "SF309",
        "declare its stages inside it, or remove it",
        None,
    ),
    (
        "team-targets-only",
        flow("team kpis {\n  target conversion lead -> mql >= 20%\n}\n"),
        "SF309",
        "move its targets into the team that owns their stages",
        "kpis",
    ),
]


def render_report(diagnostics: list[Diagnostic], source: str) -> str:
    """What `saleflow check` prints for a file with diagnostics."""
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    counts = f"{errors} error{'' if errors == 1 else 's'}, {warnings} warning{'' if warnings == 1 else 's'}"
    return "\n".join([*(d.render(source) for d in diagnostics), counts])


def _pointed(source: str, span: Span) -> str:
    lines = source.splitlines()
    assert span.line == span.end_line, span
    return lines[span.line - 1][span.column - 1 : span.end_column - 1]


@pytest.mark.parametrize(
    ("source", "code", "fragment", "pointed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule(source: str, code: str, fragment: str, pointed: str | None) -> None:
    diagnostics = check(parse_flow(source, "probe.flow"))
    matching = [d for d in diagnostics if d.code == code and fragment in f"{d.message}\n{d.hint}"]
    assert matching, "\n".join(d.headline() for d in diagnostics) or "no diagnostics"
    if pointed is not None:
        assert pointed in [_pointed(source, d.span) for d in matching]
    for d in matching:
        assert d.span.file == "probe.flow"
        assert d.severity == ("warning" if code.startswith("SF3") else "error")


def test_every_code_is_exercised_and_documented() -> None:
    codes = {code for _, _, code, _, _ in CASES}
    docs = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    for code in codes:
        assert f"`{code}`" in docs, f"{code} is not documented"
    documented = set(re.findall(r"`(SF[123]\d\d)`", docs))
    assert documented <= codes, f"documented but never tested: {sorted(documented - codes)}"


_DOC_EXAMPLE = re.compile(
    r"### `(?P<code>SF\d+)`[^\n]*\n.*?```flow\n(?P<example>.*?)```\n\n```text\n(?P<output>.*?)```",
    re.S,
)


def _doc_output(base: str, example: str) -> tuple[str, list[Diagnostic]]:
    source = example if example.startswith("flow ") else base + example
    try:
        diagnostics = check(parse_flow(source, "example.flow"))
    except FlowInvalid as err:
        diagnostics = list(err.diagnostics)
    return render_report(diagnostics, source) + "\n", diagnostics


def test_documented_examples() -> None:
    """docs/diagnostics.md: each example gives its code, with the output shown
    (`SALEFLOW_REGEN=1` rewrites the output blocks)."""
    path = ROOT / "docs" / "diagnostics.md"
    doc = path.read_text(encoding="utf-8")
    base = re.search(r"```flow\n(flow example\n.*?)```", doc, re.S)
    assert base is not None
    base_text = base.group(1)
    assert check(parse_flow(base_text, "example.flow")) == []
    examples = list(_DOC_EXAMPLE.finditer(doc))
    assert len(examples) == doc.count("\n### `SF")
    rewritten = doc
    for match in reversed(examples):
        output, diagnostics = _doc_output(base_text, match.group("example"))
        assert match.group("code") in [d.code for d in diagnostics], output
        if os.environ.get("SALEFLOW_REGEN"):
            rewritten = rewritten[: match.start("output")] + output + rewritten[match.end("output") :]
        else:
            assert match.group("output") == output
    if rewritten != doc:
        path.write_text(rewritten, encoding="utf-8")


def test_rules_are_registered_once() -> None:
    assert len(RULES) == len(set(RULES))


# ---- what must not be flagged -------------------------------------------

VALID = [
    ("enum-bare-none", "authority == none"),
    ("enum-bare-left", "none == authority"),
    ("enum-in", "lost_reason in [timing, no_budget]"),
    ("enum-not-in", "industry not in [retail]"),
    ("enum-string", 'industry == "saas"'),
    ("enum-vs-text", "industry == email"),
    ("enum-is-set", "lost_reason is set and industry is not set"),
    ("bool-field", "need"),
    ("not-bool-field", "not need"),
    ("bool-compare", "need == true"),
    ("event-count", "web_visit >= 1 and meeting_held == 0"),
    ("window", "web_visit in last 30 days >= 10"),
    ("days-since", "days_since web_visit <= 14"),
    ("days-since-set", "days_since web_visit is set"),
    ("builtins", "days_in_stage > 90 and days_since_created < 365"),
    ("money", "budget >= 10000.5 and budget > employees"),
    ("negative", "budget > -1"),
    ("dates", 'signed_on >= "2024-01-31" and signed_on < signed_on'),
    ("text", 'email == "cto@acme.example" and email != owner_email'),
    ("at-least", "at least 2 of { need budget >= 1 authority in [user, decision_maker] }"),
    ("at-least-all", "at least 3 of { need need need }"),
    ("nested", "not (need or (employees > 5 and industry == saas))"),
    ("condition-ref", "big and not big"),
    ("literal-true", "true"),
    ("number-list", "employees in [1, 2, 3]"),
]


@pytest.mark.parametrize("expr", [v[1] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_expression_is_not_flagged(expr: str) -> None:
    source = flow(f"field owner_email text\ncondition big = employees >= 500\ncondition probe = {expr}\n")
    assert check(parse_flow(source, "probe.flow")) == []


VALID_FLOWS = [
    ("base", flow()),
    ("skip-forward", flow("skip lead -> opportunity when need\n")),
    ("skip-to-next", flow("skip lead -> mql\n")),
    (
        "skip-to-final-last",
        flow("skip awareness -> won\n", teams=TEAMS.replace("stage won", "stage won final")),
    ),
    ("recycle-back", flow("recycle mql, opportunity, won -> lead when lost_reason in [timing] auto\n")),
    ("recycle-to-initial", flow("recycle opportunity -> awareness\n")),
    ("final-last", flow(teams=TEAMS.replace("stage won", "stage won final"))),
    ("manual-stage", flow(teams=TEAMS.replace("stage won", "stage won manual"))),
    ("sla-capacity", flow(teams=TEAMS.replace("stage won", "stage won sla 2.5 days capacity 1"))),
    (
        "targets",
        flow(
            teams=TEAMS.replace(
                "  stage won\n",
                "  stage won\n  target conversion opportunity -> won >= 25%\n"
                "  target conversion opportunity -> lost <= 30%\n  target time in opportunity <= 5 days\n",
            )
        ),
    ),
    ("no-way-out-but-exit", flow()),
    (
        "last-stage-final-no-exit",
        flow(teams=TEAMS.replace("stage won", "stage won final").replace("stage lost final\n", "")),
    ),
    (
        "score",
        flow(
            "score {\n  +5 each web_visit in last 30 days\n  +15 each meeting_held\n"
            "  -20 if authority == none\n}\n"
        ),
    ),
    (
        "defaults",
        flow('field tier one of [gold, silver] default silver\nfield since date default "2024-02-29"\n'),
    ),
    (
        "defaults-num",
        flow("field ratio number default 1\nfield fee money default 9.5\nfield on bool default true\n"),
    ),
    ("field-unused", flow("field notes text\n")),
    ("last-stage-recycles", flow("recycle won -> lead\n", teams=TEAMS.replace("stage lost final\n", ""))),
    ("event-used-in-score-only", flow("event webinar\nscore {\n  +5 each webinar\n}\n")),
    (
        "score-used-with-rules",
        flow(
            "score {\n  +5 each web_visit\n}\ncondition hot = score >= 60 and score > 0\n"
            "skip lead -> opportunity when score >= 90\nrecycle won -> lead when score < 10\n"
        ),
    ),
    ("score-block-after-use", flow("condition hot = score >= 60\nscore {\n  +5 each web_visit\n}\n")),
    ("in-list-not-empty", flow("condition c = industry in [saas] and industry not in [retail]\n")),
    ("recycle-distinct-sources", flow("recycle mql, opportunity, won -> lead\n")),
    ("recycle-source-is-target-name", flow("recycle opportunity, won -> mql\n")),
    ("team-with-one-stage", flow('team support "Support" {\n  stage ticket\n}\n')),
    ("event-used-in-days-since", flow("event webinar\ncondition recent = days_since webinar <= 7\n")),
    ("stage-and-team-share-name", flow(teams=TEAMS.replace("team sales {", "team won {"))),
    ("enum-value-named-like-stage", flow("field phase one of [lead, won]\ncondition p = phase == lead\n")),
]


@pytest.mark.parametrize("source", [v[1] for v in VALID_FLOWS], ids=[v[0] for v in VALID_FLOWS])
def test_valid_flow_is_not_flagged(source: str) -> None:
    diagnostics = check(parse_flow(source, "probe.flow"))
    assert diagnostics == [], "\n".join(d.headline() for d in diagnostics)


@pytest.mark.parametrize("path", sorted((ROOT / "flows").glob("*.flow")), ids=lambda p: p.name)
def test_shipped_flows_check_clean(path: Path) -> None:
    flow_ = parse_flow(path.read_text(encoding="utf-8"), str(path))
    diagnostics = check(flow_)
    assert diagnostics == [], "\n\n".join(d.render(flow_.source) for d in diagnostics)


def test_the_model_is_shipped() -> None:
    assert (ROOT / "flows" / "the_model.flow").is_file()


# ---- the shape of the result ---------------------------------------------


def test_diagnostics_are_sorted_and_all_reported() -> None:
    source = flow(
        "condition a = budjet > 1\ncondition b = industry == retial\nskip mql -> lead\nstage parked\n"
    )
    diagnostics = check(parse_flow(source, "probe.flow"))
    assert [d.code for d in diagnostics] == ["SF104", "SF112", "SF206", "SF301"]
    positions = [(d.span.line, d.span.column) for d in diagnostics]
    assert positions == sorted(positions)


def test_one_mistake_one_diagnostic() -> None:
    # "budjet" is unknown: no type mismatch, no non-bool report on top
    diagnostics = check(parse_flow(cond("budjet >= 10 and budjet and budjet is set"), "probe.flow"))
    assert [d.code for d in diagnostics] == ["SF104"] * 3


# ---- robustness: check never raises ----------------------------------------


def test_flow_built_without_source() -> None:
    """Spans fall back to the nodes' own when there is no source text."""
    span = Span("x.flow", 3, 5, 3, 9)
    built = Flow(
        name="x",
        teams=(Team("t", None, ("a", "b", "ghost")),),
        stages=(
            Stage("a", team="t", initial=True, span=span),
            Stage("b", team="t", when=Compare(">=", Ref("nope", span), Literal(1, span), span), span=span),
            Stage("c", team="elsewhere", span=span),
        ),
        skips=(Skip("b", "a", span=span),),
    )
    codes = sorted(d.code for d in check(built))
    assert codes == ["SF104", "SF106", "SF106", "SF206", "SF302"]


def test_empty_flow() -> None:
    diagnostics = check(parse_flow("flow nothing\n", "empty.flow"))
    assert [d.code for d in diagnostics] == ["SF201"]


def _mutations(text: str, seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    lines = text.splitlines()
    words = sorted(set(text.split()))
    out = []
    for _ in range(count):
        mutated = list(lines)
        for _ in range(rng.randint(1, 4)):
            index = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.3:
                del mutated[index]
            elif choice < 0.6:
                mutated.insert(index, mutated[rng.randrange(len(mutated))])
            else:
                tokens = mutated[index].split()
                if tokens:
                    tokens[rng.randrange(len(tokens))] = rng.choice(words)
                    mutated[index] = " ".join(tokens)
        out.append("\n".join(mutated) + "\n")
    return out


def test_check_never_raises_on_mutated_flows() -> None:
    text = (ROOT / "flows" / "the_model.flow").read_text(encoding="utf-8")
    checked = 0
    for source in _mutations(text, seed=20240601, count=400):
        try:
            parsed = parse_flow(source, "m.flow")
        except FlowInvalid:
            continue
        diagnostics = check(parsed)
        checked += 1
        assert all(isinstance(d, Diagnostic) and d.span.line >= 1 for d in diagnostics)
        render_report(diagnostics, source)
    assert checked > 50


def test_reserved_enum_values_give_one_diagnostic() -> None:
    """Regression: `one of [true, false] default true` also reported the
    default as "not one of [true, false]" (did you mean "true"?) and every
    `== true` as a type mismatch."""
    source = flow(
        "field consent one of [true, false, unknown] default true\n"
        "condition agreed = consent == true or consent in [false]\n"
    )
    assert [d.code for d in check(parse_flow(source, "probe.flow"))] == ["SF103", "SF103"]


def test_at_least_hint_never_suggests_zero() -> None:
    (diagnostic,) = check(parse_flow(cond("at least 2 of { false (1 > 2) }"), "probe.flow"))
    assert diagnostic.code == "SF303"
    assert "none of its items" in diagnostic.message
    assert "0" not in (diagnostic.hint or "")


def test_huge_flow_checks_quickly() -> None:
    """Regression: names in skips and recycles were located in the source
    even with nothing to report; a recycle from each of 5,000 stages took 6 s."""
    lines = ["flow big", "event e", "team t {", "  stage s0 initial"]
    lines += [f"  stage s{i} when e >= {i}" for i in range(1, 5000)]
    lines += ["}", "stage lost final"]
    lines += [f"skip s{i} -> s{i + 5}" for i in range(0, 4990, 5)]
    lines.append("recycle " + ", ".join(f"s{i}" for i in range(1, 5000)) + " -> s0")
    parsed = parse_flow("\n".join(lines) + "\n", "big.flow")
    start = time.perf_counter()
    assert check(parsed) == []
    assert time.perf_counter() - start < 2


# ---- SF306..SF309 in detail -----------------------------------------------


def _warnings(source: str, code: str) -> list[Diagnostic]:
    return [d for d in check(parse_flow(source, "probe.flow")) if d.code == code]


def test_repeated_recycle_stage_is_reported_at_each_repetition() -> None:
    source = flow("recycle mql, opportunity, mql, won, mql -> lead\n")
    line = source.count("\n")
    found = _warnings(source, "SF306")
    assert [(d.span.line, d.span.column) for d in found] == [(line, 27), (line, 37)]
    assert all(_pointed(source, d.span) == "mql" for d in found)


def test_repeated_recycle_stage_is_a_warning_only() -> None:
    """A repeated stage does no harm to the moves: the flow is otherwise clean."""
    diagnostics = check(parse_flow(flow("recycle won, won -> lead\n"), "probe.flow"))
    assert [(d.code, d.severity) for d in diagnostics] == [("SF306", "warning")]


def test_empty_list_says_which_way_it_is_always() -> None:
    source = flow("condition a = industry in []\ncondition b = web_visit not in []\n")
    messages = [d.message for d in _warnings(source, "SF307")]
    assert messages == [
        '"industry in []" is always false: the list is empty',
        '"web_visit not in []" is always true: the list is empty',
    ]


def test_empty_list_messages_match_the_evaluator() -> None:
    """What SF307 says is what guards.py does: `in []` false whatever the
    value; `not in []` true for a set value, false for an unset one."""
    from datetime import UTC, datetime

    from saleflow.guards.evaluate import Evaluator
    from saleflow.guards.facts import Facts
    from saleflow.language.parse import parse_expr

    parsed = parse_flow(flow(), "probe.flow")
    evaluator = Evaluator(parsed)
    now = datetime(2024, 6, 1, tzinfo=UTC)
    set_, unset = (Facts(fields, [], now, now, now) for fields in ({"industry": "saas"}, {}))
    assert not evaluator.test(parse_expr("industry in []"), set_)
    assert not evaluator.test(parse_expr("industry in []"), unset)
    assert evaluator.test(parse_expr("industry not in []"), set_)
    assert not evaluator.test(parse_expr("industry not in []"), unset)
    assert evaluator.test(parse_expr("web_visit not in []"), unset)


def test_score_without_rules_is_reported_at_every_use() -> None:
    source = flow("condition a = score >= 60\nstage extra final when score > 10 or need\n")
    assert [_pointed(source, d.span) for d in _warnings(source, "SF308")] == ["score", "score"]


def test_fact_named_score_is_one_diagnostic() -> None:
    """A field named "score" is refused (SF103); its uses are not also SF308."""
    source = flow("field score int\ncondition hot = score >= 60\n")
    assert [d.code for d in check(parse_flow(source, "probe.flow"))] == ["SF103"]


def test_duplicate_empty_team_is_one_diagnostic() -> None:
    source = flow("team sales {\n}\n")
    assert [d.code for d in check(parse_flow(source, "probe.flow"))] == ["SF101"]


def test_every_empty_team_is_reported() -> None:
    source = flow("team a {\n}\nteam b { }\n")
    assert [_pointed(source, d.span) for d in _warnings(source, "SF309")] == ["a", "b"]


def test_spec_example_checks_clean() -> None:
    """SPEC §2's example flow (shipped as flows/the_model.flow) gives no
    diagnostic, not even a warning."""
    spec = ROOT.parent / "shared" / "SPEC.md"
    if not spec.is_file():
        pytest.skip("SPEC.md is not next to the repository")
    example = re.search(r"## 2\..*?```\n(.*?)```", spec.read_text(encoding="utf-8"), re.S)
    assert example is not None
    diagnostics = check(parse_flow(example.group(1), "spec.flow"))
    assert diagnostics == [], "\n".join(d.headline() for d in diagnostics)


def test_a_flow_built_in_python_with_a_deep_chain_is_refused_not_crashed() -> None:
    """A left-nested chain of 50,000 `or` nodes cannot come from flow text
    (SF007 in the parser), but a `Flow` built in Python may hold one: check
    reports it instead of recursing into a RecursionError."""
    from saleflow.model.expr import Compare, Literal, Or, Ref
    from saleflow.model.flow import Flow, Stage, Team

    gate: Or | Compare = Compare("==", Ref("x"), Literal(0))
    for i in range(1, 50_000):
        gate = Or((gate, Compare("==", Ref("x"), Literal(i))))
    flow = Flow(
        "deep",
        teams=(Team("t", None, ("a", "b")),),
        stages=(Stage("a", team="t", initial=True), Stage("b", team="t", when=gate)),
    )
    assert [d.code for d in check(flow)] == ["SF007"]
