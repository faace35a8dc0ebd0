"""Collaborations between two AIs: request, respond, report progress, complete.

A collaboration moves ``pending`` → ``active`` (accepted) or ``declined``, and ``active`` →
``completed``. Each transition is an UPDATE conditional on the current status, so of two
callers racing for the same transition exactly one moves it and the other gets a 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from agenthub.core.auth import Principal
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agenthub.core.storable import check_json, check_text
from agenthub.db.models import AiIdentity, Collaboration
from agenthub.services import events
from agenthub.services.identity import ais

Status = Literal["pending", "active", "declined", "completed"]
Role = Literal["requester", "responder"]
Response = Literal["accept", "decline"]

PENDING, ACTIVE, DECLINED, COMPLETED = "pending", "active", "declined", "completed"


@dataclass(frozen=True)
class Named:
    """A collaboration with both participants' names, read in the same query."""

    collaboration: Collaboration
    requester_name: str
    target_name: str


def percentage(collaboration: Collaboration) -> int:
    """Progress in whole percent (rounded down); 0 while no tasks are planned."""
    if collaboration.total_tasks <= 0:
        return 0
    return collaboration.tasks_completed * 100 // collaboration.total_tasks


def not_found(collaboration_id: int) -> NotFound:
    return NotFound(f"Collaboration {collaboration_id} not found", code="resource_not_found")


async def request(
    session: AsyncSession,
    principal: Principal,
    *,
    target_ai_id: int,
    collaboration_type: str,
    title: str,
    description: str | None,
    metadata: dict[str, Any] | None,
) -> Named:
    """Ask ``target_ai_id`` to collaborate; the new collaboration is ``pending`` and the target
    is told live (``collab.collaboration.requested``)."""
    me = _ai_id(principal)
    if target_ai_id == me:
        raise ValidationFailed(
            "target_ai_id is your own ai_id: a collaboration needs another AI",
            details={"field": "target_ai_id"},
        )
    collaboration_type = _required_text("collaboration_type", collaboration_type)
    title = _required_text("title", title)
    check_text("description", description)
    check_json("metadata", metadata)
    target = await ais.get(session, target_ai_id, principal)
    now = utcnow()
    collaboration = Collaboration(
        requester_id=me,
        target_id=target.id,
        collaboration_type=collaboration_type,
        title=title,
        description=description,
        meta=metadata or {},
        status=PENDING,
        created_at=now,
        updated_at=now,
    )
    session.add(collaboration)
    await session.flush()
    named = Named(collaboration, principal.name, target.name)
    await events.record(
        session,
        "collab.collaboration.requested",
        {
            "collaboration_id": collaboration.id,
            "requester_ai_id": me,
            "requester_name": principal.name,
            "target_ai_id": target.id,
            "collaboration_type": collaboration_type,
            "title": title,
            "description": description,
            "status": PENDING,
            "created_at": isoformat_z(now),
        },
        actor=principal,
        audience=events.ai_audience(target.id),
    )
    return named


async def list_for(
    session: AsyncSession,
    principal: Principal,
    *,
    status: Status | None,
    role: Role | None,
    limit: int,
    offset: int,
) -> tuple[list[Named], int]:
    """The caller's collaborations, newest first, and how many match in all; ``role``
    keeps those it requested (``requester``) or was asked to join (``responder``)."""
    me = _ai_id(principal)
    if role == "requester":
        mine = Collaboration.requester_id == me
    elif role == "responder":
        mine = Collaboration.target_id == me
    else:
        mine = sa.or_(Collaboration.requester_id == me, Collaboration.target_id == me)
    conditions = [mine]
    if status is not None:
        conditions.append(Collaboration.status == status)
    total = await session.scalar(
        sa.select(sa.func.count()).select_from(Collaboration).where(*conditions)
    )
    # Ids grow with time, so id order is creation order without a tie between equal timestamps.
    stmt = _named().where(*conditions).order_by(Collaboration.id.desc()).limit(limit).offset(offset)
    rows = (await session.execute(stmt)).all()
    return [Named(row[0], row[1], row[2]) for row in rows], int(total or 0)


async def respond(
    session: AsyncSession,
    principal: Principal,
    collaboration_id: int,
    *,
    response: Response,
    message: str | None,
    metadata: dict[str, Any] | None,
) -> Collaboration:
    """Accept (→ ``active``) or decline (→ ``declined``) a pending collaboration; only its
    target may, and only once."""
    me = _ai_id(principal)
    check_text("message", message)
    check_json("metadata", metadata)
    named = await _get(session, collaboration_id)
    collaboration = named.collaboration
    if collaboration.target_id != me:
        raise Forbidden(
            "Only the AI asked to collaborate may respond to this request", code="forbidden"
        )
    status = ACTIVE if response == "accept" else DECLINED
    now = utcnow()
    moved = await _transition(
        session,
        collaboration,
        PENDING,
        status=status,
        updated_at=now,
        responded_at=now,
        response_message=message,
        response_metadata=metadata,
    )
    if not moved:
        raise Conflict(
            f"Collaboration {collaboration_id} was already answered (it is {collaboration.status})",
            code="already_responded",
            details={"status": collaboration.status},
        )
    await events.record(
        session,
        "collab.collaboration.responded",
        {
            "collaboration_id": collaboration.id,
            "response": response,
            "status": status,
            "target_ai_id": me,
            "target_name": principal.name,
            "message": message,
            "responded_at": isoformat_z(now),
        },
        actor=principal,
        audience=events.ai_audience(collaboration.requester_id),
    )
    return collaboration


async def get_progress(session: AsyncSession, principal: Principal, collaboration_id: int) -> Named:
    """A collaboration's progress: for its participants and admins."""
    named = await _get(session, collaboration_id)
    if not principal.is_admin:
        _participant(named.collaboration, principal)
    return named


async def update_progress(
    session: AsyncSession,
    principal: Principal,
    collaboration_id: int,
    changes: dict[str, Any],
) -> Named:
    """Report progress on an active collaboration; fields left out of ``changes`` keep their
    value, and ``tasks_completed`` must stay within ``0..total_tasks``."""
    if not changes:
        raise ValidationFailed(
            "Send at least one of tasks_completed, total_tasks, current_task",
        )
    for field in ("tasks_completed", "total_tasks"):
        if field in changes and (changes[field] is None or changes[field] < 0):
            raise ValidationFailed(
                f"{field} must be a whole number, 0 or more", details={"field": field}
            )
    check_text("current_task", changes.get("current_task"))
    named = await _get(session, collaboration_id)
    collaboration = named.collaboration
    me = _participant(collaboration, principal)
    if collaboration.status != ACTIVE:
        raise _not_active(collaboration, "take progress reports")
    completed = changes.get("tasks_completed", collaboration.tasks_completed)
    total = changes.get("total_tasks", collaboration.total_tasks)
    if completed > total:
        raise _out_of_range(completed, total)
    values: dict[str, Any] = {
        field: changes[field]
        for field in ("tasks_completed", "total_tasks", "current_task")
        if field in changes
    }
    now = utcnow()
    # A concurrent partial update may have changed the other count since the read above, so
    # the range is checked again in the UPDATE against what the row holds then.
    completed_sql = (
        sa.literal(values["tasks_completed"])
        if "tasks_completed" in values
        else Collaboration.tasks_completed
    )
    total_sql = (
        sa.literal(values["total_tasks"]) if "total_tasks" in values else Collaboration.total_tasks
    )
    moved = await _transition(
        session,
        collaboration,
        ACTIVE,
        completed_sql <= total_sql,
        **values,
        progress_updated_at=now,
        updated_at=now,
    )
    if not moved:
        if collaboration.status != ACTIVE:
            raise _not_active(collaboration, "take progress reports")
        raise _out_of_range(
            values.get("tasks_completed", collaboration.tasks_completed),
            values.get("total_tasks", collaboration.total_tasks),
        )
    await events.record(
        session,
        "collab.collaboration.progress",
        {
            "collaboration_id": collaboration.id,
            "ai_id": me,
            "ai_name": principal.name,
            "tasks_completed": collaboration.tasks_completed,
            "total_tasks": collaboration.total_tasks,
            "percentage": percentage(collaboration),
            "current_task": collaboration.current_task,
            "last_updated": isoformat_z(now),
        },
        actor=principal,
        audience=events.ai_audience(_other(collaboration, me)),
    )
    return named


async def complete(
    session: AsyncSession,
    principal: Principal,
    collaboration_id: int,
    *,
    summary: str | None,
    outcome: str | None,
    final_stats: dict[str, Any] | None,
) -> Collaboration:
    """Close an active collaboration (either participant may), with its summary."""
    check_text("summary", summary)
    check_text("outcome", outcome)
    check_json("final_stats", final_stats)
    named = await _get(session, collaboration_id)
    collaboration = named.collaboration
    me = _participant(collaboration, principal)
    now = utcnow()
    moved = await _transition(
        session,
        collaboration,
        ACTIVE,
        status=COMPLETED,
        completed_at=now,
        updated_at=now,
        summary=summary,
        outcome=outcome,
        final_stats=final_stats,
    )
    if not moved:
        raise _not_active(collaboration, "be completed")
    await events.record(
        session,
        "collab.collaboration.completed",
        {
            "collaboration_id": collaboration.id,
            "ai_id": me,
            "ai_name": principal.name,
            "status": COMPLETED,
            "summary": summary,
            "outcome": outcome,
            "completed_at": isoformat_z(now),
        },
        actor=principal,
        audience=events.ai_audience(_other(collaboration, me)),
    )
    return collaboration


def _named() -> sa.Select[Collaboration, str, str]:
    requester = aliased(AiIdentity)
    target = aliased(AiIdentity)
    return (
        sa.select(Collaboration, requester.name, target.name)
        .join(requester, requester.id == Collaboration.requester_id)
        .join(target, target.id == Collaboration.target_id)
    )


async def _get(session: AsyncSession, collaboration_id: int) -> Named:
    row = (await session.execute(_named().where(Collaboration.id == collaboration_id))).first()
    if row is None:
        raise not_found(collaboration_id)
    return Named(row[0], row[1], row[2])


async def _transition(
    session: AsyncSession,
    collaboration: Collaboration,
    expected: str,
    *conditions: sa.ColumnElement[bool],
    **values: Any,
) -> bool:
    """Apply ``values`` if the row is still ``expected`` (and ``conditions`` hold); reload
    ``collaboration`` either way, so a loser sees what the winner wrote."""
    result = await session.execute(
        sa.update(Collaboration)
        .where(Collaboration.id == collaboration.id, Collaboration.status == expected, *conditions)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(collaboration)
    return bool(getattr(result, "rowcount", 0) == 1)


def _ai_id(principal: Principal) -> int:
    if principal.ai_id is None:
        raise Forbidden(
            "This route acts as an AI identity: log in with POST /api/v1/auth/login",
            code="forbidden",
        )
    return principal.ai_id


def _participant(collaboration: Collaboration, principal: Principal) -> int:
    me = principal.ai_id
    if me is None or me not in (collaboration.requester_id, collaboration.target_id):
        raise Forbidden("Only the collaboration's participants may do this", code="forbidden")
    return me


def _other(collaboration: Collaboration, ai_id: int) -> int:
    if ai_id == collaboration.requester_id:
        return collaboration.target_id
    return collaboration.requester_id


def _not_active(collaboration: Collaboration, action: str) -> Conflict:
    details = {"status": collaboration.status}
    if collaboration.status == COMPLETED:
        return Conflict(
            f"Collaboration {collaboration.id} is already completed",
            code="already_completed",
            details=details,
        )
    return Conflict(
        f"Only an active collaboration can {action}; "
        f"collaboration {collaboration.id} is {collaboration.status}",
        code="collaboration_not_active",
        details=details,
    )


def _out_of_range(completed: int, total: int) -> ValidationFailed:
    return ValidationFailed(
        f"tasks_completed ({completed}) must be between 0 and total_tasks ({total})",
        details={"field": "tasks_completed", "tasks_completed": completed, "total_tasks": total},
    )


def _required_text(field: str, value: str) -> str:
    check_text(field, value)
    if not value.strip():
        raise ValidationFailed(f"{field} must not be blank", details={"field": field})
    return value
