"""How far a replay of the event log may read now without ever skipping an event.

On PostgreSQL an event's id is drawn when its row is inserted, but the row becomes visible when
its transaction commits, and transactions commit in any order: a reader can see id 11 while 10
is still in flight. A client that then resumes "after 11" (SSE ``Last-Event-ID``, the
``after_id`` of ``GET /api/events``) would never see 10. SQLite commits one writer at a time, in
id order, so it needs none of this.

A missing id can only be held by a transaction that began before the row after it was written
(that transaction drew the smaller id first). So a replay stops before the first missing id
among the rows written since the oldest transaction still open began, and reads on once that
transaction has ended, when the id has either appeared or is gone for good (a rollback). Each
row's ``written_at`` is the database's ``clock_timestamp()``, taken as the row is inserted, and
``pg_stat_activity`` gives the other sessions' transaction start times on the same clock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.db.base import table_of
from agenthub.db.models import Event

log = logging.getLogger(__name__)

# Rows written this long before the oldest open transaction began still count as written
# during it: the row's clock reading and its id are taken a moment apart.
MARGIN = timedelta(seconds=0.25)
# A transaction open longer than this is not waited for, so that a stuck session (idle in a
# transaction) cannot stall every replay; an id it holds would then be missed, and it is logged.
MAX_WAIT = timedelta(seconds=60)
_CHUNK = 500

_E = table_of(Event).c
# Transactions that may hold an event id: those of client sessions (not autovacuum, which runs
# long) that have written something (an xid) or are running a statement (an INSERT draws the id
# before its row gets an xid). A session idle in a read-only transaction holds none.
_OLDEST_OPEN = sa.text(
    "SELECT min(xact_start), clock_timestamp() FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' AND xact_start IS NOT NULL "
    "AND (backend_xid IS NOT NULL OR state = 'active')"
)
_NEWEST_FIRST = (
    sa.select(_E.id, _E.written_at)
    .where(_E.id > sa.bindparam("after", type_=sa.BigInteger))
    .where(_E.id < sa.bindparam("before", type_=sa.BigInteger))
    .order_by(_E.id.desc())
    .limit(_CHUNK)
)
_NO_BOUND = 2**63 - 1


async def replay_horizon(session: AsyncSession, after_id: int | None) -> int | None:
    """The greatest event id a replay after ``after_id`` may return now; ``None``: no limit."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    oldest, now = (await session.execute(_OLDEST_OPEN)).one()
    if oldest is None:
        return None
    oldest = _bounded(oldest, now)
    since = oldest - MARGIN
    base = after_id or 0
    recent: list[int] = []  # ids written since `since`, newest first
    before = _NO_BOUND
    while True:
        rows = (await session.execute(_NEWEST_FIRST, {"after": base, "before": before})).all()
        older = next((i for i, r in enumerate(rows) if r[1] is None or r[1] < since), None)
        if older is not None:
            # Every id an open transaction holds is above this row's: it drew its id before
            # the oldest of them began.
            recent += [r[0] for r in rows[:older]]
            base = rows[older][0]
            break
        recent += [r[0] for r in rows]
        if len(rows) < _CHUNK:
            break
        before = rows[-1][0]
    expected = base + 1
    for event_id in reversed(recent):
        if event_id != expected:
            return expected - 1
        expected = event_id + 1
    return None


def _bounded(oldest: datetime, now: datetime) -> datetime:
    if now - oldest <= MAX_WAIT:
        return oldest
    log.warning(
        "a database transaction has been open since %s; event replays no longer wait for it",
        oldest.isoformat(),
    )
    return now - MAX_WAIT
