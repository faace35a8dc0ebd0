"""Cluster surface: the event log, its live stream over SSE, and the ``/api/ws`` WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Header, Query, WebSocket, WebSocketDisconnect
from sse_starlette import EventSourceResponse, ServerSentEvent

from agenthub.api.cluster.envelope import Envelope, wrap
from agenthub.api.deps import CollabPrincipalDep, RuntimeDep, SessionDep, websocket_principal
from agenthub.api.routing import SurfaceRouter
from agenthub.core.auth import Principal
from agenthub.core.errors import AppError, ValidationFailed
from agenthub.core.events import EventDict
from agenthub.services import events
from agenthub.services.runtime import Runtime

router = SurfaceRouter(prefix="/api", tags=["cluster"])
REPLAY_BATCH = 500
HELD_BACK_RETRY_S = 0.05


def _split(csv: str | None) -> list[str] | None:
    items = [t.strip() for t in (csv or "").split(",") if t.strip()]
    return items or None


@router.get("/events", response_model=Envelope[dict[str, Any]])
async def list_events(
    principal: CollabPrincipalDep,
    session: SessionDep,
    after_id: int | None = Query(None, ge=0, description="Only events with a greater id."),
    types: str | None = Query(None, description="Comma-separated types; `node.*` wildcards."),
    limit: int = Query(100, ge=1, le=1000),
) -> Envelope[dict[str, Any]]:
    """The event log, oldest first, as far as the caller may see it."""
    found, _ = await events.list_events(
        session, principal, after_id=after_id, types=_split(types), limit=limit
    )
    return wrap({"events": found, "last_id": found[-1]["id"] if found else after_id})


async def _stream(
    runtime: Runtime, principal: Principal, types: list[str] | None, last_id: int | None
) -> AsyncIterator[ServerSentEvent]:
    match = events.type_filter(types)
    visible = events.visible_to(principal)
    # Subscribe before replaying, so nothing committed in between is missed; live events the
    # replay already sent are skipped by id. The replay covers the log up to its newest event
    # when the subscription began: everything committed later arrives live.
    async with runtime.bus.subscribe(lambda e: visible(e) and match(e["type"])) as subscription:
        if last_id is not None:
            async with runtime.db.sessionmaker() as session:
                until = await events.latest_id(session)
            while last_id < until:
                async with runtime.db.sessionmaker() as session:
                    batch, held_back = await events.list_events(
                        session,
                        principal,
                        after_id=last_id,
                        until=until,
                        types=types,
                        limit=REPLAY_BATCH,
                    )
                for event in batch:
                    yield _sse(event)
                    last_id = event["id"]
                if len(batch) < REPLAY_BATCH:
                    if not held_back:
                        break
                    # A transaction that was open when the subscription began holds an earlier
                    # id: the events after it wait for it (they are queued live meanwhile, and
                    # skipped there by id once replayed).
                    await asyncio.sleep(HELD_BACK_RETRY_S)
        while True:
            live = await subscription.get()
            if live is None:
                # Too far behind: end the stream; the client reconnects with Last-Event-ID.
                return
            if last_id is not None and live["id"] <= last_id:
                continue
            yield _sse(live)


def _sse(event: EventDict) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(event), event=event["type"], id=str(event["id"]))


@router.get("/stream/events", response_class=EventSourceResponse)
async def stream_events(
    principal: CollabPrincipalDep,
    runtime: RuntimeDep,
    types: str | None = Query(None, description="Comma-separated types; `node.*` wildcards."),
    last_event_id: str | None = Header(None, alias="Last-Event-ID"),
    after_id: int | None = Query(None, ge=0, description="Replay events after this id first."),
) -> EventSourceResponse:
    """Server-Sent Events: ``event:`` is the type, ``id:`` the log id; reconnecting with
    ``Last-Event-ID`` replays what was missed."""
    resume = after_id
    if last_event_id is not None:
        try:
            resume = int(last_event_id)
        except ValueError as exc:
            raise ValidationFailed("Last-Event-ID must be an event id (an integer).") from exc
    return EventSourceResponse(
        _stream(runtime, principal, _split(types), resume), ping=15, send_timeout=30
    )


@router.websocket("/ws")
async def cluster_ws(websocket: WebSocket, types: str | None = None) -> None:
    """Live events as ``{"type": "node_joined", "data": {...}}`` frames (``?token=`` to
    authenticate, ``?types=`` to filter)."""
    runtime: Runtime = websocket.app.state.runtime
    try:
        principal = await websocket_principal(websocket, runtime)
    except AppError:
        await websocket.close(code=4401, reason="authentication required")
        return
    await websocket.accept()
    match = events.type_filter(_split(types))
    visible = events.visible_to(principal)
    async with runtime.bus.subscribe(lambda e: visible(e) and match(e["type"])) as subscription:
        receiver = asyncio.create_task(_drain(websocket))
        try:
            while not receiver.done():
                getter = asyncio.create_task(subscription.get())
                done, _ = await asyncio.wait(
                    {getter, receiver}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    break
                next_event = getter.result()
                if next_event is None:
                    await websocket.close(code=1013, reason="consumer too slow")
                    break
                await websocket.send_json(
                    {
                        "type": next_event["type"].replace(".", "_"),
                        "data": {
                            **next_event["data"],
                            "event_id": next_event["id"],
                            "timestamp": next_event["created_at"],
                        },
                    }
                )
        except WebSocketDisconnect:
            pass
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                await receiver


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client frames until the client goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.receive_text()
