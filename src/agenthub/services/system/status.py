"""The system status pushed on the Orchestration ``/ws`` ``system_status`` channel."""

from __future__ import annotations

from typing import Any

from agenthub.core.clock import isoformat_z, utcnow
from agenthub.services.runtime import Runtime
from agenthub.services.system.health import HEALTHY, NOT_CONFIGURED, check_components


async def system_status(runtime: Runtime) -> dict[str, Any]:
    components = await check_components(runtime)
    return {
        "api_status": HEALTHY,
        "database_status": components["database"].status,
        # No model gateway or task queue is configured on this hub yet, so there is no model
        # service to report on and no task can be active or pending.
        "model_service_status": NOT_CONFIGURED,
        "active_tasks": 0,
        "pending_tasks": 0,
        "updated_at": isoformat_z(utcnow()),
    }
