"""Workloads: everything that runs on a node, with its bounded log, and controller leases.

A workload backs a Hub machine, a Cluster container or a pipeline step (``owner_kind`` and
``owner_id`` say which); the scheduler places it on a node and the node agent runs it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.db.base import Base, Timestamps, UUIDPrimaryKey
from agenthub.db.types import BigIntPK, PortableJSON


class Workload(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "workloads"
    __table_args__ = (
        # The scheduler reads the queue per project; nodes read their active workloads.
        sa.Index("ix_workloads_status_project_id", "status", "project_id"),
        sa.Index("ix_workloads_node_id_status", "node_id", "status"),
        sa.Index("ix_workloads_owner", "owner_kind", "owner_id"),
    )

    name: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    project_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None, index=True)
    created_by: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    owner_kind: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    owner_id: Mapped[str | None] = mapped_column(sa.String(64), default=None)

    # What it asks for and where it may run.
    pool_name: Mapped[str] = mapped_column(sa.String(64), default="default")
    cpu_millicores: Mapped[int] = mapped_column(default=1000)
    memory_mib: Mapped[int] = mapped_column(default=512)
    gpu_count: Mapped[int] = mapped_column(default=0)
    node_selector: Mapped[dict[str, str]] = mapped_column(PortableJSON, default=dict)
    tolerations: Mapped[list[dict[str, str]]] = mapped_column(PortableJSON, default=list)
    priority: Mapped[int] = mapped_column(default=0)
    restart_policy: Mapped[str] = mapped_column(sa.String(16), default="never")
    max_restarts: Mapped[int] = mapped_column(default=3)
    restarts: Mapped[int] = mapped_column(default=0)
    timeout_s: Mapped[float | None] = mapped_column(sa.Float, default=None)

    # How it runs.
    runtime: Mapped[str] = mapped_column(sa.String(16), default="sandbox")
    command: Mapped[list[str]] = mapped_column(PortableJSON, default=list)
    env: Mapped[dict[str, str]] = mapped_column(PortableJSON, default=dict)
    workspace: Mapped[str] = mapped_column(sa.String(128))
    working_dir: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    image: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    network: Mapped[bool] = mapped_column(default=True)
    ports: Mapped[list[dict[str, Any]]] = mapped_column(PortableJSON, default=list)
    volumes: Mapped[list[dict[str, Any]]] = mapped_column(PortableJSON, default=list)
    # The checkpoint manifest (a blob's sha256) the workspace is materialised from first.
    workspace_manifest: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    # Files written into the workspace (relative path -> text) before the command starts.
    files: Mapped[dict[str, str]] = mapped_column(PortableJSON, default=dict)

    # Where it is.
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    error: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # Why a queued workload waits (set by a scheduler pass that could not place it).
    pending_reason: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    node_id: Mapped[str | None] = mapped_column(
        sa.String(8), sa.ForeignKey("nodes.id", ondelete="SET NULL"), default=None
    )
    # Bumped on every re-queue: a report from an earlier attempt (a node that came back) is
    # recognised as stale.
    attempt: Mapped[int] = mapped_column(default=1)
    exit_code: Mapped[int | None] = mapped_column(default=None)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_reason: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    # Set when a node is drained: once stopped, the workload is queued again, not terminated.
    requeue_on_stop: Mapped[bool] = mapped_column(default=False)
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    scheduled_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    # What it used (reported by the node agent).
    cpu_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    memory_peak_mib: Mapped[float] = mapped_column(sa.Float, default=0.0)
    log_lines: Mapped[int] = mapped_column(default=0)


class WorkloadLog(Base):
    """One line of a workload's output (bounded per workload, oldest dropped first)."""

    __tablename__ = "workload_logs"
    __table_args__ = (sa.Index("ix_workload_logs_workload_id_id", "workload_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    workload_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("workloads.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(default=1)
    at: Mapped[float] = mapped_column(sa.Float)
    stream: Mapped[str] = mapped_column(sa.String(8))
    text: Mapped[str] = mapped_column(sa.Text)


class ControllerLease(Base):
    """Who runs a hub-wide controller (the scheduler) when no Redis is configured."""

    __tablename__ = "controller_leases"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(64))
    expires_at: Mapped[float] = mapped_column(sa.Float)
