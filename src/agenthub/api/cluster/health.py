"""Cluster surface: system health and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response

from agenthub.api.deps import RuntimeDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.services.nodes import views as node_views
from agenthub.services.system.health import UNHEALTHY, check_components, overall

router = SurfaceRouter(prefix="/api", tags=["cluster"])


@router.get("/health")
async def health(runtime: RuntimeDep) -> JSONResponse:
    """Status of the hub's components, probed now; 503 when one of them is down."""
    components = await check_components(runtime)
    status = overall(components)
    report: dict[str, Any] = {
        name: {k: v for k, v in vars(c).items() if v is not None} for name, c in components.items()
    }
    if status != UNHEALTHY:
        # Lost nodes degrade the cluster; they do not make the hub itself unhealthy.
        async with runtime.db.sessionmaker() as session:
            report["nodes"] = await node_views.summary(session, runtime.nodes)
    data: dict[str, Any] = {
        "status": status,
        "components": report,
        "timestamp": isoformat_z(utcnow()),
    }
    return JSONResponse(
        {"success": True, "data": data}, status_code=503 if status == UNHEALTHY else 200
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Request counts and latency histograms per route, in Prometheus text format."""
    body = request.app.state.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
