"""The `saleflow` command line.

Layer 5.  Each command is a thin wrapper over the Python API: it turns
arguments into calls and results into text or JSON, nothing more.  Failures
are `SaleflowError`s raised below; `SaleflowGroup.invoke` catches them and
`report_error` turns them into an `error: …` sentence on stderr and the exit
code of SPEC §4, so no command catches errors for itself and no expected failure
ever shows a traceback.

Sections: plumbing (settings, error mapping, reading flow files), then one
section per command group.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..check.rules import check
from ..coerce import default_actor, parse_time
from ..errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_REJECTED,
    BadInput,
    Diagnostic,
    FlowInvalid,
    NotFound,
    SaleflowError,
    Span,
)
from ..language.parse import parse_flow, read_source
from ..limits import one_line
from ..model.flow import Flow, duration_text
from ..records import DEFAULT_URL
from ..views import serialise
from ..views.diagram import to_dot, to_mermaid
from ..wording import plural as _plural

if TYPE_CHECKING:
    from ..records import Lead
    from ..runtime.engine import Deployment, Engine


# --------------------------------------------------------------------------
# Plumbing: settings, errors, flow files
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, on the click context for every command
    (`pass_settings`)."""

    db: str
    now: datetime | None
    actor: str


pass_settings = click.make_pass_decorator(Settings)


class TimeParam(click.ParamType):
    """An ISO 8601 date or date-time option (`--now`, `--at`): an aware UTC
    `datetime`; a time without an offset is UTC."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value))
        except BadInput as err:
            self.fail(err.message, param, ctx)


TIME = TimeParam()


EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE

Failure = SaleflowError | OSError | UnicodeDecodeError
FAILURES = (SaleflowError, OSError, UnicodeDecodeError)


def report_error(err: Failure) -> int:
    """The one mapping from an expected failure to what the user sees: an
    `error: …` sentence on stderr (after the diagnostics of an invalid flow).
    Returns the exit code."""
    if isinstance(err, FlowInvalid):
        errors = [d for d in err.diagnostics if d.is_error]
        for diagnostic in errors:
            click.echo(diagnostic.render(err.source), err=True)
        message = f"{err.path} is not a valid flow ({_plural(len(errors), 'error')})"
        code = err.exit_code
    elif isinstance(err, SaleflowError):
        message, code = err.message, err.exit_code
    elif isinstance(err, UnicodeDecodeError):
        message, code = f"the input is not UTF-8 text (bad byte at offset {err.start})", EXIT_BAD_INPUT
    else:
        where = f" {err.filename}" if err.filename else ""
        message, code = f"cannot use{where}: {err.strerror or err}", EXIT_BAD_INPUT
    click.echo(f"error: {one_line(message)}", err=True)
    return code


class SaleflowGroup(click.Group):
    """A click group whose commands' expected failures become exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a reader gone now is the broken pipe below
            return result
        except BrokenPipeError:
            # The reader of our output stopped (`saleflow leads | head`): not
            # an error to report.  Point stdout at /dev/null so that Python's
            # last flush does not complain, and exit like a process killed by
            # SIGPIPE.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(EXIT_BROKEN_PIPE)
        except FAILURES as err:
            ctx.exit(report_error(err))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """As click's, but a usage error is one `error: …` sentence on
        stderr (exit 2), like every other failure, not a usage block."""
        run: Any = super().main  # click types main() per standalone_mode
        if not standalone_mode:
            return run(*args, standalone_mode=False, **kwargs)
        try:
            code = run(*args, standalone_mode=False, **kwargs)
        except click.UsageError as err:
            command = err.ctx.command_path if err.ctx is not None else "saleflow"
            message = one_line(err.format_message().rstrip("."))
            click.echo(f"error: {message} (see '{command} --help')", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def read_flow_text(path: str) -> str:
    """A flow file's text; every reason it cannot be used is a `BadInput`."""
    text = read_source(path)
    if not text.strip():
        raise BadInput(f'{path} is empty; a flow file starts with "flow NAME"')
    return text


def diagnose(text: str, path: str) -> list[Diagnostic]:
    """Every diagnostic for a flow's text: syntax errors, else `check`'s findings."""
    try:
        flow = parse_flow(text, path)
    except FlowInvalid as err:
        return list(err.diagnostics)
    return check(flow)


def load_checked_flow(path: str) -> Flow:
    """Read, parse and check a flow file; `FlowInvalid` when it has errors
    (warnings are `check`'s business, not a reason to refuse)."""
    text = read_flow_text(path)
    flow = parse_flow(text, path)
    diagnostics = check(flow)
    if any(d.is_error for d in diagnostics):
        raise FlowInvalid(path, diagnostics, text)
    return flow


def write_output(text: str, output: str | None) -> None:
    """`text` to the file `output`, or to stdout when there is none."""
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as err:
        raise BadInput(f"cannot write {output}: {err.strerror or err}") from None
    except ValueError:  # a NUL in the name
        raise BadInput("cannot write the output: its file name is not a path") from None


# --------------------------------------------------------------------------
# The group and its global options
# --------------------------------------------------------------------------


@click.group(cls=SaleflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="SALEFLOW_DB",
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    metavar="URL",
    help="Database: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB.",
)
@click.option(
    "--now",
    envvar="SALEFLOW_NOW",
    type=TIME,
    default=None,
    show_envvar=True,
    help="Fix the clock (ISO 8601, UTC when no offset is given).",
)
@click.option(
    "--actor",
    envvar="SALEFLOW_ACTOR",
    default=None,
    show_envvar=True,
    metavar="NAME",
    help="Who acts, as written to the journal [default: OS user].",
)
@click.version_option(package_name="saleflow", prog_name="saleflow")
@click.pass_context
def main(ctx: click.Context, db: str, now: datetime | None, actor: str | None) -> None:
    """saleflow: a declarative workflow engine for B2B sales processes."""
    ctx.obj = Settings(db=db, now=now, actor=actor or default_actor())


# --------------------------------------------------------------------------
# Flow files: check, graph
# --------------------------------------------------------------------------


@main.command("check")
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as a JSON list.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.pass_context
def check_command(ctx: click.Context, flows: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """Check flow files: syntax, names, types and structure.

    Exit 0 when clean, 1 on errors (or warnings with --strict), 2 when a
    file cannot be read.
    """
    unreadable: list[Diagnostic] = []
    found: list[tuple[str, str, list[Diagnostic]]] = []
    for path in flows:
        try:
            text = read_flow_text(path)
        except BadInput as err:
            # Go on with the other files; the exit code still says 2.
            report_error(err)
            unreadable.append(Diagnostic("SF000", "error", Span(path, 0, 0, 0, 0), err.message))
            continue
        found.append((path, text, diagnose(text, path)))

    everything = [d for _, _, diagnostics in found for d in diagnostics]
    errors = sum(d.is_error for d in everything)
    warnings = len(everything) - errors
    if as_json:
        # An unreadable file is an entry too (code SF000, line 0), so that a
        # program reading the list sees every file it asked about.
        listed = [d.to_json() for d in [*unreadable, *everything]]
        click.echo(json.dumps(listed, indent=2, ensure_ascii=False))
    else:
        for path, text, diagnostics in found:
            if not diagnostics:
                click.echo(f"ok: {path}")
            for diagnostic in diagnostics:
                click.echo(diagnostic.render(text))
        if everything:
            click.echo(f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}")

    if unreadable:
        ctx.exit(EXIT_BAD_INPUT)
    if errors or (strict and warnings):
        ctx.exit(EXIT_REJECTED)
    ctx.exit(EXIT_OK)


@main.command("graph")
@click.argument("flow_path", metavar="FLOW")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart or Graphviz DOT.",
)
@click.option("-o", "--output", metavar="FILE", default=None, help="Write to FILE instead of stdout.")
@click.option("--exits/--no-exits", default=False, show_default=True, help="Draw exits to final side stages.")
def graph_command(flow_path: str, fmt: str, output: str | None, exits: bool) -> None:
    """Draw a flow: teams, the main line, skips, recycles."""
    flow = load_checked_flow(flow_path)
    render = to_dot if fmt == "dot" else to_mermaid
    write_output(render(flow, exits=exits), output)


@main.command("test")
@click.argument("flows", nargs=-1, required=True, metavar="FLOW...")
@click.option("-k", "select", default=None, metavar="TEXT", help="Only the tests whose name contains TEXT.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as a JSON list.")
@click.pass_context
def test_command(ctx: click.Context, flows: tuple[str, ...], select: str | None, as_json: bool) -> None:
    """Run the test blocks of flow files, each on a fresh in-memory store.

    Exit 0 when every test passes, 1 when any fails, 2 when a file does
    not check.
    """
    from ..runtime.testing import run_tests, summary

    loaded = [load_checked_flow(path) for path in flows]  # every file checks before any test runs
    results = []
    for flow in loaded:
        found = run_tests(flow, select=select)
        results.extend(found)
        if not as_json:
            for result in found:
                click.echo(result.render(flow.source))
    if as_json:
        echo_json([result.to_json() for result in results])
    else:
        click.echo(summary(results))
    ctx.exit(EXIT_OK if all(result.passed for result in results) else EXIT_REJECTED)


# --------------------------------------------------------------------------
# Leads: deploy, lead add/set, event, advance, tick, show, history, leads
# --------------------------------------------------------------------------
#
# The engine (and with it SQLAlchemy) is imported inside the commands, so
# that `check` and `graph` start without paying for the database layer.


def open_engine(settings: Settings, *, existing: bool = False) -> Engine:
    """The engine over `--db`.  `existing`: a command that only inspects a
    database (`audit verify`, `audit anchor`, `audit rekey`) refuses a
    SQLite file that does not exist (exit 3) instead of creating an empty
    one, which would verify: a mistyped path must not pass an audit."""
    from ..runtime.engine import Engine
    from ..store import open_store

    if existing:
        from ..store.connect import parse_url, sqlite_file

        path = sqlite_file(parse_url(settings.db))
        if path is not None and not Path(path).exists():
            raise NotFound(f"there is no database at {path}; check --db (or SALEFLOW_DB)")
    return Engine(open_store(settings.db), actor=settings.actor, now=settings.now)


def resolve_flow(engine: Engine, flow: str | None) -> str | None:
    """`--flow` takes a deployed flow's name, or a flow file (deployed first)."""
    if flow is not None and flow.endswith(".flow"):
        return engine.deploy(load_checked_flow(flow)).name
    return flow


def resolve_flow_version(engine: Engine, flow: str | None) -> str | Deployment | None:
    """As `resolve_flow`, but a flow file stands for its own version (SPEC
    §7: `lead add --flow FILE` uses the version that FILE is)."""
    if flow is not None and flow.endswith(".flow"):
        return engine.deploy(load_checked_flow(flow))
    return flow


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    from ..coerce import parse_assignment

    return dict(parse_assignment(pair) for pair in pairs)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


STREAMED_ITEMS = 500  # items of a streamed listing written at a time


def stream_json(items: Iterable[Any], *, lines: bool = False) -> None:
    """A listing as it is read, never built whole: a JSON array written item
    by item, the very text `echo_json` prints for the whole list; or, with
    `lines`, JSON Lines (one compact object a line).  An error while reading
    ends the output where it is (the error on stderr, and its exit code)."""
    out = sys.stdout
    parts: list[str] = []
    count = 0
    for item in items:
        if lines:
            parts.append(_compact(item) + "\n")
        else:
            parts.append(("[\n  " if count == 0 else ",\n  ") + _indented(item))
        count += 1
        if len(parts) >= STREAMED_ITEMS:
            out.write("".join(parts))
            out.flush()
            parts.clear()
    if not lines:
        parts.append("[]\n" if count == 0 else "\n]\n")
    out.write("".join(parts))
    out.flush()


# Python's JSON encoder is pure Python once asked to indent; a listing's
# rows are flat objects, so each value goes through the C encoder instead.
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
_SCALARS = (str, int, float, bool, type(None))


_quote: Any = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.encode_basestring


def _scalar(value: Any) -> str:
    """A plain value as `json.dumps(..., ensure_ascii=False)` writes it."""
    kind = type(value)
    if kind is str:
        return str(_quote(value))
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _encode(value)  # floats (NaN, Infinity) exactly as json writes them


def _indented(item: Any) -> str:
    """`item` as `echo_json` indents it inside a list (two more spaces)."""
    if (
        type(item) is dict
        and item
        and all(type(k) is str and isinstance(v, _SCALARS) for k, v in item.items())
    ):
        inner = ",\n    ".join(f"{_quote(key)}: {_scalar(value)}" for key, value in item.items())
        return "{\n    " + inner + "\n  }"
    return json.dumps(item, indent=2, ensure_ascii=False, default=str).replace("\n", "\n  ")


def _compact(item: Any) -> str:
    return _encode(item)


def json_format(as_json: bool, as_jsonl: bool) -> bool:
    """Whether a listing prints JSON (`--json` or `--jsonl`); both is bad input."""
    if as_json and as_jsonl:
        raise BadInput("--json and --jsonl cannot be used together; choose one")
    return as_json or as_jsonl


def stored_lead(engine: Engine, lead_id: str) -> Lead | None:
    """The lead as stored before a command changes it (for "was ..."); the
    id is judged as the engine judges it, so bad text is one sentence."""
    from ..limits import check_id

    return engine.store.get_lead(check_id(lead_id, "a lead id"))


_CHANGED_JSON = 'Print the lead as JSON (as `show --json`, with "previous_stage" and "previous_version").'


def _report_change(engine: Engine, before: Lead | None, lead: Lead, as_json: bool) -> None:
    """What a command that changed one lead prints: a sentence, or with
    --json the lead as `show --json` prints it and where it was before."""
    if not as_json:
        click.echo(_moved(before.stage if before else None, lead))
        return
    shown = serialise.show_json(engine.lead(lead.id))
    shown["previous_stage"] = before.stage if before else None
    shown["previous_version"] = before.version if before else None
    echo_json(shown)


@contextmanager
def batch_progress(
    engine: Engine, flow: str | None, label: str, *, due: bool = False
) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr while a batch or a report walks the leads
    (`due`: the leads due now, which tick walks), when stderr is a terminal
    (never in a pipe, a file or a test); it calls the function with the
    number of leads each chunk covered."""
    if not sys.stderr.isatty():
        yield None
        return
    total = engine.store.count_due(engine.now(), flow) if due else engine.store.count_leads(flow)
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def _moved(before: str | None, lead: Lead) -> str:
    return f'lead "{lead.id}" is in "{lead.stage}"' + (
        f' (was "{before}")' if before and before != lead.stage else ""
    )


@main.command("deploy")
@click.argument("flow_path", metavar="FLOW")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Write nothing: list what changed against the latest deployed version, "
    "and what migrating every lead to it would do now.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"flow", "version", "created"} as JSON; with --dry-run, the plan.',
)
@pass_settings
def deploy_command(settings: Settings, flow_path: str, dry_run: bool, as_json: bool) -> None:
    """Register a flow at the version its flow line declares.

    A file that differs from a deployed version only in comments, layout or
    tests is that version; a changed flow must raise its version above every
    deployed one (exit 2 otherwise, naming the number to use).
    """
    if dry_run:
        deploy_dry_run(settings, flow_path, as_json)  # in the migration section below
        return
    with open_engine(settings) as engine:
        deployment = engine.deploy(load_checked_flow(flow_path))
    if as_json:
        echo_json({"flow": deployment.name, "version": deployment.version, "created": deployment.created})
        return
    state = "deployed" if deployment.created else "already deployed, unchanged:"
    click.echo(f"{state} {deployment.name} version {deployment.version}")


@main.group("lead")
def lead_group() -> None:
    """Create leads and set their fields."""


@lead_group.command("add")
@click.argument("lead_id", metavar="ID")
@click.option(
    "--flow",
    default=None,
    metavar="NAME",
    help="A deployed flow's name (its latest version), or a .flow file (the version it is).",
)
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="Set a field (repeatable).")
@click.option("--at", type=TIME, default=None, help="When the lead was created (ISO 8601).")
@click.option("--json", "as_json", is_flag=True, help="Print the lead as JSON (as `show --json`).")
@pass_settings
def lead_add_command(
    settings: Settings,
    lead_id: str,
    flow: str | None,
    assignments: tuple[str, ...],
    at: datetime | None,
    as_json: bool,
) -> None:
    """Create a lead in its flow's initial stage; it then moves as far as its gates allow."""
    values = parse_assignments(assignments)
    with open_engine(settings) as engine:
        lead = engine.add_lead(lead_id, flow=resolve_flow_version(engine, flow), at=at, fields=values)
        if as_json:
            echo_json(serialise.show_json(engine.lead(lead_id)))
        else:
            click.echo(
                f'created lead "{lead.id}" in flow {lead.flow} version {lead.version}; it is in "{lead.stage}"'
            )


@lead_group.command("set")
@click.argument("lead_id", metavar="ID")
@click.argument("assignments", nargs=-1, required=True, metavar="FIELD=VALUE...")
@click.option("--at", type=TIME, default=None, help="When the facts became true (ISO 8601).")
@click.option("--json", "as_json", is_flag=True, help=_CHANGED_JSON)
@pass_settings
def lead_set_command(
    settings: Settings, lead_id: str, assignments: tuple[str, ...], at: datetime | None, as_json: bool
) -> None:
    """Set fields of a lead (an empty VALUE unsets the field)."""
    values = parse_assignments(assignments)
    with open_engine(settings) as engine:
        before = stored_lead(engine, lead_id)
        lead = engine.set(lead_id, values, at=at)
        _report_change(engine, before, lead, as_json)


@lead_group.command("migrate")
@click.argument("lead_id", metavar="ID")
@click.option(
    "--version", "version", type=click.IntRange(min=1), default=None, help="Target version [default: latest]."
)
@click.option("--json", "as_json", is_flag=True, help=_CHANGED_JSON)
@pass_settings
def lead_migrate_command(settings: Settings, lead_id: str, version: int | None, as_json: bool) -> None:
    """Move a lead to another deployed version of its flow, keeping its stage."""
    with open_engine(settings) as engine:
        before = stored_lead(engine, lead_id)
        lead = engine.migrate(lead_id, version=version)
        if as_json:
            _report_change(engine, before, lead, as_json)
            return
    was = f" (was version {before.version})" if before and before.version != lead.version else " (unchanged)"
    click.echo(f'lead "{lead.id}" is on flow {lead.flow} version {lead.version}{was}, in "{lead.stage}"')


@main.command("event")
@click.argument("lead_id", metavar="ID")
@click.argument("event")
@click.option("--at", type=TIME, default=None, help="When it happened (ISO 8601).")
@click.option("--channel", default=None, help="Channel, if not the event's own.")
@click.option("--content", default=None, help="What it was about (a page, a seminar, a mail).")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="How many at once.")
@click.option("--json", "as_json", is_flag=True, help=_CHANGED_JSON)
@pass_settings
def event_command(
    settings: Settings,
    lead_id: str,
    event: str,
    at: datetime | None,
    channel: str | None,
    content: str | None,
    count: int,
    as_json: bool,
) -> None:
    """Record an event on a lead; it then moves as far as its gates allow."""
    with open_engine(settings) as engine:
        before = stored_lead(engine, lead_id)
        lead = engine.record(lead_id, event, at=at, channel=channel, content=content, count=count)
        _report_change(engine, before, lead, as_json)


@main.command("advance")
@click.argument("lead_id", metavar="ID", required=False)
@click.option(
    "--to", "to", default=None, metavar="STAGE", help="Target stage (default: the next on the main line)."
)
@click.option("--force", is_flag=True, help="Move regardless of gates (needs --reason).")
@click.option("--reason", default=None, help="Why; recorded in the journal.")
@click.option("--all", "all_leads", is_flag=True, help="Every lead, as far as its gates allow.")
@click.option("--flow", default=None, metavar="NAME", help="With --all: only this flow's leads.")
@click.option("--json", "as_json", is_flag=True, help=_CHANGED_JSON[:-1] + '; with --all, {"moves"}.')
@pass_settings
def advance_command(
    settings: Settings,
    lead_id: str | None,
    to: str | None,
    force: bool,
    reason: str | None,
    all_leads: bool,
    flow: str | None,
    as_json: bool,
) -> None:
    """Move a lead on request, or (--all) every lead as far as gates allow."""
    if all_leads == (lead_id is not None):
        raise BadInput("give either a lead ID or --all")
    if all_leads and (to or force):
        raise BadInput("--to and --force move one lead; they do not go with --all")
    with open_engine(settings) as engine:
        if all_leads:
            with batch_progress(engine, flow, "advance --all") as progress:
                moves = engine.advance_all(flow=flow, progress=progress)
            if as_json:
                echo_json({"moves": moves})
            else:
                click.echo(f"{_plural(moves, 'move')} made")
            return
        assert lead_id is not None
        before = stored_lead(engine, lead_id)
        lead = engine.advance(lead_id, to=to, force=force, reason=reason)
        _report_change(engine, before, lead, as_json)


@main.command("tick")
@click.option("--flow", default=None, metavar="NAME", help="Only this flow's leads.")
@click.option("--json", "as_json", is_flag=True, help='Print {"moves", "sla_breaches"} as JSON.')
@pass_settings
def tick_command(settings: Settings, flow: str | None, as_json: bool) -> None:
    """Re-evaluate time for the leads due: windows, days in stage, auto recycles, SLAs (run it from cron)."""
    with open_engine(settings) as engine, batch_progress(engine, flow, "tick", due=True) as progress:
        ticked = engine.tick(flow=flow, progress=progress)
    if as_json:
        echo_json({"moves": ticked.moves, "sla_breaches": ticked.sla_breaches})
        return
    breaches = f"{ticked.sla_breaches} SLA breach" + ("" if ticked.sla_breaches == 1 else "es")
    click.echo(f"{_plural(ticked.moves, 'move')} made, {breaches} recorded")


@main.command("show")
@click.argument("lead_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def show_command(settings: Settings, lead_id: str, as_json: bool) -> None:
    """A lead's stage, facts, score, and every next move with its gate's verdict."""
    with open_engine(settings) as engine:
        view = engine.lead(lead_id)
        engine_now = engine.now()
    if as_json:
        echo_json(serialise.show_json(view))
        return
    team = f" ({view.team})" if view.team else ""
    click.echo(f"lead {view.id} — flow {view.flow} version {view.version}")
    click.echo(f"  stage   {view.stage}{team}, cycle {view.cycle}, since {view.entered_at.isoformat()}")
    click.echo(f"  score   {serialise.value_text(view.score)}")
    if view.sla_days is not None:
        if view.due_at is None:
            state = "never due"
        else:
            late = (engine_now - view.due_at).total_seconds() / 86_400
            state = f"due {view.due_at.isoformat()}, " + (
                f"overdue by {_days(late)}" if view.overdue else f"{_days(-late)} left"
            )
        click.echo(f"  sla     {duration_text(view.sla_days)} in this stage, {state}")
    click.echo("  fields  " + ", ".join(f"{k}={serialise.value_text(v)}" for k, v in view.fields.items()))
    click.echo(
        "  events  " + (", ".join(f"{k}={v}" for k, v in view.events.items() if v) or "none this cycle")
    )
    click.echo("  next")
    width = max((len(f"{v.kind} -> {v.to}") for v in view.next), default=0)
    for verdict in view.next:
        label = f"{verdict.kind} -> {verdict.to}".ljust(width)
        if verdict.allowed:
            click.echo(f"    {label}  allowed" + ("" if verdict.automatic else " (on request)"))
        else:
            click.echo(f"    {label}  blocked: " + "; ".join(b.message for b in verdict.blockers))


@main.command("history")
@click.argument("lead_id", metavar="ID")
@click.option(
    "--all", "all_entries", is_flag=True, help="Every journal entry: fields set, events, SLA breaches too."
)
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def history_command(settings: Settings, lead_id: str, all_entries: bool, as_json: bool) -> None:
    """A lead's moves (with --all, its whole journal), oldest first."""
    with open_engine(settings) as engine:
        entries = engine.history(lead_id, moves_only=not all_entries)
    if as_json:
        echo_json(serialise.history_json(entries, all_entries=all_entries))
        return
    # One lead's history is short: size the stage columns to its names.
    width = max(
        [14, *(len(serialise.value_text(e.from_stage)) for e in entries), *(len(e.stage) for e in entries)]
    )
    at_width = max([len("AT"), *(len(e.at.isoformat()) for e in entries)])
    click.echo(f"{'#':>4}  {'AT':<{at_width}}  {'FROM':>{width}} -> {'TO':<{width}} {'KIND':<8} ACTOR")
    for number, e in enumerate(entries, start=1):
        reason = f"  ({e.reason})" if e.reason else ""
        if all_entries:
            number = e.lead_seq
        if e.kind is not None:
            what = f"{serialise.value_text(e.from_stage):>{width}} -> {e.stage:<{width}} {e.kind:<8}"
        else:
            what = f"{serialise.entry_text(e):<{2 * width + 13}}"
        click.echo(f"{number:>4}  {e.at.isoformat()}  {what} {e.actor}{reason}")


@main.command("changes")
@click.option(
    "--since", default="0", metavar="SEQ", help="Entries after this seq (the last one you handled)."
)
@click.option("--flow", default=None, metavar="NAME", help="Only entries of leads of this flow.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only entries of this kind (created, set, event, moved, migrated, sla_breach); repeatable.",
)
@click.option("--limit", default=None, metavar="N", help="At most N entries (with --follow: in all).")
@click.option("--follow", is_flag=True, help="Then wait for new entries, until Ctrl-C.")
@pass_settings
def changes_command(
    settings: Settings, since: str, flow: str | None, kinds: tuple[str, ...], limit: str | None, follow: bool
) -> None:
    """The change feed: journal entries in seq order, as JSON Lines.

    Save the last "seq" you handled and resume with --since SEQ: nothing is
    missed and nothing repeated, however many processes write."""
    import signal
    import threading

    from ..jsontext import compact
    from ..store.feed import JournalWaiter

    after = _whole_number(since, "--since", 0)
    most = None if limit is None else _whole_number(limit, "--limit", 1)
    with open_engine(settings) as engine:

        def read(cursor: int, left: int | None) -> Any:
            return engine.changes(cursor, flow=flow, kinds=kinds or None, limit=left)

        feed = read(after, most)  # bad input is refused here, before anything is printed
        if not follow:
            for entry in feed:
                click.echo(compact(serialise.change_json(entry)))  # flushed line by line
            return

        def stop(_signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
        try:
            with JournalWaiter(engine.store) as waiter:  # listening before the first read
                while True:
                    for entry in feed:
                        click.echo(compact(serialise.change_json(entry)))
                        if most is not None:
                            most -= 1
                    if most is not None and most < 1:
                        return
                    waiter.wait()
                    feed = read(feed.position, most)
        except KeyboardInterrupt:
            return  # Ctrl-C or SIGTERM: the way to stop following
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)


def _whole_number(text: str, option: str, low: int) -> int:
    """A whole-number option from `low` to the largest 64-bit integer;
    a number too long to be in range is refused before Python reads it."""
    import re

    from ..limits import MAX_INT, number_text

    value = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", value, flags=re.ASCII):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise BadInput(f'{option} takes a whole number, not "{shown}"')
    digits = len(value.lstrip("+-"))
    number = int(value) if digits <= 30 else None
    if number is None or not low <= number <= MAX_INT:
        shown = f"a number of {digits:,} digits" if number is None else number_text(number)
        raise BadInput(f"{option} must be a whole number from {low} to {MAX_INT:,}, not {shown}")
    return number


@main.command("leads")
@click.option("--flow", default=None, metavar="NAME")
@click.option("--stage", default=None)
@click.option("--team", default=None)
@click.option("--overdue", is_flag=True, help="Only leads past their stage's SLA now.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array, written as the leads are read.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="JSON Lines: one JSON object a line.")
@pass_settings
def leads_command(
    settings: Settings,
    flow: str | None,
    stage: str | None,
    team: str | None,
    overdue: bool,
    as_json: bool,
    as_jsonl: bool,
) -> None:
    """List leads, by flow, stage or team; --overdue: those past their stage's SLA.

    Scores are as of now (--now): a score that windows closing or days
    passing have changed since it was stored is shown as it is now.
    The listing streams: memory stays flat whatever the number of leads."""
    as_json = json_format(as_json, as_jsonl)
    with open_engine(settings) as engine:
        if overdue:
            list_overdue(engine, flow=flow, stage=stage, team=team, as_json=as_json, lines=as_jsonl)
            return
        leads = engine.leads(flow=flow, stage=stage, team=team)
        if as_json:
            stream_json(map(serialise.lead_json, leads), lines=as_jsonl)
            return
        flow_width, stage_width = _name_widths(engine)
        count = 0
        for lead in leads:
            if not count:  # the header once the first row is read: an error comes alone
                click.echo(f"{'ID':<40} {'FLOW':<{flow_width}} {'STAGE':<{stage_width}} {'SCORE':>6}")
            click.echo(
                f"{lead.id:<40} {lead.flow:<{flow_width}} {lead.stage:<{stage_width}} {serialise.value_text(lead.score):>6}"
            )
            count += 1
        click.echo(f"{_plural(count, 'lead')}")


def _name_widths(engine: Engine) -> tuple[int, int]:
    """Column widths for flow and stage names that keep a streamed listing
    aligned: the longest names the deployed flows have (at least 16)."""
    flows = [engine.compiled(name).flow for name in engine.store.flow_names()]
    flow_width = max([16, *(len(flow.name) for flow in flows)])
    stage_width = max([16, *(len(stage) for flow in flows for stage in flow.stage_names)])
    return flow_width, stage_width


@main.group("audit")
def audit_group() -> None:
    """The journal's integrity: verify, anchor, rekey."""


@audit_group.command("verify")
@click.option(
    "--anchor",
    "anchor_file",
    default=None,
    metavar="FILE",
    help="Also prove the journal is unchanged up to this anchor of `audit anchor`.",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"ok", "problems": [{"lead", "message"}]} as JSON.'
)
@click.pass_context
def audit_verify_command(ctx: click.Context, anchor_file: str | None, as_json: bool) -> None:
    """Recompute every hash chain and replay every lead's history; with
    --anchor, also check the journal against an anchor kept elsewhere."""
    from ..runtime.anchor import read_anchor

    anchor = None if anchor_file is None else read_anchor(anchor_file)
    with open_engine(ctx.find_object(Settings) or ctx.ensure_object(Settings), existing=True) as engine:
        problems = engine.verify(anchor=anchor)
    if as_json:
        echo_json(
            {"ok": not problems, "problems": [{"lead": p.lead_id, "message": p.message} for p in problems]}
        )
        if problems:
            ctx.exit(EXIT_REJECTED)
        return
    for problem in problems:
        click.echo(str(problem))
    if problems:
        leads = len({p.lead_id for p in problems if p.lead_id is not None})
        said = [f"{_plural(leads, 'lead')} with problems"] if leads else []
        flows = sum(1 for p in problems if p.lead_id is None and p.message.startswith("flow "))
        if flows:
            said.append(f"{_plural(flows, 'flow version')} edited")
        if any(p.lead_id is None and not p.message.startswith("flow ") for p in problems):
            said.append("the journal does not match the anchor")
        click.echo(f"audit verify: {', and '.join(said)}", err=True)
        ctx.exit(EXIT_REJECTED)
    if anchor is None:
        click.echo("audit verify: every chain and replay agrees")
    else:
        click.echo(
            f"audit verify: every chain and replay agrees, and the journal matches the anchor "
            f"at position {anchor.seq}"
        )


@audit_group.command("anchor")
@click.option("-o", "--output", metavar="FILE", default=None, help="Write to FILE instead of stdout.")
@pass_settings
def audit_anchor_command(settings: Settings, output: str | None) -> None:
    """Print a digest of the journal (one line of JSON) to keep outside the
    database; `audit verify --anchor FILE` checks the journal against it."""
    with open_engine(settings, existing=True) as engine:
        anchor = engine.anchor()
    write_output(anchor.line() + "\n", output)
    if output is not None:
        click.echo(f"wrote the anchor at position {anchor.seq} to {output}", err=True)


@audit_group.command("rekey")
@pass_settings
def audit_rekey_command(settings: Settings) -> None:
    """Re-seal the journal with the key in SALEFLOW_AUDIT_KEY (none when
    unset), from the key in SALEFLOW_AUDIT_OLD_KEY (none when unset).  Stop
    every other saleflow process first."""
    from ..runtime.anchor import old_key_from_environment

    with open_engine(settings, existing=True) as engine:
        done = engine.rekey(old_key_from_environment())
    sealed = "no key" if done.sealed == "none" else f"the key {done.sealed}"
    click.echo(
        f"audit rekey: {done.entries} {'entry' if done.entries == 1 else 'entries'} of "
        f"{_plural(done.leads, 'lead')} re-sealed with {sealed}; anchors taken before no longer "
        "match: take a new one with `saleflow audit anchor`"
    )


# --------------------------------------------------------------------------
# KPIs: report, leads --overdue
# --------------------------------------------------------------------------


def _days(value: float, digits: int = 1) -> str:
    """A number of days for people, rounded to `digits` decimals (`--json`
    keeps them all); a small positive number does not round to nothing."""
    smallest = 10**-digits
    if 0 < value < smallest / 2:
        return f"<{smallest:.{digits}f} days"
    text = f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    return f"{text} day" if text == "1" else f"{text} days"


def list_overdue(
    engine: Engine,
    *,
    flow: str | None,
    stage: str | None,
    team: str | None,
    as_json: bool,
    lines: bool = False,
) -> None:
    """`leads --overdue`: leads past their stage's SLA now, with how long."""
    from ..views.report import overdue_leads

    found = overdue_leads(engine, flow=flow, stage=stage, team=team)
    if as_json:
        stream_json(map(serialise.overdue_json, found), lines=lines)
        return
    flow_width, stage_width = _name_widths(engine)
    count = 0
    for o in found:
        lead = o.lead
        late = (
            f"overdue {_days(o.overdue_days)} (SLA {duration_text(o.sla_days)}, due {o.due_at.isoformat()})"
        )
        click.echo(
            f"{lead.id:<40} {lead.flow:<{flow_width}} {lead.stage:<{stage_width}} {serialise.value_text(lead.score):>6}  {late}"
        )
        count += 1
    click.echo(f"{_plural(count, 'lead')} overdue")


@main.command("report")
@click.option("--flow", default=None, metavar="NAME", help="A deployed flow (default: the only one).")
@click.option("--since", default=None, metavar="D", help="Count entries from this date or time on.")
@click.option("--until", default=None, metavar="D", help="…up to this date (the whole day) or time.")
@click.option("--by", "by", default=None, metavar="FIELD", help="Stage figures per value of a field.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "html"]),
    default="table",
    show_default=True,
    help="Text table, JSON, CSV (a row per stage) or a self-contained HTML page.",
)
@click.option("-o", "--output", metavar="FILE", default=None, help="Write to FILE instead of stdout.")
@pass_settings
def report_command(
    settings: Settings,
    flow: str | None,
    since: str | None,
    until: str | None,
    by: str | None,
    fmt: str,
    output: str | None,
) -> None:
    """KPIs from the journal: volume, conversion and time per stage and team,
    targets, SLA breaches, recycling, channels, end-to-end conversion."""
    from ..views.report import Period, render_csv, render_table, report_for

    period = Period.parse(since, until)
    with open_engine(settings) as engine, batch_progress(engine, flow, "report") as progress:
        report = report_for(engine, flow, period=period, by=by, progress=progress)
    if fmt == "json":
        text = json.dumps(serialise.report_json(report), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "csv":
        text = render_csv(report)
    elif fmt == "html":
        from ..views.page import render_html

        text = render_html(report)
    else:
        text = render_table(report)
    write_output(text, output)
    if output is not None:
        click.echo(f"wrote {fmt} report of flow {report.flow} to {output}", err=True)


# --------------------------------------------------------------------------
# What if: simulate (SPEC §7)
# --------------------------------------------------------------------------


@main.command("simulate")
@click.argument("flow_file", metavar="FLOW")
@click.option("--since", default=None, metavar="D", help="Compare entries from this date or time on.")
@click.option("--until", default=None, metavar="D", help="…up to this date (the whole day) or time.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "html"]),
    default="table",
    show_default=True,
    help="Text tables, JSON, or a self-contained HTML page.",
)
@click.option("-o", "--output", metavar="FILE", default=None, help="Write to FILE instead of stdout.")
@pass_settings
def simulate_command(
    settings: Settings, flow_file: str, since: str | None, until: str | None, fmt: str, output: str | None
) -> None:
    """What if: replay the recorded history of FLOW's leads through FLOW in a
    scratch store (nothing is written to the database) and show the
    simulated funnel beside the recorded one."""
    from ..views.report import Period
    from ..views.simulate import render_simulation_html, render_simulation_table, simulate

    flow = load_checked_flow(flow_file)
    period = Period.parse(since, until)
    if output is not None:
        target = Path(output)
        writable = os.access(target, os.W_OK) if target.exists() else os.access(target.parent, os.W_OK)
        if target.is_dir() or not target.parent.is_dir() or not writable:
            # said before the replay, which may take minutes, not after it
            raise BadInput(f"cannot write {output}: not a writable file path")
    with open_engine(settings) as engine:
        result = simulate(engine, flow, period=period)
    if fmt == "json":
        text = json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "html":
        text = render_simulation_html(result)
    else:
        text = render_simulation_table(result, flow_file)
    write_output(text, output)
    if output is not None:
        click.echo(f"wrote {fmt} simulation of flow {flow.name} to {output}", err=True)


# --------------------------------------------------------------------------
# Export for BI: journal, leads, stages as CSV or JSON Lines (saleflow/views/export.py)
# --------------------------------------------------------------------------


@main.command("export")
@click.argument("table", type=click.Choice(["journal", "leads", "stages"]), metavar="journal|leads|stages")
@click.option("--flow", default=None, metavar="NAME", help="Only this deployed flow's leads and entries.")
@click.option("--since", default=None, metavar="D", help="Rows from this date or time on (see above).")
@click.option("--until", default=None, metavar="D", help="…up to this date (the whole day) or time.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="CSV with a header row, or JSON Lines (one object per row, the same keys).",
)
@click.option(
    "-o", "--output", metavar="FILE", default=None, help="Write to FILE (all or nothing) instead of stdout."
)
@pass_settings
def export_command(
    settings: Settings,
    table: str,
    flow: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    output: str | None,
) -> None:
    """Export a table for BI tools, streamed (flat memory), times in ISO 8601.

    \b
    journal  one row per journal entry in seq order, up to the journal's
             position when the export starts; --since/--until filter on at
    leads    one row per lead (with --flow, a column per declared field;
             else the fields as JSON); --since/--until filter on created_at
    stages   one row per lead, cycle and stage entered: lead, cycle, stage,
             team, entered_at, exited_at, days_in_stage, exit_kind,
             next_stage; --since/--until filter on entered_at

    days_in_stage is in days, rounded to 4 decimals.  The row of the stage
    a lead is in now has exited_at and exit_kind empty, and counts its days
    to now (--now fixes it).  CSV cells a spreadsheet would run as formulas
    get a leading quote.  With -o the file appears only when the export is
    complete.
    """
    from ..views.export import check_output, export_rows, write_to
    from ..views.report import Period

    Period.parse(since, until)  # bad dates fail before the database is opened (or created)
    if output is not None:
        check_output(output)
    with open_engine(settings) as engine:
        rows = export_rows(engine, table, flow=flow, since=since, until=until)
        count = write_to(rows, fmt, output, sys.stdout.buffer)
    if output is not None:
        click.echo(f"wrote {_plural(count, 'row')} of {table} to {output}", err=True)


# --------------------------------------------------------------------------
# Import: leads and their history from a CSV file
# --------------------------------------------------------------------------


def parse_mapping(pairs: Sequence[str], option: str = "--map", shape: str = "COLUMN=FIELD") -> dict[str, str]:
    """`--map COL=FIELD` (the last "=" splits, so a column name may hold one;
    an empty FIELD ignores the column); also `--map-stage VALUE=STAGE`."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, field = pair.rpartition("=")
        if not sep or not column.strip():
            raise BadInput(f'{option} "{pair}" is not {shape}')
        mapping[column.strip()] = field.strip()
    return mapping


def _count(number: int) -> str:
    return f"{number:,}"


@main.command("import")
@click.argument("csv_path", metavar="FILE.csv")
@click.option(
    "--flow", required=True, metavar="NAME", help="The flow of new leads: a deployed name or a .flow file."
)
@click.option("--id-column", required=True, metavar="COL", help="The column holding the lead ids.")
@click.option(
    "--map",
    "pairs",
    multiple=True,
    metavar="COL=FIELD",
    help="Column COL sets FIELD (repeatable); COL= ignores the column.  "
    "Other columns whose names match a field map themselves.",
)
@click.option(
    "--map-stage",
    "stage_pairs",
    multiple=True,
    metavar="VALUE=STAGE",
    help="The stage-column value VALUE means STAGE (repeatable); VALUE= means no stage.  "
    "Values naming a stage, as written or normalised, need none.",
)
@click.option(
    "--stage-column", default=None, metavar="COL", help="Move each lead to this column's stage (ungated)."
)
@click.option("--at-column", default=None, metavar="COL", help="When each row happened (default: now).")
@click.option(
    "--date-format", default=None, metavar="FMT", help="strptime format of --at-column (default: ISO 8601)."
)
@click.option(
    "--null",
    "nulls",
    multiple=True,
    metavar="VALUE",
    help=(
        "A placeholder that means unset (repeatable; replaces the default, Select); "
        "blank cells are always unset."
    ),
)
@click.option(
    "--skip-bad",
    default=None,
    metavar="FILE",
    help="Import the good rows; write the bad ones to FILE with a reason column.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_settings
def import_command(
    settings: Settings,
    csv_path: str,
    flow: str,
    id_column: str,
    pairs: tuple[str, ...],
    stage_pairs: tuple[str, ...],
    stage_column: str | None,
    at_column: str | None,
    date_format: str | None,
    nulls: tuple[str, ...],
    skip_bad: str | None,
    as_json: bool,
) -> None:
    """Import leads from a CSV file, rows applied in file order.

    A row sets its lead's fields (creating the lead if new, at the row's
    time) and, with --stage-column, moves it to that stage (an `import`
    move, gates not checked); then the lead progresses as usual.  Several
    rows for one id replay its history.  A file with bad rows is refused
    whole, listing them, unless --skip-bad is given; nothing is written
    when the file cannot be used.
    """
    import os
    import sys

    from ..importing import DEFAULT_NULLS, BadRows

    mapping = parse_mapping(pairs)
    stage_map = parse_mapping(stage_pairs, "--map-stage", "VALUE=STAGE")
    with open_engine(settings) as engine:
        flow_name = resolve_flow(engine, flow)
        assert flow_name is not None
        options: dict[str, Any] = {
            "mapping": mapping,
            "stage_column": stage_column,
            "stage_map": stage_map,
            "at_column": at_column,
            "date_format": date_format,
            "nulls": nulls or DEFAULT_NULLS,
            "skip_bad": skip_bad,
        }
        bar: Any = None
        if sys.stderr.isatty() and os.path.isfile(csv_path):
            # Each of the two passes reads the whole file.
            bar = click.progressbar(
                length=2 * max(os.path.getsize(csv_path), 1), label="importing", file=sys.stderr
            )
        try:
            if bar is not None:
                with bar:
                    result = engine.import_csv(
                        csv_path, flow=flow_name, id_column=id_column, progress=bar.update, **options
                    )
            else:
                result = engine.import_csv(csv_path, flow=flow_name, id_column=id_column, **options)
        except BadRows as err:
            for row in err.rows if err.count > 1 else ():  # one bad row is named in the error
                click.echo(f"{csv_path}: {row}", err=True)
            if err.count > len(err.rows):
                click.echo(f"… and {_plural(err.count - len(err.rows), 'more bad row')}", err=True)
            raise
    if as_json:
        echo_json(result.to_json())
        return
    rate = f" ({result.rows / result.seconds:,.0f} rows/s)" if result.seconds > 0 and result.rows else ""
    lines = [
        f"imported {result.path} into flow {result.flow} version {result.version}",
        f"  rows read        {_count(result.rows)}",
        f"  leads created    {_count(result.created)}",
        f"  leads updated    {_count(result.updated)} (leads that existed before the import)",
        f"  moves            {_count(result.moves)}",
        *(
            [f"  placed           {_count(result.placed)} (created in or moved to the stage in the file)"]
            if stage_column
            else []
        ),
        f"  bad rows         {_count(result.bad)}"
        + (f" (written to {result.skipped_to})" if result.skipped_to else ""),
    ]
    if result.ignored:
        lines.append(f"  ignored columns  {len(result.ignored)}: " + ", ".join(result.ignored))
    lines.append(f"  elapsed          {result.seconds:.1f} s{rate}")
    click.echo("\n".join(lines))


# --------------------------------------------------------------------------
# Migration: deploy --dry-run and migrate (saleflow/runtime/migration.py)
# --------------------------------------------------------------------------

SHOWN = 20  # outcomes listed in a table; --json lists them all


class _Listing:
    """Outcomes as they come: every one to a spooled file (it spills to
    disk beyond a megabyte, so a long list never sits in memory) for
    --json, the first `SHOWN` kept for a table."""

    def __init__(self) -> None:
        import tempfile

        self.count = 0
        self.first: list[dict[str, Any]] = []
        self.spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by `close`
            max_size=1 << 20, mode="w+", encoding="utf-8"
        )

    def __call__(self, item: dict[str, Any]) -> None:
        if self.count < SHOWN:
            self.first.append(item)
        self.spool.write(("" if self.count == 0 else ",\n") + "    " + json.dumps(item, ensure_ascii=False))
        self.count += 1

    def echo_json(self) -> None:
        """The items as the body of a JSON list, copied from the spool."""
        self.spool.seek(0)
        if self.count:
            click.echo("")
        while block := self.spool.read(1 << 16):
            click.echo(block, nl=False)
        click.echo("\n  " if self.count else "", nl=False)

    def items(self) -> Iterator[dict[str, Any]]:
        """Every item, read back from the spool (one a line)."""
        self.spool.seek(0)
        for line in self.spool:
            yield json.loads(line.strip().rstrip(","))

    def close(self) -> None:
        self.spool.close()


def _echo_plan_json(header: dict[str, Any], moves: _Listing, stranded: _Listing) -> None:
    """One JSON object: the header's keys, then the two streamed lists."""
    click.echo("{")
    for key, value in header.items():
        click.echo(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False, default=str)},")
    click.echo('  "moves": [', nl=False)
    moves.echo_json()
    click.echo('],\n  "stranded": [', nl=False)
    stranded.echo_json()
    click.echo("]\n}")


def _echo_outcomes(moves: _Listing, stranded: _Listing, version: int, verb: str = "would move") -> None:
    if moves.count:
        click.echo(f"leads that {verb}:")
        for item in moves.first:
            click.echo(f"  {item['id']}  {item['from']} -> {item['to']} ({item['kind']})")
        if moves.count > len(moves.first):
            click.echo(f"  … and {_count(moves.count - len(moves.first))} more (--json lists them all)")
    if stranded.count:
        click.echo(f"leads that would be stranded (version {version} cannot hold them):")
        for item in stranded.first:
            click.echo(f'  {item["id"]}  in "{item["stage"]}": {item["reason"]}')
        if stranded.count > len(stranded.first):
            click.echo(f"  … and {_count(stranded.count - len(stranded.first))} more (--json lists them all)")


def _counts_table(counts: Any, dry: bool) -> list[str]:
    moved = "would move" if dry else "moved"
    return [
        f"  total        {_count(counts.total)}",
        f"  unchanged    {_count(counts.unchanged)}",
        f"  {moved:<12} {_count(counts.moved)}",
        f"  stranded     {_count(counts.stranded)}",
    ]


def _bar(engine: Engine, flow: str, label: str) -> Any:
    """A progress bar on stderr when it is a terminal, else None."""
    import sys

    if not sys.stderr.isatty():
        return None
    return click.progressbar(length=max(engine.store.count_leads(flow), 1), label=label, file=sys.stderr)


def _dry_run_leads(
    engine: Engine, target: Any, mapping: dict[str, str], moves: _Listing, stranded: _Listing
) -> Any:
    from ..runtime.migration import dry_run

    bar = _bar(engine, target.name, "dry run")
    if bar is None:
        return dry_run(engine, target, mapping=mapping, on_move=moves, on_stranded=stranded)
    with bar:
        return dry_run(
            engine, target, mapping=mapping, on_move=moves, on_stranded=stranded, progress=bar.update
        )


def deploy_dry_run(settings: Settings, flow_path: str, as_json: bool) -> None:
    """`deploy FLOW --dry-run`: writes nothing."""
    from ..runtime.migration import plan_deploy

    flow = load_checked_flow(flow_path)
    moves, stranded = _Listing(), _Listing()
    try:
        with open_engine(settings) as engine:
            plan = plan_deploy(engine, flow)
            counts = _dry_run_leads(engine, plan.target, {}, moves, stranded)
        if as_json:
            header = {
                "flow": plan.flow,
                "from_version": plan.from_version,
                "to_version": plan.to_version,
                "deployed": plan.deployed,
                "changes": [change.to_json() for change in plan.changes],
                "leads": counts.to_json(),
            }
            _echo_plan_json(header, moves, stranded)
            return
        if plan.deployed:
            click.echo(
                f"{flow_path} is flow {plan.flow} version {plan.to_version}, already deployed: nothing to change"
            )
        else:
            since = f"version {plan.from_version}" if plan.from_version is not None else "nothing deployed"
            click.echo(
                f"deploying {flow_path} would add flow {plan.flow} version {plan.to_version} ({since} now)"
            )
        if plan.changes:
            click.echo("changes:")
            for change in plan.changes:
                click.echo(f"  {change}")
        elif not plan.deployed:
            click.echo("changes: none")
        click.echo(f"migrating every lead to version {plan.to_version} now:")
        click.echo("\n".join(_counts_table(counts, dry=True)))
        _echo_outcomes(moves, stranded, plan.to_version)
    finally:
        moves.close()
        stranded.close()


@main.command("migrate")
@click.option("--flow", "flow", required=True, metavar="NAME", help="The deployed flow whose leads move.")
@click.option(
    "--to-version",
    "version",
    type=click.IntRange(min=1, max=2**31 - 1),
    default=None,
    metavar="N",
    help="The version leads move to [default: the latest].",
)
@click.option(
    "--map-stage",
    "stage_pairs",
    multiple=True,
    metavar="OLD=NEW",
    help="Put the leads of stage OLD (of an older version) into NEW, a stage of the target version (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Write nothing: say what the migration would do now.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_settings
def migrate_command(
    settings: Settings,
    flow: str,
    version: int | None,
    stage_pairs: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Move every lead of a flow's older versions to one version, in chunks.

    Each lead is journaled as `migrated`, then moves as far as the new gates
    allow.  A lead in a stage the new version lacks needs a --map-stage:
    without one nothing is written, the stranded leads are listed, and the
    exit code is 1 (also with --dry-run).
    """
    from ..runtime.migration import Stranded, check_stage_map, migrate_flow, parse_stage_map, target_flow

    mapping = parse_stage_map(stage_pairs)
    moves, stranded = _Listing(), _Listing()
    try:
        with open_engine(settings) as engine:
            target = target_flow(engine, flow, version)
            check_stage_map(engine, target, mapping)
            header: dict[str, Any] = {"flow": target.name, "to_version": target.version, "dry_run": dry_run}
            if dry_run:
                counts = _dry_run_leads(engine, target, mapping, moves, stranded)
                refused = None
            else:
                bar = _bar(engine, target.name, "migrating")
                try:
                    run: dict[str, Any] = {"mapping": mapping, "on_move": moves, "on_stranded": stranded}
                    if bar is None:
                        counts = migrate_flow(engine, target, **run)
                    else:
                        with bar:
                            counts = migrate_flow(engine, target, progress=bar.update, **run)
                    refused = None
                except Stranded as err:
                    refused, counts = err, None
        if as_json:
            if counts is not None:
                header["leads"] = counts.to_json(dry=dry_run)
            else:
                header["leads"] = {"stranded": stranded.count}
            _echo_plan_json(header, moves, stranded)
        elif counts is not None:
            what = "would migrate" if dry_run else "migrated"
            click.echo(
                f"{what} {_plural(counts.migrated, 'lead')} of flow {target.name} to version {target.version}"
            )
            click.echo("\n".join(_counts_table(counts, dry=dry_run)))
            _echo_outcomes(moves, stranded, target.version, "would move" if dry_run else "moved")
        else:
            click.echo(f"leads that would be stranded (version {target.version} cannot hold them):")
            for item in stranded.items():
                click.echo(f'  {item["id"]}  in "{item["stage"]}": {item["reason"]}')
        if refused is not None:
            raise refused
        if dry_run and stranded.count:
            raise Stranded(
                f'{_plural(stranded.count, "lead")} of flow "{target.name}" would be stranded by migrating to '
                f"version {target.version} (map their stages with --map-stage OLD=NEW)",
                stranded.count,
            )
    finally:
        moves.close()
        stranded.close()


# The HTTP service's commands, defined in saleflow/service/commands.py (which
# imports FastAPI only when `serve` runs).
from ..service.commands import serve_command, token_group  # noqa: E402

main.add_command(serve_command)
main.add_command(token_group)

from .worker import worker_command  # noqa: E402

main.add_command(worker_command)

from .webhook import webhook_group  # noqa: E402

main.add_command(webhook_group)
