"""Token revocation: a denylist of ``jti`` values that every hub replica consults."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Protocol

from redis.asyncio import Redis

from agenthub.core.clock import utcnow


class RevocationStore(Protocol):
    async def revoke(self, jti: str, expires_at: datetime) -> bool:
        """Refuse ``jti`` from now on; it may be forgotten once ``expires_at`` has passed.

        Returns ``True`` only for the call that revoked it, so a one-time token (a refresh
        token being rotated) can be claimed exactly once, however many requests race.
        """

    async def is_revoked(self, jti: str) -> bool: ...


class RedisRevocationStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def revoke(self, jti: str, expires_at: datetime) -> bool:
        ttl = max(1, math.ceil((expires_at - utcnow()).total_seconds()))
        return bool(await self._redis.set(f"{self._prefix}revoked:{jti}", "1", ex=ttl, nx=True))

    async def is_revoked(self, jti: str) -> bool:
        return bool(await self._redis.exists(f"{self._prefix}revoked:{jti}"))
