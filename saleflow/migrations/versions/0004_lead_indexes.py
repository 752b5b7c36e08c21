"""Indexes for listing and walking leads by flow and by stage, in id order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

Every batch read (``tick --flow``, ``advance --all --flow``, ``leads --flow
[--stage]``, the service's pages) is a keyset page: ``WHERE flow = ? [AND
stage = ?] AND id > ? ORDER BY id LIMIT n``.  With only an index on (flow,
stage) each page sorted every remaining matching row (SQLite: "USE TEMP
B-TREE FOR ORDER BY"), so a walk over a flow cost quadratic time.  (flow,
id) and (flow, stage, id) give each page in order straight from the index;
(flow, stage, id) also serves everything (flow, stage) did (capacity
counts), so that one is dropped rather than kept as a third index to write.

On a large PostgreSQL database ``CREATE INDEX`` blocks writes to the leads
while it runs; run this upgrade in a quiet moment (or create the indexes
``CONCURRENTLY`` by hand first, with these names: the upgrade then only
drops the old one).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_leads_flow_id", "leads", ["flow", "id"], if_not_exists=True)
    op.create_index("ix_leads_flow_stage_id", "leads", ["flow", "stage", "id"], if_not_exists=True)
    op.drop_index("ix_leads_flow_stage", table_name="leads")


def downgrade() -> None:
    op.create_index("ix_leads_flow_stage", "leads", ["flow", "stage"])
    op.drop_index("ix_leads_flow_stage_id", table_name="leads")
    op.drop_index("ix_leads_flow_id", table_name="leads")
