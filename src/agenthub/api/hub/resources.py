"""Hub surface: resources (overview, a project's usage, budgets) and efficiency analytics."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Query

from agenthub.api.deps import PrincipalDep, RuntimeDep, SessionDep
from agenthub.api.hub.schemas import BudgetRead, BudgetUpdate
from agenthub.api.routing import SurfaceRouter
from agenthub.services.projects import projects, reports
from agenthub.services.projects.budgets import budget_views

router = SurfaceRouter(prefix="/api/v1", tags=["hub"])

PERIOD = Query("last_7_days", description="today, last_7_days or last_30_days")


@router.get("/resources/overview")
async def overview(
    principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> dict[str, Any]:
    """Today's budget and usage over the projects the caller may see."""
    return await reports.overview(session, runtime.settings, principal)


@router.get("/resources/projects/{project_uuid}")
async def project_usage(
    project_uuid: uuid.UUID,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    period: str = PERIOD,
) -> dict[str, Any]:
    return await reports.project_usage(session, runtime.settings, principal, project_uuid, period)


@router.put("/resources/projects/{project_uuid}/budget", response_model=BudgetRead)
async def update_budget(
    project_uuid: uuid.UUID,
    body: BudgetUpdate,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> BudgetRead:
    """Set a project's own daily budgets (admins); ``null`` returns one to the greediness share."""
    project = await projects.set_budget(
        session, principal, project_uuid, body.model_dump(exclude_unset=True)
    )
    view = (await budget_views(session, runtime.settings, [project]))[project.id]
    return BudgetRead(
        project_uuid=project.id,
        daily_money=project.daily_money,
        daily_api_calls=project.daily_api_calls,
        daily_time_hours=project.daily_time_hours,
        storage_gb=project.storage_gb,
        max_concurrent_machines=project.max_concurrent_machines,
        effective={
            "daily_money": round(view.allocation.money, 9),
            "daily_api_calls": view.allocation.api_calls,
            "daily_time_hours": round(view.allocation.time_hours, 9),
            "storage_gb": round(view.allocation.storage_gb, 9),
            "max_concurrent_machines": view.allocation.max_concurrent_machines,
            "greediness_share": round(view.allocation.share, 9),
        },
        updated_at=project.updated_at,
    )


@router.get("/analytics/efficiency")
async def efficiency(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    period: str = Query("last_30_days", description="today, last_7_days or last_30_days"),
) -> dict[str, Any]:
    """Machines that completed versus all that ended, cost per success, per type and per day."""
    return await reports.efficiency(session, runtime.settings, principal, period)
