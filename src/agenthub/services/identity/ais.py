"""AI identities: registration, profiles, login with a secret, AI tokens, and resolving them.

An AI logs in with its ``ai_id``, ``ai_name`` and the ``secret`` it was given once at
registration (or, with ``AGENTHUB_COLLAB_OPEN_LOGIN``, without the secret). Its tokens are the
same JWTs users get, with ``kind: ai`` in their claims, so logout, refresh rotation and
revocation work the same way for both.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal, PrincipalKind, Role
from agenthub.core.cache import TtlCache
from agenthub.core.clock import utcnow
from agenthub.core.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from agenthub.core.revocation import RevocationStore
from agenthub.core.security import InvalidToken, TokenClaims, decode_token, encode_token
from agenthub.core.settings import Settings
from agenthub.core.storable import check_text
from agenthub.db.base import table_of
from agenthub.db.engine import Database
from agenthub.db.models import AiIdentity

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
ACCESS_LEVELS = ("collab", "member")
# last_seen is written at most this often per AI: activity is tracked without a write per call.
LAST_SEEN_RESOLUTION_S = 15


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ai_not_found(ai_id: int) -> NotFound:
    return NotFound(f"AI profile {ai_id} not found", code="ai_not_found")


@dataclass(frozen=True)
class Registered:
    ai: AiIdentity
    secret: str


async def register(
    session: AsyncSession,
    settings: Settings,
    caller: Principal | None,
    *,
    name: str,
    nickname: str | None,
    expertise: str | None,
    version: str | None,
    project: str | None,
    machine_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
) -> Registered:
    """A new AI identity; its secret is returned here once and only its hash is kept."""
    if not settings.collab_open_registration and (caller is None or not caller.is_admin):
        raise Forbidden(
            "Registration is restricted to admins on this hub "
            "(AGENTHUB_COLLAB_OPEN_REGISTRATION=false).",
            code="forbidden",
        )
    if not NAME_RE.match(name):
        raise ValidationFailed(
            "ai_name must be 1-64 characters: letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)",
            details={"field": "ai_name"},
        )
    for field, value in (
        ("ai_nickname", nickname),
        ("expertise", expertise),
        ("version", version),
        ("project", project),
    ):
        check_text(field, value)
    secret = secrets.token_urlsafe(32)
    ai = AiIdentity(
        name=name,
        nickname=nickname or name,
        expertise=expertise,
        version=version,
        project=project,
        secret_hash=hash_secret(secret),
        machine_id=machine_id,
        project_id=project_id,
        created_by=caller.rate_limit_subject if caller else None,
    )
    # The unique index decides between racing registrations of one name.
    try:
        async with session.begin_nested():
            session.add(ai)
    except sa.exc.IntegrityError as exc:
        raise name_exists() from exc
    return Registered(ai, secret)


def name_exists() -> ValidationFailed:
    return ValidationFailed(
        "AI name already exists", code="ai_name_exists", details={"field": "ai_name"}
    )


_AIS = table_of(AiIdentity)
_VISIBILITY: dict[tuple[bool, bool, bool, bool], sa.ColumnElement[bool]] = {}


def visibility(viewer: Principal | None) -> tuple[sa.ColumnElement[bool], dict[str, Any]]:
    """Which active AI identities ``viewer`` may see, message and ask to collaborate: a clause
    with bind parameters (built once per kind of viewer, so hot statements can be built once
    too) and the parameters for this viewer.

    Registered AIs form one open network: everyone sees them. An identity bound to a project
    (an Intelligent Machine's) is seen by admins, by callers of its project or tenant, and by
    itself only: its name and project would otherwise show one tenant's work to another.
    """
    admin = viewer is not None and viewer.is_admin
    ai_id = viewer.ai_id if viewer is not None and not admin else None
    project_id = viewer.project_id if viewer is not None and not admin else None
    tenant_id = viewer.tenant_id if viewer is not None and not admin else None
    shape = (admin, ai_id is not None, project_id is not None, tenant_id is not None)
    clause = _VISIBILITY.get(shape)
    if clause is None:
        clause = _VISIBILITY[shape] = _visibility_clause(*shape)
    params: dict[str, Any] = {}
    if ai_id is not None:
        params["viewer_ai_id"] = ai_id
    if project_id is not None:
        params["viewer_project_id"] = project_id
    if tenant_id is not None:
        params["viewer_tenant_id"] = tenant_id
    return clause, params


def _visibility_clause(
    admin: bool, has_ai: bool, has_project: bool, has_tenant: bool
) -> sa.ColumnElement[bool]:
    c = _AIS.c
    active = c.is_active.is_(True)
    if admin:
        return active
    seen: list[sa.ColumnElement[bool]] = [c.project_id.is_(None)]
    if has_ai:
        seen.append(c.id == sa.bindparam("viewer_ai_id", type_=sa.BigInteger))
    if has_project:
        seen.append(c.project_id == sa.bindparam("viewer_project_id", type_=sa.Uuid))
    if has_tenant:
        seen.append(c.tenant_id == sa.bindparam("viewer_tenant_id", type_=sa.Uuid))
    return sa.and_(active, sa.or_(*seen))


_GET: dict[int, sa.Select[AiIdentity]] = {}
_ANY_ACTIVE = AiIdentity.is_active.is_(True)


async def get(session: AsyncSession, ai_id: int, viewer: Principal | None = None) -> AiIdentity:
    """An active AI identity ``viewer`` may see (everyone's, when ``viewer`` is ``None``:
    internal use); else ``AI_NOT_FOUND``."""
    clause, params = visibility(viewer) if viewer is not None else (_ANY_ACTIVE, {})
    stmt = _GET.get(id(clause))
    if stmt is None:  # one statement per kind of viewer, built once like the clause
        stmt = _GET[id(clause)] = sa.select(AiIdentity).where(
            AiIdentity.id == sa.bindparam("ai_id", type_=sa.BigInteger), clause
        )
    ai = await session.scalar(stmt, {**params, "ai_id": ai_id})
    if ai is None:
        raise ai_not_found(ai_id)
    return ai


def is_online(ai: AiIdentity, settings: Settings, now: datetime | None = None) -> bool:
    if ai.last_seen is None:
        return False
    return (now or utcnow()) - ai.last_seen <= timedelta(seconds=settings.collab_online_window_s)


async def list_ais(
    session: AsyncSession,
    viewer: Principal,
    *,
    limit: int,
    offset: int,
    expertise: str | None = None,
) -> tuple[list[AiIdentity], int]:
    visible, params = visibility(viewer)
    stmt = sa.select(AiIdentity).where(visible)
    if expertise:
        stmt = stmt.where(AiIdentity.expertise == expertise)
    count = sa.select(sa.func.count()).select_from(stmt.subquery())
    total = await session.scalar(count, params)
    rows = await session.scalars(stmt.order_by(AiIdentity.id).limit(limit).offset(offset), params)
    return list(rows), int(total or 0)


async def update(
    session: AsyncSession, caller: Principal, ai_id: int, changes: dict[str, Any]
) -> AiIdentity:
    """Change a profile: the AI itself or an admin; ``access`` only by an admin."""
    ai = await get(session, ai_id, caller)
    if not caller.is_admin and caller.ai_id != ai.id:
        raise Forbidden("Not authorized to update this AI profile", code="forbidden")
    if "access" in changes:
        if not caller.is_admin:
            raise Forbidden("Only an admin may change an AI's access", code="forbidden")
        if changes["access"] not in ACCESS_LEVELS:
            raise ValidationFailed(f"access must be one of {', '.join(ACCESS_LEVELS)}")
        ai.access = changes["access"]
    for field, column in (
        ("ai_nickname", "nickname"),
        ("expertise", "expertise"),
        ("version", "version"),
        ("project", "project"),
    ):
        if field in changes:
            check_text(field, changes[field])
            setattr(ai, column, changes[field])
    ai.updated_at = utcnow()
    await session.flush()
    return ai


@dataclass(frozen=True)
class AiTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    ai: AiIdentity


def issue_tokens(settings: Settings, ai: AiIdentity) -> AiTokens:
    claims = {"kind": "ai", "ai_id": ai.id}
    refresh_token, refresh_claims = encode_token(
        settings.secret_key,
        subject=str(ai.principal_id),
        use="refresh",
        ttl_s=settings.refresh_token_ttl_s,
        extra=claims,
    )
    # The access token names its refresh token, so logout revokes both at once.
    access_token, _ = encode_token(
        settings.secret_key,
        subject=str(ai.principal_id),
        use="access",
        ttl_s=settings.collab_access_token_ttl_s,
        extra={
            **claims,
            "name": ai.name,
            "rjti": refresh_claims.jti,
            "rexp": int(refresh_claims.expires_at.timestamp()),
        },
    )
    return AiTokens(access_token, refresh_token, settings.collab_access_token_ttl_s, ai)


def mint_access_token(secret_key: str, ai: AiIdentity, ttl_s: int) -> str:
    """An access token of ``ai`` without a refresh token: the credential a running machine is
    given for its Collab identity, valid for the run (``ttl_s``)."""
    token, _ = encode_token(
        secret_key,
        subject=str(ai.principal_id),
        use="access",
        ttl_s=ttl_s,
        extra={"kind": "ai", "ai_id": ai.id, "name": ai.name},
    )
    return token


async def create_for_machine(
    session: AsyncSession,
    *,
    machine_id: uuid.UUID,
    machine_type: str,
    project_name: str,
    project_id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    created_by: Principal,
) -> AiIdentity:
    """The Collab identity of an Intelligent Machine: it logs in with the token its run is
    given (``AGENTHUB_COLLAB_TOKEN``), never with a secret, so none is handed out."""
    ai = AiIdentity(
        name=f"machine-{machine_id.hex[:16]}",
        nickname=f"{machine_type} machine",
        expertise=machine_type,
        project=project_name,
        # No one knows this secret: login with one is impossible by design.
        secret_hash=hash_secret(secrets.token_urlsafe(32)),
        project_id=project_id,
        tenant_id=tenant_id,
        machine_id=machine_id,
        created_by=created_by.rate_limit_subject,
    )
    session.add(ai)
    await session.flush()
    return ai


async def retire_machine_identity(session: AsyncSession, machine_id: uuid.UUID) -> None:
    """The machine ended: its identity stops working (its token is refused within the
    replicas' identity cache time) and leaves the lists; its messages stay."""
    await session.execute(
        sa.update(AiIdentity)
        .where(AiIdentity.machine_id == machine_id, AiIdentity.is_active.is_(True))
        .values(is_active=False, updated_at=utcnow())
    )


def invalid_credentials() -> Unauthorized:
    return Unauthorized("Invalid credentials", code="invalid_credentials")


async def login(
    db: Database,
    settings: Settings,
    *,
    ai_id: int,
    ai_name: str,
    secret: str | None,
) -> AiTokens:
    """Check ``ai_id`` + ``ai_name`` + ``secret`` (the secret may be left out only with open
    login on) and issue a token pair. Every failure is the same 401."""
    async with db.session() as session:
        ai = await session.get(AiIdentity, ai_id)
        if ai is None or not ai.is_active or ai.name != ai_name:
            raise invalid_credentials()
        if secret is None:
            if not settings.collab_open_login:
                raise Unauthorized(
                    "Invalid credentials: this hub requires the AI's secret to log in",
                    code="invalid_credentials",
                )
        elif not hmac.compare_digest(ai.secret_hash, hash_secret(secret)):
            raise invalid_credentials()
        ai.last_seen = utcnow()
    return issue_tokens(settings, ai)


def _ai_claims(settings: Settings, token: str, use: str) -> TokenClaims:
    try:
        claims = decode_token(settings.secret_key, token, use=use)  # type: ignore[arg-type]
    except InvalidToken as exc:
        code = "token_expired" if exc.reason == "expired" else "invalid_token"
        message = "Token has expired" if exc.reason == "expired" else "Invalid token"
        raise Unauthorized(message, code=code) from exc
    if claims.extra.get("kind") != "ai" or not isinstance(claims.extra.get("ai_id"), int):
        raise Unauthorized("Invalid token: not an AI identity's token", code="invalid_token")
    return claims


async def refresh(
    db: Database, revocations: RevocationStore, settings: Settings, *, refresh_token: str
) -> AiTokens:
    """A new pair for an AI's refresh token; the old refresh token stops working (rotation)."""
    claims = _ai_claims(settings, refresh_token, "refresh")
    async with db.session() as session:
        ai = await session.get(AiIdentity, claims.extra["ai_id"])
    if ai is None or not ai.is_active or str(ai.principal_id) != claims.subject:
        raise Unauthorized("Invalid refresh token", code="invalid_token")
    # Claiming the token is the check: of concurrent refreshes with one token, one wins.
    if not await revocations.revoke(claims.jti, claims.expires_at):
        raise Unauthorized("Refresh token has been revoked", code="invalid_token")
    return issue_tokens(settings, ai)


def is_ai_token(claims: TokenClaims) -> bool:
    return claims.extra.get("kind") == "ai"


@dataclass
class AiSnapshot:
    """What a replica keeps of an AI identity it looked up (see :data:`AiCache`)."""

    id: int
    principal_id: uuid.UUID
    name: str
    role: str
    access: str
    project_id: uuid.UUID | None
    tenant_id: uuid.UUID | None
    # When last_seen was last written (mutable: refreshed in place, without renewing the TTL).
    seen_at: datetime | None


# AI identities a replica looked up, trusted for a few seconds: every AI request would
# otherwise read its identity. A change made on this replica drops the entry at once.
AiCache = TtlCache[int, AiSnapshot]


_LOAD = sa.select(
    _AIS.c.id,
    _AIS.c.principal_id,
    _AIS.c.name,
    _AIS.c.role,
    _AIS.c.access,
    _AIS.c.project_id,
    _AIS.c.tenant_id,
    _AIS.c.last_seen,
).where(_AIS.c.id == sa.bindparam("ai_id", type_=sa.BigInteger), _AIS.c.is_active.is_(True))


async def _load(db: Database, ai_id: int) -> AiSnapshot | None:
    rows = await db.read(_LOAD, {"ai_id": ai_id})
    if not rows:
        return None
    row = rows[0]
    return AiSnapshot(
        row.id,
        row.principal_id,
        row.name,
        row.role,
        row.access,
        row.project_id,
        row.tenant_id,
        row.last_seen,
    )


async def _note_activity(db: Database, snapshot: AiSnapshot, now: datetime) -> None:
    stale = now - timedelta(seconds=LAST_SEEN_RESOLUTION_S)
    if snapshot.seen_at is not None and snapshot.seen_at >= stale:
        return
    async with db.session() as session:
        # Conditional, so replicas seeing the same AI at once write it once.
        await session.execute(
            sa.update(AiIdentity)
            .where(
                AiIdentity.id == snapshot.id,
                sa.or_(AiIdentity.last_seen.is_(None), AiIdentity.last_seen < stale),
            )
            .values(last_seen=now)
        )
    snapshot.seen_at = now


async def resolve(db: Database, claims: TokenClaims, cache: AiCache | None = None) -> Principal:
    """The principal of a valid, unrevoked AI access token (the caller checked both); notes
    the AI's activity (``last_seen``) at most every few seconds."""
    ai_id = claims.extra.get("ai_id")
    if not isinstance(ai_id, int):
        raise Unauthorized("Invalid token", code="invalid_token")
    snapshot = cache.get(ai_id) if cache is not None else None
    if snapshot is None:
        snapshot = await _load(db, ai_id)
        if snapshot is None:
            raise Unauthorized("Invalid token", code="invalid_token")
        if cache is not None:
            cache.put(ai_id, snapshot)
    if str(snapshot.principal_id) != claims.subject:
        raise Unauthorized("Invalid token", code="invalid_token")
    now = utcnow()
    await _note_activity(db, snapshot, now)
    refresh_exp = claims.extra.get("rexp")
    return Principal(
        kind=PrincipalKind.AI,
        id=snapshot.principal_id,
        name=snapshot.name,
        role=Role(snapshot.role),
        project_id=snapshot.project_id,
        tenant_id=snapshot.tenant_id,
        token_jti=claims.jti,
        token_expires_at=claims.expires_at,
        refresh_jti=claims.extra.get("rjti"),
        refresh_expires_at=datetime.fromtimestamp(int(refresh_exp), now.tzinfo)
        if refresh_exp
        else None,
        ai_id=snapshot.id,
        collab_only=snapshot.access == "collab",
    )
