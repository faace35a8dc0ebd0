"""Hub surface: Intelligent Machines — spawn, inspect, list, terminate, logs, usage reports."""

from __future__ import annotations

import uuid

from fastapi import Query

from agenthub.api.deps import PrincipalDep, RuntimeDep, SessionDep, WorkloadOrPrincipalDep
from agenthub.api.hub.params import HubPage
from agenthub.api.hub.schemas import (
    Estimated,
    MachineCreate,
    MachineList,
    MachineLogs,
    MachineRead,
    MachineSpawned,
    Terminated,
    TerminateRequest,
    UsageReport,
)
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import utcnow
from agenthub.services.machines import machines, usage
from agenthub.services.machines.machines import MachineRecord
from agenthub.services.scheduling import logs

router = SurfaceRouter(prefix="/api/v1", tags=["hub"])


def read(found: MachineRecord, progress: str | None) -> MachineRead:
    machine, workload = found.machine, found.workload
    return MachineRead(
        uuid=machine.id,
        type=machine.type,
        status=found.status,
        project_uuid=machine.project_id,
        vm_id=machine.vm_id,
        prompt=machine.prompt,
        resource_usage=usage.resource_usage(found),
        progress=progress,
        last_checkpoint=machine.last_checkpoint_id,
        checkpoints_created=machine.checkpoints_created,
        node_id=workload.node_id,
        pending_reason=workload.pending_reason,
        termination_reason=machine.termination_reason,
        exit_code=workload.exit_code,
        spawned_at=machine.created_at,
        started_at=workload.started_at,
        finished_at=workload.finished_at,
        updated_at=max(machine.updated_at, workload.updated_at),
    )


@router.post("/machines", status_code=201, response_model=MachineSpawned)
async def spawn_machine(
    body: MachineCreate, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> MachineSpawned:
    """Spawn a machine into a project; 409 when the project cannot afford it today."""
    limits = body.resource_constraints
    found, estimate = await machines.spawn(
        session,
        runtime.settings,
        principal,
        type_name=body.type,
        project_id=body.project_uuid,
        prompt=body.prompt,
        checkpoint_id=body.checkpoint_uuid,
        file_modifications=body.file_modifications,
        max_money=limits.max_money,
        max_time_minutes=limits.max_time_minutes,
        max_api_calls=limits.max_api_calls,
    )
    return MachineSpawned(
        machine_uuid=found.machine.id,
        vm_id=found.machine.vm_id,
        status=found.status,
        estimated_resources=Estimated(
            money=estimate.money, time_minutes=estimate.time_minutes, api_calls=estimate.api_calls
        ),
        spawned_at=found.machine.created_at,
    )


@router.get("/machines", response_model=MachineList)
async def list_machines(
    principal: PrincipalDep,
    session: SessionDep,
    page: HubPage,
    status: str | None = Query(None, description="queued, spawning, working, completed, ..."),
    project_uuid: uuid.UUID | None = None,
) -> MachineList:
    found, total = await machines.list_machines(
        session, principal, page=page, status=status, project_id=project_uuid
    )
    progress = await machines.progress(session, [f.workload.id for f in found])
    return MachineList(
        machines=[read(f, progress.get(f.workload.id)) for f in found],
        total_count=total,
        has_more=page.has_more(total),
        next_offset=page.next_offset(total),
    )


@router.get("/machines/{machine_uuid}", response_model=MachineRead)
async def get_machine(
    machine_uuid: uuid.UUID, principal: WorkloadOrPrincipalDep, session: SessionDep
) -> MachineRead:
    found = await machines.get_machine(session, principal, machine_uuid)
    progress = await machines.progress(session, [found.workload.id])
    return read(found, progress.get(found.workload.id))


@router.post("/machines/{machine_uuid}/terminate", response_model=Terminated)
async def terminate_machine(
    machine_uuid: uuid.UUID,
    principal: PrincipalDep,
    session: SessionDep,
    body: TerminateRequest | None = None,
) -> Terminated:
    """Stop a machine; 409 when it has already ended."""
    body = body or TerminateRequest()
    found, final = await machines.terminate(
        session,
        principal,
        machine_uuid,
        reason=body.reason,
        create_checkpoint=body.create_checkpoint,
    )
    return Terminated(
        machine_uuid=found.machine.id,
        status="terminated",
        final_checkpoint=final.id if final is not None else None,
        resource_usage=usage.resource_usage(found),
        terminated_at=found.machine.terminated_at or utcnow(),
    )


@router.get("/machines/{machine_uuid}/logs", response_model=MachineLogs)
async def machine_logs(
    machine_uuid: uuid.UUID,
    principal: WorkloadOrPrincipalDep,
    session: SessionDep,
    tail: int = Query(100, ge=1, le=5000, description="The last N lines."),
) -> MachineLogs:
    found = await machines.get_machine(session, principal, machine_uuid)
    lines = await logs.read(session, found.workload.id, tail=tail)
    return MachineLogs(
        machine_uuid=found.machine.id,
        logs="".join(f"{line['text']}\n" for line in lines),
        lines=len(lines),
    )


@router.post("/machines/{machine_uuid}/usage", response_model=MachineRead)
async def report_usage(
    machine_uuid: uuid.UUID,
    body: UsageReport,
    principal: WorkloadOrPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> MachineRead:
    """A machine reports API calls and money it spent (with its own ``AGENTHUB_TOKEN``)."""
    found = await usage.report_usage(
        session,
        runtime.settings,
        principal,
        machine_uuid,
        api_calls=body.api_calls,
        money=body.money,
        model=body.model,
        description=body.description,
    )
    progress = await machines.progress(session, [found.workload.id])
    return read(found, progress.get(found.workload.id))
