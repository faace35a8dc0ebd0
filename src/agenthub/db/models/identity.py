from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.db.base import Base, Timestamps, UUIDPrimaryKey


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(16))
    is_active: Mapped[bool] = mapped_column(default=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)


class ApiKey(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(sa.String(128))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # The first characters of the key, so a person can tell keys apart without the secret.
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    role: Mapped[str] = mapped_column(sa.String(16))
    project_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid, default=None)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        sa.Uuid, sa.ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class RevokedToken(Base):
    """Denylist of token ids (``jti``), kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
