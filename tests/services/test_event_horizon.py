"""A replay of the event log never skips an event: on PostgreSQL it stops before an id that a
transaction still open may commit, and reads on once that transaction has ended."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from agenthub.core.auth import Principal, PrincipalKind, Role
from agenthub.db.engine import Database
from agenthub.db.migrate import upgrade
from agenthub.services import events
from agenthub.services.events import horizon as horizon_module
from tests.support import Backend

pytestmark = pytest.mark.db
ADMIN = Principal(PrincipalKind.API_KEY, uuid.uuid4(), "admin", Role.ADMIN)
INSERT = sa.text(
    "INSERT INTO events (type, data, created_at) VALUES (:type, '{}', CURRENT_TIMESTAMP) "
    "RETURNING id"
)


@pytest.fixture
async def db(backend_factory) -> AsyncIterator[Database]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    await asyncio.to_thread(upgrade, backend.database_url)
    database = Database(backend.database_url)
    yield database
    await database.dispose()


def postgres_only(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite commits one writer at a time, in id order")


async def committed(db: Database, type: str) -> int:
    async with db.engine.begin() as conn:
        return int((await conn.execute(INSERT, {"type": type})).scalar_one())


async def replay(db: Database, after_id: int | None = None) -> events.EventPage:
    async with db.sessionmaker() as session:
        return await events.list_events(session, ADMIN, after_id=after_id, limit=1000)


def types(page: events.EventPage) -> list[str]:
    return [e["type"] for e in page.events]


async def open_with_event(conn: AsyncConnection, type: str) -> int:
    await conn.begin()
    return int((await conn.execute(INSERT, {"type": type})).scalar_one())


async def test_replay_waits_for_an_earlier_id_still_in_flight(db: Database) -> None:
    postgres_only(db)
    first = await committed(db, "t.first")
    async with db.engine.connect() as slow:
        in_flight = await open_with_event(slow, "t.slow")
        later = await committed(db, "t.later")
        assert first < in_flight < later

        # "t.later" is committed, but returning it now would let a client resume past the id
        # "t.slow" will commit with.
        page = await replay(db)
        assert types(page) == ["t.first"]
        assert page.held_back
        page = await replay(db, after_id=first)
        assert (page.events, page.held_back) == ([], True)

        await slow.commit()
    page = await replay(db, after_id=first)
    assert [e["id"] for e in page.events] == [in_flight, later]
    assert types(page) == ["t.slow", "t.later"]
    assert not page.held_back


async def test_a_gap_above_until_does_not_hold_the_replay_back(db: Database) -> None:
    """A stream replays up to the newest event at the time it subscribed; later ids arrive
    live, so an id in flight above that point must not keep it replaying."""
    postgres_only(db)
    first = await committed(db, "t.first")
    async with db.engine.connect() as slow:
        await open_with_event(slow, "t.slow")
        later = await committed(db, "t.later")
        async with db.sessionmaker() as session:
            assert await events.latest_id(session) == later
            page = await events.list_events(session, ADMIN, after_id=first - 1, until=first)
            assert (types(page), page.held_back) == (["t.first"], False)
            page = await events.list_events(session, ADMIN, after_id=first - 1, until=later)
            assert (types(page), page.held_back) == (["t.first"], True)
        await slow.rollback()


async def test_a_rolled_back_id_is_skipped_once_its_transaction_ended(db: Database) -> None:
    postgres_only(db)
    async with db.engine.connect() as doomed:
        gone = await open_with_event(doomed, "t.gone")
        after = await committed(db, "t.after")
        assert types(await replay(db, after_id=gone - 1)) == []
        await doomed.rollback()
    page = await replay(db, after_id=gone - 1)
    assert [e["id"] for e in page.events] == [after]
    assert not page.held_back


async def test_transactions_begun_after_a_gap_do_not_hold_it(db: Database) -> None:
    postgres_only(db)
    async with db.engine.connect() as doomed:
        gone = await open_with_event(doomed, "t.gone")
        after = await committed(db, "t.after")
        await doomed.rollback()
    await asyncio.sleep(horizon_module.MARGIN.total_seconds() + 0.1)
    # Open transactions, with and without an event of their own, that began after the gap:
    # none can hold an id below "t.after".
    async with db.engine.connect() as reader, db.engine.connect() as writer:
        await reader.begin()
        await reader.execute(sa.text("SELECT 1"))
        newer = await open_with_event(writer, "t.newer")
        page = await replay(db, after_id=gone - 1)
        assert [e["id"] for e in page.events] == [after]
        assert not page.held_back
        await writer.rollback()
    assert newer > after


async def test_an_older_transaction_that_wrote_nothing_does_not_hold_a_gap(db: Database) -> None:
    """A session idle in a read-only transaction (a report, a forgotten psql) holds no id."""
    postgres_only(db)
    async with db.engine.connect() as reader:
        await reader.begin()
        await reader.execute(sa.text("SELECT 1"))
        async with db.engine.connect() as doomed:
            gone = await open_with_event(doomed, "t.gone")
            after = await committed(db, "t.after")
            await doomed.rollback()
        page = await replay(db, after_id=gone - 1)
        assert [e["id"] for e in page.events] == [after]
        assert not page.held_back
        await reader.rollback()


async def test_a_transaction_open_too_long_is_no_longer_waited_for(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    postgres_only(db)
    monkeypatch.setattr(horizon_module, "MAX_WAIT", timedelta(seconds=0.5))
    async with db.engine.connect() as stuck:
        await open_with_event(stuck, "t.stuck")
        later = await committed(db, "t.later")
        assert types(await replay(db)) == []
        await asyncio.sleep(0.5 + horizon_module.MARGIN.total_seconds() + 0.2)
        with caplog.at_level(logging.WARNING, logger=horizon_module.__name__):
            page = await replay(db)
        assert [e["id"] for e in page.events] == [later]
        assert "no longer wait" in caplog.text
        await stuck.rollback()


async def test_long_replays_page_through_a_held_gap(db: Database) -> None:
    """Pages of a long log stop at the gap, and the page after it starts at the gap."""
    postgres_only(db)
    before = [await committed(db, f"t.b{i}") for i in range(5)]
    async with db.engine.connect() as slow:
        in_flight = await open_with_event(slow, "t.slow")
        after = [await committed(db, f"t.a{i}") for i in range(5)]
        async with db.sessionmaker() as session:
            page = await events.list_events(session, ADMIN, after_id=before[0] - 1, limit=3)
        assert [e["id"] for e in page.events] == before[:3]
        page = await replay(db, after_id=before[2])
        assert [e["id"] for e in page.events] == before[3:]
        await slow.commit()
    page = await replay(db, after_id=before[-1])
    assert [e["id"] for e in page.events] == [in_flight, *after]


async def test_sqlite_replays_everything_committed(db: Database) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the SQLite side of the rule")
    ids = [await committed(db, f"t.{i}") for i in range(3)]
    async with db.engine.begin() as conn:  # a hole in the ids, as a retention sweep leaves
        await conn.execute(sa.text("DELETE FROM events WHERE id = :id"), {"id": ids[1]})
    page = await replay(db)
    assert [e["id"] for e in page.events] == [ids[0], ids[2]]
    assert not page.held_back
