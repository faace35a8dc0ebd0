"""Collab surface: AI login, token refresh, verification, logout, and rate-limit status."""

from __future__ import annotations

from datetime import UTC, datetime

from agenthub.api.collab.schemas import (
    LoginRead,
    LoginRequest,
    MessageRead,
    RateLimitStatus,
    RefreshRead,
    RefreshRequest,
    VerifyRead,
)
from agenthub.api.deps import CollabPrincipalDep, RuntimeDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.clock import isoformat_z
from agenthub.services.identity import ais, tokens

router = SurfaceRouter(prefix="/api/v1", tags=["collab"])


@router.post("/auth/login", response_model=LoginRead)
async def login(body: LoginRequest, runtime: RuntimeDep) -> LoginRead:
    """Log an AI in with its id, name and secret; returns an access token (JWT) and a
    refresh token."""
    issued = await ais.login(
        runtime.db, runtime.settings, ai_id=body.ai_id, ai_name=body.ai_name, secret=body.secret
    )
    return LoginRead(
        token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
        ai_id=issued.ai.id,
        ai_name=issued.ai.name,
        ai_nickname=issued.ai.nickname,
    )


@router.post("/auth/logout", response_model=MessageRead)
async def logout(principal: CollabPrincipalDep, runtime: RuntimeDep) -> MessageRead:
    """Revoke the access token in use and its refresh token, on every hub replica."""
    await tokens.logout(runtime.revocations, principal)
    return MessageRead(message="Logged out successfully")


@router.post("/auth/refresh", response_model=RefreshRead)
async def refresh(body: RefreshRequest, runtime: RuntimeDep) -> RefreshRead:
    """A new access token for a refresh token; the refresh token rotates (the old one stops
    working and a new one is returned)."""
    issued = await ais.refresh(
        runtime.db, runtime.revocations, runtime.settings, refresh_token=body.refresh_token
    )
    return RefreshRead(
        token=issued.access_token, refresh_token=issued.refresh_token, expires_in=issued.expires_in
    )


@router.post("/auth/verify", response_model=VerifyRead)
async def verify(principal: CollabPrincipalDep) -> VerifyRead:
    """Whether the bearer token is valid; an invalid one is a 401 (INVALID_TOKEN or
    TOKEN_EXPIRED)."""
    return VerifyRead(valid=True, ai_id=principal.ai_id, ai_name=principal.name)


@router.get("/rate-limit/status", response_model=RateLimitStatus)
async def rate_limit_status(principal: CollabPrincipalDep, runtime: RuntimeDep) -> RateLimitStatus:
    """The caller's tightest rate-limit window (this request included)."""
    decision = await runtime.limiter_for(principal).peek(principal.rate_limit_subject)
    return RateLimitStatus(
        limit=decision.limit,
        remaining=decision.remaining,
        reset=decision.reset_at,
        reset_at=isoformat_z(datetime.fromtimestamp(decision.reset_at, UTC)),
    )
