"""Dependencies as typed aliases: the runtime, the request's unit of work, the principal.

They are ``async def`` although none awaits much: FastAPI runs a plain ``def`` dependency in a
worker thread, a hand-off that cost more than the rest of a keepalive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from agenthub.api.middleware import AuthState
from agenthub.core.auth import Principal
from agenthub.core.errors import Forbidden, Unauthorized
from agenthub.services import events
from agenthub.services.runtime import Runtime


async def get_runtime(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(connection: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: services flush, this commits once, then publishes the
    events recorded in the transaction (only after the commit, so no event announces a change
    that was rolled back). It reads the runtime itself rather than through :data:`RuntimeDep`:
    one dependency fewer to resolve on nearly every request."""
    runtime: Runtime = connection.app.state.runtime
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        yield session


# scope="function": commit before the response is sent, so a failed commit is an error response
# and never a success the database does not hold.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def _auth_state(connection: HTTPConnection) -> AuthState:
    auth: AuthState | None = getattr(connection.state, "auth", None)
    return auth if auth is not None else AuthState(None, None)


MACHINE_TOKEN_REFUSED = "Machine tokens may only call the Gateway surface and the node routes."  # noqa: S105 - a message
WORKLOAD_TOKEN_REFUSED = "Workload tokens may only call routes a workload uses about itself."  # noqa: S105 - a message


COLLAB_ONLY_REFUSED = (
    "This AI identity may call only the Collab surface (/api/v1/auth, ai, session, message, "
    "collaboration, rate-limit) and the event streams; an admin can grant it more."
)


def _refuse_workload(principal: Principal | None) -> None:
    if principal is not None and principal.is_workload:
        raise Forbidden(WORKLOAD_TOKEN_REFUSED, code="workload_token_refused")


def _refuse_collab_only(principal: Principal | None) -> None:
    if principal is not None and principal.collab_only:
        raise Forbidden(COLLAB_ONLY_REFUSED, code="ai_token_refused")


def _caller(connection: HTTPConnection) -> Principal | None:
    auth = _auth_state(connection)
    if auth.error is not None:
        raise auth.error
    return auth.principal


def _required(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthorized(
            "Authentication required: send 'Authorization: Bearer <API key or token>'.",
            code="missing_credentials",
        )
    if principal.is_machine:
        raise Forbidden(MACHINE_TOKEN_REFUSED, code="machine_token_refused")
    return principal


async def get_optional_principal(request: Request) -> Principal | None:
    """The caller if it sent valid credentials; bad credentials are still refused, and so
    are workload tokens (only routes that take :data:`WorkloadOrPrincipalDep` accept them)."""
    principal = _caller(request)
    _refuse_workload(principal)
    _refuse_collab_only(principal)
    return principal


OptionalPrincipalDep = Annotated[Principal | None, Depends(get_optional_principal)]


async def get_principal(request: Request) -> Principal:
    """The caller: a user, an API key or an AI identity granted more than Collab; never a
    machine token nor a workload token."""
    principal = _required(_caller(request))
    _refuse_workload(principal)
    _refuse_collab_only(principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_collab_principal(request: Request) -> Principal:
    """Any caller :data:`PrincipalDep` accepts, and every AI identity: the Collab surface's
    routes and the event streams (where an AI receives its messages)."""
    principal = _required(_caller(request))
    _refuse_workload(principal)
    return principal


CollabPrincipalDep = Annotated[Principal, Depends(get_collab_principal)]


async def get_optional_collab_principal(request: Request) -> Principal | None:
    """:data:`CollabPrincipalDep` for routes that also serve anonymous callers."""
    principal = _caller(request)
    _refuse_workload(principal)
    if principal is not None and principal.is_machine:
        raise Forbidden(MACHINE_TOKEN_REFUSED, code="machine_token_refused")
    return principal


OptionalCollabPrincipalDep = Annotated[Principal | None, Depends(get_optional_collab_principal)]


async def get_ai(principal: CollabPrincipalDep) -> Principal:
    """The caller as an AI identity: routes that act as one (send, inbox, sessions...)."""
    if not principal.is_ai:
        raise Forbidden(
            "This route acts as an AI identity: log in with POST /api/v1/auth/login and "
            "send that token.",
            code="forbidden",
        )
    return principal


AiDep = Annotated[Principal, Depends(get_ai)]


async def get_workload_or_principal(request: Request) -> Principal:
    """A running workload calling about itself (``principal.is_workload``; its ``id`` is the
    workload's) or any caller :data:`PrincipalDep` accepts; never a machine token."""
    return _required(_caller(request))


WorkloadOrPrincipalDep = Annotated[Principal, Depends(get_workload_or_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    principal.require_admin()
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]


async def websocket_principal(websocket: WebSocket, runtime: Runtime) -> Principal:
    """A WebSocket's caller, from its Authorization header or its ``?token=`` query parameter."""
    auth = _auth_state(websocket)
    if auth.error is not None:
        raise auth.error
    principal = auth.principal
    token = websocket.query_params.get("token")
    if principal is None and token:
        principal = await runtime.authenticator.resolve(f"Bearer {token}")
    if principal is None:
        raise Unauthorized("Authentication required: pass ?token=<API key or token>.")
    if principal.is_machine:
        raise Forbidden(MACHINE_TOKEN_REFUSED, code="machine_token_refused")
    _refuse_workload(principal)
    return principal
