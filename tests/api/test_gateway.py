"""The Gateway surface (/api/v1/machine): every endpoint and every error row of its document,
TTL expiry and re-registration, token binding, against a hub on the run's backend."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.gateway_support import TTL_S, Machine, keepalive, mint, mint_cli, new_id, register
from tests.support import TEST_SECRET, Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def gw(backend_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("gateway")
    env = backend.env(
        tmp / "data",
        machine_keepalive_ttl_s=str(TTL_S),
        node_reaper_interval_s="0.3",
        node_health_sample_interval_s="0",
        node_health_history="3",
        machine_token_cache_s="0.5",
        pools="gpu,cpu",
        # A tiny Redis pool (PostgreSQL run): bursts must wait for a connection, not fail.
        redis_max_connections="2",
    )
    hub = HubProcess(env, tmp / "hub.log")
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def gw_admin_key(gw: HubProcess) -> str:
    out = run_cli(gw.env, "admin", "create-key", "--name", "gw-admin", "--json")
    return str(json.loads(out.stdout)["key"])


@pytest.fixture
async def c(gw: HubProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        yield client


async def test_register_keepalive_list_flow(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint_cli(gw, "gpu")
    assert len(m.machine_id) == 8
    r = await register(c, m, gpu_count="2", gpu_type="A100")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "config": None,
        "machine_state": {
            "machine_id": m.machine_id,
            "status": "registered",
            "pool_name": "gpu",
            "ttl_seconds": TTL_S,
        },
    }
    # Registered but not ready: not listed yet.
    listed = (await c.get("/api/v1/machine/list", headers=m.headers)).json()
    assert m.machine_id not in [x["state"]["machine_id"] for x in listed]

    before = int(time.time())
    r = await keepalive(c, m, metrics={"cpu_utilization_pct": 15.5, "extra_field": "ignored"})
    assert r.status_code == 200, r.text
    state = r.json()["machine_state"]
    assert r.json()["status"] == "ok"
    assert state["status"] == "ready"
    assert state["machine_id"] == m.machine_id
    assert state["ttl_seconds"] == TTL_S
    assert state["agent_version"] == "0.1.0-python"
    assert state["last_worker_seen"] == ""
    assert isinstance(state["last_keepalive"], str)
    assert int(state["last_keepalive"]) >= before - 1

    listed = (await c.get("/api/v1/machine/list", headers=m.headers)).json()
    mine = [x for x in listed if x["state"]["machine_id"] == m.machine_id]
    assert len(mine) == 1
    assert mine[0]["state"] == {
        "machine_id": m.machine_id,
        "pool_name": "gpu",
        "status": "ready",
        "hostname": "worker-1",
        "provider_name": "generic",
        "cpu": 8000,
        "memory": 16384,
        "gpu_count": 2,
        "agent_version": "0.1.0-python",
    }
    assert mine[0]["metrics"] == {"cpu_utilization_pct": 15.5}


async def test_config_names_the_hub_and_never_a_secret(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint(gw, gw_admin_key)
    r = await c.get("/api/v1/machine/config", headers=m.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["config"]["gateway"]["http_port"] == gw.port
    assert body["machine"] == {
        "machine_id": m.machine_id,
        "pool_name": "default",
        "token_type": "machine",
    }
    assert body["keepalive"]["ttl_seconds"] == TTL_S
    text = r.text.lower()
    for secret in (TEST_SECRET.lower(), "postgresql", "redis://", "sqlite", "password"):
        assert secret not in text
    assert (await c.get("/api/v1/machine/config")).status_code == 403


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cpu": "8"}, "Invalid machine cpu value"),
        ({"cpu": "8 cores"}, "Invalid machine cpu value"),
        ({"cpu": "0m"}, "Invalid machine cpu value"),
        ({"memory": "16GB"}, "Invalid machine memory value"),
        ({"memory": "lots"}, "Invalid machine memory value"),
        ({"gpu_count": "one"}, "Invalid gpu count"),
        ({"gpu_count": "-1"}, "Invalid gpu count"),
    ],
)
async def test_register_rejects_bad_resources(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str, fields: dict[str, str], message: str
) -> None:
    m = mint(gw, gw_admin_key)
    r = await register(c, m, **fields)
    assert r.status_code == 400
    assert r.json()["error"] == message


async def test_register_payload_errors(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint(gw, gw_admin_key)
    r = await c.post(
        "/api/v1/machine/register",
        content=b'{"machine_id": ',
        headers={**m.headers, "Content-Type": "application/json"},
    )
    assert (r.status_code, r.json()["error"]) == (400, "Invalid payload")
    r = await c.post(
        "/api/v1/machine/register",
        json={"token": m.token, "machine_id": m.machine_id},
        headers=m.headers,
    )
    assert (r.status_code, r.json()["error"]) == (400, "Invalid payload")
    r = await register(c, m, machine_id="not-hex!")
    assert r.status_code == 400
    assert r.json()["error"].startswith("Invalid payload")


async def test_register_unknown_pool_is_400(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint(gw, gw_admin_key)
    r = await register(c, m, pool_name="no-such-pool")
    assert (r.status_code, r.json()["error"]) == (400, "Invalid pool name")


async def test_token_errors_are_403_invalid_token(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint(gw, gw_admin_key)
    body = {"machine_id": m.machine_id, "pool_name": "default"}
    for headers in ({}, bearer("ahm_not-a-real-token"), bearer("garbage"), {"Authorization": "X"}):
        for method, path, payload in (
            ("POST", "/api/v1/machine/register", None),
            ("POST", "/api/v1/machine/keepalive", body),
            ("GET", "/api/v1/machine/list", None),
            ("GET", "/api/v1/machine/config", None),
        ):
            r = await c.request(method, path, json=payload, headers=headers)
            assert r.status_code == 403, (path, headers, r.text)
            assert r.json() == {"error": "Invalid token", "code": "invalid_token"}


async def test_token_of_another_pool_or_machine_is_refused(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    gpu = mint(gw, gw_admin_key, "gpu")
    # A gpu-pool token registering into the default pool.
    r = await register(c, gpu, pool_name="default")
    assert (r.status_code, r.json()["code"]) == (403, "invalid_token")
    # A token bound to one machine id, used for another.
    bound = mint(gw, gw_admin_key, "default", machine_id=new_id())
    r = await register(c, bound, machine_id=new_id())
    assert (r.status_code, r.json()["code"]) == (403, "invalid_token")
    # The body's token must be the bearer token.
    other = mint(gw, gw_admin_key)
    r = await c.post(
        "/api/v1/machine/register",
        json={**_body(other), "token": bound.token},
        headers=other.headers,
    )
    assert r.status_code == 403
    # An admin API key is not a machine token.
    assert (
        await register(c, Machine(new_id(), "ah_whatever", "default", "machine"))
    ).status_code == 403


def _body(m: Machine) -> dict[str, str]:
    from tests.api.gateway_support import registration

    return registration(m)


async def test_unbound_machine_token_binds_to_its_first_machine(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint(gw, gw_admin_key)  # suggested id, not bound
    chosen = new_id()
    assert (await register(c, m, machine_id=chosen)).status_code == 200
    # Now bound: another machine id with the same token is refused, the chosen one re-registers.
    assert (await register(c, m, machine_id=new_id())).status_code == 403
    assert (await register(c, m, machine_id=chosen)).status_code == 200
    # The suggestion's pending record is gone; the chosen machine is there.
    nodes = (await c.get("/api/nodes", headers=bearer(gw_admin_key))).json()["data"]["nodes"]
    ids = {n["id"] for n in nodes}
    assert chosen in ids
    assert m.machine_id not in ids


async def test_worker_token_registers_many_machines(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    worker = mint(gw, gw_admin_key, "cpu", token_type="worker")
    other = mint(gw, gw_admin_key, "cpu", token_type="worker")
    assert worker.machine_id is None
    ids = [new_id() for _ in range(3)]
    for machine_id in ids:
        assert (await register(c, worker, machine_id=machine_id)).status_code == 200
        assert (await keepalive(c, worker, machine_id=machine_id)).status_code == 200
    listed = (await c.get("/api/v1/machine/list", headers=worker.headers)).json()
    assert set(ids) <= {x["state"]["machine_id"] for x in listed}
    # A machine kept alive by this token cannot be kept alive by another token of the pool.
    r = await keepalive(c, other, machine_id=ids[0])
    assert (r.status_code, r.json()["code"]) == (403, "invalid_token")


async def test_keepalive_errors(gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str) -> None:
    m = mint(gw, gw_admin_key)
    for body in ({"pool_name": "default"}, {"machine_id": m.machine_id}, {}):
        r = await c.post("/api/v1/machine/keepalive", json=body, headers=m.headers)
        assert r.status_code == 400
        assert r.json()["error"] == "machine_id and pool_name are required"
    r = await c.post(
        "/api/v1/machine/keepalive",
        content=b"{nope",
        headers={**m.headers, "Content-Type": "application/json"},
    )
    assert (r.status_code, r.json()["error"]) == (400, "Invalid payload")
    # Pending (never registered).
    r = await keepalive(c, m)
    assert r.status_code == 404
    assert r.json() == {
        "error": "Machine state expired or never registered",
        "code": "machine_not_found",
    }


async def test_ttl_expiry_loses_the_machine_and_reregistration_works(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint(gw, gw_admin_key)
    assert (await register(c, m)).status_code == 200
    assert (await keepalive(c, m)).status_code == 200
    # Keepalives inside the TTL keep it alive past the first TTL.
    for _ in range(3):
        await asyncio.sleep(TTL_S / 2)
        assert (await keepalive(c, m)).status_code == 200
    await asyncio.sleep(TTL_S + 1.0)
    r = await keepalive(c, m)
    assert (r.status_code, r.json()["code"]) == (404, "machine_not_found")
    listed = (await c.get("/api/v1/machine/list", headers=m.headers)).json()
    assert m.machine_id not in {x["state"]["machine_id"] for x in listed}
    admin = bearer(gw_admin_key)
    node = (await c.get(f"/api/nodes/{m.machine_id}", headers=admin)).json()["data"]
    assert node["status"] == "lost"
    assert node["lost_at"] is not None
    found = (await c.get("/api/events", params={"types": "node.left"}, headers=admin)).json()
    left = [e for e in found["data"]["events"] if e["data"]["node_id"] == m.machine_id]
    assert len(left) == 1
    assert left[0]["data"]["status"] == "lost"

    assert (await register(c, m)).json()["machine_state"]["status"] == "registered"
    assert (await keepalive(c, m)).json()["machine_state"]["status"] == "ready"
    node = (await c.get(f"/api/nodes/{m.machine_id}", headers=admin)).json()["data"]
    assert node["status"] == "ready"


async def test_list_filters_by_pool_and_provider(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    a = mint(gw, gw_admin_key, "gpu", token_type="worker")
    x, y = new_id(), new_id()
    await register(c, a, machine_id=x, provider_name="aws")
    await register(c, a, machine_id=y, provider_name="gcp")
    await keepalive(c, a, machine_id=x)
    await keepalive(c, a, machine_id=y)
    admin = bearer(gw_admin_key)
    aws = (await c.get("/api/v1/machine/list?provider_name=aws", headers=admin)).json()
    assert x in {m["state"]["machine_id"] for m in aws}
    assert y not in {m["state"]["machine_id"] for m in aws}
    cpu = (await c.get("/api/v1/machine/list?pool_name=cpu", headers=admin)).json()
    assert not {x, y} & {m["state"]["machine_id"] for m in cpu}
    # A machine token sees its own pool only.
    d = mint(gw, gw_admin_key, "default")
    seen = (await c.get("/api/v1/machine/list", headers=d.headers)).json()
    assert all(m["state"]["pool_name"] == "default" for m in seen)
    assert (await c.get("/api/v1/machine/list?pool_name=gpu", headers=d.headers)).json() == []


async def test_gpu_counts_by_type(gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str) -> None:
    w = mint(gw, gw_admin_key, "gpu", token_type="worker")
    for gpus, kind in (("4", "H200"), ("2", "H200"), ("1", "L4")):
        machine_id = new_id()
        await register(c, w, machine_id=machine_id, gpu_count=gpus, gpu_type=kind)
        await keepalive(c, w, machine_id=machine_id)
    r = await c.get("/api/v1/machine/ws-1/gpus", headers=bearer(gw_admin_key))
    assert r.status_code == 200
    counts = r.json()
    assert counts["H200"] == 6
    assert counts["L4"] == 1
    # Machine tokens and other workspaces' credentials are refused.
    assert (await c.get("/api/v1/machine/ws-1/gpus", headers=w.headers)).status_code == 403
    member = (
        await c.post(
            "/api/auth/keys",
            json={"name": "member", "role": "member"},
            headers=bearer(gw_admin_key),
        )
    ).json()["data"]["key"]
    assert (await c.get("/api/v1/machine/ws-1/gpus", headers=bearer(member))).status_code == 403
    assert (await c.get("/api/v1/machine/ws-1/gpus")).status_code == 403


async def test_machine_tokens_cannot_call_other_surfaces(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    m = mint(gw, gw_admin_key)
    for path in ("/api/nodes", "/api/auth/keys", "/api/events", "/api/machine-tokens"):
        r = await c.get(path, headers=m.headers)
        assert r.status_code == 403, path
        assert r.json()["success"] is False


async def test_revoked_token_stops_working(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    admin = bearer(gw_admin_key)
    r = await c.post(
        "/api/machine-tokens", json={"pool_name": "default", "token_type": "worker"}, headers=admin
    )
    assert r.status_code == 201, r.text
    issued = r.json()["data"]
    assert issued["token"].startswith("ahm_")
    m = Machine(new_id(), issued["token"], "default", "worker")
    assert (await register(c, m)).status_code == 200
    assert (await keepalive(c, m)).status_code == 200
    tokens = (await c.get("/api/machine-tokens", headers=admin)).json()["data"]
    assert issued["token_id"] in {t["id"] for t in tokens}
    assert all("token" not in t and "token_hash" not in t for t in tokens)
    r = await c.delete(f"/api/machine-tokens/{issued['token_id']}", headers=admin)
    assert r.status_code == 200
    assert r.json()["data"]["revoked_at"] is not None
    await asyncio.sleep(0.6)  # the token cache of this hub (machine_token_cache_s=0.5)
    assert (await keepalive(c, m)).status_code == 403
    assert (await register(c, m)).status_code == 403


async def test_token_route_is_admin_only_and_validates(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    admin = bearer(gw_admin_key)
    member = (
        await c.post("/api/auth/keys", json={"name": "m2", "role": "member"}, headers=admin)
    ).json()["data"]["key"]
    r = await c.post("/api/machine-tokens", json={"pool_name": "default"}, headers=bearer(member))
    assert r.status_code == 403
    r = await c.post("/api/machine-tokens", json={"pool_name": "nope"}, headers=admin)
    assert (r.status_code, r.json()["error"]["message"]) == (400, "Invalid pool name")
    r = await c.post(
        "/api/machine-tokens", json={"pool_name": "default", "token_type": "root"}, headers=admin
    )
    assert r.status_code == 400
    r = await c.post(
        "/api/machine-tokens", json={"pool_name": "default", "machine_id": "xyz"}, headers=admin
    )
    assert r.status_code == 400


async def test_pools_from_cli_and_api(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    run_cli(gw.env, "pool", "create", "edge")
    listed = json.loads(run_cli(gw.env, "pool", "list", "--json").stdout)
    assert {"default", "gpu", "cpu", "edge"} <= {p["name"] for p in listed}
    dup = run_cli(gw.env, "pool", "create", "edge", check=False)
    assert dup.returncode != 0
    assert "already exists" in dup.stderr
    m = mint_cli(gw, "edge")
    assert (await register(c, m)).status_code == 200
    admin = bearer(gw_admin_key)
    r = await c.post("/api/pools", json={"name": "Bad Name"}, headers=admin)
    assert r.status_code == 400
    r = await c.post("/api/pools", json={"name": "batch"}, headers=admin)
    assert r.status_code == 201
    pools = (await c.get("/api/pools", headers=admin)).json()["data"]
    assert "batch" in {p["name"] for p in pools}
    bad = run_cli(gw.env, "machine", "create", "--pool", "missing", check=False)
    assert bad.returncode != 0
    assert "Invalid pool name" in bad.stderr


async def test_a_burst_of_keepalives_all_succeed(
    gw: HubProcess, c: httpx.AsyncClient, gw_admin_key: str
) -> None:
    w = mint(gw, gw_admin_key, "cpu", token_type="worker")
    ids = [new_id() for _ in range(20)]
    await asyncio.gather(*(register(c, w, machine_id=i) for i in ids))
    responses = await asyncio.gather(*(keepalive(c, w, machine_id=i) for i in ids * 3))
    assert [r.status_code for r in responses] == [200] * 60
    assert {r.json()["machine_state"]["machine_id"] for r in responses} == set(ids)
