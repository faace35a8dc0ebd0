"""projects: projects, machines, usage ledger, workload files

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:39:52.788580
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import agenthub.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hub_info",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_hub_info")),
    )
    op.create_table(
        "projects",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("greediness", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("daily_money", sa.Float(), nullable=True),
        sa.Column("daily_time_hours", sa.Float(), nullable=True),
        sa.Column("daily_api_calls", sa.Integer(), nullable=True),
        sa.Column("storage_gb", sa.Float(), nullable=True),
        sa.Column("max_concurrent_machines", sa.Integer(), nullable=True),
        sa.Column("current_checkpoint_id", sa.Uuid(), nullable=True),
        sa.Column("warned_day", sa.String(length=10), nullable=True),
        sa.Column(
            "warned",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_projects_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_projects_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "machines",
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("workload_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("vm_id", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_id", sa.Uuid(), nullable=True),
        sa.Column("max_money", sa.Float(), nullable=False),
        sa.Column("max_time_minutes", sa.Float(), nullable=False),
        sa.Column("max_api_calls", sa.Integer(), nullable=False),
        sa.Column("estimated_money", sa.Float(), nullable=False),
        sa.Column("estimated_time_minutes", sa.Float(), nullable=False),
        sa.Column("estimated_api_calls", sa.Integer(), nullable=False),
        sa.Column("money_used", sa.Float(), nullable=False),
        sa.Column("api_calls_used", sa.Integer(), nullable=False),
        sa.Column("time_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("memory_gb_seconds", sa.Float(), nullable=False),
        sa.Column("accrued_until", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("termination_reason", sa.String(length=255), nullable=True),
        sa.Column("terminated_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_checkpoint_id", sa.Uuid(), nullable=True),
        sa.Column("checkpoints_created", sa.Integer(), nullable=False),
        sa.Column(
            "warned",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("settled_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_machines_project_id_projects"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["workloads.id"],
            name=op.f("fk_machines_workload_id_workloads"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machines")),
        sa.UniqueConstraint("workload_id", name=op.f("uq_machines_workload_id")),
    )
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_machines_project_id_created_at", ["project_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_machines_settled_at", ["settled_at"], unique=False)

    op.create_table(
        "usage_ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("machine_id", sa.Uuid(), nullable=True),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("money", sa.Float(), nullable=False),
        sa.Column("api_calls", sa.Integer(), nullable=False),
        sa.Column("time_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("memory_gb_seconds", sa.Float(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_usage_ledger_machine_id_machines"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_usage_ledger_project_id_projects"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_ledger")),
    )
    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_usage_ledger_machine_id", ["machine_id"], unique=False)
        batch_op.create_index("ix_usage_ledger_project_id_at", ["project_id", "at"], unique=False)

    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "files",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default="{}",
            )
        )
        batch_op.add_column(sa.Column("pending_reason", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.drop_column("pending_reason")
        batch_op.drop_column("files")

    with op.batch_alter_table("usage_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_ledger_project_id_at")
        batch_op.drop_index("ix_usage_ledger_machine_id")

    op.drop_table("usage_ledger")
    with op.batch_alter_table("machines", schema=None) as batch_op:
        batch_op.drop_index("ix_machines_settled_at")
        batch_op.drop_index("ix_machines_project_id_created_at")

    op.drop_table("machines")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_projects_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_projects_name"))

    op.drop_table("projects")
    op.drop_table("hub_info")
