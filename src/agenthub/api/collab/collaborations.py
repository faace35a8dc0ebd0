"""Collab surface: collaborations between two AIs (request, list, respond, progress, complete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, status

from agenthub.api.collab.collaboration_schemas import (
    MAX_ID,
    CollaborationCreate,
    CollaborationCreated,
    CollaborationList,
    CollaborationRead,
    CompletionCreate,
    CompletionRead,
    Participant,
    Progress,
    ProgressRead,
    ProgressUpdate,
    ResponseCreate,
    ResponseRead,
)
from agenthub.api.collab.params import CollabPage, ts
from agenthub.api.deps import AiDep, CollabPrincipalDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.services.collab import collaborations
from agenthub.services.collab.collaborations import Named, Role, Status

router = SurfaceRouter(prefix="/api/v1", tags=["collab"])

CollaborationId = Annotated[int, Path(ge=1, le=MAX_ID, description="The collaboration_id.")]


@router.post(
    "/collaboration/request",
    response_model=CollaborationCreated,
    status_code=status.HTTP_201_CREATED,
)
async def request_collaboration(
    body: CollaborationCreate, principal: AiDep, session: SessionDep
) -> CollaborationCreated:
    """Ask another AI to collaborate; it is told live and answers with ``/respond``."""
    named = await collaborations.request(
        session,
        principal,
        target_ai_id=body.target_ai_id,
        collaboration_type=body.collaboration_type,
        title=body.title,
        description=body.description,
        metadata=body.metadata,
    )
    c = named.collaboration
    return CollaborationCreated(
        collaboration_id=c.id,
        requester_ai_id=c.requester_id,
        requester_name=named.requester_name,
        target_ai_id=c.target_id,
        collaboration_type=c.collaboration_type,
        title=c.title,
        description=c.description,
        status=c.status,
        created_at=ts(c.created_at) or "",
    )


@router.get("/collaboration/list", response_model=CollaborationList)
async def list_collaborations(
    principal: AiDep,
    session: SessionDep,
    page: CollabPage,
    status_filter: Status | None = Query(None, alias="status"),
    role: Role | None = Query(
        None, description="`requester`: those you asked for; `responder`: those you were asked."
    ),
) -> CollaborationList:
    """The caller's collaborations, newest first."""
    rows, total = await collaborations.list_for(
        session,
        principal,
        status=status_filter,
        role=role,
        limit=page.limit,
        offset=page.offset,
    )
    return CollaborationList(
        collaborations=[_read(named) for named in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("/collaboration/respond", response_model=ResponseRead)
async def respond(body: ResponseCreate, principal: AiDep, session: SessionDep) -> ResponseRead:
    """Accept or decline a pending request (only its target may; only once: else 409)."""
    c = await collaborations.respond(
        session,
        principal,
        body.collaboration_id,
        response=body.response,
        message=body.message,
        metadata=body.metadata,
    )
    return ResponseRead(
        collaboration_id=c.id,
        status=c.status,
        responded_at=ts(c.responded_at) or "",
        message="Collaboration accepted" if body.response == "accept" else "Collaboration declined",
    )


@router.get("/collaboration/{collaboration_id}/progress", response_model=ProgressRead)
async def get_progress(
    collaboration_id: CollaborationId, principal: CollabPrincipalDep, session: SessionDep
) -> ProgressRead:
    """Progress and participants: for the two participants and admins."""
    named = await collaborations.get_progress(session, principal, collaboration_id)
    return _progress(named)


@router.put("/collaboration/{collaboration_id}/progress", response_model=ProgressRead)
async def update_progress(
    collaboration_id: CollaborationId,
    body: ProgressUpdate,
    principal: AiDep,
    session: SessionDep,
) -> ProgressRead:
    """Report progress on an active collaboration; fields left out keep their value."""
    named = await collaborations.update_progress(
        session, principal, collaboration_id, body.model_dump(exclude_unset=True)
    )
    return _progress(named)


@router.post("/collaboration/{collaboration_id}/complete", response_model=CompletionRead)
async def complete(
    collaboration_id: CollaborationId,
    body: CompletionCreate,
    principal: AiDep,
    session: SessionDep,
) -> CompletionRead:
    """Close an active collaboration with a summary (either participant may)."""
    c = await collaborations.complete(
        session,
        principal,
        collaboration_id,
        summary=body.summary,
        outcome=body.outcome,
        final_stats=body.final_stats,
    )
    return CompletionRead(
        collaboration_id=c.id,
        status=c.status,
        completed_at=ts(c.completed_at) or "",
        summary=c.summary,
    )


def _read(named: Named) -> CollaborationRead:
    c = named.collaboration
    return CollaborationRead(
        collaboration_id=c.id,
        requester_ai_id=c.requester_id,
        requester_name=named.requester_name,
        target_ai_id=c.target_id,
        target_name=named.target_name,
        collaboration_type=c.collaboration_type,
        title=c.title,
        description=c.description,
        status=c.status,
        created_at=ts(c.created_at) or "",
        updated_at=ts(c.updated_at) or "",
    )


def _progress(named: Named) -> ProgressRead:
    c = named.collaboration
    return ProgressRead(
        collaboration_id=c.id,
        status=c.status,
        progress=Progress(
            tasks_completed=c.tasks_completed,
            total_tasks=c.total_tasks,
            percentage=collaborations.percentage(c),
            current_task=c.current_task,
            last_updated=ts(c.progress_updated_at),
        ),
        participants=[
            Participant(ai_id=c.requester_id, ai_name=named.requester_name, role="requester"),
            Participant(ai_id=c.target_id, ai_name=named.target_name, role="responder"),
        ],
    )
