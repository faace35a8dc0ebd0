"""Workloads: create, query and cancel them, and every status change after placement.

Status flow: ``queued → scheduled → starting → running → succeeded | failed | terminated |
lost``. A finished workload may be queued again by its restart policy (``attempt`` counts the
runs). Capacity a placed workload holds on its node is released in the same transaction as
the change that ends its placement, so the node's books always match its workloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import utcnow
from agenthub.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agenthub.core.pagination import Page, Sort
from agenthub.core.settings import Settings
from agenthub.db.models import Node, Workload
from agenthub.db.query import fetch_page
from agenthub.services import events
from agenthub.services.nodes.pools import pool_exists
from agenthub.services.scheduling.spec import (
    FAILED,
    FINISHED,
    LOST,
    PLACED,
    QUEUED,
    SCHEDULED,
    STATUSES,
    SUCCEEDED,
    TERMINATED,
    WorkloadSpec,
)

DEFAULT_SORT = Sort("created_at", "desc")
SORT_COLUMNS = {
    "created_at": Workload.created_at,
    "priority": Workload.priority,
    "status": Workload.status,
}


def event_data(workload: Workload, **extra: Any) -> dict[str, Any]:
    return {
        "workload_id": str(workload.id),
        "name": workload.name,
        "status": workload.status,
        "node_id": workload.node_id,
        "attempt": workload.attempt,
        "owner_kind": workload.owner_kind,
        "owner_id": workload.owner_id,
        **extra,
    }


async def record(session: AsyncSession, workload: Workload, type_: str, **extra: Any) -> None:
    await events.record(
        session,
        type_,
        event_data(workload, **extra),
        project_id=workload.project_id,
        tenant_id=workload.tenant_id,
    )


def can_see(principal: Principal, workload: Workload) -> bool:
    """Admins see every workload; others those of their project or tenant, or their own."""
    if principal.is_admin:
        return True
    if principal.project_id is not None and workload.project_id == principal.project_id:
        return True
    if principal.tenant_id is not None and workload.tenant_id == principal.tenant_id:
        return True
    return workload.created_by == principal.rate_limit_subject


async def create_workload(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    spec: WorkloadSpec,
    *,
    scope_checked: bool = False,
) -> Workload:
    """Queue a new workload; the scheduler places it (an event wakes it after the commit).

    ``scope_checked``: the calling service has already checked that ``principal`` may act in
    ``spec.project_id``/``spec.tenant_id`` (a Hub machine in a project the caller can see)."""
    spec.validated()
    if not await pool_exists(session, settings, spec.pool_name):
        raise ValidationFailed(f"Unknown pool {spec.pool_name!r}.", code="invalid_pool")
    if not principal.is_admin and not scope_checked:
        # A bind mount of a host path gives a container the node's files: admins only.
        if any(str(v.get("source", "")).startswith("/") for v in spec.volumes):
            raise Forbidden(
                "Only admins may mount host paths; use a named volume (a source without '/')."
            )
        # A scoped caller's workloads belong to its own project/tenant, whatever it asked.
        if spec.project_id is not None and spec.project_id != principal.project_id:
            raise Forbidden("These credentials cannot create workloads in that project.")
        if spec.tenant_id is not None and spec.tenant_id != principal.tenant_id:
            raise Forbidden("These credentials cannot create workloads in that tenant.")
        spec.project_id, spec.tenant_id = principal.project_id, principal.tenant_id
    workload_id = uuid.uuid4()
    now = utcnow()
    workload = Workload(
        id=workload_id,
        name=spec.name,
        project_id=spec.project_id,
        tenant_id=spec.tenant_id,
        created_by=principal.rate_limit_subject,
        owner_kind=spec.owner_kind,
        owner_id=spec.owner_id,
        pool_name=spec.pool_name,
        cpu_millicores=spec.cpu_millicores,
        memory_mib=spec.memory_mib,
        gpu_count=spec.gpu_count,
        node_selector=spec.node_selector,
        tolerations=spec.tolerations,
        priority=spec.priority,
        restart_policy=spec.restart_policy,
        max_restarts=spec.max_restarts,
        timeout_s=spec.timeout_s,
        runtime=spec.runtime,
        command=list(spec.command),
        env=dict(spec.env),
        workspace=spec.workspace or str(workload_id),
        working_dir=spec.working_dir,
        image=spec.image,
        network=spec.network,
        ports=spec.ports,
        volumes=spec.volumes,
        workspace_manifest=spec.workspace_manifest,
        files=dict(spec.files),
        status=QUEUED,
        queued_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(workload)
    await session.flush()
    await record(session, workload, "workload.queued")
    return workload


async def get_workload(
    session: AsyncSession, principal: Principal, workload_id: uuid.UUID
) -> Workload:
    """The workload, if ``principal`` may see it (else 404: its existence is not disclosed)."""
    workload = await session.get(Workload, workload_id)
    if workload is None or not can_see(principal, workload):
        raise NotFound(f"Workload {workload_id} not found.", code="workload_not_found")
    return workload


async def list_workloads(
    session: AsyncSession,
    principal: Principal,
    *,
    page: Page,
    sort: Sort,
    status: str | None = None,
    node_id: str | None = None,
    project_id: uuid.UUID | None = None,
    owner_kind: str | None = None,
    owner_id: str | None = None,
) -> tuple[Sequence[Workload], int]:
    stmt = sa.select(Workload)
    if status is not None:
        if status not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}")
        stmt = stmt.where(Workload.status == status)
    if node_id is not None:
        stmt = stmt.where(Workload.node_id == node_id)
    if project_id is not None:
        stmt = stmt.where(Workload.project_id == project_id)
    if owner_kind is not None:
        stmt = stmt.where(Workload.owner_kind == owner_kind)
    if owner_id is not None:
        stmt = stmt.where(Workload.owner_id == owner_id)
    if not principal.is_admin:
        mine = [Workload.created_by == principal.rate_limit_subject]
        if principal.project_id is not None:
            mine.append(Workload.project_id == principal.project_id)
        if principal.tenant_id is not None:
            mine.append(Workload.tenant_id == principal.tenant_id)
        stmt = stmt.where(sa.or_(*mine))
    return await fetch_page(
        session, stmt, page=page, sort=sort, columns=SORT_COLUMNS, tiebreak=Workload.id
    )


async def cancel_workload(
    session: AsyncSession, principal: Principal, workload_id: uuid.UUID, reason: str | None = None
) -> Workload:
    """Stop a workload. Not yet started: terminated at once. On a node: the node agent is told
    (its long poll wakes), stops the process tree and reports ``terminated``."""
    workload = await get_workload(session, principal, workload_id)
    if workload.status in FINISHED:
        raise Conflict(
            f"Workload {workload_id} has already finished ({workload.status}).",
            code="workload_finished",
        )
    return await request_cancel(session, workload, reason or f"cancelled by {principal.name}")


async def request_cancel(session: AsyncSession, workload: Workload, reason: str) -> Workload:
    """Stop ``workload`` for a service that has checked who asks (a finished one is left)."""
    if workload.status in FINISHED:
        return workload
    if workload.status in (QUEUED, SCHEDULED):
        await finish(session, workload, TERMINATED, error=reason, restart=False)
        return workload
    if workload.cancel_requested_at is None:
        workload.cancel_requested_at = utcnow()
        workload.cancel_reason = reason[:255]
        workload.requeue_on_stop = False
        await session.flush()
        await record(session, workload, "workload.cancel_requested", reason=reason)
    return workload


async def release(session: AsyncSession, workload: Workload) -> None:
    """Give the node back what ``workload`` reserved (it is leaving a placed status)."""
    if workload.node_id is None or workload.status not in PLACED:
        return
    await session.execute(
        sa.update(Node)
        .where(Node.id == workload.node_id)
        .values(
            cpu_allocated=_floor0(Node.cpu_allocated - workload.cpu_millicores),
            memory_allocated=_floor0(Node.memory_allocated - workload.memory_mib),
            gpu_allocated=_floor0(Node.gpu_allocated - workload.gpu_count),
        )
        .execution_options(synchronize_session=False)
    )


def _floor0(value: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    return sa.case((value < 0, 0), else_=value)


def _restarts(workload: Workload, status: str) -> bool:
    if workload.restarts >= workload.max_restarts:
        return False
    if workload.restart_policy == "always":
        return status in (SUCCEEDED, FAILED, LOST)
    return workload.restart_policy == "on_failure" and status in (FAILED, LOST)


async def finish(
    session: AsyncSession,
    workload: Workload,
    status: str,
    *,
    exit_code: int | None = None,
    error: str | None = None,
    restart: bool = True,
) -> None:
    """End the current run with ``status``; queue it again if its restart policy says so."""
    await release(session, workload)
    workload.status = status
    workload.exit_code = exit_code
    workload.error = error
    workload.pending_reason = None  # not waiting any more
    workload.finished_at = utcnow()
    await session.flush()
    await record(session, workload, f"workload.{status}", exit_code=exit_code, error=error)
    if restart and _restarts(workload, status):
        await requeue(session, workload, reason=f"restart policy {workload.restart_policy}")
        workload.restarts += 1


async def requeue(session: AsyncSession, workload: Workload, *, reason: str) -> None:
    """Back to the queue for a new attempt (its node, if any, already released or released
    here); a report from the earlier attempt is then recognised as stale."""
    await release(session, workload)
    workload.status = QUEUED
    workload.node_id = None
    workload.attempt += 1
    workload.exit_code = None
    workload.cancel_requested_at = None
    workload.cancel_reason = None
    workload.requeue_on_stop = False
    workload.pending_reason = None  # the next pass says why it waits, if it does
    workload.queued_at = utcnow()
    workload.scheduled_at = workload.started_at = workload.finished_at = None
    await session.flush()
    await record(session, workload, "workload.queued", requeued=True, reason=reason)


async def placed_on(
    session: AsyncSession, node_id: str, statuses: Sequence[str] = PLACED
) -> Sequence[Workload]:
    """The node's workloads in ``statuses``, locked for update where the database can."""
    stmt = (
        sa.select(Workload)
        .where(Workload.node_id == node_id, Workload.status.in_(statuses))
        .order_by(Workload.scheduled_at)
        .with_for_update()
    )
    return (await session.scalars(stmt)).all()


async def node_lost(session: AsyncSession, node_id: str) -> list[Workload]:
    """The node's keepalive lapsed: what had not started goes back to the queue; what ran is
    ``lost`` and queued again as its restart policy says."""
    affected = list(await placed_on(session, node_id))
    for workload in affected:
        if workload.status == SCHEDULED:
            await requeue(session, workload, reason=f"node {node_id} lost before it started")
        else:
            await vanished(session, workload, f"node {node_id} was lost")
    return affected


async def vanished(session: AsyncSession, workload: Workload, error: str) -> None:
    """A started run is gone without a final report (its node or agent went away): what was
    being stopped ends as it was going to; anything else is ``lost``."""
    if workload.requeue_on_stop:  # being drained: it runs again elsewhere
        await requeue(session, workload, reason=workload.cancel_reason or error)
    elif workload.cancel_requested_at is not None:  # being cancelled: never restarted
        await finish(session, workload, TERMINATED, error=workload.cancel_reason, restart=False)
    else:
        await finish(session, workload, LOST, error=error)


async def drain_node(session: AsyncSession, node_id: str, reason: str) -> list[Workload]:
    """Move work off a node: unstarted work is queued again at once; running work is stopped
    by the node agent and then queued again (not counted as a restart)."""
    affected = list(await placed_on(session, node_id))
    now = utcnow()
    for workload in affected:
        if workload.status == SCHEDULED:
            await requeue(session, workload, reason=reason)
        elif workload.cancel_requested_at is None:
            workload.cancel_requested_at = now
            workload.cancel_reason = reason[:255]
            workload.requeue_on_stop = True
            await session.flush()
            await record(session, workload, "workload.cancel_requested", reason=reason)
    return affected
