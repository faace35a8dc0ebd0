"""workloads: workloads, logs, controller leases, node allocations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:33:36.844649
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import agenthub.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "controller_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_controller_leases")),
    )
    op.create_table(
        "workloads",
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("owner_kind", sa.String(length=32), nullable=True),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("pool_name", sa.String(length=64), nullable=False),
        sa.Column("cpu_millicores", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column(
            "node_selector",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "tolerations",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("restart_policy", sa.String(length=16), nullable=False),
        sa.Column("max_restarts", sa.Integer(), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("runtime", sa.String(length=16), nullable=False),
        sa.Column(
            "command",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "env",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("workspace", sa.String(length=128), nullable=False),
        sa.Column("working_dir", sa.String(length=255), nullable=True),
        sa.Column("image", sa.String(length=255), nullable=True),
        sa.Column("network", sa.Boolean(), nullable=False),
        sa.Column(
            "ports",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "volumes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node_id", sa.String(length=8), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column(
            "cancel_requested_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("cancel_reason", sa.String(length=255), nullable=True),
        sa.Column("requeue_on_stop", sa.Boolean(), nullable=False),
        sa.Column("queued_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("scheduled_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("memory_peak_mib", sa.Float(), nullable=False),
        sa.Column("log_lines", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_workloads_node_id_nodes"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workloads")),
    )
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.create_index("ix_workloads_node_id_status", ["node_id", "status"], unique=False)
        batch_op.create_index("ix_workloads_owner", ["owner_kind", "owner_id"], unique=False)
        batch_op.create_index(
            "ix_workloads_status_project_id", ["status", "project_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_workloads_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "workload_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("workload_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["workloads.id"],
            name=op.f("fk_workload_logs_workload_id_workloads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workload_logs")),
    )
    with op.batch_alter_table("workload_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_workload_logs_workload_id_id", ["workload_id", "id"], unique=False
        )

    with op.batch_alter_table("nodes", schema=None) as batch_op:
        # Server defaults fill the rows of nodes registered before this revision.
        batch_op.add_column(
            sa.Column(
                "runtimes",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default="[]",
            )
        )
        batch_op.add_column(
            sa.Column("cpu_allocated", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("memory_allocated", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("gpu_allocated", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("gpu_allocated")
        batch_op.drop_column("memory_allocated")
        batch_op.drop_column("cpu_allocated")
        batch_op.drop_column("runtimes")

    with op.batch_alter_table("workload_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_workload_logs_workload_id_id")

    op.drop_table("workload_logs")
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workloads_tenant_id"))
        batch_op.drop_index("ix_workloads_status_project_id")
        batch_op.drop_index("ix_workloads_owner")
        batch_op.drop_index("ix_workloads_node_id_status")

    op.drop_table("workloads")
    op.drop_table("controller_leases")
