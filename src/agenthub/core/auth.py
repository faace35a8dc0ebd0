"""Principals: who is calling. Every service call receives one and checks it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from agenthub.core.errors import Forbidden


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class PrincipalKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    # A Gateway machine token: may call only the Gateway and node routes.
    MACHINE = "machine"
    # A running workload's token: may call only routes that accept it explicitly.
    WORKLOAD = "workload"
    # An AI identity of the Collab surface (JWT from /api/v1/auth/login).
    AI = "ai"


class MachineTokenType(StrEnum):
    """``machine``: one machine of a pool; ``worker``: any number of machines of a pool."""

    MACHINE = "machine"
    WORKER = "worker"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``project_id``/``tenant_id`` narrow what the principal may touch; ``None`` means unscoped.
    ``token_jti`` and friends are set when the caller used a JWT, so logout can revoke it.
    """

    kind: PrincipalKind
    id: uuid.UUID
    name: str
    role: Role
    project_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    token_jti: str | None = None
    token_expires_at: datetime | None = None
    refresh_jti: str | None = None
    refresh_expires_at: datetime | None = None
    # Machine tokens: the pool the token is bound to, its machine (when bound) and its type.
    pool_name: str | None = None
    machine_id: str | None = None
    token_type: str | None = None
    # Workload tokens: what the workload runs for (``id`` is the workload's id).
    owner_kind: str | None = None
    owner_id: str | None = None
    # AI identities: the Collab ``ai_id``, and whether the token may call only the Collab surface.
    ai_id: int | None = None
    collab_only: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_machine(self) -> bool:
        return self.kind is PrincipalKind.MACHINE

    @property
    def is_workload(self) -> bool:
        return self.kind is PrincipalKind.WORKLOAD

    @property
    def is_ai(self) -> bool:
        return self.kind is PrincipalKind.AI

    @property
    def rate_limit_subject(self) -> str:
        return f"{self.kind.value}:{self.id}"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("This action requires the admin role.")
