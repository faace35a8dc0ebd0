"""API keys: random bearer secrets shown once and stored hashed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal, PrincipalKind, Role
from agenthub.core.clock import utcnow
from agenthub.core.errors import NotFound, ValidationFailed
from agenthub.core.pagination import Page, Sort
from agenthub.core.security import hash_api_key, new_api_key
from agenthub.db.models import ApiKey
from agenthub.db.query import fetch_page
from agenthub.services import events

SORTABLE = {"created_at": ApiKey.created_at, "name": ApiKey.name, "role": ApiKey.role}
DEFAULT_SORT = Sort("created_at", "desc")


async def create_api_key(
    session: AsyncSession,
    actor: Principal | None,
    *,
    name: str,
    role: Role = Role.MEMBER,
    project_id: uuid.UUID | None = None,
    tenant_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Mint a key; returns the record and the plaintext key, which is never stored.

    ``actor`` is ``None`` only for local administration (the CLI writing the database).
    """
    if actor is not None:
        actor.require_admin()
    name = name.strip()
    if not name or len(name) > 128:
        raise ValidationFailed("name must be 1-128 characters", details={"name": name})
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed("expires_at must be in the future")
    key = new_api_key()
    record = ApiKey(
        name=name,
        key_hash=hash_api_key(key),
        key_prefix=key[:10],
        role=role.value,
        project_id=project_id,
        tenant_id=tenant_id,
        created_by=actor.id if actor and actor.kind is PrincipalKind.USER else None,
        expires_at=expires_at,
    )
    session.add(record)
    await session.flush()
    await events.record(
        session,
        "api_key.created",
        {"id": str(record.id), "name": name, "role": role.value, "key_prefix": record.key_prefix},
        actor=actor,
        project_id=project_id,
        tenant_id=tenant_id,
    )
    return record, key


async def list_api_keys(
    session: AsyncSession,
    actor: Principal,
    *,
    page: Page,
    sort: Sort = DEFAULT_SORT,
    include_revoked: bool = False,
) -> tuple[Sequence[ApiKey], int]:
    actor.require_admin()
    stmt = sa.select(ApiKey)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return await fetch_page(
        session, stmt, page=page, sort=sort, columns=SORTABLE, tiebreak=ApiKey.id
    )


async def revoke_api_key(session: AsyncSession, actor: Principal, key_id: uuid.UUID) -> ApiKey:
    actor.require_admin()
    record = await session.get(ApiKey, key_id)
    if record is None:
        raise NotFound(f"API key {key_id} not found.", code="api_key_not_found")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        await events.record(
            session,
            "api_key.revoked",
            {"id": str(record.id), "name": record.name},
            actor=actor,
            project_id=record.project_id,
            tenant_id=record.tenant_id,
        )
    return record


async def count_api_keys(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.count(ApiKey.id))) or 0)
