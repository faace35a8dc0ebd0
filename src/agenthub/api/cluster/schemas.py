"""Request and response bodies of the Cluster surface's identity routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agenthub.core.auth import Role
from agenthub.core.pagination import Page


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1)


class TokenRead(BaseModel):
    token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    user_id: uuid.UUID
    username: str
    expires_at: datetime
    refresh_expires_at: datetime


class MessageRead(BaseModel):
    message: str


class WhoAmI(BaseModel):
    kind: str
    id: uuid.UUID
    name: str
    role: Role
    project_id: uuid.UUID | None
    tenant_id: uuid.UUID | None


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: Role = Role.MEMBER
    project_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    expires_at: datetime | None = None


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    name: str
    key_prefix: str
    role: Role
    project_id: uuid.UUID | None
    tenant_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Role = Role.MEMBER


class UserRead(BaseModel):
    id: uuid.UUID
    username: str
    role: Role
    is_active: bool
    created_at: datetime


class Pagination(BaseModel):
    total: int
    limit: int
    offset: int
    next_offset: int | None
    prev_offset: int | None

    @classmethod
    def of(cls, page: Page, total: int) -> Pagination:
        return cls(
            total=total,
            limit=page.limit,
            offset=page.offset,
            next_offset=page.next_offset(total),
            prev_offset=page.prev_offset(),
        )


class ApiKeyList(BaseModel):
    api_keys: list[dict[str, Any]]
    pagination: Pagination
