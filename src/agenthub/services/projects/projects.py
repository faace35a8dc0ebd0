"""Projects: create, read, update, list, and who may touch which.

Admins see every project. Anyone else sees the projects of the project their key is scoped to,
of their tenant, or those they created; a project they may not see does not exist for them (404).
Budgets are the operator's allocation: only admins set them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import utcnow
from agenthub.core.errors import Forbidden, NotFound, ValidationFailed
from agenthub.core.pagination import Page
from agenthub.db.models import Project
from agenthub.services import events
from agenthub.services.projects.budgets import ACTIVE_PROJECT

STATUSES = (ACTIVE_PROJECT, "archived")
UNSET: Any = object()


def can_see(principal: Principal, project: Project) -> bool:
    if principal.is_admin:
        return True
    if principal.project_id is not None:
        # A key scoped to one project sees that project only.
        return project.id == principal.project_id
    if principal.tenant_id is not None and project.tenant_id == principal.tenant_id:
        return True
    return project.created_by == principal.rate_limit_subject


def visible(principal: Principal) -> sa.ColumnElement[bool]:
    """SQL condition: the projects ``principal`` may see."""
    if principal.is_admin:
        return sa.true()
    if principal.project_id is not None:
        return Project.id == principal.project_id
    mine: list[sa.ColumnElement[bool]] = [Project.created_by == principal.rate_limit_subject]
    if principal.tenant_id is not None:
        mine.append(Project.tenant_id == principal.tenant_id)
    return sa.or_(*mine)


def _event(project: Project, **extra: Any) -> dict[str, Any]:
    return {"project_id": str(project.id), "name": project.name, **extra}


@dataclass
class Budgets:
    daily_money: float | None = None
    daily_time_hours: float | None = None
    daily_api_calls: int | None = None
    storage_gb: float | None = None
    max_concurrent_machines: int | None = None


async def create_project(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    greediness: float,
    description: str = "",
    budgets: Budgets | None = None,
) -> Project:
    """A new active project, owned by the caller's tenant. Own budgets: admins only."""
    if principal.project_id is not None:
        raise Forbidden("A key scoped to one project cannot create projects.")
    _check_greediness(greediness)
    budgets = budgets or Budgets()
    if not principal.is_admin and any(v is not None for v in vars(budgets).values()):
        raise Forbidden("Only admins set a project's own budgets.")
    now = utcnow()
    project = Project(
        id=uuid.uuid4(),
        name=_check_name(name),
        description=description,
        greediness=greediness,
        status=ACTIVE_PROJECT,
        tenant_id=principal.tenant_id,
        created_by=principal.rate_limit_subject,
        **vars(budgets),
        warned=[],
        created_at=now,
        updated_at=now,
    )
    session.add(project)
    await session.flush()
    await events.record(
        session,
        "project.created",
        _event(project, greediness=greediness),
        actor=principal,
        project_id=project.id,
        tenant_id=project.tenant_id,
    )
    return project


async def get_project(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, *, lock: bool = False
) -> Project:
    """The project, if ``principal`` may see it (else 404). ``lock``: hold its row for the
    transaction, so spawns into one project are checked against its budget one at a time."""
    stmt = sa.select(Project).where(Project.id == project_id)
    if lock:
        stmt = stmt.with_for_update()
    project = (await session.scalars(stmt)).one_or_none()
    if project is None or not can_see(principal, project):
        raise NotFound(f"Project {project_id} not found.", code="project_not_found")
    return project


async def update_project(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    name: str = UNSET,
    greediness: float = UNSET,
    description: str = UNSET,
    status: str = UNSET,
) -> Project:
    project = await get_project(session, principal, project_id)
    changed: dict[str, Any] = {}
    if name is not UNSET:
        changed["name"] = _check_name(name)
    if greediness is not UNSET:
        _check_greediness(greediness)
        changed["greediness"] = greediness
    if description is not UNSET:
        changed["description"] = description
    if status is not UNSET:
        if status not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}")
        changed["status"] = status
    for key, value in changed.items():
        setattr(project, key, value)
    if changed:
        project.updated_at = utcnow()
        await session.flush()
        await events.record(
            session,
            "project.updated",
            _event(project, changed=sorted(changed)),
            actor=principal,
            project_id=project.id,
            tenant_id=project.tenant_id,
        )
    return project


async def set_budget(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, budgets: dict[str, Any]
) -> Project:
    """Set (or with ``null`` clear, back to the greediness share) a project's own budgets."""
    project = await get_project(session, principal, project_id)
    principal.require_admin()
    allowed = set(vars(Budgets()))
    for key, value in budgets.items():
        if key not in allowed:
            raise ValidationFailed(f"Unknown budget {key!r}; known: {', '.join(sorted(allowed))}")
        if value is not None and value < 0:
            raise ValidationFailed(f"{key} must not be negative")
        setattr(project, key, value)
    if budgets:
        project.updated_at = utcnow()
        # A raised budget may be warned about again.
        project.warned, project.warned_day = [], None
        await session.flush()
        await events.record(
            session,
            "project.budget_updated",
            _event(project, budgets=budgets),
            actor=principal,
            project_id=project.id,
            tenant_id=project.tenant_id,
        )
    return project


async def list_projects(
    session: AsyncSession,
    principal: Principal,
    *,
    page: Page,
    active: bool | None = None,
    sort: str = "created_at_desc",
) -> tuple[Sequence[Project], int]:
    stmt = sa.select(Project).where(visible(principal))
    if active is not None:
        stmt = stmt.where(
            Project.status == ACTIVE_PROJECT if active else Project.status != ACTIVE_PROJECT
        )
    orders = {
        "greediness_desc": (Project.greediness.desc(), Project.created_at.desc()),
        "greediness_asc": (Project.greediness.asc(), Project.created_at.asc()),
        "created_at_desc": (Project.created_at.desc(),),
        "created_at_asc": (Project.created_at.asc(),),
        "name_asc": (Project.name.asc(),),
        "name_desc": (Project.name.desc(),),
    }
    if sort not in orders:
        raise ValidationFailed(
            f"Cannot sort by {sort!r}. Use one of: {', '.join(orders)}.",
            details={"sort": sort, "allowed": list(orders)},
        )
    total = await session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(
        stmt.order_by(*orders[sort], Project.id).limit(page.limit).offset(page.offset)
    )
    return rows.all(), int(total or 0)


def _check_greediness(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValidationFailed("greediness must be between 0 and 1", details={"greediness": value})


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise ValidationFailed("name must be 1-128 characters")
    return name
