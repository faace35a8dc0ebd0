"""Cluster surface: workloads — submit, list, inspect, cancel, and read or follow logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

from fastapi import Query
from starlette.responses import StreamingResponse

from agenthub.api.cluster.envelope import Envelope, wrap
from agenthub.api.cluster.params import ClusterPage
from agenthub.api.cluster.schemas import Pagination
from agenthub.api.cluster.workload_schemas import (
    CancelRequest,
    LogLineRead,
    WorkloadCreate,
    WorkloadList,
    WorkloadLogs,
    WorkloadRead,
    read,
)
from agenthub.api.deps import PrincipalDep, RuntimeDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.events import EventDict
from agenthub.core.pagination import Sort
from agenthub.services.scheduling import logs, workloads
from agenthub.services.scheduling.spec import FINISHED, WorkloadSpec

router = SurfaceRouter(prefix="/api", tags=["cluster"])
FOLLOW_HEARTBEAT_S = 15.0


@router.post("/workloads", status_code=201, response_model=Envelope[WorkloadRead])
async def create_workload(
    body: WorkloadCreate, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> Envelope[WorkloadRead]:
    """Queue a workload; the scheduler places it on a node that fits."""
    spec = WorkloadSpec(
        command=body.command,
        runtime=body.runtime,
        name=body.name,
        env=body.env,
        workspace=body.workspace,
        working_dir=body.working_dir,
        image=body.image,
        network=body.network,
        ports=[p.model_dump() for p in body.ports],
        volumes=[v.model_dump() for v in body.volumes],
        files=body.files,
        cpu_millicores=body.resources.cpu_millicores,
        memory_mib=body.resources.memory_mib,
        gpu_count=body.resources.gpu_count,
        pool_name=body.pool,
        node_selector=body.node_selector,
        tolerations=[t.model_dump() for t in body.tolerations],
        priority=body.priority,
        restart_policy=body.restart_policy,
        max_restarts=body.max_restarts,
        timeout_s=body.timeout_s,
        project_id=body.project_id,
        tenant_id=body.tenant_id,
    )
    workload = await workloads.create_workload(session, runtime.settings, principal, spec)
    return wrap(read(workload))


@router.get("/workloads", response_model=Envelope[WorkloadList])
async def list_workloads(
    principal: PrincipalDep,
    session: SessionDep,
    page: ClusterPage,
    status: str | None = Query(None, description="queued, scheduled, ..., lost."),
    node_id: str | None = Query(None),
    project_id: uuid.UUID | None = Query(None),
    owner_kind: str | None = Query(None),
    owner_id: str | None = Query(None),
    sort: str | None = Query(None, description="created_at, priority or status"),
    order: str | None = Query(None, description="asc or desc"),
) -> Envelope[WorkloadList]:
    """The workloads the caller may see, newest first by default."""
    sort_by = Sort.parse(
        sort, order, allowed=workloads.SORT_COLUMNS, default=workloads.DEFAULT_SORT
    )
    found, total = await workloads.list_workloads(
        session,
        principal,
        page=page,
        sort=sort_by,
        status=status,
        node_id=node_id,
        project_id=project_id,
        owner_kind=owner_kind,
        owner_id=owner_id,
    )
    return wrap(
        WorkloadList(workloads=[read(w) for w in found], pagination=Pagination.of(page, total))
    )


@router.get("/workloads/{workload_id}", response_model=Envelope[WorkloadRead])
async def get_workload(
    workload_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> Envelope[WorkloadRead]:
    return wrap(read(await workloads.get_workload(session, principal, workload_id)))


@router.post(
    "/workloads/{workload_id}/cancel", status_code=202, response_model=Envelope[WorkloadRead]
)
async def cancel_workload(
    workload_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    body: CancelRequest | None = None,
) -> Envelope[WorkloadRead]:
    """Stop it: at once if not started, else the node agent kills its process tree."""
    reason = body.reason if body else None
    workload = await workloads.cancel_workload(session, principal, workload_id, reason)
    return wrap(read(workload))


@router.get("/workloads/{workload_id}/logs", response_model=Envelope[WorkloadLogs])
async def workload_logs(
    workload_id: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    tail: int | None = Query(None, ge=1, le=10000, description="Only the last N lines."),
    since: float | None = Query(None, description="Lines at or after this unix time."),
    after_id: int | None = Query(None, ge=0, description="Lines after this line id."),
    attempt: int | None = Query(None, ge=1, description="Only this run of the workload."),
) -> Envelope[WorkloadLogs]:
    """The stored lines (the newest ``workload_log_max_lines`` of each workload)."""
    await workloads.get_workload(session, principal, workload_id)
    lines = await logs.read(
        session, workload_id, tail=tail, since=since, after_id=after_id, attempt=attempt
    )
    return wrap(WorkloadLogs(workload_id=workload_id, lines=[LogLineRead(**x) for x in lines]))


@router.get("/workloads/{workload_id}/logs/stream")
async def follow_logs(
    workload_id: uuid.UUID,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    tail: int | None = Query(None, ge=1, le=10000, description="Start with the last N lines."),
) -> StreamingResponse:
    """Server-sent events: one ``log`` event per line (``id`` = line id), live, until the
    workload finishes (then an ``end`` event with its status)."""
    async with runtime.db.session() as session:
        await workloads.get_workload(session, principal, workload_id)

    async def stream() -> AsyncIterator[str]:
        woken = asyncio.Event()
        wanted = str(workload_id)

        def wake(event: EventDict) -> bool:
            if event.get("data", {}).get("workload_id") == wanted:
                woken.set()
            return False

        async with runtime.bus.subscribe(wake):
            after_id: int | None = None
            first = True
            while True:
                woken.clear()
                async with runtime.db.session() as session:
                    workload = await workloads.get_workload(session, principal, workload_id)
                    lines = await logs.read(
                        session, workload_id, after_id=after_id, tail=tail if first else None
                    )
                    finished = workload.status in FINISHED
                    status = workload.status
                first = False
                for line in lines:
                    after_id = line["id"]
                    yield f"id: {line['id']}\nevent: log\ndata: {json.dumps(line)}\n\n"
                if finished and not lines:
                    yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
                    return
                if lines:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), timeout=FOLLOW_HEARTBEAT_S)
                if not woken.is_set():
                    yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
