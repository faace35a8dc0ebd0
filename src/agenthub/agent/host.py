"""Facts about the machine the node agent runs on: capacity, identity and live metrics."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger("agenthub.agent")

_MIB = 1024 * 1024
# Any address outside the local networks: connecting a UDP socket towards it makes the kernel
# pick the source address of the default route without sending a packet. TEST-NET-1, so that
# nothing is ever addressed to a real host.
_ROUTE_PROBE = ("192.0.2.1", 9)


@dataclass(frozen=True)
class GpuInfo:
    """GPUs seen by ``nvidia-smi``: how many, and the most common model name."""

    count: int = 0
    type: str | None = None


@dataclass(frozen=True)
class Capacity:
    """What this machine offers, in the Gateway document's register format."""

    millicores: int
    memory_mib: int
    gpus: GpuInfo

    @property
    def cpu(self) -> str:
        return f"{self.millicores}m"

    @property
    def memory(self) -> str:
        return f"{self.memory_mib}Mi"

    @property
    def gpu_count(self) -> str:
        return str(self.gpus.count)

    @property
    def gpu_type(self) -> str | None:
        return self.gpus.type


def cpu_millicores() -> int:
    """Logical CPU cores times 1000."""
    return (psutil.cpu_count(logical=True) or 1) * 1000


def memory_mib() -> int:
    """Total RAM in MiB."""
    return int(psutil.virtual_memory().total // _MIB)


def detect_gpus(timeout: float = 10.0) -> GpuInfo:
    """Ask ``nvidia-smi`` for the GPUs; no ``nvidia-smi`` or no answer means no GPUs.

    Blocking (a subprocess): call it from a thread when inside an event loop.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return GpuInfo()
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, executable resolved from PATH
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        logger.warning("nvidia-smi failed (%s); reporting no GPUs", err)
        return GpuInfo()
    if result.returncode != 0:
        # A driver/library mismatch makes nvidia-smi exit non-zero; the GPUs are unusable then.
        logger.warning("nvidia-smi exited %d; reporting no GPUs", result.returncode)
        return GpuInfo()
    names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not names:
        return GpuInfo()
    return GpuInfo(count=len(names), type=Counter(names).most_common(1)[0][0])


def hostname() -> str:
    """This machine's host name."""
    return socket.gethostname()


def private_ip() -> str:
    """The address of the interface used for the default route; 127.0.0.1 without one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(_ROUTE_PROBE)
            address = str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    return "127.0.0.1" if address == "0.0.0.0" else address


def _existing(path: Path) -> Path:
    # disk_usage needs an existing path; a work dir not made yet lives on its parent's disk.
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class HostProbe:
    """Capacity (detected once) and a cheap, non-blocking metrics snapshot for keepalives."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self._capacity: Capacity | None = None
        # The first cpu_percent(interval=None) call has nothing to compare against and returns
        # 0.0; priming it here makes the first keepalive's figure meaningful.
        psutil.cpu_percent(interval=None)

    async def capacity(self) -> Capacity:
        """This machine's capacity; GPU detection runs in a thread, and only the first time."""
        if self._capacity is None:
            gpus = await asyncio.to_thread(detect_gpus)
            self._capacity = Capacity(cpu_millicores(), memory_mib(), gpus)
        return self._capacity

    def metrics(
        self, capacity: Capacity, *, gpus_in_use: int = 0, worker_count: int = 0
    ) -> dict[str, Any]:
        """The keepalive ``metrics`` object, with the document's field names."""
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(_existing(self.work_dir)))
        return {
            "cpu_utilization_pct": float(psutil.cpu_percent(interval=None)),
            "memory_utilization_pct": float(memory.percent),
            "total_cpu_available": capacity.millicores,
            "total_memory_available": capacity.memory_mib,
            "total_disk_space_bytes": int(disk.total),
            "total_disk_free_bytes": int(disk.free),
            "free_gpu_count": max(capacity.gpus.count - gpus_in_use, 0),
            "worker_count": worker_count,
            "container_count": 0,
        }
