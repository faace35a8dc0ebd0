"""Cluster surface bodies for workloads: what runs on nodes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agenthub.api.cluster.schemas import Pagination


class Resources(BaseModel):
    cpu_millicores: int = Field(1000, ge=1, description="CPU in millicores (1000 = one core).")
    memory_mib: int = Field(512, ge=1, description="Memory in MiB.")
    gpu_count: int = Field(0, ge=0, le=64)


class Toleration(BaseModel):
    key: str = ""
    operator: str = Field("Equal", description="Equal or Exists.")
    value: str = ""
    effect: str = Field("", description="Empty (any), NoSchedule, PreferNoSchedule, NoExecute.")


class PortMapping(BaseModel):
    container_port: int = Field(ge=1, le=65535)
    host_port: int | None = Field(None, ge=1, le=65535)
    protocol: str = Field("tcp", pattern="^(tcp|udp)$")


class VolumeMount(BaseModel):
    source: str = Field(min_length=1, max_length=1024)
    target: str = Field(min_length=1, max_length=1024, pattern="^/")
    read_only: bool = False


class WorkloadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(
        min_length=1, description='The program and its arguments, e.g. ["sh", "-c", "make"].'
    )
    runtime: str = Field("sandbox", description="sandbox (bubblewrap) or docker.")
    name: str | None = Field(None, max_length=128)
    env: dict[str, str] = Field(default_factory=dict)
    workspace: str | None = Field(
        None, description="Workspace directory name on the node (default: the workload id)."
    )
    working_dir: str | None = Field(None, description="Relative to the workspace.")
    image: str | None = Field(None, max_length=255, description="Required for docker.")
    network: bool = True
    ports: list[PortMapping] = Field(default_factory=list, max_length=64)
    volumes: list[VolumeMount] = Field(default_factory=list, max_length=64)
    files: dict[str, str] = Field(
        default_factory=dict,
        description="Text files written into the workspace before the command starts: "
        "relative path -> content (at most 1000 files, 10 MiB in total).",
    )
    resources: Resources = Field(default_factory=Resources)
    pool: str = Field("default", max_length=64)
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels a node must have."
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    priority: int = Field(0, description="Higher first, within a project.")
    restart_policy: str = Field("never", description="never, on_failure or always.")
    max_restarts: int = 3
    timeout_s: float | None = Field(None, description="Killed after this many seconds.")
    project_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None


class WorkloadRead(BaseModel):
    id: uuid.UUID
    name: str | None
    status: str
    error: str | None
    pending_reason: str | None = Field(
        description="Why a queued workload is not placed yet (null once placed)."
    )
    node_id: str | None
    attempt: int
    restarts: int
    exit_code: int | None
    runtime: str
    command: list[str]
    workspace: str
    working_dir: str | None
    image: str | None
    network: bool
    files: list[str] = Field(description="The paths of the files written into the workspace.")
    resources: Resources
    pool: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    priority: int
    restart_policy: str
    max_restarts: int
    timeout_s: float | None
    project_id: uuid.UUID | None
    tenant_id: uuid.UUID | None
    owner_kind: str | None
    owner_id: str | None
    cancel_requested: bool
    usage: dict[str, float]
    created_at: datetime
    queued_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class WorkloadList(BaseModel):
    workloads: list[WorkloadRead]
    pagination: Pagination


class CancelRequest(BaseModel):
    reason: str | None = Field(None, max_length=255)


class LogLineRead(BaseModel):
    id: int
    at: float
    stream: str
    text: str
    attempt: int


class WorkloadLogs(BaseModel):
    workload_id: uuid.UUID
    lines: list[LogLineRead]


def read(w: Any) -> WorkloadRead:
    return WorkloadRead(
        id=w.id,
        name=w.name,
        status=w.status,
        error=w.error,
        pending_reason=w.pending_reason,
        node_id=w.node_id,
        attempt=w.attempt,
        restarts=w.restarts,
        exit_code=w.exit_code,
        runtime=w.runtime,
        command=w.command,
        workspace=w.workspace,
        working_dir=w.working_dir,
        image=w.image,
        network=w.network,
        files=sorted(w.files or {}),
        resources=Resources(
            cpu_millicores=w.cpu_millicores, memory_mib=w.memory_mib, gpu_count=w.gpu_count
        ),
        pool=w.pool_name,
        node_selector=w.node_selector,
        tolerations=w.tolerations,
        priority=w.priority,
        restart_policy=w.restart_policy,
        max_restarts=w.max_restarts,
        timeout_s=w.timeout_s,
        project_id=w.project_id,
        tenant_id=w.tenant_id,
        owner_kind=w.owner_kind,
        owner_id=w.owner_id,
        cancel_requested=w.cancel_requested_at is not None,
        usage={"cpu_seconds": w.cpu_seconds, "memory_peak_mib": w.memory_peak_mib},
        created_at=w.created_at,
        queued_at=w.queued_at,
        scheduled_at=w.scheduled_at,
        started_at=w.started_at,
        finished_at=w.finished_at,
    )
