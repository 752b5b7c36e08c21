"""One bounded round of webhook delivery: `deliver(engine_or_store, ...)`.

For each webhook, in a thread of its own (so that a slow endpoint holds up
only its own webhook):

1. **queue**: read the change feed after the hook's cursor (at most `limit`
   entries, through `saleflow.store.feed`, so never past the published
   position), keep those its stage filter matches, and queue them with the
   cursor moved on, in one short transaction (`hooks.enqueue`, a
   compare-and-set: a worker that lost the race writes nothing);
2. **send**: up to PARALLEL threads each claim one due head at a time
   (`hooks.claim`: a lease, and on PostgreSQL ``FOR UPDATE SKIP LOCKED``,
   so workers never take the same lead's queue), POST its entries in `seq`
   order until one fails, and record the outcome (`hooks.record`), until
   `limit` heads were sent or none is due.  No transaction is open while a
   request is in flight.

A request is the entry as `saleflow changes` prints it (`serialise.
change_json`, compact JSON, UTF-8, without the newline), with
``Saleflow-Delivery: SEQ`` and, when the hook has a secret,
``Saleflow-Signature: sha256=HEX`` over those exact bytes.  A 2xx answer
delivers it; anything else (another status, a timeout, a refused
connection, a secret whose environment variable is not set) is a failed
attempt, retried on the schedule of `schedule.next_attempt` and given up
24 hours after the entry was queued.  When an attempt fails without an
answer (timeout, connection) or for want of the secret, the hook's round
stops claiming: the next round tries again, so a dead endpoint costs at
most one timeout per round, in its own thread.

At least once: a worker that dies between sending and recording leaves
its lease, which runs out after LEASE_MARGIN plus the time its run could
take; another worker then sends the run again.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..journal import JournalEntry
from ..jsontext import compact
from ..limits import one_line
from ..records import Store
from ..store.feed import read_changes
from ..store.hooks import Attempt, Claim, Hook, claim, enqueue, entries_at, list_hooks, record
from ..views.serialise import change_json
from .schedule import next_attempt
from .signing import DELIVERY_HEADER, HEADER, signature

if TYPE_CHECKING:
    import httpx

    from ..runtime.engine import Engine

TIMEOUT = 10.0  # seconds, SPEC §8
LIMIT = 100  # heads sent (and LIMIT * RUN entries queued) per hook per round
RUN = 10  # entries of one lead sent under one claim
PARALLEL = 4  # requests in flight per hook
HOOKS_AT_ONCE = 4  # hooks served at once
LEASE_MARGIN = timedelta(seconds=60)
MAX_ERROR = 500  # characters of an error kept
NEEDS_HTTPX = "webhook delivery needs httpx: pip install 'saleflow[webhooks]' (or 'saleflow[server]')"


@dataclass
class HookReport:
    """What one round did for one webhook."""

    queued: int = 0
    delivered: int = 0
    failed: int = 0
    given_up: int = 0
    lost: int = 0
    stopped: str | None = None  # why the round stopped claiming early

    def to_json(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "delivered": self.delivered,
            "failed": self.failed,
            "given_up": self.given_up,
            "lost": self.lost,
            "stopped": self.stopped,
        }


@dataclass
class DeliveryReport:
    """What one round did: entries queued, delivered, attempts failed (to
    be retried), entries given up, outcomes not recorded because a lease
    ran out (`lost`), per webhook and in all."""

    hooks: dict[str, HookReport] = field(default_factory=dict)

    def _sum(self, name: str) -> int:
        return sum(getattr(report, name) for report in self.hooks.values())

    @property
    def queued(self) -> int:
        return self._sum("queued")

    @property
    def delivered(self) -> int:
        return self._sum("delivered")

    @property
    def failed(self) -> int:
        return self._sum("failed")

    @property
    def given_up(self) -> int:
        return self._sum("given_up")

    @property
    def busy(self) -> bool:
        """Whether the round made progress (queued, delivered or gave up
        entries): another may find more to do.  Failed attempts are not
        progress: they wait for their back-off."""
        return any(r.queued or r.delivered or r.given_up for r in self.hooks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "delivered": self.delivered,
            "failed": self.failed,
            "given_up": self.given_up,
            "hooks": {name: report.to_json() for name, report in sorted(self.hooks.items())},
        }

    def summary(self) -> str:
        return (
            f"queued {self.queued}, delivered {self.delivered}, failed {self.failed} (retrying), "
            f"given up {self.given_up}"
        )


def new_client(timeout: float = TIMEOUT) -> httpx.Client:
    """An httpx client for deliveries (`BadInput` when httpx is missing)."""
    try:
        import httpx
    except ImportError:
        raise BadInput(NEEDS_HTTPX) from None
    return httpx.Client(timeout=timeout, follow_redirects=False, headers={"User-Agent": "saleflow"})


def deliver(
    target: Engine | Store,
    *,
    now: datetime | None = None,
    limit: int = LIMIT,
    client: httpx.Client | None = None,
    timeout: float = TIMEOUT,
    wall: Callable[[], datetime] | None = None,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """One round of delivery for every webhook (see the module's
    docstring).  `now` is the engine's clock (back-off and give-up; the
    engine's own `now()` when given an engine), `wall` the real clock
    (leases), `timeout` each request's limit in seconds."""
    store: Store = target.store if hasattr(target, "store") else target
    if now is None:
        clock = getattr(target, "now", None)
        now = clock() if callable(clock) else datetime.now(UTC)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise BadInput("a delivery round's limit is a whole number of at least 1")
    own = client is None
    http = new_client(timeout) if client is None else client
    round_ = _Round(store, now, limit, http, timeout, wall or _wall_clock, rng or random.Random())
    try:
        hooks = list_hooks(store)
        report = DeliveryReport({hook.name: HookReport() for hook in hooks})
        if not hooks:
            return report
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=min(HOOKS_AT_ONCE, len(hooks))) as pool:
            futures = [pool.submit(round_.hook, hook, report.hooks[hook.name]) for hook in hooks]
            for future in futures:
                error = future.exception()
                if error is not None:
                    errors.append(error)
        if errors:
            raise errors[0]
        return report
    finally:
        if own:
            http.close()


def worker_step(engine: Engine, *, timeout: float = TIMEOUT) -> Callable[[], int]:
    """The worker's webhook step (`Worker.steps`): one delivery round per
    pass, returning the number delivered; nothing, not even an HTTP
    client, while no webhook is registered.  Without httpx the step says
    so once, as a warning, and delivers nothing: the worker goes on
    ticking, and the entries wait in the journal until a worker that has
    httpx delivers them."""
    warned = False

    def step() -> int:
        nonlocal warned
        if not list_hooks(engine.store):
            return 0
        try:
            return deliver(engine, timeout=timeout).delivered
        except BadInput as err:
            if str(err) != NEEDS_HTTPX:
                raise
            if not warned:
                logging.getLogger("saleflow.worker").warning(
                    "worker: %s; this worker delivers no webhooks", err
                )
                warned = True
            return 0

    return step


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class _Round:
    """The state one `deliver` call shares between its threads."""

    def __init__(
        self,
        store: Store,
        now: datetime,
        limit: int,
        client: httpx.Client,
        timeout: float,
        wall: Callable[[], datetime],
        rng: random.Random,
    ) -> None:
        self.store = store
        self.now = now
        self.limit = limit
        self.client = client
        self.timeout = timeout
        self.wall = wall
        self.rng = rng
        self.rng_lock = threading.Lock()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.lease = timedelta(seconds=RUN * timeout) + LEASE_MARGIN

    # -- one hook ---------------------------------------------------------------

    def hook(self, hook: Hook, report: HookReport) -> None:
        self.queue(hook, report)
        budget = _Budget(self.limit)
        stop = threading.Event()
        lock = threading.Lock()
        errors: list[BaseException] = []

        def run(thread_target: Callable[[], None]) -> None:
            try:
                thread_target()
            except BaseException as exc:  # surfaced below, in the caller's thread
                errors.append(exc)
                stop.set()

        threads = [
            threading.Thread(
                target=run, args=(lambda: self.sender(hook, report, budget, stop, lock),), daemon=True
            )
            for _ in range(PARALLEL)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def queue(self, hook: Hook, report: HookReport) -> None:
        # Enough for the heads this round may send, each with its run.
        feed = read_changes(
            self.store, hook.cursor, flow=hook.flow, kinds=hook.kinds or None, limit=self.limit * RUN
        )
        found = [(entry.seq, entry.lead_id) for entry in feed if hook.matches(entry)]
        if feed.position != hook.cursor and enqueue(
            self.store, hook.name, hook.cursor, feed.position, found, self.now
        ):
            report.queued += len(found)

    def sender(
        self, hook: Hook, report: HookReport, budget: _Budget, stop: threading.Event, lock: threading.Lock
    ) -> None:
        while not stop.is_set() and budget.take():
            wall = self.wall()
            claims = claim(
                self.store,
                hook.name,
                now=self.now,
                wall=wall,
                lease_until=wall + self.lease,
                owner=self.owner,
                limit=1,
                run=RUN,
            )
            if not claims:
                return
            for claimed in claims:
                self.send_run(hook, claimed, report, stop, lock)

    def send_run(
        self, hook: Hook, claimed: Claim, report: HookReport, stop: threading.Event, lock: threading.Lock
    ) -> None:
        entries = entries_at(self.store, [p.seq for p in claimed.entries])
        delivered: list[int] = []
        failed: Attempt | None = None
        for pending in claimed.entries:
            if stop.is_set() and not delivered:
                break  # the endpoint is down: release the claim untried
            entry = entries.get(pending.seq)
            error, down = (
                ("the journal has no entry at this seq", False) if entry is None else self.post(hook, entry)
            )
            if error is None:
                delivered.append(pending.seq)
                continue
            if down:
                stop.set()
                with lock:
                    report.stopped = error
            with self.rng_lock:
                retry_at = next_attempt(pending.attempts + 1, pending.queued_at, self.now, self.rng)
            failed = Attempt(pending.seq, error, retry_at)
            break
        recorded = record(self.store, claimed, delivered=delivered, failed=failed, now=self.now)
        with lock:
            if not recorded:
                report.lost += 1
                return
            report.delivered += len(delivered)
            if failed is not None:
                if failed.next_at is None:
                    report.given_up += 1
                else:
                    report.failed += 1

    def post(self, hook: Hook, entry: JournalEntry) -> tuple[str | None, bool]:
        """POST one entry: (None, _) when delivered, else (why, whether the
        endpoint or the hook as a whole is unusable now)."""
        import httpx

        body = compact(change_json(entry)).encode("utf-8")
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: str(entry.seq)}
        if hook.secret_env is not None:
            secret = os.environ.get(hook.secret_env)
            if not secret:
                state = "is empty" if secret == "" else "is not set"
                return (
                    f"the environment variable {hook.secret_env} (the webhook's secret) {state} "
                    "where this worker runs",
                    True,
                )
            headers[HEADER] = signature(secret, body)
        try:
            with self.client.stream(
                "POST", hook.url, content=body, headers=headers, timeout=self.timeout
            ) as answer:
                status = answer.status_code
        except httpx.TimeoutException:
            return f"no answer within {self.timeout:g} s", True
        except httpx.HTTPError as exc:
            return _short(f"request failed: {type(exc).__name__}: {exc}"), True
        if 200 <= status < 300:
            return None, False
        more = " (redirects are not followed)" if 300 <= status < 400 else ""
        return f"HTTP {status}{more}", False


class _Budget:
    """How many more heads a hook's round may send (shared by its threads)."""

    def __init__(self, left: int) -> None:
        self._left = left
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left < 1:
                return False
            self._left -= 1
            return True


def _short(text: str) -> str:
    text = one_line(text)
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


__all__ = ["LIMIT", "TIMEOUT", "DeliveryReport", "HookReport", "deliver", "new_client"]
