"""Engine and session factory for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import QueuePool

from agenthub.db.sqlite_driver import OneHopDBAPI


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine with the connection settings agenthub relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # SQLite has one writer at a time. Within a process, one connection makes transactions
        # queue in the pool (cheap, fair) rather than spin in SQLite's busy handler, which sleeps
        # in growing steps and took p99 latency past a second under load.
        options: dict[str, Any] = {}
        if parsed.get_driver_name() == "aiosqlite":
            # One hand-off to aiosqlite's thread per statement instead of four (sqlite_driver).
            options["module"] = OneHopDBAPI()
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            **options,
        )
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=POOL_RECYCLE_S
    )
    _ping_when_idle(engine, IDLE_PING_S)
    return engine


# A pooled connection idle this long is checked before use; one in steady use is not.
IDLE_PING_S = 10.0
# Connections are replaced after this long, before server-side or proxy timeouts end them.
POOL_RECYCLE_S = 1800


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Check a pooled connection with a ping only when it has sat idle ``idle_s`` or more.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: with asyncpg that is three round
    trips (BEGIN, a query, ROLLBACK), which cost as much as the work of a small request. A
    connection that was used a moment ago is as good as a ping would show; one that sat idle
    may have been closed by a database restart or a proxy, and is checked (and replaced, by
    raising :class:`DisconnectionError`, which makes the pool retry with a fresh connection).
    A connection that breaks while in steady use fails that request (503, see api/app.py) and
    SQLAlchemy invalidates the pool, so the next checkout opens new connections."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("checked_in_at")
        if last is None or time.monotonic() - last < idle_s:
            return  # new (just connected) or used moments ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as err:
            # A driver error that is not a disconnect is a real error; anything else (an
            # OSError from a dead socket) means the connection is unusable.
            if isinstance(err, dialect.loaded_dbapi.Error) and not dialect.is_disconnect(
                cast(Any, err), dbapi_connection, None
            ):
                raise
            raise DisconnectionError(str(err)) from err
        if not alive:
            raise DisconnectionError("the database connection did not answer a ping")


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that "begin" below decides how to begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets readers proceed while one writer commits: hub replicas and the CLI share the
        # file. Foreign keys are off by default in SQLite. The busy timeout makes a writer wait
        # for the lock instead of failing at once with "database is locked".
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
        # another connection wrote in between (the busy timeout does not apply to that case).
        # Taking the write lock at BEGIN makes every transaction wait its turn instead. The
        # price: one task must not hold a transaction while it opens another (it would wait
        # for itself), so services finish or avoid the request's session before using a
        # store that opens its own.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and session factory of one hub process."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._reader = _point_reader(url)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def read(
        self, statement: sa.Executable, params: dict[str, Any] | None = None
    ) -> Sequence[sa.Row[Any]]:
        """The rows of one short read (a lookup by key, such as every request's credential
        check), outside any transaction and without the cost of a session.

        PostgreSQL: one round trip on an autocommit connection (no BEGIN, no ROLLBACK).
        SQLite: run on the calling thread through a read-only connection: an indexed lookup
        takes microseconds there, far less than handing the query to the driver's thread and
        back. WAL readers do not wait for writers; should the file be busy all the same (a WAL
        recovery), the read goes through the pool instead of blocking the event loop.
        """
        if self._reader is not None:
            try:
                with self._reader.connect() as conn:
                    return conn.execute(statement, params).all()
            except sa.exc.OperationalError:
                pass  # busy, or the file is not there yet: the pool's path says what is wrong
        async with self._autocommit.connect() as conn:
            return (await conn.execute(statement, params)).all()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits when the block exits without error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        if self._reader is not None:
            self._reader.dispose()
        await self.engine.dispose()


def _point_reader(url: str) -> sa.Engine | None:
    """A synchronous, read-only engine on a SQLite file (see :meth:`Database.read`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    # The file's URI built here (every character of the path quoted), not left to URL parsing.
    uri = "file:" + quote(str(Path(parsed.database).resolve())) + "?mode=ro"

    def connect() -> sqlite3.Connection:
        # Autocommit (a SELECT opens no transaction); never wait for a lock on the event loop.
        conn = sqlite3.connect(
            uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA query_only=ON")
        return conn

    return sa.create_engine(
        "sqlite://", creator=connect, poolclass=QueuePool, pool_size=1, max_overflow=4
    )
