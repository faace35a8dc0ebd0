"""Collab messages: sending (to one AI or to all), inboxes with read state, sent lists,
soft deletion, and full-text search.

A message is one ``collab_messages`` row; who received it is one ``collab_deliveries`` row per
recipient (a broadcast is delivered to every other AI active when it is sent, so AIs that
register later do not see old broadcasts). Deleting is soft: a deleted message disappears from
every inbox, sent list and search, and its deliveries stay for the record.

Each operation is a fixed, small number of statements whatever the number of recipients: the
send path is the hot one (a benchmark targets thousands of messages a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import Forbidden, NotFound, ValidationFailed
from agenthub.core.pagination import Page
from agenthub.core.storable import check_text
from agenthub.db.base import table_of
from agenthub.db.models import AiIdentity, CollabMessage, InboxCount, MessageDelivery
from agenthub.db.types import PortableJSON, UTCDateTime
from agenthub.services import events
from agenthub.services.identity.ais import ai_not_found, visibility

EVENT_TYPE = events.MESSAGE_EVENT


@dataclass(frozen=True)
class MessageView:
    """A message as the Collab surface shows it; ``read`` is set only in an inbox."""

    message_id: int
    sender_id: int
    sender_name: str
    target_ai_id: int | None
    conversation_id: int | None
    message_type: str
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    read: bool | None = None


@dataclass(frozen=True)
class Inbox:
    messages: list[MessageView]
    total: int
    unread_count: int


def _ai_id(principal: Principal) -> int:
    # AiDep guarantees an AI principal; this narrows the type and guards a misuse.
    if principal.ai_id is None:
        raise Forbidden("This action needs an AI identity.", code="forbidden")
    return principal.ai_id


_M = table_of(CollabMessage).c
_D = table_of(MessageDelivery).c
_A = table_of(AiIdentity).c
_SENDER = table_of(AiIdentity).alias("sender")
_COUNTS = table_of(InboxCount).c
_MESSAGE_FIELDS = (
    "sender_id",
    "conversation_id",
    "message_type",
    "content",
    "metadata",
    "created_at",
)
# Built once: constructing a statement costs more CPU than running it on a warm connection.
_INSERT_MESSAGE = sa.insert(table_of(CollabMessage)).returning(_M.id)
_INSERT_DELIVERY = sa.insert(table_of(MessageDelivery))
_DELIVER_TO_ALL = sa.insert(table_of(MessageDelivery)).from_select(
    ["message_id", "recipient_id", "conversation_id"],
    # A broadcast: one INSERT ... SELECT writes every recipient's row in the database, without
    # reading the recipients into Python or sending a row per recipient.
    sa.select(
        sa.bindparam("message_id", type_=sa.BigInteger),
        _A.id,
        sa.bindparam("conversation_id", type_=sa.BigInteger),
    ).where(_A.is_active.is_(True), _A.id != sa.bindparam("sender_id", type_=sa.BigInteger)),
)
_SEND_TO: dict[int, sa.Insert] = {}


def _send_to(visible: sa.ColumnElement[bool]) -> sa.Insert:
    """INSERT ... SELECT of a direct message: the row is inserted only if the target exists
    and the sender may see it, so a direct send costs no extra round trip."""
    stmt = _SEND_TO.get(id(visible))
    if stmt is None:
        values = sa.select(
            _A.id,
            sa.bindparam("sender_id", type_=sa.BigInteger),
            sa.bindparam("conversation_id", type_=sa.BigInteger),
            sa.bindparam("message_type", type_=sa.String),
            sa.bindparam("content", type_=sa.Text),
            sa.bindparam("metadata", type_=PortableJSON),
            sa.bindparam("created_at", type_=UTCDateTime()),
        ).where(_A.id == sa.bindparam("target_ai_id", type_=sa.BigInteger), visible)
        stmt = _SEND_TO[id(visible)] = (
            sa.insert(table_of(CollabMessage))
            .from_select(["target_ai_id", *_MESSAGE_FIELDS], values)
            .returning(_M.id)
        )
    return stmt


async def send(
    session: AsyncSession,
    sender: Principal,
    *,
    content: str,
    message_type: str = "message",
    target_ai_id: int | None = None,
    conversation_id: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> MessageView:
    """Send a message to ``target_ai_id``, or to every other active AI when it is ``None``.

    An unknown or inactive target is ``AI_NOT_FOUND`` (404). An AI may send a message to itself
    (a note to self): it lands in its own inbox like any other, since refusing it would protect
    nothing. A ``collab.message`` event carries the message to connected recipients after the
    commit. Statements: the message insert, the delivery insert, the event insert.
    """
    sender_id = _ai_id(sender)
    meta = metadata or {}
    now = utcnow()
    row: dict[str, Any] = {
        "sender_id": sender_id,
        "conversation_id": conversation_id,
        "message_type": message_type,
        "content": content,
        "metadata": meta,
        "created_at": now,
    }
    if target_ai_id is None:
        message_id: int = (await session.execute(_INSERT_MESSAGE, row)).scalar_one()
        await session.execute(
            _DELIVER_TO_ALL,
            {"message_id": message_id, "conversation_id": conversation_id, "sender_id": sender_id},
        )
    else:
        visible, params = visibility(sender)
        found = await session.scalar(
            _send_to(visible), {**row, **params, "target_ai_id": target_ai_id}
        )
        if found is None:
            raise ai_not_found(target_ai_id)
        message_id = found
        await session.execute(
            _INSERT_DELIVERY,
            {
                "message_id": message_id,
                "recipient_id": target_ai_id,
                "conversation_id": conversation_id,
            },
        )
    view = MessageView(
        message_id=message_id,
        sender_id=sender_id,
        sender_name=sender.name,
        target_ai_id=target_ai_id,
        conversation_id=conversation_id,
        message_type=message_type,
        content=content,
        metadata=meta,
        created_at=now,
    )
    data = {
        "message_id": message_id,
        "sender_id": sender_id,
        "sender_name": sender.name,
        "target_ai_id": target_ai_id,
        "conversation_id": conversation_id,
        "message_type": message_type,
        "content": content,
        "metadata": meta,
        "created_at": isoformat_z(now),
    }
    await events.record(
        session,
        EVENT_TYPE,
        data,
        actor=sender,
        audience=events.ai_audience(target_ai_id),
    )
    return view


def _view(row: sa.Row[Any], *, read: bool | None = None) -> MessageView:
    return MessageView(
        message_id=row.id,
        sender_id=row.sender_id,
        sender_name=row.sender_name,
        target_ai_id=row.target_ai_id,
        conversation_id=row.conversation_id,
        message_type=row.message_type,
        content=row.content,
        metadata=row.meta or {},
        created_at=row.created_at,
        read=read,
    )


# A message as every listing shows it (the sender's name joined from _SENDER).
_MESSAGE_COLUMNS: tuple[sa.ColumnElement[Any], ...] = (
    _M.id,
    _M.sender_id,
    _SENDER.c.name.label("sender_name"),
    _M.target_ai_id,
    _M.conversation_id,
    _M.message_type,
    _M.content,
    _M.metadata.label("meta"),
    _M.created_at,
)
_WITH_SENDER = table_of(CollabMessage).join(_SENDER, _SENDER.c.id == _M.sender_id)


_INBOX: dict[tuple[bool, bool], sa.Select[Any]] = {}
_MARK_READ = (
    sa.update(table_of(MessageDelivery))
    .where(
        _D.recipient_id == sa.bindparam("me", type_=sa.BigInteger),
        _D.message_id.in_(sa.bindparam("ids", expanding=True)),
        # A concurrent read may have marked some already: keep its time.
        _D.read_at.is_(None),
    )
    .values(read_at=sa.bindparam("now", type_=UTCDateTime()))
)


def _inbox_statement(unread_only: bool, by_conversation: bool) -> sa.Select[Any]:
    """The page and both counts in one statement: the counts' single row outer-joined with the
    page's rows (one row with an empty page), so an inbox read is one round trip."""
    found = _INBOX.get((unread_only, by_conversation))
    if found is not None:
        return found
    deliveries = table_of(MessageDelivery).join(table_of(CollabMessage), _M.id == _D.message_id)
    mine = (_D.recipient_id == sa.bindparam("me", type_=sa.BigInteger), _M.deleted_at.is_(None))
    filters: list[sa.ColumnElement[bool]] = []
    if unread_only:
        filters.append(_D.read_at.is_(None))
    if by_conversation:
        filters.append(_D.conversation_id == sa.bindparam("conversation_id", type_=sa.BigInteger))
    page = (
        sa.select(*_MESSAGE_COLUMNS, _D.read_at)
        .select_from(deliveries.join(_SENDER, _SENDER.c.id == _M.sender_id))
        .where(*mine, *filters)
        .order_by(_D.message_id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .offset(sa.bindparam("offset", type_=sa.BigInteger))
        .subquery("page")
    )
    # The counts come from collab_inbox_counts (kept by triggers, see InboxCount), so a read
    # costs the same however big the inbox; only a conversation's total is counted, over that
    # conversation's deliveries.
    me = sa.bindparam("me", type_=sa.BigInteger)
    kept = sa.select(_COUNTS.total, _COUNTS.unread).where(_COUNTS.recipient_id == me)
    unread = sa.func.coalesce(kept.with_only_columns(_COUNTS.unread).scalar_subquery(), 0)
    total: sa.ColumnElement[int]
    if by_conversation:
        total = (
            sa.select(sa.func.count())
            .select_from(deliveries)
            .where(*mine, *filters)
            .scalar_subquery()
        )
    elif unread_only:
        total = unread
    else:
        total = sa.func.coalesce(kept.with_only_columns(_COUNTS.total).scalar_subquery(), 0)
    counts = sa.select(total.label("total"), unread.label("unread_count")).subquery("counts")
    stmt = _INBOX[(unread_only, by_conversation)] = (
        sa.select(counts.c.total, counts.c.unread_count, page)
        .select_from(counts.outerjoin(page, sa.true()))
        .order_by(page.c.id.desc())
    )
    return stmt


async def inbox(
    session: AsyncSession,
    ai: Principal,
    page: Page,
    *,
    unread_only: bool = False,
    conversation_id: int | None = None,
) -> Inbox:
    """The caller's received messages, newest first, and mark the returned ones read.

    Each message's ``read`` is its state before this call. ``total`` counts the messages
    matching the filters and ``unread_count`` all the caller's unread messages, both as they
    were before this call marked the page read. Statements: the page with both counts, and one
    UPDATE for the page's unread messages.
    """
    me = _ai_id(ai)
    params: dict[str, Any] = {"me": me, "limit": page.limit, "offset": page.offset}
    if conversation_id is not None:
        params["conversation_id"] = conversation_id
    statement = _inbox_statement(unread_only, conversation_id is not None)
    found = (await session.execute(statement, params)).all()
    total, unread_count = (found[0].total, found[0].unread_count) if found else (0, 0)
    rows = [row for row in found if row.id is not None]
    unread = [row.id for row in rows if row.read_at is None]
    if unread:
        await session.execute(_MARK_READ, {"me": me, "ids": unread, "now": utcnow()})
    return Inbox(
        messages=[_view(row, read=row.read_at is not None) for row in rows],
        total=int(total or 0),
        unread_count=int(unread_count or 0),
    )


async def sent(session: AsyncSession, ai: Principal, page: Page) -> tuple[list[MessageView], int]:
    """The caller's sent messages (not deleted), newest first, and how many there are."""
    me = _ai_id(ai)
    mine = (CollabMessage.sender_id == me, CollabMessage.deleted_at.is_(None))
    rows = (
        await session.execute(
            sa.select(*_MESSAGE_COLUMNS)
            .select_from(_WITH_SENDER)
            .where(*mine)
            .order_by(CollabMessage.id.desc())
            .limit(page.limit)
            .offset(page.offset)
        )
    ).all()
    total = await session.scalar(sa.select(sa.func.count()).select_from(CollabMessage).where(*mine))
    return [_view(row) for row in rows], int(total or 0)


async def delete(session: AsyncSession, ai: Principal, message_id: int) -> datetime:
    """Soft-delete a message; only its sender may. Returns the deletion time.

    An unknown or already deleted message is ``RESOURCE_NOT_FOUND``; someone else's is
    ``FORBIDDEN``.
    """
    me = _ai_id(ai)
    row = (
        await session.execute(
            sa.select(CollabMessage.sender_id, CollabMessage.deleted_at).where(
                CollabMessage.id == message_id
            )
        )
    ).one_or_none()
    if row is None or row.deleted_at is not None:
        raise _message_not_found(message_id)
    if row.sender_id != me:
        raise Forbidden("Not authorized to delete this message", code="forbidden")
    now = utcnow()
    result = await session.execute(
        sa.update(CollabMessage)
        .where(CollabMessage.id == message_id, CollabMessage.deleted_at.is_(None))
        .values(deleted_at=now)
        .execution_options(synchronize_session=False)
    )
    # A concurrent delete of the same message won the race: to this caller it is gone.
    if getattr(result, "rowcount", 1) == 0:
        raise _message_not_found(message_id)
    return now


def _message_not_found(message_id: int) -> NotFound:
    return NotFound(f"Message {message_id} not found", code="resource_not_found")


def fts5_query(q: str) -> str | None:
    """``q`` as an FTS5 query matching every word: each whitespace-separated term is quoted
    (embedded quotes doubled), so no input can use or break FTS5's query syntax. Terms without
    a letter or digit are dropped (they would be empty phrases matching nothing); ``None`` when
    nothing searchable is left."""
    terms = [t for t in q.split() if any(ch.isalnum() for ch in t)]
    if not terms:
        return None
    return " AND ".join('"' + t.replace('"', '""') + '"' for t in terms)


def _matches(session: AsyncSession, q: str) -> sa.ColumnElement[bool] | None:
    if session.get_bind().dialect.name == "sqlite":
        query = fts5_query(q)
        if query is None:
            return None
        # The FTS5 table has a hidden column named after itself, which MATCH searches in full.
        fts = sa.table("collab_messages_fts", sa.column("rowid"), sa.column("collab_messages_fts"))
        hits = sa.select(fts.c.rowid).where(fts.c.collab_messages_fts.bool_op("MATCH")(query))
        return CollabMessage.id.in_(hits)
    # plainto_tsquery ANDs the words like the SQLite path (websearch_to_tsquery would also give
    # OR and -word a meaning there but not on SQLite); it accepts any text without syntax errors.
    vector: sa.ColumnClause[Any] = sa.literal_column("collab_messages.search")
    return vector.bool_op("@@")(sa.func.plainto_tsquery(sa.literal_column("'english'"), q))


async def search(
    session: AsyncSession,
    principal: Principal,
    page: Page,
    *,
    q: str,
    message_type: str | None = None,
    created_from: datetime | None = None,
    created_before: datetime | None = None,
) -> tuple[list[MessageView], int]:
    """Full-text search of message content, newest first (not by rank: the same order as the
    inbox and sent lists, and the same on both databases), and how many match.

    Words are stemmed ("deploying" finds "deploy") and all must occur. An AI finds the
    messages it sent or received; an admin that is not an AI finds every message; other callers
    are ``FORBIDDEN``. Deleted messages are never found. ``created_from`` is inclusive,
    ``created_before`` exclusive.
    """
    if not q.strip():
        raise ValidationFailed("q must contain a word to search for", details={"field": "q"})
    check_text("q", q)
    check_text("message_type", message_type)
    if created_from is not None and created_before is not None and created_from >= created_before:
        raise ValidationFailed("date_from must be before date_to", details={"field": "date_from"})
    conditions: list[sa.ColumnElement[bool]] = [CollabMessage.deleted_at.is_(None)]
    if principal.is_ai:
        me = _ai_id(principal)
        received = sa.exists().where(
            MessageDelivery.message_id == CollabMessage.id, MessageDelivery.recipient_id == me
        )
        conditions.append(sa.or_(CollabMessage.sender_id == me, received))
    elif not principal.is_admin:
        raise Forbidden(
            "Searching messages needs an AI identity (its own messages) or an admin.",
            code="forbidden",
        )
    matches = _matches(session, q)
    if matches is None:
        return [], 0
    conditions.append(matches)
    if message_type is not None:
        conditions.append(CollabMessage.message_type == message_type)
    if created_from is not None:
        conditions.append(CollabMessage.created_at >= created_from)
    if created_before is not None:
        conditions.append(CollabMessage.created_at < created_before)
    rows = (
        await session.execute(
            sa.select(*_MESSAGE_COLUMNS)
            .select_from(_WITH_SENDER)
            .where(*conditions)
            .order_by(CollabMessage.id.desc())
            .limit(page.limit)
            .offset(page.offset)
        )
    ).all()
    total = await session.scalar(
        sa.select(sa.func.count()).select_from(CollabMessage).where(*conditions)
    )
    return [_view(row) for row in rows], int(total or 0)
