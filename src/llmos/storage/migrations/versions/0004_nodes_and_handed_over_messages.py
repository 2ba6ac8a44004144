"""The nodes registry (kernel/nodes.py) and pending messages handed to another node.

A new table and four nullable columns: nothing to convert, so the upgrade is
safe on a live database (kernels of the previous revision ignore the columns).

Revision ID: 0004
Revises: 0003
Created: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("agents", sa.JSON(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pending_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("waiter", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("result", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("done_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_messages", schema=None) as batch_op:
        batch_op.drop_column("done_at")
        batch_op.drop_column("result")
        batch_op.drop_column("waiter")
        batch_op.drop_column("approval_id")

    op.drop_table("nodes")
