"""Access and refresh tokens for users: login, refresh (with rotation) and logout."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from agenthub.core.auth import Principal
from agenthub.core.errors import Unauthorized, ValidationFailed
from agenthub.core.revocation import RevocationStore
from agenthub.core.security import InvalidToken, decode_token, encode_token
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.models import User
from agenthub.services.identity.principals import Authenticator


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_at: datetime
    refresh_expires_at: datetime
    user: User


def issue_tokens(settings: Settings, user: User) -> TokenPair:
    refresh, refresh_claims = encode_token(
        settings.secret_key,
        subject=str(user.id),
        use="refresh",
        ttl_s=settings.refresh_token_ttl_s,
    )
    # The access token names its refresh token, so logout can revoke both at once.
    access, access_claims = encode_token(
        settings.secret_key,
        subject=str(user.id),
        use="access",
        ttl_s=settings.access_token_ttl_s,
        extra={
            "name": user.username,
            "rjti": refresh_claims.jti,
            "rexp": int(refresh_claims.expires_at.timestamp()),
        },
    )
    return TokenPair(access, refresh, access_claims.expires_at, refresh_claims.expires_at, user)


async def login(
    authenticator: Authenticator, settings: Settings, *, username: str, password: str
) -> TokenPair:
    if not username or not password:
        raise ValidationFailed("username and password are required")
    user = await authenticator.check_password(username, password)
    return issue_tokens(settings, user)


async def refresh(
    db: Database, revocations: RevocationStore, settings: Settings, *, refresh_token: str
) -> TokenPair:
    """Exchange a refresh token for a new pair; the old refresh token stops working (rotation)."""
    try:
        claims = decode_token(settings.secret_key, refresh_token, use="refresh")
        user_id = uuid.UUID(claims.subject)
    except InvalidToken as exc:
        code = "token_expired" if exc.reason == "expired" else "invalid_token"
        raise Unauthorized("Invalid or expired refresh token.", code=code) from exc
    except ValueError as exc:
        raise Unauthorized("Invalid refresh token.", code="invalid_token") from exc
    async with db.sessionmaker() as session:
        user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise Unauthorized("Invalid refresh token.", code="invalid_token")
    # Claiming the token is the check: of concurrent refreshes with one token, one wins.
    if not await revocations.revoke(claims.jti, claims.expires_at):
        raise Unauthorized("Refresh token has been revoked.", code="invalid_token")
    return issue_tokens(settings, user)


async def logout(revocations: RevocationStore, principal: Principal) -> None:
    """Revoke the caller's access token and the refresh token paired with it."""
    if principal.token_jti is None or principal.token_expires_at is None:
        raise ValidationFailed(
            "Logout revokes a token: call it with the access token from /auth/login "
            "(API keys are revoked with DELETE /api/auth/keys/{id})."
        )
    await revocations.revoke(principal.token_jti, principal.token_expires_at)
    if principal.refresh_jti and principal.refresh_expires_at:
        await revocations.revoke(principal.refresh_jti, principal.refresh_expires_at)
