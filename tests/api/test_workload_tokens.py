"""Workload tokens through a real hub: minted into each assignment, good while that run is
placed, refused by every route that does not take them, and dead once the run ends.

The hub has no route that takes workload tokens yet, so the one dependency that does
(``WorkloadOrPrincipalDep``) is served here by a small app on loopback that resolves
credentials with a real :class:`Authenticator` on the hub's own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI, Request
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agenthub.api.deps import PrincipalDep, WorkloadOrPrincipalDep
from agenthub.api.middleware import AuthState
from agenthub.core.auth import PrincipalKind, Role
from agenthub.core.errors import AppError, Unauthorized
from agenthub.core.security import encode_token
from agenthub.db.engine import Database
from agenthub.db.state import SqlRevocationStore
from agenthub.services.identity.principals import Authenticator
from agenthub.services.nodes.tokens import MachineTokenCache
from tests.api.node_support import ScriptedNode, wait_for
from tests.support import TEST_SECRET, Backend, HubProcess, bearer, free_port, run_cli

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def tok_hub(backend_factory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("workload-tokens")
    hub = HubProcess(backend.env(tmp / "data"), tmp / "hub.log")
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def tok_key(tok_hub: HubProcess) -> str:
    out = run_cli(tok_hub.env, "admin", "create-key", "--name", "tok-admin", "--json")
    return str(json.loads(out.stdout)["key"])


@pytest.fixture
async def c(tok_hub: HubProcess, tok_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tok_hub.url, headers=bearer(tok_key), timeout=30) as cl:
        yield cl


@pytest.fixture
async def authenticator(tok_hub: HubProcess) -> AsyncIterator[Authenticator]:
    """The hub's credential resolution, in this process, on the hub's database."""
    db = Database(tok_hub.env["AGENTHUB_DATABASE_URL"], pool_size=2)
    yield Authenticator(db, TEST_SECRET, SqlRevocationStore(db), MachineTokenCache(0))
    await db.dispose()


class _Authenticate:
    """What the hub's middleware does with credentials, and nothing else."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app, self.authenticator = app, authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                auth = AuthState(
                    await self.authenticator.resolve(Headers(scope=scope).get("authorization")),
                    None,
                )
            except AppError as err:
                auth = AuthState(None, err)
            scope.setdefault("state", {})["auth"] = auth
        await self.app(scope, receive, send)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse({"code": exc.code}, status_code=exc.status_code)


def _who(principal: Any) -> dict[str, Any]:
    return {"kind": principal.kind.value, "id": str(principal.id)}


@contextlib.asynccontextmanager
async def whoami_server(authenticator: Authenticator) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.add_exception_handler(AppError, _app_error)

    @app.get("/workload-or-principal")
    async def either(principal: WorkloadOrPrincipalDep) -> dict[str, Any]:
        return _who(principal)

    @app.get("/principal")
    async def strict(principal: PrincipalDep) -> dict[str, Any]:
        return _who(principal)

    app.add_middleware(_Authenticate, authenticator=authenticator)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def new_pool(c: httpx.AsyncClient) -> str:
    """A pool of the test's own: nodes earlier tests left behind stay ready for a while."""
    name = f"p{uuid.uuid4().hex[:8]}"
    r = await c.post("/api/pools", json={"name": name})
    assert r.status_code == 201, r.text
    return name


async def _assigned(node: ScriptedNode, workload_id: str) -> dict[str, Any]:
    poll = (await node.poll(wait_s=5)).json()
    [found] = [a for a in poll["assignments"] if a["workload_id"] == workload_id]
    return dict(found)


async def test_a_run_s_token_works_only_while_it_runs_and_only_where_allowed(
    tok_hub: HubProcess, tok_key: str, c: httpx.AsyncClient, authenticator: Authenticator
) -> None:
    project = str(uuid.uuid4())
    key = (await c.post("/api/auth/keys", json={"name": "p", "project_id": project})).json()
    pool = await new_pool(c)
    node = await ScriptedNode.start(c, tok_hub, tok_key, pool)
    try:
        async with httpx.AsyncClient(
            base_url=tok_hub.url, headers=bearer(key["data"]["key"])
        ) as scoped:
            r = await scoped.post(
                "/api/workloads",
                json={
                    "command": ["sleep", "60"],
                    "pool": pool,
                    "timeout_s": 120,
                    "files": {"a/b.txt": "hi"},
                },
            )
        assert r.status_code == 201, r.text
        workload_id = r.json()["data"]["id"]
        assignment = await _assigned(node, workload_id)
        assert assignment["files"] == {"a/b.txt": "hi"}
        token = assignment["env"]["AGENTHUB_TOKEN"]
        assert token.startswith("ahw_")
        claims = jwt.decode(token.removeprefix("ahw_"), TEST_SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["use"], claims["att"]) == (workload_id, "workload", 1)
        assert (claims["own"], claims["oid"], claims["prj"], claims["ten"]) == (
            None,
            None,
            project,
            None,
        )
        assert claims["exp"] - claims["iat"] == 120 + 3600
        # Never stored: every answer mints its own; the hub keeps no copy to leak.
        again = (await _assigned(node, workload_id))["env"]["AGENTHUB_TOKEN"]
        assert again != token
        stored = (await c.get(f"/api/workloads/{workload_id}")).text
        assert token not in stored
        assert "ahw_" not in stored

        principal = await authenticator.resolve(f"Bearer {token}")
        assert principal is not None
        assert (principal.kind, principal.id, principal.role) == (
            PrincipalKind.WORKLOAD,
            uuid.UUID(workload_id),
            Role.MEMBER,
        )
        assert principal.is_workload
        assert not principal.is_machine
        assert (str(principal.project_id), principal.tenant_id) == (project, None)
        assert principal.token_expires_at is not None
        assert principal.token_expires_at.timestamp() == pytest.approx(time.time() + 3720, abs=60)

        # Every route of the hub refuses it (it is no user, key or machine) ...
        with_token = bearer(token)
        r = await c.get("/api/workloads", headers=with_token)
        assert r.status_code == 403, r.text
        assert "Workload tokens" in r.json()["error"]["message"]
        assert (await c.get("/api/auth/me", headers=with_token)).status_code == 403
        r = await c.get(f"/api/v1/machine/{uuid.uuid4()}/gpus", headers=with_token)
        assert r.status_code == 403, r.text
        r = await c.post(
            "/api/v1/node/poll", json={"machine_id": node.id, "wait_s": 0}, headers=with_token
        )
        assert r.status_code == 403, r.text
        # ... but one that takes WorkloadOrPrincipalDep; which still refuses machine tokens.
        async with whoami_server(authenticator) as who:
            r = await who.get("/workload-or-principal", headers=with_token)
            assert r.json() == {"kind": "workload", "id": workload_id}
            r = await who.get("/workload-or-principal", headers=bearer(tok_key))
            assert (r.status_code, r.json()["kind"]) == (200, "api_key")
            r = await who.get("/workload-or-principal", headers=node.machine.headers)
            assert (r.status_code, r.json()) == (403, {"code": "machine_token_refused"})
            r = await who.get("/workload-or-principal")
            assert (r.status_code, r.json()) == (401, {"code": "missing_credentials"})
            r = await who.get("/principal", headers=with_token)
            assert (r.status_code, r.json()) == (403, {"code": "workload_token_refused"})

            # Running: still good. Finished: refused, whatever its expiry says.
            assert (await node.report(workload_id, 1, "running")).status_code == 200
            assert (await who.get("/workload-or-principal", headers=with_token)).status_code == 200
            assert (await node.report(workload_id, 1, "succeeded", exit_code=0)).status_code == 200
            await wait_for(c, workload_id, {"succeeded"})
            r = await who.get("/workload-or-principal", headers=with_token)
            assert (r.status_code, r.json()) == (401, {"code": "invalid_token"})
        with pytest.raises(Unauthorized) as refused:
            await authenticator.resolve(f"Bearer {again}")
        assert refused.value.code == "invalid_token"
        r = await c.get("/api/workloads", headers=with_token)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "authentication_failed"
    finally:
        await node.close()


async def test_forged_expired_and_stale_tokens_are_refused(
    tok_hub: HubProcess, tok_key: str, c: httpx.AsyncClient, authenticator: Authenticator
) -> None:
    pool = await new_pool(c)
    node = await ScriptedNode.start(c, tok_hub, tok_key, pool)
    try:
        r = await c.post("/api/workloads", json={"command": ["sleep", "60"], "pool": pool})
        workload_id = r.json()["data"]["id"]
        token = (await _assigned(node, workload_id))["env"]["AGENTHUB_TOKEN"]
        claims = jwt.decode(token.removeprefix("ahw_"), TEST_SECRET, algorithms=["HS256"])
        assert claims["exp"] - claims["iat"] == 7 * 24 * 3600  # no timeout: a week

        def signed(secret: str = TEST_SECRET, ttl_s: int = 600, **extra: Any) -> str:
            body, _ = encode_token(
                secret,
                subject=str(extra.pop("sub", workload_id)),
                use=extra.pop("use", "workload"),
                ttl_s=ttl_s,
                extra=extra,
            )
            return "ahw_" + body

        head, payload, signature = token.split(".")
        flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
        refused = {
            "tampered signature": (f"{head}.{payload}.{flipped}", "invalid_token"),
            "another secret": (signed("x" * 48, att=1), "invalid_token"),
            "expired": (signed(ttl_s=-10, att=1), "token_expired"),
            "an access token's use": (signed(use="access", att=1), "invalid_token"),
            "a stale attempt": (signed(att=2), "invalid_token"),
            "no attempt": (signed(), "invalid_token"),
            "an unknown workload": (signed(sub=uuid.uuid4(), att=1), "invalid_token"),
            "not a uuid": (signed(sub="nope", att=1), "invalid_token"),
            "not a JWT": ("ahw_garbage", "invalid_token"),
        }
        assert await authenticator.resolve(f"Bearer {token}") is not None
        for case, (bad, code) in refused.items():
            with pytest.raises(Unauthorized) as err:
                await authenticator.resolve(f"Bearer {bad}")
            assert err.value.code == code, case
            r = await c.get("/api/workloads", headers=bearer(bad))
            assert r.status_code == 401, case
        # Without its prefix it is taken for an access token, and refused as one.
        r = await c.get("/api/workloads", headers=bearer(token.removeprefix("ahw_")))
        assert r.status_code == 401
    finally:
        await node.close()
