"""The hub's infrastructure, chosen from settings: the composition root of a hub process.

Redis, when configured, backs rate limits, token revocation and event fan-out so that hub
replicas share them; otherwise the database and an in-process bus do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from agenthub.core.events import EventBus, InProcessBus, RedisBus
from agenthub.core.ratelimit import RateLimiter, RedisRateLimiter, standard_windows
from agenthub.core.revocation import RedisRevocationStore, RevocationStore
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.state import SqlRateLimiter, SqlRevocationStore
from agenthub.services.identity.principals import Authenticator


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: Redis | None
    bus: EventBus
    limiter: RateLimiter
    revocations: RevocationStore
    authenticator: Authenticator
    started_at: float = field(default_factory=time.time)

    async def close(self) -> None:
        await self.bus.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Wire the infrastructure; :meth:`EventBus.start` must still be awaited."""
    db = Database(settings.resolved_database_url, pool_size=settings.database_pool_size)
    windows = standard_windows(
        settings.rate_limit_per_minute, settings.rate_limit_per_hour, settings.rate_limit_per_day
    )
    redis: Redis | None = None
    limiter: RateLimiter
    revocations: RevocationStore
    bus: EventBus
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, decode_responses=True)
        limiter = RedisRateLimiter(redis, windows, settings.redis_prefix)
        revocations = RedisRevocationStore(redis, settings.redis_prefix)
        bus = RedisBus(redis, settings.redis_prefix)
    else:
        limiter = SqlRateLimiter(db, windows)
        revocations = SqlRevocationStore(db)
        bus = InProcessBus()
    authenticator = Authenticator(db, settings.secret_key, revocations)
    return Runtime(settings, db, redis, bus, limiter, revocations, authenticator)
