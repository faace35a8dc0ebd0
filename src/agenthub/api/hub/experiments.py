"""Hub surface: experimental hubs started from a hub checkpoint (admins)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from agenthub.api.deps import AdminDep, RuntimeDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import isoformat_z
from agenthub.services.system.experiments import as_dict

router = SurfaceRouter(prefix="/api/v1", tags=["hub"])


class ExperimentCreate(BaseModel):
    base_checkpoint: UUID = Field(description="A hub checkpoint (POST /hub/checkpoint).")
    experiment_name: str = Field(min_length=1, max_length=128)
    configuration_changes: dict[str, Any] = Field(
        default_factory=dict,
        description='Settings of the experimental hub, e.g. {"scheduler_strategy": "spread"}.',
    )
    experiment_duration_days: float = Field(gt=0, le=30)


@router.post("/hub/spawn-experimental", status_code=201)
async def spawn_experimental(
    body: ExperimentCreate, admin: AdminDep, runtime: RuntimeDep
) -> JSONResponse:
    """Start a second hub from a hub checkpoint with changed settings; it is stopped after
    ``experiment_duration_days`` (or on request)."""
    row = await runtime.experiments.spawn(
        base_checkpoint=body.base_checkpoint,
        name=body.experiment_name,
        changes=body.configuration_changes,
        duration_days=body.experiment_duration_days,
    )
    payload = {
        **as_dict(row),
        "estimated_spawn_time": isoformat_z(row.created_at),
    }
    return JSONResponse(payload, status_code=201)


@router.get("/hub/experiments")
async def list_experiments(admin: AdminDep, runtime: RuntimeDep) -> dict[str, Any]:
    rows = await runtime.experiments.all()
    return {"experiments": [as_dict(r) for r in rows], "total_count": len(rows)}


@router.post("/hub/experiments/{experiment_id}/stop")
async def stop_experiment(
    experiment_id: UUID, admin: AdminDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Stop an experiment (at once on the hub process running it, else on its next tick)."""
    return as_dict(await runtime.experiments.request_stop(experiment_id))
