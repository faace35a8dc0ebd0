"""Nodes as the Cluster surface shows them: the durable record joined with live TTL state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import isoformat_z
from agenthub.core.errors import NotFound
from agenthub.db.models import Node
from agenthub.services import events
from agenthub.services.nodes.resources import check_labels, check_taints
from agenthub.services.nodes.state import (
    EXPIRED,
    LOST,
    PENDING,
    READY,
    REGISTERED,
    NodeState,
    NodeStates,
)
from agenthub.services.scheduling import workloads

MIB = 1024 * 1024


@dataclass(frozen=True)
class NodeView:
    node: Node
    state: NodeState | None

    @property
    def status(self) -> str:
        """Live status while the TTL runs; after it, what the lapse means."""
        if self.state is not None:
            return self.state.status
        if self.node.status in (REGISTERED, READY, LOST):
            return LOST
        if self.node.status == PENDING:
            return EXPIRED
        return self.node.status

    @property
    def schedulable(self) -> bool:
        return self.status == READY and not self.node.maintenance

    @property
    def health(self) -> str:
        status = self.status
        if status == READY:
            return "maintenance" if self.node.maintenance else "healthy"
        if status in (REGISTERED, PENDING):
            return "unknown"
        return "unhealthy"

    @property
    def metrics(self) -> dict[str, Any]:
        return self.state.metrics if self.state is not None else {}

    def resources(self) -> dict[str, Any]:
        """Totals from registration; available = what the latest metrics leave free, less
        what placed workloads reserved (whichever is smaller)."""
        node, m = self.node, self.metrics
        placed_cpu, placed_memory_mib = node.cpu_allocated, node.memory_allocated
        cpu_total = node.cpu_millicores / 1000
        memory_total = node.memory_mib * MIB
        cpu_free = cpu_total * (1 - m.get("cpu_utilization_pct", 0.0) / 100)
        memory_free = memory_total * (1 - m.get("memory_utilization_pct", 0.0) / 100)
        live = self.state is not None
        return {
            "cpu_total": cpu_total,
            "cpu_available": round(max(0.0, min(cpu_free, cpu_total - placed_cpu / 1000)), 3)
            if live
            else 0.0,
            "memory_total": memory_total,
            "memory_available": int(
                max(0, min(memory_free, memory_total - placed_memory_mib * MIB))
            )
            if live
            else 0,
            "disk_total": m.get("total_disk_space_bytes"),
            "disk_available": m.get("total_disk_free_bytes"),
            "gpu_total": node.gpu_count,
            "gpu_available": min(
                m.get("free_gpu_count", node.gpu_count), node.gpu_count - node.gpu_allocated
            )
            if live
            else 0,
        }


async def list_nodes(
    session: AsyncSession,
    states: NodeStates,
    *,
    pool_name: str | None = None,
    status: str | None = None,
) -> list[NodeView]:
    """Every node the hub knows (pending ones included), with live state where it runs."""
    query = sa.select(Node).order_by(Node.pool_name, Node.id)
    if pool_name:
        query = query.where(Node.pool_name == pool_name)
    nodes = list(await session.scalars(query))
    live = await states.get_many([n.id for n in nodes], session=session)
    views = [NodeView(n, live.get(n.id)) for n in nodes]
    return [v for v in views if status is None or v.status == status]


async def get_node(session: AsyncSession, states: NodeStates, node_id: str) -> NodeView:
    node = await session.get(Node, node_id.lower())
    if node is None:
        raise NotFound(f"Node {node_id} not found.", code="node_not_found")
    return NodeView(node, await states.get(node.id, session=session))


async def set_maintenance(
    session: AsyncSession,
    states: NodeStates,
    principal: Principal,
    node_id: str,
    *,
    enable: bool,
    drain: bool,
) -> NodeView:
    """Maintenance: the node takes no new work; ``drain`` also moves its work away."""
    principal.require_admin()
    view = await get_node(session, states, node_id)
    node = view.node
    node.maintenance = enable
    node.draining = enable and drain
    if node.draining:
        await workloads.drain_node(session, node.id, reason=f"node {node.id} drained")
    await events.record(
        session,
        "node.maintenance_changed",
        {"node_id": node.id, "maintenance": enable, "drain": node.draining},
        actor=principal,
    )
    return view


async def update_node(
    session: AsyncSession,
    states: NodeStates,
    principal: Principal,
    node_id: str,
    *,
    labels: dict[str, str] | None,
    taints: list[dict[str, str]] | None,
) -> NodeView:
    """Replace a node's labels and/or taints (an omitted field is left as it is)."""
    principal.require_admin()
    view = await get_node(session, states, node_id)
    changed: dict[str, Any] = {}
    if labels is not None:
        view.node.labels = changed["labels"] = check_labels(labels)
    if taints is not None:
        view.node.taints = changed["taints"] = check_taints(taints)
    if changed:
        await events.record(
            session, "node.updated", {"node_id": node_id, **changed}, actor=principal
        )
    return view


async def node_health(
    session: AsyncSession, states: NodeStates, node_id: str, history: int
) -> dict[str, Any]:
    view = await get_node(session, states, node_id)
    m = view.metrics
    samples = await states.history(view.node.id, history, session=session)
    last_seen = (
        datetime.fromtimestamp(view.state.last_keepalive, UTC)
        if view.state is not None and view.state.last_keepalive
        else view.node.last_seen_at
    )
    latest = samples[0] if samples else {}
    return {
        "id": view.node.id,
        "status": view.health,
        "node_status": view.status,
        "last_seen": isoformat_z(last_seen) if last_seen else None,
        "cpu_usage": m.get("cpu_utilization_pct"),
        "memory_usage": m.get("memory_utilization_pct"),
        "disk_usage": latest.get("disk_usage"),
        "network_status": "connected" if view.state is not None else "disconnected",
        "container_count": 0,
        "health_history": samples,
    }


async def summary(session: AsyncSession, states: NodeStates) -> dict[str, Any]:
    """Counts for the Cluster health route: nodes that ever registered."""
    views = [v for v in await list_nodes(session, states) if v.status not in (PENDING, EXPIRED)]
    healthy = sum(1 for v in views if v.health in ("healthy", "maintenance"))
    unhealthy = sum(1 for v in views if v.health == "unhealthy")
    return {
        "status": "healthy" if unhealthy == 0 else "degraded",
        "total": len(views),
        "healthy": healthy,
        "unhealthy": unhealthy,
    }
