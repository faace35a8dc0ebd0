"""Collab request and response bodies: authentication, AI profiles, rate-limit status.

Responses carry ``success: true`` at the top level, beside their fields (the document's form).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CollabModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Success(BaseModel):
    success: bool = True


class LoginRequest(CollabModel):
    ai_id: int = Field(ge=1)
    ai_name: str = Field(min_length=1, max_length=64)
    secret: str | None = Field(
        default=None,
        max_length=256,
        description="The secret returned at registration; may be left out only on a hub with "
        "AGENTHUB_COLLAB_OPEN_LOGIN=true.",
    )
    ai_nickname: str | None = Field(default=None, max_length=64)


class LoginRead(Success):
    token: str
    refresh_token: str
    expires_in: int
    ai_id: int
    ai_name: str
    ai_nickname: str | None


class RefreshRequest(CollabModel):
    refresh_token: str = Field(min_length=1)


class RefreshRead(Success):
    token: str
    # Refresh tokens rotate: the one sent stops working, this one replaces it.
    refresh_token: str
    expires_in: int


class VerifyRead(Success):
    valid: bool
    ai_id: int | None
    ai_name: str


class MessageRead(Success):
    message: str


class AiCreate(CollabModel):
    ai_name: str = Field(min_length=1, max_length=64)
    ai_nickname: str | None = Field(default=None, max_length=64)
    expertise: str | None = Field(default=None, max_length=128)
    version: str | None = Field(default=None, max_length=32)
    project: str | None = Field(default=None, max_length=128)


class AiRegistered(Success):
    ai_id: int
    ai_name: str
    ai_nickname: str | None
    expertise: str | None
    version: str | None
    project: str | None
    created_at: str
    secret: str = Field(description="Shown once: keep it, it is needed to log in.")


class AiRead(Success):
    ai_id: int
    ai_name: str
    ai_nickname: str | None
    expertise: str | None
    version: str | None
    project: str | None
    created_at: str
    last_seen: str | None
    online: bool


class AiUpdate(CollabModel):
    ai_nickname: str | None = Field(default=None, max_length=64)
    expertise: str | None = Field(default=None, max_length=128)
    version: str | None = Field(default=None, max_length=32)
    project: str | None = Field(default=None, max_length=128)
    access: Literal["collab", "member"] | None = Field(
        default=None,
        description="Admins only: `member` lets this AI's tokens call the routes a member API "
        "key may; `collab` (the default) keeps them to the Collab surface.",
    )


class AiUpdated(Success):
    ai_id: int
    ai_name: str
    ai_nickname: str | None
    expertise: str | None
    version: str | None
    project: str | None
    access: str
    updated_at: str


class AiListItem(BaseModel):
    ai_id: int
    ai_name: str
    ai_nickname: str | None
    expertise: str | None
    version: str | None
    project: str | None
    online: bool


class AiList(Success):
    ais: list[AiListItem]
    total: int
    limit: int
    offset: int


class RateLimitStatus(Success):
    limit: int
    remaining: int
    reset: int
    reset_at: str
