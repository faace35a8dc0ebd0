"""The node agent against a real hub: register, ready, keepalive, re-register, refusal, stop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agenthub import __version__
from agenthub.agent.host import cpu_millicores, memory_mib
from agenthub.agent.node import AgentConfig, NodeAgent, derive_machine_id
from agenthub.cli.agent import parse_label, parse_taint
from tests.support import Backend, HubProcess, bearer, free_port, run_cli

pytestmark = pytest.mark.db


def mint(env: dict[str, str], *args: str, pool: str = "default") -> dict[str, Any]:
    """A machine token, minted by the CLI the way an operator does."""
    out = run_cli(env, "machine", "create", "--pool", pool, "--json", *args)
    return dict(json.loads(out.stdout))


def config(url: str, token: str, tmp_path: Path, **overrides: Any) -> AgentConfig:
    settings: dict[str, Any] = {"keepalive_interval_s": 0.5, "work_dir": tmp_path / "work"}
    settings.update(overrides)
    return AgentConfig(hub_url=url, token=token, **settings)


async def start(agent: NodeAgent, within: float = 15.0) -> asyncio.Task[int]:
    """Run the agent in the background and wait until its first keepalive went through."""
    task = asyncio.create_task(agent.run())
    ready = asyncio.create_task(agent.ready.wait())
    await asyncio.wait({task, ready}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if not agent.ready.is_set():
        agent.shutdown()
        code = await task
        raise AssertionError(f"agent did not become ready (run() returned {code})")
    return task


async def eventually(condition: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def find(response: httpx.Response, machine_id: str) -> dict[str, Any] | None:
    """The machine's entry in a ``GET /api/v1/machine/list`` answer."""
    assert response.status_code == 200, response.text
    for item in response.json():
        if item["state"]["machine_id"] == machine_id:
            return dict(item)
    return None


async def listed(url: str, token: str, machine_id: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=10) as http:
        response = await http.get("/api/v1/machine/list", params={"pool_name": "default"})
    return find(response, machine_id)


@pytest.fixture(scope="module")
def short_ttl_hub(
    backend_factory: Callable[[], Backend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    """A hub that forgets a machine 2 s after its last keepalive; it has a `gpu` pool."""
    env = backend_factory().env(
        tmp_path_factory.mktemp("short-ttl"),
        machine_keepalive_ttl_s="2",
        node_reaper_interval_s="0.2",
        pools="gpu",
    )
    process = HubProcess(env, tmp_path_factory.mktemp("logs") / "short-ttl-hub.log")
    yield process
    process.stop()


async def test_registers_becomes_ready_and_keeps_alive(
    hub: HubProcess, admin_key: str, tmp_path: Path
) -> None:
    minted = mint(hub.env)
    agent = NodeAgent(
        config(
            hub.url,
            minted["token"],
            tmp_path,
            hostname="worker-ready",
            labels={"zone": "a"},
            taints=[{"key": "dedicated", "value": "agents", "effect": "NoSchedule"}],
        )
    )
    task = await start(agent)
    try:
        # Nothing given on the command line: id and pool come from the token's binding.
        assert (agent.machine_id, agent.pool_name) == (minted["machine_id"], "default")
        assert agent.registrations == 1
        item = await listed(hub.url, minted["token"], minted["machine_id"])
        assert item is not None
        state = item["state"]
        assert (state["status"], state["pool_name"], state["hostname"]) == (
            "ready",
            "default",
            "worker-ready",
        )
        assert (state["cpu"], state["memory"]) == (cpu_millicores(), memory_mib())
        assert 0 <= item["metrics"]["cpu_utilization_pct"] <= 100
        assert item["metrics"]["total_cpu_available"] == cpu_millicores()
        # The extensions beyond the document's fields reach the node record.
        async with httpx.AsyncClient(base_url=hub.url, headers=bearer(admin_key)) as http:
            response = await http.get(f"/api/nodes/{minted['machine_id']}")
        assert response.status_code == 200, response.text
        node = response.json()["data"]
        assert node["labels"] == {"zone": "a"}
        assert node["taints"] == [{"key": "dedicated", "value": "agents", "effect": "NoSchedule"}]
        assert node["agent_version"] == __version__
        before = agent.keepalives
        await eventually(lambda: agent.keepalives >= before + 3)
        assert agent.registrations == 1
    finally:
        agent.shutdown()
        assert await asyncio.wait_for(task, 5) == 0


async def test_a_pool_token_gets_a_machine_id_derived_from_host_and_token(
    hub: HubProcess, tmp_path: Path
) -> None:
    minted = mint(hub.env, "--token-type", "worker")
    assert minted["machine_id"] is None
    agent = NodeAgent(config(hub.url, minted["token"], tmp_path, hostname="worker-pool"))
    task = await start(agent)
    try:
        expected = derive_machine_id("worker-pool", minted["token"])
        assert agent.machine_id == expected
        assert len(expected) == 8
        assert int(expected, 16) >= 0
        assert await listed(hub.url, minted["token"], expected) is not None
    finally:
        agent.shutdown()
        assert await asyncio.wait_for(task, 5) == 0


async def test_re_registers_after_its_ttl_lapses(
    short_ttl_hub: HubProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agenthub.agent")
    minted = mint(short_ttl_hub.env)
    # Keepalives 4 s apart against a 2 s TTL: the hub forgets the machine between two of them.
    agent = NodeAgent(config(short_ttl_hub.url, minted["token"], tmp_path, keepalive_interval_s=4))
    task = await start(agent)
    try:
        assert agent.registrations == 1
        await eventually(lambda: agent.registrations >= 2 and agent.keepalives >= 2, within=20)
        assert "re-registering" in caplog.text
        assert await listed(short_ttl_hub.url, minted["token"], minted["machine_id"]) is not None
    finally:
        agent.shutdown()
        assert await asyncio.wait_for(task, 5) == 0


async def refused(url: str, token: str, tmp_path: Path, **overrides: Any) -> NodeAgent:
    """Run an agent the hub must refuse; it ends by itself with exit code 2."""
    agent = NodeAgent(config(url, token, tmp_path, **overrides))
    assert await asyncio.wait_for(agent.run(), 15) == 2
    assert agent.registrations == 0
    assert not agent.ready.is_set()
    return agent


async def test_a_token_of_another_pool_exits_with_code_2(
    short_ttl_hub: HubProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = mint(short_ttl_hub.env, pool="gpu")["token"]
    await refused(short_ttl_hub.url, token, tmp_path, pool_name="default")
    assert "the hub refused this machine token" in caplog.text


async def test_a_token_bound_to_another_machine_exits_with_code_2(
    hub: HubProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = mint(hub.env, "--machine-id", uuid.uuid4().hex[:8])["token"]
    await refused(hub.url, token, tmp_path, machine_id=uuid.uuid4().hex[:8])
    assert "the hub refused this machine token" in caplog.text


async def test_an_unknown_token_exits_with_code_2(
    hub: HubProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await refused(hub.url, "ahm_" + uuid.uuid4().hex, tmp_path)
    assert "the hub refused this machine token" in caplog.text


async def test_backs_off_while_the_hub_is_unreachable_and_stops_on_shutdown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    agent = NodeAgent(config(url, "ahm_unused", tmp_path, keepalive_interval_s=30))
    task = asyncio.create_task(agent.run())
    await eventually(lambda: "retrying in" in caplog.text, within=10)
    assert agent.registrations == 0
    begun = time.monotonic()
    agent.shutdown()
    assert await asyncio.wait_for(task, 5) == 0
    assert time.monotonic() - begun < 1.0


async def test_shutdown_from_another_thread_stops_promptly(hub: HubProcess, tmp_path: Path) -> None:
    minted = mint(hub.env)
    # A long interval: run() must not wait for the next keepalive to notice the stop.
    agent = NodeAgent(config(hub.url, minted["token"], tmp_path, keepalive_interval_s=60))
    task = await start(agent)
    begun = time.monotonic()
    threading.Thread(target=agent.shutdown).start()
    assert await asyncio.wait_for(task, 5) == 0
    assert time.monotonic() - begun < 1.0


async def test_shutdown_before_run_returns_at_once(tmp_path: Path) -> None:
    agent = NodeAgent(config("http://127.0.0.1:9", "ahm_unused", tmp_path))
    agent.shutdown()
    assert await asyncio.wait_for(agent.run(), 1) == 0
    assert agent.registrations == 0


def test_the_agent_command_runs_until_sigterm(hub: HubProcess, tmp_path: Path) -> None:
    minted = mint(hub.env)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    # Hub URL and token through the environment, so the token never shows in `ps`.
    env.update({"AGENTHUB_AGENT_HUB_URL": hub.url, "AGENTHUB_AGENT_TOKEN": minted["token"]})
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agenthub",
                "agent",
                "--keepalive-interval",
                "0.5",
                "--work-dir",
                str(tmp_path / "work"),
                "--label",
                "zone=b",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            list_url = f"{hub.url}/api/v1/machine/list"
            while (
                find(httpx.get(list_url, headers=bearer(minted["token"])), minted["machine_id"])
                is None
            ):
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    output = log_path.read_text()
    assert f"registered machine {minted['machine_id']}" in output
    assert minted["token"] not in output


def test_labels_and_taints_parse() -> None:
    assert parse_label("zone=eu-west/1a") == ("zone", "eu-west/1a")
    assert parse_label("gpu.model=A100 80GB") == ("gpu.model", "A100 80GB")
    assert parse_label("empty=") == ("empty", "")
    assert parse_taint("dedicated=agents:NoSchedule") == {
        "key": "dedicated",
        "value": "agents",
        "effect": "NoSchedule",
    }
    assert parse_taint("spot:PreferNoSchedule") == {
        "key": "spot",
        "value": "",
        "effect": "PreferNoSchedule",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zone", "must look like key=value"),
        ("-bad=x", "label key '-bad'"),
        ("=x", "label key ''"),
        ("k=" + "v" * 254, "longer than 253"),
    ],
)
def test_bad_labels_are_explained(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_label(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu", "must look like key=value:NoSchedule"),
        ("gpu=yes:Sometimes", "effect 'Sometimes' must be one of NoSchedule"),
        ("bad key=x:NoExecute", "taint key 'bad key'"),
    ],
)
def test_bad_taints_are_explained(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_taint(text)


def test_the_agent_command_rejects_bad_flags() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    args = ["agent", "--hub", "http://127.0.0.1:9", "--token", "t"]
    result = run_cli(env, *args, "--taint", "gpu=yes:Sometimes", check=False)
    assert result.returncode == 2
    assert "taint effect 'Sometimes' must be one of" in result.stderr
    result = run_cli(env, *args, "--machine-id", "XYZ", check=False)
    assert result.returncode == 2
    assert "8 lowercase hexadecimal" in result.stderr
