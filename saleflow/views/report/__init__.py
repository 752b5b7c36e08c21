"""KPIs of a flow, from its journal: what `saleflow report` shows.

Layer 5, a read-only view.  The store counts what SQL counts cheaply and
streams each lead's history (`store/reporting.py`); this package knows what
the numbers mean: which stage is further along the main line, which team
owns which stages, what a target asks for.  The result is a `Report`, which
renders as JSON (SPEC §4), a text table or CSV here, and as HTML in
`saleflow.views.page`.  Memory does not grow with the number of leads, except by
8 bytes per stage visit for exact medians.

Definitions (also in README.md, "Reports: definitions").  The unit is a
*lead-cycle*: a lead from its creation, or from a recycle, to its next
recycle.  Every audit entry counts, whatever its kind (`import` included).

- stage `entered`: lead-cycles with an entry into the stage within the period
  (``since <= at <= until``), counted once however often they entered;
- `advanced`: of those, the ones that later in the same cycle entered a stage
  further along the main line (for a side stage: any main-line stage);
- `conversion`: advanced / entered, null when entered is 0;
- `current`: leads of the flow in the stage now (the period does not apply);
- `median_days`: median days from an entry (in the period) to the lead's
  next audit entry, over the entries that were left;
- team `entered`: lead-cycles entering any of the team's stages;
  `handed_off`: of those, the ones that later reached a later team's stage;
- target `conversion A -> B`: share (in percent) of the lead-cycles entering
  A that later reached B or beyond; `time in S`: median days in S;
- `end_to_end`: leads entering the first main-line stage in the period, and
  the share of them that later reached each team's last stage and the last
  stage, in any cycle (a recycle is a detour, not a new lead);
- `sla_breaches`: recorded breaches (by `tick`) whose SLA ran out in the
  period; `sla` breaks them down per stage, with the leads overdue now;
- `recycled`: recycles in the period (each starts a lead-cycle), and how many
  of those leads later went further along the main line than they had ever
  been before the recycle;
- `channels`: stage figures per channel of the lead's last event (with a
  channel) at or before its entry into the stage;
- `groups` (``--by FIELD``): stage and team figures per current value of the
  lead's field (its default when unset).

The package: `figures` (the period and the report's dataclasses), `build`
(computing them from the store), `text` (table and CSV); `saleflow.views.page`
draws the same report as a page.
"""

from ...records import ReportSource
from .build import build_report, overdue_leads, report_for, sla_cutoffs
from .figures import (
    ChannelFigures,
    EndToEnd,
    Group,
    Overdue,
    Period,
    Reach,
    Recycled,
    Report,
    SlaFigures,
    StageFigures,
    TargetResult,
    TeamFigures,
)
from .text import days, percent, render_csv, render_table, target_actual, target_verdict

__all__ = [
    "ChannelFigures",
    "EndToEnd",
    "Group",
    "Overdue",
    "Period",
    "Reach",
    "Recycled",
    "Report",
    "ReportSource",
    "SlaFigures",
    "StageFigures",
    "TargetResult",
    "TeamFigures",
    "build_report",
    "days",
    "overdue_leads",
    "percent",
    "render_csv",
    "render_table",
    "report_for",
    "sla_cutoffs",
    "target_actual",
    "target_verdict",
]
