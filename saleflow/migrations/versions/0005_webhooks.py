"""Webhooks: their settings and the entries each still owes (SPEC §8).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

``webhooks`` holds one row per webhook (the secret's environment variable
by NAME, never the secret); ``webhook_queue`` one row per journal entry a
webhook has yet to deliver, or gave up on (docs/webhooks.md).  Two new
tables and nothing else: the upgrade takes no lock on the engine's tables.
Types are spelled out here, as in 0001, so that this migration keeps
creating the same tables whatever the live code becomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def _time() -> sa.types.TypeEngine[Any]:
    return sa.String(32).with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("name", _key(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("flow", _key(), nullable=True),
        sa.Column("kinds", sa.Text(), nullable=True),
        sa.Column("stages", sa.Text(), nullable=True),
        sa.Column("secret_env", sa.Text(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_webhooks"),
    )
    op.create_table(
        "webhook_queue",
        sa.Column("hook", _key(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("lead_id", _key(), nullable=False),
        sa.Column("queued_at", _time(), nullable=False),
        sa.Column("next_at", _time(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", _time(), nullable=True),
        sa.Column("last_attempt_at", _time(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failed_at", _time(), nullable=True),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_until", _time(), nullable=True),
        sa.ForeignKeyConstraint(["hook"], ["webhooks.name"], name="fk_webhook_queue_hook_webhooks"),
        sa.PrimaryKeyConstraint("hook", "seq", name="pk_webhook_queue"),
    )
    op.create_index("ix_webhook_queue_hook_lead_id_seq", "webhook_queue", ["hook", "lead_id", "seq"])
    op.create_index("ix_webhook_queue_hook_next_at", "webhook_queue", ["hook", "next_at"])
    op.create_index("ix_webhook_queue_hook_failed_at", "webhook_queue", ["hook", "failed_at"])


def downgrade() -> None:
    op.drop_table("webhook_queue")
    op.drop_table("webhooks")
