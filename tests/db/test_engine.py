"""Connections: PostgreSQL ones that break (an idle one is checked and replaced before use; one
that breaks in steady use fails that request with a 503 and the next request gets a fresh one),
and :meth:`Database.read`, the session-less read of credential lookups."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from agenthub.api.app import create_app
from agenthub.core.settings import Settings
from agenthub.db import engine as engine_module
from agenthub.db.engine import Database
from agenthub.db.migrate import upgrade
from tests.conftest import BACKEND, POSTGRES_URL, _postgres_admin, new_database

pytestmark = pytest.mark.db
postgres_only = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL connection handling")


async def _backend_pid(engine: sa.ext.asyncio.AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT pg_backend_pid()")) or 0)


def _terminate(pid: int) -> None:
    _postgres_admin(f"SELECT pg_terminate_backend({pid})")


async def _gone(column: str, value: object) -> None:
    """Wait until the server has ended the terminated backends (``pid`` or ``datname``)."""
    url = sa.engine.make_url(POSTGRES_URL)
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username)
    try:
        for _ in range(200):
            left = await conn.fetchval(
                f"SELECT count(*) FROM pg_stat_activity WHERE {column} = $1", value
            )
            if left == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("terminated backends did not end")
    finally:
        await conn.close()


@postgres_only
async def test_idle_connection_killed_by_the_server_is_replaced_before_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_PING_S", 0.05)
    engine = engine_module.create_engine(POSTGRES_URL, pool_size=1)
    try:
        first = await _backend_pid(engine)
        _terminate(first)
        await _gone("pid", first)
        await asyncio.sleep(0.1)  # idle longer than IDLE_PING_S: checked at checkout
        second = await _backend_pid(engine)
        assert second != first
    finally:
        await engine.dispose()


@postgres_only
async def test_connection_in_steady_use_is_not_pinged_and_recovers_after_one_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_PING_S", 3600.0)
    engine = engine_module.create_engine(POSTGRES_URL, pool_size=1)
    try:
        first = await _backend_pid(engine)
        assert await _backend_pid(engine) == first  # reused, no reconnect
        _terminate(first)
        await _gone("pid", first)
        with pytest.raises(DBAPIError) as caught:
            await _backend_pid(engine)
        assert caught.value.connection_invalidated
        assert await _backend_pid(engine) not in (0, first)
    finally:
        await engine.dispose()


@postgres_only
async def test_lost_connection_is_a_503_in_the_surface_format_then_requests_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_PING_S", 3600.0)
    url = new_database(tmp_path)
    await asyncio.to_thread(upgrade, url)
    database = sa.engine.make_url(url).database
    # No rate limiter, and the app without its lifespan (no controllers): the request is the
    # first to use a cut connection.
    settings = Settings(data_dir=tmp_path, database_url=url, rate_limit_enabled=False)
    app = create_app(settings)
    runtime = app.state.runtime
    await runtime.bus.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
        name = f"engine-{uuid.uuid4().hex[:8]}"
        made = await c.post("/api/v1/ai/register", json={"ai_name": name})
        assert made.status_code == 201, made.text
        # Every connection of the hub's pool is cut while it is in use (not idle long enough
        # to be checked).
        _postgres_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        await _gone("datname", database)
        statuses = []
        for i in range(3):
            answer = await c.post("/api/v1/ai/register", json={"ai_name": f"{name}-{i}"})
            statuses.append(answer.status_code)
            if answer.status_code == 503:
                body = answer.json()
                assert body["code"] == "SERVICE_UNAVAILABLE"  # the Collab error format
                assert "database connection was lost" in body["error"]
        assert statuses == [503, 201, 201]
    await runtime.close()


async def test_read_sees_what_a_transaction_just_committed(tmp_path: Path) -> None:
    url = new_database(tmp_path)
    db = Database(url)
    probe = sa.table("read_probe", sa.column("k", sa.String), sa.column("v", sa.Integer))
    lookup = sa.select(probe.c.v).where(probe.c.k == sa.bindparam("k", type_=sa.String))
    try:
        async with db.session() as session:
            await session.execute(sa.text("CREATE TABLE read_probe (k VARCHAR(8), v INTEGER)"))
        assert list(await db.read(lookup, {"k": "a"})) == []
        for value in range(3):
            async with db.session() as session:
                await session.execute(sa.insert(probe).values(k=f"k{value}", v=value))
            # Read right after each commit: a reader never answers from before it.
            assert [tuple(r) for r in await db.read(lookup, {"k": f"k{value}"})] == [(value,)]
    finally:
        await db.dispose()


async def test_read_before_the_sqlite_file_exists_goes_through_the_pool(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'later.db'}")
    try:
        # The read-only connection cannot open a missing file; the pool's path creates it.
        assert [tuple(r) for r in await db.read(sa.select(sa.literal(7)))] == [(7,)]
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            await db.read(sa.text("SELECT x FROM missing"))
    finally:
        await db.dispose()


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's read-only reader")
async def test_sqlite_read_bypasses_a_busy_writer_whatever_the_path(tmp_path: Path) -> None:
    """The read-only reader answers while a transaction holds the pool's only connection and the
    write lock (the pool's path would have to wait), sees only what is committed, and opens
    files whose path needs quoting in a URI."""
    folder = tmp_path / "odd ?#% dir"
    folder.mkdir()
    db = Database(f"sqlite+aiosqlite:///{folder / 'hub.db'}")
    probe = sa.table("probe", sa.column("v", sa.Integer))
    try:
        async with db.session() as session:
            await session.execute(sa.text("CREATE TABLE probe (v INTEGER)"))
            await session.execute(sa.insert(probe).values(v=1))
        async with db.session() as writing:
            await writing.execute(sa.insert(probe).values(v=2))  # not committed yet
            rows = await asyncio.wait_for(db.read(sa.select(probe.c.v)), timeout=5)
            assert [tuple(r) for r in rows] == [(1,)]
        assert sorted(tuple(r) for r in await db.read(sa.select(probe.c.v))) == [(1,), (2,)]
    finally:
        await db.dispose()
