"""Commands that read the journal into figures: `report` (KPIs),
`simulate` (what if: a replay through another flow) and `export` (tables
for BI tools)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import BadInput
from ..views import serialise
from ..wording import plural
from .common import (
    Settings,
    batch_progress,
    load_checked_flow,
    open_engine,
    output_option,
    pass_settings,
    write_output,
)


@click.command("report")
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
@output_option()
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


@click.command("simulate")
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
@output_option()
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


@click.command("export")
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
@output_option("Write to FILE (all or nothing) instead of stdout")
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
        click.echo(f"wrote {plural(count, 'row')} of {table} to {output}", err=True)
