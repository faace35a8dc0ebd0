"""Daily budgets: a project's own, or its greediness share of the hub-wide budget.

``share = greediness / sum(greediness of active projects)``; a project with its own budget for
a resource uses that for the resource instead. A budget day starts at midnight in the
configured time zone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.clock import utcnow
from agenthub.core.settings import Settings
from agenthub.db.models import Machine, Project, Workload
from agenthub.services.projects.ledger import Usage, usage_by_project
from agenthub.services.scheduling.spec import ACTIVE

ACTIVE_PROJECT = "active"
WARNING_FRACTION = 0.8


def day_start(settings: Settings, now: datetime | None = None) -> datetime:
    """The start (UTC) of the budget day holding ``now``."""
    zone = ZoneInfo(settings.budget_timezone)
    local = (now or utcnow()).astimezone(zone)
    return datetime.combine(local.date(), time(0), tzinfo=zone).astimezone(UTC)


def day_starts(settings: Settings, days: int, now: datetime | None = None) -> list[datetime]:
    """Starts of the last ``days`` budget days, oldest first, today last."""
    zone = ZoneInfo(settings.budget_timezone)
    today = (now or utcnow()).astimezone(zone).date()
    return [
        datetime.combine(today - timedelta(days=back), time(0), tzinfo=zone)
        for back in range(days - 1, -1, -1)
    ]


@dataclass(frozen=True)
class Allocation:
    """A project's daily budget for each resource, and whether it is a share of the hub's."""

    money: float
    time_hours: float
    api_calls: int
    storage_gb: float
    max_concurrent_machines: int | None
    share: float


async def greediness_total(session: AsyncSession) -> tuple[float, int]:
    row = (
        await session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(Project.greediness), 0.0), sa.func.count()
            ).where(Project.status == ACTIVE_PROJECT)
        )
    ).one()
    return float(row[0]), int(row[1])


def share_of(project: Project, total: float, count: int) -> float:
    if project.status != ACTIVE_PROJECT:
        return 0.0
    if total > 0:
        return project.greediness / total
    # Every active project has greediness 0: they split the budget evenly.
    return 1.0 / count if count else 0.0


def allocation(settings: Settings, project: Project, total: float, count: int) -> Allocation:
    share = share_of(project, total, count)
    return Allocation(
        money=project.daily_money
        if project.daily_money is not None
        else settings.hub_daily_money * share,
        time_hours=project.daily_time_hours
        if project.daily_time_hours is not None
        else settings.hub_daily_time_hours * share,
        api_calls=project.daily_api_calls
        if project.daily_api_calls is not None
        else int(settings.hub_daily_api_calls * share + 1e-9),
        storage_gb=project.storage_gb
        if project.storage_gb is not None
        else settings.hub_storage_gb * share,
        max_concurrent_machines=project.max_concurrent_machines,
        share=share,
    )


async def allocations(
    session: AsyncSession, settings: Settings, projects: Iterable[Project]
) -> dict[uuid.UUID, Allocation]:
    total, count = await greediness_total(session)
    return {p.id: allocation(settings, p, total, count) for p in projects}


@dataclass(frozen=True)
class Commitments:
    """What a project's unfinished machines may still spend, and how many there are."""

    machines: int = 0
    money: float = 0.0
    time_seconds: float = 0.0
    api_calls: int = 0


def _unspent(left: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``max(left, 0)`` portably (SQLite has no GREATEST)."""
    return sa.case((left > 0, left), else_=0)


async def commitments(
    session: AsyncSession, project_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Commitments]:
    """Per project: active machines and the part of their limits they have not spent yet
    (a spawn reserves its whole limit; what it spends moves from here to the ledger)."""
    if not project_ids:
        return {}
    rows = await session.execute(
        sa.select(
            Machine.project_id,
            sa.func.count(),
            sa.func.sum(_unspent(Machine.max_money - Machine.money_used)),
            sa.func.sum(_unspent(Machine.max_time_minutes * 60 - Machine.time_seconds)),
            sa.func.sum(_unspent(Machine.max_api_calls - Machine.api_calls_used)),
        )
        .join(Workload, Workload.id == Machine.workload_id)
        .where(Machine.project_id.in_(project_ids), Workload.status.in_(ACTIVE))
        .group_by(Machine.project_id)
    )
    return {
        row[0]: Commitments(
            int(row[1]),
            max(0.0, float(row[2] or 0)),
            max(0.0, float(row[3] or 0)),
            max(0, int(row[4] or 0)),
        )
        for row in rows
    }


@dataclass(frozen=True)
class BudgetView:
    """Allocated, used today and remaining, per resource, for one project."""

    allocation: Allocation
    used: Usage
    committed: Commitments

    @property
    def money_remaining(self) -> float:
        return max(0.0, self.allocation.money - self.used.money)

    @property
    def time_hours_remaining(self) -> float:
        return max(0.0, self.allocation.time_hours - self.used.time_hours)

    @property
    def api_calls_remaining(self) -> int:
        return max(0, self.allocation.api_calls - self.used.api_calls)


async def budget_views(
    session: AsyncSession, settings: Settings, projects: list[Project]
) -> dict[uuid.UUID, BudgetView]:
    ids = [p.id for p in projects]
    allocated = await allocations(session, settings, projects)
    used = await usage_by_project(session, ids, day_start(settings))
    committed = await commitments(session, ids)
    return {
        p.id: BudgetView(
            allocated[p.id], used.get(p.id, Usage()), committed.get(p.id, Commitments())
        )
        for p in projects
    }


class ProjectShares:
    """The scheduler's fair-share weights: each project's greediness."""

    async def greediness(
        self, session: AsyncSession, projects: Iterable[str | None]
    ) -> dict[str | None, float]:
        keys = list(projects)
        ids = []
        for key in keys:
            if key is not None:
                try:
                    ids.append(uuid.UUID(key))
                except ValueError:
                    continue
        found: dict[str | None, float] = {}
        if ids:
            rows = await session.execute(
                sa.select(Project.id, Project.greediness).where(Project.id.in_(ids))
            )
            found = {str(pid): float(g) for pid, g in rows}
        # Workloads outside any project (Cluster containers) weigh as a middling project.
        return {key: max(found.get(key, 0.5), 0.01) for key in keys}
