"""Hub surface: projects — create, read, update, list."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Query
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.api.deps import PrincipalDep, RuntimeDep, SessionDep
from agenthub.api.hub.params import HubPage
from agenthub.api.hub.schemas import (
    Amounts,
    ProjectCreate,
    ProjectCreated,
    ProjectList,
    ProjectRead,
    ProjectSummary,
    ProjectUpdate,
)
from agenthub.api.routing import SurfaceRouter
from agenthub.core.settings import Settings
from agenthub.db.models import Project
from agenthub.services.checkpoints import checkpoints
from agenthub.services.projects import projects
from agenthub.services.projects.budgets import BudgetView, budget_views

router = SurfaceRouter(prefix="/api/v1", tags=["hub"])


def usage_today(view: BudgetView) -> dict[str, Amounts]:
    a, used = view.allocation, view.used
    return {
        "money": Amounts(
            allocated=round(a.money, 9),
            used=round(used.money, 9),
            remaining=round(view.money_remaining, 9),
        ),
        "time": Amounts(
            allocated=round(a.time_hours, 9),
            used=round(used.time_hours, 9),
            remaining=round(view.time_hours_remaining, 9),
        ),
        "api_calls": Amounts(
            allocated=a.api_calls, used=used.api_calls, remaining=view.api_calls_remaining
        ),
    }


def own_budgets(project: Project) -> dict[str, Any]:
    return {
        "daily_money": project.daily_money,
        "daily_time_hours": project.daily_time_hours,
        "daily_api_calls": project.daily_api_calls,
        "storage_gb": project.storage_gb,
        "max_concurrent_machines": project.max_concurrent_machines,
    }


async def project_read(session: AsyncSession, settings: Settings, project: Project) -> ProjectRead:
    view = (await budget_views(session, settings, [project]))[project.id]
    used_gb = await checkpoints.storage_used(session, project.id) / checkpoints.GB
    storage = Amounts(
        allocated=round(view.allocation.storage_gb, 9),
        used=round(used_gb, 9),
        remaining=round(max(0.0, view.allocation.storage_gb - used_gb), 9),
    )
    return ProjectRead(
        uuid=project.id,
        name=project.name,
        greediness=project.greediness,
        description=project.description,
        status=project.status,
        current_checkpoint=project.current_checkpoint_id,
        resource_budgets=own_budgets(project),
        resource_usage_today={**usage_today(view), "storage": storage},
        active_machines=view.committed.machines,
        total_checkpoints=await checkpoints.count_ready(session, project.id),
        created_at=project.created_at,
        updated_at=project.updated_at,
    )


@router.post("/projects", status_code=201, response_model=ProjectCreated)
async def create_project(
    body: ProjectCreate, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> ProjectCreated:
    """A new project. Own budgets (``resource_budgets``) may be set by admins only; without
    them the project gets its greediness share of the hub's daily budget."""
    budgets = body.resource_budgets
    project = await projects.create_project(
        session,
        principal,
        name=body.name,
        greediness=body.greediness,
        description=body.description,
        budgets=projects.Budgets(
            daily_money=budgets.daily_money,
            daily_time_hours=budgets.daily_time_hours,
            daily_api_calls=budgets.daily_api_calls,
            storage_gb=budgets.storage_gb,
        ),
    )
    await checkpoints.create_initial(session, runtime.blobs, project)
    return ProjectCreated(
        uuid=project.id,
        name=project.name,
        greediness=project.greediness,
        description=project.description,
        initial_checkpoint=project.current_checkpoint_id,
        created_at=project.created_at,
    )


@router.get("/projects", response_model=ProjectList)
async def list_projects(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    page: HubPage,
    active: bool | None = Query(None, description="Only active (true) or archived (false)."),
    sort: str = Query("created_at_desc", description="greediness_desc, name_asc, ..."),
) -> ProjectList:
    found, total = await projects.list_projects(
        session, principal, page=page, active=active, sort=sort
    )
    views = await budget_views(session, runtime.settings, list(found))
    return ProjectList(
        projects=[
            ProjectSummary(
                uuid=p.id,
                name=p.name,
                greediness=p.greediness,
                status=p.status,
                daily_resource_usage={
                    **usage_today(views[p.id]),
                    "active_machines": views[p.id].committed.machines,
                },
            )
            for p in found
        ],
        total_count=total,
        has_more=page.has_more(total),
        next_offset=page.next_offset(total),
    )


@router.get("/projects/{project_uuid}", response_model=ProjectRead)
async def get_project(
    project_uuid: uuid.UUID, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> ProjectRead:
    project = await projects.get_project(session, principal, project_uuid)
    return await project_read(session, runtime.settings, project)


@router.put("/projects/{project_uuid}", response_model=ProjectRead)
async def update_project(
    project_uuid: uuid.UUID,
    body: ProjectUpdate,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> ProjectRead:
    """Change any of ``name``, ``greediness``, ``description``, ``status``."""
    fields = body.model_dump(exclude_unset=True)
    for key in [k for k, v in fields.items() if v is None]:
        del fields[key]  # none of these can be cleared
    project = await projects.update_project(session, principal, project_uuid, **fields)
    return await project_read(session, runtime.settings, project)
