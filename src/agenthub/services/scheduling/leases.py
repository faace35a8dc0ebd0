"""Leader leases: which hub replica runs a controller (the scheduler) right now.

A lease is held for ``ttl`` seconds and renewed by its holder well before it lapses; when the
holder dies, another replica takes over once the lease expires. Redis holds it when configured
(``SET NX PX`` and a compare-and-renew script), else one row per controller in the database
(a conditional UPDATE), which also covers several processes on one SQLite file.
Correctness never rests on the lease alone: placements are conditional writes, so two
schedulers overlapping for a moment cannot overbook a node or place a workload twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import sqlalchemy as sa
from redis.asyncio import Redis

from agenthub.core.events import EventBus, EventDict
from agenthub.db.engine import Database
from agenthub.db.models import ControllerLease

# KEYS[1] lease key; ARGV[1] holder, ARGV[2] ttl ms. Take it when free, renew it when ours.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease(Protocol):
    holder: str
    ttl_s: float

    async def acquire(self) -> bool:
        """Take or renew the lease; ``True`` while this holder has it."""

    async def release(self) -> None:
        """Give it up (on shutdown), so another replica need not wait for it to lapse."""


class RedisLease:
    def __init__(self, redis: Redis, prefix: str, name: str, holder: str, ttl_s: float) -> None:
        self.holder = holder
        self.ttl_s = ttl_s
        self._redis = redis
        self._key = f"{prefix}lease:{name}"
        self._ttl_ms = int(ttl_s * 1000)

    async def acquire(self) -> bool:
        result = await self._redis.eval(_ACQUIRE, 1, self._key, self.holder, self._ttl_ms)
        return bool(result)

    async def release(self) -> None:
        await self._redis.eval(_RELEASE, 1, self._key, self.holder)


class SqlLease:
    def __init__(self, db: Database, name: str, holder: str, ttl_s: float) -> None:
        self.holder = holder
        self.ttl_s = ttl_s
        self._db = db
        self._name = name

    async def acquire(self) -> bool:
        now = time.time()
        async with self._db.session() as session:
            taken = await session.execute(
                sa.update(ControllerLease)
                .where(
                    ControllerLease.name == self._name,
                    sa.or_(ControllerLease.holder == self.holder, ControllerLease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=now + self.ttl_s)
            )
            if getattr(taken, "rowcount", 0) == 1:
                return True
            exists = await session.scalar(
                sa.select(ControllerLease.holder).where(ControllerLease.name == self._name)
            )
            if exists is not None:
                return False
            # First use: insert, and let the primary key decide between racing replicas.
            try:
                async with session.begin_nested():
                    session.add(
                        ControllerLease(
                            name=self._name, holder=self.holder, expires_at=now + self.ttl_s
                        )
                    )
            except sa.exc.IntegrityError:
                return False
            return True

    async def release(self) -> None:
        async with self._db.session() as session:
            await session.execute(
                sa.update(ControllerLease)
                .where(ControllerLease.name == self._name, ControllerLease.holder == self.holder)
                .values(expires_at=0.0)
            )


class Leadership:
    """Whether this process leads a controller: the lease is taken, and renewed at a third of
    its TTL (a renewal is a write; not one per pass)."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.is_leader = False
        self._renew_at = 0.0

    async def check(self) -> bool:
        now = time.monotonic()
        if not self.is_leader or now >= self._renew_at:
            self.is_leader = await self.lease.acquire()
            self._renew_at = now + self.lease.ttl_s / 3
        return self.is_leader

    async def release(self) -> None:
        if self.is_leader:
            with contextlib.suppress(Exception):
                await self.lease.release()
            self.is_leader = False


async def run_on_events(
    bus: EventBus,
    wake_types: frozenset[str],
    interval_s: float,
    tick: Callable[[], Awaitable[object]],
) -> None:
    """Call ``tick`` whenever an event of ``wake_types`` is published, and at least every
    ``interval_s``; a burst of events is one wake-up (a flag, never a queue)."""
    wake = asyncio.Event()

    def wakes(event: EventDict) -> bool:
        if event.get("type") in wake_types:
            wake.set()
        return False

    async with bus.subscribe(wakes):
        while True:
            wake.clear()
            await tick()
            # asyncio.timeout, not wait_for: on 3.11 a cancel that lands as wait_for's timeout
            # fires can be swallowed, and the loop would outlive its shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await wake.wait()
