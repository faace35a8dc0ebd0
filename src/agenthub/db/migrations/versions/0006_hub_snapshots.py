"""hub snapshots

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 00:06:36.254136
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import agenthub.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "hub_snapshots",
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("database_format", sa.String(length=16), nullable=False),
        sa.Column("database_sha256", sa.String(length=64), nullable=True),
        sa.Column("blobs_sha256", sa.String(length=64), nullable=True),
        sa.Column("blob_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hub_snapshots")),
    )
    with op.batch_alter_table("hub_snapshots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hub_snapshots_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("hub_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hub_snapshots_created_at"))

    op.drop_table("hub_snapshots")
