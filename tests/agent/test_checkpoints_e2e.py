"""Checkpoints of a machine's workspace through a real hub and a real node agent (in this
process, so that its counters can be read): mid-run checkpoints come from the change journal and
ask the hub only about new blobs, the hub takes its parent's blobs as stored, and the checkpoint
that ends the machine walks the whole workspace."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mmap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.support
from agenthub.agent.checkpoints import Snapshots
from agenthub.agent.node import AgentConfig, NodeAgent
from agenthub.agent.runtimes import detect_runtimes, unavailable_reasons
from agenthub.agent.snapshot import scan
from tests.agent.snapshot_support import past_racy_window
from tests.api.gateway_support import mint
from tests.api.hub_support import new_project, spawn, wait_machine
from tests.support import Backend, HubProcess, bearer

pytestmark = pytest.mark.db


@pytest.fixture(scope="module", autouse=True)
def sandbox_available() -> None:
    if "sandbox" not in detect_runtimes("00000000"):
        pytest.skip(f"no sandbox runtime here: {unavailable_reasons().get('sandbox')}")


@pytest.fixture(scope="module")
def hub(
    backend_factory: Callable[[], Backend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubProcess]:
    """A hub of this module's own: the only node in its default pool is the test's agent."""
    data = tmp_path_factory.mktemp("journal-hub") / "data"
    env = backend_factory().env(
        data,
        machine_controller_interval_s="0.2",
        machine_accrual_interval_s="0.5",
        machine_cpu_millicores="100",
        machine_memory_mib="64",
    )
    process = HubProcess(env, data.parent / "hub.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin_key(hub: HubProcess) -> str:
    out = tests.support.run_cli(hub.env, "admin", "create-key", "--name", "journal", "--json")
    return str(json.loads(out.stdout)["key"])


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[NodeAgent]:
    agent = NodeAgent(config)
    task = asyncio.create_task(agent.run())
    deadline = time.monotonic() + 15
    while agent.work is None or agent.work.polls < 1:
        assert not task.done(), f"the agent stopped: {await task}"
        assert time.monotonic() < deadline, "the agent did not start polling"
        await asyncio.sleep(0.02)
    try:
        yield agent
    finally:
        agent.shutdown()
        assert await asyncio.wait_for(task, 15) == 0


async def checkpoint_now(admin: httpx.AsyncClient, machine: str) -> dict[str, Any]:
    r = await admin.post(f"/api/v1/machines/{machine}/checkpoint", json={})
    assert r.status_code == 201, r.text
    return await read_checkpoint(admin, r.json()["checkpoint_uuid"])


async def read_checkpoint(
    admin: httpx.AsyncClient, checkpoint: str, within: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        data: dict[str, Any] = (await admin.get(f"/api/v1/checkpoints/{checkpoint}")).json()
        if data["status"] in ("ready", "failed"):
            assert data["status"] == "ready", data
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.1)


async def logged(admin: httpx.AsyncClient, machine: str, line: str) -> None:
    """Wait until the machine's output has ``line``."""
    deadline = time.monotonic() + 20
    while line not in (await admin.get(f"/api/v1/machines/{machine}/logs")).json()["logs"]:
        assert time.monotonic() < deadline, f"the machine never printed {line!r}"
        await asyncio.sleep(0.1)


def digests(manifest: dict[str, Any]) -> set[str]:
    return {e["sha256"] for e in manifest.values() if e.get("type", "file") == "file"}


def map_shared(path: Path) -> mmap.mmap:
    """``path`` mapped for writing; the descriptor is closed, the mapping keeps the file open."""
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), 0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_running_machine_is_checkpointed_from_its_journal_and_its_end_walks_fully(
    hub: HubProcess, admin_key: str, tmp_path: Path
) -> None:
    token = mint(hub, admin_key, "default").token
    config = AgentConfig(
        hub_url=hub.url, token=token, work_dir=tmp_path / "node", keepalive_interval_s=1.0
    )
    blobs = Path(hub.env["AGENTHUB_DATA_DIR"]) / "blobs"
    async with (
        running_agent(config) as agent,
        httpx.AsyncClient(base_url=hub.url, headers=bearer(admin_key), timeout=60) as admin,
    ):
        assert agent.work is not None
        snapshots: Snapshots = agent.work.snapshots
        project = (await new_project(admin, "journal"))["uuid"]
        script = (
            "for i in $(seq 1 30); do echo file $i > f$i.txt; done\n"
            "head -c 8192 /dev/zero > mapped.bin\n"
            "mkdir -p deep/er && echo deep > deep/er/d.txt\n"
            "echo ready\n"
            "while [ ! -e go ]; do sleep 0.1; done\n"
            "mkdir made-inside && echo inside > made-inside/inside.txt\n"
            "echo wrote\n"
            "sleep 300\n"
        )
        spawned = await spawn(admin, project, script)
        assert spawned.status_code == 201, spawned.text
        machine, vm_id = spawned.json()["machine_uuid"], spawned.json()["vm_id"]
        await wait_machine(admin, machine, {"working"})
        await logged(admin, machine, "ready")
        ws = config.work_dir / "workspaces" / vm_id
        past_racy_window()  # so that the first checkpoint trusts these files from then on

        # The first mid-run checkpoint starts the journal and walks fully; the hub is asked
        # about every blob.
        first = await checkpoint_now(admin, machine)
        assert (snapshots.full_scans, snapshots.journal_scans) == (1, 0)
        assert vm_id in snapshots._journals
        assert snapshots.asked[-1] == len(digests(first["file_manifest"])) == 32

        # Two files changed and two new here, and a directory and file made by the machine in
        # its sandbox: the journal names them, and only the five new blobs are asked about.
        (ws / "f3.txt").write_text("changed three\n")
        (ws / "deep" / "er" / "d.txt").write_text("changed deep\n")
        (ws / "deep" / "new.txt").write_text("new\n")
        (ws / "go").write_text("go\n")
        await logged(admin, machine, "wrote")
        second = await checkpoint_now(admin, machine)
        assert (snapshots.full_scans, snapshots.journal_scans) == (1, 1)
        assert snapshots.asked[-1] == 5
        assert "made-inside/inside.txt" in second["file_manifest"]
        assert second["file_manifest"] == scan(ws, state_dir=tmp_path / "full-2").manifest

        # Should the hub lack a blob the node believes it has (its store changed under it),
        # the commit is refused and the node asks about every blob and commits again.
        (ws / "extra.txt").write_text("never asked about\n")
        extra = sha256(ws / "extra.txt")
        snapshots._known[vm_id] = snapshots._known[vm_id] | {extra}
        third = await checkpoint_now(admin, machine)
        assert third["file_manifest"]["extra.txt"]["sha256"] == extra
        assert list(snapshots.asked)[-2:] == [0, 36]
        assert (blobs / extra[:2] / extra[2:4] / extra).is_file()

        # The hub takes the blobs of the parent checkpoint as stored: one removed from its
        # store behind its back (which nothing in the hub ever does) is not looked for, so
        # nobody is asked to upload it again.
        kept = third["file_manifest"]["f1.txt"]["sha256"]
        (blobs / kept[:2] / kept[2:4] / kept).unlink()
        # A write through a shared mapping raises no inotify event while it is mapped.
        mapping = map_shared(ws / "mapped.bin")
        try:
            mapping[:6] = b"MAPPED"
            mapping.flush()
            fourth = await checkpoint_now(admin, machine)
            assert (snapshots.full_scans, snapshots.journal_scans) == (1, 3)
            assert snapshots.asked[-1] == 0
            assert not (blobs / kept[:2] / kept[2:4] / kept).exists()
            assert fourth["parent_checkpoint"] == third["uuid"]
            stale = fourth["file_manifest"]["mapped.bin"]["sha256"]
            assert stale == first["file_manifest"]["mapped.bin"]["sha256"]

            # The machine's final checkpoint walks the whole workspace, so it has the write.
            stopped = await admin.post(
                f"/api/v1/machines/{machine}/terminate", json={"create_checkpoint": True}
            )
            assert stopped.status_code == 200, stopped.text
            final = await read_checkpoint(admin, stopped.json()["final_checkpoint"])
            assert final["type"] == "terminate"
            assert (snapshots.full_scans, snapshots.journal_scans) == (2, 3)
            assert final["file_manifest"]["mapped.bin"]["sha256"] == sha256(ws / "mapped.bin")
            assert final["file_manifest"]["mapped.bin"]["sha256"] != stale
            assert snapshots.asked[-1] == 1  # only the mapped file's new content
            assert not snapshots._journals  # closed with the workload
        finally:
            mapping.close()
