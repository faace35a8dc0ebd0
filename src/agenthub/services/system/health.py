"""Component health: what every health route reports, measured, never assumed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from agenthub.services.runtime import Runtime

HEALTHY, UNHEALTHY, NOT_CONFIGURED = "healthy", "unhealthy", "not_configured"
CHECK_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ComponentHealth:
    status: str
    latency_ms: float | None = None
    error: str | None = None


async def _timed(check: asyncio.Future[object] | object) -> ComponentHealth:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(check, timeout=CHECK_TIMEOUT_S)  # type: ignore[arg-type]
    except Exception as exc:  # any failure of a dependency is reported, not raised
        return ComponentHealth(UNHEALTHY, error=f"{type(exc).__name__}: {exc}"[:200])
    return ComponentHealth(HEALTHY, latency_ms=round((time.perf_counter() - start) * 1000, 2))


async def check_components(runtime: Runtime) -> dict[str, ComponentHealth]:
    """Probe the database and, when configured, Redis, concurrently."""
    checks = {"database": _timed(runtime.db.ping())}
    if runtime.redis is not None:
        checks["redis"] = _timed(runtime.redis.ping())
    results = await asyncio.gather(*checks.values())
    report = dict(zip(checks, results, strict=True))
    if runtime.redis is None:
        report["redis"] = ComponentHealth(NOT_CONFIGURED)
    return report


def overall(components: dict[str, ComponentHealth]) -> str:
    return UNHEALTHY if any(c.status == UNHEALTHY for c in components.values()) else HEALTHY


@dataclass(frozen=True)
class HostUtilization:
    cpu_percent: float
    memory_percent: float
    disk_percent: float


def host_utilization(data_dir: str) -> HostUtilization:
    """CPU, memory and disk use of the machine this hub runs on (disk: the data dir's volume)."""
    path = Path(data_dir).resolve()
    while not path.exists():
        path = path.parent
    return HostUtilization(
        cpu_percent=psutil.cpu_percent(interval=None),
        memory_percent=psutil.virtual_memory().percent,
        disk_percent=psutil.disk_usage(str(path)).percent,
    )
