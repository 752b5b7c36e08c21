"""The initial saleflow schema: flows, leads, events, audit, waiting, SLA breaches.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Types are spelled out here rather than imported from `saleflow.store.schema`,
so this migration keeps creating the same tables whatever the live code
becomes.  Times: ``timestamptz`` on PostgreSQL, fixed-width ISO 8601 UTC text
on SQLite.  Identifiers use the "C" collation on PostgreSQL so that id order
is byte order, as on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def _time() -> sa.types.TypeEngine[Any]:
    return sa.String(32).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def _doc() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("name", _key(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("deployed_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_flows"),
        sa.UniqueConstraint("name", "content_hash", name="uq_flows_name_content_hash"),
    )
    op.create_table(
        "leads",
        sa.Column("id", _key(), nullable=False),
        sa.Column("flow", _key(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("fields", _doc(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("entered_at", _time(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_leads"),
    )
    op.create_index("ix_leads_flow_stage", "leads", ["flow", "stage"])
    op.create_table(
        "events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("lead_id", _key(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name="fk_events_lead_id_leads"),
    )
    op.create_index("ix_events_lead_id_cycle", "events", ["lead_id", "cycle"])
    op.create_table(
        "audit",
        sa.Column("lead_id", _key(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.Text(), nullable=True),
        sa.Column("to_stage", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", _time(), nullable=False),
        sa.Column("flow", _key(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("lead_id", "seq", name="pk_audit"),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name="fk_audit_lead_id_leads"),
    )
    op.create_index("ix_audit_flow_to_stage_at", "audit", ["flow", "to_stage", "at"])
    op.create_table(
        "waiting",
        sa.Column("lead_id", _key(), nullable=False),
        sa.Column("flow", _key(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("since", _time(), nullable=False),
        sa.PrimaryKeyConstraint("lead_id", name="pk_waiting"),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name="fk_waiting_lead_id_leads"),
    )
    op.create_index("ix_waiting_flow_stage_score", "waiting", ["flow", "stage", "score"])
    op.create_table(
        "sla_breaches",
        sa.Column("lead_id", _key(), nullable=False),
        sa.Column("flow", _key(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("entered_at", _time(), nullable=False),
        sa.Column("due_at", _time(), nullable=False),
        sa.Column("detected_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("lead_id", "stage", "cycle", "entered_at", name="pk_sla_breaches"),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name="fk_sla_breaches_lead_id_leads"),
    )
    op.create_index(
        "ix_sla_breaches_flow_stage_detected_at", "sla_breaches", ["flow", "stage", "detected_at"]
    )


def downgrade() -> None:
    for table in ("sla_breaches", "waiting", "audit", "events", "leads", "flows"):
        op.drop_table(table)
