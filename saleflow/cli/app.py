"""The `saleflow` command line: the root group, its global options, and the
table of commands.

Layer 6.  Each command is a thin wrapper over the Python API, defined in a
module per command group (`flows.py`, `leads.py`, `batch.py`, `migrate.py`,
`reports.py`, `audit.py`; `serve` and `token` in saleflow/service/commands.py).
Failures are `SaleflowError`s raised below; `SaleflowGroup.invoke` catches
them and `report_error` (common.py) turns them into an `error: …` sentence
on stderr and the exit code of SPEC §4, so no command catches errors for
itself and no expected failure ever shows a traceback.

Commands load lazily: `COMMANDS` names each command's module, and the group
imports a module only when one of its commands runs, so `saleflow show`
pays for what `show` needs and nothing else.  `saleflow --help` lists the
commands from the table, importing none of them.

Adding a command: define it (a `click.command` or `click.group`) in a module
of its own under saleflow/cli/, then add ONE line to `COMMANDS`:

    "name": ("saleflow.cli.module", "attribute", "Short help: the first sentence of its docstring."),

tests/test_cli_lazy.py checks that every line names a command that exists
and that its short help is the command's own.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from importlib import import_module
from typing import Any

import click

from ..coerce import default_actor
from ..errors import EXIT_BAD_INPUT, EXIT_OK
from ..limits import one_line
from ..records import DEFAULT_URL
from .common import FAILURES, TIME, Settings, report_error

__all__ = ["COMMANDS", "SaleflowGroup", "Settings", "main"]

# name -> (module, attribute, short help).  The one place commands are
# registered; keep it sorted by name.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "advance": (
        "saleflow.cli.leads",
        "advance_command",
        "Move a lead on request, or (--all) every lead as far as gates allow.",
    ),
    "audit": ("saleflow.cli.audit", "audit_group", "The journal's integrity: verify, anchor, rekey."),
    "changes": (
        "saleflow.cli.audit",
        "changes_command",
        "The change feed: journal entries in seq order, as JSON Lines.",
    ),
    "check": ("saleflow.cli.flows", "check_command", "Check flow files: syntax, names, types and structure."),
    "deploy": (
        "saleflow.cli.flows",
        "deploy_command",
        "Register a flow at the version its flow line declares.",
    ),
    "event": (
        "saleflow.cli.leads",
        "event_command",
        "Record an event on a lead; it then moves as far as its gates allow.",
    ),
    "export": (
        "saleflow.cli.reports",
        "export_command",
        "Export a table for BI tools, streamed (flat memory), times in ISO 8601.",
    ),
    "graph": ("saleflow.cli.flows", "graph_command", "Draw a flow: teams, the main line, skips, recycles."),
    "history": (
        "saleflow.cli.leads",
        "history_command",
        "A lead's moves (with --all, its whole journal), oldest first.",
    ),
    "import": (
        "saleflow.cli.batch",
        "import_command",
        "Import leads from a CSV file, rows applied in file order.",
    ),
    "lead": ("saleflow.cli.leads", "lead_group", "Create leads and set their fields."),
    "leads": (
        "saleflow.cli.leads",
        "leads_command",
        "List leads, by flow, stage or team; --overdue: those past their stage's SLA.",
    ),
    "migrate": (
        "saleflow.cli.migrate",
        "migrate_command",
        "Move every lead of a flow's older versions to one version, in chunks.",
    ),
    "report": (
        "saleflow.cli.reports",
        "report_command",
        "KPIs from the journal: volume, conversion and time per stage and team, targets, SLA breaches, "
        "recycling, channels, end-to-end conversion.",
    ),
    "serve": (
        "saleflow.service.commands",
        "serve_command",
        "Serve the HTTP/JSON API and the live dashboard (pip install 'saleflow[server]').",
    ),
    "show": (
        "saleflow.cli.leads",
        "show_command",
        "A lead's stage, facts, score, and every next move with its gate's verdict.",
    ),
    "simulate": (
        "saleflow.cli.reports",
        "simulate_command",
        "What if: replay the recorded history of FLOW's leads through FLOW in a scratch store (nothing is "
        "written to the database) and show the simulated funnel beside the recorded one.",
    ),
    "test": (
        "saleflow.cli.flows",
        "test_command",
        "Run the test blocks of flow files, each on a fresh in-memory store.",
    ),
    "tick": (
        "saleflow.cli.batch",
        "tick_command",
        "Re-evaluate time for the leads due: windows, days in stage, auto recycles, SLAs (run it from cron).",
    ),
    "token": (
        "saleflow.service.commands",
        "token_group",
        "API tokens for `saleflow serve`: add, list, revoke.",
    ),
    "webhook": (
        "saleflow.cli.webhook",
        "webhook_group",
        "Webhooks: POST journal entries to other systems (add, list, remove, failures, retry, deliver).",
    ),
    "worker": (
        "saleflow.cli.worker",
        "worker_command",
        "Tick due leads in chunks, letting waiting leads into room that frees.",
    ),
}

EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


class SaleflowGroup(click.Group):
    """A click group whose commands' expected failures become exit codes,
    and whose commands (besides any added with `add_command`) are those of
    `COMMANDS`, each imported when it is first asked for (click's "lazily
    loading subcommands" pattern)."""

    lazy: dict[str, tuple[str, str, str]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in self.lazy:
            return None
        module, attribute, _ = self.lazy[cmd_name]
        command = getattr(import_module(module), attribute)
        if not isinstance(command, click.Command):  # pragma: no cover - a wrong line in COMMANDS
            raise TypeError(
                f"COMMANDS[{cmd_name!r}] names {module}.{attribute}, which is not a click command"
            )
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not loaded yet is listed with its short
        help from the table: `--help` imports no command module."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            command = self.commands.get(name)
            if command is None:  # click shortens the table's text as it would the command's own
                command = click.Command(name, help=self.lazy[name][2])
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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


class _RootGroup(SaleflowGroup):
    """The `saleflow` group: `SaleflowGroup` with the commands of `COMMANDS`."""

    lazy = COMMANDS


@click.group(cls=_RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
