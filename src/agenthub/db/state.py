"""Database-backed time-based state, used when no Redis is configured.

Both stores are correct across hub replicas that share the database: counters are bumped with a
single atomic upsert and the denylist is a table.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from agenthub.core.clock import utcnow
from agenthub.core.ratelimit import RateLimitDecision, Window, decide
from agenthub.db.base import table_of
from agenthub.db.engine import Database
from agenthub.db.models import RateLimitCounter, RevokedToken
from agenthub.db.types import UTCDateTime


def _hit_statement(windows: int) -> sa.TextClause:
    """One upsert for every window, compiled once: the hot path of every request."""
    values = ", ".join(f"(:subject, :w{i}, :start{i}, 1, :expires{i})" for i in range(windows))
    # Only the window count is interpolated; every value is a bound parameter.
    return sa.text(
        "INSERT INTO rate_limit_counters (subject, window_s, window_start, count, expires_at) "  # noqa: S608
        f"VALUES {values} "
        "ON CONFLICT (subject, window_s, window_start) "
        "DO UPDATE SET count = rate_limit_counters.count + 1 "
        "RETURNING window_s, count"
    ).bindparams(*(sa.bindparam(f"expires{i}", type_=UTCDateTime()) for i in range(windows)))


class SqlRateLimiter:
    def __init__(self, db: Database, windows: list[Window]) -> None:
        self._db = db
        self._windows = windows
        self._hit = _hit_statement(len(windows))

    async def hit(self, subject: str) -> RateLimitDecision:
        now = time.time()
        params: dict[str, object] = {"subject": subject}
        for i, w in enumerate(self._windows):
            params[f"w{i}"] = w.seconds
            params[f"start{i}"] = w.start(now)
            params[f"expires{i}"] = datetime.fromtimestamp(w.reset_at(now), UTC)
        async with self._db.engine.connect() as conn:
            transaction = await conn.begin()
            by_window = {int(s): int(n) for s, n in await conn.execute(self._hit, params)}
            counts = [int(by_window[w.seconds]) for w in self._windows]
            if any(c > w.limit for c, w in zip(counts, self._windows, strict=True)):
                # Rolling back un-counts the refused request in every window.
                await transaction.rollback()
                return decide(self._windows, [c - 1 for c in counts], False, now)
            await transaction.commit()
        return decide(self._windows, counts, True, now)

    async def peek(self, subject: str) -> RateLimitDecision:
        now = time.time()
        async with self._db.session() as session:
            rows = await session.execute(
                sa.select(RateLimitCounter.window_s, RateLimitCounter.count).where(
                    RateLimitCounter.subject == subject,
                    sa.tuple_(RateLimitCounter.window_s, RateLimitCounter.window_start).in_(
                        [(w.seconds, w.start(now)) for w in self._windows]
                    ),
                )
            )
            by_window = {int(s): int(n) for s, n in rows}
        counts = [int(by_window.get(w.seconds, 0)) for w in self._windows]
        allowed = all(c < w.limit for c, w in zip(counts, self._windows, strict=True))
        return decide(self._windows, counts, allowed, now)

    async def prune(self) -> int:
        async with self._db.session() as session:
            result = await session.execute(
                sa.delete(RateLimitCounter).where(RateLimitCounter.expires_at < utcnow())
            )
        return int(getattr(result, "rowcount", 0) or 0)


_IS_REVOKED = sa.select(sa.literal(1)).where(
    table_of(RevokedToken).c.jti == sa.bindparam("jti", type_=sa.String)
)


class SqlRevocationStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    async def revoke(self, jti: str, expires_at: datetime) -> bool:
        insert = self._insert(RevokedToken).values(jti=jti, expires_at=expires_at)
        claim = insert.on_conflict_do_nothing(index_elements=["jti"]).returning(RevokedToken.jti)
        async with self._db.session() as session:
            inserted = (await session.execute(claim)).first()
        return inserted is not None

    async def is_revoked(self, jti: str) -> bool:
        return bool(await self._db.read(_IS_REVOKED, {"jti": jti}))

    async def prune(self) -> int:
        async with self._db.session() as session:
            result = await session.execute(
                sa.delete(RevokedToken).where(RevokedToken.expires_at < utcnow())
            )
        return int(getattr(result, "rowcount", 0) or 0)
