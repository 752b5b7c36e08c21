"""Commands on leads, one at a time or listed: `lead add|set|migrate`,
`event`, `advance`, `show`, `history`, `leads` (with `--overdue`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from ..errors import BadInput
from ..model.flow import duration_text
from ..views import serialise
from ..wording import plural
from .common import (
    TIME,
    Settings,
    batch_progress,
    days_text,
    open_engine,
    parse_assignments,
    pass_settings,
    resolve_flow_version,
)
from .output import echo_json, json_format, stream_json

if TYPE_CHECKING:
    from ..records import Lead
    from ..runtime.engine import Engine


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


def _moved(before: str | None, lead: Lead) -> str:
    return f'lead "{lead.id}" is in "{lead.stage}"' + (
        f' (was "{before}")' if before and before != lead.stage else ""
    )


@click.group("lead")
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


@click.command("event")
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


@click.command("advance")
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
                click.echo(f"{plural(moves, 'move')} made")
            return
        assert lead_id is not None
        before = stored_lead(engine, lead_id)
        lead = engine.advance(lead_id, to=to, force=force, reason=reason)
        _report_change(engine, before, lead, as_json)


@click.command("show")
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
                f"overdue by {days_text(late)}" if view.overdue else f"{days_text(-late)} left"
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


@click.command("history")
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


@click.command("leads")
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
        click.echo(f"{plural(count, 'lead')}")


def _name_widths(engine: Engine) -> tuple[int, int]:
    """Column widths for flow and stage names that keep a streamed listing
    aligned: the longest names the deployed flows have (at least 16)."""
    flows = [engine.compiled(name).flow for name in engine.store.flow_names()]
    flow_width = max([16, *(len(flow.name) for flow in flows)])
    stage_width = max([16, *(len(stage) for flow in flows for stage in flow.stage_names)])
    return flow_width, stage_width


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
        late = f"overdue {days_text(o.overdue_days)} (SLA {duration_text(o.sla_days)}, due {o.due_at.isoformat()})"
        click.echo(
            f"{lead.id:<40} {lead.flow:<{flow_width}} {lead.stage:<{stage_width}} {serialise.value_text(lead.score):>6}  {late}"
        )
        count += 1
    click.echo(f"{plural(count, 'lead')} overdue")
