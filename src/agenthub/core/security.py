"""Credential primitives: password hashing, API keys, signed tokens. No storage here."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agenthub.core.clock import utcnow

API_KEY_PREFIX = "ah_"
JWT_ALGORITHM = "HS256"
# "workload": a running workload's credential (prefixed WORKLOAD_TOKEN_PREFIX, never stored).
TokenUse = Literal["access", "refresh", "workload"]

_hasher = PasswordHasher()
# Verifying against this keeps the time of a login for an unknown user close to a real one.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-effort check; an unknown user (``None``) still costs one argon2 verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # API keys carry 256 bits of entropy, so a fast hash is enough and keeps lookups cheap.
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


MACHINE_TOKEN_PREFIX = "ahm_"  # noqa: S105 - a prefix, not a secret


def new_machine_token() -> str:
    return MACHINE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_machine_token(token: str) -> bool:
    return token.startswith(MACHINE_TOKEN_PREFIX)


WORKLOAD_TOKEN_PREFIX = "ahw_"  # noqa: S105 - a prefix, not a secret


def looks_like_workload_token(token: str) -> bool:
    return token.startswith(WORKLOAD_TOKEN_PREFIX)


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    jti: str
    use: TokenUse
    expires_at: datetime
    extra: dict[str, Any]


class InvalidToken(Exception):
    def __init__(self, reason: Literal["invalid", "expired"]) -> None:
        super().__init__(reason)
        self.reason = reason


def encode_token(
    secret: str,
    *,
    subject: str,
    use: TokenUse,
    ttl_s: int,
    extra: dict[str, Any] | None = None,
) -> tuple[str, TokenClaims]:
    now = utcnow()
    expires_at = now + timedelta(seconds=ttl_s)
    jti = uuid.uuid4().hex
    payload: dict[str, Any] = {
        **(extra or {}),
        "sub": subject,
        "jti": jti,
        "use": use,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(payload, secret, algorithm=JWT_ALGORITHM)
    return token, TokenClaims(subject, jti, use, expires_at, extra or {})


def decode_token(secret: str, token: str, *, use: TokenUse) -> TokenClaims:
    try:
        payload = jwt.decode(
            token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["sub", "jti", "exp"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("invalid") from exc
    if payload.get("use") != use:
        raise InvalidToken("invalid")
    extra = {k: v for k, v in payload.items() if k not in {"sub", "jti", "use", "iat", "exp"}}
    return TokenClaims(
        subject=str(payload["sub"]),
        jti=str(payload["jti"]),
        use=use,
        expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=utcnow().tzinfo),
        extra=extra,
    )


class VerifiedTokens:
    """Decoded tokens whose signature this replica already checked, by the exact token string.

    Decoding a JWT (base64, JSON, an HMAC, the claim checks) costs more CPU than the rest of
    authenticating a request, and a client sends the same token on every request until it
    expires. A hit is the very string that was verified with this secret, so its claims are
    the same; expiry is still checked on every use, and revocation is the caller's check as
    before. Bounded: least recently used tokens out first.
    """

    def __init__(self, secret: str, max_entries: int = 10_000) -> None:
        self._secret = secret
        self._max = max_entries
        self._claims: OrderedDict[str, TokenClaims] = OrderedDict()

    def decode(self, token: str, *, use: TokenUse) -> TokenClaims:
        claims = self._claims.get(token)
        if claims is None:
            claims = decode_token(self._secret, token, use=use)
            self._claims[token] = claims
            while len(self._claims) > self._max:
                self._claims.popitem(last=False)
        else:
            self._claims.move_to_end(token)
            if claims.use != use:
                raise InvalidToken("invalid")
        # The same rule as the JWT library's: expired once ``exp`` is reached.
        if claims.expires_at.timestamp() <= time.time():
            self._claims.pop(token, None)
            raise InvalidToken("expired")
        return claims
