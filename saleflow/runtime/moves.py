"""What happens to one lead inside one transaction: SPEC §3 in code.

Layer 4, below `engine.py`.  `Step` is a read-only look at a lead at one
moment (its facts, score, and the verdict on each move); `Work` changes leads
inside an open `Transaction`: every change it makes is a journal entry
(created, set, event, moved, migrated, sla_breach) appended in the same
transaction; it applies moves, runs automatic progress (furthest enabled move first, manual
stages never entered automatically, auto recycles), keeps the capacity
waiting line, and lets waiting leads in, best score first, when room frees.

Over 500 lines on purpose: `Work` is one state machine's worth of rules
(apply a move, progress, recycle, capacity and its waiting line, SLAs, the
due time), and each rule reads the others' results inside the same
transaction; split across modules they would share `Work`'s private state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..coerce import coerce
from ..compile import CompiledFlow, Move
from ..due import due_time, score_until, sla_due
from ..errors import BadInput, Rejected, did_you_mean
from ..guards.facts import Facts
from ..journal import JournalEntry
from ..records import (
    Blocker,
    EventRecord,
    FieldValue,
    Lead,
    MoveVerdict,
    SlaBreach,
    Transaction,
)

CountInStage = Callable[[str, str], int]

# How many waiting leads are ranked by their score now when room frees in a
# stage (at least; more when more room freed).  A stage's line is usually
# far shorter; a longer one is ranked among its best stored scores.
RANKED_WAITING = 1000
FlowLookup = Callable[[str, int], CompiledFlow]
# A waiting lead's score: lead id -> (revision, computed at, holds until
# (None: until the lead changes), score).
ScoreCache = dict[str, tuple[int, datetime, datetime | None, float]]


class Step:
    """A lead at one moment: facts for the gates, and verdicts on moves."""

    def __init__(
        self,
        cf: CompiledFlow,
        lead: Lead,
        events: list[EventRecord],
        now: datetime,
        facts: Facts | None = None,
    ) -> None:
        self.cf = cf
        self.lead = lead
        self.facts = facts or Facts(lead.fields, events, now, lead.entered_at, lead.created_at)

    def score(self) -> float:
        return self.cf.evaluator.score(self.facts)

    def fields(self) -> dict[str, FieldValue]:
        """Every declared field, defaults filled in."""
        return {f.name: self.lead.fields.get(f.name, f.default) for f in self.cf.flow.fields}

    def reads(self, move: Move) -> dict[str, Any]:
        """The values the move's gates read, for its audit entry."""
        values: dict[str, Any] = {}
        for gate in move.gates:
            values.update(self.cf.evaluator.reads(gate.expr, self.facts))
        return values

    def blockers(self, move: Move, count: CountInStage | None) -> list[Blocker]:
        """Why `move` cannot be made now; [] when it can."""
        evaluator = self.cf.evaluator
        found: list[Blocker] = []
        for gate in move.gates:
            if evaluator.test(gate.expr, self.facts):
                continue
            prefix = "" if gate.label.startswith("gate of") else f"{gate.label}: "
            values = evaluator.reads(gate.expr, self.facts)
            for line in evaluator.explain(gate.expr, self.facts) or ["the condition is false"]:
                found.append(Blocker("gate", prefix + line, gate.span, values))
        target = self.cf.flow.stage(move.target)
        if count is not None and target is not None and target.capacity and move.kind != "recycle":
            held = count(self.cf.name, target.name)
            if held >= target.capacity:
                found.append(
                    Blocker(
                        "capacity",
                        f'stage "{target.name}" is at capacity ({held} of {target.capacity} leads)',
                        target.span,
                        {"capacity": target.capacity, "held": held},
                    )
                )
        return found

    def verdicts(self, count: CountInStage | None) -> list[MoveVerdict]:
        """A verdict on every move defined from the lead's stage; `count`
        says how many leads a stage holds (for capacity)."""
        out = []
        for move in self.cf.moves_from(self.lead.stage):
            blockers = tuple(self.blockers(move, count))
            out.append(MoveVerdict(move.kind, move.target, not blockers, blockers, move.automatic))
        return out


class Work:
    """Changes made inside one transaction; collects their journal entries.
    `at` is the time of the operation (``--at`` may back-date it),
    `recorded_at` the engine's clock when it runs."""

    def __init__(
        self,
        tx: Transaction,
        flows: FlowLookup,
        at: datetime,
        actor: str,
        entries: list[JournalEntry],
        recorded_at: datetime | None = None,
        *,
        scores: ScoreCache | None = None,
        keep_due: bool = True,
    ) -> None:
        self.tx = tx
        self.flows = flows
        self.at = at
        self.recorded_at = at if recorded_at is None else recorded_at
        self.actor = actor
        self.entries = entries
        self._freed: set[tuple[str, int, str]] = set()
        # Waiting leads' scores, with the times they hold for (`_ranked`);
        # a caller running many works on one store (a replay) may share one.
        self._scores: ScoreCache = {} if scores is None else scores
        # Whether leads are saved with their due time (`due_time`): a store
        # that is never walked for due leads (a replay's, which keeps its own
        # clock) need not pay for computing it.
        self._keep_due = keep_due
        self.breaches = 0  # SLA breaches newly recorded
        # Breaches this work recorded or found recorded: (lead, stage, cycle, entry).
        self._breached: set[tuple[str, str, int, datetime]] = set()
        # Leads this work saved as due at once (at or before `at`), in order:
        # a walk over the due leads takes those ahead of it on (`Engine.tick`).
        self.due_now: list[str] = []
        # Leads saved without automatic progress as far as the gates allow
        # (`progress=False`, or a run that stopped short of a stage it had
        # been in): due at once, for the next tick to take them on.
        self._unprogressed: set[str] = set()

    def moment(self, at: datetime, entries: list[JournalEntry]) -> Work:
        """This work, for a next operation at `at` (its own time, recorded
        as such) whose journal entries go to `entries`: a replay runs many
        operations, each at its recorded time, in one transaction."""
        self.at = self.recorded_at = at
        self.entries = entries
        return self

    # -- the operations ----------------------------------------------------
    def create(
        self,
        lead_id: str,
        cf: CompiledFlow,
        values: dict[str, FieldValue],
        *,
        progress: bool = True,
        stage: str | None = None,
        reason: str | None = None,
    ) -> Lead:
        """A new lead in the initial stage; then automatic progress unless
        `progress` is False.  An import that knows where the lead stands
        gives `stage`: the lead starts there, ungated, its first audit entry
        of kind "import" (with `reason`), as the CRM's history says."""
        initial = cf.flow.initial
        assert initial is not None, "a checked flow has an initial stage"
        kind = "create" if stage is None else "import"
        fields: dict[str, FieldValue] = {k: v for k, v in values.items() if v is not None}
        lead = Lead(lead_id, cf.name, cf.version, stage or initial.name, fields, 1, self.at, self.at, self.at)
        step = Step(cf, lead, [], self.at)
        lead.score = step.score()  # inserted with its score: no update needed
        if not progress:
            self._unprogressed.add(lead_id)
        lead.due_at = self._due(lead, cf, [])  # and its due time (progress may change both)
        self.tx.insert_lead(lead)
        self._journal(
            lead, "created", kind, None, reason if kind == "import" else None, {"fields": dict(fields)}
        )
        if progress:
            lead = self._progress(lead, cf, [], facts=step.facts)
            self._fill()
        return lead

    def set_fields(self, lead: Lead, values: dict[str, FieldValue], *, progress: bool = True) -> Lead:
        """Set (None: unset) fields; `progress=False` only saves them."""
        cf = self.flows(lead.flow, lead.version)
        fields = dict(lead.fields)
        changed: dict[str, list[FieldValue]] = {}
        for name, value in values.items():
            old = fields.get(name)
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = value
            if old != value or type(old) is not type(value):
                changed[name] = [old, value]
        lead.fields = fields
        if changed:
            self._journal(lead, "set", None, None, None, {"fields": changed})
        events = self.tx.events(lead.id, lead.cycle)
        if not progress:
            # Gates not tried: due at once, unless the caller progresses it (`place`).
            self._unprogressed.add(lead.id)
            return self._save(lead, events)
        lead = self._progress(lead, cf, events, force_save=True)
        self._fill()
        return lead

    def record_event(self, lead: Lead, event: EventRecord) -> Lead:
        cf = self.flows(lead.flow, lead.version)
        self.tx.insert_event(lead.id, event)
        data = {"event": event.name, "count": event.count, "channel": event.channel, "content": event.content}
        self._journal(lead, "event", None, None, None, data, event.at, event.cycle)
        events = self.tx.events(lead.id, lead.cycle)
        lead = self._progress(lead, cf, events, force_save=True)
        self._fill()
        return lead

    def request(self, lead: Lead, to: str | None, *, force: bool, reason: str | None) -> Lead:
        """An explicit move asked for by a person or a program."""
        cf = self.flows(lead.flow, lead.version)
        flow = cf.flow
        current = flow.stage(lead.stage)
        target = to if to is not None else flow.next_on_main_line(lead.stage)
        if target is None:
            where = "a final stage" if current and current.final else "the last stage of the main line"
            raise Rejected(
                f'lead "{lead.id}" is in {where} ("{lead.stage}"); say where to (--to, or to= in Python)',
                lead_id=lead.id,
                stage=lead.stage,
            )
        if target == lead.stage and not force:
            raise Rejected(f'lead "{lead.id}" is already in "{target}"', lead_id=lead.id, stage=target)
        if self.at < lead.entered_at:
            # Automatic moves after a back-dated fact wait for the entry;
            # a move someone asks for is not silently dated otherwise.
            raise BadInput(
                f'lead "{lead.id}" entered "{lead.stage}" at {lead.entered_at.isoformat()}, after the time of '
                f"this move ({self.at.isoformat()}); a move cannot be dated before the lead's last one "
                "(give a later --now, or at= in Python)"
            )
        events = self.tx.events(lead.id, lead.cycle)
        if force:
            lead, events = self._apply(lead, "force", target, reason, {}, events, requested=True)
        else:
            move = cf.move_to(lead.stage, target)
            if move is None:
                raise Rejected(
                    f'lead "{lead.id}" cannot move from "{lead.stage}" to "{target}": flow "{cf.name}" '
                    "defines no such move (force it, with a reason, to move it anyway: --force --reason, "
                    "or force=True and reason= in Python)",
                    lead_id=lead.id,
                    stage=target,
                )
            step = Step(cf, lead, events, self.at)
            blockers = step.blockers(move, self._count)
            if blockers or not cf.fire(move, step.facts):
                raise Rejected(
                    f'lead "{lead.id}" cannot enter "{target}": ' + "; ".join(b.message for b in blockers),
                    lead_id=lead.id,
                    stage=target,
                    blockers=blockers,
                )
            lead, events = self._apply(
                lead, move.kind, target, reason, step.reads(move), events, requested=True
            )
        lead = self._progress(lead, cf, events)
        self._fill()
        return lead

    def migrate(self, lead: Lead, cf: CompiledFlow, *, stage: str | None = None) -> Lead:
        """Move a lead to another version of its flow, keeping its fields
        and cycle, and its stage unless `stage` maps it to another (`migrate
        --map-stage`: the lead enters `stage` then, and the entry's data
        says where it came from); audited as kind "migrate"; then let it
        progress under the new version's gates."""
        target = lead.stage if stage is None else stage
        if not cf.has_stage(target):
            hint = did_you_mean(target, cf.flow.stage_names)
            raise Rejected(
                f'lead "{lead.id}" cannot move to version {cf.version} of flow "{cf.name}": that version '
                f'has no stage "{target}"'
                + (f" ({hint})" if hint else "")
                + "; force the lead to a stage both versions have first",
                lead_id=lead.id,
                stage=target,
            )
        for name, value in lead.fields.items():
            definition = cf.flow.field(name)
            if definition is not None:
                try:
                    coerce(definition, value)
                except BadInput as err:
                    raise Rejected(
                        f'lead "{lead.id}" cannot move to version {cf.version} of flow "{cf.name}": {err}',
                        lead_id=lead.id,
                    ) from None
        old = lead.version
        source = lead.stage
        when = max(self.at, lead.entered_at)  # keep the history in time order
        data: dict[str, Any] = {"from_version": old, "to_version": cf.version}
        reason = f"version {old} -> {cf.version}"
        if target != source:
            # Leaving `source` as any move does: a breach of its SLA is
            # counted, its place in a waiting line and in its stage freed.
            before = self.flows(lead.flow, old)
            self._check_sla(lead, before, when)
            self.tx.remove_waiting(lead.id)
            left = before.flow.stage(source)
            if left is not None and left.capacity:
                self._freed.add((lead.flow, old, source))
            lead.stage = target
            lead.entered_at = when
            data["from_stage"] = source
            reason += f", stage {source} -> {target}"
        lead.version = cf.version
        self._journal(lead, "migrated", "migrate", source, reason, data, when)
        events = self.tx.events(lead.id, lead.cycle)
        lead = self._progress(lead, cf, events, force_save=True)
        self._fill()
        return lead

    def reevaluate(self, lead: Lead, *, sla: bool) -> None:
        """Batch work: progress as far as gates allow; with `sla`, record breaches."""
        cf = self.flows(lead.flow, lead.version)
        if not cf.has_stage(lead.stage):
            # Reported by `show` and `audit verify`; a batch must go on.  It is
            # due again only when a change (a force, a migration) gives it a
            # stage its version has: due until then, it would come back to
            # every tick and head every worker's claim.
            if sla and lead.due_at is not None:
                lead.due_at = None
                lead.updated_at = self.at
                self.tx.update_lead(lead)
            return
        events = self.tx.events(lead.id, lead.cycle)
        lead = self._progress(lead, cf, events)
        if sla:
            self._check_sla(lead, cf)
            # Its next due time, now that the breach (if any) is recorded.
            due = self._due(lead, cf, events)
            if due != lead.due_at:
                lead.due_at = due
                lead.updated_at = self.at
                lead = self.tx.update_lead(lead)
        self._fill()

    def place(self, lead: Lead, target: str, kind: str, reason: str | None) -> Lead:
        """Put a lead in `target` without gates (import); then progress."""
        cf = self.flows(lead.flow, lead.version)
        events = self.tx.events(lead.id, lead.cycle)
        unprogressed = lead.id in self._unprogressed
        if target != lead.stage:
            lead, events = self._apply(lead, kind, target, reason, {}, events)
        lead = self._progress(lead, cf, events, force_save=unprogressed)
        self._fill()
        return lead

    # -- mechanics -----------------------------------------------------------
    def _count(self, flow: str, stage: str) -> int:
        self.tx.lock_stage(flow, stage)
        return self.tx.count_in_stage(flow, stage)

    def _full(self, cf: CompiledFlow, target: str) -> bool:
        stage = cf.flow.stage(target)
        if stage is None or not stage.capacity:
            return False
        self.tx.lock_stage(cf.name, target)
        return self.tx.count_in_stage(cf.name, target) >= stage.capacity

    def _save(self, lead: Lead, events: list[EventRecord], score: float | None = None) -> Lead:
        """Write `lead` with its score and due time as of now."""
        cf = self.flows(lead.flow, lead.version)
        if score is None:
            score = Step(cf, lead, events, self.at).score()
        lead.score = score
        lead.updated_at = self.at
        lead.due_at = self._due(lead, cf, events)
        return self.tx.update_lead(lead)

    def _due(self, lead: Lead, cf: CompiledFlow, events: list[EventRecord]) -> datetime | None:
        if not self._keep_due:
            return None
        due = self._next_due(lead, cf, events)
        if due is not None and due <= self.at:
            self.due_now.append(lead.id)
        return due

    def _next_due(self, lead: Lead, cf: CompiledFlow, events: list[EventRecord]) -> datetime | None:
        """When `lead`, as it stands after this work, is next due (`due_time`).
        An operation dated after the engine's clock judged the gates at a
        time a tick has not reached yet: the lead is due at once then, so
        the next tick judges it at its own time."""
        if lead.id in self._unprogressed:
            return min(self.at, self.recorded_at)
        key = (lead.id, lead.stage, lead.cycle, lead.entered_at)
        due = due_time(cf, lead, events, self.at, sla_recorded=key in self._breached)
        if self.at > self.recorded_at:
            return self.recorded_at if due is None else min(due, self.recorded_at)
        return due

    def _journal(
        self,
        lead: Lead,
        entry_kind: str,
        move: str | None,
        source: str | None,
        reason: str | None,
        data: dict[str, Any],
        at: datetime | None = None,
        cycle: int | None = None,
    ) -> None:
        """Append one journal entry for `lead` as it stands now; the store
        gives it its place and seals it at the commit."""
        entry = JournalEntry(
            0,
            lead.id,
            0,
            entry_kind,
            move,
            source,
            lead.stage,
            lead.cycle if cycle is None else cycle,
            at or self.at,
            self.recorded_at,
            self.actor,
            reason,
            lead.flow,
            lead.version,
            data,
        )
        self.tx.append(entry)
        self.entries.append(entry)

    def _apply(
        self,
        lead: Lead,
        kind: str,
        target: str,
        reason: str | None,
        values: dict[str, Any],
        events: list[EventRecord],
        score: float | None = None,
        *,
        requested: bool = False,
    ) -> tuple[Lead, list[EventRecord]]:
        """Change the lead's stage, audit it, and write it at once (so that
        capacity counts in this transaction see it).  A move someone asked
        for (`request`) is marked ``"requested": true`` in its entry's data,
        so that a replay (`saleflow simulate`) can tell it from the automatic
        moves that the gates make on their own."""
        cf = self.flows(lead.flow, lead.version)
        source = lead.stage
        # A lead that overstayed its stage's SLA and leaves before a tick saw
        # it is a breach all the same: how often tick runs must not decide
        # what is counted.
        self._check_sla(lead, cf, max(self.at, lead.entered_at))
        if kind == "recycle":
            lead.cycle += 1
            events = []
        lead.stage = target
        # A back-dated fact (--at) cannot move a lead before it entered its
        # stage: the history stays in time order, so time in stage is never
        # negative.
        lead.entered_at = max(self.at, lead.entered_at)
        data: dict[str, Any] = {"values": values, "requested": True} if requested else {"values": values}
        self._journal(lead, "moved", kind, source, reason, data, lead.entered_at)
        self.tx.remove_waiting(lead.id)
        left = cf.flow.stage(source)
        if left is not None and left.capacity:
            self._freed.add((lead.flow, lead.version, source))
        return self._save(lead, events, None if kind == "recycle" else score), events

    def _progress(
        self,
        lead: Lead,
        cf: CompiledFlow,
        events: list[EventRecord],
        *,
        force_save: bool = False,
        facts: Facts | None = None,
    ) -> Lead:
        """Automatic progress: furthest enabled advance/skip first, then an
        enabled auto recycle; never into a manual stage, never twice into
        the same stage in one run; stops at a final stage."""
        flow = cf.flow
        visited = {lead.stage}
        moved = False
        self._unprogressed.discard(lead.id)  # progressed now
        # A move is recorded no earlier than the lead entered its stage (see
        # `_apply`); its gates are judged at that same moment, so a back-dated
        # fact cannot open a gate with windows or days that were only true
        # before the lead got there.
        at = max(self.at, lead.entered_at)
        step: Step | None = None
        # Within one run the facts stay the same but for the stage's entry
        # time: unless a rule reads days_in_stage, the counts and the score
        # computed for one step serve the next.
        carried: Facts | None = facts
        for _ in range(len(flow.stages) + 1):
            stage = flow.stage(lead.stage)
            if stage is None or stage.final:
                break
            step = Step(cf, lead, events, at, carried)
            chosen: Move | None = None
            wanted: Move | None = None
            # The gates are judged first; the machine fires only the move
            # that happens (a full stage queues the lead instead).
            for move in cf.forward_from(lead.stage):
                if move.target in visited or not cf.passes(move, step.facts):
                    continue
                if self._full(cf, move.target):
                    wanted = wanted or move
                    continue
                if cf.fire(move, step.facts, judged=True):
                    chosen = move
                    break
            if chosen is None:
                for move in cf.recycles_from(lead.stage):
                    if move.target not in visited and cf.fire(move, step.facts):
                        chosen = move
                        break
            if chosen is None:
                if wanted is not None:
                    self.tx.add_waiting(lead.id, lead.flow, wanted.target, step.score(), self.at)
                if moved and self._turned_back(cf, lead.stage, visited, step.facts):
                    # The next run (a tick) takes that move: due at once.
                    self._unprogressed.add(lead.id)
                    lead = self._save(lead, events, lead.score)
                break
            score = step.score() if cf.score_ignores_stage else None
            lead, events = self._apply(
                lead, chosen.kind, chosen.target, None, step.reads(chosen), events, score
            )
            keep = score is not None and chosen.kind != "recycle"
            carried = step.facts.entering(lead.entered_at) if keep else None
            moved = True
            visited.add(lead.stage)
        if not moved:
            score = (step or Step(cf, lead, events, at, carried)).score()
            if force_save or score != lead.score:
                lead = self._save(lead, events, score)
        return lead

    def _turned_back(self, cf: CompiledFlow, stage: str, visited: set[str], facts: Facts) -> bool:
        """Whether a run stopped in `stage` only because an enabled
        automatic move leads to a stage it has already been in."""
        moves = (*cf.forward_from(stage), *cf.recycles_from(stage))
        return any(move.target in visited and cf.passes(move, facts) for move in moves)

    def _fill(self) -> None:
        """Let waiting leads into stages where room freed, best score first."""
        while self._freed:
            flow_name, version, stage_name = self._freed.pop()
            cf = self.flows(flow_name, version)
            stage = cf.flow.stage(stage_name)
            if stage is None or not stage.capacity:
                continue
            self.tx.lock_stage(flow_name, stage_name)
            room = stage.capacity - self.tx.count_in_stage(flow_name, stage_name)
            if room <= 0:
                continue
            # a LIMIT is a 32-bit integer on PostgreSQL
            wanted = min(max(room * 4 + 8, RANKED_WAITING), 2**31 - 1)
            for lead_id in self._ranked(flow_name, stage_name, wanted):
                if room <= 0:
                    break
                if self._admit(lead_id, stage_name):
                    room -= 1

    def _ranked(self, flow_name: str, stage_name: str, limit: int) -> list[str]:
        """The leads waiting for a stage, best score *now* first (SPEC §8:
        windows may have closed since they started waiting), equal scores
        in the order they started waiting.  The line is read best stored
        score first, at most `limit` of them (`RANKED_WAITING` when little
        room freed): a longer line is ranked among those, so its cost per
        freed stage is bounded; beyond them the stored order stands.  A
        score that time cannot change (no window or days in its rules) is
        the one stored with the lead, kept current by every change."""
        ranked: list[tuple[float, datetime, str]] = []
        known, at = self._scores, self.at
        for lead, since in self.tx.waiting_line(flow_name, stage_name, limit):
            cf = self.flows(lead.flow, lead.version)
            score = lead.score
            if cf.score_reads_time:
                # A score holds, for the same revision of the lead, from when
                # it was computed until one of its windows or days could
                # change it (`score_until`): room freeing again and again
                # does not score the whole line each time.
                found = known.get(lead.id)
                if (
                    found is not None
                    and found[0] == lead.revision
                    and found[1] <= at
                    and (found[2] is None or at < found[2])
                ):
                    score = found[3]
                else:
                    events = self.tx.events(lead.id, lead.cycle)
                    score = Step(cf, lead, events, at).score()
                    if len(known) >= RANKED_WAITING * 8:
                        known.clear()
                    known[lead.id] = (lead.revision, at, score_until(cf, lead, events, at), score)
            ranked.append((-score, since, lead.id))
        ranked.sort()
        return [lead_id for _, _, lead_id in ranked]

    def _admit(self, lead_id: str, stage_name: str) -> bool:
        lead = self.tx.lock_lead(lead_id)
        if lead is None:
            self.tx.remove_waiting(lead_id)
            return False
        cf = self.flows(lead.flow, lead.version)
        move = cf.move_to(lead.stage, stage_name) if cf.has_stage(lead.stage) else None
        events = self.tx.events(lead.id, lead.cycle)
        step = Step(cf, lead, events, self.at)
        if move is None or move.kind not in ("advance", "skip") or not cf.fire(move, step.facts):
            self.tx.remove_waiting(lead_id)
            return False
        lead, events = self._apply(lead, move.kind, stage_name, "room freed", step.reads(move), events)
        self._progress(lead, cf, events)
        return True

    def _check_sla(self, lead: Lead, cf: CompiledFlow, at: datetime | None = None) -> None:
        """Record a breach when the lead is (or, leaving at `at`, was) past
        its stage's SLA; once per lead, stage, cycle and entry."""
        at = self.at if at is None else at
        due = sla_due(cf.flow.stage(lead.stage), lead.entered_at)
        if due is None or at <= due:
            return
        self._breached.add((lead.id, lead.stage, lead.cycle, lead.entered_at))
        if self.tx.record_breach(
            SlaBreach(lead.id, lead.flow, lead.stage, lead.cycle, lead.entered_at, due, at)
        ):
            self.breaches += 1
            data = {"entered_at": lead.entered_at.isoformat(), "due_at": due.isoformat()}
            self._journal(lead, "sla_breach", None, None, None, data, at)
