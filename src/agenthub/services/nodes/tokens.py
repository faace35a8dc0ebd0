"""Machine tokens: minted by an admin (``agenthub machine create``), stored hashed, bound to a
pool and to one machine (``machine`` type) or to a pool only (``worker`` type)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import MachineTokenType, Principal, PrincipalKind, Role
from agenthub.core.cache import TtlCache
from agenthub.core.clock import utcnow
from agenthub.core.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from agenthub.core.security import hash_api_key, new_machine_token
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.models import MachineToken, Node
from agenthub.services import events
from agenthub.services.nodes.pools import DEFAULT_POOL, pool_exists
from agenthub.services.nodes.resources import check_pool_name, normalize_machine_id
from agenthub.services.nodes.state import PENDING, READY, REGISTERED, NodeStates

TokenType = MachineTokenType


LOCAL_AGENT = "local-agent"


@dataclass(frozen=True)
class IssuedMachine:
    """What ``agenthub machine create`` prints; ``token`` is shown this once."""

    machine_id: str | None
    token: str
    pool_name: str
    status: str
    token_type: str
    token_id: uuid.UUID

    def public(self) -> dict[str, object]:
        return {
            "machine_id": self.machine_id,
            "token": self.token,
            "pool_name": self.pool_name,
            "status": self.status,
            "token_type": self.token_type,
            "token_id": str(self.token_id),
        }


def new_machine_id() -> str:
    return secrets.token_hex(4)


async def create_machine(
    session: AsyncSession,
    settings: Settings,
    states: NodeStates,
    actor: Principal | None,
    *,
    pool_name: str,
    machine_id: str | None = None,
    token_type: TokenType = TokenType.MACHINE,
    name: str | None = None,
    replace: bool = False,
) -> IssuedMachine:
    """Mint a machine token and, for a ``machine`` token, the machine's pending record.

    A ``machine`` token is bound to ``machine_id`` when one is given; otherwise a fresh id is
    suggested and the token binds to whichever machine registers with it first. A ``worker``
    token registers any number of machines of its pool. ``actor`` is ``None`` only for local
    administration (the CLI writing the database).
    """
    if actor is not None:
        actor.require_admin()
    pool_name = check_pool_name(pool_name.strip())
    if not await pool_exists(session, settings, pool_name):
        raise ValidationFailed("Invalid pool name", code="invalid_pool_name")
    bound = machine_id is not None
    if machine_id is not None:
        machine_id = normalize_machine_id(machine_id)
    elif token_type is TokenType.MACHINE:
        machine_id = new_machine_id()
    if machine_id is not None and not replace:
        live = await states.get(machine_id, session=session)
        if live is not None and live.status in (REGISTERED, READY):
            raise Conflict(
                f"Machine {machine_id} is registered and alive; revoke its token or wait for "
                "it to expire before minting another.",
                code="machine_exists",
            )
    token = new_machine_token()
    record = MachineToken(
        token_hash=hash_api_key(token),
        token_prefix=token[:10],
        token_type=token_type.value,
        pool_name=pool_name,
        machine_id=machine_id,
        machine_id_bound=bound,
        name=name,
        created_by=actor.id if actor is not None and actor.kind is PrincipalKind.USER else None,
    )
    session.add(record)
    await session.flush()
    if machine_id is not None:
        node = await session.get(Node, machine_id)
        if node is None:
            node = Node(id=machine_id, pool_name=pool_name)
            session.add(node)
        node.pool_name = pool_name
        node.status = PENDING
        node.token_id = record.id
        await session.flush()
        await states.put_pending(
            machine_id,
            pool_name,
            str(record.id),
            settings.machine_pending_ttl_s,
            session=session,
        )
    await events.record(
        session,
        "node.token_created",
        {
            "token_id": str(record.id),
            "pool_name": pool_name,
            "machine_id": machine_id,
            "token_type": token_type.value,
        },
        actor=actor,
    )
    return IssuedMachine(machine_id, token, pool_name, PENDING, token_type.value, record.id)


async def bind_to_machine(session: AsyncSession, principal: Principal, machine_id: str) -> None:
    """Bind a ``machine`` token to the machine registering with it, or refuse (403) when it is
    bound to another. Atomic, so two machines racing with one token cannot both win."""
    if principal.token_type != TokenType.MACHINE:
        return
    result = await session.execute(
        sa.update(MachineToken)
        .where(
            MachineToken.id == principal.id,
            MachineToken.revoked_at.is_(None),
            sa.or_(MachineToken.machine_id_bound.is_(False), MachineToken.machine_id == machine_id),
        )
        .values(machine_id=machine_id, machine_id_bound=True)
        .returning(MachineToken.id)
    )
    if result.first() is None:
        raise Unauthorized("Invalid token", code="invalid_token")


async def resolve_machine_token(db: Database, token: str) -> Principal:
    """The principal of a machine token, or :class:`Unauthorized`."""
    async with db.sessionmaker() as session:
        record = await session.scalar(
            sa.select(MachineToken).where(
                MachineToken.token_hash == hash_api_key(token), MachineToken.revoked_at.is_(None)
            )
        )
    if record is None:
        raise Unauthorized("Invalid token", code="invalid_token")
    return Principal(
        kind=PrincipalKind.MACHINE,
        id=record.id,
        name=f"machine-token:{record.token_prefix}",
        role=Role.MEMBER,
        pool_name=record.pool_name,
        machine_id=record.machine_id,
        token_type=record.token_type,
    )


# Checked machine tokens, trusted for a few seconds: keepalives from thousands of machines
# must not each cost a database read.
MachineTokenCache = TtlCache[str, Principal]


async def list_tokens(session: AsyncSession, actor: Principal) -> list[MachineToken]:
    actor.require_admin()
    rows = await session.scalars(sa.select(MachineToken).order_by(MachineToken.created_at))
    return list(rows)


async def revoke_token(
    session: AsyncSession, actor: Principal | None, token_id: uuid.UUID
) -> MachineToken:
    """Revoke a token; revoking twice is harmless. Hub replicas that checked it recently keep
    trusting it for at most ``machine_token_cache_s``."""
    if actor is not None:
        actor.require_admin()
    record = await session.get(MachineToken, token_id)
    if record is None:
        raise NotFound(f"No machine token {token_id}.", code="token_not_found")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        await events.record(session, "node.token_revoked", {"token_id": str(token_id)}, actor=actor)
    return record


async def issue_local_agent_token(
    session: AsyncSession, settings: Settings, states: NodeStates
) -> IssuedMachine:
    """A fresh token for the node agent that ``agenthub up`` runs on this machine.

    The machine keeps one id across restarts (kept in the data dir); the previous run's token
    is revoked, so a token that leaked from an old run is worthless.
    """
    id_file = Path(settings.data_dir) / "local-machine-id"
    try:
        machine_id = normalize_machine_id(id_file.read_text())
    except (OSError, ValidationFailed):
        machine_id = new_machine_id()
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(machine_id + "\n")
    await session.execute(
        sa.update(MachineToken)
        .where(MachineToken.name == LOCAL_AGENT, MachineToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return await create_machine(
        session,
        settings,
        states,
        None,
        pool_name=DEFAULT_POOL,
        machine_id=machine_id,
        name=LOCAL_AGENT,
        replace=True,
    )
