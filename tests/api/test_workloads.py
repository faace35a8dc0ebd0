"""Workloads through a real hub: the Cluster routes, the scheduler, and the hub's side of the
work protocol, with nodes scripted over HTTP (real agents are in tests/agent)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.node_support import ScriptedNode, wait_for
from tests.support import Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db
TTL_S = 2


@pytest.fixture(scope="module")
def wl(backend_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("workloads")
    env = backend.env(
        tmp / "data",
        machine_keepalive_ttl_s=str(TTL_S),
        node_reaper_interval_s="0.3",
        machine_token_cache_s="0.5",
        workload_log_max_lines="50",
    )
    hub = HubProcess(env, tmp / "hub.log")
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def key(wl: HubProcess) -> str:
    out = run_cli(wl.env, "admin", "create-key", "--name", "wl-admin", "--json")
    return str(json.loads(out.stdout)["key"])


@pytest.fixture
async def c(wl: HubProcess, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=wl.url, headers=bearer(key), timeout=30) as client:
        yield client


async def new_pool(c: httpx.AsyncClient) -> str:
    name = f"p{uuid.uuid4().hex[:8]}"
    r = await c.post("/api/pools", json={"name": name})
    assert r.status_code == 201, r.text
    return name


async def submit(c: httpx.AsyncClient, pool: str, **body: object) -> dict[str, object]:
    payload = {"command": ["sh", "-c", "true"], "pool": pool, **body}
    r = await c.post("/api/workloads", json=payload)
    assert r.status_code == 201, r.text
    data: dict[str, object] = r.json()["data"]
    return data


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"command": []}, "command"),
        ({"command": ["x"], "runtime": "vm"}, "runtime must be one of sandbox, docker"),
        ({"command": ["x"], "runtime": "docker"}, "image is required"),
        ({"command": ["x"], "working_dir": "../etc"}, "working_dir"),
        ({"command": ["x"], "pool": "nope"}, "Unknown pool"),
        ({"command": ["x"], "env": {"1BAD": "x"}}, "env name"),
        ({"command": ["x"], "restart_policy": "sometimes"}, "restart_policy"),
        ({"command": ["x"], "resources": {"cpu_millicores": 0}}, "cpu_millicores"),
        ({"command": ["x"], "surprise": 1}, "surprise"),
        ({"command": ["x"], "files": {"/etc/passwd": "x"}}, "no leading '/'"),
        ({"command": ["x"], "files": {"a/../../b": "x"}}, "no '..', '.' or empty components"),
        ({"command": ["x"], "files": {"": "x"}}, "a path must be a non-empty string"),
        ({"command": ["x"], "files": {"a\u0000b": "x"}}, "contains a NUL byte"),
        ({"command": ["x"], "files": {"a": "x\u0000"}}, "only text files"),
        ({"command": ["x"], "files": {"x" * 4097: ""}}, "longer than 4096 characters"),
        ({"command": ["x"], "files": {"a": "", "a/b": ""}}, "both a file and the directory"),
        (
            {"command": ["x"], "files": {f"f{i}": "" for i in range(1001)}},
            "at most 1000 are allowed",
        ),
    ],
)
async def test_bad_workloads_are_clear_400s(
    c: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    r = await c.post("/api/workloads", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert message in error["message"]


async def test_who_may_see_and_touch_workloads(wl: HubProcess, c: httpx.AsyncClient) -> None:
    pool = await new_pool(c)
    async with httpx.AsyncClient(base_url=wl.url) as anonymous:
        assert (await anonymous.get("/api/workloads")).status_code == 401
    project_a, project_b = str(uuid.uuid4()), str(uuid.uuid4())
    keys = {}
    for project in (project_a, project_b):
        r = await c.post("/api/auth/keys", json={"name": "m", "project_id": project})
        keys[project] = r.json()["data"]["key"]
    async with (
        httpx.AsyncClient(base_url=wl.url, headers=bearer(keys[project_a])) as a,
        httpx.AsyncClient(base_url=wl.url, headers=bearer(keys[project_b])) as b,
    ):
        mine = await submit(a, pool)
        assert mine["project_id"] == project_a  # a scoped key's work is its project's
        r = await a.post(
            "/api/workloads", json={"command": ["x"], "pool": pool, "project_id": project_b}
        )
        assert r.status_code == 403
        assert (await b.get(f"/api/workloads/{mine['id']}")).status_code == 404
        assert (await b.post(f"/api/workloads/{mine['id']}/cancel")).status_code == 404
        listed = (await b.get("/api/workloads")).json()["data"]["workloads"]
        assert all(w["project_id"] == project_b for w in listed)
        assert (await a.get(f"/api/workloads/{mine['id']}")).status_code == 200
        # Host paths into containers are for admins only.
        r = await a.post(
            "/api/workloads",
            json={
                "command": ["cat", "/host/etc/shadow"],
                "runtime": "docker",
                "image": "busybox",
                "pool": pool,
                "volumes": [{"source": "/", "target": "/host"}],
            },
        )
        assert r.status_code == 403
        assert "host paths" in r.json()["error"]["message"]


async def test_cancel_queued_then_conflict(c: httpx.AsyncClient) -> None:
    pool = await new_pool(c)  # no nodes: it stays queued
    w = await submit(c, pool)
    r = await c.post(f"/api/workloads/{w['id']}/cancel", json={"reason": "changed my mind"})
    assert r.status_code == 202
    assert r.json()["data"]["status"] == "terminated"
    assert r.json()["data"]["error"] == "changed my mind"
    again = await c.post(f"/api/workloads/{w['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "resource_conflict"


async def test_200_concurrent_submissions_never_overbook(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    nodes = [
        await ScriptedNode.start(c, wl, key, pool, cpu="4000m", memory="4Gi") for _ in range(3)
    ]
    try:
        results = await asyncio.gather(
            *(
                c.post(
                    "/api/workloads",
                    json={
                        "command": ["true"],
                        "pool": pool,
                        "resources": {"cpu_millicores": 700, "memory_mib": 256},
                    },
                )
                for _ in range(200)
            )
        )
        assert all(r.status_code == 201 for r in results)
        # 3 nodes x 5 slots of 700m in 4000m.
        deadline = time.monotonic() + 30
        while True:
            r = await c.get("/api/workloads", params={"status": "scheduled", "limit": 100})
            total = r.json()["data"]["pagination"]["total"]
            if total >= 15 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let any (wrong) extra placement land
        scheduled = (
            await c.get("/api/workloads", params={"status": "scheduled", "limit": 100})
        ).json()["data"]
        assert scheduled["pagination"]["total"] == 15
        per_node: dict[str, int] = {}
        for w in scheduled["workloads"]:
            per_node[w["node_id"]] = per_node.get(w["node_id"], 0) + 1
        assert sorted(per_node.values()) == [5, 5, 5]
        for node in nodes:
            detail = (await c.get(f"/api/nodes/{node.id}")).json()["data"]
            assert detail["resources"]["cpu_available"] == pytest.approx(0.5)
    finally:
        for node in nodes:
            await node.close()


async def test_protocol_flow_logs_usage_and_reconcile(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    node = await ScriptedNode.start(c, wl, key, pool)
    try:
        w = await submit(c, pool, command=["echo", "hi"])
        poll = (await node.poll(wait_s=5)).json()
        assert [a["workload_id"] for a in poll["assignments"]] == [w["id"]]
        assignment = poll["assignments"][0]
        assert assignment["command"] == ["echo", "hi"]
        assert assignment["attempt"] == 1
        # Repeated until the agent lists it.
        assert (await node.poll()).json()["assignments"][0]["workload_id"] == w["id"]
        assert (await node.report(w["id"], 1, "starting")).json() == {"cancel": []}
        assert (await node.report(w["id"], 1, "running")).status_code == 200
        lines = [{"at": time.time(), "stream": "stdout", "text": f"line {i}"} for i in range(80)]
        r = await c.post(
            "/api/v1/node/report",
            json={
                "machine_id": node.id,
                "logs": [{"workload_id": w["id"], "attempt": 1, "lines": lines}],
            },
            headers=node.machine.headers,
        )
        assert r.status_code == 200
        r = await node.report(
            w["id"],
            1,
            "failed",
            exit_code=3,
            error="exited with code 3",
            usage={"cpu_seconds": 1.5, "memory_peak_mib": 12.0},
        )
        assert r.status_code == 200
        done = await wait_for(c, str(w["id"]), {"failed"})
        assert done["exit_code"] == 3
        assert done["usage"] == {
            "cpu_seconds": 1.5,
            "memory_peak_mib": 12.0,
        }
        logs = (await c.get(f"/api/workloads/{w['id']}/logs", params={"tail": 5})).json()["data"][
            "lines"
        ]
        assert [x["text"] for x in logs] == [f"line {i}" for i in range(75, 80)]
        everything = (await c.get(f"/api/workloads/{w['id']}/logs")).json()["data"]["lines"]
        assert len(everything) == 50
        assert everything[-1]["text"] == "line 79"
        # The agent still lists it (or a stranger): the hub says stop.
        cancel = (await node.poll([(str(w["id"]), 1), (str(uuid.uuid4()), 1)])).json()["cancel"]
        assert len(cancel) == 2
        # A stale attempt's report changes nothing.
        r = await node.report(w["id"], 1, "running")
        assert r.json()["cancel"][0]["workload_id"] == w["id"]
        assert (await c.get(f"/api/workloads/{w['id']}")).json()["data"]["status"] == "failed"
        # Node capacity given back.
        detail = (await c.get(f"/api/nodes/{node.id}")).json()["data"]
        assert detail["resources"]["cpu_available"] > 3.2  # 4 cores, 15.5% busy, none booked
    finally:
        await node.close()


async def test_cancel_wakes_a_parked_poll(wl: HubProcess, key: str, c: httpx.AsyncClient) -> None:
    pool = await new_pool(c)
    node = await ScriptedNode.start(c, wl, key, pool)
    try:
        w = await submit(c, pool, command=["sleep", "60"])
        await node.poll(wait_s=5)
        await node.report(w["id"], 1, "running")
        parked = asyncio.create_task(node.poll([(str(w["id"]), 1)], wait_s=20))
        await asyncio.sleep(0.5)
        assert not parked.done()
        started = time.monotonic()
        r = await c.post(f"/api/workloads/{w['id']}/cancel")
        assert r.status_code == 202
        assert r.json()["data"]["cancel_requested"]
        answer = await parked
        assert time.monotonic() - started < 1.5
        assert answer.json()["cancel"][0]["workload_id"] == w["id"]
        await node.report(w["id"], 1, "terminated", exit_code=143)
        done = await wait_for(c, str(w["id"]), {"terminated"})
        assert done["error"].startswith("cancelled by")
    finally:
        await node.close()


async def test_agent_restart_marks_lost_runs_and_requeues(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    node = await ScriptedNode.start(c, wl, key, pool)
    try:
        w = await submit(c, pool, command=["sleep", "60"], restart_policy="on_failure")
        await node.poll(wait_s=5)
        await node.report(w["id"], 1, "running")
        # A restarted agent runs nothing: the hub corrects its view and queues a new attempt,
        # which comes straight back to this node.
        answer = (await node.poll([])).json()
        again = await wait_for(c, str(w["id"]), {"queued", "scheduled"})
        assert again["attempt"] == 2
        assert again["restarts"] == 1
        if not answer["assignments"]:
            answer = (await node.poll([], wait_s=5)).json()
        assert answer["assignments"][0]["attempt"] == 2
    finally:
        await node.close()


async def test_node_lost_requeues_onto_another_node(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    first = await ScriptedNode.start(c, wl, key, pool)
    w = await submit(c, pool, command=["sleep", "60"], restart_policy="on_failure")
    await first.poll(wait_s=5)
    await first.report(w["id"], 1, "running")
    second = await ScriptedNode.start(c, wl, key, pool)
    try:
        await first.stop()  # no more keepalives: lost after the TTL
        moved = await wait_for(c, str(w["id"]), {"scheduled"}, within=TTL_S + 10)
        assert moved["node_id"] == second.id
        assert moved["attempt"] == 2
        node = (await c.get(f"/api/nodes/{first.id}")).json()["data"]
        assert node["status"] == "lost"
        types = [
            e["type"]
            for e in (
                await c.get("/api/events", params={"types": "workload.*", "limit": 500})
            ).json()["data"]["events"]
            if e["data"].get("workload_id") == w["id"]
        ]
        assert "workload.lost" in types
        # Until it registers again, the lost node's polls are refused ...
        r = await first.poll([(str(w["id"]), 1)])
        assert r.status_code == 404
        assert r.json()["code"] == "machine_not_found"
        # ... and once back, it is told to stop the run that moved away.
        await first._register()
        cancel = (await first.poll([(str(w["id"]), 1)])).json()["cancel"]
        assert cancel == [
            {"workload_id": w["id"], "attempt": 1, "reason": "not assigned to this node"}
        ]
    finally:
        await first.close()
        await second.close()


async def test_drain_moves_running_work(wl: HubProcess, key: str, c: httpx.AsyncClient) -> None:
    pool = await new_pool(c)
    first = await ScriptedNode.start(c, wl, key, pool)
    try:
        w = await submit(c, pool, command=["sleep", "60"])
        await first.poll(wait_s=5)
        await first.report(w["id"], 1, "running")
        r = await c.post(f"/api/nodes/{first.id}/maintenance", json={"enable": True, "drain": True})
        assert r.status_code == 200, r.text
        cancel = (await first.poll([(str(w["id"]), 1)], wait_s=5)).json()["cancel"]
        assert cancel
        assert cancel[0]["reason"] == f"node {first.id} drained"
        await first.report(w["id"], 1, "terminated", exit_code=143)
        back = await wait_for(c, str(w["id"]), {"queued"})
        assert back["attempt"] == 2
        assert back["restarts"] == 0
        second = await ScriptedNode.start(c, wl, key, pool)
        try:
            moved = await wait_for(c, str(w["id"]), {"scheduled"})
            assert moved["node_id"] == second.id
        finally:
            await second.close()
    finally:
        await first.close()


async def test_work_routes_check_the_machine_token(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    node = await ScriptedNode.start(c, wl, key, pool)
    other = await ScriptedNode.start(c, wl, key, pool)
    try:
        body = {"machine_id": node.id, "running": [], "wait_s": 0}
        r = await c.post("/api/v1/node/poll", json=body)  # an admin key is no machine token
        assert r.status_code == 403
        assert r.json() == {
            "error": "Invalid token",
            "code": "invalid_token",
        }
        r = await c.post("/api/v1/node/poll", json=body, headers=other.machine.headers)
        assert r.status_code == 403
        assert r.json()["code"] == "invalid_token"
        r = await c.post(
            "/api/v1/node/poll",
            json={**body, "machine_id": "0000beef"},
            headers=node.machine.headers,
        )
        assert r.status_code == 404
        assert r.json()["code"] == "machine_not_found"
        r = await c.post("/api/v1/node/poll", json={"running": "x"}, headers=node.machine.headers)
        assert r.status_code == 400
        assert "error" in r.json()
        # Machine tokens stay out of the Cluster routes.
        r = await c.get("/api/workloads", headers=node.machine.headers)
        assert r.status_code == 403
    finally:
        await node.close()
        await other.close()


async def test_openapi_documents_the_node_routes(c: httpx.AsyncClient) -> None:
    spec = (await c.get("/api/openapi.json")).json()
    for path in ("/api/v1/node/poll", "/api/v1/node/report"):
        assert spec["paths"][path]["post"]["tags"] == ["node"]


async def test_logs_follow_live_until_the_workload_ends(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    node = await ScriptedNode.start(c, wl, key, pool)
    try:
        w = await submit(c, pool, command=["echo", "hi"])
        await node.poll(wait_s=5)
        await node.report(w["id"], 1, "running")
        received: list[tuple[str, str]] = []

        async def follow() -> None:
            async with c.stream("GET", f"/api/workloads/{w['id']}/logs/stream") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                event = ""
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        event = line[len("event: ") :]
                    elif line.startswith("data: "):
                        received.append((event, line[len("data: ") :]))
                        if event == "end":
                            return

        follower = asyncio.create_task(follow())
        for i in range(3):
            await asyncio.sleep(0.2)
            r = await c.post(
                "/api/v1/node/report",
                json={
                    "machine_id": node.id,
                    "logs": [
                        {
                            "workload_id": w["id"],
                            "attempt": 1,
                            "lines": [{"at": time.time(), "text": f"live {i}"}],
                        }
                    ],
                },
                headers=node.machine.headers,
            )
            assert r.status_code == 200
        await node.report(w["id"], 1, "succeeded", exit_code=0)
        await asyncio.wait_for(follower, 10)
        texts = [json.loads(data)["text"] for event, data in received if event == "log"]
        assert texts == ["live 0", "live 1", "live 2"]
        assert received[-1] == ("end", json.dumps({"status": "succeeded"}))
    finally:
        await node.close()


async def test_files_are_stored_and_only_their_names_are_shown(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    files = {"src/main.py": "print('hi')\n", "README": "é" * 1000}
    w = await submit(c, pool, files=files)
    assert w["files"] == ["README", "src/main.py"]
    listed = (await c.get("/api/workloads", params={"limit": 100})).json()["data"]["workloads"]
    assert "print('hi')" not in json.dumps(listed)
    node = await ScriptedNode.start(c, wl, key, pool)
    try:
        [assignment] = (await node.poll(wait_s=5)).json()["assignments"]
        assert assignment["files"] == files
    finally:
        await node.close()


async def test_a_workload_no_node_fits_says_why_until_one_with_room_appears(
    wl: HubProcess, key: str, c: httpx.AsyncClient
) -> None:
    pool = await new_pool(c)
    w = await submit(c, pool, resources={"cpu_millicores": 500, "memory_mib": 256})
    # No ready node in the pool at all.
    deadline = time.monotonic() + 10
    while not (shown := (await c.get(f"/api/workloads/{w['id']}")).json()["data"])[
        "pending_reason"
    ]:
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.05)
    assert shown["status"] == "queued"
    assert shown["pending_reason"].startswith(f"waiting for a node: pool '{pool}' has no ready")
    small = await ScriptedNode.start(c, wl, key, pool, cpu="250m")
    big: ScriptedNode | None = None
    try:
        # The small node does not fit it: the next queued one says so.
        w2 = await submit(c, pool, resources={"cpu_millicores": 500, "memory_mib": 256})
        deadline = time.monotonic() + 10
        while not (shown := (await c.get(f"/api/workloads/{w2['id']}")).json()["data"])[
            "pending_reason"
        ]:
            assert time.monotonic() < deadline, shown
            await asyncio.sleep(0.05)
        assert shown["pending_reason"] == (
            f"waiting for capacity: no ready node in pool '{pool}' has 500m CPU / 256 MiB free "
            "and fits its runtime 'sandbox', node selector and tolerations"
        )
        big = await ScriptedNode.start(c, wl, key, pool, cpu="2000m")
        for workload in (w, w2):
            placed = await wait_for(c, str(workload["id"]), {"scheduled"})
            assert placed["node_id"] == big.id
            assert placed["pending_reason"] is None
    finally:
        await small.close()
        if big is not None:
            await big.close()
