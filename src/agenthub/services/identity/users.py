"""Users: people who log in with a username and password."""

from __future__ import annotations

import asyncio
import re

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal, Role
from agenthub.core.errors import Conflict, ValidationFailed
from agenthub.core.security import hash_password
from agenthub.db.models import User
from agenthub.services import events

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LENGTH = 8


async def create_user(
    session: AsyncSession,
    actor: Principal | None,
    *,
    username: str,
    password: str,
    role: Role = Role.MEMBER,
) -> User:
    """Create a user. ``actor`` is ``None`` only for local administration (the CLI)."""
    if actor is not None:
        actor.require_admin()
    if not USERNAME_RE.match(username):
        raise ValidationFailed(
            "username must be 1-64 characters of letters, digits and _ . @ -",
            details={"username": username},
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if await session.scalar(sa.select(User.id).where(User.username == username)):
        raise Conflict(f"User '{username}' already exists.", code="user_exists")
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(username=username, password_hash=password_hash, role=role.value)
    session.add(user)
    await session.flush()
    await events.record(
        session,
        "user.created",
        {"id": str(user.id), "username": username, "role": role.value},
        actor=actor,
    )
    return user


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    user: User | None = await session.scalar(sa.select(User).where(User.username == username))
    return user


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.count(User.id))) or 0)
