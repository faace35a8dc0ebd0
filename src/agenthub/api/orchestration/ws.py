"""The Orchestration ``/ws`` protocol: every frame is ``{"type": str, "data": {...}}``.

Server → client: ``connection_established``, ``ping``, ``subscribed``/``unsubscribed``,
``task_update``, ``task_completion``, ``task_error``, ``workflow_execution_update``,
``system_status_update``, ``error``. Client → server: ``subscribe``/``unsubscribe`` (with
``data.channel``), ``pong``, ``ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from agenthub.api.deps import websocket_principal
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import AppError
from agenthub.core.events import EventDict
from agenthub.services import events
from agenthub.services.runtime import Runtime
from agenthub.services.system.status import system_status

router = SurfaceRouter(tags=["orchestration"])

# channel → the key in ``data`` that narrows it, if any
CHANNELS: dict[str, str | None] = {
    "task": "task_id",
    "tasks": None,
    "workflow_execution": "execution_id",
    "system_status": None,
    # Collab: an AI's messages and its collaborations (an AI is subscribed to both on connect).
    "messages": None,
    "collaborations": None,
}
COLLAB_CHANNELS = ("messages", "collaborations")
# internal event type → (frame type, channels that carry it, id key)
EVENT_FRAMES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "task.updated": ("task_update", ("task", "tasks"), "task_id"),
    "task.completed": ("task_completion", ("task", "tasks"), "task_id"),
    "task.failed": ("task_error", ("task", "tasks"), "task_id"),
    "workflow_execution.updated": (
        "workflow_execution_update",
        ("workflow_execution",),
        "execution_id",
    ),
    "collab.message": ("new_message", ("messages",), "message_id"),
    **{
        f"collab.collaboration.{change}": (
            "collaboration_update",
            ("collaborations",),
            "collaboration_id",
        )
        for change in ("requested", "responded", "progress", "completed")
    },
}


@dataclass
class Subscriptions:
    channels: set[str] = field(default_factory=set)
    ids: dict[str, set[str]] = field(default_factory=dict)

    def wants(self, event: EventDict) -> bool:
        spec = EVENT_FRAMES.get(event["type"])
        if spec is None:
            return False
        _frame, channels, id_key = spec
        for channel in channels:
            narrowing = CHANNELS[channel]
            if narrowing is None and channel in self.channels:
                return True
            if narrowing is not None and str(event["data"].get(id_key)) in self.ids.get(
                channel, set()
            ):
                return True
        return False


def frame(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_, "data": data}


def error_frame(code: str, message: str) -> dict[str, Any]:
    return frame("error", {"code": code, "message": message})


class Connection:
    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.ws = websocket
        self.runtime = runtime
        self.subs = Subscriptions()

    async def handle(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            kind, data = message["type"], message.get("data") or {}
            if not isinstance(kind, str) or not isinstance(data, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            await self.ws.send_json(
                error_frame("invalid_message", 'Frames are JSON: {"type": str, "data": {...}}.')
            )
            return
        if kind in ("subscribe", "unsubscribe"):
            await self._subscription(kind, data)
        elif kind == "ping":
            await self.ws.send_json(frame("pong", {"timestamp": isoformat_z(utcnow())}))
        elif kind == "pong":
            return
        else:
            await self.ws.send_json(
                error_frame("unknown_message_type", f"Unknown message type '{kind}'.")
            )

    async def _subscription(self, kind: str, data: dict[str, Any]) -> None:
        channel = data.get("channel")
        if channel not in CHANNELS:
            await self.ws.send_json(
                error_frame("invalid_channel", f"channel must be one of: {', '.join(CHANNELS)}.")
            )
            return
        narrowing = CHANNELS[channel]
        target = str(data.get(narrowing)) if narrowing and data.get(narrowing) else None
        if narrowing and target is None:
            await self.ws.send_json(
                error_frame("invalid_subscription", f"channel '{channel}' needs data.{narrowing}.")
            )
            return
        if kind == "subscribe":
            if target is None:
                self.subs.channels.add(channel)
            else:
                self.subs.ids.setdefault(channel, set()).add(target)
        elif target is None:
            self.subs.channels.discard(channel)
        else:
            self.subs.ids.get(channel, set()).discard(target)
        ack = {"channel": channel, **({narrowing: target} if narrowing and target else {})}
        await self.ws.send_json(frame(f"{kind}d", ack))
        if kind == "subscribe" and channel == "system_status":
            await self.ws.send_json(
                frame("system_status_update", await system_status(self.runtime))
            )

    async def deliver(self, event: EventDict) -> None:
        type_, _channels, _key = EVENT_FRAMES[event["type"]]
        await self.ws.send_json(frame(type_, event["data"]))

    async def tick(self) -> None:
        await self.ws.send_json(frame("ping", {"timestamp": isoformat_z(utcnow())}))
        if "system_status" in self.subs.channels:
            await self.ws.send_json(
                frame("system_status_update", await system_status(self.runtime))
            )


@router.websocket("/ws")
async def orchestration_ws(websocket: WebSocket) -> None:
    """Task, workflow and system-status updates (``?token=`` an API key or access token)."""
    runtime: Runtime = websocket.app.state.runtime
    try:
        principal = await websocket_principal(websocket, runtime)
    except AppError:
        await websocket.close(code=4401, reason="authentication required")
        return
    await websocket.accept()
    conn = Connection(websocket, runtime)
    if principal.is_ai:
        # What is addressed to an AI reaches it without asking (visibility still applies).
        conn.subs.channels.update(COLLAB_CHANNELS)
    visible = events.visible_to(principal)
    await websocket.send_json(
        frame(
            "connection_established",
            {"client_id": uuid.uuid4().hex, "server_time": isoformat_z(utcnow())},
        )
    )
    interval = runtime.settings.ws_ping_interval_s
    async with runtime.bus.subscribe(lambda e: visible(e) and conn.subs.wants(e)) as subscription:
        receive = asyncio.ensure_future(websocket.receive_text())
        bus = asyncio.ensure_future(subscription.get())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {receive, bus}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await conn.tick()
                if receive in done:
                    await conn.handle(receive.result())
                    receive = asyncio.ensure_future(websocket.receive_text())
                if bus in done:
                    event = bus.result()
                    if event is None:
                        await websocket.close(code=1013, reason="consumer too slow")
                        return
                    await conn.deliver(event)
                    bus = asyncio.ensure_future(subscription.get())
        except WebSocketDisconnect:
            return
        finally:
            for task in (receive, bus):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
                    await task
