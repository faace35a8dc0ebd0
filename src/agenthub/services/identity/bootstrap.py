"""First start: an empty hub gets one admin API key so that somebody can log in."""

from __future__ import annotations

from agenthub.core.auth import Role
from agenthub.db.engine import Database
from agenthub.services.identity.api_keys import count_api_keys, create_api_key
from agenthub.services.identity.users import count_users


async def ensure_bootstrap_key(db: Database) -> str | None:
    """Create and return an admin key if the hub has no users and no keys; else ``None``."""
    async with db.session() as session:
        if await count_users(session) or await count_api_keys(session):
            return None
        _record, key = await create_api_key(session, None, name="bootstrap", role=Role.ADMIN)
        return key
