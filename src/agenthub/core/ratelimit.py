"""Exact fixed-window rate limiting over three windows (minute, hour, day).

A request is admitted only if every window has room; an admitted request counts in all three,
a refused one in none. With a limit of 100 per minute the 101st request of a minute is refused,
whatever the concurrency and however many hub replicas share the backend.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

MINUTE, HOUR, DAY = 60, 3600, 86400


@dataclass(frozen=True)
class Window:
    seconds: int
    limit: int

    def start(self, now: float) -> int:
        return int(now // self.seconds) * self.seconds

    def reset_at(self, now: float) -> int:
        return self.start(now) + self.seconds


@dataclass(frozen=True)
class RateLimitDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


def decide(
    windows: list[Window], counts: list[int], allowed: bool, now: float
) -> RateLimitDecision:
    """Fold per-window counts into one decision: the headers describe the tightest window."""
    if allowed:
        tightest = min(range(len(windows)), key=lambda i: windows[i].limit - counts[i])
    else:
        tightest = max(
            (i for i in range(len(windows)) if counts[i] >= windows[i].limit),
            key=lambda i: windows[i].reset_at(now),
        )
    window = windows[tightest]
    reset_at = window.reset_at(now)
    return RateLimitDecision(
        allowed=allowed,
        limit=window.limit,
        remaining=max(0, window.limit - counts[tightest]),
        reset_at=reset_at,
        retry_after=0 if allowed else max(1, math.ceil(reset_at - now)),
    )


class RateLimiter(Protocol):
    async def hit(self, subject: str) -> RateLimitDecision:
        """Count one request of ``subject`` if every window has room."""

    async def peek(self, subject: str) -> RateLimitDecision:
        """The current state of ``subject`` without counting a request."""


def standard_windows(per_minute: int, per_hour: int, per_day: int) -> list[Window]:
    return [Window(MINUTE, per_minute), Window(HOUR, per_hour), Window(DAY, per_day)]


# Checks every window first and increments only when all have room, atomically in Redis.
_HIT_SCRIPT = """
local n = #KEYS
local counts = {}
for i = 1, n do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
if ARGV[1] == '1' then
  for i = 1, n do
    if counts[i] >= tonumber(ARGV[1 + i]) then
      return {0, unpack(counts)}
    end
  end
  for i = 1, n do
    counts[i] = redis.call('INCR', KEYS[i])
    if counts[i] == 1 then
      redis.call('EXPIRE', KEYS[i], tonumber(ARGV[1 + n + i]))
    end
  end
end
return {1, unpack(counts)}
"""


class RedisRateLimiter:
    """Counters in Redis, shared by every hub replica; one round trip per request."""

    def __init__(self, redis: Redis, windows: list[Window], prefix: str) -> None:
        self._redis = redis
        self._windows = windows
        self._prefix = prefix
        self._script = redis.register_script(_HIT_SCRIPT)

    async def _run(self, subject: str, count: bool) -> RateLimitDecision:
        now = time.time()
        # The hash tag keeps the three keys of a subject in one Redis Cluster slot.
        keys = [f"{self._prefix}rl:{{{subject}}}:{w.seconds}:{w.start(now)}" for w in self._windows]
        args = [
            "1" if count else "0",
            *(str(w.limit) for w in self._windows),
            *(str(w.seconds + 60) for w in self._windows),
        ]
        result = await self._script(keys=keys, args=args)
        counts = [int(c) for c in result[1:]]
        allowed = (
            bool(int(result[0]))
            if count
            else all(c < w.limit for c, w in zip(counts, self._windows, strict=True))
        )
        return decide(self._windows, counts, allowed, now)

    async def hit(self, subject: str) -> RateLimitDecision:
        return await self._run(subject, count=True)

    async def peek(self, subject: str) -> RateLimitDecision:
        return await self._run(subject, count=False)
