"""The node agent's work loop against a real hub, real sandboxes and real processes.

Each test's agent carries a label of its own and its workloads select it, so that work is never
placed on a machine another test left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import tests.support
from agenthub.agent.node import AgentConfig, NodeAgent
from agenthub.agent.runtimes import detect_runtimes, unavailable_reasons
from agenthub.agent.runtimes.base import ExitInfo, Usage
from agenthub.agent.work import WorkLoop
from agenthub.agent.workload import AssignmentError, launch_spec, outcome, workspace_path
from tests.api.gateway_support import Machine, mint
from tests.support import Backend, HubProcess, bearer

pytestmark = pytest.mark.db

FINISHED = ("succeeded", "failed", "terminated", "lost")
LABEL = "work-loop-test"


@pytest.fixture(scope="module", autouse=True)
def sandbox_available() -> None:
    if "sandbox" not in detect_runtimes("00000000"):
        pytest.skip(f"no sandbox runtime here: {unavailable_reasons().get('sandbox')}")


@pytest.fixture(scope="module")
def work_hub(
    backend_factory: Callable[[], Backend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    """A hub of this module's own, keeping enough log lines to see an agent drop some."""
    env = backend_factory().env(
        tmp_path_factory.mktemp("work-hub"), workload_log_max_lines="100000"
    )
    process = HubProcess(env, tmp_path_factory.mktemp("logs") / "work-hub.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def work_admin_key(work_hub: HubProcess) -> str:
    out = tests.support.run_cli(
        work_hub.env, "admin", "create-key", "--name", "work-admin", "--json"
    )
    return str(json.loads(out.stdout)["key"])


@pytest.fixture
async def admin(work_hub: HubProcess, work_admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=work_hub.url, headers=bearer(work_admin_key), timeout=30
    ) as client:
        yield client


def agent_config(url: str, token: str, work_dir: Path, label: str, **overrides: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "keepalive_interval_s": 1.0,
        "work_dir": work_dir,
        "labels": {LABEL: label},
    }
    settings.update(overrides)
    return AgentConfig(hub_url=url, token=token, **settings)


async def start(agent: NodeAgent, within: float = 15.0) -> asyncio.Task[int]:
    """Run the agent in the background until its work loop polls."""
    task = asyncio.create_task(agent.run())
    deadline = time.monotonic() + within
    while agent.work is None or agent.work.polls < 1:
        if task.done() or time.monotonic() > deadline:
            agent.shutdown()
            raise AssertionError(f"agent did not start polling (run() gave {await task})")
        await asyncio.sleep(0.02)
    return task


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[NodeAgent]:
    agent = NodeAgent(config)
    task = await start(agent)
    try:
        yield agent
    finally:
        agent.shutdown()
        assert await asyncio.wait_for(task, 15) == 0


def work_of(agent: NodeAgent) -> WorkLoop:
    assert agent.work is not None
    return agent.work


async def submit(admin: httpx.AsyncClient, label: str, command: list[str], **fields: Any) -> str:
    body: dict[str, Any] = {
        "command": command,
        "runtime": "sandbox",
        "resources": {"cpu_millicores": 100, "memory_mib": 128},
        "node_selector": {LABEL: label},
    }
    body.update(fields)
    response = await admin.post("/api/workloads", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def workload(admin: httpx.AsyncClient, workload_id: str) -> dict[str, Any]:
    response = await admin.get(f"/api/workloads/{workload_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


async def reaches(
    admin: httpx.AsyncClient, workload_id: str, status: str, within: float = 20.0
) -> dict[str, Any]:
    """The workload once the hub shows ``status``; fails early on another final status."""
    deadline = time.monotonic() + within
    while True:
        data = await workload(admin, workload_id)
        if data["status"] == status:
            return data
        assert data["status"] not in FINISHED, data
        assert time.monotonic() < deadline, f"still {data['status']}: {data}"
        await asyncio.sleep(0.05)


async def log_lines(admin: httpx.AsyncClient, workload_id: str) -> list[dict[str, Any]]:
    response = await admin.get(f"/api/workloads/{workload_id}/logs", params={"tail": 10000})
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["lines"])


def texts(lines: list[dict[str, Any]], stream: str) -> list[str]:
    return [line["text"] for line in lines if line["stream"] == stream]


def marker(seconds: int = 600) -> str:
    """A unique `sleep` argument, to find exactly this test's process on the host."""
    return f"{seconds}.{uuid.uuid4().int % 10**6:06d}"


def sleepers(arg: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", arg]:
            found.append(proc)
    return found


async def gone(arg: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while sleepers(arg):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def new_machine(hub: HubProcess, admin_key: str) -> Machine:
    return mint(hub, admin_key, machine_id=uuid.uuid4().hex[:8])


async def test_a_workload_runs_and_its_output_reaches_the_hub(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    work_dir = tmp_path / "work"
    async with running_agent(agent_config(work_hub.url, machine.token, work_dir, label)) as agent:
        assert "sandbox" in agent.runtimes
        script = 'echo hello; echo "K=$K"; echo oops >&2; touch made-here'
        workload_id = await submit(
            admin, label, ["sh", "-c", script], env={"K": "V"}, workspace=f"ws-{label}"
        )
        data = await reaches(admin, workload_id, "succeeded")
        assert (data["exit_code"], data["error"], data["node_id"]) == (
            0,
            None,
            machine.machine_id,
        )
        assert data["started_at"] is not None
        # The final status never overtakes the output printed before it.
        lines = await log_lines(admin, workload_id)
        assert texts(lines, "stdout") == ["hello", "K=V"]
        assert texts(lines, "stderr") == ["oops"]
        # The workspace outlives the workload (later features snapshot it).
        assert (work_dir / "workspaces" / f"ws-{label}" / "made-here").is_file()
        work = work_of(agent)
        await eventually(lambda: work.running == {})
        assert (work.started, work.finished, work.cancelled) == (1, 1, 0)
        # A handful of requests for the whole run: status and lines are batched.
        assert work.reporter.reports <= 6


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_failing_command_fails_with_its_exit_code(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    async with running_agent(agent_config(work_hub.url, machine.token, tmp_path, label)):
        workload_id = await submit(admin, label, ["sh", "-c", "echo failing >&2; exit 3"])
        data = await reaches(admin, workload_id, "failed")
        assert (data["exit_code"], data["error"]) == (3, "exited with code 3")
        assert texts(await log_lines(admin, workload_id), "stderr") == ["failing"]


async def test_a_workload_past_its_timeout_fails(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    arg = marker()
    async with running_agent(agent_config(work_hub.url, machine.token, tmp_path, label)):
        workload_id = await submit(admin, label, ["sleep", arg], timeout_s=1.0)
        data = await reaches(admin, workload_id, "failed")
        assert "timed out" in (data["error"] or ""), data
        assert await gone(arg)


async def test_a_cancel_stops_the_process_within_two_seconds(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    arg = marker()
    # The default long poll: the cancel must wake it, not wait for it to time out.
    config = agent_config(work_hub.url, machine.token, tmp_path, label, poll_wait_s=20.0)
    async with running_agent(config) as agent:
        workload_id = await submit(admin, label, ["sleep", arg])
        await reaches(admin, workload_id, "running")
        assert len(sleepers(arg)) == 1
        # Let the agent park its poll, so the cancel has to wake it.
        await asyncio.sleep(1.0)
        begun = time.monotonic()
        response = await admin.post(
            f"/api/workloads/{workload_id}/cancel", json={"reason": "test says stop"}
        )
        assert response.status_code == 202, response.text
        data = await reaches(admin, workload_id, "terminated", within=2.0)
        assert time.monotonic() - begun < 2.0
        assert data["error"] == "test says stop"
        assert not sleepers(arg)
        assert work_of(agent).cancelled == 1


async def test_an_agent_that_shuts_down_stops_its_workloads_and_says_so(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    config = agent_config(work_hub.url, machine.token, tmp_path, label)
    arg = marker()
    agent = NodeAgent(config)
    task = await start(agent)
    workload_id = await submit(admin, label, ["sleep", arg])
    await reaches(admin, workload_id, "running")
    begun = time.monotonic()
    agent.shutdown()
    assert await asyncio.wait_for(task, 15) == 0
    assert time.monotonic() - begun < 3.0
    assert not sleepers(arg)
    data = await workload(admin, workload_id)
    assert (data["status"], data["error"]) == ("terminated", "the node agent is shutting down")
    # The same machine comes back: the hub's view stays as it is, nothing runs again.
    async with running_agent(config) as again:
        await asyncio.sleep(1.0)
        assert work_of(again).running == {}
        assert (await workload(admin, workload_id))["status"] == "terminated"


async def test_a_new_agent_corrects_the_hub_after_the_old_one_was_killed(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    arg = marker()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    env.update({"AGENTHUB_AGENT_HUB_URL": work_hub.url, "AGENTHUB_AGENT_TOKEN": machine.token})
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agenthub",
            "agent",
            "--keepalive-interval",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--label",
            f"{LABEL}={label}",
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            workload_id = await submit(admin, label, ["sleep", arg])
            await reaches(admin, workload_id, "running", within=30)
            assert len(sleepers(arg)) == 1
        finally:
            # No chance to stop or report anything.
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
    assert (await workload(admin, workload_id))["status"] == "running"
    config = agent_config(work_hub.url, machine.token, tmp_path / "work", label)
    async with running_agent(config):
        # Whatever the old agent left is gone once the new one polls ...
        assert await gone(arg), log_path.read_text()
        # ... and its first poll, listing nothing, tells the hub that the run is over.
        deadline = time.monotonic() + 10
        while (data := await workload(admin, workload_id))["status"] not in FINISHED:
            assert time.monotonic() < deadline, data
            await asyncio.sleep(0.05)
        assert data["status"] == "lost", data


async def test_lines_beyond_the_buffer_are_dropped_and_the_loss_is_logged(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    async with running_agent(agent_config(work_hub.url, machine.token, tmp_path, label)) as agent:
        # Far faster than a report every 0.2 s can carry: the pending buffer overflows.
        workload_id = await submit(admin, label, ["seq", "1", "60000"])
        await reaches(admin, workload_id, "succeeded", within=30)
        lines = await log_lines_all(admin, workload_id)
        reporter = work_of(agent).reporter
        assert reporter.dropped_lines > 0
        notices = [
            int(m.group(1))
            for text in texts(lines, "stderr")
            if (m := re.fullmatch(r"\[agent\] (\d+) log lines dropped", text))
        ]
        assert sum(notices) == reporter.dropped_lines
        stdout = texts(lines, "stdout")
        assert len(stdout) + reporter.dropped_lines == 60000
        # The newest lines are kept, and in order.
        assert stdout[-1] == "60000"
        assert [int(x) for x in stdout] == sorted(int(x) for x in stdout)
        assert reporter.reports < 60


async def log_lines_all(admin: httpx.AsyncClient, workload_id: str) -> list[dict[str, Any]]:
    """Every stored line, page by page."""
    lines: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await admin.get(f"/api/workloads/{workload_id}/logs", params={"after_id": after})
        assert response.status_code == 200, response.text
        page = response.json()["data"]["lines"]
        if not page:
            return lines
        lines.extend(page)
        after = page[-1]["id"]


async def test_a_workload_survives_a_hub_restart_and_reports_when_it_is_back(
    backend_factory: Callable[[], Backend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = backend_factory().env(tmp_path / "hub-data")
    hub = HubProcess(env, tmp_path / "hub-1.log")
    try:
        out = tests.support.run_cli(env, "admin", "create-key", "--name", "a", "--json")
        headers = bearer(json.loads(out.stdout)["key"])
        label = uuid.uuid4().hex[:12]
        machine = new_machine(hub, headers["Authorization"].removeprefix("Bearer "))
        # A short long poll: a stopping hub waits for open requests before it exits.
        config = agent_config(hub.url, machine.token, tmp_path / "work", label, poll_wait_s=2.0)
        arg = marker(6)
        async with running_agent(config) as agent:
            async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as admin:
                script = f"echo before; sleep {arg}; echo after"
                workload_id = await submit(admin, label, ["sh", "-c", script])
                await reaches(admin, workload_id, "running")
                deadline = time.monotonic() + 10
                while not await log_lines(admin, workload_id):
                    assert time.monotonic() < deadline, "no output reached the hub"
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(hub.stop)
            work = work_of(agent)
            # The hub is gone; the workload is not.
            assert work.running == {workload_id: "running"}
            assert len(sleepers(arg)) == 1
            # It ends while the hub is away: known here, listed until the hub has heard it.
            await eventually(lambda: work.running.get(workload_id) == "succeeded", within=10)
            await asyncio.sleep(1.0)
            # The same address, database and data directory: the hub came back.
            monkeypatch.setattr(tests.support, "free_port", lambda: hub.port)
            hub = await asyncio.to_thread(HubProcess, env, tmp_path / "hub-2.log")
            async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=30) as admin:
                data = await reaches(admin, workload_id, "succeeded", within=30)
                assert data["exit_code"] == 0
                lines = await log_lines(admin, workload_id)
                assert texts(lines, "stdout") == ["before", "after"]
            await eventually(lambda: work.running == {}, within=15)
    finally:
        hub.stop()


async def test_a_machine_without_runtimes_stays_registered_and_gets_no_work(
    work_hub: HubProcess,
    work_admin_key: str,
    admin: httpx.AsyncClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    config = agent_config(work_hub.url, machine.token, tmp_path, label, runtimes={})
    async with running_agent(config) as agent:
        assert "apt-get install bubblewrap" in caplog.text
        workload_id = await submit(admin, label, ["true"])
        keepalives = agent.keepalives
        await asyncio.sleep(2.0)
        assert agent.keepalives > keepalives
        assert (await workload(admin, workload_id))["status"] == "queued"
        assert work_of(agent).started == 0
        response = await admin.post(f"/api/workloads/{workload_id}/cancel")
        assert response.status_code == 202, response.text


def test_the_agent_command_checks_its_work_flags() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    args = ["agent", "--hub", "http://127.0.0.1:9", "--token", "t"]
    result = tests.support.run_cli(env, *args, "--poll-wait", "31", check=False)
    assert result.returncode == 2
    assert "--poll-wait must be between 0 and 30 seconds" in result.stderr
    result = tests.support.run_cli({**env, "COLUMNS": "200"}, "agent", "--help")
    assert "--unsafe-no-sandbox" in result.stdout
    assert "development only" in result.stdout


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "x" * 129, "sp ace", None, 7])
def test_bad_workspace_names_are_refused_on_the_node(name: object, tmp_path: Path) -> None:
    with pytest.raises(AssignmentError, match="workspace name"):
        workspace_path(tmp_path, name)


def test_good_workspace_names_map_into_the_work_dir(tmp_path: Path) -> None:
    assert workspace_path(tmp_path, "a.b_c-1") == tmp_path / "workspaces" / "a.b_c-1"


@pytest.mark.parametrize("working_dir", ["/etc", "../up", "a/../../b"])
def test_working_dirs_outside_the_workspace_are_refused(working_dir: str, tmp_path: Path) -> None:
    assignment = {"command": ["true"], "working_dir": working_dir}
    with pytest.raises(AssignmentError, match="working_dir"):
        launch_spec(assignment, ("w", 1), tmp_path)


def test_a_launch_spec_carries_the_assignment(tmp_path: Path) -> None:
    assignment = {
        "command": ["sh", "-c", "true"],
        "env": {"K": "V"},
        "working_dir": "src/app",
        "resources": {"cpu_millicores": 250, "memory_mib": 64, "gpu_count": 0},
        "timeout_s": 5,
        "network": False,
    }
    spec = launch_spec(assignment, ("w", 2), tmp_path)
    assert (spec.workload_id, spec.attempt, spec.command, spec.env) == (
        "w",
        2,
        ["sh", "-c", "true"],
        {"K": "V"},
    )
    assert (spec.working_dir, spec.cpu_millicores, spec.memory_mib, spec.timeout_s) == (
        "src/app",
        250,
        64,
        5.0,
    )
    assert spec.network is False


@pytest.mark.parametrize(
    ("info", "stopped", "expected"),
    [
        (ExitInfo(0, "exited", None, Usage()), False, ("succeeded", 0, None)),
        (ExitInfo(2, "exited", None, Usage()), False, ("failed", 2, "exited with code 2")),
        (
            ExitInfo(137, "exited", "out of memory: exceeded the 64 MiB limit", Usage()),
            False,
            ("failed", 137, "out of memory: exceeded the 64 MiB limit"),
        ),
        (ExitInfo(0, "exited", None, Usage()), True, ("terminated", 0, None)),
        (ExitInfo(143, "stopped", None, Usage()), True, ("terminated", 143, None)),
        (
            ExitInfo(137, "timeout", "timed out after 5s", Usage()),
            False,
            ("failed", 137, "timed out after 5s"),
        ),
        (ExitInfo(None, "error", "no such file", Usage()), False, ("failed", None, "no such file")),
    ],
)
def test_exit_info_maps_to_a_status(
    info: ExitInfo, stopped: bool, expected: tuple[str, int | None, str | None]
) -> None:
    assert outcome(info, stopped) == expected


# Inside the sandbox: call the hub with the workload's own token, print the HTTP status.
_CALL_HUB = (
    "import os, urllib.request as u\n"
    "r = u.Request(os.environ['AGENTHUB_URL'] + '/api/workloads',"
    " headers={'Authorization': 'Bearer ' + os.environ['AGENTHUB_TOKEN']})\n"
    "try:\n"
    "    print(u.urlopen(r, timeout=10).status)\n"
    "except Exception as e:\n"
    "    print(getattr(e, 'code', e))\n"
)


async def test_files_token_and_hub_url_reach_the_sandboxed_run(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    work_dir = tmp_path / "work"
    script = (
        "cat conf/app.txt; echo appended >> conf/app.txt; stat -c %u conf/app.txt; sh run.sh; "
        'echo "${AGENTHUB_TOKEN%%_*}_"; echo "$AGENTHUB_URL"; '
        'printf %s "$AGENTHUB_TOKEN" > token; python3 -c "$CALL_HUB"'
    )
    files = {"conf/app.txt": "hello\n", "run.sh": "echo from-script\n"}
    async with running_agent(agent_config(work_hub.url, machine.token, work_dir, label)):
        workload_id = await submit(
            admin,
            label,
            ["sh", "-c", script],
            env={"CALL_HUB": _CALL_HUB},
            files=files,
            workspace=f"ws-{label}",
        )
        shown = await workload(admin, workload_id)
        assert shown["files"] == ["conf/app.txt", "run.sh"]  # names only, never contents
        data = await reaches(admin, workload_id, "succeeded")
        assert data["pending_reason"] is None
        stdout = texts(await log_lines(admin, workload_id), "stdout")
    # The files were the workload's own (it could append), under the uid it runs as.
    uid = "65534" if os.geteuid() == 0 and shutil.which("setpriv") else "1000"
    # The token was good while it ran: the hub knew it, and refused it on a route that does
    # not take workload tokens (403, not 401).
    assert stdout == ["hello", uid, "from-script", "ahw_", work_hub.url, "403"]
    workspace = work_dir / "workspaces" / f"ws-{label}"
    assert (workspace / "conf" / "app.txt").read_text() == "hello\nappended\n"
    # Once the run is over, its token is refused outright.
    token = (workspace / "token").read_text()
    async with httpx.AsyncClient(base_url=work_hub.url, headers=bearer(token)) as ended:
        response = await ended.get("/api/workloads")
    assert response.status_code == 401, response.text
    assert "no longer running" in response.json()["error"]["message"]


async def test_a_file_path_through_a_symlink_fails_the_run(
    work_hub: HubProcess, work_admin_key: str, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    label = uuid.uuid4().hex[:12]
    machine = new_machine(work_hub, work_admin_key)
    work_dir = tmp_path / "work"
    outside = tmp_path / "etc"
    outside.mkdir()
    # What an earlier run of the same workspace may have left: a link out of it.
    workspace = work_dir / "workspaces" / f"ws-{label}"
    workspace.mkdir(parents=True)
    (workspace / "src").symlink_to(outside)
    async with running_agent(agent_config(work_hub.url, machine.token, work_dir, label)):
        workload_id = await submit(
            admin,
            label,
            ["sh", "-c", "echo should not run"],
            files={"src/passwd": "root::0:0::/:/bin/sh\n"},
            workspace=f"ws-{label}",
        )
        data = await reaches(admin, workload_id, "failed")
    assert data["error"].startswith("cannot write file 'src/passwd'"), data
    assert "symlink" in data["error"]
    assert list(outside.iterdir()) == []
    assert texts(await log_lines(admin, workload_id), "stdout") == []
