"""Turning an ``Authorization`` header into a :class:`Principal`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from agenthub.core.auth import Principal, PrincipalKind, Role
from agenthub.core.clock import utcnow
from agenthub.core.errors import Unauthorized
from agenthub.core.revocation import RevocationStore
from agenthub.core.security import (
    InvalidToken,
    VerifiedTokens,
    hash_api_key,
    looks_like_api_key,
    looks_like_machine_token,
    looks_like_workload_token,
    verify_password,
)
from agenthub.db.base import table_of
from agenthub.db.engine import Database
from agenthub.db.models import ApiKey, User
from agenthub.services.identity import ais
from agenthub.services.nodes.tokens import MachineTokenCache, resolve_machine_token
from agenthub.services.scheduling.tokens import resolve_workload_token

# Every request's credential lookups: built once, read without a session (Database.read).
_KEYS = table_of(ApiKey).c
_API_KEY = sa.select(
    _KEYS.id, _KEYS.name, _KEYS.role, _KEYS.project_id, _KEYS.tenant_id, _KEYS.expires_at
).where(_KEYS.key_hash == sa.bindparam("key_hash", type_=sa.String), _KEYS.revoked_at.is_(None))
_USERS = table_of(User).c
_USER = sa.select(
    _USERS.id, _USERS.username, _USERS.role, _USERS.tenant_id, _USERS.is_active
).where(_USERS.id == sa.bindparam("user_id", type_=sa.Uuid))


class Authenticator:
    """Resolves credentials: ``Bearer <api key>``, ``Bearer <machine token>``,
    ``Bearer <workload token>``, ``Bearer <access JWT>``, ``Basic <user:pw>``.

    Returns ``None`` when no credentials were given; raises :class:`Unauthorized` for bad ones.
    """

    def __init__(
        self,
        db: Database,
        secret_key: str,
        revocations: RevocationStore,
        machine_tokens: MachineTokenCache,
        ai_identities: ais.AiCache | None = None,
    ) -> None:
        self._db = db
        self._secret_key = secret_key
        self._verified = VerifiedTokens(secret_key)
        self._revocations = revocations
        self._machine_tokens = machine_tokens
        self._ai_identities = ai_identities

    async def resolve(self, authorization: str | None) -> Principal | None:
        if not authorization or not authorization.strip():
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        match scheme.lower():
            case "bearer" if credentials:
                if looks_like_api_key(credentials):
                    return await self._api_key(credentials)
                if looks_like_machine_token(credentials):
                    return await self._machine_token(credentials)
                if looks_like_workload_token(credentials):
                    # Not cached: a run that ended must lose its token at once.
                    return await resolve_workload_token(self._db, self._secret_key, credentials)
                return await self.access_token(credentials)
            case "basic" if credentials:
                return await self._basic(credentials)
            case _:
                raise Unauthorized(
                    "Unsupported Authorization header: "
                    "use 'Bearer <token>' or 'Basic <credentials>'.",
                    code="invalid_token",
                )

    async def _api_key(self, key: str) -> Principal:
        rows = await self._db.read(_API_KEY, {"key_hash": hash_api_key(key)})
        record = rows[0] if rows else None
        if record is None or (record.expires_at is not None and record.expires_at <= utcnow()):
            raise Unauthorized("Invalid or revoked API key.", code="invalid_token")
        return Principal(
            kind=PrincipalKind.API_KEY,
            id=record.id,
            name=record.name,
            role=Role(record.role),
            project_id=record.project_id,
            tenant_id=record.tenant_id,
        )

    async def _machine_token(self, token: str) -> Principal:
        cached = self._machine_tokens.get(token)
        if cached is not None:
            return cached
        principal = await resolve_machine_token(self._db, token)
        self._machine_tokens.put(token, principal)
        return principal

    def forget_ai(self, ai_id: int) -> None:
        """Drop what this replica keeps of an AI identity (after a change to it)."""
        if self._ai_identities is not None:
            self._ai_identities.forget(ai_id)

    def forget_machine_tokens(self) -> None:
        """Drop checked machine tokens (after a revocation), so the next use is checked."""
        self._machine_tokens.clear()

    async def access_token(self, token: str) -> Principal:
        """Validate an access JWT: signature, expiry, revocation, and that its user is active."""
        try:
            claims = self._verified.decode(token, use="access")
        except InvalidToken as exc:
            if exc.reason == "expired":
                raise Unauthorized("Token has expired.", code="token_expired") from exc
            raise Unauthorized("Invalid token.", code="invalid_token") from exc
        if await self._revocations.is_revoked(claims.jti):
            raise Unauthorized("Token has been revoked.", code="invalid_token")
        if ais.is_ai_token(claims):
            return await ais.resolve(self._db, claims, self._ai_identities)
        try:
            user_id = uuid.UUID(claims.subject)
        except ValueError as exc:
            raise Unauthorized("Invalid token.", code="invalid_token") from exc
        rows = await self._db.read(_USER, {"user_id": user_id})
        user = rows[0] if rows else None
        if user is None or not user.is_active:
            raise Unauthorized("Invalid token.", code="invalid_token")
        refresh_exp = claims.extra.get("rexp")
        return Principal(
            kind=PrincipalKind.USER,
            id=user.id,
            name=user.username,
            role=Role(user.role),
            tenant_id=user.tenant_id,
            token_jti=claims.jti,
            token_expires_at=claims.expires_at,
            refresh_jti=claims.extra.get("rjti"),
            refresh_expires_at=datetime.fromtimestamp(int(refresh_exp), UTC)
            if refresh_exp
            else None,
        )

    async def _basic(self, credentials: str) -> Principal:
        try:
            username, sep, password = (
                base64.b64decode(credentials, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("Malformed Basic credentials.", code="invalid_credentials") from exc
        if not sep:
            raise Unauthorized("Malformed Basic credentials.", code="invalid_credentials")
        user = await self.check_password(username, password)
        return Principal(
            kind=PrincipalKind.USER,
            id=user.id,
            name=user.username,
            role=Role(user.role),
            tenant_id=user.tenant_id,
        )

    async def check_password(self, username: str, password: str) -> User:
        async with self._db.sessionmaker() as session:
            user = await session.scalar(sa.select(User).where(User.username == username))
        stored = user.password_hash if user is not None and user.is_active else None
        # argon2 is deliberately slow: keep it off the event loop.
        if not await asyncio.to_thread(verify_password, stored, password) or user is None:
            raise Unauthorized("Invalid username or password.", code="invalid_credentials")
        return user
