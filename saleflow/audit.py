"""`audit verify`: recompute every hash chain and replay every history.

Layer 4.  The audit log is append-only by convention; this module is how
anyone proves it was left alone.  For each lead it checks that sequence
numbers run 1, 2, 3… without gaps, that each entry's hash is what its content
and its predecessor's hash give, that each entry starts where the previous
one ended, that every gated move is one the lead's flow version defines
(asked of the compiled state machine), that cycles grow exactly at recycles,
and that the replay ends in the lead's stored stage and cycle.  Any edited,
deleted or inserted entry breaks at least one of these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .compile import CompiledFlow
from .errors import SaleflowError
from .records import GENESIS_HASH, AuditEntry, Lead, Store


@dataclass(frozen=True, slots=True)
class Problem:
    lead_id: str
    message: str

    def __str__(self) -> str:
        return f'lead "{self.lead_id}": {self.message}'


FlowLookup = Callable[[str, int], CompiledFlow]


def _by_lead(store: Store) -> Iterator[tuple[str, list[AuditEntry]]]:
    """Audit entries grouped per lead, streamed in (lead_id, seq) order."""
    current: str | None = None
    group: list[AuditEntry] = []
    for chunk in store.iter_audit():
        for entry in chunk:
            if entry.lead_id != current:
                if current is not None:
                    yield current, group
                current, group = entry.lead_id, []
            group.append(entry)
    if current is not None:
        yield current, group


def check_chain(entries: list[AuditEntry], flows: FlowLookup) -> list[str]:
    """Every way one lead's entries fail to form a valid history."""
    problems: list[str] = []
    prev_hash = GENESIS_HASH
    stage: str | None = None
    cycle = 1
    for expected_seq, entry in enumerate(entries, start=1):
        where = f"entry {entry.seq}"
        if entry.seq != expected_seq:
            problems.append(
                f"{where}: sequence number should be {expected_seq} (an entry is missing or inserted)"
            )
            break
        if entry.prev_hash != prev_hash:
            problems.append(f"{where}: does not chain to the entry before it")
        if entry.compute_hash() != entry.hash:
            problems.append(f"{where}: its content does not match its hash (edited)")
        if entry.from_stage != stage:
            problems.append(f'{where}: starts in "{entry.from_stage}" but the lead was in "{stage}"')
        if entry.kind == "recycle":
            cycle += 1
        if entry.cycle != cycle:
            problems.append(f"{where}: cycle {entry.cycle} should be {cycle}")
            cycle = entry.cycle
        try:
            cf = flows(entry.flow, entry.version)
        except SaleflowError:
            problems.append(f'{where}: flow "{entry.flow}" version {entry.version} is not deployed')
        else:
            if entry.kind == "create" and entry.from_stage is not None:
                problems.append(f"{where}: a create entry must come first")
            elif not cf.is_defined(entry.kind, entry.from_stage or "", entry.to_stage):
                problems.append(
                    f'{where}: flow "{entry.flow}" version {entry.version} has no {entry.kind} '
                    f'move from "{entry.from_stage}" to "{entry.to_stage}"'
                )
        prev_hash = entry.hash
        stage = entry.to_stage
    return problems


def _replay_matches(lead: Lead | None, entries: list[AuditEntry]) -> list[str]:
    if lead is None:
        return ["has audit entries but the lead does not exist"]
    if not entries:
        return ["has no audit entries"]
    last = entries[-1]
    problems = []
    if (last.flow, last.version) != (lead.flow, lead.version):
        problems.append(
            f'history ends in flow "{last.flow}" version {last.version} but the lead is stored '
            f'in flow "{lead.flow}" version {lead.version}'
        )
    if last.to_stage != lead.stage:
        problems.append(f'history ends in "{last.to_stage}" but the lead is stored in "{lead.stage}"')
    cycles = 1 + sum(1 for e in entries if e.kind == "recycle")
    if cycles != lead.cycle:
        problems.append(f"history gives cycle {cycles} but the lead is stored in cycle {lead.cycle}")
    return problems


def verify(store: Store, flows: FlowLookup) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for lead_id, entries in _by_lead(store):
        seen.add(lead_id)
        found = check_chain(entries, flows) + _replay_matches(store.get_lead(lead_id), entries)
        problems.extend(Problem(lead_id, message) for message in found)
    for chunk in store.iter_leads():
        for lead in chunk:
            if lead.id not in seen:
                problems.append(Problem(lead.id, "has no audit entries"))
    return problems
