"""A node speaking the Gateway and work protocol over HTTP, driven by the test (no agent):
for tests of the hub's side of the protocol and of the scheduler through a real hub."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx

from tests.api.gateway_support import Machine, keepalive, mint, register
from tests.support import HubProcess


class ScriptedNode:
    """Registers, keeps itself alive in the background, and polls/reports when told to."""

    def __init__(self, client: httpx.AsyncClient, machine: Machine) -> None:
        # Its own connections, as a separate machine has: a test's burst on the admin client
        # must not hold up this node's keepalives.
        self.c = httpx.AsyncClient(base_url=client.base_url, timeout=30)
        self.machine = machine
        self.id = machine.machine_id
        self._task: asyncio.Task[None] | None = None
        self._registration: dict[str, Any] = {}

    @classmethod
    async def start(
        cls,
        client: httpx.AsyncClient,
        hub: HubProcess,
        admin_key: str,
        pool: str = "default",
        *,
        cpu: str = "4000m",
        memory: str = "8Gi",
        runtimes: tuple[str, ...] = ("sandbox",),
        interval_s: float = 0.5,
        **fields: Any,
    ) -> ScriptedNode:
        machine = mint(hub, admin_key, pool)
        node = cls(client, machine)
        node._registration = {"cpu": cpu, "memory": memory, "runtimes": list(runtimes), **fields}
        await node._register()
        node._task = asyncio.create_task(node._keep_alive(interval_s))
        return node

    async def _register(self) -> None:
        r = await register(self.c, self.machine, **self._registration)
        assert r.status_code == 200, r.text
        r = await keepalive(self.c, self.machine)
        assert r.status_code == 200, r.text

    async def _keep_alive(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(httpx.HTTPError, AssertionError):
                r = await keepalive(self.c, self.machine)
                if r.status_code == 404:  # lapsed on a busy machine: back, as an agent does
                    await self._register()

    async def stop(self) -> None:
        """Stop keeping alive (the node is lost once its TTL lapses)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        await self.stop()
        await self.c.aclose()

    async def poll(
        self, running: list[tuple[str, int]] | None = None, wait_s: float = 0
    ) -> httpx.Response:
        body = {
            "machine_id": self.id,
            "runtimes": ["sandbox"],
            "running": [{"workload_id": w, "attempt": a} for w, a in running or []],
            "wait_s": wait_s,
        }
        return await self.c.post(
            "/api/v1/node/poll", json=body, headers=self.machine.headers, timeout=wait_s + 10
        )

    async def report(
        self, workload_id: str, attempt: int, status: str, **fields: Any
    ) -> httpx.Response:
        update = {
            "workload_id": workload_id,
            "attempt": attempt,
            "status": status,
            "at": time.time(),
        }
        update.update(fields)
        return await self.c.post(
            "/api/v1/node/report",
            json={"machine_id": self.id, "updates": [update]},
            headers=self.machine.headers,
        )


async def wait_for(
    client: httpx.AsyncClient, workload_id: str, statuses: set[str], within: float = 15.0
) -> dict[str, Any]:
    """Poll the workload until its status is one of ``statuses``; returns it."""
    deadline = time.monotonic() + within
    while True:
        r = await client.get(f"/api/workloads/{workload_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        if data["status"] in statuses:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"workload {workload_id} stayed {data['status']}: {data}")
        await asyncio.sleep(0.05)
