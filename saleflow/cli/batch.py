"""Commands that walk many leads at once: `tick` (time passes) and
`import` (leads and their history from a CSV file).  `advance --all` is
`advance` in `leads.py`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..errors import BadInput
from ..wording import plural
from .common import Settings, batch_progress, open_engine, pass_settings, resolve_flow, thousands
from .output import echo_json


@click.command("tick")
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
    click.echo(f"{plural(ticked.moves, 'move')} made, {breaches} recorded")


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


@click.command("import")
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
                click.echo(f"… and {plural(err.count - len(err.rows), 'more bad row')}", err=True)
            raise
    if as_json:
        echo_json(result.to_json())
        return
    rate = f" ({result.rows / result.seconds:,.0f} rows/s)" if result.seconds > 0 and result.rows else ""
    lines = [
        f"imported {result.path} into flow {result.flow} version {result.version}",
        f"  rows read        {thousands(result.rows)}",
        f"  leads created    {thousands(result.created)}",
        f"  leads updated    {thousands(result.updated)} (leads that existed before the import)",
        f"  moves            {thousands(result.moves)}",
        *(
            [f"  placed           {thousands(result.placed)} (created in or moved to the stage in the file)"]
            if stage_column
            else []
        ),
        f"  bad rows         {thousands(result.bad)}"
        + (f" (written to {result.skipped_to})" if result.skipped_to else ""),
    ]
    if result.ignored:
        lines.append(f"  ignored columns  {len(result.ignored)}: " + ", ".join(result.ignored))
    lines.append(f"  elapsed          {result.seconds:.1f} s{rate}")
    click.echo("\n".join(lines))
