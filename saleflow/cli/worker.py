"""`saleflow worker`: the command over `saleflow.runtime.worker.Worker`.

Layer 5.  Registered on the CLI's group by one line of `COMMANDS` in
`saleflow/cli/app.py`; the global options (`--db`, `--now`, `--actor`) come
from the click context the group sets up, and failures are `SaleflowError`s
that the group turns into one `error: …` line and an exit code (SPEC §4).

Exit codes: 0 when `--once` has drained what is due, or when SIGTERM or
SIGINT stopped the worker after its chunk; 2 bad input (an option out of
range, a database URL that cannot be used); 3 a `--flow` that is not
deployed; 4 a conflict that persisted after retries (`--once`); 5 the
database cannot be reached (at start; with `--once`, at any time; a
looping worker logs it and tries again).  A second SIGTERM or SIGINT stops
at once, rolling the chunk in hand back: exit 128 + the signal's number.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import BadInput
from ..limits import check_id, one_line
from ..runtime.worker import (
    DEFAULT_BATCH,
    DEFAULT_INTERVAL,
    MAX_INTERVAL,
    MIN_INTERVAL,
    Worker,
    check_interval,
)
from ..wording import counted as _counted

MAX_BATCH = 10_000  # as `ticking.MAX_CHUNK`: checked here before the database is opened


@click.command("worker")
@click.option("--flow", default=None, metavar="NAME", help="Only this flow's leads.")
@click.option("--once", is_flag=True, help="Drain what is due now, then exit (the form for cron).")
@click.option(
    "--batch",
    default=str(DEFAULT_BATCH),
    show_default=True,
    metavar="N",
    help=f"Leads per chunk: one transaction each (1 to {MAX_BATCH:,}).",
)
@click.option(
    "--interval",
    default=f"{DEFAULT_INTERVAL:g}",
    show_default=True,
    metavar="SECONDS",
    help="How long to sleep when nothing is due, before looking again.",
)
@click.pass_context
def worker_command(ctx: click.Context, flow: str | None, once: bool, batch: str, interval: str) -> None:
    """Tick due leads in chunks, letting waiting leads into room that frees.

    Loops until SIGTERM or SIGINT, which stop it once the chunk in hand has
    committed (exit 0).  Any number of workers may share a PostgreSQL
    database: each claims leads no other holds.  On SQLite one works at a
    time; another says so and waits.  One line per chunk on stderr.
    """
    size = parse_batch(batch)
    seconds = parse_interval(interval)
    if flow is not None:
        check_id(flow, "a flow name")  # before the database is opened: bad input changes nothing
    settings = ctx.find_root().obj
    from ..runtime.engine import Engine
    from ..store import open_store
    from ..webhooks.delivery import worker_step

    with _log_to_stderr(), Engine(open_store(settings.db), actor=settings.actor, now=settings.now) as engine:
        if flow is not None:
            engine.compiled(flow)  # NotFound (exit 3) for a flow that is not deployed
        worker = Worker(engine, flow=flow, batch=size, interval=seconds)
        worker.steps.append(worker_step(engine))
        with _stopped_by_signals(worker.stop):
            totals = worker.run(once=once, waiting=lambda text: click.echo(one_line(text), err=True))
    click.echo(
        f"{_counted(totals.moves, 'move')} made, {_counted(totals.sla_breaches, 'SLA breach', 'SLA breaches')} recorded "
        f"({_counted(totals.leads, 'lead')} in {_counted(totals.chunks, 'chunk')})"
    )


def parse_batch(text: str) -> int:
    """`--batch`: a whole number from 1 to MAX_BATCH; a number too long to
    be in range is refused before Python reads it."""
    value = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", value, flags=re.ASCII):
        raise BadInput(f'--batch takes a whole number of leads, not "{_cut(value)}"')
    digits = len(value.lstrip("+-"))
    number = int(value) if digits <= 30 else None
    if number is None or not 1 <= number <= MAX_BATCH:
        shown = f"a number of {digits:,} digits" if number is None else f"{number:,}"
        raise BadInput(f"--batch must be a whole number from 1 to {MAX_BATCH:,}, not {shown}")
    return number


def parse_interval(text: str) -> float:
    """`--interval`: a finite number of seconds (decimals allowed)."""
    value = text.strip()
    if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", value, flags=re.ASCII) or len(value) > 40:
        raise BadInput(f'--interval takes a number of seconds, not "{_cut(value)}"')
    seconds = float(value)
    if not math.isfinite(seconds) or not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise BadInput(
            f"--interval must be from {MIN_INTERVAL:g} to {MAX_INTERVAL:,.0f} seconds, not {value}"
        )
    return check_interval(seconds)


def _cut(value: str) -> str:
    return one_line(value if len(value) <= 40 else value[:40] + "…")


class _Line(logging.Formatter):
    """`2026-12-06T09:30:00Z worker: …`: the time in UTC, then the message."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp} {one_line(record.getMessage())}"


@contextmanager
def _log_to_stderr() -> Iterator[None]:
    """The worker's log lines (logger ``saleflow.worker``) on stderr for
    the command's life, unless the program already routes them."""
    log = logging.getLogger("saleflow.worker")
    if log.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Line())
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@contextmanager
def _stopped_by_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call `stop` (the worker finishes its chunk); a
    second one exits at once (the chunk rolls back)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (CliRunner in a thread)
        return
    told: list[int] = []

    def handle(signum: int, _frame: Any) -> None:
        if told:
            raise SystemExit(128 + signum)
        told.append(signum)
        logging.getLogger("saleflow.worker").info(
            "worker: %s received; stopping after the chunk in hand", signal.Signals(signum).name
        )
        stop()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
