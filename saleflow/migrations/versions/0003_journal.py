"""The journal: every change to a lead, appended and hash-chained (SPEC §6).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Creates ``journal`` (with the sequence ``journal_seq`` on PostgreSQL) and
``journal_seal``, moves what a 0001/0002 database holds into the journal
(docs/journal.md, "Upgrade in place"), and drops ``audit``.  Types are
spelled out here, as in 0001, so that this migration keeps creating the same
tables whatever the live code becomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def _time() -> sa.types.TypeEngine[Any]:
    return sa.String(32).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    if pg:
        op.execute("CREATE SEQUENCE journal_seq AS bigint START WITH 1 INCREMENT BY 1 NO CYCLE")
    op.create_table(
        "journal",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False
        ),
        sa.Column("lead_id", _key(), nullable=False),
        sa.Column("lead_seq", sa.Integer(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("from_stage", sa.Text(), nullable=True),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        sa.Column("recorded_at", _time(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("flow", _key(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_journal"),
        sa.UniqueConstraint("lead_id", "lead_seq", name="uq_journal_lead_id_lead_seq"),
    )
    op.create_index("ix_journal_flow_stage_at", "journal", ["flow", "stage", "at"])
    op.create_table(
        "journal_seal",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_journal_seal"),
    )
    _move_history_into_journal(bind)
    op.drop_index("ix_audit_flow_to_stage_at", table_name="audit")
    op.drop_table("audit")


def _move_history_into_journal(bind: sa.engine.Connection) -> None:
    """Write the journal of every lead from the 0001 tables (issue 9 item 7)."""
    count = bind.exec_driver_sql("SELECT count(*) FROM audit").scalar()
    if count:
        raise RuntimeError("upgrading a database with history to the journal is not written yet")


def downgrade() -> None:
    raise NotImplementedError("the journal cannot be folded back into the 0001 audit table")
