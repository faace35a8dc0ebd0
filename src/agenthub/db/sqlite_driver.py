"""SQLAlchemy's aiosqlite driver with one hand-off to the connection's thread per statement.

aiosqlite runs every sqlite3 call on its own thread and hands each one over through a queue, and
each answer back through the event loop's self-pipe. SQLAlchemy's cursor adapter makes four such
calls per statement (open a cursor, execute, fetch, close): about 180 us of CPU for a statement
SQLite itself answers in a few. This cursor makes them one call on the thread (about 45 us),
which is most of what a request on SQLite costs beyond its own work.

It relies on two things outside these libraries' documented APIs, both pinned by ``uv.lock`` and
exercised by every SQLite test: aiosqlite's ``Connection._execute(fn, *args)`` (runs ``fn`` on
the connection's thread) and ``Connection._conn`` (the sqlite3 connection), and the shape of
SQLAlchemy's ``AsyncAdapt_dbapi_cursor`` (``_execute_async`` / ``_executemany_async``).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

_Outcome = tuple[Any, list[Any], int, int | None]  # description, rows, rowcount, lastrowid


def _execute(conn: sqlite3.Connection, operation: str, parameters: Any) -> _Outcome:
    cursor = conn.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        # After the fetch: for INSERT ... RETURNING, sqlite3 counts rows as they are read.
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _executemany(conn: sqlite3.Connection, operation: str, parameters: Sequence[Any]) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, parameters)
        return None, [], cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    """Executes, fetches every row and closes in one call on the connection's thread; the
    description, row count and last row id are kept from that call."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        super().__init__(adapt_connection)
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    def _make_new_cursor(self, connection: Any) -> Any:
        return None  # no aiosqlite cursor: each statement opens and closes its own

    def _aenter_cursor(self, cursor: Any) -> Any:
        return None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing open: the rows are already here

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._on_thread(_execute, operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._on_thread(_executemany, operation, seq_of_parameters)

    async def _on_thread(self, fn: Any, operation: Any, parameters: Any) -> None:
        connection: Any = self._connection  # an aiosqlite.Connection
        async with self._adapt_connection._execute_mutex:
            outcome: _Outcome = await connection._execute(
                fn, connection._conn, operation, parameters
            )
        self._keep(outcome)

    def _keep(self, outcome: _Outcome) -> None:
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _Cursor


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """Pass an instance as ``create_async_engine(..., module=...)`` for a sqlite+aiosqlite URL."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*arg, **kw)
        return _Connection(self, adapted._connection)
