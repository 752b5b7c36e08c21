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

from .records import AuditEntry, Lead, LeadView

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


def history_entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "from": entry.from_stage,
        "to": entry.to_stage,
        "kind": entry.kind,
        "actor": entry.actor,
        "reason": entry.reason,
        "at": entry.at.isoformat(),
        "cycle": entry.cycle,
        "flow": entry.flow,
        "version": entry.version,
        "values": dict(entry.values),
    }


def history_json(entries: Iterable[AuditEntry]) -> list[dict[str, Any]]:
    """`history --json`: the lead's audit entries, oldest first."""
    return [history_entry_json(e) for e in entries]


def lead_json(lead: Lead) -> dict[str, Any]:
    """One row of `leads --json`."""
    return {"id": lead.id, "flow": lead.flow, "stage": lead.stage, "score": number(lead.score)}


def overdue_json(overdue: Overdue) -> dict[str, Any]:
    """One row of `leads --overdue --json`: the row plus the SLA's figures."""
    return {**overdue.to_json(), "score": number(overdue.lead.score)}


def report_json(report: Report) -> dict[str, Any]:
    """`report --format json`."""
    return report.to_json()
