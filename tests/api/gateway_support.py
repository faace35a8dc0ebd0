"""Helpers for tests of the Gateway surface: a hub with short TTLs and machine tokens."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support import HubProcess, bearer, run_cli

TTL_S = 2


@dataclass
class Machine:
    machine_id: str
    token: str
    pool_name: str
    token_type: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


def mint_cli(hub: HubProcess, pool: str = "default", *args: str) -> Machine:
    """``agenthub machine create`` (straight into the hub's database)."""
    out = json.loads(run_cli(hub.env, "machine", "create", "--pool", pool, *args, "--json").stdout)
    return Machine(out["machine_id"], out["token"], out["pool_name"], out["token_type"])


def mint(
    hub: HubProcess,
    admin_key: str,
    pool: str = "default",
    *,
    machine_id: str | None = None,
    token_type: str = "machine",
) -> Machine:
    """The admin route that does what ``agenthub machine create`` does (faster in tests)."""
    body: dict[str, Any] = {"pool_name": pool, "token_type": token_type}
    if machine_id:
        body["machine_id"] = machine_id
    r = httpx.post(f"{hub.url}/api/machine-tokens", json=body, headers=bearer(admin_key))
    assert r.status_code == 201, r.text
    out = r.json()["data"]
    return Machine(out["machine_id"], out["token"], out["pool_name"], out["token_type"])


def new_id() -> str:
    return secrets.token_hex(4)


def registration(machine: Machine, machine_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": machine.token,
        "machine_id": machine_id or machine.machine_id,
        "hostname": "worker-1",
        "provider_name": "generic",
        "pool_name": machine.pool_name,
        "cpu": "8000m",
        "memory": "16Gi",
        "gpu_count": "0",
        "private_ip": "10.1.2.3",
    }
    body.update(fields)
    return body


async def register(
    c: httpx.AsyncClient, machine: Machine, machine_id: str | None = None, **fields: Any
) -> httpx.Response:
    return await c.post(
        "/api/v1/machine/register",
        json=registration(machine, machine_id, **fields),
        headers=machine.headers,
    )


async def keepalive(
    c: httpx.AsyncClient, machine: Machine, machine_id: str | None = None, **fields: Any
) -> httpx.Response:
    body: dict[str, Any] = {
        "machine_id": machine_id or machine.machine_id,
        "pool_name": machine.pool_name,
        "agent_version": "0.1.0-python",
        "metrics": {"cpu_utilization_pct": 15.5, "memory_utilization_pct": 42.3},
    }
    body.update(fields)
    return await c.post("/api/v1/machine/keepalive", json=body, headers=machine.headers)
