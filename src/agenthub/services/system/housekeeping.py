"""Periodic clean-up of expired state: rate-limit windows, revoked tokens, old events.

Every replica may run it; each step is an idempotent delete, so no leader is needed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import sqlalchemy as sa

from agenthub.core.clock import utcnow
from agenthub.db.models import Event
from agenthub.db.state import SqlRateLimiter, SqlRevocationStore
from agenthub.services.runtime import Runtime

log = logging.getLogger(__name__)
INTERVAL_S = 60.0


async def sweep(runtime: Runtime) -> dict[str, int]:
    """One pass; returns how many rows each step removed."""
    removed: dict[str, int] = {}
    if isinstance(runtime.limiter, SqlRateLimiter):
        removed["rate_limit_counters"] = await runtime.limiter.prune()
    if isinstance(runtime.revocations, SqlRevocationStore):
        removed["revoked_tokens"] = await runtime.revocations.prune()
    cutoff = utcnow() - timedelta(days=runtime.settings.event_retention_days)
    async with runtime.db.session() as session:
        result = await session.execute(sa.delete(Event).where(Event.created_at < cutoff))
        removed["events"] = int(getattr(result, "rowcount", 0) or 0)
    return removed


async def run_forever(runtime: Runtime, interval_s: float = INTERVAL_S) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await sweep(runtime)
        except Exception:  # keep sweeping; a failed pass is retried on the next tick
            log.exception("housekeeping pass failed")
