"""Worker pools, machine tokens and the durable record of every node.

Time-based node state (keepalive TTLs, latest metrics, health samples) lives in the node state
store (``services/nodes/state.py``): Redis when configured, else :class:`NodeLease` and
:class:`NodeHealthSample` below. What must outlive a TTL (hostname, capacity, labels, taints,
maintenance, the last known status) is in :class:`Node`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.core.clock import utcnow
from agenthub.db.base import Base, Timestamps, UUIDPrimaryKey
from agenthub.db.types import BigIntPK, PortableJSON


class Pool(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    description: Mapped[str | None] = mapped_column(sa.String(255), default=None)


class MachineToken(UUIDPrimaryKey, Timestamps, Base):
    """A Gateway credential, bound to a pool and, once known, to one machine (``machine``
    type); a ``worker`` token may register any number of machines of its pool."""

    __tablename__ = "machine_tokens"

    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(sa.String(16))
    token_type: Mapped[str] = mapped_column(sa.String(16))
    pool_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    machine_id: Mapped[str | None] = mapped_column(sa.String(8), default=None, index=True)
    # False while ``machine_id`` is only the id suggested at creation: the first registration
    # binds the token to the machine that used it.
    machine_id_bound: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str | None] = mapped_column(sa.String(64), default=None, index=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Node(Timestamps, Base):
    """A worker machine as the Cluster surface shows it, keyed by its Gateway machine id."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    pool_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    provider_name: Mapped[str] = mapped_column(sa.String(64), default="generic")
    hostname: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    private_ip: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    cpu_millicores: Mapped[int] = mapped_column(default=0)
    memory_mib: Mapped[int] = mapped_column(default=0)
    gpu_count: Mapped[int] = mapped_column(default=0)
    gpu_type: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    labels: Mapped[dict[str, str]] = mapped_column(PortableJSON, default=dict)
    taints: Mapped[list[dict[str, str]]] = mapped_column(PortableJSON, default=list)
    # pending | registered | ready | lost | expired: the last status the hub wrote down.
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    maintenance: Mapped[bool] = mapped_column(default=False)
    draining: Mapped[bool] = mapped_column(default=False)
    agent_version: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    token_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("machine_tokens.id", ondelete="SET NULL"), default=None
    )
    # What the node agent can run ("sandbox", "docker"), as it said at registration or poll.
    runtimes: Mapped[list[str]] = mapped_column(PortableJSON, default=list)
    # Requests of the workloads placed here and not yet finished; the scheduler raises them
    # with a conditional UPDATE, so two placements never overbook the node.
    cpu_allocated: Mapped[int] = mapped_column(default=0)
    memory_allocated: Mapped[int] = mapped_column(default=0)
    gpu_allocated: Mapped[int] = mapped_column(default=0)
    registered_at: Mapped[datetime | None] = mapped_column(default=None)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)
    lost_at: Mapped[datetime | None] = mapped_column(default=None)
    last_seen_at: Mapped[datetime | None] = mapped_column(default=None)


class NodeLease(Base):
    """Keepalive TTL state of one machine when no Redis is configured (one row per machine).

    Times are unix seconds (floats): the keepalive path compares and writes them in one
    ``UPDATE ... RETURNING`` on both SQLite and PostgreSQL.
    """

    __tablename__ = "node_leases"

    machine_id: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    pool_name: Mapped[str] = mapped_column(sa.String(64), index=True)
    provider_name: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    token_id: Mapped[str] = mapped_column(sa.String(36))
    hostname: Mapped[str] = mapped_column(sa.String(255))
    private_ip: Mapped[str] = mapped_column(sa.String(64))
    cpu_millicores: Mapped[int] = mapped_column()
    memory_mib: Mapped[int] = mapped_column()
    gpu_count: Mapped[int] = mapped_column()
    gpu_type: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    agent_version: Mapped[str] = mapped_column(sa.String(64), default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(PortableJSON, default=dict)
    expires_at: Mapped[float] = mapped_column(sa.Float, index=True)
    last_keepalive: Mapped[float | None] = mapped_column(sa.Float, default=None)
    last_worker_seen: Mapped[float | None] = mapped_column(sa.Float, default=None)
    last_sample_at: Mapped[float | None] = mapped_column(sa.Float, default=None)
    keepalives: Mapped[int] = mapped_column(default=0)


class NodeHealthSample(Base):
    """One health sample of a node (bounded per node) when no Redis is configured."""

    __tablename__ = "node_health_samples"
    __table_args__ = (sa.Index("ix_node_health_samples_node_id_id", "node_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(sa.String(8))
    data: Mapped[dict[str, Any]] = mapped_column(PortableJSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
