"""The SQLite engine's driver: one hand-off to aiosqlite's thread per statement, with the results,
row counts, last row ids and errors SQLAlchemy expects from a DBAPI cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from agenthub.db.engine import create_engine
from agenthub.db.sqlite_driver import OneHopDBAPI

ROWS = sa.Table(
    "probe",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(8), unique=True),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("CREATE TABLE probe (id INTEGER PRIMARY KEY, name VARCHAR(8) UNIQUE)")
        )
    yield engine
    await engine.dispose()


async def test_the_engine_uses_the_one_hop_driver(engine: AsyncEngine) -> None:
    assert isinstance(engine.dialect.loaded_dbapi, OneHopDBAPI)


async def test_a_statement_is_one_call_on_the_connections_thread(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 0"))  # the transaction's BEGIN IMMEDIATE goes first
        raw = await conn.get_raw_connection()
        aiosqlite_connection: Any = raw.driver_connection
        calls: list[str] = []
        original = aiosqlite_connection._execute

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(getattr(fn, "__name__", repr(fn)))
            return await original(fn, *args, **kwargs)

        aiosqlite_connection._execute = counted
        try:
            rows = (await conn.execute(sa.text("SELECT 1 UNION ALL SELECT 2"))).all()
        finally:
            del aiosqlite_connection._execute
        assert [tuple(r) for r in rows] == [(1,), (2,)]
        assert calls == ["_execute"]  # not cursor, execute, fetchall, close


async def test_results_counts_and_ids_are_those_of_sqlite(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await conn.execute(sa.insert(ROWS).values(name="a"))
        assert first.inserted_primary_key == (1,)  # from the cursor's lastrowid
        returned = await conn.execute(
            sa.insert(ROWS).values(name="b").returning(ROWS.c.id, ROWS.c.name)
        )
        assert [tuple(r) for r in returned] == [(2, "b")]
        many = await conn.execute(sa.insert(ROWS), [{"name": "c"}, {"name": "d"}, {"name": "e"}])
        assert many.rowcount == 3  # executemany
        updated = await conn.execute(
            sa.update(ROWS).where(ROWS.c.id > 2).values(name=sa.func.upper(ROWS.c.name))
        )
        assert updated.rowcount == 3
        found = await conn.execute(sa.select(ROWS.c.name).order_by(ROWS.c.id))
        assert found.keys() == ["name"]  # the description
        assert found.scalars().all() == ["a", "b", "C", "D", "E"]
        nothing = await conn.execute(sa.select(ROWS.c.id).where(ROWS.c.id > 99))
        assert nothing.all() == []


async def test_errors_are_sqlalchemys_and_the_transaction_rolls_back(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(ROWS).values(name="x"))

    async def duplicate() -> None:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(ROWS).values(name="y"))
            await conn.execute(sa.insert(ROWS).values(name="x"))

    async def missing_table() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT * FROM missing"))

    with pytest.raises(sa.exc.IntegrityError, match="UNIQUE"):
        await duplicate()
    with pytest.raises(sa.exc.OperationalError, match="no such table"):
        await missing_table()
    async with engine.connect() as conn:
        names = (await conn.execute(sa.select(ROWS.c.name))).scalars().all()
    assert names == ["x"]  # "y" went with its transaction
