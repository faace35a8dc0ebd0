"""Which surface a path belongs to, and so which envelope its errors use.

The five surfaces share one port; their paths do not collide (spec/README.md). Errors raised
outside any route (unknown path, rate limit, bad credentials) are rendered by the surface whose
paths the request falls under.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from starlette.responses import JSONResponse

from agenthub.api.cluster import envelope as cluster
from agenthub.api.collab import envelope as collab
from agenthub.api.errors import ErrorContext
from agenthub.api.gateway import envelope as gateway
from agenthub.api.hub import envelope as hub
from agenthub.api.orchestration import envelope as orchestration
from agenthub.core.errors import AppError


class Surface(StrEnum):
    HUB = "hub"
    ORCHESTRATION = "orchestration"
    GATEWAY = "gateway"
    COLLAB = "collab"
    CLUSTER = "cluster"


# The first segment after /api/v1 names the surface; anything else under /api is Cluster.
V1_SEGMENTS: dict[str, Surface] = {
    **dict.fromkeys(
        ("machines", "projects", "checkpoints", "resources", "hub", "health", "analytics"),
        Surface.HUB,
    ),
    **dict.fromkeys(("tasks", "models", "agents", "orchestration"), Surface.ORCHESTRATION),
    "machine": Surface.GATEWAY,
    # The node agents' work protocol: the same clients as the Gateway, the same envelope.
    "node": Surface.GATEWAY,
    **dict.fromkeys(
        ("auth", "ai", "session", "message", "collaboration", "rate-limit"), Surface.COLLAB
    ),
}

RENDERERS: dict[Surface, Callable[[AppError, ErrorContext], JSONResponse]] = {
    Surface.HUB: hub.render_error,
    Surface.ORCHESTRATION: orchestration.render_error,
    Surface.GATEWAY: gateway.render_error,
    Surface.COLLAB: collab.render_error,
    Surface.CLUSTER: cluster.render_error,
}


def surface_for_path(path: str) -> Surface:
    if path == "/ws" or path.startswith("/ws/"):
        return Surface.ORCHESTRATION
    if path.startswith("/api/v1/") or path == "/api/v1":
        segment = path[len("/api/v1/") :].split("/", 1)[0]
        return V1_SEGMENTS.get(segment, Surface.HUB)
    return Surface.CLUSTER


def render_error(path: str, err: AppError, ctx: ErrorContext) -> JSONResponse:
    return RENDERERS[surface_for_path(path)](err, ctx)
