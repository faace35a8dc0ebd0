"""Collab surface: registering AI identities and their profiles."""

from __future__ import annotations

from typing import Any

from fastapi import Query, status

from agenthub.api.collab.params import CollabPage, ts
from agenthub.api.collab.schemas import (
    AiCreate,
    AiList,
    AiListItem,
    AiRead,
    AiRegistered,
    AiUpdate,
    AiUpdated,
)
from agenthub.api.deps import CollabPrincipalDep, OptionalCollabPrincipalDep, RuntimeDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import utcnow
from agenthub.db.models import AiIdentity
from agenthub.services.identity import ais

router = SurfaceRouter(prefix="/api/v1/ai", tags=["collab"])


def _profile(ai: AiIdentity) -> dict[str, Any]:
    """The profile fields every AI response carries."""
    return {
        "ai_id": ai.id,
        "ai_name": ai.name,
        "ai_nickname": ai.nickname,
        "expertise": ai.expertise,
        "version": ai.version,
        "project": ai.project,
    }


@router.post("/register", response_model=AiRegistered, status_code=status.HTTP_201_CREATED)
async def register(
    body: AiCreate,
    caller: OptionalCollabPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> AiRegistered:
    """Register an AI; the response carries its ``secret``, once. Open to anyone unless
    ``AGENTHUB_COLLAB_OPEN_REGISTRATION=false`` (then admins only)."""
    made = await ais.register(
        session,
        runtime.settings,
        caller,
        name=body.ai_name,
        nickname=body.ai_nickname,
        expertise=body.expertise,
        version=body.version,
        project=body.project,
    )
    ai = made.ai
    return AiRegistered(
        **_profile(ai),
        created_at=ts(ai.created_at) or "",
        secret=made.secret,
    )


@router.get("/list", response_model=AiList)
async def list_ais(
    principal: CollabPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    page: CollabPage,
    expertise: str | None = Query(None, max_length=128),
) -> AiList:
    """Registered AIs, oldest first; ``online`` means active within the online window."""
    rows, total = await ais.list_ais(
        session, principal, limit=page.limit, offset=page.offset, expertise=expertise
    )
    now = utcnow()
    return AiList(
        ais=[
            AiListItem(
                **_profile(ai),
                online=ais.is_online(ai, runtime.settings, now),
            )
            for ai in rows
        ],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{ai_id}", response_model=AiRead)
async def get_ai(
    ai_id: int, principal: CollabPrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> AiRead:
    ai = await ais.get(session, ai_id, principal)
    return AiRead(
        **_profile(ai),
        created_at=ts(ai.created_at) or "",
        last_seen=ts(ai.last_seen),
        online=ais.is_online(ai, runtime.settings),
    )


@router.put("/{ai_id}", response_model=AiUpdated)
async def update_ai(
    ai_id: int,
    body: AiUpdate,
    principal: CollabPrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> AiUpdated:
    """Change a profile: only the AI itself or an admin. Omitted fields stay as they are."""
    ai = await ais.update(session, principal, ai_id, body.model_dump(exclude_unset=True))
    runtime.authenticator.forget_ai(ai_id)
    return AiUpdated(
        **_profile(ai),
        access=ai.access,
        updated_at=ts(ai.updated_at) or "",
    )
