"""The journal from outside: `audit verify|anchor|rekey` (its integrity) and
`changes` (the change feed, as JSON Lines)."""

from __future__ import annotations

from typing import Any

import click

from ..errors import EXIT_REJECTED, BadInput
from ..views import serialise
from ..wording import plural
from .common import Settings, open_engine, output_option, pass_settings, write_output
from .output import echo_json


@click.command("changes")
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


@click.group("audit")
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
        said = [f"{plural(leads, 'lead')} with problems"] if leads else []
        flows = sum(1 for p in problems if p.lead_id is None and p.message.startswith("flow "))
        if flows:
            said.append(f"{plural(flows, 'flow version')} edited")
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
@output_option()
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
        f"{plural(done.leads, 'lead')} re-sealed with {sealed}; anchors taken before no longer "
        "match: take a new one with `saleflow audit anchor`"
    )
