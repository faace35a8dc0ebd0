"""The agenthub command, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
    finally:
        stop(proc)
    second, info2 = start()
    try:
        assert info2["bootstrap_admin_key"] is None
    finally:
        stop(second)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=10)
