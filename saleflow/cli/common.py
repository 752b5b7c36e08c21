"""What the command modules share: the global settings, the one mapping from
errors to exit codes, reading flow files, opening the engine, and small
formatting helpers.

Layer 6.  Imports nothing heavy at module level (no SQLAlchemy, no Lark):
every command imports it, so its cost is paid on every run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..coerce import parse_time
from ..errors import EXIT_BAD_INPUT, BadInput, FlowInvalid, NotFound, SaleflowError
from ..limits import one_line
from ..wording import decimal_text, plural

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from ..model.flow import Flow
    from ..runtime.engine import Deployment, Engine


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, on the click context for every command
    (`pass_settings`)."""

    db: str
    now: datetime | None
    actor: str


pass_settings = click.make_pass_decorator(Settings)


class TimeParam(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.2; 8.1 is supported
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
        message = f"{err.path} is not a valid flow ({plural(len(errors), 'error')})"
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


def read_flow_text(path: str) -> str:
    """A flow file's text; every reason it cannot be used is a `BadInput`."""
    from ..language.parse import read_source

    text = read_source(path)
    if not text.strip():
        raise BadInput(f'{path} is empty; a flow file starts with "flow NAME"')
    return text


def load_checked_flow(path: str) -> Flow:
    """Read, parse and check a flow file; `FlowInvalid` when it has errors
    (warnings are `check`'s business, not a reason to refuse).  The parser
    and the checker are imported here, by the commands that read a flow
    file, not by every command."""
    from ..check.rules import check
    from ..language.cache import parse_cached

    text = read_flow_text(path)
    flow = parse_cached(text, path)  # and kept: `deploy` then `show` parse it once
    diagnostics = check(flow)
    if any(d.is_error for d in diagnostics):
        raise FlowInvalid(path, diagnostics, text)
    return flow


def output_option(help_text: str = "Write to FILE instead of stdout") -> Callable[[F], F]:
    """`-o/--output FILE`; ``-`` (or no option) is stdout, as in most
    command-line tools: `-o -` must not write a file called "-"."""

    def stdout_dash(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        return None if value == "-" else value

    return click.option(
        "-o",
        "--output",
        metavar="FILE",
        default=None,
        callback=stdout_dash,
        help=f"{help_text} (- for stdout).",
    )


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


def days_text(value: float, digits: int = 1) -> str:
    """A number of days for people, rounded to `digits` decimals (`--json`
    keeps them all); a small positive number does not round to nothing."""
    smallest = 10**-digits
    if 0 < value < smallest / 2:
        return f"<{smallest:.{digits}f} days"
    text = decimal_text(value, digits, grouped=True)
    return f"{text} day" if text == "1" else f"{text} days"


def thousands(number: int) -> str:
    return f"{number:,}"
