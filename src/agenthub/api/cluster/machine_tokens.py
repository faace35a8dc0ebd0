"""Cluster surface: worker pools and machine tokens (admin), for remote administration."""

from __future__ import annotations

import uuid

from fastapi import status

from agenthub.api.cluster.envelope import Envelope, wrap
from agenthub.api.cluster.node_schemas import (
    IssuedMachineRead,
    MachineTokenCreate,
    MachineTokenRead,
    PoolCreate,
    PoolRead,
)
from agenthub.api.deps import AdminDep, PrincipalDep, RuntimeDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.services.nodes import pools, tokens

router = SurfaceRouter(prefix="/api", tags=["cluster"])


@router.get("/pools", response_model=Envelope[list[PoolRead]])
async def list_pools(
    principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> Envelope[list[PoolRead]]:
    """Pools machines may register into."""
    found = await pools.list_pools(session, runtime.settings)
    return wrap([PoolRead(name=p.name, source=p.source, description=p.description) for p in found])


@router.post("/pools", status_code=status.HTTP_201_CREATED, response_model=Envelope[PoolRead])
async def create_pool(
    body: PoolCreate, admin: AdminDep, runtime: RuntimeDep, session: SessionDep
) -> Envelope[PoolRead]:
    """Create a pool (admin)."""
    pool = await pools.create_pool(session, runtime.settings, admin, body.name, body.description)
    return wrap(PoolRead(name=pool.name, source=pool.source, description=pool.description))


@router.post(
    "/machine-tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=Envelope[IssuedMachineRead],
)
async def create_machine_token(
    body: MachineTokenCreate, admin: AdminDep, runtime: RuntimeDep, session: SessionDep
) -> Envelope[IssuedMachineRead]:
    """Mint a machine token (shown once) and the machine's pending record, as
    ``agenthub machine create`` does."""
    issued = await tokens.create_machine(
        session,
        runtime.settings,
        runtime.nodes,
        admin,
        pool_name=body.pool_name,
        machine_id=body.machine_id,
        token_type=body.token_type,
    )
    return wrap(IssuedMachineRead(**issued.public()))


@router.get("/machine-tokens", response_model=Envelope[list[MachineTokenRead]])
async def list_machine_tokens(
    admin: AdminDep, session: SessionDep
) -> Envelope[list[MachineTokenRead]]:
    """Machine tokens (never the secrets)."""
    found = await tokens.list_tokens(session, admin)
    return wrap([MachineTokenRead.model_validate(t, from_attributes=True) for t in found])


@router.delete("/machine-tokens/{token_id}", response_model=Envelope[MachineTokenRead])
async def revoke_machine_token(
    token_id: uuid.UUID, admin: AdminDep, runtime: RuntimeDep, session: SessionDep
) -> Envelope[MachineTokenRead]:
    """Revoke a machine token: its machine can no longer register or keep alive."""
    record = await tokens.revoke_token(session, admin, token_id)
    runtime.authenticator.forget_machine_tokens()
    return wrap(MachineTokenRead.model_validate(record, from_attributes=True))
