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
