"""checkpoints: workspace checkpoints; machines checkpoint_on_end; workloads workspace_manifest

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 23:46:37.548554
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import agenthub.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("machine_id", sa.Uuid(), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("runtime_snapshot_id", sa.String(length=128), nullable=True),
        sa.Column("node_id", sa.String(length=8), nullable=True),
        sa.Column("workspace", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_checkpoints_machine_id_machines"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["checkpoints.id"],
            name=op.f("fk_checkpoints_parent_id_checkpoints"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_checkpoints_project_id_projects"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
    )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index("ix_checkpoints_node_id_status", ["node_id", "status"], unique=False)
        batch_op.create_index(
            "ix_checkpoints_project_id_created_at", ["project_id", "created_at"], unique=False
        )

    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("checkpoint_on_end", sa.Boolean(), nullable=False, server_default=sa.true())
        )

    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workspace_manifest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.drop_column("workspace_manifest")

    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_column("checkpoint_on_end")

    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_checkpoints_project_id_created_at")
        batch_op.drop_index("ix_checkpoints_node_id_status")

    op.drop_table("checkpoints")
