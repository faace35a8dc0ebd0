"""experiments

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 00:08:43.951106
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import agenthub.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "experiments",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("hub_uuid", sa.Uuid(), nullable=False),
        sa.Column("base_checkpoint_id", sa.Uuid(), nullable=False),
        sa.Column(
            "configuration_changes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("duration_days", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=255), nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("data_dir", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stop_requested_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["base_checkpoint_id"],
            ["hub_snapshots.id"],
            name=op.f("fk_experiments_base_checkpoint_id_hub_snapshots"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )


def downgrade() -> None:

    op.drop_table("experiments")
