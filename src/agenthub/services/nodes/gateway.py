"""The Gateway surface's operations: register, keepalive, config, list, GPU counts."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from agenthub.core.settings import Settings
from agenthub.db.models import MachineToken, Node
from agenthub.services import events
from agenthub.services.nodes.pools import pool_exists
from agenthub.services.nodes.resources import (
    check_labels,
    check_taints,
    normalize_machine_id,
    parse_cpu,
    parse_gpu_count,
    parse_memory,
)
from agenthub.services.nodes.state import (
    PENDING,
    READY,
    REGISTERED,
    KeepaliveStatus,
    NodeState,
    NodeStates,
    clean_metrics,
)
from agenthub.services.nodes.tokens import bind_to_machine
from agenthub.services.scheduling.spec import RUNTIMES


def require_machine(principal: Principal | None) -> Principal:
    """Gateway routes take machine tokens; anything else is the document's 403."""
    if principal is None or not principal.is_machine:
        raise Unauthorized("Invalid token", code="invalid_token")
    return principal


def require_machine_or_admin(principal: Principal | None) -> Principal:
    if principal is not None and (principal.is_machine or principal.is_admin):
        return principal
    raise Unauthorized("Invalid token", code="invalid_token")


@dataclass
class Registration:
    machine_id: str
    hostname: str
    pool_name: str
    cpu: str
    memory: str
    gpu_count: str
    private_ip: str
    provider_name: str = "generic"
    gpu_type: str | None = None
    agent_version: str = ""
    labels: dict[str, str] | None = None
    taints: list[dict[str, str]] | None = None
    # What the node agent can run; None (another agent) keeps what the hub knew.
    runtimes: list[str] | None = None


@dataclass(frozen=True)
class KeepaliveResult:
    machine_id: str
    status: str
    last_keepalive: float
    last_worker_seen: float | None
    ttl_seconds: int
    agent_version: str
    first: bool = False


async def register(
    session: AsyncSession,
    settings: Settings,
    states: NodeStates,
    principal: Principal | None,
    reg: Registration,
) -> NodeState:
    """Register (or re-register) a machine: status ``registered`` until its first keepalive."""
    principal = require_machine(principal)
    machine_id = normalize_machine_id(reg.machine_id)
    hostname = reg.hostname.strip()
    if not hostname or len(hostname) > 255:
        raise ValidationFailed("Invalid payload: hostname must be 1-255 characters")
    cpu, memory, gpus = parse_cpu(reg.cpu), parse_memory(reg.memory), parse_gpu_count(reg.gpu_count)
    labels = check_labels(reg.labels) if reg.labels is not None else None
    taints = check_taints(reg.taints) if reg.taints is not None else None
    if not await pool_exists(session, settings, reg.pool_name):
        raise ValidationFailed("Invalid pool name", code="invalid_pool_name")
    if reg.pool_name != principal.pool_name:
        raise Unauthorized("Invalid token", code="invalid_token")
    await bind_to_machine(session, principal, machine_id)
    token_id = str(principal.id)
    live = await states.get(machine_id, session=session)
    if live is not None and live.status in (REGISTERED, READY) and live.token_id != token_id:
        owner = await session.get(MachineToken, uuid.UUID(live.token_id))
        if owner is not None and owner.revoked_at is None:  # live, and its token still valid
            raise Unauthorized("Invalid token", code="invalid_token")

    now = utcnow()
    # A machine token minted with a suggested id and first used by another machine: the
    # suggestion's pending record goes.
    await session.execute(
        sa.delete(Node).where(
            Node.token_id == principal.id, Node.status == PENDING, Node.id != machine_id
        )
    )
    node = await session.get(Node, machine_id)
    if node is None:
        node = Node(id=machine_id, pool_name=reg.pool_name)
        session.add(node)
    node.pool_name = reg.pool_name
    node.provider_name = reg.provider_name or "generic"
    node.hostname = hostname
    node.private_ip = reg.private_ip
    node.cpu_millicores, node.memory_mib, node.gpu_count = cpu, memory, gpus
    node.gpu_type = reg.gpu_type if gpus else None
    node.agent_version = reg.agent_version or node.agent_version
    node.status = REGISTERED
    node.token_id = principal.id
    node.registered_at = node.last_seen_at = now
    node.lost_at = None
    if labels is not None:
        node.labels = labels
    if taints is not None:
        node.taints = taints
    if reg.runtimes is not None:
        node.runtimes = sorted({r for r in reg.runtimes if r in RUNTIMES})
    await session.flush()
    state = NodeState(
        machine_id=machine_id,
        pool_name=reg.pool_name,
        token_id=token_id,
        status=REGISTERED,
        provider_name=node.provider_name,
        hostname=hostname,
        private_ip=reg.private_ip,
        cpu=cpu,
        memory=memory,
        gpu_count=gpus,
        gpu_type=node.gpu_type,
        agent_version=reg.agent_version,
    )
    await states.register(state, settings.machine_keepalive_ttl_s, session=session)
    await events.record(
        session,
        "node.joined",
        {
            "node_id": machine_id,
            "pool_name": reg.pool_name,
            "hostname": hostname,
            "status": REGISTERED,
            "cpu": cpu,
            "memory": memory,
            "gpu_count": gpus,
        },
        actor=principal,
    )
    return state


def health_sample(metrics: dict[str, Any], now: float) -> dict[str, Any]:
    """A Cluster-shaped health sample from a keepalive's metrics."""
    total, free = metrics.get("total_disk_space_bytes"), metrics.get("total_disk_free_bytes")
    disk = round(100.0 * (total - free) / total, 1) if total and free is not None else None
    return {
        "timestamp": isoformat_z(datetime.fromtimestamp(now, UTC)),
        "cpu_usage": metrics.get("cpu_utilization_pct"),
        "memory_usage": metrics.get("memory_utilization_pct"),
        "disk_usage": disk,
        "network_status": "connected",
        "message": None,
    }


async def keepalive(
    settings: Settings,
    states: NodeStates,
    principal: Principal | None,
    *,
    machine_id: str | None,
    pool_name: str | None,
    agent_version: str | None,
    metrics: dict[str, Any] | None,
) -> KeepaliveResult:
    """Refresh a machine's TTL. The hot path: one atomic store update, no database session
    unless this is the machine's first keepalive (see :func:`mark_ready`)."""
    principal = require_machine(principal)
    if not machine_id or not pool_name:
        raise ValidationFailed("machine_id and pool_name are required", code="invalid_payload")
    if pool_name != principal.pool_name:
        raise Unauthorized("Invalid token", code="invalid_token")
    machine_id = machine_id.strip().lower()
    cleaned = clean_metrics(metrics)
    now = time.time()
    outcome = await states.keepalive(
        machine_id,
        str(principal.id),
        now=now,
        ttl=settings.machine_keepalive_ttl_s,
        agent_version=agent_version or "",
        metrics=cleaned,
        sample=health_sample(cleaned, now),
        sample_interval=settings.node_health_sample_interval_s,
        history=settings.node_health_history,
    )
    if outcome.status is KeepaliveStatus.NOT_FOUND:
        raise NotFound("Machine state expired or never registered", code="machine_not_found")
    if outcome.status is KeepaliveStatus.FOREIGN:
        raise Unauthorized("Invalid token", code="invalid_token")
    return KeepaliveResult(
        machine_id=machine_id,
        status=READY,
        last_keepalive=now,
        last_worker_seen=outcome.last_worker_seen,
        ttl_seconds=settings.machine_keepalive_ttl_s,
        agent_version=agent_version or "",
        first=outcome.first,
    )


async def mark_ready(session: AsyncSession, principal: Principal, result: KeepaliveResult) -> None:
    """The durable side of a machine's first keepalive: ``registered`` -> ``ready``."""
    node = await session.get(Node, result.machine_id)
    if node is None:
        return
    node.status = READY
    node.ready_at = node.last_seen_at = utcnow()
    if result.agent_version:
        node.agent_version = result.agent_version
    await events.record(
        session,
        "node.ready",
        {
            "node_id": node.id,
            "pool_name": node.pool_name,
            "hostname": node.hostname,
            "previous_status": REGISTERED,
            "status": READY,
        },
        actor=principal,
    )


def machine_config(settings: Settings, principal: Principal, hub_url: str) -> dict[str, Any]:
    """What a worker needs to reach the hub; never a secret (no database or Redis address)."""
    from urllib.parse import urlsplit

    url = (settings.public_url or hub_url).rstrip("/")
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ttl = settings.machine_keepalive_ttl_s
    return {
        "config": {"gateway": {"host": parts.hostname, "http_port": port, "url": url}},
        "machine": {
            "machine_id": principal.machine_id,
            "pool_name": principal.pool_name,
            "token_type": principal.token_type,
        }
        if principal.is_machine
        else None,
        # Keep alive well inside the TTL: five chances before a machine is lost.
        "keepalive": {"ttl_seconds": ttl, "interval_seconds": max(1, min(60, ttl // 5))},
    }


async def list_ready(
    states: NodeStates,
    principal: Principal | None,
    *,
    pool_name: str | None = None,
    provider_name: str | None = None,
) -> list[NodeState]:
    """Ready machines, by pool and provider. A machine token sees its own pool only."""
    principal = require_machine_or_admin(principal)
    if principal.is_machine:
        if pool_name and pool_name != principal.pool_name:
            return []
        pool_name = principal.pool_name
    found = await states.live(pool_name)
    return [
        s
        for s in found
        if s.status == READY and (not provider_name or s.provider_name == provider_name)
    ]


async def gpu_counts(
    states: NodeStates, principal: Principal | None, workspace_id: str
) -> dict[str, int]:
    """GPUs of ready machines by type, for an admin or a principal of that workspace (tenant)."""
    if principal is None:
        raise Unauthorized("Invalid token", code="invalid_token")
    if principal.is_machine:
        raise Forbidden("This route needs workspace credentials, not a machine token.")
    if not principal.is_admin and str(principal.tenant_id) != workspace_id:
        raise Forbidden("These credentials do not belong to this workspace.")
    counts: Counter[str] = Counter()
    for state in await states.live():
        if state.status == READY and state.gpu_count:
            counts[state.gpu_type or "unknown"] += state.gpu_count
    return dict(sorted(counts.items()))
