"""Projects, the Intelligent Machines that work in them, and the usage ledger they are billed by.

A machine runs as a workload (``workload_id``); its status is read from that workload, so the
two can never disagree. What the machine spent is the sum of its ledger entries; the running
totals on the machine row are kept in the same transaction as each entry, so budget checks
need no aggregation.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.db.base import Base, Timestamps, UUIDPrimaryKey
from agenthub.db.types import BigIntPK, PortableJSON


class Project(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(sa.String(128), index=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # Weight in the hub-wide daily budget and in the scheduler's fair share.
    greediness: Mapped[float] = mapped_column(sa.Float, default=0.5)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None, index=True)
    created_by: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    # A project's own daily budgets; ``None``: its greediness share of the hub-wide budget.
    daily_money: Mapped[float | None] = mapped_column(sa.Float, default=None)
    daily_time_hours: Mapped[float | None] = mapped_column(sa.Float, default=None)
    daily_api_calls: Mapped[int | None] = mapped_column(default=None)
    storage_gb: Mapped[float | None] = mapped_column(sa.Float, default=None)
    max_concurrent_machines: Mapped[int | None] = mapped_column(default=None)
    current_checkpoint_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    # Budget warnings already sent on ``warned_day`` (one per budget per day).
    warned_day: Mapped[str | None] = mapped_column(sa.String(10), default=None)
    warned: Mapped[list[str]] = mapped_column(PortableJSON, default=list)


class Machine(UUIDPrimaryKey, Timestamps, Base):
    """An Intelligent Machine: an agent of some type working in a project's sandbox."""

    __tablename__ = "machines"
    __table_args__ = (
        sa.Index("ix_machines_project_id_created_at", "project_id", "created_at"),
        sa.Index("ix_machines_settled_at", "settled_at"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("projects.id", ondelete="RESTRICT")
    )
    workload_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("workloads.id", ondelete="RESTRICT"), unique=True
    )
    type: Mapped[str] = mapped_column(sa.String(64))
    prompt: Mapped[str] = mapped_column(sa.Text)
    vm_id: Mapped[str] = mapped_column(sa.String(128))
    created_by: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    checkpoint_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)

    # Hard limits of this machine, and what it was estimated to use.
    max_money: Mapped[float] = mapped_column(sa.Float)
    max_time_minutes: Mapped[float] = mapped_column(sa.Float)
    max_api_calls: Mapped[int] = mapped_column()
    estimated_money: Mapped[float] = mapped_column(sa.Float, default=0.0)
    estimated_time_minutes: Mapped[float] = mapped_column(sa.Float, default=0.0)
    estimated_api_calls: Mapped[int] = mapped_column(default=0)

    # Running totals of its ledger entries.
    money_used: Mapped[float] = mapped_column(sa.Float, default=0.0)
    api_calls_used: Mapped[int] = mapped_column(default=0)
    time_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    memory_gb_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    # Compute is billed up to here (the workload's start, then each accrual).
    accrued_until: Mapped[datetime | None] = mapped_column(default=None)

    termination_reason: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    terminated_at: Mapped[datetime | None] = mapped_column(default=None)
    last_checkpoint_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    checkpoints_created: Mapped[int] = mapped_column(default=0)
    # False when it was terminated with create_checkpoint=false: no checkpoint when it ends.
    checkpoint_on_end: Mapped[bool] = mapped_column(default=True)
    warned: Mapped[list[str]] = mapped_column(PortableJSON, default=list)
    # Set once the machine ended and its last usage was billed: the controller is done with it.
    settled_at: Mapped[datetime | None] = mapped_column(default=None)


class UsageEntry(Base):
    """One line of the append-only usage ledger: what was spent, when, by which machine."""

    __tablename__ = "usage_ledger"
    __table_args__ = (
        sa.Index("ix_usage_ledger_project_id_at", "project_id", "at"),
        sa.Index("ix_usage_ledger_machine_id", "machine_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column()
    project_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("projects.id", ondelete="RESTRICT")
    )
    machine_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("machines.id", ondelete="SET NULL"), default=None
    )
    task_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    model: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    # ``compute`` (the workload's usage at the hub's rates), ``report`` (the machine's own
    # report of API calls and money), later ``gateway`` (metered model calls).
    source: Mapped[str] = mapped_column(sa.String(16))
    money: Mapped[float] = mapped_column(sa.Float, default=0.0)
    api_calls: Mapped[int] = mapped_column(default=0)
    time_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    memory_gb_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    description: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(PortableJSON, default=dict)
