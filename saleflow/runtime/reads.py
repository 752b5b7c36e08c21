"""The read views of the `Engine` API: a lead with its verdicts (`lead`,
`allowed`, `enabled`, `blockers`), listings (`leads`, `lead_filter`,
`scored`), a lead's `history` and the change feed (`changes`), mixed into
`Engine`.

Layer 4, part of the runtime.  Nothing here writes: each view reads the
store outside a transaction and computes as of the engine's clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..due import sla_days, sla_due
from ..errors import BadInput, NotFound, Rejected, did_you_mean
from ..journal import JournalEntry
from ..limits import MAX_INT
from ..records import Lead, LeadView, MoveVerdict, Store
from .arguments import checked_kind, checked_lead_id, checked_name, shown
from .moves import Step

if TYPE_CHECKING:
    from ..compile import CompiledFlow
    from ..store.feed import Changes


class LeadReads:
    """The read views, mixed into `Engine` (which provides the store, the
    clock and the compiled flows)."""

    if TYPE_CHECKING:  # Engine's
        store: Store

        def now(self) -> datetime: ...
        def compiled(self, name: str, version: int | None = None) -> CompiledFlow: ...
        def _lead_flow(self, lead: Lead, *, stranded_ok: bool = False) -> CompiledFlow: ...

    def lead(self, lead_id: str) -> LeadView:
        """The lead with its team, score, event counts and next moves."""
        lead_id = checked_lead_id(lead_id)
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
        to = checked_name(to, "a stage name")
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
        flow = checked_name(flow, "a flow name") if flow is not None else None
        stage = checked_name(stage, "a stage name") if stage is not None else None
        team = checked_name(team, "a team name") if team is not None else None
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
        lead_id = checked_lead_id(lead_id)
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
                f"since (the last seq seen) must be a whole number from 0 to {MAX_INT:,}, not {shown(since)}"
            )
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_INT
        ):
            raise BadInput(f"a limit must be a whole number from 1 to {MAX_INT:,}, not {shown(limit)}")
        wanted: list[str] | None = None
        if kinds is not None:
            wanted = [checked_kind(kind) for kind in ([kinds] if isinstance(kinds, str) else kinds)]
            if not wanted:
                raise BadInput("name at least one kind of entry, or none for all of them")
        if flow is not None:
            flow = checked_name(flow, "a flow name")
            self.store.latest_version(flow)  # NotFound when it is not deployed
        from ..store.feed import read_changes

        return read_changes(self.store, since, flow=flow, kinds=wanted, limit=limit)
