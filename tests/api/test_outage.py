"""A hub whose database is unreachable says so: health 503, protected routes 503, no crash."""

from __future__ import annotations

from pathlib import Path

import httpx

from agenthub.api.app import create_app
from agenthub.core.settings import Settings
from tests.support import free_port


async def test_database_outage_is_reported_not_crashed(tmp_path: Path) -> None:
    # Nothing listens on this port: every connection attempt is refused at once.
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none",
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://hub") as c,
    ):
        hub_health = await c.get("/api/v1/health")
        assert hub_health.status_code == 503
        assert hub_health.json()["status"] == "unhealthy"
        assert hub_health.json()["services"]["database"] == "unhealthy"
        cluster = await c.get("/api/health")
        assert cluster.status_code == 503
        assert cluster.json()["data"]["components"]["database"]["error"]

        protected = await c.get("/api/auth/me", headers={"Authorization": "Bearer ah_whatever"})
        assert protected.status_code == 503
        assert protected.json()["success"] is False
        assert protected.json()["error"]["code"] == "internal_error"
        hub_protected = await c.get("/api/v1/nope", headers={"Authorization": "Bearer ah_x"})
        # No route there: a 404, not the credential outage, since no caller is needed.
        assert hub_protected.status_code == 404
