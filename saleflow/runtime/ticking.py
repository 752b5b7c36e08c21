"""Batch work over many leads, a chunk per transaction: `advance_all`,
`tick` (SPEC §8) and a worker's `work_due`, mixed into `Engine`.

Layer 4, part of the runtime.  A chunk of leads is read at once, each lead
re-evaluated by `Work` (runtime/moves.py) and written behind at the end of
the chunk (`batch.write_behind`); a tick walks only the leads whose due
time has come, through the due index.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from ..errors import BadInput
from ..journal import JournalEntry
from ..records import Store, Transaction
from ..store import Corrupt
from .arguments import checked_name, shown
from .batch import write_behind

if TYPE_CHECKING:
    from ..compile import CompiledFlow
    from .moves import Work

T = TypeVar("T")

# The most leads one chunk of `work_due` claims: one transaction holds them
# all locked, and their journal entries wait in memory until its commit.
MAX_CHUNK = 10_000


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


class BatchWork:
    """`advance_all`, `tick` and `work_due`, mixed into `Engine` (which
    provides the store, the clock, transactions and `Work`)."""

    if TYPE_CHECKING:  # Engine's
        store: Store

        def now(self) -> datetime: ...
        def _at(self, at: datetime | str | None) -> datetime | None: ...
        def _when(self, at: datetime | None) -> datetime: ...
        def compiled(self, name: str, version: int | None = None) -> CompiledFlow: ...
        def _run(self, body: Callable[[Transaction], T], entries: list[JournalEntry]) -> T: ...
        def _work(
            self, tx: Transaction, at: datetime, actor: str | None, entries: list[JournalEntry]
        ) -> Work: ...

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
            self.compiled(checked_name(flow, "a flow name"))  # NotFound for an unknown flow
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CHUNK:
            raise BadInput(f"a chunk holds from 1 to {MAX_CHUNK:,} leads, not {shown(limit)}")
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
            self.compiled(checked_name(flow, "a flow name"))  # NotFound for an unknown flow
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
