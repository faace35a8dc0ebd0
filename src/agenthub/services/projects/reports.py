"""Resource reports read from the ledger and the machines: the overview, a project's usage over
a period, and efficiency analytics. Every figure is computed from stored data."""

from __future__ import annotations

import bisect
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import utcnow
from agenthub.core.errors import ValidationFailed
from agenthub.core.settings import Settings
from agenthub.db.models import Machine, Node, Project, Workload
from agenthub.services.nodes.state import READY
from agenthub.services.projects import ledger
from agenthub.services.projects.budgets import ACTIVE_PROJECT, budget_views, day_starts
from agenthub.services.projects.projects import get_project, visible
from agenthub.services.scheduling.spec import ACTIVE, FINISHED, SUCCEEDED

PERIODS = {"today": 1, "last_7_days": 7, "last_30_days": 30}
TOP_CONSUMERS = 5


def period_days(period: str) -> int:
    if period not in PERIODS:
        raise ValidationFailed(
            f"period must be one of {', '.join(PERIODS)}", details={"period": period}
        )
    return PERIODS[period]


def _percent(used: float, budget: float) -> float:
    return round(used / budget * 100, 2) if budget > 0 else 0.0


async def _visible_projects(session: AsyncSession, principal: Principal) -> list[Project]:
    return list((await session.scalars(sa.select(Project).where(visible(principal)))).all())


async def active_machines(session: AsyncSession, project_ids: list[uuid.UUID] | None) -> int:
    stmt = (
        sa.select(sa.func.count())
        .select_from(Machine)
        .join(Workload, Workload.id == Machine.workload_id)
        .where(Workload.status.in_(ACTIVE))
    )
    if project_ids is not None:
        stmt = stmt.where(Machine.project_id.in_(project_ids or [uuid.UUID(int=0)]))
    return int(await session.scalar(stmt) or 0)


async def compute_utilization(session: AsyncSession) -> float:
    """CPU booked on ready nodes / their CPU, percent."""
    row = (
        await session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(Node.cpu_allocated), 0),
                sa.func.coalesce(sa.func.sum(Node.cpu_millicores), 0),
            ).where(Node.status == READY)
        )
    ).one()
    return _percent(float(row[0]), float(row[1]))


async def overview(
    session: AsyncSession, settings: Settings, principal: Principal
) -> dict[str, Any]:
    """Today's budgets and usage over the projects the caller may see."""
    projects = await _visible_projects(session, principal)
    active = [p for p in projects if p.status == ACTIVE_PROJECT]
    views = await budget_views(session, settings, active)
    ids = [p.id for p in projects]
    used = await ledger.usage_by_project(session, ids, day_starts(settings, 1)[0])
    budget_money = sum(v.allocation.money for v in views.values())
    budget_hours = sum(v.allocation.time_hours for v in views.values())
    budget_calls = sum(v.allocation.api_calls for v in views.values())
    total = ledger.Usage()
    for usage in used.values():
        total.money += usage.money
        total.time_seconds += usage.time_seconds
        total.api_calls += usage.api_calls
    names = {p.id: p.name for p in projects}
    top = sorted(used.items(), key=lambda item: item[1].money, reverse=True)[:TOP_CONSUMERS]
    return {
        "system_totals": {
            "daily_money_budget": round(budget_money, 9),
            "daily_money_used": round(total.money, 9),
            "active_machines": await active_machines(session, None if principal.is_admin else ids),
            "total_projects": len(projects),
        },
        "resource_utilization": {
            "money": _percent(total.money, budget_money),
            "time": _percent(total.time_hours, budget_hours),
            "api_calls": _percent(total.api_calls, budget_calls),
            "compute": await compute_utilization(session),
        },
        "top_resource_consumers": [
            {
                "project_uuid": str(pid),
                "project_name": names.get(pid),
                "daily_money_used": round(usage.money, 9),
            }
            for pid, usage in top
            if usage.money > 0
        ],
    }


@dataclass
class _Finished:
    """Machines that ended: how many, how many completed, their money and minutes."""

    total: int = 0
    succeeded: int = 0
    money: float = 0.0
    minutes: float = 0.0


async def _finished_machines(
    session: AsyncSession, project_ids: list[uuid.UUID], since: datetime, until: datetime
) -> list[tuple[Machine, Workload]]:
    rows = await session.execute(
        sa.select(Machine, Workload)
        .join(Workload, Workload.id == Machine.workload_id)
        .where(
            Machine.project_id.in_(project_ids or [uuid.UUID(int=0)]),
            Workload.status.in_(FINISHED),
            Workload.finished_at >= since,
            Workload.finished_at < until,
        )
    )
    return [(m, w) for m, w in rows]


async def project_usage(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    project_id: uuid.UUID,
    period: str,
) -> dict[str, Any]:
    """A project's usage over ``period``: totals, per day, and efficiency metrics."""
    days = day_starts(settings, period_days(period))
    project = await get_project(session, principal, project_id)
    end = days[-1] + timedelta(days=1, hours=1)  # past any DST shift of the last day
    end = max(end, utcnow())
    per_day = await ledger.daily(session, days, end, project_ids=[project.id])
    total = ledger.Usage()
    for usage, _ in per_day:
        total.money += usage.money
        total.api_calls += usage.api_calls
        total.time_seconds += usage.time_seconds
        total.cpu_seconds += usage.cpu_seconds
    ended = await _finished_machines(session, [project.id], days[0], end)
    minutes = [
        (w.finished_at - w.started_at).total_seconds() / 60
        for _, w in ended
        if w.started_at is not None and w.finished_at is not None
    ]
    checkpoints = sum(m.checkpoints_created for m, _ in ended)
    return {
        "project_uuid": str(project.id),
        "period": period,
        "total_usage": {
            "money": round(total.money, 9),
            "time_hours": round(total.time_hours, 9),
            "api_calls": total.api_calls,
            "compute_hours": round(total.compute_hours, 9),
        },
        "daily_breakdown": [
            {
                "date": start.date().isoformat(),
                "money": round(usage.money, 9),
                "time_hours": round(usage.time_hours, 9),
                "api_calls": usage.api_calls,
                "machines_active": machines,
            }
            for start, (usage, machines) in zip(days, per_day, strict=True)
        ],
        "efficiency_metrics": {
            "cost_per_checkpoint": round(total.money / checkpoints, 9) if checkpoints else None,
            "api_calls_per_operation": round(total.api_calls / len(ended), 3) if ended else None,
            "average_machine_runtime": round(sum(minutes) / len(minutes), 3) if minutes else None,
            "machines_finished": len(ended),
        },
    }


async def efficiency(
    session: AsyncSession, settings: Settings, principal: Principal, period: str
) -> dict[str, Any]:
    """Success (a machine that ``completed``) and cost per success over ``period``, overall,
    per machine type and per day, over the projects the caller may see."""
    days = day_starts(settings, period_days(period))
    end = max(days[-1] + timedelta(days=1, hours=1), utcnow())
    ids = [p.id for p in await _visible_projects(session, principal)]
    ended = await _finished_machines(session, ids, days[0], end)
    overall = _Finished()
    types: dict[str, _Finished] = {}
    daily = [_Finished() for _ in days]
    for machine, workload in ended:
        ok = workload.status == SUCCEEDED
        minutes = (
            (workload.finished_at - workload.started_at).total_seconds() / 60
            if workload.started_at and workload.finished_at
            else 0.0
        )
        index = max(0, bisect.bisect_right(days, workload.finished_at or days[0]) - 1)
        for bucket in (overall, types.setdefault(machine.type, _Finished()), daily[index]):
            bucket.total += 1
            bucket.succeeded += ok
            bucket.money += machine.money_used
            bucket.minutes += minutes
    return {
        "period": period,
        "overall_efficiency": {
            "successful_operations": overall.succeeded,
            "total_operations": overall.total,
            "success_rate": round(overall.succeeded / overall.total, 4) if overall.total else 0.0,
            "average_cost_per_success": round(overall.money / overall.succeeded, 9)
            if overall.succeeded
            else None,
        },
        "machine_performance": {
            name: {
                "success_rate": round(t.succeeded / t.total, 4),
                "average_cost": round(t.money / t.total, 9),
                "average_time_minutes": round(t.minutes / t.total, 3),
                "operations": t.total,
            }
            for name, t in sorted(types.items())
        },
        "resource_trends": [
            {
                "date": start.date().isoformat(),
                "efficiency_score": round(d.succeeded / d.total, 4) if d.total else None,
                "cost_per_operation": round(d.money / d.total, 9) if d.total else None,
                "operations": d.total,
            }
            for start, d in zip(days, daily, strict=True)
        ],
    }
