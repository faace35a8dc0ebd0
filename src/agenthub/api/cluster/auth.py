"""Cluster surface: login/logout/refresh, the caller's identity, API keys and users."""

from __future__ import annotations

import uuid

from fastapi import Query, status

from agenthub.api.cluster.envelope import Envelope, wrap
from agenthub.api.cluster.params import ClusterPage
from agenthub.api.cluster.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
    LoginRequest,
    MessageRead,
    Pagination,
    RefreshRequest,
    TokenRead,
    UserCreate,
    UserRead,
    WhoAmI,
)
from agenthub.api.deps import AdminDep, PrincipalDep, RuntimeDep, SessionDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.pagination import Sort, parse_fields, select_fields
from agenthub.services.identity import api_keys, tokens, users

router = SurfaceRouter(prefix="/api", tags=["cluster"])


def _token_read(pair: tokens.TokenPair) -> TokenRead:
    return TokenRead(
        token=pair.access_token,
        refresh_token=pair.refresh_token,
        user_id=pair.user.id,
        username=pair.user.username,
        expires_at=pair.expires_at,
        refresh_expires_at=pair.refresh_expires_at,
    )


@router.post("/auth/login", response_model=Envelope[TokenRead])
async def login(body: LoginRequest, runtime: RuntimeDep) -> Envelope[TokenRead]:
    """Exchange a username and password for an access token (JWT) and a refresh token."""
    pair = await tokens.login(
        runtime.authenticator, runtime.settings, username=body.username, password=body.password
    )
    return wrap(_token_read(pair))


@router.post("/auth/refresh", response_model=Envelope[TokenRead])
async def refresh(body: RefreshRequest, runtime: RuntimeDep) -> Envelope[TokenRead]:
    """Exchange a refresh token for a new pair; the old refresh token stops working."""
    pair = await tokens.refresh(
        runtime.db, runtime.revocations, runtime.settings, refresh_token=body.refresh_token
    )
    return wrap(_token_read(pair))


@router.post("/auth/logout", response_model=Envelope[MessageRead])
async def logout(principal: PrincipalDep, runtime: RuntimeDep) -> Envelope[MessageRead]:
    """Revoke the access token in use and its refresh token, on every hub replica."""
    await tokens.logout(runtime.revocations, principal)
    return wrap(MessageRead(message="Logged out successfully"))


@router.get("/auth/me", response_model=Envelope[WhoAmI])
async def whoami(principal: PrincipalDep) -> Envelope[WhoAmI]:
    return wrap(
        WhoAmI(
            kind=principal.kind.value,
            id=principal.id,
            name=principal.name,
            role=principal.role,
            project_id=principal.project_id,
            tenant_id=principal.tenant_id,
        )
    )


@router.get("/auth/keys", response_model=Envelope[ApiKeyList])
async def list_keys(
    admin: AdminDep,
    session: SessionDep,
    page: ClusterPage,
    sort: str | None = Query(None, description="created_at, name or role"),
    order: str | None = Query(None, description="asc or desc"),
    fields: str | None = Query(None, description="Comma-separated fields to include"),
    include_revoked: bool = False,
) -> Envelope[ApiKeyList]:
    """API keys (never their secrets), newest first by default."""
    sort_by = Sort.parse(sort, order, allowed=api_keys.SORTABLE, default=api_keys.DEFAULT_SORT)
    wanted = parse_fields(fields, allowed=ApiKeyRead.model_fields)
    records, total = await api_keys.list_api_keys(
        session, admin, page=page, sort=sort_by, include_revoked=include_revoked
    )
    items = [
        select_fields(
            ApiKeyRead.model_validate(r, from_attributes=True).model_dump(mode="json"), wanted
        )
        for r in records
    ]
    return wrap(ApiKeyList(api_keys=items, pagination=Pagination.of(page, total)))


@router.post(
    "/auth/keys", status_code=status.HTTP_201_CREATED, response_model=Envelope[ApiKeyCreated]
)
async def create_key(
    body: ApiKeyCreate, admin: AdminDep, session: SessionDep
) -> Envelope[ApiKeyCreated]:
    """Mint an API key. The response is the only time the key is shown."""
    record, key = await api_keys.create_api_key(
        session,
        admin,
        name=body.name,
        role=body.role,
        project_id=body.project_id,
        tenant_id=body.tenant_id,
        expires_at=body.expires_at,
    )
    read = ApiKeyRead.model_validate(record, from_attributes=True)
    return wrap(ApiKeyCreated(**read.model_dump(), key=key))


@router.delete("/auth/keys/{key_id}", response_model=Envelope[ApiKeyRead])
async def revoke_key(
    key_id: uuid.UUID, admin: AdminDep, session: SessionDep
) -> Envelope[ApiKeyRead]:
    """Revoke an API key; requests with it are refused from now on."""
    record = await api_keys.revoke_api_key(session, admin, key_id)
    return wrap(ApiKeyRead.model_validate(record, from_attributes=True))


@router.post("/auth/users", status_code=status.HTTP_201_CREATED, response_model=Envelope[UserRead])
async def create_user(body: UserCreate, admin: AdminDep, session: SessionDep) -> Envelope[UserRead]:
    user = await users.create_user(
        session, admin, username=body.username, password=body.password, role=body.role
    )
    return wrap(UserRead.model_validate(user, from_attributes=True))
