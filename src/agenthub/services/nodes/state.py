"""Keepalive TTL state of machines, behind one interface with two implementations:
:class:`~agenthub.services.nodes.redis_state.RedisNodeStates` (shared by hub replicas, one round
trip per keepalive) and :class:`~agenthub.services.nodes.sql_state.SqlNodeStates` (the database,
when no Redis is configured).

Every update is atomic in the store (a Lua script, or one ``UPDATE ... RETURNING``), so two
replicas handling keepalives of one machine never lose a write, and expiry is claimed exactly
once by :meth:`NodeStates.claim_expired`, so any replica may run the reaper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

PENDING, REGISTERED, READY = "pending", "registered", "ready"
LOST, EXPIRED = "lost", "expired"

# Metric fields of the Gateway document; anything else a keepalive carries is ignored.
METRIC_FIELDS: dict[str, type] = {
    "cpu_utilization_pct": float,
    "memory_utilization_pct": float,
    "total_cpu_available": int,
    "total_memory_available": int,
    "total_disk_space_bytes": int,
    "total_disk_free_bytes": int,
    "free_gpu_count": int,
    "worker_count": int,
    "container_count": int,
    "cache_usage_pct": float,
    "cache_capacity": int,
    "cache_memory_usage": int,
    "cache_cpu_usage": float,
}


def clean_metrics(raw: dict[str, Any] | None) -> dict[str, int | float]:
    """Keep the document's metric fields that hold numbers; tolerate anything missing."""
    cleaned: dict[str, int | float] = {}
    for name, kind in METRIC_FIELDS.items():
        value = (raw or {}).get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value != value or value in (float("inf"), float("-inf")):  # NaN / inf
            continue
        cleaned[name] = kind(value)
    return cleaned


@dataclass
class NodeState:
    """What the store holds of one machine while its TTL runs."""

    machine_id: str
    pool_name: str
    token_id: str
    status: str = PENDING
    provider_name: str = "generic"
    hostname: str = ""
    private_ip: str = ""
    cpu: int = 0  # millicores
    memory: int = 0  # MiB
    gpu_count: int = 0
    gpu_type: str | None = None
    agent_version: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    expires_at: float = 0.0
    last_keepalive: float | None = None
    last_worker_seen: float | None = None


class KeepaliveStatus(Enum):
    OK = "ok"
    NOT_FOUND = "not_found"  # expired, pending or never registered
    FOREIGN = "foreign"  # registered by another token


@dataclass(frozen=True)
class KeepaliveOutcome:
    status: KeepaliveStatus
    first: bool = False  # the first keepalive since registration: registered -> ready
    last_worker_seen: float | None = None


@dataclass(frozen=True)
class Expired:
    machine_id: str
    status: str | None  # the status it had, when the store still knew it


class NodeStates(Protocol):
    """``session``: the caller's unit of work, when it has one. The database store writes
    through it (so the state commits with the caller's changes, and no second connection is
    needed); Redis ignores it."""

    async def put_pending(
        self,
        machine_id: str,
        pool_name: str,
        token_id: str,
        ttl: int,
        *,
        session: AsyncSession | None = None,
    ) -> None:
        """Record a machine minted but not yet registered; it expires after ``ttl``."""

    async def register(
        self, state: NodeState, ttl: int, *, session: AsyncSession | None = None
    ) -> None:
        """Replace the machine's state with ``state`` (status ``registered``) for ``ttl``."""

    async def keepalive(
        self,
        machine_id: str,
        token_id: str,
        *,
        now: float,
        ttl: int,
        agent_version: str,
        metrics: dict[str, Any],
        sample: dict[str, Any],
        sample_interval: float,
        history: int,
    ) -> KeepaliveOutcome:
        """Refresh a registered machine's TTL, mark it ready, keep ``sample`` if one is due."""

    async def get(
        self, machine_id: str, *, session: AsyncSession | None = None
    ) -> NodeState | None:
        """The machine's state while its TTL runs, else ``None``."""

    async def get_many(
        self, machine_ids: list[str], *, session: AsyncSession | None = None
    ) -> dict[str, NodeState]: ...

    async def live(
        self, pool_name: str | None = None, *, session: AsyncSession | None = None
    ) -> list[NodeState]:
        """Registered and ready machines whose TTL runs, of one pool or all."""

    async def claim_expired(
        self, now: float, limit: int = 500, *, session: AsyncSession | None = None
    ) -> list[Expired]:
        """Remove machines whose TTL lapsed; each is returned to exactly one caller."""

    async def history(
        self, machine_id: str, limit: int, *, session: AsyncSession | None = None
    ) -> list[dict[str, Any]]:
        """Health samples, newest first."""
