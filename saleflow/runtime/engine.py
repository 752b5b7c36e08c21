"""The runtime API: leads move through a flow, every change audited.

Layer 4.  `Engine` is what programs embed and what the CLI wraps.  Each
public operation is one store transaction holding the lead (retried on
conflict, `Conflict` only if it persists); the semantics of a single lead
inside that transaction live in `moves.py`.  Callbacks registered with
`on_enter` run after the commit, never inside it.

`Engine` is the one public class; its jobs are split by module: batch work
(`advance_all`, `tick`, `work_due`) is `BatchWork` in ticking.py, the read
views (`lead`, `leads`, `history`, `changes`) are `LeadReads` in reads.py,
and argument checks are in arguments.py.  This module keeps the setup
(deploy, compiled flows, callbacks), the transaction runner and the
single-lead write operations; it is a little over 500 lines because those
operations share the runner and the flow cache, and splitting them from it
would leave each half reaching into the other.
"""

from __future__ import annotations

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
from ..errors import BadInput, Conflict, FlowInvalid, NotFound, SaleflowError, did_you_mean
from ..journal import JournalEntry
from ..language.cache import parse_cached
from ..limits import MAX_INT32, check_int, check_text, check_time
from ..model.flow import Flow
from ..model.identity import identity
from ..records import (
    DEFAULT_URL,
    EventRecord,
    FieldValue,
    Lead,
    Store,
    Transaction,
)
from ..store import open_store
from .arguments import checked_lead_id, checked_name
from .batch import chunked
from .moves import Work
from .reads import LeadReads
from .ticking import BatchWork

if TYPE_CHECKING:
    from ..importing import ImportResult
    from .anchor import Anchor, Rekeyed
    from .audit import Problem

T = TypeVar("T")
_LOG = logging.getLogger("saleflow")

ATTEMPTS = 8
MAX_COUNT = 2**31 - 1  # what the events table's count column holds on every backend
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


class Engine(BatchWork, LeadReads):
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
        self.actor = checked_name(actor, "the actor") if actor else default_actor()
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
        name = checked_name(flow, "a flow name") if flow else self.default_flow
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
        stage = checked_name(stage, "a stage name")
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
        who = checked_name(actor, "the actor") if actor else self.actor
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
        lead_id = checked_lead_id(lead_id)
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
            typed = [
                (checked_lead_id(lead_id), self._coerce(cf, values, lead_id)) for lead_id, values in batch
            ]
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
        lead_id = checked_lead_id(lead_id)
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
        lead_id = checked_lead_id(lead_id)
        event = checked_name(event, "an event name")
        channel = checked_name(channel, "an event's channel") if channel is not None else None
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
        lead_id = checked_lead_id(lead_id)
        to = checked_name(to, "a stage name") if to is not None else None
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
        lead_id = checked_lead_id(lead_id)
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
            definition = cf.flow.field(checked_name(name, "a field name"))
            if definition is None:
                hint = did_you_mean(name, [f.name for f in cf.flow.fields])
                raise NotFound(
                    f'flow "{cf.name}" has no field "{name}" (lead "{lead_id}")'
                    + (f"; {hint}" if hint else "")
                )
            typed[name] = coerce(definition, value)
        return typed

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
