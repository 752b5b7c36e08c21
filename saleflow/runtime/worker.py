"""The worker loop (`saleflow worker`): steps over one engine until stopped.

Layer 4, beside the engine.  A pass runs the worker's steps in order; each
does some work and says how much.  The first step ticks the leads whose due
time has come, a chunk per transaction (`Engine.work_due`), until none is
left.  A step is a plain callable in `Worker.steps`, so delivering webhooks
after the chunks is one more entry there.  Each pass is followed by a wait
of `interval` seconds.

`Worker.stop()` (the CLI calls it on SIGTERM and SIGINT) ends the loop once
the chunk in hand has committed.  A worker killed outright loses nothing:
its chunk's transaction rolls back and its leads are due for the next
claim, by any worker.

On PostgreSQL any number of workers share the work (the claim skips the
leads another holds).  On SQLite one worker works at a time:
`one_at_a_time` holds an exclusive `flock` on a file next to the database
(`DB.worker-lock`) for the worker's life; a second worker says so and
waits.  The operating system drops the lock with the process however it
ends, kill -9 included, so a crashed worker never leaves it held.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadInput, Conflict, Unavailable
from ..wording import counted as _counted

if TYPE_CHECKING:
    from .engine import Engine
    from .ticking import WorkDone

LOG = logging.getLogger("saleflow.worker")

DEFAULT_BATCH = 500
DEFAULT_INTERVAL = 5.0
MAX_INTERVAL = 86_400.0  # a day: a worker that sleeps longer is a cron job
MIN_INTERVAL = 0.01
STOP_CHECK = 0.2  # seconds between looks at the stop flag while waiting
LOCK_SUFFIX = ".worker-lock"

Step = Callable[[], int]  # does some work; returns how much (0: nothing to do)


@dataclass
class Totals:
    """What a worker did since it started."""

    chunks: int = 0
    leads: int = 0
    moves: int = 0
    sla_breaches: int = 0


class Worker:
    """Runs `steps` in passes over `engine` until `stop()` (or, with
    ``once``, until a pass finds nothing left to do)."""

    def __init__(
        self,
        engine: Engine,
        *,
        flow: str | None = None,
        batch: int = DEFAULT_BATCH,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        check_interval(interval)
        self.engine = engine
        self.flow = flow
        self.batch = batch
        self.interval = interval
        self.totals = Totals()
        self._stop = threading.Event()
        # The steps of a pass, in order.  Each runs to completion (or until
        # `stop`) before the next starts.
        self.steps: list[Step] = [self.tick_due]

    # -- control -------------------------------------------------------------
    def stop(self) -> None:
        """Finish the chunk in hand, then return from `run` (any thread, or
        a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- the steps -----------------------------------------------------------
    def tick_due(self) -> int:
        """Chunks of due leads (`Engine.work_due`) until none is left or
        the worker is stopping; one log line per chunk.  Returns the number
        of leads re-evaluated.

        A re-evaluated lead's next due time is after the time it was
        re-evaluated at, except for a lead re-evaluation cannot touch (one
        in a stage its flow's version does not have: `audit verify` names
        it).  Such a lead comes back in the next claim; the step says so
        once and goes on while the chunks bring other leads, and ends when
        a chunk brings nothing else, rather than claim it forever."""
        done = 0
        previous: frozenset[str] = frozenset()
        warned = False
        while not self.stopping:
            chunk = self.engine.work_due(flow=self.flow, limit=self.batch)
            if not chunk.leads:
                break
            self._count(chunk)
            done += chunk.leads
            again = previous.intersection(chunk.lead_ids)
            if again and not warned:
                LOG.warning(
                    "worker: %s still due after re-evaluation (%s); `saleflow audit verify` says why",
                    _counted(len(again), "lead was", "leads were"),
                    ", ".join(sorted(again)[:3]) + (", …" if len(again) > 3 else ""),
                )
                warned = True
            if len(again) == chunk.leads or chunk.leads < self.batch:
                break  # nothing but those leads, or fewer than asked for: nothing else is due now
            previous = frozenset(chunk.lead_ids)
        return done

    def _count(self, chunk: WorkDone) -> None:
        totals = self.totals
        totals.chunks += 1
        totals.leads += chunk.leads
        totals.moves += chunk.moves
        totals.sla_breaches += chunk.sla_breaches
        LOG.info(
            "worker: %s, %s, %s in %.2f s",
            _counted(chunk.leads, "lead"),
            _counted(chunk.moves, "move"),
            _counted(chunk.sla_breaches, "SLA breach", "SLA breaches"),
            chunk.seconds,
        )

    # -- the loop ------------------------------------------------------------
    def run_pass(self) -> int:
        """Every step once, in order (stopping between steps when asked);
        the work done."""
        done = 0
        for step in self.steps:
            if self.stopping:
                break
            done += step()
        return done

    def run(self, *, once: bool = False, waiting: Callable[[str], None] | None = None) -> Totals:
        """Passes until `stop()`; with `once`, until a pass is done (which
        drains what is due now: the cron form).  On SQLite, first wait for
        any other worker on the same database to stop (`waiting` is told
        why, once).  A database that goes away or a conflict that persists
        ends a `once` run (its error is raised); a looping worker logs it
        and tries again after `interval`."""
        with one_at_a_time(self.engine, self._stop, waiting or LOG.warning) as mine:
            if not mine:
                return self.totals  # stopped while waiting for the other worker
            LOG.info(
                "worker: started (pid %d, %s per chunk%s)",
                os.getpid(),
                _counted(self.batch, "lead"),
                "" if once else f", {self.interval:g} s between polls when idle",
            )
            while not self.stopping:
                try:
                    self.run_pass()
                except (Unavailable, Conflict) as err:
                    if once:
                        raise
                    LOG.warning("worker: %s; trying again in %g s", err, self.interval)
                if once:
                    break
                # A pass ends when nothing is left due (or a lead stayed due
                # after re-evaluation: see `tick_due`); leads come due with
                # time, so look again after `interval`, never at once.
                self._idle()
        return self.totals

    def _idle(self) -> None:
        """Wait `interval` seconds, or until `stop()`."""
        deadline = time.monotonic() + self.interval
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, STOP_CHECK))


def check_interval(seconds: float) -> float:
    """A worker's `interval`: a finite number of seconds, from MIN_INTERVAL
    to MAX_INTERVAL."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not MIN_INTERVAL <= seconds <= MAX_INTERVAL  # NaN fails every comparison
    ):
        raise BadInput(
            f"the interval is a number of seconds from {MIN_INTERVAL:g} to {MAX_INTERVAL:,.0f}, "
            f"not {_shown(seconds)}"
        )
    return float(seconds)


# -- SQLite: one worker at a time ----------------------------------------------


def lock_file(engine: Engine) -> str | None:
    """The file whose lock a worker on this SQLite database holds; None for
    PostgreSQL and for a database in memory (one process only)."""
    from ..store.connect import parse_url, sqlite_file

    url = getattr(engine.store, "url", None)
    if not isinstance(url, str):
        return None
    path = sqlite_file(parse_url(url))
    return None if path is None else os.path.abspath(path) + LOCK_SUFFIX


@contextmanager
def one_at_a_time(engine: Engine, stop: threading.Event, waiting: Callable[[str], None]) -> Iterator[bool]:
    """Hold the worker lock of a SQLite database for the block (yields True),
    waiting for another worker to let go of it first; yields False if
    `stop` is set while waiting.  Nothing to hold on PostgreSQL."""
    path = lock_file(engine)
    if path is None:
        yield True
        return
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise BadInput(f"cannot open the worker lock {path}: {err.strerror or err}") from None
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    holder = _holder(fd)
                    where = getattr(engine.store, "where", path.removesuffix(LOCK_SUFFIX))
                    waiting(
                        f"another worker{holder} is working on the database {where}; SQLite takes "
                        "one worker at a time, so this one waits for it to stop"
                    )
                    told = True
                if stop.wait(STOP_CHECK):
                    yield False
                    return
        with suppress(OSError):  # only a note for whoever waits next
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """ " (pid N)" for the worker that holds the lock, as it wrote it."""
    with suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
        return f" (pid {pid})"
    return ""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"
