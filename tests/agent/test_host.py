"""Host facts, read from this very machine."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import stat
import time
from pathlib import Path

import psutil
import pytest

from agenthub.agent.host import (
    Capacity,
    GpuInfo,
    HostProbe,
    cpu_millicores,
    detect_gpus,
    memory_mib,
    private_ip,
)


def meminfo_total_mib() -> int | None:
    """MemTotal straight from the kernel, independently of psutil (None off Linux)."""
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


async def test_capacity_matches_the_machine(tmp_path: Path) -> None:
    capacity = await HostProbe(tmp_path).capacity()
    assert capacity.cpu == f"{os.cpu_count()}000m"
    assert capacity.millicores == cpu_millicores() == (os.cpu_count() or 0) * 1000
    match = re.fullmatch(r"(\d+)Mi", capacity.memory)
    assert match, capacity.memory
    assert int(match.group(1)) == capacity.memory_mib == memory_mib()
    kernel_mib = meminfo_total_mib()
    if kernel_mib is not None:
        assert abs(capacity.memory_mib - kernel_mib) <= 1
    assert capacity.gpu_count == str(capacity.gpus.count)
    if shutil.which("nvidia-smi") is None:
        assert (capacity.gpu_count, capacity.gpu_type) == ("0", None)


def write_nvidia_smi(directory: Path, output: str, exit_code: int = 0) -> None:
    # GPUs are not part of this machine; a stand-in nvidia-smi speaks the real output format.
    script = directory / "nvidia-smi"
    lines = "".join(f"echo '{line}'\n" for line in output.splitlines())
    script.write_text(f"#!/bin/sh\n{lines}exit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_gpus_are_counted_and_named_by_the_most_common_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_nvidia_smi(
        tmp_path,
        "NVIDIA A100-SXM4-80GB\nNVIDIA A100-SXM4-80GB\nNVIDIA H100 80GB HBM3\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert detect_gpus() == GpuInfo(count=3, type="NVIDIA A100-SXM4-80GB")
    capacity = Capacity(cpu_millicores(), memory_mib(), detect_gpus())
    assert (capacity.gpu_count, capacity.gpu_type) == ("3", "NVIDIA A100-SXM4-80GB")


def test_a_failing_nvidia_smi_means_no_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_nvidia_smi(tmp_path, "NVIDIA-SMI has failed", exit_code=9)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert detect_gpus() == GpuInfo(count=0, type=None)


def test_private_ip_is_an_address_of_this_machine() -> None:
    address = private_ip()
    assert isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    local = {
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET
    }
    assert address in local | {"127.0.0.1"}


async def test_metrics_are_in_range(tmp_path: Path) -> None:
    probe = HostProbe(tmp_path)
    capacity = await probe.capacity()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # some CPU work, so the non-blocking reading has a sample
        sum(range(10_000))
    metrics = probe.metrics(capacity)
    assert set(metrics) == {
        "cpu_utilization_pct",
        "memory_utilization_pct",
        "total_cpu_available",
        "total_memory_available",
        "total_disk_space_bytes",
        "total_disk_free_bytes",
        "free_gpu_count",
        "worker_count",
        "container_count",
    }
    assert 0 < metrics["cpu_utilization_pct"] <= 100
    assert 0 < metrics["memory_utilization_pct"] <= 100
    assert metrics["total_cpu_available"] == capacity.millicores
    assert metrics["total_memory_available"] == capacity.memory_mib
    disk = shutil.disk_usage(tmp_path)
    assert metrics["total_disk_space_bytes"] == disk.total
    assert 0 < metrics["total_disk_free_bytes"] <= metrics["total_disk_space_bytes"]
    assert metrics["free_gpu_count"] == capacity.gpus.count
    assert (metrics["worker_count"], metrics["container_count"]) == (0, 0)


async def test_metrics_for_a_work_dir_not_made_yet_use_its_disk(tmp_path: Path) -> None:
    probe = HostProbe(tmp_path / "not" / "yet")
    metrics = probe.metrics(await probe.capacity())
    assert metrics["total_disk_space_bytes"] == shutil.disk_usage(tmp_path).total
