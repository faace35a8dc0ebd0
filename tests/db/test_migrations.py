"""Migrations are the schema: one head, and a full downgrade/upgrade round trip."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from agenthub.db import migrate
from agenthub.db.base import Base
from agenthub.db.engine import Database

pytestmark = pytest.mark.db


def test_single_head() -> None:
    assert len(migrate.heads()) == 1


async def _tables(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        return {n for n in names if not n.startswith(migrate.HAND_MADE_TABLES)} - {
            "alembic_version"
        }
    finally:
        await db.dispose()


def test_round_trip_matches_the_models(backend_factory) -> None:  # type: ignore[no-untyped-def]
    url = backend_factory().database_url
    migrate.upgrade(url)
    assert asyncio.run(_tables(url)) == set(Base.metadata.tables)
    migrate.downgrade(url, "base")
    assert asyncio.run(_tables(url)) == set()
    migrate.upgrade(url)
    assert asyncio.run(_tables(url)) == set(Base.metadata.tables)


async def _sql(url: str, *statements: str) -> list[tuple[int, int, int]]:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            rows: list[tuple[int, int, int]] = []
            for statement in statements:
                result = await conn.execute(sa.text(statement))
                if result.returns_rows:
                    rows = [(int(a), int(b), int(c)) for a, b, c in result]
            return rows
    finally:
        await db.dispose()


def test_inbox_counts_are_filled_from_existing_messages(backend_factory) -> None:  # type: ignore[no-untyped-def]
    """Upgrading a hub that already has messages counts its inboxes as they are."""
    url = backend_factory().database_url
    migrate.upgrade(url, "0008")
    ai = (
        "INSERT INTO ai_identities (id, principal_id, name, secret_hash, role, access, is_active, "
        "created_at, updated_at) VALUES ({0}, '{1}', 'ai{0}', 'x', 'member', 'collab', {2}, "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    message = (
        "INSERT INTO collab_messages (id, sender_id, message_type, content, metadata, created_at, "
        "deleted_at) VALUES ({0}, 1, 'message', 'm', '{{}}', CURRENT_TIMESTAMP, {1})"
    )
    delivery = (
        "INSERT INTO collab_deliveries (message_id, recipient_id, read_at) VALUES ({0}, {1}, {2})"
    )
    true, now = ("true", "CURRENT_TIMESTAMP")
    asyncio.run(
        _sql(
            url,
            ai.format(1, "00000000-0000-0000-0000-000000000001", true),
            ai.format(2, "00000000-0000-0000-0000-000000000002", true),
            message.format(1, "NULL"),
            message.format(2, "NULL"),
            message.format(3, now),  # deleted: not counted
            delivery.format(1, 2, "NULL"),
            delivery.format(2, 2, now),
            delivery.format(3, 2, "NULL"),
        )
    )
    migrate.upgrade(url)
    counts = "SELECT recipient_id, total, unread FROM collab_inbox_counts ORDER BY recipient_id"
    assert asyncio.run(_sql(url, counts)) == [(2, 2, 1)]
    # From here on the triggers keep them: a new unread delivery, then that one read.
    assert asyncio.run(
        _sql(url, message.format(4, "NULL"), delivery.format(4, 2, "NULL"), counts)
    ) == [(2, 3, 2)]
    read = f"UPDATE collab_deliveries SET read_at = {now} WHERE message_id = 4"
    assert asyncio.run(_sql(url, read, counts)) == [(2, 3, 1)]
    deleted = f"UPDATE collab_messages SET deleted_at = {now} WHERE id = 1"
    assert asyncio.run(_sql(url, deleted, counts)) == [(2, 2, 0)]
