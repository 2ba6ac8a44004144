"""Pending agent messages (kernel/messaging.py) and every version of a tool (tools/registry.py).

Both are new tables: nothing to convert, so the upgrade is safe on a live database.

Revision ID: 0002
Revises: 0001
Created: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=40), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("hops", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pending_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_messages_agent_id"), ["agent_id"], unique=False
        )

    op.create_table(
        "tool_versions",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("function", sa.String(length=64), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("exclusive", sa.Integer(), nullable=False),
        sa.Column("irreversible", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=160), nullable=True),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "name", "version"),
    )


def downgrade() -> None:
    op.drop_table("tool_versions")
    with op.batch_alter_table("pending_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_messages_agent_id"))

    op.drop_table("pending_messages")
