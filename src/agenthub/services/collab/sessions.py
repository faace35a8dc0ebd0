"""Collab sessions: an AI's working sessions, what it did during them, and its history.

A session belongs to the AI that opened it; only that AI or an admin may read or end it.
Its activity stats are not counters kept on the row: they are counted from what the AI
recorded (messages it sent, collaborations it requested) between the session's start and its
end, or now while it is still active.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agenthub.core.storable import check_json, check_text
from agenthub.db.models import AiIdentity, CollabMessage, Collaboration, CollabSession
from agenthub.services import events
from agenthub.services.identity import ais

ACTIVE = "active"
ENDED = "ended"

IDENTIFIER_LENGTH = 7
# 7 hex digits are 2^28 identifiers: a collision is rare, several in a row mean something else.
IDENTIFIER_ATTEMPTS = 8


@dataclass(frozen=True)
class SessionStats:
    """What an AI did during a session, counted from its messages and collaborations."""

    thoughts_generated: int
    insights_shared: int
    responses_sent: int
    collaborations_initiated: int
    messages_sent: int


@dataclass(frozen=True)
class SessionDetail:
    """A session as its readers see it: the row, its AI's name, and its stats."""

    row: CollabSession
    ai_name: str
    stats: SessionStats


def session_not_found(session_id: int) -> NotFound:
    return NotFound(f"Session {session_id} not found", code="resource_not_found")


def session_ended(row: CollabSession) -> Conflict:
    return Conflict(
        f"Session {row.id} has already ended",
        code="session_ended",
        details={
            "session_id": row.id,
            "ended_at": isoformat_z(row.ended_at) if row.ended_at else None,
        },
    )


def _authorize(principal: Principal, row: CollabSession) -> None:
    if not principal.is_admin and principal.ai_id != row.ai_id:
        raise Forbidden(
            "Only the AI that owns this session, or an admin, may access it", code="forbidden"
        )


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    session_type: str,
    project: str | None,
    metadata: dict[str, Any] | None,
) -> CollabSession:
    """Open a session for the calling AI, with a short unique identifier."""
    if principal.ai_id is None:
        raise Forbidden("Only an AI identity can open a session", code="forbidden")
    if not session_type.strip():
        raise ValidationFailed("session_type must not be blank", details={"field": "session_type"})
    check_text("session_type", session_type)
    check_text("project", project)
    meta = metadata or {}
    check_json("metadata", meta)
    for _ in range(IDENTIFIER_ATTEMPTS):
        row = CollabSession(
            identifier=secrets.token_hex(4)[:IDENTIFIER_LENGTH],
            ai_id=principal.ai_id,
            session_type=session_type,
            project=project,
            meta=meta,
            status=ACTIVE,
        )
        # The unique index decides collisions, including with a racing request; the savepoint
        # keeps the request's transaction usable for the next attempt.
        try:
            async with session.begin_nested():
                session.add(row)
        except sa.exc.IntegrityError:
            continue
        break
    else:
        raise Conflict(
            "Could not allocate a unique session identifier; try again",
            code="session_identifier_conflict",
        )
    await events.record(
        session,
        "collab.session.started",
        {
            "session_id": row.id,
            "session_identifier": row.identifier,
            "ai_id": row.ai_id,
            "session_type": row.session_type,
            "project": row.project,
        },
        actor=principal,
    )
    return row


async def get(session: AsyncSession, principal: Principal, session_id: int) -> SessionDetail:
    """A session with its AI's name and stats, for its owner or an admin (404 if unknown,
    then 403 if not theirs)."""
    found = (
        await session.execute(
            sa.select(CollabSession, AiIdentity.name)
            .join(AiIdentity, AiIdentity.id == CollabSession.ai_id)
            .where(CollabSession.id == session_id)
        )
    ).one_or_none()
    if found is None:
        raise session_not_found(session_id)
    row, ai_name = found
    _authorize(principal, row)
    return SessionDetail(row, ai_name, await stats(session, row))


async def stats(
    session: AsyncSession, row: CollabSession, now: datetime | None = None
) -> SessionStats:
    """What the session's AI did in ``[created_at, ended_at or now]``, counted in one query."""
    start = row.created_at
    end = row.ended_at or now or utcnow()
    sent = sa.and_(
        CollabMessage.sender_id == row.ai_id,
        CollabMessage.deleted_at.is_(None),
        CollabMessage.created_at >= start,
        CollabMessage.created_at <= end,
    )

    def of_type(message_type: str) -> sa.ColumnElement[int]:
        return sa.func.coalesce(
            sa.func.sum(sa.case((CollabMessage.message_type == message_type, 1), else_=0)), 0
        )

    collaborations = (
        sa.select(sa.func.count())
        .select_from(Collaboration)
        .where(
            Collaboration.requester_id == row.ai_id,
            Collaboration.created_at >= start,
            Collaboration.created_at <= end,
        )
        .scalar_subquery()
    )
    # Without GROUP BY the aggregates yield exactly one row, zeros included.
    result = await session.execute(
        sa.select(
            of_type("thought"),
            of_type("insight"),
            of_type("response"),
            collaborations,
            sa.func.count(CollabMessage.id),
        ).where(sent)
    )
    thoughts, insights, responses, collaborated, messages = result.one()
    return SessionStats(
        thoughts_generated=int(thoughts),
        insights_shared=int(insights),
        responses_sent=int(responses),
        collaborations_initiated=int(collaborated),
        messages_sent=int(messages),
    )


async def end(
    session: AsyncSession,
    principal: Principal,
    session_id: int,
    *,
    summary: str | None,
    final_stats: dict[str, Any] | None,
) -> CollabSession:
    """End an active session, keeping the summary and stats its AI reports (409 if ended)."""
    check_text("summary", summary)
    if final_stats is not None:
        check_json("final_stats", final_stats)
    # FOR UPDATE: of two concurrent ends on PostgreSQL, the second waits here and then sees the
    # session ended (SQLite's write transaction already serializes them).
    row = await session.scalar(
        sa.select(CollabSession).where(CollabSession.id == session_id).with_for_update()
    )
    if row is None:
        raise session_not_found(session_id)
    _authorize(principal, row)
    if row.status != ACTIVE:
        raise session_ended(row)
    row.status = ENDED
    row.ended_at = utcnow()
    row.summary = summary
    row.final_stats = final_stats
    await session.flush()
    await events.record(
        session,
        "collab.session.ended",
        {
            "session_id": row.id,
            "session_identifier": row.identifier,
            "ai_id": row.ai_id,
            "ended_at": isoformat_z(row.ended_at),
        },
        actor=principal,
    )
    return row


async def history(
    session: AsyncSession, principal: Principal, ai_id: int, *, limit: int, offset: int
) -> tuple[list[CollabSession], int]:
    """An AI's sessions, newest first, and how many it has: for the AI itself or an admin."""
    ai = await ais.get(session, ai_id, principal)
    if not principal.is_admin and principal.ai_id != ai.id:
        raise Forbidden(
            "Only the AI itself, or an admin, may read its session history", code="forbidden"
        )
    total = await session.scalar(
        sa.select(sa.func.count()).select_from(CollabSession).where(CollabSession.ai_id == ai.id)
    )
    rows = await session.scalars(
        sa.select(CollabSession)
        .where(CollabSession.ai_id == ai.id)
        .order_by(CollabSession.created_at.desc(), CollabSession.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), int(total or 0)


def duration_seconds(row: CollabSession, now: datetime | None = None) -> int:
    """Whole seconds from start to end, or to now while the session is active."""
    end = row.ended_at or now or utcnow()
    return max(0, int((end - row.created_at).total_seconds()))
