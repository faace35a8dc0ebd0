"""Alembic environment: runs migrations over agenthub's own async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from agenthub.db import models  # noqa: F401 - registers every table on the metadata
from agenthub.db.base import Base
from agenthub.db.engine import create_engine
from agenthub.db.migrate import HAND_MADE_TABLES

target_metadata = Base.metadata

# Full-text search structures that migrations create by hand (0008): SQLite's FTS5 table (and
# the shadow tables FTS5 makes) and PostgreSQL's generated tsvector column and its index.
HAND_MADE = HAND_MADE_TABLES


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, _: object) -> bool:
    if type_ == "table" and name and name.startswith(HAND_MADE):
        return False
    if type_ == "column" and name == "search" and getattr(obj, "table", None) is not None:
        return str(obj.table.name) != "collab_messages"  # type: ignore[attr-defined]
    return not (type_ == "index" and name == "ix_collab_messages_search")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("agenthub migrations run online only: use `agenthub db upgrade`.")
asyncio.run(_run_async())
