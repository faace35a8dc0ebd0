"""Gateway surface (``/api/v1/machine``): worker machines register and keep alive."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request

from agenthub.api.deps import OptionalPrincipalDep, RuntimeDep, SessionDep
from agenthub.api.gateway.auth import MachineDep, MachineOrAdminDep
from agenthub.api.gateway.schemas import (
    KeepaliveRequest,
    KeepaliveResponse,
    KeepaliveState,
    ListedMachine,
    ListedState,
    RegisteredState,
    RegisterRequest,
    RegisterResponse,
)
from agenthub.api.routing import SurfaceRouter
from agenthub.core.errors import Unauthorized
from agenthub.services import events
from agenthub.services.nodes import gateway

router = SurfaceRouter(prefix="/api/v1/machine", tags=["gateway"])


@router.post("/register", response_model=RegisterResponse)
async def register(
    principal: MachineDep,
    body: RegisterRequest,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
) -> RegisterResponse:
    """Register a machine with its token; it is ``registered`` until its first keepalive."""
    bearer = request.headers.get("authorization", "").partition(" ")[2].strip()
    if body.token != bearer:
        raise Unauthorized("Invalid token", code="invalid_token")
    state = await gateway.register(
        session,
        runtime.settings,
        runtime.nodes,
        principal,
        gateway.Registration(
            machine_id=body.machine_id,
            hostname=body.hostname,
            pool_name=body.pool_name,
            cpu=body.cpu,
            memory=body.memory,
            gpu_count=body.gpu_count,
            private_ip=body.private_ip,
            provider_name=body.provider_name,
            gpu_type=body.gpu_type,
            agent_version=body.agent_version or "",
            labels=body.labels,
            taints=[t.model_dump() for t in body.taints] if body.taints is not None else None,
            runtimes=body.runtimes,
        ),
    )
    return RegisterResponse(
        config=None,
        machine_state=RegisteredState(
            machine_id=state.machine_id,
            status=state.status,
            pool_name=state.pool_name,
            ttl_seconds=runtime.settings.machine_keepalive_ttl_s,
        ),
    )


@router.post("/keepalive", response_model=KeepaliveResponse)
async def keepalive(
    principal: MachineDep, body: KeepaliveRequest, runtime: RuntimeDep
) -> KeepaliveResponse:
    """Refresh the machine's TTL (``ttl_seconds``); the first keepalive makes it ``ready``."""
    result = await gateway.keepalive(
        runtime.settings,
        runtime.nodes,
        principal,
        machine_id=body.machine_id,
        pool_name=body.pool_name,
        agent_version=body.agent_version,
        metrics=body.metrics,
    )
    if result.first:
        async with events.unit_of_work(runtime.db, runtime.bus) as session:
            await gateway.mark_ready(session, principal, result)
    return KeepaliveResponse(
        machine_state=KeepaliveState(
            machine_id=result.machine_id,
            status=result.status,
            last_keepalive=str(int(result.last_keepalive)),
            last_worker_seen=str(int(result.last_worker_seen)) if result.last_worker_seen else "",
            ttl_seconds=result.ttl_seconds,
            agent_version=result.agent_version,
        )
    )


@router.get("/config")
async def config(
    request: Request, principal: MachineOrAdminDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """How a worker reaches this hub, and its token's own binding. Never a secret."""
    return gateway.machine_config(runtime.settings, principal, str(request.base_url))


@router.get("/list", response_model=list[ListedMachine])
async def list_machines(
    principal: MachineOrAdminDep,
    runtime: RuntimeDep,
    pool_name: str | None = Query(None, description="Only this pool."),
    provider_name: str | None = Query(None, description="Only this provider."),
) -> list[ListedMachine]:
    """Machines whose status is ``ready``."""
    found = await gateway.list_ready(
        runtime.nodes, principal, pool_name=pool_name, provider_name=provider_name
    )
    return [
        ListedMachine(
            state=ListedState(
                machine_id=s.machine_id,
                pool_name=s.pool_name,
                status=s.status,
                hostname=s.hostname,
                provider_name=s.provider_name,
                cpu=s.cpu,
                memory=s.memory,
                gpu_count=s.gpu_count,
                agent_version=s.agent_version,
            ),
            metrics=s.metrics,
        )
        for s in found
    ]


@router.get("/{workspace_id}/gpus")
async def gpus(
    workspace_id: str, principal: OptionalPrincipalDep, runtime: RuntimeDep
) -> dict[str, int]:
    """GPU counts by type over ready machines (admin or workspace credentials)."""
    return await gateway.gpu_counts(runtime.nodes, principal, workspace_id)
