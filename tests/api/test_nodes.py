"""Cluster node views: the machines of the Gateway surface, their health, labels, taints and
maintenance, on the run's backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.gateway_support import keepalive, mint, register
from tests.support import Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db
HISTORY = 3


@pytest.fixture(scope="module")
def hub_and_key(
    backend_factory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HubProcess, str]]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("nodes")
    env = backend.env(
        tmp / "data", node_health_sample_interval_s="0", node_health_history=str(HISTORY)
    )
    hub = HubProcess(env, tmp / "hub.log")
    key = json.loads(run_cli(env, "admin", "create-key", "--name", "a", "--json").stdout)["key"]
    yield hub, key
    hub.stop()


@pytest.fixture
async def c(hub_and_key: tuple[HubProcess, str]) -> AsyncIterator[httpx.AsyncClient]:
    hub, key = hub_and_key
    async with httpx.AsyncClient(base_url=hub.url, headers=bearer(key), timeout=30) as client:
        yield client


async def test_node_list_and_detail(
    hub_and_key: tuple[HubProcess, str], c: httpx.AsyncClient
) -> None:
    hub, key = hub_and_key
    m = mint(hub, key)
    await register(
        c,
        m,
        cpu="4000m",
        memory="8Gi",
        labels={"zone": "eu-1", "role": "frontend"},
        taints=[{"key": "special", "value": "true", "effect": "NoSchedule"}],
    )
    await keepalive(
        c,
        m,
        metrics={
            "cpu_utilization_pct": 25.0,
            "memory_utilization_pct": 50.0,
            "total_disk_space_bytes": 1000,
            "total_disk_free_bytes": 400,
        },
    )
    nodes = (await c.get("/api/nodes")).json()["data"]["nodes"]
    node = next(n for n in nodes if n["id"] == m.machine_id)
    assert node["status"] == "ready"
    assert node["address"] == "10.1.2.3"
    assert node["role"] == "worker"
    assert node["schedulable"] is True
    assert node["resources"]["cpu_total"] == 4.0
    assert node["resources"]["cpu_available"] == 3.0
    assert node["resources"]["memory_total"] == 8 * 1024**3
    assert node["resources"]["memory_available"] == 4 * 1024**3
    assert node["resources"]["disk_total"] == 1000
    assert node["resources"]["disk_available"] == 400
    assert node["containers"] == 0

    detail = (await c.get(f"/api/nodes/{m.machine_id}")).json()["data"]
    assert detail["labels"] == {"zone": "eu-1", "role": "frontend"}
    assert detail["taints"] == [{"key": "special", "value": "true", "effect": "NoSchedule"}]
    assert detail["containers"] == []
    assert detail["network"]["overlay_status"] == "connected"

    only_ready = (await c.get("/api/nodes", params={"status": "ready"})).json()["data"]["nodes"]
    assert all(n["status"] == "ready" for n in only_ready)
    other_pool = (await c.get("/api/nodes", params={"pool": "nope"})).json()["data"]["nodes"]
    assert other_pool == []


async def test_unknown_node_is_404(c: httpx.AsyncClient) -> None:
    for path in ("/api/nodes/deadbeef", "/api/health/node/deadbeef"):
        r = await c.get(path)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "resource_not_found"
    r = await c.post("/api/nodes/deadbeef/maintenance", json={"enable": True})
    assert r.status_code == 404


async def test_maintenance_and_drain(
    hub_and_key: tuple[HubProcess, str], c: httpx.AsyncClient
) -> None:
    hub, key = hub_and_key
    m = mint(hub, key)
    await register(c, m)
    await keepalive(c, m)
    r = await c.post(f"/api/nodes/{m.machine_id}/maintenance", json={"enable": True, "drain": True})
    assert r.status_code == 200
    assert r.json() == {
        "success": True,
        "data": {"id": m.machine_id, "message": "Node put into maintenance mode"},
    }
    node = (await c.get(f"/api/nodes/{m.machine_id}")).json()["data"]
    assert (node["maintenance"], node["draining"], node["schedulable"]) == (True, True, False)
    health = (await c.get(f"/api/health/node/{m.machine_id}")).json()["data"]
    assert health["status"] == "maintenance"
    r = await c.post(f"/api/nodes/{m.machine_id}/maintenance", json={"enable": False})
    assert r.json()["data"]["message"] == "Node taken out of maintenance mode"
    node = (await c.get(f"/api/nodes/{m.machine_id}")).json()["data"]
    assert (node["maintenance"], node["draining"], node["schedulable"]) == (False, False, True)
    events = (await c.get("/api/events", params={"types": "node.maintenance_changed"})).json()
    mine = [e for e in events["data"]["events"] if e["data"]["node_id"] == m.machine_id]
    assert [e["data"]["maintenance"] for e in mine] == [True, False]


async def test_admin_changes_labels_and_taints(
    hub_and_key: tuple[HubProcess, str], c: httpx.AsyncClient
) -> None:
    hub, key = hub_and_key
    m = mint(hub, key)
    await register(c, m, labels={"a": "1"})
    r = await c.patch(f"/api/nodes/{m.machine_id}", json={"labels": {"b": "2"}})
    assert r.status_code == 200
    assert r.json()["data"]["labels"] == {"b": "2"}
    assert r.json()["data"]["taints"] == []
    r = await c.patch(
        f"/api/nodes/{m.machine_id}",
        json={"taints": [{"key": "gpu", "value": "yes", "effect": "NoExecute"}]},
    )
    assert r.json()["data"]["labels"] == {"b": "2"}  # omitted: unchanged
    assert r.json()["data"]["taints"][0]["effect"] == "NoExecute"
    bad = await c.patch(
        f"/api/nodes/{m.machine_id}", json={"taints": [{"key": "x", "effect": "Sometimes"}]}
    )
    assert bad.status_code == 400
    assert "effect" in bad.json()["error"]["message"]
    bad = await c.patch(f"/api/nodes/{m.machine_id}", json={"labels": {"bad key!": "x"}})
    assert bad.status_code == 400
    # A re-registration that names no labels or taints keeps what the admin set.
    assert (await register(c, m)).status_code == 200
    again = (await c.get(f"/api/nodes/{m.machine_id}")).json()["data"]
    assert again["labels"] == {"b": "2"}
    assert again["taints"][0]["key"] == "gpu"
    # Registration with a bad taint is refused too.
    r = await register(c, m, taints=[{"key": "x", "value": "", "effect": "Never"}])
    assert r.status_code == 400


async def test_members_read_but_only_admins_change_nodes(
    hub_and_key: tuple[HubProcess, str], c: httpx.AsyncClient
) -> None:
    hub, key = hub_and_key
    m = mint(hub, key)
    await register(c, m)
    member = (await c.post("/api/auth/keys", json={"name": "m", "role": "member"})).json()["data"][
        "key"
    ]
    async with httpx.AsyncClient(base_url=hub.url, headers=bearer(member)) as mc:
        assert (await mc.get("/api/nodes")).status_code == 200
        assert (await mc.get(f"/api/nodes/{m.machine_id}")).status_code == 200
        r = await mc.post(f"/api/nodes/{m.machine_id}/maintenance", json={"enable": True})
        assert r.status_code == 403
        r = await mc.patch(f"/api/nodes/{m.machine_id}", json={"labels": {}})
        assert r.status_code == 403
    async with httpx.AsyncClient(base_url=hub.url) as anon:
        assert (await anon.get("/api/nodes")).status_code == 401


async def test_health_history_is_bounded(
    hub_and_key: tuple[HubProcess, str], c: httpx.AsyncClient
) -> None:
    hub, key = hub_and_key
    m = mint(hub, key)
    await register(c, m)
    for i in range(HISTORY + 3):
        r = await keepalive(
            c, m, metrics={"cpu_utilization_pct": float(i), "memory_utilization_pct": 10.0}
        )
        assert r.status_code == 200
    health = (await c.get(f"/api/health/node/{m.machine_id}", params={"limit": 100})).json()["data"]
    assert health["status"] == "healthy"
    assert health["cpu_usage"] == float(HISTORY + 2)
    assert health["network_status"] == "connected"
    history = health["health_history"]
    assert len(history) == HISTORY
    # Newest first.
    assert [h["cpu_usage"] for h in history] == [float(HISTORY + 2 - i) for i in range(HISTORY)]
    assert history[0]["timestamp"].endswith("Z")


async def test_cluster_health_counts_nodes(
    hub_and_key: tuple[HubProcess, str], c: httpx.AsyncClient
) -> None:
    hub, key = hub_and_key
    m = mint(hub, key)
    await register(c, m)
    await keepalive(c, m)
    data = (await c.get("/api/health")).json()["data"]
    nodes = data["components"]["nodes"]
    assert nodes["total"] >= 1
    assert nodes["healthy"] >= 1
    # Nothing lost on this hub (default TTL): the cluster is healthy.
    assert (nodes["status"], nodes["unhealthy"]) == ("healthy", 0)
