"""Request and response shapes of the Hub surface (field names per spec/SHAPES.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from agenthub.core.clock import isoformat_z


class HubModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadModel(BaseModel):
    @field_serializer("*", when_used="json")
    def _timestamps(self, value: Any) -> Any:
        return isoformat_z(value) if isinstance(value, datetime) else value


# -- machines ---------------------------------------------------------------------------------


class ResourceConstraints(HubModel):
    max_money: float | None = Field(None, ge=0, description="USD this machine may spend.")
    max_time_minutes: float | None = Field(
        None, gt=0, description="Minutes it may run (fractions allowed)."
    )
    max_api_calls: int | None = Field(None, ge=0, description="API calls it may make.")


class MachineCreate(HubModel):
    type: str = Field(min_length=1, max_length=64, description="Machine type, e.g. `shell`.")
    project_uuid: UUID
    checkpoint_uuid: UUID | None = Field(
        None, description="Start the workspace from this checkpoint (default: the project's)."
    )
    prompt: str = Field(description="What the machine is asked to do (for `shell`: a script).")
    file_modifications: dict[str, str] = Field(
        default_factory=dict, description="Files written into the workspace before it starts."
    )
    resource_constraints: ResourceConstraints = Field(default_factory=ResourceConstraints)


class Estimated(ReadModel):
    money: float
    time_minutes: float
    api_calls: int


class MachineSpawned(ReadModel):
    machine_uuid: UUID
    vm_id: str
    status: str
    estimated_resources: Estimated
    spawned_at: datetime


class MachineRead(ReadModel):
    uuid: UUID
    type: str
    status: str
    project_uuid: UUID
    vm_id: str
    prompt: str
    resource_usage: dict[str, Any]
    progress: str | None
    last_checkpoint: UUID | None
    checkpoints_created: int
    node_id: str | None
    pending_reason: str | None
    termination_reason: str | None
    exit_code: int | None
    spawned_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class MachineList(ReadModel):
    machines: list[MachineRead]
    total_count: int
    has_more: bool
    next_offset: int | None


class TerminateRequest(HubModel):
    reason: str | None = Field(None, max_length=255)
    create_checkpoint: bool = True


class Terminated(ReadModel):
    machine_uuid: UUID
    status: str
    final_checkpoint: UUID | None
    resource_usage: dict[str, Any]
    terminated_at: datetime


class MachineLogs(ReadModel):
    machine_uuid: UUID
    logs: str
    lines: int


class UsageReport(HubModel):
    api_calls: int = Field(0, ge=0, description="API calls made since the last report.")
    money: float = Field(0.0, ge=0, description="USD spent since the last report.")
    model: str | None = Field(None, max_length=128)
    description: str | None = Field(None, max_length=255)


# -- projects ---------------------------------------------------------------------------------


class ResourceBudgets(HubModel):
    daily_money: float | None = Field(None, ge=0)
    daily_time_hours: float | None = Field(None, ge=0)
    daily_api_calls: int | None = Field(None, ge=0)
    storage_gb: float | None = Field(None, ge=0)


class ProjectCreate(HubModel):
    name: str = Field(min_length=1, max_length=128)
    greediness: float = Field(0.5, ge=0, le=1)
    description: str = Field("", max_length=10_000)
    resource_budgets: ResourceBudgets = Field(default_factory=ResourceBudgets)


class ProjectCreated(ReadModel):
    uuid: UUID
    name: str
    greediness: float
    description: str
    initial_checkpoint: UUID | None
    created_at: datetime


class ProjectUpdate(HubModel):
    name: str | None = Field(None, min_length=1, max_length=128)
    greediness: float | None = Field(None, ge=0, le=1)
    description: str | None = Field(None, max_length=10_000)
    status: str | None = Field(None, pattern="^(active|archived)$")


class Amounts(ReadModel):
    allocated: float
    used: float
    remaining: float


class ProjectRead(ReadModel):
    uuid: UUID
    name: str
    greediness: float
    description: str
    status: str
    current_checkpoint: UUID | None
    resource_budgets: dict[str, Any]
    resource_usage_today: dict[str, Amounts]
    active_machines: int
    total_checkpoints: int
    created_at: datetime
    updated_at: datetime


class ProjectSummary(ReadModel):
    uuid: UUID
    name: str
    greediness: float
    status: str
    daily_resource_usage: dict[str, Any]


class ProjectList(ReadModel):
    projects: list[ProjectSummary]
    total_count: int
    has_more: bool
    next_offset: int | None


class BudgetUpdate(HubModel):
    daily_money: float | None = Field(None, ge=0)
    daily_api_calls: int | None = Field(None, ge=0)
    daily_time_hours: float | None = Field(None, ge=0)
    storage_gb: float | None = Field(None, ge=0)
    max_concurrent_machines: int | None = Field(None, ge=0)


class BudgetRead(ReadModel):
    project_uuid: UUID
    daily_money: float | None
    daily_api_calls: int | None
    daily_time_hours: float | None
    storage_gb: float | None
    max_concurrent_machines: int | None
    effective: dict[str, Any]
    updated_at: datetime
