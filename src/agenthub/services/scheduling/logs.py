"""Workload logs: lines the node agent streams, kept on the hub (bounded per workload).

The store keeps the newest ``max_lines`` lines of each workload; older ones are deleted in
batches (the count may exceed the bound by a tenth before a trim, so trims stay rare).
Followers are woken by a notification published after the commit that wrote new lines; the
notification is not an event of the log (it carries no data worth keeping).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.db.models import Workload, WorkloadLog
from agenthub.services import events

MAX_LINE_CHARS = 16 * 1024
STREAMS = ("stdout", "stderr")
LOGS_APPENDED = "workload.logs_appended"


@dataclass(frozen=True)
class LogLine:
    at: float
    stream: str
    text: str


async def append(
    session: AsyncSession,
    workload: Workload,
    attempt: int,
    lines: Sequence[LogLine],
    max_lines: int,
) -> int:
    """Store ``lines`` of ``workload``'s run ``attempt``; returns how many were kept."""
    if not lines:
        return 0
    rows = [
        {
            "workload_id": workload.id,
            "attempt": attempt,
            "at": float(line.at),
            "stream": line.stream if line.stream in STREAMS else "stdout",
            "text": line.text[:MAX_LINE_CHARS],
        }
        for line in lines[-max_lines:]
    ]
    await session.execute(sa.insert(WorkloadLog), rows)
    workload.log_lines += len(rows)
    if workload.log_lines > max_lines + max(1, max_lines // 10):
        await _trim(session, workload.id, max_lines)
        workload.log_lines = max_lines
    events.notify(
        session,
        LOGS_APPENDED,
        {"workload_id": str(workload.id), "attempt": attempt, "lines": len(rows)},
        project_id=workload.project_id,
        tenant_id=workload.tenant_id,
    )
    return len(rows)


async def _trim(session: AsyncSession, workload_id: uuid.UUID, keep: int) -> None:
    oldest_kept = await session.scalar(
        sa.select(WorkloadLog.id)
        .where(WorkloadLog.workload_id == workload_id)
        .order_by(WorkloadLog.id.desc())
        .offset(keep - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        await session.execute(
            sa.delete(WorkloadLog).where(
                WorkloadLog.workload_id == workload_id, WorkloadLog.id < oldest_kept
            )
        )


async def read(
    session: AsyncSession,
    workload_id: uuid.UUID,
    *,
    tail: int | None = None,
    since: float | None = None,
    after_id: int | None = None,
    attempt: int | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Lines oldest first: after ``after_id``/at or after ``since``; the last ``tail`` only."""
    stmt = sa.select(WorkloadLog).where(WorkloadLog.workload_id == workload_id)
    if since is not None:
        stmt = stmt.where(WorkloadLog.at >= since)
    if after_id is not None:
        stmt = stmt.where(WorkloadLog.id > after_id)
    if attempt is not None:
        stmt = stmt.where(WorkloadLog.attempt == attempt)
    count = min(tail, limit) if tail is not None else limit
    if tail is not None:
        rows = list(
            (await session.scalars(stmt.order_by(WorkloadLog.id.desc()).limit(count))).all()
        )
        rows.reverse()
    else:
        rows = list((await session.scalars(stmt.order_by(WorkloadLog.id.asc()).limit(count))).all())
    return [
        {"id": r.id, "at": r.at, "stream": r.stream, "text": r.text, "attempt": r.attempt}
        for r in rows
    ]
