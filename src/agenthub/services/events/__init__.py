"""The event log: every state change writes an event row in its own transaction; the rows are
handed to the bus after the commit (see :func:`take_pending`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.events import EventBus, EventDict
from agenthub.db.base import table_of
from agenthub.db.engine import Database
from agenthub.db.models import CollabMessage, Event, MessageDelivery
from agenthub.services.events.horizon import replay_horizon

_PENDING = "agenthub.pending_events"
_EVENTS = table_of(Event)
_INSERT_EVENT = sa.insert(_EVENTS).returning(_EVENTS.c.id)


def _as_dict(
    event_id: int,
    type: str,
    data: dict[str, Any],
    actor: str | None,
    project_id: uuid.UUID | None,
    tenant_id: uuid.UUID | None,
    audience: str | None,
    created_at: datetime,
) -> EventDict:
    """An event as the bus and the streams carry it."""
    return {
        "id": event_id,
        "type": type,
        "data": data,
        "actor": actor,
        "project_id": str(project_id) if project_id else None,
        "tenant_id": str(tenant_id) if tenant_id else None,
        "audience": audience,
        "created_at": isoformat_z(created_at),
    }


def to_dict(event: Event) -> EventDict:
    return _as_dict(
        event.id,
        event.type,
        event.data,
        event.actor,
        event.project_id,
        event.tenant_id,
        event.audience,
        event.created_at,
    )


BROADCAST = "ai:*"
# A Collab message event carries the message (its content included) to the connected recipients.
MESSAGE_EVENT = "collab.message"


def ai_audience(ai_id: int | None) -> str:
    """The audience of an event for one AI identity; ``None``: every AI (a broadcast)."""
    return BROADCAST if ai_id is None else f"ai:{ai_id}"


async def record(
    session: AsyncSession,
    type: str,
    data: dict[str, Any],
    *,
    actor: Principal | None = None,
    project_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    audience: str | None = None,
) -> EventDict:
    """Write an event in the caller's transaction; it is published once that commits.

    ``audience`` addresses it to AI identities (:func:`ai_audience`) besides the admins and the
    members of its project or tenant. One INSERT ... RETURNING, without the ORM's unit of work
    (hot paths such as sending a message record an event per request)."""
    now = utcnow()
    actor_name = actor.rate_limit_subject if actor else None
    inserted = await session.execute(
        _INSERT_EVENT,
        {
            "type": type,
            "data": data,
            "actor": actor_name,
            "project_id": project_id,
            "tenant_id": tenant_id,
            "audience": audience,
            "created_at": now,
        },
    )
    event_id: int = inserted.scalar_one()
    event = _as_dict(event_id, type, data, actor_name, project_id, tenant_id, audience, now)
    session.info.setdefault(_PENDING, []).append(event)
    return event


async def record_many(
    session: AsyncSession,
    items: Sequence[tuple[str, dict[str, Any], uuid.UUID | None, uuid.UUID | None]],
) -> None:
    """Write many events at once (``(type, data, project_id, tenant_id)`` each): one
    multi-row insert instead of a flush per event, for passes that change thousands of rows."""
    if not items:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {"type": t, "data": d, "actor": None, "project_id": p, "tenant_id": tn, "created_at": now}
        for t, d, p, tn in items
    ]
    returned: list[tuple[int, datetime]]
    if session.get_bind().dialect.name == "sqlite":
        # SQLite cannot return a multi-row insert's ids in parameter order, so SQLAlchemy would
        # send one INSERT per row. This transaction holds SQLite's write lock (BEGIN IMMEDIATE,
        # see db/engine.py), so the ids after max(id) are the ones SQLite would assign.
        last = await session.scalar(sa.select(sa.func.coalesce(sa.func.max(Event.id), 0)))
        for event_id, row in enumerate(rows, start=int(last or 0) + 1):
            row["id"] = event_id
        await session.execute(sa.insert(Event), rows)
        returned = [(row["id"], now) for row in rows]
    else:
        result = await session.execute(
            sa.insert(Event).returning(Event.id, Event.created_at, sort_by_parameter_order=True),
            rows,
        )
        returned = [(row[0], row[1]) for row in result.all()]
    pending = session.info.setdefault(_PENDING, [])
    for (event_id, created_at), row in zip(returned, rows, strict=True):
        pending.append(
            _as_dict(
                event_id,
                row["type"],
                row["data"],
                None,
                row["project_id"],
                row["tenant_id"],
                None,
                created_at,
            )
        )


def notify(
    session: AsyncSession,
    type: str,
    data: dict[str, Any],
    *,
    project_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
) -> None:
    """Publish a notification after the commit without writing it to the event log: for
    wake-ups (new log lines) that event-stream clients do not receive."""
    session.info.setdefault(_PENDING, []).append(
        {
            "type": type,
            "data": data,
            "ephemeral": True,
            "project_id": str(project_id) if project_id else None,
            "tenant_id": str(tenant_id) if tenant_id else None,
        }
    )


def take_pending(session: AsyncSession) -> list[EventDict]:
    """The events recorded in ``session`` since the last call; call after a successful commit."""
    pending: list[EventDict] = session.info.pop(_PENDING, [])
    return pending


def discard_pending(session: AsyncSession) -> None:
    session.info.pop(_PENDING, None)


@asynccontextmanager
async def unit_of_work(db: Database, bus: EventBus) -> AsyncIterator[AsyncSession]:
    """A transaction that commits when the block exits, then publishes the events recorded in
    it (only after the commit, so no event announces a change that was rolled back)."""
    async with db.sessionmaker() as session:
        try:
            async with session.begin():
                yield session
        except BaseException:
            discard_pending(session)
            raise
        await bus.publish(take_pending(session))


def visible_to(principal: Principal) -> Callable[[EventDict], bool]:
    """Which events a principal may receive: all for admins; else those of its project/tenant,
    and for an AI identity those addressed to it (a broadcast reaches every AI but its sender)."""
    if principal.is_admin:
        return lambda event: not event.get("ephemeral")
    project = str(principal.project_id) if principal.project_id else None
    tenant = str(principal.tenant_id) if principal.tenant_id else None
    own = ai_audience(principal.ai_id) if principal.ai_id is not None else None

    def accept(event: EventDict) -> bool:
        if event.get("ephemeral"):
            return False
        audience = event.get("audience")
        if own is not None and audience is not None:
            if audience == own:
                return True
            if audience == BROADCAST:
                return bool(event.get("data", {}).get("sender_id") != principal.ai_id)
        return (project is not None and event.get("project_id") == project) or (
            tenant is not None and event.get("tenant_id") == tenant
        )

    return accept


def type_filter(types: Sequence[str] | None) -> Callable[[str], bool]:
    """Match event types by name, ``prefix.*`` wildcard, or the underscore spelling
    (``node_joined``) that WebSocket frames use."""
    if not types:
        return lambda _type: True
    exact = {t for t in types if not t.endswith("*")}
    prefixes = tuple(t[:-1] for t in types if t.endswith("*"))

    def match(event_type: str) -> bool:
        return (
            event_type in exact
            or event_type.replace(".", "_") in exact
            or event_type.startswith(prefixes)
            or event_type.replace(".", "_").startswith(prefixes)
        )

    return match


class EventPage(NamedTuple):
    events: list[EventDict]
    # Events after these (up to ``until``) may still arrive with smaller ids than the newest
    # one committed, since a transaction in flight holds them: read again shortly before
    # concluding the log is done.
    held_back: bool


async def latest_id(session: AsyncSession) -> int:
    """The greatest event id committed so far (0 when the log is empty)."""
    return int(await session.scalar(sa.select(sa.func.max(Event.id))) or 0)


async def list_events(
    session: AsyncSession,
    principal: Principal,
    *,
    after_id: int | None = None,
    until: int | None = None,
    types: Sequence[str] | None = None,
    limit: int = 100,
) -> EventPage:
    """Events visible to ``principal`` after ``after_id`` (and up to ``until``), oldest first,
    never past an id that a transaction in flight may still commit (see
    :mod:`agenthub.services.events.horizon`), so resuming after the last one never skips an
    event."""
    stmt = sa.select(Event).order_by(Event.id.asc())
    if after_id is not None:
        stmt = stmt.where(Event.id > after_id)
    if not principal.is_admin:
        conditions: list[sa.ColumnElement[bool]] = []
        if principal.ai_id is not None:
            conditions.append(Event.audience.in_([ai_audience(principal.ai_id), BROADCAST]))
        if principal.project_id:
            conditions.append(Event.project_id == principal.project_id)
        if principal.tenant_id:
            conditions.append(Event.tenant_id == principal.tenant_id)
        if not conditions:
            return EventPage([], held_back=False)
        stmt = stmt.where(sa.or_(*conditions))
    safe = await replay_horizon(session, after_id)
    held_back = safe is not None and (until is None or safe < until)
    bound = safe if held_back else until
    if bound is not None:
        stmt = stmt.where(Event.id <= bound)
    match = type_filter(types)
    # The SQL narrows by project, tenant and audience; this drops an AI's own broadcasts.
    visible = visible_to(principal)
    reader = None if principal.is_admin else principal.ai_id
    found: list[EventDict] = []
    # Type wildcards are matched in Python, so read in batches until the page is full.
    while len(found) < limit:
        batch = (await session.scalars(stmt.limit(limit * 2))).all()
        if not batch:
            break
        page = [d for d in map(to_dict, batch) if match(d["type"]) and visible(d)]
        if reader is not None:
            page = await _in_inbox(session, reader, page)
        found.extend(page)
        stmt = stmt.where(Event.id > batch[-1].id)
    return EventPage(found[:limit], held_back=held_back)


_MESSAGES = table_of(CollabMessage).c
_DELIVERIES = table_of(MessageDelivery).c
_IN_INBOX = (
    sa.select(_DELIVERIES.message_id)
    .join(table_of(CollabMessage), _MESSAGES.id == _DELIVERIES.message_id)
    .where(
        _DELIVERIES.recipient_id == sa.bindparam("me", type_=sa.BigInteger),
        _DELIVERIES.message_id.in_(sa.bindparam("ids", expanding=True)),
        _MESSAGES.deleted_at.is_(None),
    )
)


async def _in_inbox(session: AsyncSession, ai_id: int, page: list[EventDict]) -> list[EventDict]:
    """``page`` without the message events whose message is not in the AI's inbox.

    A replay must not show more than the inbox does: a broadcast sent before the AI existed
    was never delivered to it, and a message its sender deleted is hidden from the inbox, so
    neither may be read back from the event log (live, both reach only who the inbox does)."""
    ids = {e["data"].get("message_id") for e in page if e["type"] == MESSAGE_EVENT}
    if not ids:
        return page
    held = set((await session.scalars(_IN_INBOX, {"me": ai_id, "ids": list(ids)})).all())
    return [e for e in page if e["type"] != MESSAGE_EVENT or e["data"].get("message_id") in held]
