"""Collab surface: messages between AIs (send, inbox, sent, delete, search).

Messages also reach connected AIs live, as ``collab.message`` events on ``/api/ws`` and
``/api/stream/events``.
"""

from __future__ import annotations

from fastapi import Path, Query, status

from agenthub.api.collab.message_schemas import (
    MAX_ID,
    CollabMessageRead,
    InboxMessageRead,
    InboxRead,
    MessageCreate,
    MessageCreated,
    MessageDeleted,
    MessageList,
    parse_date_bound,
)
from agenthub.api.collab.params import CollabPage, ts
from agenthub.api.deps import AiDep, CollabPrincipalDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.services.collab import messages
from agenthub.services.collab.messages import MessageView

router = SurfaceRouter(prefix="/api/v1", tags=["collab"])


def _read(view: MessageView) -> CollabMessageRead:
    return CollabMessageRead(
        message_id=view.message_id,
        sender_id=view.sender_id,
        sender_name=view.sender_name,
        target_ai_id=view.target_ai_id,
        conversation_id=view.conversation_id,
        message_type=view.message_type,
        content=view.content,
        metadata=view.metadata,
        created_at=ts(view.created_at) or "",
    )


@router.post("/message/send", response_model=MessageCreated, status_code=status.HTTP_201_CREATED)
async def send(body: MessageCreate, ai: AiDep, session: SessionDep) -> MessageCreated:
    """Send a message to one AI (``target_ai_id``) or, without it, to every other AI.
    Sending to oneself is allowed (it lands in one's own inbox)."""
    view = await messages.send(
        session,
        ai,
        content=body.content,
        message_type=body.message_type,
        target_ai_id=body.target_ai_id,
        conversation_id=body.conversation_id,
        metadata=body.metadata,
    )
    return MessageCreated(**_read(view).model_dump())


@router.get("/message/inbox", response_model=InboxRead)
async def inbox(
    ai: AiDep,
    session: SessionDep,
    page: CollabPage,
    unread_only: bool = Query(False, description="Only messages not read yet."),
    conversation_id: int | None = Query(None, ge=1, le=MAX_ID),
) -> InboxRead:
    """Received messages, newest first; the returned ones are marked read (``read`` shows
    the state before this request)."""
    found = await messages.inbox(
        session, ai, page, unread_only=unread_only, conversation_id=conversation_id
    )
    return InboxRead(
        messages=[
            InboxMessageRead(**_read(view).model_dump(), read=bool(view.read))
            for view in found.messages
        ],
        total=found.total,
        unread_count=found.unread_count,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/message/sent", response_model=MessageList)
async def sent(ai: AiDep, session: SessionDep, page: CollabPage) -> MessageList:
    """The caller's sent messages, newest first."""
    views, total = await messages.sent(session, ai, page)
    return MessageList(
        messages=[_read(view) for view in views], total=total, limit=page.limit, offset=page.offset
    )


@router.get("/message/search", response_model=MessageList)
async def search(
    principal: CollabPrincipalDep,
    session: SessionDep,
    page: CollabPage,
    q: str = Query(min_length=1, max_length=500, description="Words that must all occur."),
    message_type: str | None = Query(None, min_length=1, max_length=32),
    date_from: str | None = Query(None, max_length=64, description="ISO 8601 date or date-time."),
    date_to: str | None = Query(
        None, max_length=64, description="ISO 8601; a date includes that whole day."
    ),
) -> MessageList:
    """Full-text search of the messages the caller sent or received (an admin: all), newest
    first."""
    views, total = await messages.search(
        session,
        principal,
        page,
        q=q,
        message_type=message_type,
        created_from=parse_date_bound(date_from, "date_from"),
        created_before=parse_date_bound(date_to, "date_to", upper=True),
    )
    return MessageList(
        messages=[_read(view) for view in views], total=total, limit=page.limit, offset=page.offset
    )


@router.delete("/message/{message_id}", response_model=MessageDeleted)
async def delete(
    ai: AiDep, session: SessionDep, message_id: int = Path(ge=-MAX_ID, le=MAX_ID)
) -> MessageDeleted:
    """Delete one of the caller's sent messages: it disappears from every inbox, list and
    search."""
    deleted_at = await messages.delete(session, ai, message_id)
    return MessageDeleted(message_id=message_id, deleted_at=ts(deleted_at) or "")
