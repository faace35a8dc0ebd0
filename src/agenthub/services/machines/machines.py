"""Spawning, reading, listing and terminating Intelligent Machines.

A spawn is checked against its project's daily budget while the project's row is locked, so two
concurrent spawns never both pass a budget that only fits one: each spawn reserves its whole
limit (``max_money``, ``max_time_minutes``, ``max_api_calls``) until it ends, and what it spends
moves from that reservation to the ledger.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import utcnow
from agenthub.core.errors import Conflict, LimitExceeded, NotFound, ValidationFailed
from agenthub.core.pagination import Page
from agenthub.core.settings import Settings
from agenthub.db.models import Checkpoint, Machine, Project, Workload, WorkloadLog
from agenthub.services import events
from agenthub.services.checkpoints import checkpoints
from agenthub.services.identity import ais
from agenthub.services.machines.status import ENDED, WORKING, machine_status, status_condition
from agenthub.services.machines.types import MachineType, render, resolve
from agenthub.services.projects import projects as project_service
from agenthub.services.projects.budgets import ACTIVE_PROJECT, BudgetView, budget_views
from agenthub.services.scheduling import workloads
from agenthub.services.scheduling.spec import WorkloadSpec

OWNER_KIND = "machine"
MAX_PROMPT = 100_000  # one argv argument may hold at most 128 KiB
MAX_TIME_MINUTES = 7 * 24 * 60
DEFAULT_ESTIMATE_MINUTES = 5
HISTORY = 50  # past machines an estimate is the median of


@dataclass
class Limits:
    max_money: float
    max_time_minutes: float
    max_api_calls: int


@dataclass(frozen=True)
class Estimate:
    money: float
    time_minutes: float
    api_calls: int


@dataclass(frozen=True)
class MachineRecord:
    """A machine with the workload it runs as."""

    machine: Machine
    workload: Workload

    @property
    def status(self) -> str:
        return machine_status(self.workload)


def limits(
    settings: Settings,
    *,
    max_money: float | None,
    max_time_minutes: float | None,
    max_api_calls: int | None,
) -> Limits:
    out = Limits(
        settings.machine_default_max_money if max_money is None else max_money,
        settings.machine_default_max_time_minutes if max_time_minutes is None else max_time_minutes,
        settings.machine_default_max_api_calls if max_api_calls is None else max_api_calls,
    )
    if out.max_money < 0:
        raise ValidationFailed("resource_constraints.max_money must not be negative")
    if not 0 < out.max_time_minutes <= MAX_TIME_MINUTES:
        raise ValidationFailed(
            f"resource_constraints.max_time_minutes must be above 0 and at most {MAX_TIME_MINUTES}"
        )
    if out.max_api_calls < 0:
        raise ValidationFailed("resource_constraints.max_api_calls must not be negative")
    return out


def _affordable(view: BudgetView, want: Limits) -> dict[str, Any] | None:
    """``None`` when the project can afford ``want`` now; else what it lacks."""
    allocation, used, held = view.allocation, view.used, view.committed
    lacking: dict[str, Any] = {}
    if (
        allocation.max_concurrent_machines is not None
        and held.machines >= allocation.max_concurrent_machines
    ):
        lacking["required_machines"] = 1
        lacking["available_machines"] = max(0, allocation.max_concurrent_machines - held.machines)
        lacking["max_concurrent_machines"] = allocation.max_concurrent_machines
    money = allocation.money - used.money - held.money
    if want.max_money > money + 1e-9:
        lacking["required_money"] = round(want.max_money, 9)
        lacking["available_money"] = round(max(0.0, money), 9)
    hours = allocation.time_hours - used.time_hours - held.time_seconds / 3600
    if want.max_time_minutes / 60 > hours + 1e-9:
        lacking["required_time_hours"] = round(want.max_time_minutes / 60, 9)
        lacking["available_time_hours"] = round(max(0.0, hours), 9)
    calls = allocation.api_calls - used.api_calls - held.api_calls
    if want.max_api_calls > calls:
        lacking["required_api_calls"] = want.max_api_calls
        lacking["available_api_calls"] = max(0, calls)
    return lacking or None


async def estimate(
    session: AsyncSession,
    settings: Settings,
    project_id: uuid.UUID,
    machine_type: MachineType,
    want: Limits,
) -> Estimate:
    """The median of this project's last machines of this type, else a default; never above
    the machine's own limits."""
    rows = (
        await session.execute(
            sa.select(Machine.money_used, Machine.time_seconds, Machine.api_calls_used)
            .where(
                Machine.project_id == project_id,
                Machine.type == machine_type.name,
                Machine.settled_at.is_not(None),
            )
            .order_by(Machine.created_at.desc())
            .limit(HISTORY)
        )
    ).all()
    if rows:
        money = statistics.median(float(r[0]) for r in rows)
        minutes = statistics.median(float(r[1]) / 60 for r in rows)
        calls = int(statistics.median(int(r[2]) for r in rows))
    else:
        minutes = float(DEFAULT_ESTIMATE_MINUTES)
        cores = (machine_type.cpu_millicores or settings.machine_cpu_millicores) / 1000
        gb = (machine_type.memory_mib or settings.machine_memory_mib) / 1024
        hours = minutes / 60
        money = hours * (
            cores * settings.compute_price_core_hour + gb * settings.compute_price_gb_hour
        )
        calls = 0
    return Estimate(
        money=round(min(money, want.max_money), 9),
        time_minutes=round(min(minutes, float(want.max_time_minutes)), 3),
        api_calls=min(calls, want.max_api_calls),
    )


async def spawn(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    *,
    type_name: str,
    project_id: uuid.UUID,
    prompt: str,
    checkpoint_id: uuid.UUID | None = None,
    file_modifications: dict[str, str] | None = None,
    max_money: float | None = None,
    max_time_minutes: float | None = None,
    max_api_calls: int | None = None,
) -> tuple[MachineRecord, Estimate]:
    """Queue a new machine in ``project_id``: 404 for a project the caller cannot see, 400 for
    an unknown type or bad input, 409 ``RESOURCE_LIMIT_EXCEEDED`` when the project cannot
    afford it today."""
    machine_type = resolve(settings, type_name)
    if len(prompt) > MAX_PROMPT:
        raise ValidationFailed(f"prompt is longer than {MAX_PROMPT} characters")
    if "\x00" in prompt:
        raise ValidationFailed("prompt must not contain NUL bytes")
    want = limits(
        settings,
        max_money=max_money,
        max_time_minutes=max_time_minutes,
        max_api_calls=max_api_calls,
    )
    # Locked: concurrent spawns into this project are checked one after the other.
    project = await project_service.get_project(session, principal, project_id, lock=True)
    if project.status != ACTIVE_PROJECT:
        raise Conflict(f"Project {project_id} is {project.status}; it cannot spawn machines.")
    start = await _start_checkpoint(session, principal, project, checkpoint_id)
    view = (await budget_views(session, settings, [project]))[project.id]
    lacking = _affordable(view, want)
    if lacking is not None:
        raise LimitExceeded(
            "The project cannot afford this machine today: "
            + ", ".join(
                f"{key.removeprefix('required_')} needs {lacking[key]}, "
                f"{lacking['available_' + key.removeprefix('required_')]} available"
                for key in lacking
                if key.startswith("required_")
            )
            + ".",
            code="budget_exceeded",
            details={"project_uuid": str(project.id), **lacking},
        )
    guess = await estimate(session, settings, project.id, machine_type, want)
    machine_id = uuid.uuid4()
    vm_id = f"im-{machine_id.hex[:16]}"
    spec = WorkloadSpec(
        name=f"machine-{machine_type.name}",
        command=render(machine_type, prompt=prompt, machine_id=machine_id, project_id=project.id),
        env={
            **machine_type.env,
            "AGENTHUB_MACHINE_UUID": str(machine_id),
            "AGENTHUB_PROJECT_UUID": str(project.id),
            "AGENTHUB_MACHINE_TYPE": machine_type.name,
        },
        workspace=vm_id,
        workspace_manifest=start.manifest_sha256 if start is not None else None,
        files=dict(file_modifications or {}),
        cpu_millicores=machine_type.cpu_millicores or settings.machine_cpu_millicores,
        memory_mib=machine_type.memory_mib or settings.machine_memory_mib,
        pool_name=settings.machine_pool,
        restart_policy="never",
        # The hub stops it at its limit; the node's own timer is the backstop.
        timeout_s=want.max_time_minutes * 60 + settings.machine_time_grace_s,
        project_id=project.id,
        tenant_id=project.tenant_id,
        owner_kind=OWNER_KIND,
        owner_id=str(machine_id),
    )
    workload = await workloads.create_workload(
        session, settings, principal, spec, scope_checked=True
    )
    now = utcnow()
    machine = Machine(
        id=machine_id,
        project_id=project.id,
        workload_id=workload.id,
        type=machine_type.name,
        prompt=prompt,
        vm_id=vm_id,
        created_by=principal.rate_limit_subject,
        checkpoint_id=start.id if start is not None else None,
        max_money=want.max_money,
        max_time_minutes=want.max_time_minutes,
        max_api_calls=want.max_api_calls,
        estimated_money=guess.money,
        estimated_time_minutes=guess.time_minutes,
        estimated_api_calls=guess.api_calls,
        money_used=0.0,
        api_calls_used=0,
        time_seconds=0.0,
        cpu_seconds=0.0,
        memory_gb_seconds=0.0,
        checkpoints_created=0,
        warned=[],
        created_at=now,
        updated_at=now,
    )
    session.add(machine)
    await session.flush()
    # Every running agent has a Collab identity; its run gets that identity's token.
    await ais.create_for_machine(
        session,
        machine_id=machine_id,
        machine_type=machine_type.name,
        project_name=project.name,
        project_id=project.id,
        tenant_id=project.tenant_id,
        created_by=principal,
    )
    await record(session, machine, "machine.spawned", actor=principal, status="spawning")
    return MachineRecord(machine, workload), guess


async def _start_checkpoint(
    session: AsyncSession,
    principal: Principal,
    project: Project,
    checkpoint_id: uuid.UUID | None,
) -> Checkpoint | None:
    """The checkpoint a new machine's workspace starts from: the one asked for, else the
    project's current one."""
    if checkpoint_id is None:
        if project.current_checkpoint_id is None:
            return None
        current = await session.get(Checkpoint, project.current_checkpoint_id)
        return current if current is not None and current.status == checkpoints.READY else None
    start = await checkpoints.get_checkpoint(session, principal, checkpoint_id)
    if start.project_id != project.id:
        raise ValidationFailed(
            f"Checkpoint {checkpoint_id} belongs to another project.",
            details={"checkpoint_project_uuid": str(start.project_id)},
        )
    if start.status != checkpoints.READY:
        raise Conflict(
            f"Checkpoint {checkpoint_id} is {start.status}; machines start from ready ones.",
            code="checkpoint_not_ready",
        )
    return start


async def record(
    session: AsyncSession,
    machine: Machine,
    type_: str,
    *,
    actor: Principal | None = None,
    tenant_id: uuid.UUID | None = None,
    **data: Any,
) -> None:
    await events.record(
        session,
        type_,
        {
            "machine_uuid": str(machine.id),
            "project_uuid": str(machine.project_id),
            "type": machine.type,
            "vm_id": machine.vm_id,
            **data,
        },
        actor=actor,
        project_id=machine.project_id,
        tenant_id=tenant_id,
    )


def _may_see(principal: Principal, machine: Machine, project: Project) -> bool:
    if principal.is_workload:
        return principal.owner_kind == OWNER_KIND and principal.owner_id == str(machine.id)
    return project_service.can_see(principal, project)


async def get_machine(
    session: AsyncSession, principal: Principal, machine_id: uuid.UUID, *, lock: bool = False
) -> MachineRecord:
    """The machine, if ``principal`` may see its project (or is the machine itself)."""
    stmt = (
        sa.select(Machine, Workload, Project)
        .join(Workload, Workload.id == Machine.workload_id)
        .join(Project, Project.id == Machine.project_id)
        .where(Machine.id == machine_id)
    )
    if lock:
        stmt = stmt.with_for_update(of=Machine)
    row = (await session.execute(stmt)).one_or_none()
    if row is None or not _may_see(principal, row[0], row[2]):
        raise NotFound(f"Machine {machine_id} not found.", code="machine_not_found")
    return MachineRecord(row[0], row[1])


async def list_machines(
    session: AsyncSession,
    principal: Principal,
    *,
    page: Page,
    status: str | None = None,
    project_id: uuid.UUID | None = None,
) -> tuple[list[MachineRecord], int]:
    stmt = (
        sa.select(Machine, Workload)
        .join(Workload, Workload.id == Machine.workload_id)
        .join(Project, Project.id == Machine.project_id)
        .where(project_service.visible(principal))
    )
    if status is not None:
        stmt = stmt.where(status_condition(status))
    if project_id is not None:
        stmt = stmt.where(Machine.project_id == project_id)
    total = await session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
    rows = await session.execute(
        stmt.order_by(Machine.created_at.desc(), Machine.id.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    return [MachineRecord(m, w) for m, w in rows], int(total or 0)


async def progress(
    session: AsyncSession, workload_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Each workload's last line of output (its progress), in two queries for any number."""
    if not workload_ids:
        return {}
    last = (
        sa.select(sa.func.max(WorkloadLog.id))
        .where(WorkloadLog.workload_id.in_(workload_ids), WorkloadLog.stream == "stdout")
        .group_by(WorkloadLog.workload_id)
    )
    rows = await session.execute(
        sa.select(WorkloadLog.workload_id, WorkloadLog.text).where(WorkloadLog.id.in_(last))
    )
    return dict(rows.all())


async def stop(
    session: AsyncSession,
    record_: MachineRecord,
    reason: str,
    *,
    actor: Principal | None = None,
) -> None:
    """Stop a machine that has not ended (its workload is cancelled) and say why."""
    machine = record_.machine
    if machine.termination_reason is None:
        machine.termination_reason = reason
        machine.terminated_at = utcnow()
        machine.updated_at = machine.terminated_at
    await workloads.request_cancel(session, record_.workload, reason)
    await record(session, machine, "machine.terminating", actor=actor, reason=reason)


async def terminate(
    session: AsyncSession,
    principal: Principal,
    machine_id: uuid.UUID,
    *,
    reason: str | None,
    create_checkpoint: bool = True,
) -> tuple[MachineRecord, Checkpoint | None]:
    """Stop a machine at the caller's request; 409 when it has already ended. With
    ``create_checkpoint`` (and a machine that has started) its final checkpoint is taken once
    it has stopped; its uuid is known at once."""
    found = await get_machine(session, principal, machine_id, lock=True)
    if found.status in ENDED:
        raise Conflict(
            f"Machine {machine_id} has already ended ({found.status}).",
            code="machine_ended",
            details={"status": found.status},
        )
    final = None
    if not create_checkpoint:
        found.machine.checkpoint_on_end = False
    elif found.workload.started_at is not None:
        final = await checkpoints.request(
            session,
            found.machine,
            type_="terminate",
            trigger="terminated",
            node_id=found.workload.node_id,
            workspace=found.workload.workspace,
            description=reason or "Workspace when the machine was terminated.",
            waiting=True,
        )
    await stop(session, found, reason or f"terminated by {principal.name}", actor=principal)
    return found, final


async def checkpoint_now(
    session: AsyncSession,
    principal: Principal,
    machine_id: uuid.UUID,
    *,
    context: str | None,
    description: str,
) -> Checkpoint:
    """A manual checkpoint of a working machine's workspace (taken while it runs)."""
    found = await get_machine(session, principal, machine_id, lock=True)
    if found.status != WORKING:
        raise Conflict(
            f"Machine {machine_id} is {found.status}; only a working machine is checkpointed "
            "on request (an ended one was checkpointed when it ended).",
            code="machine_not_working",
            details={"status": found.status},
        )
    return await checkpoints.request(
        session,
        found.machine,
        type_="manual",
        trigger="manual",
        node_id=found.workload.node_id,
        workspace=found.workload.workspace,
        description=description,
        context=context,
    )
