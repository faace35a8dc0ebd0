"""Hub surface: ``GET /api/v1/health`` and ``GET /api/v1/hub/status``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from agenthub import __version__
from agenthub.api.deps import AdminDep, PrincipalDep, RuntimeDep
from agenthub.api.metrics import HttpMetrics
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import Unavailable
from agenthub.services import events
from agenthub.services.runtime import Runtime
from agenthub.services.system import hub, snapshots
from agenthub.services.system.health import (
    HEALTHY,
    NOT_CONFIGURED,
    UNHEALTHY,
    check_components,
    host_utilization,
    overall,
)

router = SurfaceRouter(prefix="/api/v1", tags=["hub"])


async def _counts(runtime: Runtime) -> tuple[int, int, int, str | None] | None:
    try:
        async with events.unit_of_work(runtime.db, runtime.bus) as session:
            machines, projects, nodes = await hub.counts(session)
            last = await snapshots.latest_ready(session)
            return machines, projects, nodes, str(last.id) if last else None
    except Exception:  # the database is down: health says so, it does not fail
        return None


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    """Overall status and per-service status; 503 when a service the hub needs is down.

    ``proxmox`` is the node runtime: healthy while at least one node is ready to run work."""
    components, utilization = await asyncio.gather(
        check_components(runtime),
        asyncio.to_thread(host_utilization, str(runtime.settings.data_dir)),
    )
    counted = await _counts(runtime) if components["database"].status == HEALTHY else None
    machines, _, ready_nodes, last_checkpoint = counted or (0, 0, 0, None)
    status = overall(components)
    if counted is None:
        runtime_status = UNHEALTHY if components["database"].status != HEALTHY else NOT_CONFIGURED
    else:
        runtime_status = HEALTHY if ready_nodes else "degraded"
    body: dict[str, Any] = {
        "status": status,
        "services": {
            "hub": HEALTHY,
            "api": HEALTHY,
            "database": components["database"].status,
            "redis": components["redis"].status,
            "proxmox": runtime_status,
        },
        "active_machines": machines,
        "ready_nodes": ready_nodes,
        "resource_utilization": vars(utilization),
        "last_checkpoint": last_checkpoint,
        "timestamp": isoformat_z(utcnow()),
    }
    return JSONResponse(body, status_code=503 if status == UNHEALTHY else 200)


@router.get("/hub/status")
async def hub_status(
    request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """The hub's identity, uptime, load and the last hour of API traffic (of this replica)."""
    components, utilization = await asyncio.gather(
        check_components(runtime),
        asyncio.to_thread(host_utilization, str(runtime.settings.data_dir)),
    )
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        hub_uuid = await hub.hub_uuid(session)
        machines, projects, ready_nodes = await hub.counts(session)
        last = await snapshots.latest_ready(session)
    metrics: HttpMetrics = request.app.state.metrics
    stats = metrics.recent.last_hour()
    return {
        "hub_uuid": hub_uuid,
        "status": overall(components),
        "uptime_hours": round((time.time() - runtime.started_at) / 3600, 4),
        "version": __version__,
        "last_checkpoint": str(last.id) if last else None,
        "active_machines": machines,
        "active_projects": projects,
        "ready_nodes": ready_nodes,
        "resource_utilization": vars(utilization),
        "api_stats": {
            "requests_per_hour": stats.requests,
            "average_response_time_ms": stats.average_ms,
            "error_rate_percent": stats.error_rate_percent,
        },
    }


class HubCheckpointRequest(BaseModel):
    type: str = Field("manual", max_length=32)
    reason: str = Field("", max_length=255)
    description: str = Field("", max_length=10_000)


@router.post("/hub/checkpoint", status_code=201)
async def hub_checkpoint(
    admin: AdminDep, runtime: RuntimeDep, body: HubCheckpointRequest | None = None
) -> JSONResponse:
    """Snapshot the hub's database and the list of blobs it references (admins)."""
    body = body or HubCheckpointRequest()
    taken = await snapshots.take(
        runtime.db,
        runtime.bus,
        runtime.settings,
        runtime.blobs,
        type_=body.type,
        reason=body.reason,
        description=body.description,
    )
    payload = {
        "checkpoint_uuid": str(taken.id),
        "created_at": isoformat_z(taken.created_at),
        "estimated_completion": isoformat_z(taken.completed_at or taken.created_at),
        "status": taken.status,
        "database_format": taken.database_format,
        "size_bytes": taken.size_bytes,
        "blob_count": taken.blob_count,
        "error": taken.error,
    }
    if taken.error is not None:
        # The hub could not read its own database or write its blob store.
        raise Unavailable(f"The hub checkpoint failed: {taken.error}", details=payload)
    return JSONResponse(payload, status_code=201)
