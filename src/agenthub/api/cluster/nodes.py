"""Cluster surface: nodes (the machines of the Gateway surface), their health, maintenance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Query

from agenthub.api.cluster.envelope import Envelope, wrap
from agenthub.api.cluster.node_schemas import (
    MaintenanceRequest,
    NodeDetail,
    NodeList,
    NodeMessage,
    NodeSummary,
    NodeUpdate,
    TaintModel,
)
from agenthub.api.deps import AdminDep, PrincipalDep, RuntimeDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.services.nodes import views
from agenthub.services.nodes.views import NodeView

router = SurfaceRouter(prefix="/api", tags=["cluster"])


def _last_seen(view: NodeView) -> datetime | None:
    if view.state is not None and view.state.last_keepalive:
        return datetime.fromtimestamp(view.state.last_keepalive, UTC)
    return view.node.last_seen_at


def _summary(view: NodeView) -> dict[str, Any]:
    node = view.node
    return {
        "id": node.id,
        "address": node.private_ip,
        "hostname": node.hostname,
        "pool": node.pool_name,
        "provider": node.provider_name,
        "status": view.status,
        "maintenance": node.maintenance,
        "draining": node.draining,
        "schedulable": view.schedulable,
        "resources": view.resources(),
        "containers": 0,
        "labels": node.labels,
        "agent_version": (view.state.agent_version if view.state else None) or node.agent_version,
        "last_seen": _last_seen(view),
    }


def _detail(view: NodeView) -> NodeDetail:
    node = view.node
    return NodeDetail(
        **{**_summary(view), "containers": []},
        taints=[TaintModel(**t) for t in node.taints],
        gpu_type=node.gpu_type,
        network={
            "address": node.private_ip,
            "overlay_status": "connected" if view.state is not None else "disconnected",
        },
        registered_at=node.registered_at,
        ready_at=node.ready_at,
        lost_at=node.lost_at,
    )


@router.get("/nodes", response_model=Envelope[NodeList])
async def list_nodes(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    pool: str | None = Query(None, description="Only nodes of this pool."),
    status: str | None = Query(
        None, description="Only nodes in this status (pending, registered, ready, lost, expired)."
    ),
) -> Envelope[NodeList]:
    """Every node the hub knows, with live status and resources."""
    found = await views.list_nodes(session, runtime.nodes, pool_name=pool, status=status)
    return wrap(NodeList(nodes=[NodeSummary(**_summary(v)) for v in found]))


@router.get("/nodes/{node_id}", response_model=Envelope[NodeDetail])
async def get_node(
    node_id: str, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> Envelope[NodeDetail]:
    """One node: resources, labels, taints, network."""
    return wrap(_detail(await views.get_node(session, runtime.nodes, node_id)))


@router.patch("/nodes/{node_id}", response_model=Envelope[NodeDetail])
async def update_node(
    node_id: str, body: NodeUpdate, admin: AdminDep, runtime: RuntimeDep, session: SessionDep
) -> Envelope[NodeDetail]:
    """Replace a node's labels and/or taints (admin)."""
    view = await views.update_node(
        session,
        runtime.nodes,
        admin,
        node_id,
        labels=body.labels,
        taints=[t.model_dump() for t in body.taints] if body.taints is not None else None,
    )
    return wrap(_detail(view))


@router.post("/nodes/{node_id}/maintenance", response_model=Envelope[NodeMessage])
async def maintenance(
    node_id: str,
    body: MaintenanceRequest,
    admin: AdminDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> Envelope[NodeMessage]:
    """Maintenance mode: the node takes no new work; ``drain`` moves its work away."""
    view = await views.set_maintenance(
        session, runtime.nodes, admin, node_id, enable=body.enable, drain=body.drain
    )
    message = (
        "Node put into maintenance mode" if body.enable else "Node taken out of maintenance mode"
    )
    return wrap(NodeMessage(id=view.node.id, message=message))


@router.get("/health/node/{node_id}", response_model=Envelope[dict[str, Any]])
async def node_health(
    node_id: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    limit: int = Query(20, ge=1, le=1000, description="Health samples, newest first."),
) -> Envelope[dict[str, Any]]:
    """A node's status, latest usage and its recent health history (bounded)."""
    limit = min(limit, runtime.settings.node_health_history)
    return wrap(await views.node_health(session, runtime.nodes, node_id, limit))
