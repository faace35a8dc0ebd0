"""The usage ledger: one append-only table of everything spent, and the sums read from it.

An entry is attributed to a project and, where there is one, a machine (later a task and a
model too). A machine's running totals are incremented in the same transaction as its entry,
with one atomic UPDATE, so concurrent writers (the controller billing compute, the machine
reporting API calls) never lose an increment.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.clock import utcnow
from agenthub.db.models import Machine, UsageEntry


@dataclass
class Usage:
    money: float = 0.0
    api_calls: int = 0
    time_seconds: float = 0.0
    cpu_seconds: float = 0.0
    memory_gb_seconds: float = 0.0

    @property
    def time_hours(self) -> float:
        return self.time_seconds / 3600

    @property
    def compute_hours(self) -> float:
        return self.cpu_seconds / 3600


SUMS = (
    sa.func.coalesce(sa.func.sum(UsageEntry.money), 0.0),
    sa.func.coalesce(sa.func.sum(UsageEntry.api_calls), 0),
    sa.func.coalesce(sa.func.sum(UsageEntry.time_seconds), 0.0),
    sa.func.coalesce(sa.func.sum(UsageEntry.cpu_seconds), 0.0),
    sa.func.coalesce(sa.func.sum(UsageEntry.memory_gb_seconds), 0.0),
)


def usage_of(row: Sequence[Any]) -> Usage:
    money, calls, seconds, cpu, memory = row
    return Usage(float(money), int(calls), float(seconds), float(cpu), float(memory))


async def append(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    source: str,
    machine_id: uuid.UUID | None = None,
    usage: Usage,
    at: datetime | None = None,
    description: str | None = None,
    model: str | None = None,
    task_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> UsageEntry:
    """Append one entry and add it to its machine's running totals (same transaction)."""
    entry = UsageEntry(
        at=at or utcnow(),
        project_id=project_id,
        machine_id=machine_id,
        task_id=task_id,
        model=model,
        source=source,
        money=usage.money,
        api_calls=usage.api_calls,
        time_seconds=usage.time_seconds,
        cpu_seconds=usage.cpu_seconds,
        memory_gb_seconds=usage.memory_gb_seconds,
        description=description,
        details=details or {},
    )
    session.add(entry)
    if machine_id is not None:
        await session.execute(
            sa.update(Machine)
            .where(Machine.id == machine_id)
            .values(
                money_used=Machine.money_used + usage.money,
                api_calls_used=Machine.api_calls_used + usage.api_calls,
                time_seconds=Machine.time_seconds + usage.time_seconds,
                cpu_seconds=Machine.cpu_seconds + usage.cpu_seconds,
                memory_gb_seconds=Machine.memory_gb_seconds + usage.memory_gb_seconds,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    return entry


async def usage_by_project(
    session: AsyncSession, project_ids: list[uuid.UUID] | None, since: datetime
) -> dict[uuid.UUID, Usage]:
    """What each project spent since ``since`` (all projects when ``project_ids`` is None)."""
    stmt = (
        sa.select(UsageEntry.project_id, *SUMS)
        .where(UsageEntry.at >= since)
        .group_by(UsageEntry.project_id)
    )
    if project_ids is not None:
        if not project_ids:
            return {}
        stmt = stmt.where(UsageEntry.project_id.in_(project_ids))
    rows = await session.execute(stmt)
    return {row[0]: usage_of(tuple(row[1:])) for row in rows}


async def daily(
    session: AsyncSession,
    days: list[datetime],
    end: datetime,
    *,
    project_ids: list[uuid.UUID] | None,
) -> list[tuple[Usage, int]]:
    """Per day (``days`` are the starts, ascending; the last ends at ``end``): the usage and
    how many distinct machines had usage. One query: each entry is bucketed by a CASE."""
    if not days:
        return []
    bucket = sa.case(
        *[(UsageEntry.at >= start, index) for index, start in reversed(list(enumerate(days)))],
        else_=-1,
    ).label("bucket")
    stmt = (
        sa.select(bucket, *SUMS, sa.func.count(sa.distinct(UsageEntry.machine_id)))
        .where(UsageEntry.at >= days[0], UsageEntry.at < end)
        .group_by(bucket)
    )
    if project_ids is not None:
        stmt = stmt.where(UsageEntry.project_id.in_(project_ids or [uuid.UUID(int=0)]))
    out = [(Usage(), 0) for _ in days]
    for row in await session.execute(stmt):
        index = int(row[0])
        if 0 <= index < len(days):
            out[index] = (usage_of(tuple(row[1:6])), int(row[6]))
    return out
