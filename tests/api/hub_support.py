"""``agenthub up`` in a child process (hub + local node agent), for Hub-surface tests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import Backend, bearer, free_port

ENDED = {"completed", "failed", "terminated"}


class UpProcess:
    """``agenthub up --json``: its URL, the bootstrap admin key and the local machine id."""

    def __init__(self, backend: Backend, data_dir: Path, **settings: Any) -> None:
        self.env = backend.env(data_dir, **settings)
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir.parent / f"up-{self.port}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agenthub", "up", "--port", str(self.port), "--json"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.url: str = info["url"]
        self.key: str = info["bootstrap_admin_key"]
        self.machine_id: str = info["local_machine_id"]
        self._wait_node()

    def _wait_node(self, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/api/nodes", headers=bearer(self.key))
                if r.status_code == 200 and any(
                    n["status"] == "ready" for n in r.json()["data"]["nodes"]
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"agenthub up: no ready node:\n{self.log_path.read_text()}")

    def workspace(self, vm_id: str) -> Path:
        return self.data_dir / "node" / "workspaces" / vm_id

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


async def wait_machine(
    c: httpx.AsyncClient, machine_uuid: str, statuses: set[str], within: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await c.get(f"/api/v1/machines/{machine_uuid}")
        assert r.status_code == 200, r.text
        data = r.json()
        if data["status"] in statuses:
            return data
        await asyncio.sleep(0.1)
    raise AssertionError(f"machine {machine_uuid} never reached {statuses}: {data}")


async def new_project(c: httpx.AsyncClient, name: str, **body: Any) -> dict[str, Any]:
    r = await c.post("/api/v1/projects", json={"name": name, "greediness": 0.5, **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def spawn(c: httpx.AsyncClient, project: str, prompt: str, **body: Any) -> httpx.Response:
    return await c.post(
        "/api/v1/machines",
        json={"type": "shell", "project_uuid": project, "prompt": prompt, **body},
    )


def hub_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the Hub error envelope; return its ``error``."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, body
    assert error["message"]
    assert error["request_id"]
    assert error["timestamp"].endswith("Z")
    assert isinstance(error["details"], dict)
    return error
