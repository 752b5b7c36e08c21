"""Moving a flow's leads to another version: `migrate` and the dry runs.

Layer 4.  `migrate_flow` moves every lead of a flow's older versions to one
version, a chunk of leads per transaction (as `Engine.advance_all`), each
lead through `Work.migrate`: a `migrated` journal entry, then progress under
the new gates.  `--map-stage OLD=NEW` puts the leads of stage OLD into NEW as
part of their migration (the entry's data records `from_stage`).  A lead
that would be left in a stage the new version lacks, or whose fields the new
version cannot hold, is *stranded*: then nothing is written at all (a first,
read-only pass finds them) and `Stranded` lists them.

`dry_run` says what the same migration would do now without writing: it runs
the very same `Work.migrate` over an `Overlay`, a `Transaction` that reads
the store (leads, events, stage counts, the waiting line) and keeps every
change in memory instead of writing it, so the engine's own rules decide
(furthest gate first, capacity, waiting lines that fill as room frees).  It
never opens a write transaction, so it cannot write by construction.

Memory stays flat: leads are read a chunk at a time, and the overlay keeps a
changed lead only until its outcome is final, which is at the end of its
chunk unless it is in a waiting line (room freed later may still let it in)
or was moved before its turn (admitted from a waiting line).  What is kept
across chunks is therefore bounded by the waiting lines, the per-stage count
deltas and the leads admitted ahead of their turn.  Outcomes go to callbacks
as they become final; the caller decides whether to keep them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..compile import CompiledFlow, compile_flow
from ..errors import BadInput, Rejected, did_you_mean
from ..journal import JournalEntry
from ..limits import check_id
from ..model.diff import Change, diff
from ..model.flow import Flow
from ..model.identity import identity
from ..records import EventRecord, Lead, SlaBreach, Store
from ..wording import plural
from .moves import Work

if TYPE_CHECKING:
    from .engine import Engine

Outcome = dict[str, Any]
Report = Callable[[Outcome], None]


def _ignore(_: Outcome) -> None:
    return None


@dataclass(slots=True)
class Counts:
    """How many leads of the flow there are, stay as they are, move (or
    moved), and would be stranded; `migrated`: how many change version."""

    total: int = 0
    unchanged: int = 0
    moved: int = 0
    stranded: int = 0
    migrated: int = 0

    def to_json(self, *, dry: bool = True) -> dict[str, int]:
        return {
            "total": self.total,
            "unchanged": self.unchanged,
            "would_move" if dry else "moved": self.moved,
            "stranded": self.stranded,
            "migrated": self.migrated,
        }


class Stranded(Rejected):
    """A migration would leave leads in stages the new version lacks (or
    with values it cannot hold): nothing was written."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------


def parse_stage_map(pairs: Iterable[str]) -> dict[str, str]:
    """`--map-stage OLD=NEW` options as a mapping; one sentence when malformed."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        old, new = old.strip(), new.strip()
        if not sep or not old or not new:
            raise BadInput(
                f'--map-stage "{pair}" is not OLD=NEW (a stage of the old version = one of the new)'
            )
        old = check_id(old, "a stage name in --map-stage")
        new = check_id(new, "a stage name in --map-stage")
        if mapping.get(old, new) != new:
            raise BadInput(f'--map-stage maps stage "{old}" twice ("{mapping[old]}" and "{new}")')
        mapping[old] = new
    return mapping


def target_flow(engine: Engine, flow: str, version: int | None) -> CompiledFlow:
    """The version leads move to (the latest when None); `NotFound` for an
    unknown flow or version."""
    name = check_id(flow, "a flow name")
    if version is not None and (isinstance(version, bool) or not 1 <= version <= 2**31 - 1):
        raise BadInput(f"a flow version is a whole number from 1 to {2**31 - 1}, not {version!r}")
    if version is None:
        engine.compiled(name)  # NotFound when the flow is not deployed
        version = engine.store.latest_version(name)
    return engine.compiled(name, version)


def check_stage_map(engine: Engine, target: CompiledFlow, mapping: dict[str, str]) -> None:
    """Every NEW is a stage of the target version; every OLD a stage of
    some deployed version below it."""
    older = [v for v, _, _ in engine.store.deployed_versions(target.name) if v < target.version]
    for old, new in mapping.items():
        if not target.has_stage(new):
            hint = did_you_mean(new, target.flow.stage_names)
            raise BadInput(
                f'--map-stage {old}={new}: flow "{target.name}" version {target.version} has no stage "{new}"'
                + (f"; {hint}" if hint else "")
            )
        if not any(engine.compiled(target.name, v).has_stage(old) for v in older):
            below = f"below version {target.version}" if older else f"older than version {target.version}"
            raise BadInput(
                f'--map-stage {old}={new}: no version of flow "{target.name}" {below} has a stage "{old}"'
            )


def _unfit(lead: Lead, target: CompiledFlow, mapping: dict[str, str]) -> str | None:
    """Why `lead` cannot move to `target` (None: it can)."""
    stage = mapping.get(lead.stage, lead.stage)
    if not target.has_stage(stage):
        return f'version {target.version} has no stage "{stage}"'
    from ..coerce import coerce

    for name, value in lead.fields.items():
        definition = target.flow.field(name)
        if definition is not None:
            try:
                coerce(definition, value)
            except BadInput as err:
                return err.message
    return None


# --------------------------------------------------------------------------
# The dry run's transaction: reads from the store, changes in memory
# --------------------------------------------------------------------------


class Overlay:
    """A `Transaction` that never writes: reads go to the store, changes
    stay here (see the module's docstring for what is kept how long)."""

    def __init__(self, store: Store, flow: str) -> None:
        self.store = store
        self.flow = flow
        self.leads: dict[str, Lead] = {}  # changed or read, not yet final
        self.origin: dict[str, str] = {}  # each one's stage before the dry run
        self.kinds: dict[str, list[str]] = defaultdict(list)  # the moves each one made
        self.events_cache: dict[str, list[EventRecord]] = {}
        self._base: dict[tuple[str, str], int] = {}
        self._delta: dict[tuple[str, str], int] = defaultdict(int)
        self.queue: dict[str, tuple[str, str, float, datetime]] = {
            lead_id: (flow, stage, score, since) for lead_id, stage, score, since in store.waiting_of(flow)
        }
        self._breaches: dict[str, set[tuple[str, int, datetime]]] = defaultdict(set)

    # -- what the dry run primes and drops ---------------------------------
    def know(self, lead: Lead) -> None:
        """A lead as read by the chunk's query (if not changed already)."""
        if lead.id not in self.leads:
            self.leads[lead.id] = lead.copy()
            self.origin[lead.id] = lead.stage

    def forget(self, lead_id: str) -> None:
        self.leads.pop(lead_id, None)
        self.origin.pop(lead_id, None)
        self.kinds.pop(lead_id, None)
        self._breaches.pop(lead_id, None)

    # -- the Transaction protocol -------------------------------------------
    def lock_lead(self, lead_id: str) -> Lead | None:
        lead = self.leads.get(lead_id)
        if lead is None:
            lead = self.store.get_lead(lead_id)
            if lead is None:
                return None
            self.know(lead)
        return self.leads[lead_id].copy()

    def latest_version(self, flow: str) -> int | None:
        return self.store.latest_version(flow)

    def insert_lead(self, lead: Lead) -> None:  # pragma: no cover - a migration creates no lead
        raise AssertionError("a dry run creates no lead")

    def update_lead(self, lead: Lead) -> Lead:
        before = self.leads.get(lead.id)
        if before is not None and before.stage != lead.stage:
            self._delta[(lead.flow, before.stage)] -= 1
            self._delta[(lead.flow, lead.stage)] += 1
        saved = lead.copy(revision=lead.revision + 1)
        self.leads[lead.id] = saved
        self.origin.setdefault(lead.id, before.stage if before is not None else lead.stage)
        return saved.copy()

    def events(self, lead_id: str, cycle: int) -> list[EventRecord]:
        known = self.events_cache.get(lead_id)
        if known is None:
            known = self.store.events_of(lead_id)
        return [event for event in known if event.cycle == cycle]

    def journal(self, lead_id: str) -> list[JournalEntry]:
        return self.store.journal(lead_id)  # entries of the dry run are never kept

    def insert_event(self, lead_id: str, event: EventRecord) -> None:  # pragma: no cover
        raise AssertionError("a dry run records no event")

    def append(self, entry: JournalEntry) -> None:
        return None  # the Work keeps its entries; nothing is sealed

    def lock_stage(self, flow: str, stage: str) -> None:
        return None

    def count_in_stage(self, flow: str, stage: str) -> int:
        key = (flow, stage)
        if key not in self._base:
            self._base[key] = self.store.count_leads(flow, stage)
        return self._base[key] + self._delta[key]

    def add_waiting(self, lead_id: str, flow: str, stage: str, score: float, at: datetime) -> None:
        known = self.queue.get(lead_id)
        since = known[3] if known is not None and known[:2] == (flow, stage) else at
        self.queue[lead_id] = (flow, stage, score, since)

    def remove_waiting(self, lead_id: str) -> None:
        self.queue.pop(lead_id, None)

    def waiting(self, flow: str, stage: str, limit: int) -> list[str]:
        line = [
            (-score, since, lead_id)
            for lead_id, (f, s, score, since) in self.queue.items()
            if (f, s) == (flow, stage)
        ]
        line.sort()
        return [lead_id for _, _, lead_id in line[:limit]]

    def waiting_line(self, flow: str, stage: str, limit: int) -> list[tuple[Lead, datetime]]:
        line: list[tuple[Lead, datetime]] = []
        for lead_id in self.waiting(flow, stage, limit):
            lead = self.lock_lead(lead_id)
            if lead is not None:
                line.append((lead, self.queue[lead_id][3]))
        return line

    def claim_due(self, now: datetime, flow: str | None = None, limit: int = 500) -> list[Lead]:
        # pragma: no cover - a dry run of a migration ticks no lead
        raise AssertionError("a dry run claims no due lead")

    def record_breach(self, breach: SlaBreach) -> bool:
        key = (breach.stage, breach.cycle, breach.entered_at)
        seen = self._breaches[breach.lead_id]
        if key in seen:
            return False
        if any((b.stage, b.cycle, b.entered_at) == key for b in self.store.breaches_of(breach.lead_id)):
            return False
        seen.add(key)
        return True


def _note_moves(overlay: Overlay, entries: list[JournalEntry]) -> None:
    """The kinds of the moves the entries record (a mapped migration is one)."""
    for entry in entries:
        if entry.entry == "moved" or (entry.entry == "migrated" and entry.from_stage != entry.stage):
            overlay.kinds[entry.lead_id].append(entry.kind or "")
    entries.clear()


def _outcome(lead_id: str, before: str, after: str, kinds: Sequence[str]) -> Outcome:
    return {"id": lead_id, "from": before, "to": after, "kind": ",".join(kinds)}


def dry_run(
    engine: Engine,
    target: CompiledFlow,
    *,
    mapping: dict[str, str] | None = None,
    on_move: Report = _ignore,
    on_stranded: Report = _ignore,
    chunk: int = 500,
    progress: Callable[[int], None] | None = None,
) -> Counts:
    """What migrating every lead of `target`'s flow to it would do now:
    nothing is written.  Each lead that would move is reported to `on_move`
    ({"id", "from", "to", "kind"}: kinds of several moves are joined by
    commas), each stranded one to `on_stranded` ({"id", "stage", "reason"})."""
    mapping = mapping or {}
    store = engine.store
    name = target.name
    overlay = Overlay(store, name)

    def flows(flow: str, version: int) -> CompiledFlow:
        if (flow, version) == (name, target.version):
            return target
        return engine.compiled(flow, version)

    entries: list[JournalEntry] = []
    work = Work(overlay, flows, engine.now(), engine.actor, entries)
    counts = Counts()

    def settle(lead_id: str) -> None:
        lead = overlay.leads[lead_id]
        before = overlay.origin.get(lead_id, lead.stage)
        kinds = overlay.kinds.get(lead_id, [])
        if kinds or before != lead.stage:
            counts.moved += 1
            on_move(_outcome(lead_id, before, lead.stage, kinds))
        else:
            counts.unchanged += 1
        overlay.forget(lead_id)

    for leads in store.iter_leads(flow=name, chunk=chunk):
        wanted = [lead.id for lead in leads if lead.version < target.version and lead.id not in overlay.leads]
        overlay.events_cache = store.events_of_leads(wanted) if wanted else {}
        for stored in leads:
            counts.total += 1
            overlay.know(stored)
            lead = overlay.leads[stored.id]
            if lead.version >= target.version:
                continue
            why = _unfit(lead, target, mapping)
            if why is not None:
                counts.stranded += 1
                on_stranded({"id": lead.id, "stage": lead.stage, "reason": why})
                overlay.forget(lead.id)
                continue
            work.migrate(lead.copy(), target, stage=mapping.get(lead.stage))
            counts.migrated += 1
            _note_moves(overlay, entries)
        _note_moves(overlay, entries)
        last = leads[-1].id
        for lead_id in sorted(overlay.leads):
            if lead_id > last:
                break
            if lead_id not in overlay.queue:
                settle(lead_id)
        if progress is not None:
            progress(len(leads))
    for lead_id in sorted(overlay.leads):
        settle(lead_id)
    return counts


# --------------------------------------------------------------------------
# deploy --dry-run
# --------------------------------------------------------------------------


@dataclass(slots=True)
class DeployPlan:
    """`deploy --dry-run`: the file's flow against the latest deployed
    version; `deployed` when the file is a deployed version already."""

    flow: str
    from_version: int | None
    to_version: int
    deployed: bool
    target: CompiledFlow
    changes: list[Change] = field(default_factory=list)


def plan_deploy(engine: Engine, flow: Flow) -> DeployPlan:
    """What deploying `flow` (checked) would change; `BadInput`, as
    `deploy` gives it, for a changed flow whose version is not higher."""
    from ..store.sql import deployed_as
    from .engine import _stored_identity

    existing = engine.store.deployed_versions(flow.name)
    known = deployed_as(flow.name, flow.version, identity(flow), existing, _stored_identity)
    latest = max((version for version, _, _ in existing), default=None)
    before = engine.compiled(flow.name, latest).flow if latest is not None else None
    target = engine.compiled(flow.name, known) if known is not None else compile_flow(flow, flow.version)
    return DeployPlan(flow.name, latest, target.version, known is not None, target, diff(before, target.flow))


# --------------------------------------------------------------------------
# migrate
# --------------------------------------------------------------------------


def find_stranded(
    engine: Engine, target: CompiledFlow, mapping: dict[str, str], on_stranded: Report, chunk: int = 1000
) -> int:
    """Report every lead the migration would strand; how many (read only)."""
    count = 0
    for leads in engine.store.iter_leads(flow=target.name, chunk=chunk):
        for lead in leads:
            if lead.version < target.version:
                why = _unfit(lead, target, mapping)
                if why is not None:
                    count += 1
                    on_stranded({"id": lead.id, "stage": lead.stage, "reason": why})
    return count


def migrate_flow(
    engine: Engine,
    target: CompiledFlow,
    *,
    mapping: dict[str, str] | None = None,
    on_move: Report = _ignore,
    on_stranded: Report = _ignore,
    chunk: int = 500,
    progress: Callable[[int], None] | None = None,
    actor: str | None = None,
) -> Counts:
    """Move every lead of `target`'s flow on an older version to it, `chunk`
    leads per transaction; `Stranded` (nothing written) when any lead would
    be stranded.  `on_move` hears of each lead a chunk moved ({"id", "from",
    "to", "kind"}); a lead let in from a waiting line by a later chunk is
    reported again then."""
    from .batch import write_behind

    mapping = mapping or {}
    stranded = find_stranded(engine, target, mapping, on_stranded)
    if stranded:
        raise Stranded(
            f'{plural(stranded, "lead")} of flow "{target.name}" would be stranded by '
            f"migrating to version {target.version}; nothing was migrated (map their stages with "
            "--map-stage OLD=NEW, or move them first)",
            stranded,
        )
    counts = Counts()
    for leads in engine.store.iter_leads(flow=target.name, chunk=chunk):
        counts.total += len(leads)
        ids = [lead.id for lead in leads if lead.version < target.version]
        if ids:
            entries: list[JournalEntry] = []

            def body(tx: Any, ids: list[str] = ids, entries: list[JournalEntry] = entries) -> int:
                done = 0
                with write_behind(tx, ids) as work_tx:
                    work = engine._work(work_tx, engine._when(None), actor, entries)
                    for lead_id in ids:
                        lead = work_tx.lock_lead(lead_id)
                        if lead is None or lead.version >= target.version:
                            continue
                        work.migrate(lead, target, stage=mapping.get(lead.stage))
                        done += 1
                return done

            counts.migrated += engine._run(body, entries)
            counts.moved += _report_moves(entries, on_move)
        if progress is not None:
            progress(len(leads))
    counts.unchanged = counts.total - counts.moved
    return counts


def _report_moves(entries: list[JournalEntry], on_move: Report) -> int:
    """Each lead the entries move: where it was first, where it ends."""
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    kinds: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        if entry.entry == "moved" or (entry.entry == "migrated" and entry.from_stage != entry.stage):
            first.setdefault(entry.lead_id, entry.from_stage or "")
            last[entry.lead_id] = entry.stage
            kinds[entry.lead_id].append(entry.kind or "")
    for lead_id in sorted(first):
        on_move(_outcome(lead_id, first[lead_id], last[lead_id], kinds[lead_id]))
    return len(first)
