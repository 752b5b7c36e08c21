"""The grammar and the parser: LALR with no conflicts, spans on every node,
syntax errors as positioned diagnostics, and a parser cache that is only ever
read from a folder the user owns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lark import Lark

from saleflow.errors import BadInput, FlowInvalid
from saleflow.language.parse import grammar_path, load_flow, parse_expr, parse_flow, read_source
from saleflow.limits import MAX_FLOW_BYTES
from saleflow.model import flow as m

ROOT = Path(__file__).resolve().parent.parent


def test_grammar_builds_strict_lalr() -> None:
    # strict=True: any shift/reduce conflict or terminal collision raises.
    Lark(grammar_path().read_text(), parser="lalr", strict=True, start=["start", "expr"])


def test_example_flow_model() -> None:
    flow = load_flow(ROOT / "flows" / "the_model.flow")
    assert (flow.name, flow.version, flow.title) == ("the_model", 1, "The Model — B2B SaaS")
    assert flow.main_line[:3] == ("awareness", "lead", "nurturing")
    assert flow.initial is not None and flow.initial.name == "awareness"
    assert flow.stage("opportunity") == m.Stage(
        "opportunity",
        team="field_sales",
        when=m.Compare(">=", m.Ref("meeting_held"), m.Literal(1)),
        capacity=50,
    )
    assert flow.stage("contacting") is not None and flow.stage("contacting").sla_days == 2  # type: ignore[union-attr]
    assert flow.stage("proposal").manual  # type: ignore[union-attr]
    assert [s.name for s in flow.stages if s.team is None] == ["lost", "disqualified"]
    assert flow.recycles[0].sources == ("contacting", "sal", "sql", "opportunity")
    assert flow.recycles[1].auto and not flow.recycles[0].auto
    assert flow.score_rules[-1] == m.ScoreRule(
        -20, condition=m.Compare("==", m.Ref("authority"), m.Ref("none"))
    )
    assert flow.teams[0].targets == (m.Target("conversion", "lead", "mql", ">=", 20),)
    assert flow.teams[1].targets == (m.Target("time", "contacting", None, "<=", 2),)


def test_spans_point_at_source() -> None:
    text = "flow f\nteam t {\n  stage a initial\n  stage b when budget >= 10\n}\n"
    flow = parse_flow(text, "x.flow")
    stage_b = flow.stage("b")
    assert stage_b is not None and stage_b.span.line == 4
    assert isinstance(stage_b.when, m.Compare)
    assert (stage_b.when.span.line, stage_b.when.span.column) == (4, 16)
    assert (stage_b.when.left.span.column, stage_b.when.left.span.end_column) == (16, 22)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a in last 3 days >= 2", m.Compare(">=", m.Window("a", 3), m.Literal(2))),
        ("not a and b", m.And((m.Not(m.Ref("a")), m.Ref("b")))),
        ("a or b and c", m.Or((m.Ref("a"), m.And((m.Ref("b"), m.Ref("c")))))),
        ('x not in [p, "q"]', m.InList(m.Ref("x"), (m.Ref("p"), m.Literal("q")), negated=True)),
        ("x is not set", m.IsSet(m.Ref("x"), negated=True)),
        ("at least 1 of { a -1 }", m.AtLeast(1, (m.Ref("a"), m.Literal(-1)))),
        ("days_since e > 2.5", m.Compare(">", m.DaysSince("e"), m.Literal(2.5))),
        ("score >= 60", m.Compare(">=", m.Ref("score"), m.Literal(60))),
    ],
)
def test_expressions(text: str, expected: m.Expr) -> None:
    assert parse_expr(text) == expected


@pytest.mark.parametrize(
    ("text", "code", "fragment", "line", "column"),
    [
        ("field x text", "SF001", 'a flow file starts with "flow NAME"', 1, 1),
        ("flow f\nteam t {\n stage a initial\n stage b when x = 1\n}", "SF001", 'compare with "=="', 4, 17),
        ("flow f\nstage a when x in (a)", "SF001", "square brackets", 2, 19),
        ("flow f\nfield x string", "SF001", "expected a type", 2, 9),
        ("flow f\nstage A", "SF002", "unexpected character 'A'", 2, 7),
        ("flow f\nstage a when", "SF003", "unexpected end of file", 2, 13),
        ("flow f\nstage a capacity 2.5", "SF004", "whole number", 2, 18),
        ("flow f\nstage a sla 1 days sla 2 days", "SF005", 'says "sla" twice', 2, 20),
        ("flow f\ntarget time in a <= 2 days", "SF006", "inside the team", 2, 1),
        ("   \n", "SF003", "the file is empty", 1, 1),
        (
            "flow f\nfield d date default 2026-01-31",
            "SF001",
            'a date is written in quotes, like "2026-01-31"',
            2,
            26,
        ),
        ("flow f\ncondition c = d > 2026-1-5", "SF001", "a date is written in quotes", 2, 23),
        ("flow f\nstage a when " + "not " * 101 + "b", "SF007", "nested too deeply", 2, 414),
        ("flow f\nstage a capacity " + "9" * 1001, "SF008", "1,001 characters", 2, 18),
        ("flow f\nfield x int default " + "9" * 5000, "SF008", "5,000 characters", 2, 21),
        ("flow f\nfield x number default 1" + "0" * 4999 + ".5", "SF008", "the limit is 1,000", 2, 24),
        ("flow f version " + "1" * 400 + ".5", "SF004", "whole number", 1, 16),
        ('flow f\nfield x text default "a\x00b"', "SF002", "NUL", 2, 24),
        ("flow f # \x00", "SF002", "NUL", 1, 10),
    ],
)
def test_syntax_errors_are_positioned_diagnostics(
    text: str, code: str, fragment: str, line: int, column: int
) -> None:
    with pytest.raises(FlowInvalid) as caught:
        parse_flow(text, "bad.flow")
    first = caught.value.diagnostics[0]
    assert first.code == code
    assert fragment in first.message
    assert (first.span.file, first.span.line, first.span.column) == ("bad.flow", line, column)
    assert "^" in first.render(text) or line == 1


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        load_flow(tmp_path / "missing.flow")
    with pytest.raises(BadInput, match="is a folder"):
        load_flow(tmp_path)
    latin = tmp_path / "latin.flow"
    latin.write_bytes(b"flow f\n# caf\xe9\n")
    with pytest.raises(BadInput, match=r"not UTF-8 text .*line 2"):
        load_flow(latin)


def test_big_flow_parses_quickly() -> None:
    lines = ["flow big", "team t {", "  stage s0 initial"]
    lines += [f"  stage s{i} when score >= {i}" for i in range(1, 5000)]
    lines.append("}")
    start = time.perf_counter()
    flow = parse_flow("\n".join(lines), "big.flow")
    assert len(flow.main_line) == 5000
    # Generous bound: a regression to a quadratic builder would take minutes.
    assert time.perf_counter() - start < 10


def test_deep_nesting_is_a_diagnostic_not_a_crash() -> None:
    """Regression: 3,000 nested `not` or 500 nested `at least` crashed
    `check`, `graph` and the engine with a RecursionError traceback."""
    for expr in ("not " * 3000 + "b", "at least 1 of { " * 500 + "b" + " }" * 500):
        with pytest.raises(FlowInvalid) as caught:
            parse_flow(f"flow f\nfield b bool\nstage a initial when {expr}\n", "deep.flow")
        (diagnostic,) = caught.value.diagnostics
        assert (diagnostic.code, diagnostic.span.line) == ("SF007", 3)
    # Up to the limit is fine, and parentheses do not count as levels.
    flow = parse_flow("flow f\nfield b bool\nstage a when " + "not " * 100 + "(" * 2000 + "b" + ")" * 2000)
    assert flow.stages[0].when is not None


CACHE_PROBE = "import saleflow.language.parse as p; p.parser(); print('ok')"


def _probe(cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SALEFLOW_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-c", CACHE_PROBE], env=env, capture_output=True, text=True, check=True
    )


def test_parser_cache_is_written_to_a_private_folder(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _probe(cache)
    files = list(cache.glob("parser-*.lark"))
    assert len(files) == 1
    assert (cache.stat().st_mode & 0o077) == 0  # created private
    _probe(cache)  # reused, not rebuilt beside it
    assert list(cache.glob("parser-*.lark")) == files


def test_parser_cache_in_a_shared_folder_is_never_used(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = _probe(shared)
    assert result.stdout.strip() == "ok"
    assert not list(shared.glob("parser-*.lark"))


def test_corrupt_cache_is_rebuilt_quietly(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _probe(cache)
    (found,) = cache.glob("parser-*.lark")
    found.write_bytes(b"garbage")
    result = _probe(cache)
    assert result.stdout.strip() == "ok" and result.stderr == ""


def test_flow_files_are_read_up_to_a_limit(tmp_path: Path) -> None:
    """/dev/zero or a file past MAX_FLOW_BYTES is refused in one sentence,
    after reading at most one byte more than the limit."""
    big = tmp_path / "big.flow"
    big.write_bytes(b"flow f\n" + b"#" * MAX_FLOW_BYTES)
    for path in (big, Path("/dev/zero")):
        with pytest.raises(BadInput, match="larger than 16 MiB, the limit for a flow file"):
            read_source(path)
    fits = tmp_path / "fits.flow"
    fits.write_bytes(b"flow f\n" + b"#" * (MAX_FLOW_BYTES - 7))
    assert len(read_source(fits)) == MAX_FLOW_BYTES
