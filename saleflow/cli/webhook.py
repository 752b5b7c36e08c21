"""`saleflow webhook add|list|remove|failures|retry|deliver` (SPEC §8).

Part of the CLI layer, registered on the CLI's group by one line at the end
of `saleflow/cli/app.py`.  The global options (`--db`, `--now`, `--actor`) come
from the click context the group sets up.  Nothing heavy is imported at
import time (the CLI imports this module on every run): the store and
httpx are imported when a command runs.  Failures are `SaleflowError`s,
which the group turns into one sentence and SPEC §4's exit code: 2 bad
input (a duplicate name included, as for `token add`), 3 an unknown
webhook, flow or stage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..errors import BadInput
from ..limits import MAX_INT, check_id, number_text

if TYPE_CHECKING:
    from ..runtime.engine import Engine
    from ..store.hooks import Backlog, Failure, Hook


def _settings(ctx: click.Context) -> Any:
    settings = ctx.find_root().obj
    if settings is None or not hasattr(settings, "db"):  # pragma: no cover - always run under `saleflow`
        raise click.UsageError("run this as `saleflow webhook …`")
    return settings


@contextmanager
def _engine(ctx: click.Context) -> Iterator[Engine]:
    from ..runtime.engine import Engine
    from ..store import open_store

    settings = _settings(ctx)
    with Engine(open_store(settings.db), actor=settings.actor, now=settings.now) as engine:
        yield engine


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _seq(text: str, option: str) -> int:
    """A seq option: a whole number from 0 to the largest 64-bit integer."""
    value = text.strip()
    if not value.isascii() or not value.isdigit():
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise BadInput(f'{option} takes a whole number (a seq), not "{shown}"')
    if len(value) > 30 or int(value) > MAX_INT:
        shown = f"a number of {len(value):,} digits" if len(value) > 30 else number_text(int(value))
        raise BadInput(f"{option} must be a whole number from 0 to {MAX_INT:,}, not {shown}")
    return int(value)


def hook_json(hook: Hook, backlog: Backlog | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": hook.name,
        "url": hook.url,
        "flow": hook.flow,
        "kinds": list(hook.kinds),
        "stages": list(hook.stages),
        "secret_env": hook.secret_env,
        "created_at": _when(hook.created_at),
        "cursor": hook.cursor,
    }
    if backlog is not None:
        out.update(queued=backlog.queued, retrying=backlog.retrying, failed=backlog.failed)
    return out


def failure_json(failure: Failure) -> dict[str, Any]:
    return {
        "hook": failure.hook,
        "seq": failure.seq,
        "lead": failure.lead_id,
        "attempts": failure.attempts,
        "queued_at": _when(failure.queued_at),
        "first_failed_at": _when(failure.first_failed_at),
        "failed_at": _when(failure.failed_at),
        "last_error": failure.last_error,
    }


def _filters(hook: Hook) -> str:
    parts = []
    if hook.flow is not None:
        parts.append(f"flow {hook.flow}")
    if hook.kinds:
        parts.append("kinds " + ",".join(hook.kinds))
    if hook.stages:
        parts.append("stages " + ",".join(hook.stages))
    return "; ".join(parts) or "every entry"


@click.group("webhook")
def webhook_group() -> None:
    """Webhooks: POST journal entries to other systems (add, list, remove,
    failures, retry, deliver)."""


@webhook_group.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--flow", default=None, metavar="NAME", help="Only entries of leads of this flow.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only entries of this kind (created, set, event, moved, migrated, sla_breach); repeatable.",
)
@click.option(
    "--stage",
    "stages",
    multiple=True,
    metavar="STAGE",
    help="Only entries after which the lead is in this stage; repeatable.",
)
@click.option(
    "--secret-env",
    default=None,
    metavar="VAR",
    help="Sign deliveries with the secret in this environment variable (its name is stored, never its value).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the webhook as JSON.")
@click.pass_context
def webhook_add_command(
    ctx: click.Context,
    name: str,
    url: str,
    flow: str | None,
    kinds: tuple[str, ...],
    stages: tuple[str, ...],
    secret_env: str | None,
    as_json: bool,
) -> None:
    """Add a webhook: every matching journal entry written from now on is
    POSTed to URL.  Adding the same webhook again changes nothing."""
    import os

    from ..store.hooks import add_hook, get_hook
    from ..webhooks.settings import check_name, check_url, new_hook

    check_name(name)
    check_url(url)
    with _engine(ctx) as engine:
        hook = new_hook(
            engine,
            name,
            url,
            flow=flow,
            kinds=kinds,
            stages=stages,
            secret_env=secret_env,
            now=engine.now(),
        )
        created = add_hook(engine.store, hook)
        stored = get_hook(engine.store, name)
    if secret_env is not None and not os.environ.get(secret_env):
        click.echo(
            f"warning: {secret_env} is not set here; set it where deliveries run, or they fail", err=True
        )
    if as_json:
        _echo_json({**hook_json(stored), "created": created})
        return
    what = "added" if created else "exists unchanged"
    signed = f", signed with ${stored.secret_env}" if stored.secret_env else ", unsigned"
    click.echo(
        f'webhook "{name}" {what}: POST {stored.url} ({_filters(stored)}{signed}), '
        f"entries after seq {stored.cursor}"
    )


@webhook_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def webhook_list_command(ctx: click.Context, as_json: bool) -> None:
    """Webhooks by name: URL, filters, secret variable, cursor, and what
    each owes (queued, retrying, failed)."""
    from ..store.hooks import Backlog, backlogs, list_hooks

    with _engine(ctx) as engine:
        hooks = list_hooks(engine.store)
        owed = backlogs(engine.store)
    listed = [hook_json(hook, owed.get(hook.name, Backlog())) for hook in hooks]
    if as_json:
        _echo_json(listed)
        return
    for hook, item in zip(hooks, listed, strict=True):
        signed = f"secret ${hook.secret_env}" if hook.secret_env else "unsigned"
        click.echo(
            f"{hook.name}  {hook.url}  ({_filters(hook)}; {signed})  cursor {hook.cursor}  "
            f"queued {item['queued']}, retrying {item['retrying']}, failed {item['failed']}"
        )
    click.echo(f"{len(hooks)} webhook" + ("" if len(hooks) == 1 else "s"))


@webhook_group.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@click.pass_context
def webhook_remove_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Remove a webhook and drop what it still owed."""
    from ..store.hooks import remove_hook

    check_id(name, "a webhook name")
    with _engine(ctx) as engine:
        dropped = remove_hook(engine.store, name)
    if as_json:
        _echo_json({"name": name, "removed": True, "dropped": dropped})
        return
    click.echo(f'webhook "{name}" removed ({dropped} undelivered entries dropped)')


@webhook_group.command("failures")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def webhook_failures_command(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Entries given up after 24 hours of failed attempts, of one webhook
    or all, by webhook and seq.  `webhook retry` re-queues them."""
    from ..store.hooks import failures, get_hook

    with _engine(ctx) as engine:
        if name is not None:
            check_id(name, "a webhook name")
            get_hook(engine.store, name)  # NotFound (exit 3)
        found = failures(engine.store, name)
    listed = [failure_json(f) for f in found]
    if as_json:
        _echo_json(listed)
        return
    for item in listed:
        click.echo(
            f"{item['hook']}  seq {item['seq']}  lead {item['lead']}  {item['attempts']} attempts  "
            f"failed {item['failed_at']}: {item['last_error']}"
        )
    click.echo(f"{len(listed)} failed deliver" + ("y" if len(listed) == 1 else "ies"))


@webhook_group.command("retry")
@click.argument("name")
@click.option(
    "--since",
    default=None,
    metavar="SEQ",
    help="Only failures after SEQ, and deliver again every matching entry after SEQ.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was re-queued as JSON.")
@click.pass_context
def webhook_retry_command(ctx: click.Context, name: str, since: str | None, as_json: bool) -> None:
    """Re-queue what a webhook gave up on; with --since SEQ, also deliver
    again every matching entry after SEQ (a replay)."""
    from ..store.hooks import retry

    check_id(name, "a webhook name")
    after = None if since is None else _seq(since, "--since")
    with _engine(ctx) as engine:
        revived, cursor = retry(engine.store, name, engine.now(), after)
    rewound = after is not None and after < cursor
    if as_json:
        _echo_json({"name": name, "requeued": revived, "cursor": after if rewound else cursor})
        return
    more = f"; entries after seq {after} will be delivered again" if rewound else ""
    click.echo(f'webhook "{name}": {revived} failed entries re-queued{more}')


@webhook_group.command("deliver")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit (the cron form).")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=100,
    show_default=True,
    help="Leads sent per webhook per round (each with up to 10 entries).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60.0),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each round's counts as a JSON line.")
@click.pass_context
def webhook_deliver_command(
    ctx: click.Context, once: bool, limit: int, timeout: float, as_json: bool
) -> None:
    """Deliver webhooks: rounds until nothing is due (--once), or until
    Ctrl-C or SIGTERM (workers do this too)."""
    import signal
    import threading

    from ..jsontext import compact
    from ..webhooks.delivery import DeliveryReport, deliver, new_client

    client = new_client(timeout)  # one sentence when httpx is missing, before anything runs
    stopping = threading.Event()

    def stop(_signum: int, _frame: Any) -> None:
        stopping.set()

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    total = DeliveryReport()
    try:
        with client, _engine(ctx) as engine:
            while not stopping.is_set():
                report = deliver(engine, limit=limit, client=client, timeout=timeout)
                if as_json:
                    click.echo(compact(report.to_json()))
                elif report.busy:
                    click.echo(report.summary())
                for hook, counts in report.hooks.items():
                    mine = total.hooks.setdefault(hook, type(counts)())
                    for key in ("queued", "delivered", "failed", "given_up", "lost"):
                        setattr(mine, key, getattr(mine, key) + getattr(counts, key))
                if not report.busy:
                    if once:
                        break
                    stopping.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if not as_json:
        click.echo(f"done: {total.summary()}")
