"""Checkpoints: content-addressed snapshots of a machine's workspace.

The manifest (``path -> {size, sha256, mode[, type, target]}``) is itself a blob in the blob
store, named by its sha256; a row holds its digest and the figures lists need, so identical
workspaces share one manifest and a list never loads a manifest.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.db.base import Base, UUIDPrimaryKey
from agenthub.db.types import PortableJSON


class Checkpoint(UUIDPrimaryKey, Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        sa.Index("ix_checkpoints_project_id_created_at", "project_id", "created_at"),
        sa.Index("ix_checkpoints_node_id_status", "node_id", "status"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("projects.id", ondelete="RESTRICT")
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("checkpoints.id", ondelete="SET NULL"), default=None
    )
    machine_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("machines.id", ondelete="SET NULL"), default=None
    )
    # initial | automatic | manual | terminate
    type: Mapped[str] = mapped_column(sa.String(16))
    # waiting (for its machine to stop) -> pending (asked of the node) -> ready | failed
    status: Mapped[str] = mapped_column(sa.String(16))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", PortableJSON, default=dict)
    manifest_sha256: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    file_count: Mapped[int] = mapped_column(default=0)
    runtime_snapshot_id: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    # Where the workspace is to be taken from, while pending.
    node_id: Mapped[str | None] = mapped_column(sa.String(8), default=None)
    workspace: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    error: Mapped[str | None] = mapped_column(sa.Text, default=None)
    created_at: Mapped[datetime] = mapped_column()
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class HubSnapshot(UUIDPrimaryKey, Base):
    """A consistent copy of the hub's database plus the list of blobs it references."""

    __tablename__ = "hub_snapshots"

    type: Mapped[str] = mapped_column(sa.String(32), default="manual")
    reason: Mapped[str] = mapped_column(sa.String(255), default="")
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # pending -> ready | failed
    status: Mapped[str] = mapped_column(sa.String(16))
    # "sqlite" (an online backup of the file) or "pg_dump" (custom format).
    database_format: Mapped[str] = mapped_column(sa.String(16))
    database_sha256: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    blobs_sha256: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    blob_count: Mapped[int] = mapped_column(default=0)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(sa.Text, default=None)
    created_at: Mapped[datetime] = mapped_column(index=True)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class Experiment(UUIDPrimaryKey, Base):
    """A second hub started from a hub snapshot with changed settings, for a limited time."""

    __tablename__ = "experiments"

    name: Mapped[str] = mapped_column(sa.String(128))
    hub_uuid: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    base_checkpoint_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("hub_snapshots.id", ondelete="RESTRICT")
    )
    configuration_changes: Mapped[dict[str, Any]] = mapped_column(PortableJSON, default=dict)
    duration_days: Mapped[float] = mapped_column(sa.Float)
    # starting -> running -> stopped | failed
    status: Mapped[str] = mapped_column(sa.String(16))
    url: Mapped[str | None] = mapped_column(sa.String(255), default=None)
    # Which hub process runs it (only that one can stop it) and its pid there.
    owner: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    pid: Mapped[int | None] = mapped_column(default=None)
    data_dir: Mapped[str | None] = mapped_column(sa.Text, default=None)
    error: Mapped[str | None] = mapped_column(sa.Text, default=None)
    created_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column()
    stop_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)
