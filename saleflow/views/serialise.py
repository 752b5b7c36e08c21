"""The JSON of leads, histories, listings and reports: one set for the CLI
and the HTTP API.

Layer 5, beside the other views.  SPEC §4 fixes the keys of `show --json`,
`history --json`, `leads --json` and `report --format json`, and SPEC §9
says the API answers with the same JSON key for key.  Building that JSON in
one place is what keeps the two from drifting apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..journal import JournalEntry
from ..records import Lead, LeadView

if TYPE_CHECKING:
    from .report import Overdue, Report


def number(value: float) -> int | float:
    """A score as JSON shows it: 12, not 12.0."""
    return int(value) if float(value).is_integer() else value


def value_text(value: object) -> str:
    """A field's value (or a score) as text shows it, in the CLI and on the
    dashboard alike: "-" for unset, true/false, 12 not 12.0."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def show_json(view: LeadView) -> dict[str, Any]:
    """`show --json`: stage, facts, score, next moves with their verdicts."""
    return view.to_json()


def history_entry_json(entry: JournalEntry, number: int, *, all_entries: bool = False) -> dict[str, Any]:
    """One entry of `history --json` (SPEC §4): `seq` is `number`, `kind`
    the kind of move (None for an entry that is not a move), `position` the
    entry's global `seq`.  With `all_entries` (`history --all`), `entry`
    (the kind of entry) and `data` too."""
    out: dict[str, Any] = {
        "seq": number,
        "from": entry.from_stage,
        "to": entry.stage,
        "kind": entry.kind,
        "actor": entry.actor,
        "reason": entry.reason,
        "at": entry.at.isoformat(),
        "cycle": entry.cycle,
        "flow": entry.flow,
        "version": entry.version,
        "values": dict(entry.values),
        "position": entry.seq,
        "recorded_at": entry.recorded_at.isoformat(),
    }
    if all_entries:
        out["entry"] = entry.entry
        out["data"] = dict(entry.data)
    return out


def history_json(entries: Iterable[JournalEntry], *, all_entries: bool = False) -> list[dict[str, Any]]:
    """`history --json`: the lead's moves, numbered 1, 2, 3… as SPEC §4's
    audit entries always were, or, with `all_entries`, every journal entry,
    numbered as in the lead's journal; oldest first."""
    if all_entries:
        return [history_entry_json(e, e.lead_seq, all_entries=True) for e in entries]
    return [history_entry_json(e, number) for number, e in enumerate(entries, start=1)]


def change_json(entry: JournalEntry) -> dict[str, Any]:
    """One line of the change feed (`saleflow changes`, SPEC §6): `kind` is
    the kind of entry (created, set, event, …); an entry with a kind of
    move (SPEC §3) also has `from`, `to` and `move`, that kind."""
    out: dict[str, Any] = {
        "seq": entry.seq,
        "lead": entry.lead_id,
        "kind": entry.entry,
        "at": entry.at.isoformat(),
        "recorded_at": entry.recorded_at.isoformat(),
        "actor": entry.actor,
        "reason": entry.reason,
        "flow": entry.flow,
        "version": entry.version,
        "lead_seq": entry.lead_seq,
        "cycle": entry.cycle,
        "stage": entry.stage,
        "data": dict(entry.data),
    }
    if entry.kind is not None:
        out["from"] = entry.from_stage
        out["to"] = entry.stage
        out["move"] = entry.kind
    return out


def entry_text(entry: JournalEntry) -> str:
    """What an entry that is not a move says, readably: fields as
    ``budget: 5000 → 20000``, an event with its count and channel."""
    data = entry.data
    if entry.entry == "set":
        changes = data.get("fields")
        parts = [
            f"{name}: {value_text(change[0])} \u2192 {value_text(change[1])}"
            for name, change in (changes.items() if isinstance(changes, dict) else ())
            if isinstance(change, list) and len(change) == 2
        ]
        return "set " + ", ".join(parts)
    if entry.entry == "event":
        count = data.get("count")
        text = f"event {data.get('event')}" + (f" \u00d7{count}" if count != 1 else "")
        if data.get("channel"):
            text += f" via {data.get('channel')}"
        return text
    if entry.entry == "sla_breach":
        return f"SLA breached in {entry.stage} (due {data.get('due_at')})"
    return entry.entry


def lead_json(lead: Lead) -> dict[str, Any]:
    """One row of `leads --json`."""
    return {"id": lead.id, "flow": lead.flow, "stage": lead.stage, "score": number(lead.score)}


def overdue_json(overdue: Overdue) -> dict[str, Any]:
    """One row of `leads --overdue --json`: the row plus the SLA's figures."""
    return {**overdue.to_json(), "score": number(overdue.lead.score)}


def report_json(report: Report) -> dict[str, Any]:
    """`report --format json`."""
    return report.to_json()
