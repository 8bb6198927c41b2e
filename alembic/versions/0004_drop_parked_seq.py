"""group_state.parked_seq is no longer used

A dropped batch now waits for a new triggering message through seen_seq alone (only the
cursor rolls back on failure), so the separate "parked until" marker is dead state.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("group_state", schema=None) as batch_op:
        batch_op.drop_column("parked_seq")


def downgrade() -> None:
    with op.batch_alter_table("group_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parked_seq", sa.Integer(), server_default=sa.text("0"), nullable=False))
