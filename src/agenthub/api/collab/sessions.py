"""Collab surface: sessions (create, read with stats, end, an AI's history)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, status

from agenthub.api.collab.params import CollabPage, ts
from agenthub.api.collab.session_schemas import (
    SessionCreate,
    SessionCreated,
    SessionEnd,
    SessionEnded,
    SessionHistory,
    SessionHistoryItem,
    SessionRead,
    SessionStatsRead,
)
from agenthub.api.deps import AiDep, CollabPrincipalDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import utcnow
from agenthub.services.collab import sessions

router = SurfaceRouter(prefix="/api/v1", tags=["collab"])

# Ids are 64-bit: a larger number is a 400 here rather than a value the drivers cannot bind.
SessionId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The session's `session_id`.")]
AiId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The AI's `ai_id`.")]


# Declared before /session/{session_id} so "create" is never taken for an id.
@router.post("/session/create", response_model=SessionCreated, status_code=status.HTTP_201_CREATED)
async def create_session(body: SessionCreate, ai: AiDep, session: SessionDep) -> SessionCreated:
    """Open a session for the calling AI; ``session_identifier`` is 7 hex digits."""
    row = await sessions.create(
        session,
        ai,
        session_type=body.session_type,
        project=body.project,
        metadata=body.metadata,
    )
    return SessionCreated(
        session_id=row.id,
        session_identifier=row.identifier,
        ai_id=row.ai_id,
        ai_name=ai.name,
        session_type=row.session_type,
        project=row.project,
        created_at=ts(row.created_at) or "",
        metadata=row.meta,
    )


@router.get("/session/{session_id}", response_model=SessionRead)
async def get_session(
    session_id: SessionId, principal: CollabPrincipalDep, session: SessionDep
) -> SessionRead:
    """A session with its activity stats: its AI or an admin only."""
    detail = await sessions.get(session, principal, session_id)
    row = detail.row
    return SessionRead(
        session_id=row.id,
        session_identifier=row.identifier,
        ai_id=row.ai_id,
        ai_name=detail.ai_name,
        session_type=row.session_type,
        project=row.project,
        status=row.status,
        created_at=ts(row.created_at) or "",
        ended_at=ts(row.ended_at),
        metadata=row.meta,
        stats=SessionStatsRead(
            thoughts_generated=detail.stats.thoughts_generated,
            insights_shared=detail.stats.insights_shared,
            responses_sent=detail.stats.responses_sent,
            collaborations_initiated=detail.stats.collaborations_initiated,
            messages_sent=detail.stats.messages_sent,
        ),
        summary=row.summary,
        final_stats=row.final_stats,
    )


@router.delete("/session/{session_id}", response_model=SessionEnded)
async def end_session(
    session_id: SessionId,
    principal: CollabPrincipalDep,
    session: SessionDep,
    body: SessionEnd | None = None,
) -> SessionEnded:
    """End an active session (its AI or an admin); the body is optional. 409 if it has ended."""
    row = await sessions.end(
        session,
        principal,
        session_id,
        summary=body.summary if body else None,
        final_stats=body.final_stats if body else None,
    )
    return SessionEnded(session_id=row.id, ended_at=ts(row.ended_at) or "", summary=row.summary)


@router.get("/session/{ai_id}/history", response_model=SessionHistory)
async def session_history(
    ai_id: AiId, principal: CollabPrincipalDep, session: SessionDep, page: CollabPage
) -> SessionHistory:
    """An AI's sessions, newest first: the AI itself or an admin only."""
    rows, total = await sessions.history(
        session, principal, ai_id, limit=page.limit, offset=page.offset
    )
    now = utcnow()
    return SessionHistory(
        sessions=[
            SessionHistoryItem(
                session_id=row.id,
                session_identifier=row.identifier,
                session_type=row.session_type,
                project=row.project,
                status=row.status,
                created_at=ts(row.created_at) or "",
                ended_at=ts(row.ended_at),
                duration_seconds=sessions.duration_seconds(row, now),
            )
            for row in rows
        ],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
