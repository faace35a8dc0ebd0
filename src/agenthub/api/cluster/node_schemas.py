"""Bodies of the Cluster surface's node, pool and machine-token routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agenthub.services.nodes.tokens import TokenType


class TaintModel(BaseModel):
    key: str
    value: str = ""
    effect: str = Field("NoSchedule", description="NoSchedule, PreferNoSchedule or NoExecute.")


class NodeSummary(BaseModel):
    id: str
    address: str | None
    hostname: str | None
    pool: str
    provider: str
    status: str = Field(description="pending, registered, ready, lost or expired.")
    role: str = "worker"
    maintenance: bool
    draining: bool
    schedulable: bool
    resources: dict[str, Any]
    containers: int
    labels: dict[str, str]
    agent_version: str | None
    last_seen: datetime | None


class NodeList(BaseModel):
    nodes: list[NodeSummary]


class ContainerRef(BaseModel):
    id: str
    name: str
    status: str


class NodeDetail(NodeSummary):
    containers: list[ContainerRef]  # type: ignore[assignment]
    taints: list[TaintModel]
    gpu_type: str | None
    network: dict[str, Any]
    registered_at: datetime | None
    ready_at: datetime | None
    lost_at: datetime | None


class MaintenanceRequest(BaseModel):
    enable: bool = True
    drain: bool = False


class NodeMessage(BaseModel):
    id: str
    message: str


class NodeUpdate(BaseModel):
    """Omitted fields are left as they are; a given one replaces the node's."""

    labels: dict[str, str] | None = None
    taints: list[TaintModel] | None = None


class PoolRead(BaseModel):
    name: str
    source: str = Field(description="builtin, settings or created.")
    description: str | None = None


class PoolCreate(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    description: str | None = Field(None, max_length=255)


class MachineTokenCreate(BaseModel):
    pool_name: str = "default"
    machine_id: str | None = Field(None, description="Bind the token to this machine id.")
    token_type: TokenType = TokenType.MACHINE


class IssuedMachineRead(BaseModel):
    machine_id: str | None
    token: str
    pool_name: str
    status: str
    token_type: str
    token_id: uuid.UUID


class MachineTokenRead(BaseModel):
    id: uuid.UUID
    token_prefix: str
    token_type: str
    pool_name: str
    machine_id: str | None
    machine_id_bound: bool
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
