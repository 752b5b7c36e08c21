"""`saleflow check` and `saleflow graph`, the global options and the one
place that maps errors to exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from saleflow.cli.app import SaleflowGroup, Settings, main
from saleflow.errors import BadInput, Conflict, NotFound, Rejected, StoreError
from saleflow.records import DEFAULT_URL

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = str(ROOT / "flows" / "the_model.flow")

TWO_ERRORS = """\
flow broken
field budget money
team sales "Sales" {
  stage start initial
  stage won when budjet >= 10
}
stage lost final
skip start -> nowhere
"""

ONE_WARNING = """\
flow quiet
event ping
event unused
team sales "Sales" {
  stage start initial
  stage won when ping >= 1
}
stage lost final
"""

SYNTAX_ERROR = """\
flow broken
field budget money
stage start initial when budget >=
"""


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(name: str, text: str | bytes) -> str:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return str(path)

    return write


def assert_one_sentence(result: Result, fragment: str) -> None:
    """One `error: …` line on stderr, naming the problem; no traceback."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


# -- check: clean, errors, warnings ------------------------------------------------


def test_clean_flows_say_ok() -> None:
    flows = sorted(str(path) for path in (ROOT / "flows").glob("*.flow"))
    result = run("check", *flows)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"ok: {path}" for path in flows]
    assert result.stderr == ""


def test_errors_are_rendered_with_caret_and_summary(write) -> None:  # type: ignore[no-untyped-def]
    path = write("broken.flow", TWO_ERRORS)
    result = run("check", path)
    assert result.exit_code == 1
    out = result.stdout
    assert f"{path}:5:18: error[SF104]: unknown name " in out
    assert "   5 |   stage won when budjet >= 10\n" in out
    assert "     |                  ^^^^^^\n" in out
    assert 'hint: did you mean "budget"?' in out
    assert f"{path}:8:" in out
    assert out.splitlines()[-1] == "2 errors, 0 warnings"
    assert "ok:" not in out


def test_warnings_pass_unless_strict(write) -> None:  # type: ignore[no-untyped-def]
    path = write("quiet.flow", ONE_WARNING)
    result = run("check", path)
    assert result.exit_code == 0
    assert "warning[" in result.stdout
    assert '"unused"' in result.stdout
    assert result.stdout.splitlines()[-1] == "0 errors, 1 warning"
    assert run("check", "--strict", path).exit_code == 1


def test_syntax_errors_are_diagnostics(write) -> None:  # type: ignore[no-untyped-def]
    path = write("syntax.flow", SYNTAX_ERROR)
    result = run("check", path)
    assert result.exit_code == 1
    assert f"{path}:3:" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 error, 0 warnings"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x0c", "\x85", "\x1e"])
def test_caret_line_with_unicode_line_separators(write, separator: str) -> None:  # type: ignore[no-untyped-def]
    """Regression: a U+2028 (or form feed, …) inside a string shifted the
    source line shown under every later diagnostic: only "\\n" ends a line."""
    text = TWO_ERRORS.replace(
        "field budget money", f'field budget money\nfield note text default "a{separator}b"'
    )
    path = write("sep.flow", text)
    result = run("check", path)
    assert result.exit_code == 1
    assert f"{path}:6:18: error[SF104]" in result.stdout
    assert "   6 |   stage won when budjet >= 10\n" in result.stdout


def test_end_of_file_after_a_unicode_line_separator(write) -> None:  # type: ignore[no-untyped-def]
    path = write("eof.flow", 'flow f\nfield note text default "a\u2028b"\nfield\n')
    result = run("check", path)
    assert result.exit_code == 1
    assert f"{path}:3:6: error[SF003]" in result.stdout
    assert "   3 | field\n" in result.stdout


def test_mixed_files_report_each(write) -> None:  # type: ignore[no-untyped-def]
    bad = write("broken.flow", TWO_ERRORS)
    result = run("check", THE_MODEL, bad)
    assert result.exit_code == 1
    assert f"ok: {THE_MODEL}" in result.stdout
    assert f"ok: {bad}" not in result.stdout


# -- check: files that cannot be used (exit 2, one sentence each) ---------------


def test_missing_file(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "nope.flow"))
    assert result.exit_code == 2
    assert_one_sentence(result, "does not exist")


def test_directory(tmp_path: Path) -> None:
    result = run("check", str(tmp_path))
    assert result.exit_code == 2
    assert_one_sentence(result, "is a folder, not a flow file")


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_file(write, text: str) -> None:  # type: ignore[no-untyped-def]
    result = run("check", write("empty.flow", text))
    assert result.exit_code == 2
    assert_one_sentence(result, "is empty")


def test_not_utf8(write) -> None:  # type: ignore[no-untyped-def]
    result = run("check", write("latin1.flow", 'flow x "Café"\n'.encode("latin-1")))
    assert result.exit_code == 2
    assert_one_sentence(result, "is not UTF-8 text")


def test_unreadable_file_does_not_stop_the_others(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "nope.flow"), THE_MODEL)
    assert result.exit_code == 2
    assert f"ok: {THE_MODEL}" in result.stdout
    assert_one_sentence(result, "does not exist")


def test_no_file_is_a_usage_error() -> None:
    result = run("check")
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


# -- check --json -------------------------------------------------------------------


def test_json_lists_every_diagnostic(write) -> None:  # type: ignore[no-untyped-def]
    path = write("broken.flow", TWO_ERRORS)
    result = run("check", "--json", path)
    assert result.exit_code == 1
    found = json.loads(result.stdout)
    assert isinstance(found, list)
    assert len(found) == 2
    for item in found:
        assert {"file", "line", "column", "severity", "code", "message", "hint"} <= set(item)
        assert item["file"] == path
        assert item["severity"] == "error"
    first = found[0]
    assert (first["line"], first["column"], first["code"]) == (5, 18, "SF104")
    assert first["hint"] == 'did you mean "budget"?'


def test_json_clean_is_an_empty_list() -> None:
    result = run("check", "--json", THE_MODEL)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_json_with_warnings_and_strict(write) -> None:  # type: ignore[no-untyped-def]
    path = write("quiet.flow", ONE_WARNING)
    result = run("check", "--json", "--strict", path)
    assert result.exit_code == 1
    assert [item["severity"] for item in json.loads(result.stdout)] == ["warning"]


# -- graph --------------------------------------------------------------------------


def test_graph_mermaid_to_stdout() -> None:
    result = run("graph", THE_MODEL)
    assert result.exit_code == 0
    assert "flowchart LR" in result.stdout
    assert 'subgraph t_marketing["Marketing"]' in result.stdout


def test_graph_dot_to_file(tmp_path: Path) -> None:
    target = tmp_path / "model.dot"
    result = run("graph", THE_MODEL, "--format", "dot", "-o", str(target))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert target.read_text(encoding="utf-8").startswith('digraph "the_model" {')


def test_graph_exits(tmp_path: Path) -> None:
    assert "t_marketing -.-> s_lost" in run("graph", THE_MODEL, "--exits").stdout
    assert "t_marketing -.-> s_lost" not in run("graph", THE_MODEL).stdout


def test_graph_of_an_invalid_flow(write) -> None:  # type: ignore[no-untyped-def]
    path = write("broken.flow", TWO_ERRORS)
    result = run("graph", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error[SF104]" in result.stderr
    assert result.stderr.splitlines()[-1] == f"error: {path} is not a valid flow (2 errors)"


def test_graph_unwritable_output(tmp_path: Path) -> None:
    result = run("graph", THE_MODEL, "-o", str(tmp_path / "no" / "such" / "dir.mmd"))
    assert result.exit_code == 2
    assert_one_sentence(result, "cannot write")


def test_graph_unknown_format() -> None:
    result = run("graph", THE_MODEL, "--format", "png")
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.stderr


# -- global options -----------------------------------------------------------------


def settings(*args: str, env: dict[str, str] | None = None) -> Settings:
    """The `Settings` that `main` puts on the context for these options."""
    seen: list[Settings] = []

    @main.command("_probe", hidden=True)
    @click.pass_obj
    def probe(obj: Settings) -> None:
        seen.append(obj)

    try:
        result = CliRunner().invoke(main, [*args, "_probe"], env=env, catch_exceptions=False)
    finally:
        main.commands.pop("_probe")
    assert result.exit_code == 0, result.output
    return seen[0]


def test_global_defaults() -> None:
    got = settings(env={"SALEFLOW_DB": None, "SALEFLOW_NOW": None})  # type: ignore[dict-item]
    assert got.db == DEFAULT_URL
    assert got.now is None
    assert got.actor


def test_the_default_database_is_written_once() -> None:
    """`--db`, `Engine.open`, `open_store`, the service and the migrations
    all default to `records.DEFAULT_URL`; none spells the URL out again."""
    import inspect

    from saleflow.runtime.engine import Engine
    from saleflow.store import open_store

    assert inspect.signature(Engine.open).parameters["db"].default == DEFAULT_URL
    assert inspect.signature(open_store).parameters["url"].default == DEFAULT_URL
    package = Path(__file__).resolve().parent.parent / "saleflow"
    spelled = [
        str(p.relative_to(package)) for p in package.rglob("*.py") if DEFAULT_URL in p.read_text("utf-8")
    ]
    assert spelled == ["records.py"]


def test_global_options() -> None:
    got = settings("--db", "sqlite:///x.db", "--now", "2026-03-31T09:30:00+02:00", "--actor", "kim")
    assert got == Settings("sqlite:///x.db", datetime(2026, 3, 31, 7, 30, tzinfo=UTC), "kim")


def test_global_options_from_the_environment() -> None:
    got = settings(env={"SALEFLOW_DB": "postgresql+psycopg://u@localhost/db", "SALEFLOW_NOW": "2026-01-02"})
    assert got.db == "postgresql+psycopg://u@localhost/db"
    assert got.now == datetime(2026, 1, 2, tzinfo=UTC)


def test_bad_now_is_a_usage_error() -> None:
    result = run("--now", "yesterday", "check", THE_MODEL)
    assert result.exit_code == 2
    assert "ISO 8601" in result.stderr


# -- the one place that maps errors to exit codes ---------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BadInput("employees must be a number"), 2),
        (Rejected('lead "a" cannot enter "sql": bant is false'), 1),
        (NotFound('no lead "a"'), 3),
        (Conflict('lead "a" changed while we worked on it'), 4),
        (StoreError("the database is read-only"), 2),
        (FileNotFoundError(2, "No such file or directory", "leads.csv"), 2),
        (PermissionError(13, "Permission denied", "out.html"), 2),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2),
    ],
)
def test_errors_become_exit_codes(error: Exception, code: int) -> None:
    @click.group(cls=SaleflowGroup)
    def group() -> None:
        pass

    @group.command()
    def fail() -> None:
        raise error

    result = CliRunner().invoke(group, ["fail"])
    assert result.exit_code == code
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    if isinstance(error, OSError):
        assert str(error.filename) in lines[0]


def test_a_very_long_line_is_shown_around_the_caret(tmp_path: Path) -> None:
    flow = tmp_path / "long.flow"
    flow.write_text("flow f\nteam t { stage a initial stage b when " + "x == 1 and " * 5000 + "y = 2 }\n")
    result = CliRunner().invoke(main, ["check", str(flow)])
    assert result.exit_code == 1
    assert len(result.output) < 2000
    shown = next(line for line in result.output.splitlines() if line.startswith("   2 | "))
    caret = next(line for line in result.output.splitlines() if line.strip().startswith("| ") and "^" in line)
    assert shown.startswith("   2 | …")
    assert shown[caret.index("^")] == "="  # the caret still points at the "="


def test_lone_carriage_returns_end_lines(tmp_path: Path) -> None:
    flow = tmp_path / "mac.flow"
    flow.write_bytes(b"flow f\rfield x int\rteam t {\r stage a initial\r stage b when y >= 1\r}\r")
    result = CliRunner().invoke(main, ["check", "--json", str(flow)])
    found = [d for d in json.loads(result.stdout) if d["code"] == "SF104"]
    assert [(d["line"], d["column"]) for d in found] == [(5, 15)]
    text = CliRunner().invoke(main, ["check", str(flow)]).output
    assert "   5 |  stage b when y >= 1" in text


def test_json_lists_unreadable_files_too(tmp_path: Path) -> None:
    missing = tmp_path / "missing.flow"
    result = CliRunner().invoke(
        main, ["check", "--json", str(missing), str(ROOT / "flows" / "the_model.flow")]
    )
    assert result.exit_code == 2
    (entry,) = json.loads(result.stdout)
    assert (entry["file"], entry["code"], entry["line"]) == (str(missing), "SF000", 0)
    assert "does not exist" in entry["message"]
