"""devices: paired terminals (certificate fingerprint, status) and pairing attempts

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("chat_jid", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cert_serial", sa.Text(), nullable=False),
        sa.Column("cert_fingerprint", sa.Text(), nullable=False),
        sa.Column("paired_at_ms", sa.Integer(), nullable=False),
        sa.Column("revoked_at_ms", sa.Integer(), nullable=True),
        sa.Column("online", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_seen_ms", sa.Integer(), nullable=True),
        sa.Column("fw_version", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.Column("capabilities", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_table(
        "device_pairings",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("device_id", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.Integer(), nullable=False),
        sa.Column("expires_at_ms", sa.Integer(), nullable=False),
        sa.Column("claimed_at_ms", sa.Integer(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("token_hash", sa.Text(), nullable=True),
        sa.Column("token_expires_at_ms", sa.Integer(), nullable=True),
        sa.Column("used_at_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_device_pairings")),
    )
    op.create_index("ix_device_pairings_device_id", "device_pairings", ["device_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_device_pairings_device_id", table_name="device_pairings")
    op.drop_table("device_pairings")
    op.drop_table("devices")
