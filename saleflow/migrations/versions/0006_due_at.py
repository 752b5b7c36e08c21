"""Due times: when each lead's time-dependent conditions could next change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

``leads.due_at`` (nullable; NULL: never due) is the earliest time at which
one of a lead's time-dependent conditions (a window, ``days_in_stage``,
``days_since``, an SLA, a score rule) could change value (SPEC §8,
``saleflow/due.py``).  ``tick`` and the workers visit only the leads whose
due time has come, through the indexes (due_at, id) and (flow, due_at, id).

Back-fill: computing a due time needs the lead's flow, its events and the
evaluator, which a migration should not import.  Every existing lead is
made due at its creation time instead (``due_at = created_at``): a due time
may be early, never late, so the first ``tick`` after the upgrade visits
every lead once (as every tick did before) and stores the real due time,
NULL for leads whose flow has no time-dependent rule.

On a large PostgreSQL database ``CREATE INDEX`` blocks writes to the leads
while it runs, and the back-fill rewrites every lead row; run this upgrade
in a quiet moment.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The type of every time column (0001): ISO text on SQLite, timestamptz on PostgreSQL.
    kind = sa.String(32).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
    op.add_column("leads", sa.Column("due_at", kind, nullable=True))
    op.execute("UPDATE leads SET due_at = created_at")
    op.create_index("ix_leads_due_at_id", "leads", ["due_at", "id"], if_not_exists=True)
    op.create_index("ix_leads_flow_due_at_id", "leads", ["flow", "due_at", "id"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_leads_flow_due_at_id", table_name="leads")
    op.drop_index("ix_leads_due_at_id", table_name="leads")
    # ALTER TABLE … DROP COLUMN: SQLite 3.35 or later (the column is in no index now).
    op.drop_column("leads", "due_at")
