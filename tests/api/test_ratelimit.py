"""Rate limits are exact under concurrency and shared by every replica on the same backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db
LIMIT = 20


def wait_for_fresh_minute(needed_s: float = 20.0) -> None:
    """Fixed windows: start a test early in a minute so it does not straddle two windows."""
    into = time.time() % 60
    if into > 60 - needed_s:
        time.sleep(60 - into + 0.2)


@pytest.fixture(scope="module")
def limited(
    backend_factory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HubProcess, HubProcess, str]]:  # type: ignore[no-untyped-def]
    """Two replicas on one fresh backend, with a limit of 20 requests per minute."""
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("limited")
    env = backend.env(tmp / "data", rate_limit_per_minute=str(LIMIT))
    key = run_cli(env, "admin", "create-key", "--name", "rl", "--json").stdout
    import json

    a = HubProcess(env, tmp / "a.log")
    b = HubProcess(env, tmp / "b.log")
    try:
        yield a, b, json.loads(key)["key"]
    finally:
        a.stop()
        b.stop()


async def test_exact_limit_under_concurrency(limited: tuple[HubProcess, HubProcess, str]) -> None:
    a, _b, _key = limited
    async with httpx.AsyncClient(base_url=a.url) as admin_client:
        key = (
            await admin_client.post("/api/auth/keys", json={"name": "burst"}, headers=bearer(_key))
        ).json()["data"]["key"]
    wait_for_fresh_minute()
    async with httpx.AsyncClient(base_url=a.url, headers=bearer(key), timeout=30) as c:
        responses = await asyncio.gather(*(c.get("/api/auth/me") for _ in range(LIMIT + 10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == 10
    for r in responses:
        assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert int(r.headers["X-RateLimit-Reset"]) > time.time()
    remaining = sorted(
        int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 200
    )
    assert remaining == list(range(LIMIT))
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


async def test_limit_is_shared_across_replicas_and_per_principal(
    limited: tuple[HubProcess, HubProcess, str],
) -> None:
    a, b, admin_key = limited
    async with httpx.AsyncClient(base_url=a.url, headers=bearer(admin_key)) as admin_client:
        keys = [
            (await admin_client.post("/api/auth/keys", json={"name": f"r{i}"})).json()["data"][
                "key"
            ]
            for i in range(2)
        ]
    wait_for_fresh_minute()
    async with httpx.AsyncClient(timeout=30) as c:
        first = await asyncio.gather(
            *(
                c.get(f"{hub.url}/api/auth/me", headers=bearer(keys[0]))
                for hub in (a, b)
                for _ in range(LIMIT // 2)
            )
        )
        assert all(r.status_code == 200 for r in first)
        # The window is full on both replicas for this key...
        for hub in (a, b):
            r = await c.get(f"{hub.url}/api/auth/me", headers=bearer(keys[0]))
            assert r.status_code == 429
        # ...and untouched for another principal.
        other = await c.get(f"{b.url}/api/auth/me", headers=bearer(keys[1]))
        assert other.status_code == 200
        assert other.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)


async def test_429_in_every_surfaces_format(limited: tuple[HubProcess, HubProcess, str]) -> None:
    a, _b, admin_key = limited
    async with httpx.AsyncClient(base_url=a.url, headers=bearer(admin_key)) as admin_client:
        key = (await admin_client.post("/api/auth/keys", json={"name": "fmt"})).json()["data"][
            "key"
        ]
    wait_for_fresh_minute()
    async with httpx.AsyncClient(base_url=a.url, headers=bearer(key), timeout=30) as c:
        for _ in range(LIMIT):
            assert (await c.get("/api/auth/me")).status_code == 200
        hub_body = (await c.get("/api/v1/health")).json()
        assert hub_body["success"] is False
        assert hub_body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert hub_body["error"]["request_id"]
        collab = await c.get("/api/v1/rate-limit/status")
        assert collab.json()["code"] == "RATE_LIMIT_EXCEEDED"
        assert collab.json()["retry_after"] >= 1
        gateway = await c.get("/api/v1/machine/list")
        assert gateway.json() == {"error": "Rate limit exceeded.", "code": "rate_limit_exceeded"}
        orchestration = await c.get("/api/v1/tasks")
        assert orchestration.json() == {"detail": "Rate limit exceeded."}
        for r in (collab, gateway, orchestration):
            assert r.status_code == 429
            assert "Retry-After" in r.headers


async def test_anonymous_callers_are_limited_by_ip(
    limited: tuple[HubProcess, HubProcess, str],
) -> None:
    _a, b, _key = limited
    wait_for_fresh_minute()
    async with httpx.AsyncClient(base_url=b.url, timeout=30) as c:
        responses = [await c.get("/api/v1/health") for _ in range(LIMIT + 1)]
    # Readiness probes already spent part of this IP's budget, so look at the sequence: each
    # admitted request leaves one fewer, and the first refusal follows the one that left 0.
    admitted = [int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 200]
    assert admitted == list(range(admitted[0], admitted[0] - len(admitted), -1))
    first_refusal = next(i for i, r in enumerate(responses) if r.status_code == 429)
    assert responses[first_refusal - 1].headers["X-RateLimit-Remaining"] == "0"
    assert all(r.status_code == 429 for r in responses[first_refusal:])
