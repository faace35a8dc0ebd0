"""The agenthub command, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agenthub import __version__
from tests.support import Backend, bearer, free_port, run_cli


def test_version_json() -> None:
    out = run_cli({"PATH": "/usr/bin:/bin"}, "version", "--json")
    assert json.loads(out.stdout) == {"version": __version__}


def test_production_refuses_default_secret(tmp_path: Path) -> None:
    env = {
        "AGENTHUB_ENV": "production",
        "AGENTHUB_DATA_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = run_cli(env, "serve", "--port", str(free_port()), check=False)
    assert result.returncode != 0
    assert "AGENTHUB_SECRET_KEY" in result.stderr
    assert not (tmp_path / "agenthub.db").exists()


@pytest.mark.db
def test_db_upgrade_reports_the_head(backend: Backend, tmp_path: Path) -> None:
    from agenthub.db.migrate import heads

    out = run_cli(backend.env(tmp_path), "db", "upgrade", "--json")
    data = json.loads(out.stdout)
    assert data["revision"] == heads()[0]
    assert "password" not in data["database"] or "***" in data["database"]


@pytest.mark.db
def test_up_prints_a_bootstrap_key_once_and_serves(backend_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = backend_factory().env(tmp_path / "data")

    def start() -> tuple[subprocess.Popen[str], dict[str, str]]:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agenthub",
                "up",
                "--port",
                str(port),
                "--json",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{info['url']}/api/v1/health").status_code == 200:
                    return proc, info
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError(proc.stderr.read() if proc.stderr else "no output")

    proc, info = start()
    try:
        assert info["docs_url"] == f"{info['url']}/api/docs"
        key = info["bootstrap_admin_key"]
        assert key.startswith("ah_")
        me = httpx.get(f"{info['url']}/api/auth/me", headers=bearer(key)).json()["data"]
        assert (me["name"], me["role"]) == ("bootstrap", "admin")
        assert httpx.get(info["docs_url"]).status_code == 200
        # The local node agent: one ready machine in pool default, no user step.
        local = info["local_machine_id"]
        assert wait_ready_machine(info["url"], key) == local
        agents = psutil.Process(proc.pid).children(recursive=True)
        assert any("agent" in child.cmdline() for child in agents)
        # ... which runs work in its sandbox, with nothing else set up.
        submitted = httpx.post(
            f"{info['url']}/api/workloads",
            json={"command": ["sh", "-c", "echo ran as $(id -u) in $PWD"], "workspace": "w1"},
            headers=bearer(key),
        )
        assert submitted.status_code == 201, submitted.text
        workload = wait_finished(info["url"], key, submitted.json()["data"]["id"])
        assert workload["status"] == "succeeded", workload
        assert workload["node_id"] == local
        logs = httpx.get(
            f"{info['url']}/api/workloads/{workload['id']}/logs", headers=bearer(key)
        ).json()["data"]["lines"]
        assert logs[0]["text"].endswith("in /workspace")
        assert (tmp_path / "data" / "node" / "workspaces" / "w1").is_dir()
    finally:
        stop(proc)
    # Stopping `up` stops its agent too.
    psutil.wait_procs(agents, timeout=10)
    assert not any(child.is_running() for child in agents)
    second, info2 = start()
    try:
        assert info2["bootstrap_admin_key"] is None
        # Same machine across restarts, with a fresh token; the previous run's is revoked.
        assert info2["local_machine_id"] == local
        assert wait_ready_machine(info2["url"], key) == local
        tokens = httpx.get(f"{info2['url']}/api/machine-tokens", headers=bearer(key)).json()
        local_tokens = [t for t in tokens["data"] if t["name"] == "local-agent"]
        assert len(local_tokens) == 2
        assert sum(t["revoked_at"] is None for t in local_tokens) == 1
    finally:
        stop(second)


def wait_finished(url: str, key: str, workload_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/api/workloads/{workload_id}", headers=bearer(key))
        data: dict[str, Any] = r.json()["data"]
        if data["status"] in ("succeeded", "failed", "terminated", "lost"):
            return data
        time.sleep(0.1)
    raise AssertionError(f"workload {workload_id} did not finish: {data}")


def wait_ready_machine(url: str, key: str, timeout: float = 45.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = httpx.get(f"{url}/api/v1/machine/list", headers=bearer(key)).json()
        if listed:
            assert len(listed) == 1
            assert listed[0]["state"]["pool_name"] == "default"
            return str(listed[0]["state"]["machine_id"])
        time.sleep(0.2)
    raise AssertionError("the local node agent did not become ready")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=20)
