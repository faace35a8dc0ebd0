"""Worker pools: `default` always exists; more come from settings or are created by an admin."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.errors import Conflict, ValidationFailed
from agenthub.core.settings import Settings
from agenthub.db.models import Pool
from agenthub.services import events
from agenthub.services.nodes.resources import check_pool_name

DEFAULT_POOL = "default"


@dataclass(frozen=True)
class PoolInfo:
    name: str
    source: str  # builtin | settings | created
    description: str | None = None


def configured_pools(settings: Settings) -> list[str]:
    return [DEFAULT_POOL, *(p for p in settings.pools if p != DEFAULT_POOL)]


async def list_pools(session: AsyncSession, settings: Settings) -> list[PoolInfo]:
    """Every pool a machine may register into, by name."""
    found = {
        name: PoolInfo(name, "builtin" if name == DEFAULT_POOL else "settings")
        for name in configured_pools(settings)
    }
    for pool in await session.scalars(sa.select(Pool).order_by(Pool.name)):
        found.setdefault(pool.name, PoolInfo(pool.name, "created", pool.description))
    return sorted(found.values(), key=lambda p: (p.name != DEFAULT_POOL, p.name))


async def pool_exists(session: AsyncSession, settings: Settings, name: str) -> bool:
    if name in configured_pools(settings):
        return True
    return (await session.scalar(sa.select(Pool.id).where(Pool.name == name))) is not None


async def create_pool(
    session: AsyncSession,
    settings: Settings,
    actor: Principal | None,
    name: str,
    description: str | None = None,
) -> PoolInfo:
    """Create a pool; ``actor`` is ``None`` only for local administration (the CLI)."""
    if actor is not None:
        actor.require_admin()
    name = check_pool_name(name.strip())
    if description is not None and len(description) > 255:
        raise ValidationFailed("description must be at most 255 characters")
    if await pool_exists(session, settings, name):
        raise Conflict(f"Pool {name!r} already exists.", code="pool_exists")
    session.add(Pool(name=name, description=description))
    await session.flush()
    await events.record(session, "pool.created", {"name": name}, actor=actor)
    return PoolInfo(name, "created", description)
