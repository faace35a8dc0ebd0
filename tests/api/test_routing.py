"""Every documented route is found, and a wrong method is a 405, with the surface routers'
quick rejection of paths none of their routes can match (``api/routing.py``)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from agenthub.api.routing import SurfaceRouter
from tests.support import HubProcess

NO_ROUTE = "No route for"


def concrete(path: str) -> str:
    """A path of the template with every parameter filled (ids are integers on some routes)."""
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_documented_route_is_found(client: httpx.AsyncClient) -> None:
    spec: dict[str, Any] = (await client.get("/api/openapi.json")).json()
    tried = 0
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as anonymous:
        for template, operations in spec["paths"].items():
            for method in operations:
                r = await anonymous.request(method.upper(), concrete(template))
                # Anything but "no such route": mostly 401 (no credentials), or 4xx of its own.
                assert NO_ROUTE not in r.text, (method, template, r.status_code, r.text)
                assert r.status_code not in (405, 500), (method, template, r.text)
                tried += 1
    assert tried > 80


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v1/message/inbox"),  # collab
        ("PUT", "/api/v1/machine/register"),  # gateway
        ("DELETE", "/api/health"),  # cluster
    ],
)
async def test_a_known_path_with_another_method_is_a_405(
    hub: HubProcess, method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as anonymous:
        r = await anonymous.request(method, path)
    assert r.status_code == 405, r.text


async def test_an_unknown_path_is_a_404_in_its_surfaces_format(hub: HubProcess) -> None:
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as anonymous:
        r = await anonymous.get("/api/v1/message/a/b/c")
    assert r.status_code == 404
    assert NO_ROUTE in r.text


def test_prefixes_follow_routes_added_later() -> None:
    router = SurfaceRouter(prefix="/api/v9")

    @router.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    scope = {"type": "http", "path": "/api/v9/others", "root_path": "", "method": "GET"}
    assert router.matches(scope)[0].name == "NONE"
    assert router._prefixes == ("/api/v9/things/",)

    @router.get("/others")
    async def others() -> dict[str, bool]:
        return {"ok": True}

    router.matches(scope)
    assert router._prefixes == ("/api/v9/others", "/api/v9/things/")
