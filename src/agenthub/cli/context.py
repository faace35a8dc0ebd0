"""Helpers for commands that work on the database directly, without a running hub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from agenthub.core.settings import Settings, get_settings

if TYPE_CHECKING:  # the CLI starts fast: database modules load only for commands using them
    from agenthub.db.engine import Database


def load_settings() -> Settings:
    from pydantic import ValidationError

    from agenthub.cli.output import fail

    try:
        return get_settings()
    except ValidationError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


def migrate(settings: Settings) -> None:
    from agenthub.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Database]:
    from agenthub.db.engine import Database

    db = Database(settings.resolved_database_url)
    try:
        yield db
    finally:
        await db.dispose()
