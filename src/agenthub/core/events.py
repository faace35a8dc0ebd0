"""The event bus: fan-out of committed events to the subscribers of this process.

Events are written to the database by ``services.events`` and handed to the bus after the commit.
The in-process bus delivers them to local subscribers; the Redis bus publishes them on a channel
and every replica's reader delivers them to its own subscribers, so a client connected to any
replica sees every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis

log = logging.getLogger(__name__)

EventDict = dict[str, Any]
SUBSCRIBER_QUEUE_SIZE = 1000
PUBLISH_BATCH = 500


class Subscription:
    """One consumer's queue. ``overflowed`` is set when the consumer fell too far behind; the
    stream then ends and the client resumes from the event log (SSE ``Last-Event-ID``)."""

    def __init__(self, accept: Callable[[EventDict], bool]) -> None:
        self.queue: asyncio.Queue[EventDict] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        self.accept = accept
        self.overflowed = asyncio.Event()

    def offer(self, event: EventDict) -> None:
        if self.overflowed.is_set() or not self.accept(event):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()

    async def get(self) -> EventDict | None:
        """The next event, or ``None`` once the subscription overflowed."""
        if self.overflowed.is_set() and self.queue.empty():
            return None
        getter = asyncio.ensure_future(self.queue.get())
        overflow = asyncio.ensure_future(self.overflowed.wait())
        try:
            done, _ = await asyncio.wait({getter, overflow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            overflow.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None


class EventBus(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, events: list[EventDict]) -> None: ...
    def subscribe(
        self, accept: Callable[[EventDict], bool]
    ) -> contextlib.AbstractAsyncContextManager[Subscription]: ...


class _LocalFanout:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def deliver(self, event: EventDict) -> None:
        for subscription in list(self._subscriptions):
            subscription.offer(event)

    @asynccontextmanager
    async def subscribe(self, accept: Callable[[EventDict], bool]) -> AsyncIterator[Subscription]:
        subscription = Subscription(accept)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)


class InProcessBus(_LocalFanout):
    """The default when no Redis is configured: one hub process, local delivery."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, events: list[EventDict]) -> None:
        for event in events:
            self.deliver(event)


class RedisBus(_LocalFanout):
    """Publishes on one Redis channel; a reader task per process fans out locally."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__()
        self._redis = redis
        self._channel = f"{prefix}events"
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="event-bus-reader")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=10)
        except TimeoutError as exc:
            await self.stop()
            raise RuntimeError(
                "Redis is configured (AGENTHUB_REDIS_URL) but its pub/sub is unreachable"
            ) from exc

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def publish(self, events: list[EventDict]) -> None:
        if not events:
            return
        if len(events) <= PUBLISH_BATCH:  # the usual case: no pipeline to build for one command
            await self._redis.publish(self._channel, json.dumps(events, default=str))
            return
        # One message per batch of events, not per event: a scheduler pass can publish
        # thousands, and each message costs a round of work on every replica's reader.
        async with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(events), PUBLISH_BATCH):
                batch = events[start : start + PUBLISH_BATCH]
                pipe.publish(self._channel, json.dumps(batch, default=str))
            await pipe.execute()

    async def _read(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            payload = json.loads(message["data"])
                            # A batch; a single event is what replicas of an earlier version send.
                            for event in payload if isinstance(payload, list) else [payload]:
                                self.deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # a lost connection must not end delivery for good
                log.exception("event bus reader lost its Redis connection; reconnecting")
                await asyncio.sleep(1)
