"""Workload tokens: the credential a running workload uses to call the hub about itself.

``ahw_`` + an HS256 JWT signed with the hub's secret, minted each time an assignment goes to a
node and never stored. It names the workload and the attempt it was minted for, so it is good
only while that attempt is placed: once the run ends or the workload is queued again, the
token is refused whatever its expiry says.
"""

from __future__ import annotations

import uuid

from agenthub.core.auth import Principal, PrincipalKind, Role
from agenthub.core.errors import Unauthorized
from agenthub.core.security import (
    WORKLOAD_TOKEN_PREFIX,
    InvalidToken,
    decode_token,
    encode_token,
)
from agenthub.db.engine import Database
from agenthub.db.models import AiIdentity, Workload
from agenthub.services.identity import ais
from agenthub.services.scheduling.protocol import TOKEN_ENV, TokenMinter
from agenthub.services.scheduling.spec import PLACED

# A run without a timeout may run for days; one with a timeout needs its token a little longer
# than that (reports and clean-up after the kill).
DEFAULT_TTL_S = 7 * 24 * 3600
TIMEOUT_MARGIN_S = 3600


def token_ttl_s(workload: Workload) -> int:
    """How long a token minted now for ``workload`` stays valid (if the run lasts)."""
    if workload.timeout_s is not None:
        return int(workload.timeout_s) + TIMEOUT_MARGIN_S
    return DEFAULT_TTL_S


def _optional(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def mint_workload_token(secret_key: str, workload: Workload) -> str:
    """A token for the current attempt of ``workload``."""
    token, _ = encode_token(
        secret_key,
        subject=str(workload.id),
        use="workload",
        ttl_s=token_ttl_s(workload),
        extra={
            "att": workload.attempt,
            "own": workload.owner_kind,
            "oid": workload.owner_id,
            "prj": _optional(workload.project_id),
            "ten": _optional(workload.tenant_id),
        },
    )
    return WORKLOAD_TOKEN_PREFIX + token


AI_ID_ENV = "AGENTHUB_AI_ID"
COLLAB_TOKEN_ENV = "AGENTHUB_COLLAB_TOKEN"  # noqa: S105 - a variable name, not a secret


def token_minter(secret_key: str) -> TokenMinter:
    """What the work protocol calls to mint each assignment's credentials: the workload token
    and, for a run with a Collab identity, an access token of that AI lasting as long as the
    run may (the identity's own, so it messages and collaborates as itself)."""

    def mint(workload: Workload, ai: AiIdentity | None) -> dict[str, str]:
        env = {TOKEN_ENV: mint_workload_token(secret_key, workload)}
        if ai is not None:
            env[AI_ID_ENV] = str(ai.id)
            env[COLLAB_TOKEN_ENV] = ais.mint_access_token(secret_key, ai, token_ttl_s(workload))
        return env

    return mint


async def resolve_workload_token(db: Database, secret_key: str, token: str) -> Principal:
    """The workload principal of ``token``: signature, expiry, and a run still placed.

    Raises :class:`Unauthorized` (``invalid_token``, or ``token_expired``) otherwise."""
    try:
        claims = decode_token(secret_key, token.removeprefix(WORKLOAD_TOKEN_PREFIX), use="workload")
        workload_id = uuid.UUID(claims.subject)
        attempt = int(claims.extra["att"])
    except InvalidToken as exc:
        if exc.reason == "expired":
            raise Unauthorized("Workload token has expired.", code="token_expired") from exc
        raise Unauthorized("Invalid token.", code="invalid_token") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise Unauthorized("Invalid token.", code="invalid_token") from exc
    async with db.sessionmaker() as session:
        workload = await session.get(Workload, workload_id)
    if workload is None or workload.status not in PLACED or workload.attempt != attempt:
        raise Unauthorized(
            "Invalid token: its workload run is no longer running.", code="invalid_token"
        )
    return Principal(
        kind=PrincipalKind.WORKLOAD,
        id=workload.id,
        name=workload.name or f"workload {workload.id}",
        role=Role.MEMBER,
        project_id=workload.project_id,
        tenant_id=workload.tenant_id,
        token_jti=claims.jti,
        token_expires_at=claims.expires_at,
        owner_kind=workload.owner_kind,
        owner_id=workload.owner_id,
    )
