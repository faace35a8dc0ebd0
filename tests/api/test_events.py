"""Events: written with the change, delivered live over SSE and both WebSockets, replayable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import websockets
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support import HubProcess, bearer

pytestmark = pytest.mark.db


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse a text/event-stream into {event, id, data} dicts."""
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in current:
                yield current
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            current[field] = json.loads(value.strip()) if field == "data" else value.strip()


async def next_matching(stream: AsyncIterator[dict[str, Any]], name: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for event in stream:
            if event["data"]["data"].get("name") == name:
                return event
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), timeout=15)


async def test_sse_delivers_and_replays(
    hub: HubProcess, admin_key: str, admin: httpx.AsyncClient
) -> None:
    name = f"sse-{uuid.uuid4().hex[:6]}"
    async with (
        httpx.AsyncClient(base_url=hub.url, headers=bearer(admin_key), timeout=30) as c,
        c.stream("GET", "/api/stream/events", params={"types": "api_key.*"}) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = sse_events(stream)
        await asyncio.sleep(0.3)  # let the subscription register
        created = await admin.post("/api/auth/keys", json={"name": name})
        event = await next_matching(events, name)
    assert event["event"] == "api_key.created"
    assert event["data"]["data"]["id"] == created.json()["data"]["id"]
    assert "key" not in event["data"]["data"]
    first_id = int(event["id"])

    # Missed while disconnected: replayed on reconnect with Last-Event-ID.
    missed = f"missed-{uuid.uuid4().hex[:6]}"
    await admin.post("/api/auth/keys", json={"name": missed})
    async with (
        httpx.AsyncClient(base_url=hub.url, headers=bearer(admin_key), timeout=30) as c,
        c.stream(
            "GET",
            "/api/stream/events",
            headers={"Last-Event-ID": str(first_id)},
            params={"types": "api_key.created"},
        ) as stream,
    ):
        replayed = await next_matching(sse_events(stream), missed)
    assert int(replayed["id"]) > first_id

    log = (
        await admin.get(
            "/api/events", params={"after_id": first_id - 1, "types": "api_key.created"}
        )
    ).json()
    assert [e["id"] for e in log["data"]["events"]][:1] == [first_id]


async def test_sse_resume_waits_for_an_event_still_in_flight(
    hub: HubProcess, admin_key: str
) -> None:
    """PostgreSQL: a later event committed before an earlier one is not replayed ahead of it,
    so the stream (and a client resuming from its ids) never skips the earlier one."""
    url = hub.env.get("AGENTHUB_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        pytest.skip("SQLite commits one writer at a time, in id order")
    kind = f"test.horizon{uuid.uuid4().hex[:6]}"
    insert = sa.text(
        "INSERT INTO events (type, data, created_at) VALUES (:type, '{}', now()) RETURNING id"
    )
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            start = (await conn.execute(insert, {"type": f"{kind}.start"})).scalar_one()
        async with engine.connect() as slow:
            await slow.begin()
            earlier = (await slow.execute(insert, {"type": f"{kind}.earlier"})).scalar_one()
            async with engine.begin() as conn:
                later = (await conn.execute(insert, {"type": f"{kind}.later"})).scalar_one()
            async with (
                httpx.AsyncClient(base_url=hub.url, headers=bearer(admin_key), timeout=30) as c,
                c.stream(
                    "GET",
                    "/api/stream/events",
                    headers={"Last-Event-ID": str(start)},
                    params={"types": f"{kind}.*"},
                ) as stream,
            ):
                seen: list[int] = []

                async def read() -> None:
                    async for event in sse_events(stream):
                        seen.append(int(event["id"]))

                reader = asyncio.create_task(read())
                await asyncio.sleep(1.0)
                assert seen == []  # "later" is committed, but "earlier" may still commit
                await slow.commit()
                for _ in range(100):
                    if len(seen) == 2:
                        break
                    await asyncio.sleep(0.05)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        assert seen == [earlier, later]
    finally:
        await engine.dispose()


async def test_scoped_member_sees_only_its_project(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    project = str(uuid.uuid4())
    member_key = (
        await admin.post("/api/auth/keys", json={"name": "scoped", "project_id": project})
    ).json()["data"]["key"]
    async with (
        httpx.AsyncClient(base_url=hub.url, headers=bearer(member_key), timeout=30) as c,
        c.stream("GET", "/api/stream/events") as stream,
    ):
        events = sse_events(stream)
        await asyncio.sleep(0.3)
        await admin.post("/api/auth/keys", json={"name": "not-yours"})
        mine = f"yours-{uuid.uuid4().hex[:6]}"
        await admin.post("/api/auth/keys", json={"name": mine, "project_id": project})
        first = await asyncio.wait_for(events.__anext__(), timeout=15)
    # The unscoped event came first on the bus but was not delivered.
    assert first["data"]["data"]["name"] == mine
    assert first["data"]["project_id"] == project
    async with httpx.AsyncClient(base_url=hub.url, headers=bearer(member_key)) as c2:
        listed = (await c2.get("/api/events")).json()["data"]["events"]
    assert listed
    assert all(e["project_id"] == project for e in listed)


async def test_stream_requires_auth_and_valid_resume_id(hub: HubProcess, admin_key: str) -> None:
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as c:
        assert (await c.get("/api/stream/events")).status_code == 401
        bad = await c.get(
            "/api/stream/events", headers={**bearer(admin_key), "Last-Event-ID": "abc"}
        )
        assert bad.status_code == 400


async def test_cluster_websocket_frames(
    hub: HubProcess, admin_key: str, admin: httpx.AsyncClient
) -> None:
    ws_url = hub.url.replace("http", "ws") + f"/api/ws?token={admin_key}&types=api_key.created"
    name = f"ws-{uuid.uuid4().hex[:6]}"
    async with websockets.connect(ws_url) as ws:
        await asyncio.sleep(0.3)
        await admin.post("/api/auth/keys", json={"name": name})
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
            if frame["data"].get("name") == name:
                break
    assert frame["type"] == "api_key_created"
    assert frame["data"]["timestamp"].endswith("Z")
    assert frame["data"]["event_id"] > 0


async def test_websockets_refuse_anonymous(hub: HubProcess) -> None:
    base = hub.url.replace("http", "ws")
    for path in ("/ws", "/api/ws", "/ws?token=ah_wrong"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as exc:
            async with websockets.connect(base + path):
                pass
        assert exc.value.response.status_code == 403


async def test_orchestration_ws_protocol(hub: HubProcess, admin_key: str) -> None:
    async with websockets.connect(hub.url.replace("http", "ws") + f"/ws?token={admin_key}") as ws:

        async def recv() -> dict[str, Any]:
            return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout=10)))

        hello = await recv()
        assert hello["type"] == "connection_established"
        assert hello["data"]["client_id"]
        assert hello["data"]["server_time"].endswith("Z")

        await ws.send(json.dumps({"type": "subscribe", "data": {"channel": "system_status"}}))
        assert (await recv()) == {"type": "subscribed", "data": {"channel": "system_status"}}
        status = await recv()
        assert status["type"] == "system_status_update"
        assert status["data"]["database_status"] == "healthy"
        assert status["data"]["api_status"] == "healthy"

        await ws.send(json.dumps({"type": "subscribe", "data": {"channel": "task"}}))
        assert (await recv())["data"]["code"] == "invalid_subscription"
        await ws.send(json.dumps({"type": "subscribe", "data": {"channel": "nope"}}))
        assert (await recv())["data"]["code"] == "invalid_channel"
        await ws.send("not json")
        assert (await recv())["data"]["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "ping", "data": {}}))
        assert (await recv())["type"] == "pong"
        await ws.send(json.dumps({"type": "unsubscribe", "data": {"channel": "system_status"}}))
        assert (await recv()) == {"type": "unsubscribed", "data": {"channel": "system_status"}}


async def test_orchestration_ws_sends_periodic_pings(
    backend_factory, tmp_path_factory, admin_key: str
) -> None:  # type: ignore[no-untyped-def]
    backend = backend_factory()
    env = backend.env(tmp_path_factory.mktemp("ping"), ws_ping_interval_s="0.5")
    from tests.support import run_cli

    key = json.loads(run_cli(env, "admin", "create-key", "--name", "p", "--json").stdout)["key"]
    process = HubProcess(env, tmp_path_factory.mktemp("ping-log") / "hub.log")
    try:
        async with websockets.connect(process.url.replace("http", "ws") + f"/ws?token={key}") as ws:
            assert json.loads(await ws.recv())["type"] == "connection_established"
            await ws.send(json.dumps({"type": "subscribe", "data": {"channel": "system_status"}}))
            types = [json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] for _ in range(5)]
        assert "ping" in types
        assert types.count("system_status_update") >= 2
    finally:
        process.stop()


async def test_events_cross_replicas_through_redis(backend_factory, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    """With Redis, a client on one replica sees a change made through another."""
    backend = backend_factory()
    if backend.redis_url is None:
        pytest.skip("one replica per SQLite hub: the in-process bus does not cross processes")
    from tests.support import run_cli

    tmp = tmp_path_factory.mktemp("replicas")
    env = backend.env(tmp / "data")
    key = json.loads(run_cli(env, "admin", "create-key", "--name", "x", "--json").stdout)["key"]
    a, b = HubProcess(env, tmp / "a.log"), HubProcess(env, tmp / "b.log")
    try:
        name = f"cross-{uuid.uuid4().hex[:6]}"
        async with httpx.AsyncClient(headers=bearer(key), timeout=30) as c:
            async with c.stream("GET", f"{b.url}/api/stream/events") as stream:
                events = sse_events(stream)
                await asyncio.sleep(0.3)
                await c.post(f"{a.url}/api/auth/keys", json={"name": name})
                event = await next_matching(events, name)
            assert event["event"] == "api_key.created"
            # Logout through one replica is seen by the other (shared revocation).
            user = {"username": f"u-{uuid.uuid4().hex[:6]}", "password": "password-123"}
            await c.post(f"{a.url}/api/auth/users", json=user)
            token = (await c.post(f"{a.url}/api/auth/login", json=user)).json()["data"]["token"]
            assert (await c.get(f"{b.url}/api/auth/me", headers=bearer(token))).status_code == 200
            assert (
                await c.post(f"{a.url}/api/auth/logout", headers=bearer(token))
            ).status_code == 200
            assert (await c.get(f"{b.url}/api/auth/me", headers=bearer(token))).status_code == 401
    finally:
        a.stop()
        b.stop()
