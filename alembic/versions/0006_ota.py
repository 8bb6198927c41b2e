"""ota: signed releases with their rollout state, device results, and the board a device reports

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("board", sa.Text(), nullable=True))
    op.create_table(
        "ota_releases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("board", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("min_version", sa.Text(), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("percent", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("stages", sa.Text(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("halted", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("halt_reason", sa.Text(), nullable=True),
        sa.Column("halted_at_ms", sa.Integer(), nullable=True),
        sa.Column("created_at_ms", sa.Integer(), nullable=False),
        sa.Column("updated_at_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_releases")),
        sa.UniqueConstraint("kind", "board", "version", name=op.f("uq_ota_releases_kind_board_version")),
    )
    op.create_table(
        "ota_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Text(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("counted_ok", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("metrics", sa.Text(), nullable=True),
        sa.Column("stage", sa.Float(), nullable=True),
        sa.Column("reported_at_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"], ["ota_releases.id"], name=op.f("fk_ota_results_release_id_ota_releases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_results")),
        sa.UniqueConstraint("release_id", "device_id", name=op.f("uq_ota_results_release_id_device_id")),
    )


def downgrade() -> None:
    op.drop_table("ota_results")
    op.drop_table("ota_releases")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("board")
