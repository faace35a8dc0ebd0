"""Intelligent Machines through HTTP against ``agenthub up`` (hub + local node agent):
a shell machine end to end, limits and budgets, terminate, machine tokens, scopes, errors."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.hub_support import ENDED, UpProcess, hub_error, new_project, spawn, wait_machine
from tests.support import bearer

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def up(backend_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:  # type: ignore[no-untyped-def]
    data: Path = tmp_path_factory.mktemp("up") / "data"
    process = UpProcess(
        backend_factory(),
        data,
        machine_controller_interval_s="0.2",
        machine_accrual_interval_s="0.5",
        machine_cpu_millicores="100",
        machine_memory_mib="64",
        machine_time_grace_s="30",
        rate_limit_per_minute="100000",
    )
    yield process
    process.stop()


@pytest.fixture
async def admin(up: UpProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=up.url, headers=bearer(up.key), timeout=30) as c:
        yield c


async def member_client(up: UpProcess, admin: httpx.AsyncClient, project: str) -> httpx.AsyncClient:
    r = await admin.post(
        "/api/auth/keys", json={"name": "member", "role": "member", "project_id": project}
    )
    assert r.status_code == 201, r.text
    return httpx.AsyncClient(base_url=up.url, headers=bearer(r.json()["data"]["key"]), timeout=30)


async def events_of(admin: httpx.AsyncClient, types: str) -> list[dict[str, object]]:
    r = await admin.get("/api/events", params={"types": types, "limit": 1000})
    assert r.status_code == 200, r.text
    return list(r.json()["data"]["events"])


async def test_a_shell_machine_runs_to_completion(up: UpProcess, admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "e2e"))["uuid"]
    script = (
        'echo "start $AGENTHUB_MACHINE_UUID"\n'
        "cat notes/hello.txt\n"
        'test -n "$AGENTHUB_TOKEN" && echo token-present\n'
        "echo $PWD\n"
        "sleep 1.5\n"
        "echo 'step 2 of 2'\n"
    )
    r = await spawn(
        admin,
        project,
        script,
        file_modifications={"notes/hello.txt": "hello from the spawn\n"},
        resource_constraints={"max_money": 0.5, "max_time_minutes": 5, "max_api_calls": 10},
    )
    assert r.status_code == 201, r.text
    spawned = r.json()
    assert set(spawned) >= {"machine_uuid", "vm_id", "status", "estimated_resources", "spawned_at"}
    assert spawned["status"] in ("spawning", "working")
    assert spawned["spawned_at"].endswith("Z")
    estimate = spawned["estimated_resources"]
    assert 0 < estimate["money"] <= 0.5
    assert 0 < estimate["time_minutes"] <= 5
    assert estimate["api_calls"] == 0
    machine = spawned["machine_uuid"]

    working = await wait_machine(admin, machine, {"working", *ENDED})
    assert working["status"] == "working", working
    done = await wait_machine(admin, machine, ENDED)
    assert done["status"] == "completed", done
    assert done["progress"] == "step 2 of 2"
    assert done["uuid"] == machine
    assert done["project_uuid"] == project
    assert done["type"] == "shell"
    assert done["prompt"] == script
    assert done["vm_id"] == spawned["vm_id"]
    # The automatic checkpoint of its end: the workspace with the file it was given.
    final = await settled_checkpoint(admin, machine)
    assert final["status"] == "ready", final
    assert final["metadata"]["trigger"] == "machine_completed"
    assert "notes/hello.txt" in final["file_manifest"]
    assert (await admin.get(f"/api/v1/machines/{machine}")).json()["checkpoints_created"] == 1

    logs = (await admin.get(f"/api/v1/machines/{machine}/logs", params={"tail": 50})).json()
    assert f"start {machine}\n" in logs["logs"]
    assert "hello from the spawn\ntoken-present\n/workspace\n" in logs["logs"]
    tail = (await admin.get(f"/api/v1/machines/{machine}/logs", params={"tail": 1})).json()
    assert tail["logs"] == "step 2 of 2\n"
    # The file modification landed in the machine's workspace on the node.
    assert (up.workspace(done["vm_id"]) / "notes" / "hello.txt").read_text() == (
        "hello from the spawn\n"
    )

    # Usage is billed when the machine is settled: poll until the ledger has it.
    for _ in range(50):
        done = (await admin.get(f"/api/v1/machines/{machine}")).json()
        if done["resource_usage"]["time"]["actual"] > 0:
            break
        await asyncio.sleep(0.1)
    used = done["resource_usage"]
    assert used["time"]["unit"] == "minutes"
    assert used["api_calls"]["unit"] == "calls"
    assert 1.4 / 60 <= used["time"]["actual"] <= 10 / 60
    assert used["money"]["actual"] > 0
    assert used["compute"]["memory_gb_hours"] > 0
    report = (
        await admin.get(f"/api/v1/resources/projects/{project}", params={"period": "today"})
    ).json()
    assert report["period"] == "today"
    assert report["total_usage"]["money"] == pytest.approx(used["money"]["actual"], abs=1e-5)
    assert report["daily_breakdown"][-1]["machines_active"] == 1
    assert report["efficiency_metrics"]["average_machine_runtime"] > 0
    ended = await events_of(admin, "machine.completed")
    assert any(e["data"]["machine_uuid"] == machine for e in ended)  # type: ignore[index]


async def test_a_failing_script_fails(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "fails"))["uuid"]
    r = await spawn(admin, project, "echo about to fail; exit 3")
    assert r.status_code == 201, r.text
    done = await wait_machine(admin, r.json()["machine_uuid"], ENDED)
    assert done["status"] == "failed"
    assert done["exit_code"] == 3
    assert done["progress"] == "about to fail"


async def test_time_limit_stops_a_machine(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "slow"))["uuid"]
    r = await spawn(
        admin,
        project,
        "echo begin; sleep 120",
        resource_constraints={"max_time_minutes": 0.05},  # 3 seconds
    )
    assert r.status_code == 201, r.text
    machine = r.json()["machine_uuid"]
    await wait_machine(admin, machine, {"working"})
    done = await wait_machine(admin, machine, ENDED, within=20)
    assert done["status"] == "terminated", done
    assert done["termination_reason"].startswith("time_limit_exceeded")
    ran = (await admin.get(f"/api/v1/machines/{machine}")).json()["resource_usage"]["time"][
        "actual"
    ]
    assert 0.05 <= ran < 0.5


async def test_terminate_mid_run(up: UpProcess, admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "stop-me"))["uuid"]
    r = await spawn(admin, project, "echo working; sleep 120")
    machine = r.json()["machine_uuid"]
    await wait_machine(admin, machine, {"working"})
    stopped = await admin.post(
        f"/api/v1/machines/{machine}/terminate",
        json={"reason": "enough", "create_checkpoint": False},
    )
    assert stopped.status_code == 200, stopped.text
    body = stopped.json()
    assert body["status"] == "terminated"
    assert body["final_checkpoint"] is None
    assert body["terminated_at"].endswith("Z")
    assert "money" in body["resource_usage"]
    done = await wait_machine(admin, machine, ENDED, within=15)
    assert done["status"] == "terminated"
    assert done["termination_reason"] == "enough"
    again = await admin.post(f"/api/v1/machines/{machine}/terminate", json={"reason": "again"})
    hub_error(again, 409, "CONFLICT")


async def test_budget_refusal_and_the_concurrent_spawn_race(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "tight"))["uuid"]
    budget = await admin.put(
        f"/api/v1/resources/projects/{project}/budget", json={"daily_money": 1.0}
    )
    assert budget.status_code == 200, budget.text
    assert budget.json()["daily_money"] == 1.0
    assert budget.json()["effective"]["daily_money"] == 1.0

    async def one() -> httpx.Response:
        return await spawn(admin, project, "sleep 60", resource_constraints={"max_money": 0.6})

    results = await asyncio.gather(*(one() for _ in range(8)))
    created = [r for r in results if r.status_code == 201]
    refused = [r for r in results if r.status_code != 201]
    assert len(created) == 1, [r.text for r in results]
    for r in refused:
        error = hub_error(r, 409, "RESOURCE_LIMIT_EXCEEDED")
        assert error["details"]["required_money"] == 0.6
        assert error["details"]["available_money"] == pytest.approx(0.4, abs=1e-6)
    # A smaller machine still fits beside it.
    small = await spawn(admin, project, "sleep 60", resource_constraints={"max_money": 0.3})
    assert small.status_code == 201, small.text

    # At most one machine at a time: the next spawn is refused until one ends.
    r = await admin.put(
        f"/api/v1/resources/projects/{project}/budget", json={"max_concurrent_machines": 2}
    )
    assert r.status_code == 200
    error = hub_error(
        await spawn(admin, project, "true", resource_constraints={"max_money": 0.01}),
        409,
        "RESOURCE_LIMIT_EXCEEDED",
    )
    assert error["details"]["required_machines"] == 1
    assert error["details"]["available_machines"] == 0
    for r in (created[0], small):
        await admin.post(f"/api/v1/machines/{r.json()['machine_uuid']}/terminate", json={})
    for r in (created[0], small):
        await wait_machine(admin, r.json()["machine_uuid"], ENDED, within=15)
    ok = await spawn(admin, project, "true", resource_constraints={"max_money": 0.01})
    assert ok.status_code == 201, ok.text


async def test_machine_token_reports_usage_and_budget_exhaustion_stops_it(
    up: UpProcess, admin: httpx.AsyncClient
) -> None:
    project = (await new_project(admin, "spender"))["uuid"]
    script = (
        'auth="Authorization: Bearer $AGENTHUB_TOKEN"\n'
        'self="$AGENTHUB_URL/api/v1/machines/$AGENTHUB_MACHINE_UUID"\n'
        'curl -s -o /dev/null -w "self %{http_code}\\n" -H "$auth" "$self"\n'
        'curl -s -o /dev/null -w "projects %{http_code}\\n" -H "$auth" '
        '"$AGENTHUB_URL/api/v1/projects"\n'
        'curl -s -o /dev/null -w "report %{http_code}\\n" -X POST -H "$auth" '
        "-H 'Content-Type: application/json' -d '{\"api_calls\": 9, \"money\": 0.42}' "
        '"$self/usage"\n'
        "sleep 60\n"
    )
    r = await spawn(
        admin,
        project,
        script,
        resource_constraints={"max_money": 0.5, "max_api_calls": 100, "max_time_minutes": 5},
    )
    assert r.status_code == 201, r.text
    machine = r.json()["machine_uuid"]
    for _ in range(100):
        logs = (await admin.get(f"/api/v1/machines/{machine}/logs")).json()["logs"]
        if "report" in logs:
            break
        await asyncio.sleep(0.1)
    for expected in ("self 200\n", "projects 403\n", "report 200\n"):
        assert expected in logs, logs
    data = (await admin.get(f"/api/v1/machines/{machine}")).json()
    assert data["status"] == "working"
    assert data["resource_usage"]["api_calls"]["actual"] == 9
    assert data["resource_usage"]["money"]["actual"] >= 0.42
    # 84% of max_money: one warning for this machine's money budget.
    for _ in range(50):
        warnings = [
            e
            for e in await events_of(admin, "budget.warning")
            if e["data"].get("machine_uuid") == machine  # type: ignore[attr-defined]
        ]
        if warnings:
            break
        await asyncio.sleep(0.1)
    assert [w["data"]["budget"] for w in warnings] == ["money"]  # type: ignore[index]

    # Passing max_money stops it at once, and the reason says so.
    over = await admin.post(f"/api/v1/machines/{machine}/usage", json={"money": 0.1})
    assert over.status_code == 200, over.text
    done = await wait_machine(admin, machine, ENDED, within=15)
    assert done["status"] == "terminated"
    assert done["termination_reason"].startswith("budget_exhausted")
    # An ended machine cannot spend any more; a bad report is a 400.
    hub_error(
        await admin.post(f"/api/v1/machines/{machine}/usage", json={"money": 0.1}), 409, "CONFLICT"
    )
    hub_error(
        await admin.post(f"/api/v1/machines/{machine}/usage", json={"money": -1}),
        400,
        "VALIDATION_ERROR",
    )


async def test_a_spent_project_budget_stops_its_machines(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "daily"))["uuid"]
    r = await spawn(admin, project, "sleep 60", resource_constraints={"max_money": 0.25})
    machine = r.json()["machine_uuid"]
    await wait_machine(admin, machine, {"working"})
    # The operator lowers the project's daily budget below what it is about to spend.
    await admin.put(f"/api/v1/resources/projects/{project}/budget", json={"daily_money": 0.1})
    spent = await admin.post(f"/api/v1/machines/{machine}/usage", json={"money": 0.12})
    assert spent.status_code == 200, spent.text
    done = await wait_machine(admin, machine, ENDED, within=15)
    assert done["status"] == "terminated"
    assert "project's daily money budget" in done["termination_reason"]
    warned = [
        e
        for e in await events_of(admin, "budget.warning")
        if e["data"].get("project_uuid") == project and e["data"]["scope"] == "project"  # type: ignore[attr-defined,index]
    ]
    assert [w["data"]["budget"] for w in warned] == ["money"]  # type: ignore[index]
    refused = await spawn(admin, project, "true", resource_constraints={"max_money": 0.01})
    hub_error(refused, 409, "RESOURCE_LIMIT_EXCEEDED")


async def test_bad_spawns_and_lookups_are_clear_4xx(
    up: UpProcess, admin: httpx.AsyncClient
) -> None:
    project = (await new_project(admin, "errors"))["uuid"]
    error = hub_error(
        await admin.post(
            "/api/v1/machines", json={"type": "nope", "project_uuid": project, "prompt": "x"}
        ),
        400,
        "VALIDATION_ERROR",
    )
    assert "shell" in error["details"]["known_types"]
    assert "shell" in error["message"]
    hub_error(await spawn(admin, str(uuid.uuid4()), "true"), 404, "NOT_FOUND")
    hub_error(
        await spawn(admin, project, "true", checkpoint_uuid=str(uuid.uuid4())), 404, "NOT_FOUND"
    )
    hub_error(
        await spawn(admin, project, "true", resource_constraints={"max_money": -1}),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(
        await spawn(admin, project, "true", file_modifications={"../escape": "x"}),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(
        await admin.post("/api/v1/machines", json={"type": "shell", "project_uuid": project}),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(await admin.get(f"/api/v1/machines/{uuid.uuid4()}"), 404, "NOT_FOUND")
    hub_error(await admin.get("/api/v1/machines/not-a-uuid"), 400, "VALIDATION_ERROR")
    hub_error(
        await admin.get("/api/v1/machines", params={"status": "bogus"}), 400, "VALIDATION_ERROR"
    )
    hub_error(
        await admin.post(f"/api/v1/machines/{uuid.uuid4()}/terminate", json={}), 404, "NOT_FOUND"
    )
    async with httpx.AsyncClient(base_url=up.url) as anonymous:
        hub_error(await anonymous.get("/api/v1/machines"), 401, "UNAUTHORIZED")
        hub_error(await spawn(anonymous, project, "true"), 401, "UNAUTHORIZED")


async def test_member_keys_only_touch_their_project(
    up: UpProcess, admin: httpx.AsyncClient
) -> None:
    mine = (await new_project(admin, "mine"))["uuid"]
    theirs = (await new_project(admin, "theirs"))["uuid"]
    other = (await spawn(admin, theirs, "sleep 30")).json()["machine_uuid"]
    async with await member_client(up, admin, mine) as member:
        r = await spawn(member, mine, "echo member")
        assert r.status_code == 201, r.text
        own = r.json()["machine_uuid"]
        hub_error(await spawn(member, theirs, "true"), 404, "NOT_FOUND")
        listed = (await member.get("/api/v1/machines", params={"limit": 100})).json()
        assert {m["uuid"] for m in listed["machines"]} == {own}
        assert listed["total_count"] == 1
        hub_error(await member.get(f"/api/v1/machines/{other}"), 404, "NOT_FOUND")
        hub_error(await member.get(f"/api/v1/machines/{other}/logs"), 404, "NOT_FOUND")
        hub_error(
            await member.post(f"/api/v1/machines/{other}/terminate", json={}), 404, "NOT_FOUND"
        )
        hub_error(await member.get(f"/api/v1/projects/{theirs}"), 404, "NOT_FOUND")
        projects = (await member.get("/api/v1/projects")).json()
        assert [p["uuid"] for p in projects["projects"]] == [mine]
        hub_error(await member.post("/api/v1/projects", json={"name": "x"}), 403, "FORBIDDEN")
        hub_error(
            await member.put(
                f"/api/v1/resources/projects/{mine}/budget", json={"daily_money": 1e6}
            ),
            403,
            "FORBIDDEN",
        )
        hub_error(
            await member.put(
                f"/api/v1/resources/projects/{theirs}/budget", json={"daily_money": 1}
            ),
            404,
            "NOT_FOUND",
        )
        hub_error(
            await member.post(f"/api/v1/machines/{other}/usage", json={"money": 1}),
            404,
            "NOT_FOUND",
        )
        assert (await wait_machine(member, own, ENDED))["status"] == "completed"
    await admin.post(f"/api/v1/machines/{other}/terminate", json={})


async def test_listing_filters_and_pages(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "pages"))["uuid"]
    ids = []
    for i in range(3):
        r = await spawn(admin, project, f"echo {i}")
        assert r.status_code == 201, r.text
        ids.append(r.json()["machine_uuid"])
    for machine in ids:
        await wait_machine(admin, machine, ENDED)
    page = (
        await admin.get(
            "/api/v1/machines", params={"project_uuid": project, "limit": 2, "offset": 0}
        )
    ).json()
    assert page["total_count"] == 3
    assert page["has_more"] is True
    assert page["next_offset"] == 2
    assert [m["uuid"] for m in page["machines"]] == ids[::-1][:2]
    rest = (
        await admin.get(
            "/api/v1/machines", params={"project_uuid": project, "limit": 2, "offset": 2}
        )
    ).json()
    assert rest["has_more"] is False
    assert rest["next_offset"] is None
    assert [m["uuid"] for m in rest["machines"]] == [ids[0]]
    done = (
        await admin.get("/api/v1/machines", params={"project_uuid": project, "status": "completed"})
    ).json()
    assert done["total_count"] == 3
    working = (
        await admin.get("/api/v1/machines", params={"project_uuid": project, "status": "working"})
    ).json()
    assert working["total_count"] == 0
    assert working["machines"] == []


async def test_hub_status_health_overview_and_analytics(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "stats"))["uuid"]
    ok = (await spawn(admin, project, "echo fine")).json()["machine_uuid"]
    bad = (await spawn(admin, project, "exit 1")).json()["machine_uuid"]
    running = (await spawn(admin, project, "sleep 30")).json()["machine_uuid"]
    await wait_machine(admin, ok, ENDED)
    await wait_machine(admin, bad, ENDED)
    await wait_machine(admin, running, {"working"})

    health = (await admin.get("/api/v1/health")).json()
    assert health["services"]["proxmox"] == "healthy"
    assert health["active_machines"] >= 1
    status = (await admin.get("/api/v1/hub/status")).json()
    assert uuid.UUID(status["hub_uuid"])
    assert status == status | {"last_checkpoint": None}
    assert status["active_machines"] >= 1
    assert status["active_projects"] >= 1
    assert status["uptime_hours"] > 0
    assert status["api_stats"]["requests_per_hour"] > 5
    assert status["api_stats"]["average_response_time_ms"] > 0
    assert set(status["resource_utilization"]) == {"cpu_percent", "memory_percent", "disk_percent"}
    again = (await admin.get("/api/v1/hub/status")).json()
    assert again["hub_uuid"] == status["hub_uuid"]

    overview = (await admin.get("/api/v1/resources/overview")).json()
    totals = overview["system_totals"]
    assert totals["total_projects"] >= 1
    assert totals["active_machines"] >= 1
    assert totals["daily_money_budget"] > 0
    assert set(overview["resource_utilization"]) == {"money", "time", "api_calls", "compute"}
    assert overview["resource_utilization"]["compute"] > 0  # the running machine holds CPU

    analytics = (
        await admin.get("/api/v1/analytics/efficiency", params={"period": "last_7_days"})
    ).json()
    overall = analytics["overall_efficiency"]
    assert overall["total_operations"] >= 2
    assert overall["successful_operations"] >= 1
    assert overall["success_rate"] == pytest.approx(
        overall["successful_operations"] / overall["total_operations"], abs=1e-3
    )
    assert analytics["machine_performance"]["shell"]["success_rate"] < 1
    assert len(analytics["resource_trends"]) == 7
    assert analytics["resource_trends"][-1]["efficiency_score"] is not None
    hub_error(
        await admin.get("/api/v1/analytics/efficiency", params={"period": "forever"}),
        400,
        "VALIDATION_ERROR",
    )
    await admin.post(f"/api/v1/machines/{running}/terminate", json={})


def blob_count(up: UpProcess) -> int:
    root = up.data_dir / "blobs"
    return sum(1 for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != "tmp")


async def wait_checkpoint(
    c: httpx.AsyncClient, checkpoint: str, within: float = 30.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        data = (await c.get(f"/api/v1/checkpoints/{checkpoint}")).json()
        if data["status"] in ("ready", "failed"):
            return dict(data)
        assert asyncio.get_running_loop().time() < deadline, data
        await asyncio.sleep(0.1)


async def settled_checkpoint(c: httpx.AsyncClient, machine: str) -> dict[str, Any]:
    for _ in range(300):
        data = (await c.get(f"/api/v1/machines/{machine}")).json()
        if data["last_checkpoint"]:
            return await wait_checkpoint(c, data["last_checkpoint"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"machine {machine} got no checkpoint")


async def test_checkpoints_snapshot_fork_and_diff(up: UpProcess, admin: httpx.AsyncClient) -> None:
    created = await new_project(admin, "forks")
    project = created["uuid"]
    initial = created["initial_checkpoint"]
    assert initial
    first = (await admin.get(f"/api/v1/checkpoints/{initial}")).json()
    assert first["type"] == "initial"
    assert first["file_manifest"] == {}
    assert (await admin.get(f"/api/v1/projects/{project}")).json()["current_checkpoint"] == initial

    script = (
        "printf 'alpha\\n' > a.txt; chmod 755 a.txt; mkdir -p d; printf 'beta\\n' > d/b.txt; "
        "ln -s /etc/passwd link; mkdir __pycache__; echo junk > __pycache__/x.pyc; echo wrote"
    )
    r = await spawn(admin, project, script)
    machine = r.json()["machine_uuid"]
    assert (await wait_machine(admin, machine, ENDED))["status"] == "completed"
    snap = await settled_checkpoint(admin, machine)
    assert snap["status"] == "ready", snap
    assert snap["type"] == "automatic"
    assert snap["metadata"]["trigger"] == "machine_completed"
    assert snap["created_by_machine"] == machine
    assert snap["parent_checkpoint"] == initial
    manifest = snap["file_manifest"]
    assert manifest["a.txt"]["sha256"] == hashlib.sha256(b"alpha\n").hexdigest()
    assert manifest["a.txt"]["mode"] & 0o777 == 0o755
    assert manifest["d/b.txt"]["size"] == 5
    assert manifest["link"]["type"] == "symlink"
    assert manifest["link"]["target"] == "/etc/passwd"
    assert not any(p.startswith("__pycache__") for p in manifest)
    assert snap["file_count"] == 2
    assert snap["size_bytes"] == 11
    machine_now = (await admin.get(f"/api/v1/machines/{machine}")).json()
    assert machine_now["checkpoints_created"] == 1
    assert (await admin.get(f"/api/v1/projects/{project}")).json()["current_checkpoint"] == snap[
        "uuid"
    ]

    # A fork starts from exactly that workspace, plus its own file modifications.
    blobs_before = blob_count(up)
    fork = await admin.post(
        f"/api/v1/checkpoints/{snap['uuid']}/spawn",
        json={
            "machine_type": "shell",
            "prompt": "cat a.txt d/b.txt extra.txt; readlink link; printf 'changed\\n' > a.txt; "
            "rm d/b.txt",
            "file_modifications": {"extra.txt": "extra\n"},
        },
    )
    assert fork.status_code == 201, fork.text
    assert fork.json()["parent_checkpoint"] == snap["uuid"]
    forked = fork.json()["machine_uuid"]
    assert (await wait_machine(admin, forked, ENDED))["status"] == "completed"
    logs = (await admin.get(f"/api/v1/machines/{forked}/logs")).json()["logs"]
    assert logs == "alpha\nbeta\nextra\n/etc/passwd\n"
    second = await settled_checkpoint(admin, forked)
    assert second["parent_checkpoint"] == snap["uuid"]
    # Two new contents (a.txt changed, extra.txt) and one new manifest: nothing else uploaded.
    assert blob_count(up) - blobs_before == 3

    diff = (await admin.get(f"/api/v1/checkpoints/{snap['uuid']}/diff/{second['uuid']}")).json()
    assert diff["files_added"] == ["extra.txt"]
    assert diff["files_modified"] == ["a.txt"]
    assert diff["files_deleted"] == ["d/b.txt"]
    assert diff["total_changes"] == 3
    assert diff["summary"] == "1 file added, 1 file modified, 1 file deleted."
    assert diff["patch"] is None
    patched = (
        await admin.get(
            f"/api/v1/checkpoints/{snap['uuid']}/diff/{second['uuid']}", params={"patch": "true"}
        )
    ).json()
    assert patched["patch_skipped"] == []
    assert "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-alpha\n+changed\n" in patched["patch"]
    assert "--- /dev/null\n+++ b/extra.txt\n@@ -0,0 +1 @@\n+extra\n" in patched["patch"]
    assert "--- a/d/b.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-beta\n" in patched["patch"]

    listed = (await admin.get(f"/api/v1/projects/{project}/checkpoints")).json()
    assert listed["total_count"] == 3
    assert [c["type"] for c in listed["checkpoints"]] == ["automatic", "automatic", "initial"]
    only = (
        await admin.get(f"/api/v1/projects/{project}/checkpoints", params={"type": "initial"})
    ).json()
    assert [c["uuid"] for c in only["checkpoints"]] == [initial]
    hub_error(await admin.get(f"/api/v1/checkpoints/{uuid.uuid4()}"), 404, "NOT_FOUND")
    hub_error(
        await admin.get(f"/api/v1/projects/{project}/checkpoints", params={"type": "bogus"}),
        400,
        "VALIDATION_ERROR",
    )


async def test_manual_and_terminate_checkpoints(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "manual"))["uuid"]
    r = await spawn(admin, project, "echo one > one.txt; echo ready; sleep 60")
    machine = r.json()["machine_uuid"]
    await wait_machine(admin, machine, {"working"})
    for _ in range(100):
        if "ready" in (await admin.get(f"/api/v1/machines/{machine}/logs")).json()["logs"]:
            break
        await asyncio.sleep(0.1)
    taken = await admin.post(
        f"/api/v1/machines/{machine}/checkpoint",
        json={"context": "before-refactor", "description": "halfway"},
    )
    assert taken.status_code == 201, taken.text
    body = taken.json()
    assert body["status"] == "ready"
    assert body["size_mb"] > 0
    manual = (await admin.get(f"/api/v1/checkpoints/{body['checkpoint_uuid']}")).json()
    assert manual["type"] == "manual"
    assert manual["metadata"] == {"trigger": "manual", "machine_context": "before-refactor"}
    assert set(manual["file_manifest"]) == {"one.txt"}

    stopped = await admin.post(
        f"/api/v1/machines/{machine}/terminate", json={"reason": "done", "create_checkpoint": True}
    )
    final = stopped.json()["final_checkpoint"]
    assert final
    done = await wait_checkpoint(admin, final)
    assert done["status"] == "ready", done
    assert done["type"] == "terminate"
    assert done["metadata"]["trigger"] == "terminated"
    assert done["parent_checkpoint"] == manual["uuid"]
    # A machine that is not working is not checkpointed on request.
    hub_error(await admin.post(f"/api/v1/machines/{machine}/checkpoint", json={}), 409, "CONFLICT")


def tar_gz_of(entries: list[tuple[str, bytes | str | None, int]]) -> bytes:
    """A tar.gz: (name, bytes for a file | str for a symlink target | None for a dir, mode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if content is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


async def test_upload_a_directory_then_download_and_run_it(admin: httpx.AsyncClient) -> None:
    project = (await new_project(admin, "seeded"))["uuid"]
    body = tar_gz_of(
        [
            ("src", None, 0o755),
            ("src/main.sh", b"echo hello from main\n", 0o755),
            ("README.md", b"# seeded\n", 0o644),
            ("latest", "src/main.sh", 0o777),
            ("empty", None, 0o700),
        ]
    )
    r = await admin.post(
        f"/api/v1/projects/{project}/checkpoints",
        content=body,
        params={"description": "my repo"},
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code == 201, r.text
    uploaded = r.json()
    assert uploaded["type"] == "manual"
    assert uploaded["file_count"] == 2
    assert uploaded["description"] == "my repo"
    project_now = (await admin.get(f"/api/v1/projects/{project}")).json()
    assert project_now["current_checkpoint"] == uploaded["uuid"]

    one = await admin.get(f"/api/v1/checkpoints/{uploaded['uuid']}/files/src/main.sh")
    assert one.status_code == 200
    assert one.content == b"echo hello from main\n"
    hub_error(
        await admin.get(f"/api/v1/checkpoints/{uploaded['uuid']}/files/nope.txt"),
        404,
        "NOT_FOUND",
    )
    archive = await admin.get(f"/api/v1/checkpoints/{uploaded['uuid']}/archive")
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as back:
        members = {m.name: m for m in back.getmembers()}
        assert set(members) == {"README.md", "empty", "latest", "src/main.sh"}
        assert members["src/main.sh"].mode == 0o755
        assert members["latest"].issym()
        assert members["latest"].linkname == "src/main.sh"
        assert members["empty"].isdir()
        source = back.extractfile("README.md")
        assert source is not None
        assert source.read() == b"# seeded\n"

    # The next machine of the project starts from the upload.
    r = await spawn(admin, project, "./src/main.sh; readlink latest; test -d empty && echo dir-ok")
    machine = r.json()["machine_uuid"]
    assert (await wait_machine(admin, machine, ENDED))["status"] == "completed"
    logs = (await admin.get(f"/api/v1/machines/{machine}/logs")).json()["logs"]
    assert logs == "hello from main\nsrc/main.sh\ndir-ok\n"

    hub_error(
        await admin.post(f"/api/v1/projects/{project}/checkpoints", content=b"not a tar"),
        400,
        "VALIDATION_ERROR",
    )
    evil = tar_gz_of([("../evil", b"x", 0o644)])
    hub_error(
        await admin.post(f"/api/v1/projects/{project}/checkpoints", content=evil),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(
        await admin.post(f"/api/v1/projects/{uuid.uuid4()}/checkpoints", content=body),
        404,
        "NOT_FOUND",
    )
    storage = (await admin.get(f"/api/v1/projects/{project}")).json()["resource_usage_today"]
    assert storage["storage"]["used"] > 0
    # Checkpoints count against the project's storage budget.
    await admin.put(
        f"/api/v1/resources/projects/{project}/budget", json={"storage_gb": 1 / 1024**3}
    )
    full = hub_error(
        await admin.post(f"/api/v1/projects/{project}/checkpoints", content=body),
        409,
        "RESOURCE_LIMIT_EXCEEDED",
    )
    assert full["details"]["available_storage_bytes"] == 0
