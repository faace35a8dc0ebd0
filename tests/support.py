"""Test support: real hub processes on loopback, on SQLite or on PostgreSQL + Redis."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TEST_SECRET = "test-secret-key-that-is-long-enough-for-production-use"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """Where a test hub keeps its state: ``sqlite`` (a file) or ``postgres`` (+ Redis)."""

    def __init__(
        self, name: str, database_url: str, redis_url: str | None, redis_prefix: str
    ) -> None:
        self.name = name
        self.database_url = database_url
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix

    def env(self, data_dir: Path, **settings: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
        env.update(
            {
                "AGENTHUB_DATA_DIR": str(data_dir),
                "AGENTHUB_DATABASE_URL": self.database_url,
                "AGENTHUB_SECRET_KEY": TEST_SECRET,
                "AGENTHUB_REDIS_PREFIX": self.redis_prefix,
                "AGENTHUB_RATE_LIMIT_PER_MINUTE": "100000",
                "AGENTHUB_RATE_LIMIT_PER_HOUR": "1000000",
                "AGENTHUB_RATE_LIMIT_PER_DAY": "10000000",
                "AGENTHUB_COLLAB_RATE_LIMIT_PER_MINUTE": "100000",
                "AGENTHUB_COLLAB_RATE_LIMIT_PER_HOUR": "1000000",
                "AGENTHUB_COLLAB_RATE_LIMIT_PER_DAY": "10000000",
            }
        )
        if self.redis_url:
            env["AGENTHUB_REDIS_URL"] = self.redis_url
        for key, value in settings.items():
            env[f"AGENTHUB_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env


def run_cli(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agenthub", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


class HubProcess:
    """``agenthub serve`` in a child process, on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path, command: str = "serve") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                # As in-process tests (filterwarnings = error): a deprecated call in the hub
                # fails its request with a 500 here, instead of a warning in a log nobody reads.
                "-W",
                "error::DeprecationWarning",
                "-m",
                "agenthub",
                command,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 45.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hub did not become ready:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextlib.contextmanager
def running_hub(env: dict[str, str], log_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(env, log_path)
    try:
        yield hub
    finally:
        hub.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
