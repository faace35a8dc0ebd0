"""The machine controller: bills running machines' compute, enforces limits and budgets,
warns at 80% and settles machines that ended.

Level-triggered: each pass reads every unsettled machine with its workload and makes the
world match the rules, so a crash or a missed event costs nothing but a pass. It runs on the
hub replica holding its lease, woken by workload and usage events and at least every
``machine_controller_interval_s``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.clock import utcnow
from agenthub.core.events import EventBus
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.models import Machine, Project, Workload
from agenthub.services import events
from agenthub.services.checkpoints import checkpoints
from agenthub.services.identity import ais
from agenthub.services.machines.machines import MachineRecord, record, stop
from agenthub.services.machines.status import machine_status
from agenthub.services.machines.usage import BUDGET_EXHAUSTED, exhausted_budget
from agenthub.services.projects import ledger
from agenthub.services.projects.budgets import WARNING_FRACTION, budget_views, day_start
from agenthub.services.scheduling.leases import Leadership, Lease, run_on_events
from agenthub.services.scheduling.spec import FINISHED

log = logging.getLogger("agenthub.machines")

TIME_LIMIT = "time_limit_exceeded"
WAKE_EVENTS = frozenset(
    {
        "workload.running",
        "workload.succeeded",
        "workload.failed",
        "workload.terminated",
        "workload.lost",
        "machine.usage_reported",
        "project.budget_updated",
    }
)


@dataclass
class PassResult:
    machines: int = 0
    billed: int = 0
    stopped: int = 0
    settled: int = 0
    warnings: int = 0


def _compute_usage(
    settings: Settings, workload: Workload, machine: Machine, until: datetime
) -> ledger.Usage | None:
    since = machine.accrued_until or workload.started_at
    if since is None or until <= since:
        return None
    seconds = (until - since).total_seconds()
    cpu = max(0.0, workload.cpu_seconds - machine.cpu_seconds)
    memory_gb_seconds = workload.memory_mib / 1024 * seconds
    money = (
        cpu / 3600 * settings.compute_price_core_hour
        + memory_gb_seconds / 3600 * settings.compute_price_gb_hour
    )
    return ledger.Usage(
        money=money,
        time_seconds=seconds,
        cpu_seconds=cpu,
        memory_gb_seconds=memory_gb_seconds,
    )


async def _bill(
    session: AsyncSession, settings: Settings, found: MachineRecord, now: datetime, final: bool
) -> bool:
    machine, workload = found.machine, found.workload
    until = (workload.finished_at or now) if final else now
    since = machine.accrued_until or workload.started_at
    if since is None:
        return False
    if not final and (until - since).total_seconds() < settings.machine_accrual_interval_s:
        return False
    usage = _compute_usage(settings, workload, machine, until)
    if usage is None:
        return False
    machine.accrued_until = until
    await ledger.append(
        session,
        project_id=machine.project_id,
        machine_id=machine.id,
        source="compute",
        usage=usage,
        at=until,
        details={"cpu_millicores": workload.cpu_millicores, "memory_mib": workload.memory_mib},
    )
    await session.refresh(machine)
    return True


def _warn_kinds(found: MachineRecord, now: datetime) -> list[tuple[str, float, float]]:
    machine, workload = found.machine, found.workload
    running = (now - workload.started_at).total_seconds() if workload.started_at else 0.0
    return [
        ("money", machine.money_used, machine.max_money),
        ("time_minutes", running / 60, float(machine.max_time_minutes)),
        ("api_calls", float(machine.api_calls_used), float(machine.max_api_calls)),
    ]


TRIGGERS = {"completed": "machine_completed", "failed": "machine_failed"}


async def _checkpoint_on_end(session: AsyncSession, found: MachineRecord) -> None:
    """The machine ended: its workspace is checkpointed where it ran (the terminate request's
    checkpoint when it asked for one, else an automatic one), unless it declined."""
    machine, workload = found.machine, found.workload
    node = workload.node_id if workload.started_at is not None else None
    released = await checkpoints.release_waiting(session, machine, node, workload.workspace)
    if released or not machine.checkpoint_on_end or node is None:
        return
    status = machine_status(workload)
    await checkpoints.request(
        session,
        machine,
        type_="automatic",
        trigger=TRIGGERS.get(status, "terminated"),
        node_id=node,
        workspace=workload.workspace,
        description=f"Workspace when the machine {status}.",
    )


async def _machine_pass(
    session: AsyncSession, settings: Settings, found: MachineRecord, now: datetime, out: PassResult
) -> None:
    machine, workload = found.machine, found.workload
    if workload.status in FINISHED:
        if await _bill(session, settings, found, now, final=True):
            out.billed += 1
        machine.settled_at = now
        machine.updated_at = now
        await _checkpoint_on_end(session, found)
        # Its Collab identity ends with it: no more logins, broadcasts or messages to it.
        await ais.retire_machine_identity(session, machine.id)
        await record(
            session,
            machine,
            f"machine.{machine_status(workload)}",
            status=machine_status(workload),
            reason=machine.termination_reason or workload.error,
            exit_code=workload.exit_code,
            money_used=round(machine.money_used, 9),
        )
        out.settled += 1
        return
    if await _bill(session, settings, found, now, final=False):
        out.billed += 1
    if machine.termination_reason is not None:
        return  # already being stopped
    if workload.started_at is not None:
        running = (now - workload.started_at).total_seconds()
        if running >= machine.max_time_minutes * 60:
            await stop(session, found, f"{TIME_LIMIT}: ran {machine.max_time_minutes} minutes")
            out.stopped += 1
            return
    exhausted = exhausted_budget(found)
    if exhausted is not None:
        await stop(session, found, f"{BUDGET_EXHAUSTED}: {exhausted}")
        out.stopped += 1
        return
    for kind, used, limit in _warn_kinds(found, now):
        if limit > 0 and used >= WARNING_FRACTION * limit and kind not in machine.warned:
            machine.warned = [*machine.warned, kind]
            await events.record(
                session,
                "budget.warning",
                {
                    "scope": "machine",
                    "machine_uuid": str(machine.id),
                    "project_uuid": str(machine.project_id),
                    "budget": kind,
                    "used": round(used, 9),
                    "limit": limit,
                    "percent": round(used / limit * 100, 1),
                },
                project_id=machine.project_id,
            )
            out.warnings += 1


async def _project_pass(
    session: AsyncSession,
    settings: Settings,
    project_ids: set[uuid.UUID],
    active: list[MachineRecord],
    now: datetime,
    out: PassResult,
) -> None:
    if not project_ids:
        return
    projects = (await session.scalars(sa.select(Project).where(Project.id.in_(project_ids)))).all()
    views = await budget_views(session, settings, list(projects))
    today = day_start(settings, now).date().isoformat()
    for project in projects:
        view = views[project.id]
        checks = [
            ("money", view.used.money, view.allocation.money),
            ("time_hours", view.used.time_hours, view.allocation.time_hours),
            ("api_calls", float(view.used.api_calls), float(view.allocation.api_calls)),
        ]
        spent = [kind for kind, used, limit in checks if used > 0 and used >= limit]
        if spent:
            for found in active:
                if (
                    found.machine.project_id == project.id
                    and found.machine.termination_reason is None
                ):
                    await stop(
                        session,
                        found,
                        f"{BUDGET_EXHAUSTED}: the project's daily {spent[0]} budget is spent",
                    )
                    out.stopped += 1
        if project.warned_day != today:
            project.warned_day, project.warned = today, []
        for kind, used, limit in checks:
            if limit > 0 and used >= WARNING_FRACTION * limit and kind not in project.warned:
                project.warned = [*project.warned, kind]
                await events.record(
                    session,
                    "budget.warning",
                    {
                        "scope": "project",
                        "project_uuid": str(project.id),
                        "budget": kind,
                        "used": round(used, 9),
                        "limit": limit,
                        "percent": round(used / limit * 100, 1),
                    },
                    project_id=project.id,
                    tenant_id=project.tenant_id,
                )
                out.warnings += 1


async def reconcile(db: Database, bus: EventBus, settings: Settings) -> PassResult:
    """One pass over every unsettled machine; one transaction."""
    out = PassResult()
    async with events.unit_of_work(db, bus) as session:
        rows = (
            await session.execute(
                sa.select(Machine, Workload)
                .join(Workload, Workload.id == Machine.workload_id)
                .where(Machine.settled_at.is_(None))
                .order_by(Machine.created_at)
            )
        ).all()
        now = utcnow()
        out.machines = len(rows)
        active: list[MachineRecord] = []
        projects: set[uuid.UUID] = set()
        for machine, workload in rows:
            found = MachineRecord(machine, workload)
            await _machine_pass(session, settings, found, now, out)
            projects.add(machine.project_id)
            if machine.settled_at is None:
                active.append(found)
        await _project_pass(session, settings, projects, active, now, out)
        await checkpoints.expire_pending(session, settings.checkpoint_timeout_s)
    return out


class MachineController:
    """Runs :func:`reconcile` on the replica holding the lease."""

    def __init__(self, db: Database, bus: EventBus, settings: Settings, lease: Lease) -> None:
        self.db, self.bus, self.settings = db, bus, settings
        self.leadership = Leadership(lease)

    async def run_forever(self) -> None:
        try:
            await run_on_events(
                self.bus, WAKE_EVENTS, self.settings.machine_controller_interval_s, self.tick
            )
        finally:
            await self.leadership.release()

    async def tick(self) -> PassResult | None:
        try:
            if await self.leadership.check():
                return await reconcile(self.db, self.bus, self.settings)
        except Exception:  # retried on the next wake or tick
            log.exception("machine controller pass failed")
        return None
