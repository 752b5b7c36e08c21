"""The runtime API: leads move through a flow, every change audited.

Layer 4.  `Engine` is what programs embed and what the CLI wraps.  Each
public operation is one store transaction holding the lead (retried on
conflict, `Conflict` only if it persists); the semantics of a single lead
inside that transaction live in `progress.py`.  Callbacks registered with
`on_enter` run after the commit, never inside it.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..coerce import as_utc, coerce, default_actor, parse_time
from ..compile import CompiledFlow, compile_flow
from ..due import sla_days, sla_due
from ..errors import BadInput, Conflict, FlowInvalid, NotFound, Rejected, SaleflowError, did_you_mean
from ..journal import ENTRY_KINDS, JournalEntry
from ..language.cache import parse_cached
from ..limits import MAX_INT, MAX_INT32, check_id, check_int, check_text, check_time, number_text, one_line
from ..model.flow import Flow
from ..model.identity import identity
from ..records import (
    DEFAULT_URL,
    EventRecord,
    FieldValue,
    Lead,
    LeadView,
    MoveVerdict,
    Store,
    Transaction,
)
from ..store import Corrupt, open_store
from .batch import chunked, write_behind
from .moves import Step, Work

if TYPE_CHECKING:
    from ..importing import ImportResult
    from ..store.feed import Changes
    from .anchor import Anchor, Rekeyed
    from .audit import Problem

T = TypeVar("T")
_LOG = logging.getLogger("saleflow")

ATTEMPTS = 8
MAX_COUNT = 2**31 - 1  # what the events table's count column holds on every backend
# The most leads one chunk of `work_due` claims: one transaction holds them
# all locked, and their journal entries wait in memory until its commit.
MAX_CHUNK = 10_000
Callback = Callable[[JournalEntry], Any]

# A write of the caller's own to make in the same transaction as the next
# operation (the HTTP service's idempotency key): see `Engine.alongside`.
# A context variable, not a keyword argument, because `add_lead(**fields)`
# and `set(**more)` would take such a keyword for a field's name.
_ALONGSIDE: ContextVar[Callable[[Transaction], None] | None] = ContextVar("alongside", default=None)


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    version: int
    created: bool


def _stored_identity(source: str) -> str | None:
    """The identity of a flow source stored with a raw-text hash."""
    try:
        return identity(parse_cached(source))
    except SaleflowError:
        return None


class TickResult(int):
    """What `Engine.tick` did: the number of moves it made (an int, as it
    always was) and, as `sla_breaches`, how many SLA breaches it recorded."""

    sla_breaches: int

    def __new__(cls, moves: int, sla_breaches: int = 0) -> TickResult:
        result = super().__new__(cls, moves)
        result.sla_breaches = sla_breaches
        return result

    @property
    def moves(self) -> int:
        return int(self)

    def __str__(self) -> str:  # printed and formatted as the number it is
        return int.__repr__(self)

    def __repr__(self) -> str:
        return f"TickResult(moves={int(self)}, sla_breaches={self.sla_breaches})"


@dataclass(frozen=True, slots=True)
class WorkDone:
    """What one chunk of `Engine.work_due` did: the leads it claimed (and
    re-evaluated), the moves and SLA breaches it recorded, and how long it
    took in seconds."""

    lead_ids: tuple[str, ...]
    moves: int
    sla_breaches: int
    seconds: float

    @property
    def leads(self) -> int:
        return len(self.lead_ids)


class Engine:
    """A saleflow engine over one store."""

    def __init__(
        self,
        store: Store,
        *,
        actor: str | None = None,
        now: datetime | str | None = None,
        default_flow: str | None = None,
    ) -> None:
        self.store = store
        self.actor = _name(actor, "the actor") if actor else default_actor()
        fixed = parse_time(now, "--now") if isinstance(now, str) else (as_utc(now, "--now") if now else None)
        self._fixed_now = None if fixed is None else check_time(fixed, "--now")
        self.default_flow = default_flow
        self._compiled: dict[tuple[str, int], CompiledFlow] = {}
        self._latest: dict[str, int] = {}
        self._callbacks: dict[str, list[Callback]] = defaultdict(list)
        # What the last operation's `on_enter` callbacks raised (see `on_enter`).
        self.callback_errors: tuple[Exception, ...] = ()

    # ------------------------------------------------------------------ setup
    @classmethod
    def open(
        cls,
        flow: str | os.PathLike[str] | Flow | None = None,
        db: str = DEFAULT_URL,
        *,
        actor: str | None = None,
        now: datetime | str | None = None,
    ) -> Engine:
        """Open the store at `db`; deploy `flow` (a path or a parsed Flow)
        when given and make it the default for new leads."""
        engine = cls(open_store(db), actor=actor, now=now)
        if flow is not None:
            deployment = engine.deploy(flow)
            engine.default_flow = deployment.name
        return engine

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        return self._fixed_now or datetime.now(UTC)

    def _at(self, at: datetime | str | None) -> datetime | None:
        """An explicit time (`at`), checked; None when there is none, in
        which case the operation asks `_when` inside its transaction."""
        if at is None:
            return None
        return check_time(parse_time(at, "--at") if isinstance(at, str) else as_utc(at, "--at"), "--at")

    def _when(self, at: datetime | None) -> datetime:
        """The time of an operation: the explicit one, else now.  Called in
        the transaction's body after the lead is locked, on every attempt,
        so that a retry after another writer's commit is not back-dated
        before that writer's move."""
        return at if at is not None else self.now()

    def deploy(self, flow: str | os.PathLike[str] | Flow) -> Deployment:
        """Check `flow` and register it at its declared version.  A flow
        that means what a deployed version means (tests, comments and
        layout aside) is that version; a changed one must declare a version
        above every deployed one, or `BadInput` says which to use."""
        from ..check.rules import check  # the checker and the parser: only deploy needs them
        from ..language.parse import load_flow

        parsed = flow if isinstance(flow, Flow) else load_flow(flow)
        diagnostics = check(parsed)
        if any(d.is_error for d in diagnostics):
            raise FlowInvalid(parsed.path, diagnostics, parsed.source)
        version, created = self.store.deploy_flow(
            parsed.name,
            parsed.version,
            identity(parsed),
            parsed.source,
            parsed.path,
            identity_of=_stored_identity,
        )
        self._compiled[(parsed.name, version)] = compile_flow(parsed, version)
        if created:
            self._latest[parsed.name] = version
        else:  # an older version, maybe: ask the store for the latest when needed
            self._latest.pop(parsed.name, None)
        return Deployment(parsed.name, version, created)

    def compiled(self, name: str, version: int | None = None) -> CompiledFlow:
        """The compiled flow `name` at `version` (latest deployed if None)."""
        if version is None:
            if name not in self._latest:
                self._latest[name] = self.store.latest_version(name)
            version = self._latest[name]
        key = (name, version)
        if key not in self._compiled:
            stored_version, source, path = self.store.flow_source(name, version)
            self._compiled[key] = compile_flow(parse_cached(source, path), stored_version)
        return self._compiled[key]

    def _flow_for_new_lead(self, flow: str | Deployment | None) -> CompiledFlow:
        if isinstance(flow, Deployment):  # a file's own version (`lead add --flow FILE`)
            return self.compiled(flow.name, flow.version)
        name = _name(flow, "a flow name") if flow else self.default_flow
        if name is None:
            names = self.store.flow_names()
            if len(names) == 1:
                name = names[0]
            elif not names:
                raise NotFound("no flow is deployed; run `saleflow deploy FLOW` first")
            else:
                raise BadInput(f"several flows are deployed ({', '.join(names)}); say which with --flow")
        # The latest version this engine knows (asked of the store the first
        # time): the values are judged against it before the transaction.
        # Another process may have deployed a newer one since, so the
        # transaction that writes the lead reads it again (`_newest`).
        return self.compiled(name)

    def _newest(self, tx: Transaction, cf: CompiledFlow) -> CompiledFlow:
        """The latest deployed version of `cf`'s flow, read in `tx`, the
        transaction that creates a lead, on its own connection: one indexed
        statement.  (Asking the store before each lead, on a second
        connection, was most of an `add_lead`'s cost.)"""
        version = tx.latest_version(cf.name)
        if version is None or version == cf.version:
            return cf
        self._latest[cf.name] = version
        return self.compiled(cf.name, version)

    @contextmanager
    def alongside(self, write: Callable[[Transaction], None]) -> Iterator[None]:
        """Within the block, each operation's transaction first calls
        `write(tx)`: the caller's own row commits or rolls back with the
        change (on a retried conflict it is called again).  Per thread or
        task, so concurrent requests on one engine do not see each other's."""
        token = _ALONGSIDE.set(write)
        try:
            yield
        finally:
            _ALONGSIDE.reset(token)

    def on_enter(self, stage: str, callback: Callback) -> None:
        """Call `callback(entry)` after a commit in which a lead entered
        `stage` (`entry` is the journal entry with its move).  `stage` must
        be a stage of a deployed flow (`NotFound`, with a suggestion,
        otherwise).  A callback that raises does not undo the committed
        change, nor stop the other callbacks: its exception is logged (logger
        ``saleflow``) and collected on the returned lead's
        `callback_errors` (and on `Engine.callback_errors` for batch
        operations), never raised as if the operation had failed."""
        stage = _name(stage, "a stage name")
        known: list[str] = []
        for flow in self.store.flow_names():
            known.extend(self.compiled(flow).flow.stage_names)
        if stage not in known:
            hint = did_you_mean(stage, known)
            deployed = "no flow is deployed yet" if not known else "no deployed flow has it"
            raise NotFound(f'cannot watch stage "{stage}": {deployed}' + (f"; {hint}" if hint else ""))
        self._callbacks[stage].append(callback)

    # ------------------------------------------------------- transactions
    @property
    def watching(self) -> bool:
        """Whether any `on_enter` callback is registered (batch work keeps
        its journal entries for them only then)."""
        return bool(self._callbacks)

    def run_in_transaction(self, body: Callable[[Transaction], T], entries: list[JournalEntry]) -> T:
        """Run `body(tx)` in one transaction, retrying it whole on conflicts;
        after the commit, the `on_enter` callbacks of the journal entries it
        collected in `entries` (the `Work` that `body` uses appends them).
        For batch work outside the engine (the importer)."""
        return self._run(body, entries)

    def _run(self, body: Callable[[Transaction], T], entries: list[JournalEntry]) -> T:
        """Run `body` in one transaction, retrying conflicts; then callbacks."""
        alongside = _ALONGSIDE.get()
        for attempt in range(ATTEMPTS):
            entries.clear()
            try:
                with self.store.transaction() as tx:
                    if alongside is not None:
                        alongside(tx)
                    result = body(tx)
                break
            except Conflict as conflict:
                _LOG.info("retrying after a conflict (attempt %d of %d): %s", attempt + 1, ATTEMPTS, conflict)
                if attempt == ATTEMPTS - 1:
                    raise Conflict(
                        f"the operation kept conflicting with concurrent updates after {ATTEMPTS} attempts"
                    ) from None
                time.sleep(random.uniform(0.002, 0.02) * (attempt + 1))
        errors = self._notify(entries)
        if isinstance(result, Lead) and errors:
            result.callback_errors = errors
        return result

    def _notify(self, entries: list[JournalEntry]) -> tuple[Exception, ...]:
        """Run the `on_enter` callbacks of committed entries.  Every callback
        runs even if one fails; failures are logged and returned (the change
        itself is committed: raising would tell a caller to retry it, and a
        retry would record it twice)."""
        self.callback_errors = ()
        if not self._callbacks:
            return ()  # the usual case; a batch commits thousands of entries
        failures: list[Exception] = []
        for entry in entries:
            if entry.kind is None:
                continue  # not an entry into a stage
            for callback in self._callbacks.get(entry.stage, ()):
                try:
                    callback(entry)
                except Exception as exc:
                    _LOG.warning(
                        'on_enter("%s") callback failed for lead "%s": %s',
                        entry.stage,
                        entry.lead_id,
                        exc,
                        exc_info=exc,
                    )
                    failures.append(exc)
        self.callback_errors = tuple(failures)
        return self.callback_errors

    def _work(self, tx: Transaction, at: datetime, actor: str | None, entries: list[JournalEntry]) -> Work:
        who = _name(actor, "the actor") if actor else self.actor
        return Work(tx, self.compiled, at, who, entries, self.now())

    def _locked(self, tx: Transaction, lead_id: str) -> Lead:
        lead = tx.lock_lead(lead_id)
        if lead is None:
            raise NotFound(f'lead "{lead_id}" does not exist')
        return lead

    # ---------------------------------------------------------- operations
    def add_lead(
        self,
        lead_id: str,
        /,
        *,
        flow: str | Deployment | None = None,
        at: datetime | str | None = None,
        actor: str | None = None,
        fields: Mapping[str, Any] | None = None,
        **more_fields: Any,
    ) -> Lead:
        """Create a lead in its flow's initial stage, then let it progress.
        `flow` is a flow's name (its latest version) or what `deploy`
        returned (that version)."""
        lead_id = _lead_id(lead_id)
        cf = self._flow_for_new_lead(flow)
        pinned = isinstance(flow, Deployment)  # that version, not the latest
        when = self._at(at)
        raw = {**(fields or {}), **more_fields}
        values = self._coerce(cf, raw, lead_id)
        entries: list[JournalEntry] = []

        def body(tx: Transaction) -> Lead:
            if tx.lock_lead(lead_id) is not None:
                raise BadInput(f'lead "{lead_id}" already exists')
            newest = cf if pinned else self._newest(tx, cf)
            typed = values if newest is cf else self._coerce(newest, raw, lead_id)
            return self._work(tx, self._when(when), actor, entries).create(lead_id, newest, typed)

        return self._run(body, entries)

    def add_leads(
        self,
        rows: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        flow: str | Deployment | None = None,
        at: datetime | str | None = None,
        actor: str | None = None,
        chunk: int = 1000,
    ) -> int:
        """Create many leads, `chunk` per transaction; returns how many.
        A lead that exists already stops the batch (earlier chunks stay)."""
        cf = self._flow_for_new_lead(flow)
        pinned = isinstance(flow, Deployment)  # that version, not the latest
        when = self._at(at)
        created = 0
        for batch in chunked(rows, chunk):
            typed = [(_lead_id(lead_id), self._coerce(cf, values, lead_id)) for lead_id, values in batch]
            entries: list[JournalEntry] = []

            def body(
                tx: Transaction,
                typed: list[tuple[str, dict[str, FieldValue]]] = typed,
                batch: list[tuple[str, Mapping[str, Any]]] = batch,
                entries: list[JournalEntry] = entries,
            ) -> None:
                work = self._work(tx, self._when(when), actor, entries)
                newest = cf if pinned else self._newest(tx, cf)
                if newest is not cf:  # deployed by another process meanwhile
                    typed = [
                        (lead_id, self._coerce(newest, raw, lead_id))
                        for (lead_id, _), (_, raw) in zip(typed, batch, strict=True)
                    ]
                for lead_id, values in typed:
                    if tx.lock_lead(lead_id) is not None:
                        raise BadInput(f'lead "{lead_id}" already exists')
                    work.create(lead_id, newest, values)

            self._run(body, entries)
            created += len(typed)
        return created

    def import_csv(
        self, path: str | os.PathLike[str], /, *, flow: str, id_column: str, **options: Any
    ) -> ImportResult:
        """Import leads and their history from a CSV file; returns an
        `ImportResult`.  The options and the rules are those of
        `saleflow.importer.import_csv` (SPEC §4 `import`)."""
        from ..importing import import_csv

        return import_csv(self, path, flow=flow, id_column=id_column, **options)

    def set(
        self,
        lead_id: str,
        values: Mapping[str, Any] | None = None,
        /,
        *,
        at: datetime | str | None = None,
        actor: str | None = None,
        **more: Any,
    ) -> Lead:
        """Set (or, with None, unset) fields of a lead, then let it progress."""
        lead_id = _lead_id(lead_id)
        when = self._at(at)
        raw = {**(values or {}), **more}
        entries: list[JournalEntry] = []

        def body(tx: Transaction) -> Lead:
            lead = self._locked(tx, lead_id)
            cf = self._lead_flow(lead)
            typed = self._coerce(cf, raw, lead_id)
            return self._work(tx, self._when(when), actor, entries).set_fields(lead, typed)

        return self._run(body, entries)

    def record(
        self,
        lead_id: str,
        event: str,
        /,
        *,
        at: datetime | str | None = None,
        channel: str | None = None,
        content: str | None = None,
        count: int = 1,
        actor: str | None = None,
    ) -> Lead:
        """Record an event on a lead, then let it progress."""
        lead_id = _lead_id(lead_id)
        event = _name(event, "an event name")
        channel = _name(channel, "an event's channel") if channel is not None else None
        content = check_text(content, "an event's content") if content is not None else None
        when = self._at(at)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise BadInput(f"an event's count must be a whole number from 1 to {MAX_COUNT}, not {count!r}")
        entries: list[JournalEntry] = []

        def body(tx: Transaction) -> Lead:
            lead = self._locked(tx, lead_id)
            cf = self._lead_flow(lead)
            definition = cf.flow.event(event)
            if definition is None:
                hint = did_you_mean(event, [e.name for e in cf.flow.events])
                raise NotFound(f'flow "{cf.name}" has no event "{event}"' + (f"; {hint}" if hint else ""))
            at_ = self._when(when)
            cycle = self._cycle_at(tx, lead, at_)  # read in the transaction that holds the lead
            record = EventRecord(event, at_, channel or definition.channel, content, count, cycle)
            return self._work(tx, at_, actor, entries).record_event(lead, record)

        return self._run(body, entries)

    def _cycle_at(self, tx: Transaction, lead: Lead, when: datetime) -> int:
        """The cycle a (possibly back-dated) event belongs to: one that
        happened before a recycle counts in the cycle it happened in."""
        if lead.cycle == 1 or when >= lead.entered_at:
            return lead.cycle
        recycles = [e.at for e in tx.journal(lead.id) if e.kind == "recycle"]
        return 1 + sum(1 for at in recycles if at <= when)

    def advance(
        self,
        lead_id: str,
        /,
        *,
        to: str | None = None,
        force: bool = False,
        reason: str | None = None,
        actor: str | None = None,
        at: datetime | str | None = None,
    ) -> Lead:
        """Move a lead on request: to the next main-line stage, or `to` a
        stage by its defined move (advance, skip, exit, recycle).  `force`
        makes any move, gates ignored, and needs a reason.  Raises
        `Rejected` with the blockers when a gate fails."""
        lead_id = _lead_id(lead_id)
        to = _name(to, "a stage name") if to is not None else None
        reason = check_text(reason, "a reason") if reason is not None else None
        if force and not (reason and reason.strip()):
            raise BadInput("a forced move needs a reason (--reason)")
        when = self._at(at)
        entries: list[JournalEntry] = []

        def body(tx: Transaction) -> Lead:
            lead = self._locked(tx, lead_id)
            # force is how a lead stranded in a stage its version lacks gets out
            cf = self._lead_flow(lead, stranded_ok=force)
            if to is not None and not cf.has_stage(to):
                hint = did_you_mean(to, cf.flow.stage_names)
                raise NotFound(
                    f'flow "{cf.name}" version {cf.version} has no stage "{to}"'
                    + (f"; {hint}" if hint else "")
                )
            return self._work(tx, self._when(when), actor, entries).request(
                lead, to, force=force, reason=reason
            )

        return self._run(body, entries)

    def migrate(
        self,
        lead_id: str,
        /,
        *,
        version: int | None = None,
        actor: str | None = None,
        at: datetime | str | None = None,
    ) -> Lead:
        """Move a lead to another deployed version of its flow (the latest
        when `version` is None), keeping its stage, fields and cycle."""
        lead_id = _lead_id(lead_id)
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int):
                raise BadInput(f"a flow version is a whole number, not {version!r}")
            check_int(version, "a flow version", 1, MAX_INT32)
        when = self._at(at)
        entries: list[JournalEntry] = []

        def body(tx: Transaction) -> Lead:
            lead = self._locked(tx, lead_id)
            target = self.compiled(lead.flow, version) if version is not None else None
            if target is None:
                self._latest[lead.flow] = self.store.latest_version(lead.flow)
                target = self.compiled(lead.flow)
            if target.version == lead.version:
                return lead
            return self._work(tx, self._when(when), actor, entries).migrate(lead, target)

        return self._run(body, entries)

    def advance_all(
        self,
        *,
        flow: str | None = None,
        actor: str | None = None,
        chunk: int = 500,
        at: datetime | str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Every lead, as far as its gates allow; returns the number of moves.
        `progress(n)` is called after each chunk with its number of leads."""
        return int(self._batch(flow=flow, actor=actor, chunk=chunk, sla=False, at=at, progress=progress))

    def tick(
        self,
        *,
        flow: str | None = None,
        actor: str | None = None,
        chunk: int = 500,
        at: datetime | str | None = None,
        progress: Callable[[int], None] | None = None,
        every: bool = False,
    ) -> TickResult:
        """Re-evaluate time-dependent gates, windows, auto recycles and SLAs
        (as of `at`, default now) of the leads whose due time has come (SPEC
        §8): every other lead would come out of it unchanged.  Returns the
        number of moves, with the number of SLA breaches recorded as its
        `sla_breaches`.  `progress(n)` is called after each chunk.

        `every=True` visits every lead instead, as a tick did before due
        times (a full scan: the same result, at the cost of all leads)."""
        return self._batch(
            flow=flow, actor=actor, chunk=chunk, sla=True, at=at, progress=progress, every=every
        )

    def work_due(
        self,
        *,
        flow: str | None = None,
        limit: int = 500,
        actor: str | None = None,
        at: datetime | str | None = None,
    ) -> WorkDone:
        """One chunk of a worker's work (`saleflow worker`), in one
        transaction: claim up to `limit` leads whose due time has come (of
        `flow` only, if given), re-evaluate each as `tick` does (gates that
        read time, auto recycles, SLA breaches; waiting leads enter room
        that frees, best score now first), commit.  On PostgreSQL the claim
        is ``FOR UPDATE SKIP LOCKED``: leads another worker holds are
        skipped, not waited for, so workers take disjoint chunks; the row
        locks last until the commit, so a worker killed mid-chunk rolls its
        chunk back and leaves it to the next claim.  `WorkDone.leads` is 0
        when nothing (not held by another worker) is due."""
        if flow is not None:
            self.compiled(_name(flow, "a flow name"))  # NotFound for an unknown flow
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CHUNK:
            raise BadInput(f"a chunk holds from 1 to {MAX_CHUNK:,} leads, not {_shown(limit)}")
        when = self._at(at)
        started = time.perf_counter()
        entries: list[JournalEntry] = []
        claimed: list[str] = []

        def body(tx: Transaction) -> int:
            now = self._when(when)
            claimed[:] = [lead.id for lead in tx.claim_due(now, flow, limit)]
            if not claimed:
                return 0
            with write_behind(tx, claimed) as work_tx:
                work = self._work(work_tx, now, actor, entries)
                for lead_id in claimed:
                    lead = work_tx.lock_lead(lead_id)
                    if lead is not None:
                        work.reevaluate(lead, sla=True)
            return work.breaches

        try:
            breaches = self._run(body, entries)  # of the attempt that committed
        except Corrupt as err:
            raise self._which_corrupt(err, claimed) from None
        moves = sum(1 for entry in entries if entry.entry == "moved")
        return WorkDone(tuple(claimed), moves, breaches, time.perf_counter() - started)

    def _batch(
        self,
        *,
        flow: str | None,
        actor: str | None,
        chunk: int,
        sla: bool,
        at: datetime | str | None,
        progress: Callable[[int], None] | None = None,
        every: bool = False,
    ) -> TickResult:
        if flow is not None:
            self.compiled(_name(flow, "a flow name"))  # NotFound for an unknown flow
        when = self._at(at)
        moves = breaches = 0
        # A tick visits the leads due (in id order, as a visit of every lead
        # would meet them); a lead that comes due during the walk, after the
        # time it started at, waits for the next tick.
        due_walk = sla and not every
        walk = (
            self.store.iter_due(when or self.now(), flow=flow, chunk=chunk)
            if due_walk
            else self.store.iter_leads(flow=flow, chunk=chunk)
        )
        for leads in walk:
            ids = [lead.id for lead in leads]
            entries: list[JournalEntry] = []

            def body(tx: Transaction, ids: list[str] = ids, entries: list[JournalEntry] = entries) -> int:
                with write_behind(tx, ids) as work_tx:
                    work = self._work(work_tx, self._when(when), actor, entries)
                    for lead_id in _in_id_order(ids, work.due_now if due_walk else None):
                        lead = work_tx.lock_lead(lead_id)
                        if lead is not None:
                            work.reevaluate(lead, sla=sla)
                return work.breaches

            try:
                breaches += self._run(body, entries)  # of the attempt that committed
            except Corrupt as err:
                raise self._which_corrupt(err, ids) from None
            moves += sum(1 for entry in entries if entry.entry == "moved")
            if progress is not None:
                progress(len(ids))
        return TickResult(moves, breaches)

    def _which_corrupt(self, err: Corrupt, ids: list[str]) -> Corrupt:
        """`err` naming its lead: batch reads fetch a chunk's rows at once,
        so the lead is found by reading each one alone (only on this error)."""
        if err.lead_id is not None:
            return err
        for lead_id in ids:
            try:
                self.store.get_lead(lead_id)
                self.store.journal(lead_id)
                self.store.events_of(lead_id)
            except Corrupt as found:
                return found
        return err

    # ---------------------------------------------------------------- reads
    def _lead_flow(self, lead: Lead, *, stranded_ok: bool = False) -> CompiledFlow:
        try:
            cf = self.compiled(lead.flow, lead.version)
        except NotFound:
            raise NotFound(
                f'lead "{lead.id}" belongs to flow "{lead.flow}" version {lead.version}, which is not deployed'
            ) from None
        if not stranded_ok and not cf.has_stage(lead.stage):
            raise BadInput(
                f'lead "{lead.id}" is in stage "{lead.stage}", which flow "{lead.flow}" version '
                f"{lead.version} does not have; force it to a stage of that version"
            )
        return cf

    def _coerce(self, cf: CompiledFlow, raw: Mapping[str, Any], lead_id: str) -> dict[str, FieldValue]:
        typed: dict[str, FieldValue] = {}
        for name, value in raw.items():
            definition = cf.flow.field(_name(name, "a field name"))
            if definition is None:
                hint = did_you_mean(name, [f.name for f in cf.flow.fields])
                raise NotFound(
                    f'flow "{cf.name}" has no field "{name}" (lead "{lead_id}")'
                    + (f"; {hint}" if hint else "")
                )
            typed[name] = coerce(definition, value)
        return typed

    def lead(self, lead_id: str) -> LeadView:
        """The lead with its team, score, event counts and next moves."""
        lead_id = _lead_id(lead_id)
        lead = self.store.get_lead(lead_id)
        if lead is None:
            raise NotFound(f'lead "{lead_id}" does not exist')
        cf = self._lead_flow(lead)
        events = [e for e in self.store.events_of(lead_id) if e.cycle == lead.cycle]
        step = Step(cf, lead, events, self.now())
        verdicts = tuple(step.verdicts(lambda flow, stage: self.store.count_leads(flow, stage)))
        stage = cf.flow.stage(lead.stage)
        counts: dict[str, int] = {e.name: 0 for e in cf.flow.events}
        for event in events:
            counts[event.name] = counts.get(event.name, 0) + event.count
        due_at = sla_due(stage, lead.entered_at)
        return LeadView(
            id=lead.id,
            flow=lead.flow,
            version=lead.version,
            stage=lead.stage,
            team=stage.team if stage else None,
            score=step.score(),
            fields=step.fields(),
            events=counts,
            cycle=lead.cycle,
            entered_at=lead.entered_at,
            created_at=lead.created_at,
            next=verdicts,
            sla_days=sla_days(stage),
            due_at=due_at,
            overdue=due_at is not None and self.now() > due_at,
        )

    def allowed(self, lead_id: str) -> list[MoveVerdict]:
        """Every move defined from the lead's stage, with its verdict."""
        return list(self.lead(lead_id).next)

    def enabled(self, lead_id: str) -> list[MoveVerdict]:
        """The moves that can be made now."""
        return [v for v in self.lead(lead_id).next if v.allowed]

    def blockers(self, lead_id: str, to: str) -> list[Any]:
        """Why the lead cannot move to `to` now ([] when it can)."""
        to = _name(to, "a stage name")
        for verdict in self.lead(lead_id).next:
            if verdict.to == to:
                return list(verdict.blockers)
        raise Rejected(f'lead "{lead_id}" has no move to "{to}"', lead_id=lead_id, stage=to)

    def leads(
        self, *, flow: str | None = None, stage: str | None = None, team: str | None = None
    ) -> Iterator[Lead]:
        """Stored leads, streamed, optionally by flow, stage or team.
        `NotFound` for a flow, stage or team no deployed flow has, raised
        by this call, not by the first `next()`."""
        flow, stages = self.lead_filter(flow=flow, stage=stage, team=team)
        return (
            lead for chunk in self.store.iter_leads(flow=flow, stages=stages) for lead in self.scored(chunk)
        )

    def scored(self, leads: list[Lead]) -> list[Lead]:
        """`leads` (as read) with their scores as of now: a score that time
        alone can change (its rules count events in a window, or read days)
        is computed again, so a listing never shows one that windows closing
        have made stale; the others are the stored ones, which every change
        to a lead keeps current.  One query for the events of the whole list."""
        timed = [lead for lead in leads if self._score_reads_time(lead)]
        if not timed:
            return leads
        now = self.now()
        events = self.store.events_of_leads([lead.id for lead in timed])
        for lead in timed:
            cf = self.compiled(lead.flow, lead.version)
            current = [e for e in events[lead.id] if e.cycle == lead.cycle]
            if current or cf.score_reads_days:  # else: the same at any time
                lead.score = Step(cf, lead, current, now).score()
        return leads

    def _score_reads_time(self, lead: Lead) -> bool:
        try:
            return self.compiled(lead.flow, lead.version).score_reads_time
        except NotFound:
            return False  # a flow version not deployed: `show` says so; a listing goes on

    def lead_filter(
        self, *, flow: str | None = None, stage: str | None = None, team: str | None = None
    ) -> tuple[str | None, list[str] | None]:
        """What a listing by flow, stage or team reads: the flow, and the
        stages (None: all of them).  `NotFound`, with a hint, for a flow,
        stage or team no deployed flow has."""
        flow = _name(flow, "a flow name") if flow is not None else None
        stage = _name(stage, "a stage name") if stage is not None else None
        team = _name(team, "a team name") if team is not None else None
        names = self.store.flow_names() if flow is None else [flow]
        if flow is not None:
            self.compiled(flow)  # NotFound when it is not deployed
        if stage is not None:
            known = {s for name in names for s in self.compiled(name).flow.stage_names}
            # a stage dropped by a newer version may still hold leads of an older one
            if stage not in known and not self.store.count_leads(flow, stage):
                hint = did_you_mean(stage, sorted(known))
                where = f'flow "{flow}" has no' if flow else "no deployed flow has a"
                raise NotFound(f'{where} stage "{stage}"' + (f"; {hint}" if hint else ""))
        stages: list[str] | None = [stage] if stage else None
        if team is not None:
            team_stages: set[str] = set()
            for name in names:
                found = self.compiled(name).flow.team(team)
                if found is not None:
                    team_stages.update(found.stages)
            if not team_stages:
                raise NotFound(f'no deployed flow has a team "{team}"')
            stages = sorted(s for s in (stages or team_stages) if s in team_stages)
        return flow, stages

    def history(self, lead_id: str, *, moves_only: bool = True) -> list[JournalEntry]:
        """A lead's journal, oldest first: its moves (SPEC §3's audit
        entries, the first one its creation) or, with ``moves_only=False``,
        every entry (fields set, events, SLA breaches too)."""
        lead_id = _lead_id(lead_id)
        if self.store.get_lead(lead_id) is None:
            raise NotFound(f'lead "{lead_id}" does not exist')
        entries = self.store.journal(lead_id)
        return [e for e in entries if e.kind is not None] if moves_only else entries

    def changes(
        self,
        since: int = 0,
        *,
        flow: str | None = None,
        kinds: Iterable[str] | str | None = None,
        limit: int | None = None,
    ) -> Changes:
        """The change feed (SPEC §6): journal entries with a `seq` above
        `since`, in `seq` order, up to the journal's published position,
        of one flow and some kinds of entry (`ENTRY_KINDS`) if asked, at
        most `limit` of them.  Resuming from the last `seq` seen (or from
        the iterator's `position` once it is spent) misses nothing and
        repeats nothing, whatever commits meanwhile (`saleflow.store.feed`
        says why).  `BadInput` and `NotFound` are raised by this call, not
        by the first `next()`; the entries are read a page at a time."""
        if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since <= MAX_INT:
            raise BadInput(
                f"since (the last seq seen) must be a whole number from 0 to {MAX_INT:,}, not {_shown(since)}"
            )
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_INT
        ):
            raise BadInput(f"a limit must be a whole number from 1 to {MAX_INT:,}, not {_shown(limit)}")
        wanted: list[str] | None = None
        if kinds is not None:
            wanted = [_kind(kind) for kind in ([kinds] if isinstance(kinds, str) else kinds)]
            if not wanted:
                raise BadInput("name at least one kind of entry, or none for all of them")
        if flow is not None:
            flow = _name(flow, "a flow name")
            self.store.latest_version(flow)  # NotFound when it is not deployed
        from ..store.feed import read_changes

        return read_changes(self.store, since, flow=flow, kinds=wanted, limit=limit)

    # The audit's modules load with the audit commands, not with every engine.

    def verify(self, anchor: Anchor | None = None) -> list[Problem]:
        """Recompute every hash chain and replay every lead's history; with
        an `anchor` (`Engine.anchor`, `anchor.read_anchor`), also prove that
        the journal up to its position is what it was then: a problem of
        no lead (`Problem.lead_id` None) if not.  Raises `WrongKey` if the
        journal is sealed with another key than the store's."""
        from . import anchor as anchor_mod
        from . import audit as audit_mod

        problems = audit_mod.check_flows(self.store) + audit_mod.verify(self.store, self.compiled)
        if anchor is not None:
            problems.extend(anchor_mod.check_anchor(self.store, anchor, chains_fail=bool(problems)))
        return problems

    def anchor(self) -> Anchor:
        """A digest of the journal as of its published position, to be kept
        outside the database (`saleflow audit anchor`)."""
        from . import anchor as anchor_mod

        return anchor_mod.compute_anchor(self.store)

    def rekey(self, old_key: bytes | None) -> Rekeyed:
        """Move the journal from `old_key` (None: no key) to the store's key
        (`saleflow audit rekey`); see `anchor.rekey`."""
        from . import anchor as anchor_mod

        return anchor_mod.rekey(self.store, self.compiled, old_key)


def _lead_id(value: Any) -> str:
    """A lead id from a caller: non-empty text a database can store as a key."""
    if not isinstance(value, str):
        raise BadInput(f"a lead id is text, not {type(value).__name__}")
    return check_id(value, "a lead id")


def _kind(value: Any) -> str:
    """A kind of journal entry from a caller: one of `ENTRY_KINDS`."""
    known = ", ".join(ENTRY_KINDS)
    if not isinstance(value, str):
        raise BadInput(f"a kind of entry is text ({known}), not {type(value).__name__}")
    check_id(value, "a kind of entry")
    if value not in ENTRY_KINDS:
        hint = did_you_mean(value, ENTRY_KINDS)
        raise BadInput(
            f'no kind of entry is called "{value}"'
            + (f" ({hint})" if hint else "")
            + f"; the kinds are {known}"
        )
    return value


def _shown(value: Any) -> str:
    """A value a caller passed where a whole number belongs, for a message."""
    if isinstance(value, int) and not isinstance(value, bool):
        return number_text(value)
    return f"{type(value).__name__} {one_line(repr(value)[:40])}"


def _in_id_order(ids: list[str], due_now: list[str] | None) -> Iterator[str]:
    """The leads of a chunk (`ids`, in id order) to visit, in id order.  A
    walk over the due leads (`due_now` is its work's list of the leads it
    made due at once, growing as it goes) takes on those that come due
    within the chunk's range ahead of the visit, as a walk over every lead
    meets them; the next chunk's query finds those beyond it."""
    if due_now is None or not ids:
        yield from ids
        return
    last = ids[-1]
    pending = list(ids)
    heapq.heapify(pending)
    done: str | None = None
    taken = 0
    while pending:
        lead_id = heapq.heappop(pending)
        if done is not None and lead_id <= done:
            continue
        yield lead_id
        done = lead_id
        while taken < len(due_now):
            other = due_now[taken]
            taken += 1
            if done < other <= last:
                heapq.heappush(pending, other)


def _name(value: Any, what: str) -> str:
    """A name (flow, stage, event, field, channel, actor) from a caller."""
    if not isinstance(value, str):
        raise BadInput(f"{what} is text, not {type(value).__name__}")
    return check_id(value, what)
