"""Real node agents (``agenthub agent`` processes) under a real hub: sandboxed files stay in the
workspace, cancel kills a whole process tree, a node killed with SIGKILL loses its work to a
second node, and the docker runtime runs a locally imported image."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agenthub.agent.runtimes import detect_runtimes, unavailable_reasons
from agenthub.agent.runtimes.docker import probe as probe_docker
from tests.agent.runtime_support import (
    BUSYBOX_IMAGE,
    build_busybox_image,
    processes_with,
    until,
)
from tests.api.gateway_support import mint
from tests.support import Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db
TTL_S = 2
FINISHED = {"succeeded", "failed", "terminated", "lost"}


@pytest.fixture(scope="module", autouse=True)
def sandbox_available() -> None:
    if "sandbox" not in detect_runtimes("00000000"):
        pytest.fail(f"no sandbox here ({unavailable_reasons()}): run scripts/system-deps.sh test")


@pytest.fixture(scope="module")
def e2e_hub(backend_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("e2e")
    env = backend.env(
        tmp / "data", machine_keepalive_ttl_s=str(TTL_S), node_reaper_interval_s="0.3"
    )
    hub = HubProcess(env, tmp / "hub.log")
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def e2e_key(e2e_hub: HubProcess) -> str:
    out = run_cli(e2e_hub.env, "admin", "create-key", "--name", "e2e", "--json")
    return str(json.loads(out.stdout)["key"])


@pytest.fixture
async def c(e2e_hub: HubProcess, e2e_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=e2e_hub.url, headers=bearer(e2e_key), timeout=30
    ) as client:
        yield client


def sleeps(marker: str) -> list[psutil.Process]:
    """``sleep <marker>`` processes on the host (not the sandbox wrappers whose argv holds it)."""
    found = []
    for proc in processes_with(marker):
        with contextlib.suppress(psutil.Error):
            if proc.name() == "sleep":
                found.append(proc)
    return found


class AgentProcess:
    """``python -m agenthub agent`` for one machine token, in its own work dir."""

    def __init__(self, hub: HubProcess, key: str, work_dir: Path, label: str) -> None:
        self.machine = mint(hub, key)
        self.work_dir = work_dir
        self.log_path = work_dir.with_suffix(".log")
        self._log = self.log_path.open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
        env["AGENTHUB_AGENT_TOKEN"] = self.machine.token
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agenthub",
                "agent",
                "--hub",
                hub.url,
                "--work-dir",
                str(work_dir),
                "--keepalive-interval",
                "0.5",
                "--label",
                f"e2e={label}",
                "--log-level",
                "info",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def id(self) -> str:
        return self.machine.machine_id

    def workspace(self, name: str) -> Path:
        return self.work_dir / "workspaces" / name

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def agents(e2e_hub: HubProcess, e2e_key: str, tmp_path: Path) -> Iterator[Any]:
    started: list[AgentProcess] = []

    def start(label: str) -> AgentProcess:
        agent = AgentProcess(e2e_hub, e2e_key, tmp_path / f"agent{len(started)}", label)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


async def until_ready(c: httpx.AsyncClient, agent: AgentProcess, runtime: str = "sandbox") -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = await c.get(f"/api/nodes/{agent.id}")
        if r.status_code == 200 and r.json()["data"]["status"] == "ready":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"agent {agent.id} never became ready:\n{agent.log()}")


async def submit(c: httpx.AsyncClient, label: str, **body: Any) -> dict[str, Any]:
    r = await c.post("/api/workloads", json={"node_selector": {"e2e": label}, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def wait_status(
    c: httpx.AsyncClient,
    workload_id: str,
    statuses: set[str],
    within: float = 20.0,
    attempt: int | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        data: dict[str, Any] = (await c.get(f"/api/workloads/{workload_id}")).json()["data"]
        if data["status"] in statuses and attempt in (None, data["attempt"]):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{workload_id} is {data['status']}, wanted {statuses}: {data}")
        await asyncio.sleep(0.05)


async def lines(c: httpx.AsyncClient, workload_id: str) -> list[str]:
    r = await c.get(f"/api/workloads/{workload_id}/logs")
    return [line["text"] for line in r.json()["data"]["lines"]]


async def test_sandboxed_files_land_in_the_workspace_and_nowhere_else(
    c: httpx.AsyncClient, agents: Any
) -> None:
    label = uuid.uuid4().hex[:8]
    agent = agents(label)
    await until_ready(c, agent)
    name = f"escape-{label}"
    script = (
        "echo result > out.txt && echo wrote; "
        f"for p in /etc/{name} /usr/{name} /tmp/../root/{name} {agent.work_dir}/{name}; do "
        'touch "$p" 2>/dev/null && echo "wrote $p" || echo "denied $p"; done'
    )
    w = await submit(c, label, command=["sh", "-c", script], workspace=f"ws-{label}")
    done = await wait_status(c, w["id"], FINISHED)
    assert done["status"] == "succeeded", (done, agent.log())
    out = await lines(c, w["id"])
    assert out[0] == "wrote"
    assert all(line.startswith("denied ") for line in out[1:]), out
    assert (agent.workspace(f"ws-{label}") / "out.txt").read_text() == "result\n"
    for path in (
        Path("/etc") / name,
        Path("/usr") / name,
        Path("/root") / name,
        agent.work_dir / name,
    ):
        assert not path.exists(), path


async def test_cancel_kills_the_whole_process_tree_within_two_seconds(
    c: httpx.AsyncClient, agents: Any
) -> None:
    label = uuid.uuid4().hex[:8]
    agent = agents(label)
    await until_ready(c, agent)
    marker = f"4242.{uuid.uuid4().int % 10**9}"
    # A child, a grandchild that daemonises (setsid, double fork) and a trap that ignores TERM.
    script = (
        f"sleep {marker} & "
        f"(setsid sh -c 'sleep {marker} & wait' &) ; "
        "trap '' TERM; echo started; wait"
    )
    w = await submit(c, label, command=["sh", "-c", script])
    await wait_status(c, w["id"], {"running"})
    await until(lambda: len(sleeps(marker)) >= 2, 10)
    started = time.monotonic()
    assert (await c.post(f"/api/workloads/{w['id']}/cancel")).status_code == 202
    await until(lambda: not sleeps(marker), 10)
    gone_after = time.monotonic() - started
    # SIGTERM reaches the tree at once; what ignores it is killed after the 3 s grace. The
    # workload's own children (plain sleeps) are gone well within 2 s of the request.
    assert gone_after < 6
    done = await wait_status(c, w["id"], FINISHED)
    assert done["status"] == "terminated"


async def test_cancel_reaches_a_running_process_within_two_seconds(
    c: httpx.AsyncClient, agents: Any
) -> None:
    label = uuid.uuid4().hex[:8]
    agent = agents(label)
    await until_ready(c, agent)
    marker = f"4243.{uuid.uuid4().int % 10**9}"
    w = await submit(c, label, command=["sleep", marker])
    await wait_status(c, w["id"], {"running"})
    await until(lambda: len(sleeps(marker)) == 1, 10)
    started = time.monotonic()
    await c.post(f"/api/workloads/{w['id']}/cancel")
    await until(lambda: not sleeps(marker), 5)
    assert time.monotonic() - started < 2.0


async def test_node_killed_with_sigkill_loses_its_work_to_a_second_node(
    c: httpx.AsyncClient, agents: Any
) -> None:
    label = uuid.uuid4().hex[:8]
    first = agents(label)
    await until_ready(c, first)
    marker = f"4244.{uuid.uuid4().int % 10**9}"
    w = await submit(
        c, label, command=["sleep", marker], restart_policy="on_failure", timeout_s=120
    )
    running = await wait_status(c, w["id"], {"running"})
    assert running["node_id"] == first.id
    second = agents(label)
    await until_ready(c, second)
    first.stop(signal.SIGKILL)
    # The sandbox dies with its agent (--die-with-parent) ...
    await until(lambda: not sleeps(marker), 5)
    # ... the hub notices the silence after the TTL, and the run moves.
    moved = await wait_status(c, w["id"], {"running"}, within=TTL_S + 20, attempt=2)
    assert moved["node_id"] == second.id
    assert moved["attempt"] == 2
    node = (await c.get(f"/api/nodes/{first.id}")).json()["data"]
    assert node["status"] == "lost"
    events = (await c.get("/api/events", params={"types": "workload.lost", "limit": 100})).json()[
        "data"
    ]["events"]
    assert any(e["data"]["workload_id"] == w["id"] for e in events)
    await until(lambda: len(sleeps(marker)) == 1, 5)  # the second node's run only
    await c.post(f"/api/workloads/{w['id']}/cancel")
    await wait_status(c, w["id"], {"terminated"})


async def test_docker_runtime_runs_a_locally_imported_image(
    c: httpx.AsyncClient, agents: Any
) -> None:
    problem = probe_docker()
    if problem is not None:
        pytest.fail(f"docker is not usable ({problem}): run scripts/system-deps.sh test")
    await asyncio.to_thread(build_busybox_image)
    label = uuid.uuid4().hex[:8]
    agent = agents(label)
    await until_ready(c, agent)
    node = (await c.get(f"/api/nodes/{agent.id}")).json()["data"]
    w = await submit(
        c,
        label,
        runtime="docker",
        image=BUSYBOX_IMAGE,
        command=["sh", "-c", "echo hello from busybox; echo kept > /workspace/f; exit 4"],
        workspace=f"dock-{label}",
    )
    done = await wait_status(c, w["id"], FINISHED, within=60)
    assert done["status"] == "failed", (done, agent.log())
    assert done["exit_code"] == 4
    assert await lines(c, w["id"]) == ["hello from busybox"]
    assert (agent.workspace(f"dock-{label}") / "f").read_text() == "kept\n"
    assert node["status"] == "ready"
    with contextlib.suppress(Exception):
        await c.post(f"/api/workloads/{w['id']}/cancel")
