"""`audit verify`: recompute every hash chain and replay every journal.

Layer 4.  The journal is append-only; this module is how anyone proves it
was left alone, and that each lead's stored row is what its journal folds to.

Per lead, streamed in (lead, lead_seq) order with flat memory:

- the chain: `lead_seq` runs 1, 2, 3… without gaps, each entry's hash is
  what its content, its global `seq` and its predecessor's hash give (under
  the store's key when there is one), each entry links to the one before;
- the history: the first entry is the creation and only the first; each
  move starts where the lead was and is one its flow version defines (asked
  of the compiled state machine); a migration keeps the stage unless its
  data records a stage mapping (`migrate --map-stage`); cycles grow exactly at recycles; every
  other entry is recorded in the stage and version the lead was in;
- the projection: folding the entries (fields from `created` and `set`,
  events, stage, cycle, version, SLA breaches) gives the stored lead, its
  `events` rows and its `sla_breaches` rows, and its stored score is the
  score of those facts.

Any edited, deleted, inserted or reordered entry breaks at least one of
these, and so does a lead row, event or breach edited behind the engine's
back.  What no chain can show (a lead deleted whole, a chain re-sealed by
someone who may write hashes) is what `audit anchor` is for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from ..compile import CompiledFlow
from ..errors import SaleflowError
from ..journal import ENTRY_KINDS, GENESIS_HASH, JournalEntry
from ..language.cache import parse_cached
from ..model.identity import content_hash, identity, is_identity
from ..records import EventRecord, FieldValue, Lead, Store
from .moves import Step


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a lead (`lead_id`), or with the journal as a
    whole (`lead_id` None: it no longer matches an anchor)."""

    lead_id: str | None
    message: str

    def __str__(self) -> str:
        if self.lead_id is None:
            return self.message
        return f'lead "{self.lead_id}": {self.message}'


FlowLookup = Callable[[str, int], CompiledFlow]


def _by_lead(store: Store) -> Iterator[tuple[str, list[JournalEntry]]]:
    """Journal entries grouped per lead, streamed in (lead_id, lead_seq) order."""
    current: str | None = None
    group: list[JournalEntry] = []
    for chunk in store.iter_journal():
        for entry in chunk:
            if entry.lead_id != current:
                if current is not None:
                    yield current, group
                current, group = entry.lead_id, []
            group.append(entry)
    if current is not None:
        yield current, group


@dataclass(slots=True)
class Fold:
    """What a lead's journal says the lead is."""

    flow: str = ""
    version: int = 0
    stage: str | None = None
    cycle: int = 1
    fields: dict[str, FieldValue] = field(default_factory=dict)
    # (name, cycle, channel, count, time, content) of every event
    events: Counter[tuple[str, int, str, int, str, str | None]] = field(default_factory=Counter)
    breaches: set[tuple[str, int, str]] = field(default_factory=set)
    last_at: datetime | None = None
    created_at: datetime | None = None
    entered_at: datetime | None = None  # when the lead entered its stage


def check_chain(
    entries: list[JournalEntry], flows: FlowLookup, key: bytes | None = None
) -> tuple[list[str], Fold]:
    """Every way one lead's entries fail to form a valid history, and what
    they fold to."""
    problems: list[str] = []
    fold = Fold()
    prev_hash = GENESIS_HASH
    for expected, entry in enumerate(entries, start=1):
        where = f"entry {entry.lead_seq} ({entry.entry}, position {entry.seq})"
        if entry.lead_seq != expected:
            problems.append(
                f"{where}: its number should be {expected} (an entry is missing, inserted or reordered)"
            )
            break
        if entry.prev_hash != prev_hash:
            problems.append(f"{where}: does not chain to the entry before it")
        if entry.compute_hash(key) != entry.hash:
            problems.append(
                f"{where}: its content does not match its hash (edited, or sealed with another key)"
            )
        prev_hash = entry.hash
        if expected > 1 and entries[expected - 2].seq >= entry.seq:
            problems.append(f"{where}: comes after position {entries[expected - 2].seq} (reordered)")
        problems.extend(f"{where}: {p}" for p in _apply(fold, entry, expected == 1, flows))
    return problems, fold


def _apply(fold: Fold, entry: JournalEntry, first: bool, flows: FlowLookup) -> list[str]:
    """Fold one entry into `fold`; what is wrong with it."""
    kind = entry.entry
    if kind not in ENTRY_KINDS:
        return [f'"{kind}" is not a kind of entry']
    if first != (kind == "created"):
        return ["a lead's first entry, and only it, must be its creation"]
    problems: list[str] = []
    if (kind in ("created", "moved", "migrated")) != (entry.kind is not None):
        return [f'a "{kind}" entry with kind of move {entry.kind!r}']
    data = entry.data
    if kind == "created":
        fold.flow, fold.version, fold.stage, fold.cycle = entry.flow, entry.version, entry.stage, 1
        fold.created_at = fold.entered_at = entry.at
        fields = data.get("fields")
        fold.fields = dict(fields) if isinstance(fields, dict) else {}
    else:
        if (entry.flow, entry.version) != (fold.flow, fold.version) and kind != "migrated":
            problems.append(
                f'is recorded in flow "{entry.flow}" version {entry.version}, '
                f'but the lead was in flow "{fold.flow}" version {fold.version}'
            )
        if kind in ("moved", "migrated"):
            if entry.from_stage != fold.stage:
                problems.append(f'starts in "{entry.from_stage}" but the lead was in "{fold.stage}"')
        elif entry.stage != fold.stage:
            problems.append(f'is recorded in "{entry.stage}" but the lead was in "{fold.stage}"')
    if kind == "moved":
        if entry.kind == "recycle":
            fold.cycle += 1
        fold.stage = entry.stage
        fold.entered_at = entry.at
        if entry.cycle != fold.cycle:
            problems.append(f"cycle {entry.cycle} should be {fold.cycle}")
            fold.cycle = entry.cycle
    elif kind == "migrated":
        # A migration keeps the lead's stage, unless a stage mapping
        # (`migrate --map-stage`) put it elsewhere: its data says so.
        mapped = data.get("from_stage")
        if entry.stage != entry.from_stage and mapped != entry.from_stage:
            problems.append(
                f'changes the stage from "{entry.from_stage}" to "{entry.stage}" without a stage mapping'
            )
        elif mapped is not None and entry.stage == entry.from_stage:
            problems.append(f'records a stage mapping from "{mapped}" but keeps the stage "{entry.stage}"')
        if entry.stage != fold.stage:
            fold.entered_at = entry.at  # a mapped stage is entered anew
        fold.version, fold.stage = entry.version, entry.stage
    elif kind == "set":
        changes = data.get("fields")
        for name, change in changes.items() if isinstance(changes, dict) else ():
            if not (isinstance(change, list) and len(change) == 2):
                problems.append(f'field "{name}" has no old and new value')
                continue
            old, new = change
            if fold.fields.get(name) != old:
                problems.append(f'field "{name}" changes from {old!r} but it was {fold.fields.get(name)!r}')
            if new is None:
                fold.fields.pop(name, None)
            else:
                fold.fields[name] = new
    elif kind == "event":
        count = data.get("count")
        content = data.get("content")
        fold.events[
            (
                str(data.get("event")),
                entry.cycle,
                str(data.get("channel")),
                count if isinstance(count, int) else 0,
                entry.at.isoformat(),
                content if isinstance(content, str) else None,
            )
        ] += 1
    elif kind == "sla_breach":
        fold.breaches.add((entry.stage, entry.cycle, str(data.get("entered_at"))))
    if entry.kind is not None and kind != "created":
        try:
            cf = flows(entry.flow, entry.version)
        except SaleflowError:
            problems.append(f'flow "{entry.flow}" version {entry.version} is not deployed')
        else:
            if kind == "moved" and not cf.is_defined(entry.kind, entry.from_stage or "", entry.stage):
                problems.append(
                    f'flow "{entry.flow}" version {entry.version} has no {entry.kind} '
                    f'move from "{entry.from_stage}" to "{entry.stage}"'
                )
    fold.last_at = entry.at if fold.last_at is None else max(fold.last_at, entry.at)
    return problems


def _projection_matches(store: Store, lead: Lead | None, fold: Fold, flows: FlowLookup) -> list[str]:
    """How the stored lead, its events and its SLA breaches differ from its journal."""
    if lead is None:
        return ["has journal entries but the lead does not exist"]
    problems = []
    if (fold.flow, fold.version) != (lead.flow, lead.version):
        problems.append(
            f'journal ends in flow "{fold.flow}" version {fold.version} but the lead is stored '
            f'in flow "{lead.flow}" version {lead.version}'
        )
    if fold.stage != lead.stage:
        problems.append(f'journal ends in "{fold.stage}" but the lead is stored in "{lead.stage}"')
    if fold.cycle != lead.cycle:
        problems.append(f"journal gives cycle {fold.cycle} but the lead is stored in cycle {lead.cycle}")
    if fold.fields != lead.fields or any(
        type(v) is not type(lead.fields.get(k)) for k, v in fold.fields.items()
    ):
        names = sorted(
            k
            for k in set(fold.fields) | set(lead.fields)
            if fold.fields.get(k) != lead.fields.get(k)
            or type(fold.fields.get(k)) is not type(lead.fields.get(k))
        )
        problems.append("stored fields differ from the journal: " + ", ".join(names))
    if fold.created_at is not None and fold.created_at != lead.created_at:
        problems.append(
            f"journal says it was created at {fold.created_at.isoformat()} but it is stored as created at "
            f"{lead.created_at.isoformat()}"
        )
    if fold.entered_at is not None and fold.entered_at != lead.entered_at:
        problems.append(
            f'journal says it entered "{fold.stage}" at {fold.entered_at.isoformat()} but it is stored as '
            f"entering at {lead.entered_at.isoformat()}"
        )
    stored_events = store.events_of(lead.id)
    counted: Counter[tuple[str, int, str, int, str, str | None]] = Counter(
        (e.name, e.cycle, str(e.channel), e.count, e.at.isoformat(), e.content) for e in stored_events
    )
    if counted != fold.events:
        problems.append("stored events differ from the journal (names, counts, times, channels or contents)")
    breaches = {(b.stage, b.cycle, b.entered_at.isoformat()) for b in store.breaches_of(lead.id)}
    if breaches != fold.breaches:
        problems.append("stored SLA breaches differ from the journal")
    if not problems:
        problems.extend(_score_matches(lead, stored_events, flows))
    return problems


def _score_matches(lead: Lead, events: list[EventRecord], flows: FlowLookup) -> list[str]:
    """The stored score is the score of the lead's facts when it was last
    written (at its last update or, for a move then, its entry)."""
    try:
        cf = flows(lead.flow, lead.version)
    except SaleflowError:
        return []  # named by the chain check
    if not cf.has_stage(lead.stage):
        return []
    current = [e for e in events if e.cycle == lead.cycle]
    for at in (lead.updated_at, max(lead.updated_at, lead.entered_at)):
        if Step(cf, lead, current, at).score() == lead.score:
            return []
    return [f"stored score {lead.score:g} is not the score of its fields and events"]


def verify(store: Store, flows: FlowLookup) -> list[Problem]:
    problems: list[Problem] = []
    # A journal sealed with another key would fail every entry: say it once.
    store.check_key()
    key = store.key
    leads = _leads_by_id(store)
    pending: Lead | None = next(leads, None)
    for lead_id, entries in _by_lead(store):
        # Leads and journals both come in id order: a merge join.
        while pending is not None and pending.id < lead_id:
            problems.append(Problem(pending.id, "has no journal entries"))
            pending = next(leads, None)
        lead = pending if pending is not None and pending.id == lead_id else None
        if lead is not None:
            pending = next(leads, None)
        found, fold = check_chain(entries, flows, key)
        if not found:
            found = _projection_matches(store, lead, fold, flows)
        elif lead is None:
            found.append("has journal entries but the lead does not exist")
        problems.extend(Problem(lead_id, message) for message in found)
    while pending is not None:
        problems.append(Problem(pending.id, "has no journal entries"))
        pending = next(leads, None)
    return problems


def _leads_by_id(store: Store) -> Iterator[Lead]:
    for chunk in store.iter_leads():
        yield from chunk


def check_flows(store: Store) -> list[Problem]:
    """Every deployed flow version whose stored source no longer means what
    it was deployed as: its identity (`identity.py`), or for a flow deployed
    before identities, the hash of its text.  The `flows` table is not
    chained; this catches an edit that did not also recompute the hash."""
    problems: list[Problem] = []
    for name in store.flow_names():
        for version, deployed, source in store.deployed_versions(name):
            if is_identity(deployed):
                try:
                    found = identity(parse_cached(source, f"{name} version {version}"))
                except SaleflowError:
                    found = None
            else:
                found = content_hash(source)
            if found != deployed:
                problems.append(
                    Problem(
                        None,
                        f'flow "{name}" version {version}: its stored source is not what was deployed '
                        "(edited behind saleflow's back)",
                    )
                )
    return problems
