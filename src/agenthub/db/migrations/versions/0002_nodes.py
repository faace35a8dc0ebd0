"""nodes: pools, machine tokens, nodes, leases, health samples

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:01:30.021156
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import agenthub.db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "machine_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("token_type", sa.String(length=16), nullable=False),
        sa.Column("pool_name", sa.String(length=64), nullable=False),
        sa.Column("machine_id", sa.String(length=8), nullable=True),
        sa.Column("machine_id_bound", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_machine_tokens_token_hash")),
    )
    with op.batch_alter_table("machine_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machine_tokens_machine_id"), ["machine_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_machine_tokens_name"), ["name"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_machine_tokens_pool_name"), ["pool_name"], unique=False
        )

    op.create_table(
        "node_health_samples",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("node_id", sa.String(length=8), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_health_samples")),
    )
    with op.batch_alter_table("node_health_samples", schema=None) as batch_op:
        batch_op.create_index("ix_node_health_samples_node_id_id", ["node_id", "id"], unique=False)

    op.create_table(
        "node_leases",
        sa.Column("machine_id", sa.String(length=8), nullable=False),
        sa.Column("pool_name", sa.String(length=64), nullable=False),
        sa.Column("provider_name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("private_ip", sa.String(length=64), nullable=False),
        sa.Column("cpu_millicores", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column(
            "metrics",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("last_keepalive", sa.Float(), nullable=True),
        sa.Column("last_worker_seen", sa.Float(), nullable=True),
        sa.Column("last_sample_at", sa.Float(), nullable=True),
        sa.Column("keepalives", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("machine_id", name=op.f("pk_node_leases")),
    )
    with op.batch_alter_table("node_leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_node_leases_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_node_leases_pool_name"), ["pool_name"], unique=False)

    op.create_table(
        "pools",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pools")),
        sa.UniqueConstraint("name", name=op.f("uq_pools_name")),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=8), nullable=False),
        sa.Column("pool_name", sa.String(length=64), nullable=False),
        sa.Column("provider_name", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("private_ip", sa.String(length=64), nullable=True),
        sa.Column("cpu_millicores", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("gpu_type", sa.String(length=64), nullable=True),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "taints",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("maintenance", sa.Boolean(), nullable=False),
        sa.Column("draining", sa.Boolean(), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("token_id", sa.Uuid(), nullable=True),
        sa.Column("registered_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ready_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lost_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", agenthub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["machine_tokens.id"],
            name=op.f("fk_nodes_token_id_machine_tokens"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nodes_pool_name"), ["pool_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_nodes_status"), ["status"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_status"))
        batch_op.drop_index(batch_op.f("ix_nodes_pool_name"))

    op.drop_table("nodes")
    op.drop_table("pools")
    with op.batch_alter_table("node_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_node_leases_pool_name"))
        batch_op.drop_index(batch_op.f("ix_node_leases_expires_at"))

    op.drop_table("node_leases")
    with op.batch_alter_table("node_health_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_node_health_samples_node_id_id")

    op.drop_table("node_health_samples")
    with op.batch_alter_table("machine_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_tokens_pool_name"))
        batch_op.drop_index(batch_op.f("ix_machine_tokens_name"))
        batch_op.drop_index(batch_op.f("ix_machine_tokens_machine_id"))

    op.drop_table("machine_tokens")
