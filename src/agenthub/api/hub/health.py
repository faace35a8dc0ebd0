"""Hub surface: ``GET /api/v1/health``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from agenthub.api.deps import RuntimeDep
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.services.system.health import (
    HEALTHY,
    NOT_CONFIGURED,
    UNHEALTHY,
    check_components,
    host_utilization,
    overall,
)

router = APIRouter(prefix="/api/v1", tags=["hub"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    """Overall status and per-service status; 503 when a service the hub needs is down."""
    components, utilization = await asyncio.gather(
        check_components(runtime),
        asyncio.to_thread(host_utilization, str(runtime.settings.data_dir)),
    )
    status = overall(components)
    body: dict[str, Any] = {
        "status": status,
        "services": {
            "hub": HEALTHY,
            "api": HEALTHY,
            "database": components["database"].status,
            "redis": components["redis"].status,
            # The runtime backend (node agents) registers with the Gateway surface; until a
            # node registry exists there is none to report on.
            "proxmox": NOT_CONFIGURED,
        },
        "active_machines": 0,
        "resource_utilization": vars(utilization),
        "last_checkpoint": None,
        "timestamp": isoformat_z(utcnow()),
    }
    return JSONResponse(body, status_code=503 if status == UNHEALTHY else 200)
