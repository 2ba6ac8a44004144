"""Waiting agent-to-agent calls across nodes: the calling agent of a pending message.

One nullable column: nothing to convert, so the upgrade is safe on a live
database (kernels of the previous revision ignore it).

Revision ID: 0006
Revises: 0005
Created: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database stamped back to an earlier revision by hand (tests do) may have it.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("pending_messages")}
    if "caller_id" in columns:
        return
    with op.batch_alter_table("pending_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caller_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_messages", schema=None) as batch_op:
        batch_op.drop_column("caller_id")
