"""The surfaces over HTTP: envelopes, request ids, health, metrics, OpenAPI, internal errors."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.support import HubProcess

pytestmark = pytest.mark.db


async def test_unknown_paths_use_each_surfaces_format(client: httpx.AsyncClient) -> None:
    hub = (await client.get("/api/v1/hub/no-such-thing")).json()
    assert hub["success"] is False
    assert hub["error"]["code"] == "NOT_FOUND"
    assert set(hub["error"]) == {"code", "message", "details", "request_id", "timestamp"}
    assert (await client.get("/api/v1/tasks/1")).json() == {
        "detail": "No route for GET /api/v1/tasks/1."
    }
    gateway = await client.post("/api/v1/machine/unregister")
    assert gateway.status_code == 404
    assert gateway.json()["code"] == "not_found"
    collab = (await client.get("/api/v1/session/1/no-such-thing")).json()
    assert collab["code"] == "RESOURCE_NOT_FOUND"
    assert "details" in collab
    cluster = await client.get("/api/no-such-resource")
    assert cluster.status_code == 404
    assert cluster.json()["error"]["code"] == "resource_not_found"
    assert (await client.delete("/api/v1/health")).json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_request_ids(client: httpx.AsyncClient) -> None:
    generated = await client.get("/api/v1/health")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    echoed = await client.get("/api/nodes", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["X-Request-ID"] == "trace-123"
    hub_error = await client.get("/api/v1/nope", headers={"X-Request-ID": "trace-456"})
    assert hub_error.json()["error"]["request_id"] == "trace-456"
    unsafe = await client.get("/api/v1/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["X-Request-ID"] != "bad id\twith spaces"


async def test_health_reports_real_components(client: httpx.AsyncClient, hub: HubProcess) -> None:
    hub_health = (await client.get("/api/v1/health")).json()
    assert hub_health["status"] == "healthy"
    services = hub_health["services"]
    assert services["database"] == "healthy"
    assert services["hub"] == "healthy"
    expected_redis = "healthy" if "AGENTHUB_REDIS_URL" in hub.env else "not_configured"
    assert services["redis"] == expected_redis
    assert set(hub_health) >= {
        "status",
        "services",
        "active_machines",
        "resource_utilization",
        "last_checkpoint",
    }
    assert 0 <= hub_health["resource_utilization"]["memory_percent"] <= 100

    cluster = (await client.get("/api/health")).json()
    assert cluster["success"] is True
    components = cluster["data"]["components"]
    assert components["database"]["status"] == "healthy"
    assert components["database"]["latency_ms"] >= 0
    assert components["redis"]["status"] == expected_redis


async def test_metrics_count_requests_per_route(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.get("/api/health")
    await client.get("/api/no-such-thing")
    text = (await client.get("/api/metrics")).text
    counts = re.search(
        r'agenthub_http_requests_total\{method="GET",route="/api/health",status="200"\} (\d+)', text
    )
    assert counts
    assert float(counts.group(1)) >= 3
    assert 'route="<unmatched>",status="404"' in text
    assert re.search(
        r'agenthub_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="/api/health"\}',
        text,
    )


async def test_openapi_covers_every_surface_with_tags(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/openapi.json")).json()
    assert {t["name"] for t in spec["tags"]} == {
        "hub",
        "orchestration",
        "gateway",
        "node",
        "collab",
        "cluster",
    }
    assert "/api/v1/health" in spec["paths"]
    assert "/api/auth/login" in spec["paths"]
    assert spec["paths"]["/api/v1/health"]["get"]["tags"] == ["hub"]
    docs = await client.get("/api/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


CONTROLLERS = {"housekeeping", "node-reaper", "scheduler", "machine-controller", "experiments"}


async def test_unhandled_error_is_a_500_in_the_surface_format(hub: HubProcess) -> None:
    """Through the real middleware and app, in process: a route that fails unexpectedly."""
    import os

    from fastapi import APIRouter

    from agenthub.api.app import create_app
    from agenthub.core.settings import Settings

    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in hub.env.items() if k.startswith("AGENTHUB_")})
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    app = create_app(settings)
    broken = APIRouter()

    @broken.get("/api/v1/hub/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    @broken.get("/api/boom")
    async def boom_cluster() -> None:
        raise RuntimeError("kaboom")

    app.include_router(broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        hub_500 = await c.get("/api/v1/hub/boom")
        cluster_500 = await c.get("/api/boom")
        controllers = {t for t in asyncio.all_tasks() if t.get_name() in CONTROLLERS}
    # Shutdown stops every controller: none is left holding a database or Redis connection.
    assert {t.get_name() for t in controllers} == CONTROLLERS
    assert all(t.done() for t in controllers)
    assert hub_500.status_code == 500
    assert hub_500.json()["error"]["code"] == "INTERNAL_ERROR"
    assert "kaboom" not in hub_500.text
    assert hub_500.headers["X-Request-ID"] == hub_500.json()["error"]["request_id"]
    assert cluster_500.json() == {
        "success": False,
        "error": {"code": "internal_error", "message": "Internal server error."},
    }
