"""Moving leads between flow versions: `migrate`, and the plan that
`deploy --dry-run` prints (saleflow/runtime/migration.py does the work)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from ..wording import plural
from .common import Settings, load_checked_flow, open_engine, pass_settings, thousands

if TYPE_CHECKING:
    from ..runtime.engine import Engine


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
            click.echo(f"  … and {thousands(moves.count - len(moves.first))} more (--json lists them all)")
    if stranded.count:
        click.echo(f"leads that would be stranded (version {version} cannot hold them):")
        for item in stranded.first:
            click.echo(f'  {item["id"]}  in "{item["stage"]}": {item["reason"]}')
        if stranded.count > len(stranded.first):
            click.echo(
                f"  … and {thousands(stranded.count - len(stranded.first))} more (--json lists them all)"
            )


def _counts_table(counts: Any, dry: bool) -> list[str]:
    moved = "would move" if dry else "moved"
    return [
        f"  total        {thousands(counts.total)}",
        f"  unchanged    {thousands(counts.unchanged)}",
        f"  {moved:<12} {thousands(counts.moved)}",
        f"  stranded     {thousands(counts.stranded)}",
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


@click.command("migrate")
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
                f"{what} {plural(counts.migrated, 'lead')} of flow {target.name} to version {target.version}"
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
                f'{plural(stranded.count, "lead")} of flow "{target.name}" would be stranded by migrating to '
                f"version {target.version} (map their stages with --map-stage OLD=NEW)",
                stranded.count,
            )
    finally:
        moves.close()
        stranded.close()
