"""Support for runtime tests: running a spec to the end, host process checks, the busybox image."""

from __future__ import annotations

import asyncio
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from docker import DockerClient

from agenthub.agent.runtimes import ExitInfo, LaunchSpec, Running, Runtime

BUSYBOX_IMAGE = "agenthub-test/busybox:latest"
_APPLETS = ("sh", "echo", "sleep", "cat", "ls", "id", "true", "false", "kill", "env")


@dataclass
class Logs:
    """An on_log sink that records what it got and on which thread."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)

    def __call__(self, stream: str, text: str) -> None:
        self.threads.add(threading.get_ident())
        self.lines.append((stream, text))

    def of(self, stream: str) -> list[str]:
        return [text for s, text in self.lines if s == stream]


async def run(runtime: Runtime, spec: LaunchSpec) -> tuple[ExitInfo, Logs]:
    """Start ``spec`` and wait for it to end."""
    logs = Logs()
    running = await runtime.start(spec, logs)
    return await running.wait(), logs


def spec(workspace: Path, *command: str, **options: Any) -> LaunchSpec:
    """A LaunchSpec with test defaults."""
    options.setdefault("workload_id", "wl-test")
    options.setdefault("env", {})
    return LaunchSpec(attempt=1, command=list(command), workspace=workspace, **options)


def processes_with(marker: str) -> list[psutil.Process]:
    """Host processes with ``marker`` as an argument of its own.

    Exact, so that a shell whose script merely mentions it (``sh -c "sleep MARKER &"``) does
    not count: a match means the process running the marker exists.
    """
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in (proc.info["cmdline"] or ()):
            found.append(proc)
    return found


async def until(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Poll ``predicate()`` until it is truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.02)


async def stop_soon(running: Running, marker: str, grace_s: float) -> float:
    """Once ``marker`` runs on the host, stop ``running``; return how long stop() took."""
    await until(lambda: processes_with(marker))
    started = time.monotonic()
    await running.stop(grace_s=grace_s)
    return time.monotonic() - started


def build_busybox_image() -> str:
    """Import ``BUSYBOX_IMAGE`` from the host's static busybox unless the engine has it.

    No registry is reachable from CI, so the image is made from busybox-static: one binary plus
    a symlink per applet the tests call.
    """
    import docker
    from docker.errors import ImageNotFound

    client = docker.from_env()
    try:
        client.images.get(BUSYBOX_IMAGE)
    except ImageNotFound:
        _import_busybox(client)
    finally:
        client.close()
    return BUSYBOX_IMAGE


def _import_busybox(client: DockerClient) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is not installed: run scripts/system-deps.sh test")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "bin").mkdir(parents=True)
        (root / "tmp").mkdir()
        (root / "workspace").mkdir()
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in _APPLETS:
            os.symlink("busybox", root / "bin" / applet)
        tarball = Path(tmp) / "busybox.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(root, arcname=".")
        repository, tag = BUSYBOX_IMAGE.rsplit(":", 1)
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
