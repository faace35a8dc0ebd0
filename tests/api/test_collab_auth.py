"""Collab identities and auth through HTTP: registration, secret login, open login, refresh
rotation, verify, logout revocation (across replicas), expiry, profiles, access grants, and
per-AI rate limits that are exact under concurrency and shared by replicas."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.api.collab_support import login, new_ai, register, unique_name
from tests.support import TEST_SECRET, Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db
LIMIT = 30


def wait_for_fresh_minute(needed_s: float = 20.0) -> None:
    """Fixed windows: start early in a minute so a burst does not straddle two windows."""
    into = time.time() % 60
    if into > 60 - needed_s:
        time.sleep(60 - into + 0.2)


def collab_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = dict(r.json())
    assert body["code"] == code, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "details" in body
    return body


@pytest.fixture(scope="module")
def strict(
    backend_factory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HubProcess, HubProcess, str]]:  # type: ignore[no-untyped-def]
    """Two replicas on one fresh backend: registration by admins only, the document's
    secret-less login on, and 30 requests per AI per minute."""
    backend: Backend = backend_factory()
    tmp: Path = tmp_path_factory.mktemp("collab-strict")
    env = backend.env(
        tmp / "data",
        collab_open_registration="false",
        collab_open_login="true",
        collab_rate_limit_per_minute=str(LIMIT),
    )
    key = json.loads(run_cli(env, "admin", "create-key", "--name", "collab", "--json").stdout)
    a = HubProcess(env, tmp / "a.log")
    b = HubProcess(env, tmp / "b.log")
    try:
        yield a, b, str(key["key"])
    finally:
        a.stop()
        b.stop()


async def test_register_returns_a_secret_once_and_names_are_unique(
    client: httpx.AsyncClient,
) -> None:
    name = unique_name("GLM")
    made = await register(
        client, name, ai_nickname="Nick", expertise="General", version="1.0.0", project="p"
    )
    assert isinstance(made["ai_id"], int)
    assert made["success"] is True
    assert len(made["secret"]) >= 32
    assert made["created_at"].endswith("Z")
    assert {k: made[k] for k in ("ai_name", "ai_nickname", "expertise", "version", "project")} == {
        "ai_name": name,
        "ai_nickname": "Nick",
        "expertise": "General",
        "version": "1.0.0",
        "project": "p",
    }
    again = await client.post("/api/v1/ai/register", json={"ai_name": name})
    collab_error(again, 400, "AI_NAME_EXISTS")
    # Racing registrations of one name: one wins, the others get the same 400.
    racing = unique_name("race")
    results = await asyncio.gather(
        *(client.post("/api/v1/ai/register", json={"ai_name": racing}) for _ in range(6))
    )
    assert sorted(r.status_code for r in results) == [201] + [400] * 5
    for bad in ({"ai_name": ""}, {"ai_name": "has space"}, {"ai_name": "x" * 65}, {}):
        collab_error(await client.post("/api/v1/ai/register", json=bad), 400, "VALIDATION_ERROR")
    collab_error(
        await client.post("/api/v1/ai/register", json={"ai_name": unique_name(), "extra": 1}),
        400,
        "VALIDATION_ERROR",
    )
    # Text no database stores is a 400, not a failed INSERT.
    for field in ("ai_nickname", "expertise", "version", "project"):
        collab_error(
            await client.post(
                "/api/v1/ai/register", json={"ai_name": unique_name(), field: "a\u0000b"}
            ),
            400,
            "VALIDATION_ERROR",
        )
    # The secret is never shown again.
    async with new_ai(str(client.base_url)) as viewer:
        profile = (await viewer.client.get(f"/api/v1/ai/{made['ai_id']}")).json()
    assert "secret" not in profile
    assert "secret_hash" not in profile


async def test_login_needs_the_secret(client: httpx.AsyncClient) -> None:
    made = await register(client)
    ai_id, name, secret = made["ai_id"], made["ai_name"], made["secret"]
    tokens = await login(client, ai_id, name, secret)
    assert tokens["expires_in"] == 3600
    assert tokens["ai_id"] == ai_id
    assert tokens["ai_name"] == name
    assert tokens["ai_nickname"] == name
    for body in (
        {"ai_id": ai_id, "ai_name": name, "secret": "wrong"},
        {"ai_id": ai_id, "ai_name": name},  # the document's secret-less form: off by default
        {"ai_id": ai_id, "ai_name": "other-name", "secret": secret},
        {"ai_id": 987654321, "ai_name": name, "secret": secret},
    ):
        collab_error(await client.post("/api/v1/auth/login", json=body), 401, "INVALID_CREDENTIALS")
    collab_error(
        await client.post("/api/v1/auth/login", json={"ai_name": name}), 400, "VALIDATION_ERROR"
    )


async def test_verify_refresh_rotation_and_logout(client: httpx.AsyncClient) -> None:
    made = await register(client)
    tokens = await login(client, made["ai_id"], made["ai_name"], made["secret"])
    access, refresh = tokens["token"], tokens["refresh_token"]

    verified = await client.post("/api/v1/auth/verify", headers=bearer(access))
    assert verified.status_code == 200, verified.text
    assert verified.json() == {
        "success": True,
        "valid": True,
        "ai_id": made["ai_id"],
        "ai_name": made["ai_name"],
    }
    collab_error(await client.post("/api/v1/auth/verify"), 401, "MISSING_CREDENTIALS")
    collab_error(
        await client.post("/api/v1/auth/verify", headers=bearer("not-a-jwt")), 401, "INVALID_TOKEN"
    )

    rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["expires_in"] == 3600
    assert new["token"] != access
    assert (await client.post("/api/v1/auth/verify", headers=bearer(new["token"]))).json()["valid"]
    # The refresh token was used up: a second use is refused.
    collab_error(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": refresh}),
        401,
        "INVALID_TOKEN",
    )
    # An access token is not a refresh token.
    collab_error(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": new["token"]}),
        401,
        "INVALID_TOKEN",
    )

    out = await client.post("/api/v1/auth/logout", headers=bearer(new["token"]))
    assert out.json() == {"success": True, "message": "Logged out successfully"}
    collab_error(
        await client.get(f"/api/v1/ai/{made['ai_id']}", headers=bearer(new["token"])),
        401,
        "INVALID_TOKEN",
    )
    # Logout revoked the refresh token paired with that access token too.
    collab_error(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}),
        401,
        "INVALID_TOKEN",
    )


async def test_an_expired_token_is_token_expired(client: httpx.AsyncClient) -> None:
    made = await register(client)
    tokens = await login(client, made["ai_id"], made["ai_name"], made["secret"])
    claims = jwt.decode(tokens["token"], TEST_SECRET, algorithms=["HS256"])
    claims["exp"] = int(time.time()) - 5
    expired = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    collab_error(
        await client.post("/api/v1/auth/verify", headers=bearer(expired)), 401, "TOKEN_EXPIRED"
    )
    # A token signed with another key is invalid, not expired.
    forged = jwt.encode({**claims, "exp": int(time.time()) + 60}, "x" * 64, algorithm="HS256")
    collab_error(
        await client.post("/api/v1/auth/verify", headers=bearer(forged)), 401, "INVALID_TOKEN"
    )


async def test_profiles_list_and_updates(
    hub: HubProcess, client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    expertise = unique_name("exp")
    async with (
        new_ai(hub.url, expertise=expertise, version="1.0.0") as a,
        new_ai(hub.url, expertise=expertise) as b,
    ):
        profile = await a.client.get(f"/api/v1/ai/{b.ai_id}")
        assert profile.status_code == 200, profile.text
        body = profile.json()
        assert body["ai_name"] == b.name
        assert body["online"] is True  # it logged in just now
        assert body["last_seen"].endswith("Z")
        collab_error(await a.client.get("/api/v1/ai/99999999"), 404, "AI_NOT_FOUND")
        collab_error(await a.client.get("/api/v1/ai/not-a-number"), 400, "VALIDATION_ERROR")
        collab_error(await client.get(f"/api/v1/ai/{b.ai_id}"), 401, "MISSING_CREDENTIALS")

        listed = (await a.client.get("/api/v1/ai/list", params={"expertise": expertise})).json()
        assert listed["total"] == 2
        assert [x["ai_id"] for x in listed["ais"]] == [a.ai_id, b.ai_id]
        assert all(x["online"] for x in listed["ais"])
        assert set(listed["ais"][0]) == {
            "ai_id",
            "ai_name",
            "ai_nickname",
            "expertise",
            "version",
            "project",
            "online",
        }
        page = (
            await a.client.get(
                "/api/v1/ai/list", params={"expertise": expertise, "limit": 1, "offset": 1}
            )
        ).json()
        assert (page["limit"], page["offset"], page["total"]) == (1, 1, 2)
        assert [x["ai_id"] for x in page["ais"]] == [b.ai_id]
        for params in ({"limit": 101}, {"limit": 0}, {"offset": -1}):
            collab_error(
                await a.client.get("/api/v1/ai/list", params=params), 400, "VALIDATION_ERROR"
            )

        mine = await a.client.put(
            f"/api/v1/ai/{a.ai_id}",
            json={"ai_nickname": "Updated", "expertise": "Machine Learning", "version": "1.1.0"},
        )
        assert mine.status_code == 200, mine.text
        updated = mine.json()
        assert (updated["ai_nickname"], updated["expertise"], updated["version"]) == (
            "Updated",
            "Machine Learning",
            "1.1.0",
        )
        assert updated["project"] is None  # omitted fields are left alone
        assert updated["updated_at"].endswith("Z")
        collab_error(
            await a.client.put(f"/api/v1/ai/{b.ai_id}", json={"expertise": "x"}), 403, "FORBIDDEN"
        )
        collab_error(
            await a.client.put(f"/api/v1/ai/{a.ai_id}", json={"access": "member"}), 403, "FORBIDDEN"
        )
        by_admin = await admin.put(f"/api/v1/ai/{b.ai_id}", json={"expertise": "Ops"})
        assert by_admin.status_code == 200
        assert by_admin.json()["expertise"] == "Ops"


async def test_ai_tokens_are_collab_only_until_granted(
    hub: HubProcess, admin: httpx.AsyncClient
) -> None:
    async with new_ai(hub.url) as ai:
        refused = await ai.client.get("/api/v1/projects")
        assert refused.status_code == 403
        assert refused.json()["error"]["details"]["reason"] == "ai_token_refused"
        assert (await ai.client.get("/api/nodes")).status_code == 403
        granted = await admin.put(f"/api/v1/ai/{ai.ai_id}", json={"access": "member"})
        assert granted.status_code == 200
        assert granted.json()["access"] == "member"
        # The grant applies to the token already in use: it is checked on every request.
        allowed = await ai.client.get("/api/v1/projects")
        assert allowed.status_code == 200, allowed.text
        # Still a member, not an admin.
        assert (await ai.client.post("/api/v1/hub/checkpoint", json={})).status_code == 403


async def test_closed_registration_and_open_login(
    strict: tuple[HubProcess, HubProcess, str],
) -> None:
    a, _b, admin_key = strict
    async with httpx.AsyncClient(base_url=a.url, timeout=30) as anonymous:
        collab_error(
            await anonymous.post("/api/v1/ai/register", json={"ai_name": unique_name()}),
            403,
            "FORBIDDEN",
        )
        made = await anonymous.post(
            "/api/v1/ai/register",
            json={"ai_name": unique_name("GLM47"), "ai_nickname": "GLM47"},
            headers=bearer(admin_key),
        )
        assert made.status_code == 201, made.text
        ai = made.json()
        # The document's form: no secret, on a hub that allows it.
        r = await anonymous.post(
            "/api/v1/auth/login",
            json={"ai_id": ai["ai_id"], "ai_name": ai["ai_name"], "ai_nickname": "GLM47"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["ai_nickname"] == "GLM47"
        # A wrong name is still refused, and a secret given is still checked.
        collab_error(
            await anonymous.post("/api/v1/auth/login", json={"ai_id": ai["ai_id"], "ai_name": "x"}),
            401,
            "INVALID_CREDENTIALS",
        )
        collab_error(
            await anonymous.post(
                "/api/v1/auth/login",
                json={"ai_id": ai["ai_id"], "ai_name": ai["ai_name"], "secret": "wrong"},
            ),
            401,
            "INVALID_CREDENTIALS",
        )


async def _registered(base_url: str, admin_key: str) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        made = await c.post(
            "/api/v1/ai/register", json={"ai_name": unique_name()}, headers=bearer(admin_key)
        )
        ai = made.json()
        r = await c.post(
            "/api/v1/auth/login",
            json={"ai_id": ai["ai_id"], "ai_name": ai["ai_name"], "secret": ai["secret"]},
        )
        return int(ai["ai_id"]), str(r.json()["token"])


async def test_rate_limit_is_exact_under_50_concurrent_requests(
    strict: tuple[HubProcess, HubProcess, str],
) -> None:
    a, _b, admin_key = strict
    _, token = await _registered(a.url, admin_key)
    wait_for_fresh_minute()
    async with httpx.AsyncClient(base_url=a.url, headers=bearer(token), timeout=30) as c:
        responses = await asyncio.gather(*(c.get("/api/v1/ai/list") for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == LIMIT
    assert statuses.count(429) == 50 - LIMIT
    for r in responses:
        assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert int(r.headers["X-RateLimit-Reset"]) > time.time()
    remaining = sorted(
        int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 200
    )
    assert remaining == list(range(LIMIT))
    refused = next(r for r in responses if r.status_code == 429)
    body = collab_error(refused, 429, "RATE_LIMIT_EXCEEDED")
    assert body["error"] == "Rate limit exceeded."
    assert 1 <= body["retry_after"] <= 60
    assert refused.headers["Retry-After"] == str(body["retry_after"])


async def test_rate_limit_is_per_ai_shared_by_replicas_with_status(
    strict: tuple[HubProcess, HubProcess, str],
) -> None:
    a, b, admin_key = strict
    _, first = await _registered(a.url, admin_key)
    _, second = await _registered(a.url, admin_key)
    wait_for_fresh_minute()
    async with (
        httpx.AsyncClient(base_url=a.url, headers=bearer(first), timeout=30) as on_a,
        httpx.AsyncClient(base_url=b.url, headers=bearer(first), timeout=30) as on_b,
        httpx.AsyncClient(base_url=b.url, headers=bearer(second), timeout=30) as other,
    ):
        status = await on_a.get("/api/v1/rate-limit/status")
        assert status.status_code == 200, status.text
        body = status.json()
        assert body["limit"] == LIMIT
        assert body["remaining"] == LIMIT - 1  # this request counted
        assert body["reset"] > time.time()
        assert body["reset_at"].endswith("Z")
        half = LIMIT // 2
        await asyncio.gather(*(on_a.get("/api/v1/ai/list") for _ in range(half)))
        rest = await asyncio.gather(*(on_b.get("/api/v1/ai/list") for _ in range(LIMIT)))
        # Both replicas count against one window: the second replica admits what is left.
        assert [r.status_code for r in rest].count(200) == LIMIT - half - 1
        last = await on_b.get("/api/v1/rate-limit/status")
        assert last.status_code == 429
        # Another AI has its own windows.
        theirs = await other.get("/api/v1/rate-limit/status")
        assert theirs.status_code == 200
        assert theirs.json()["remaining"] == LIMIT - 1


async def test_logout_revokes_on_every_replica(
    strict: tuple[HubProcess, HubProcess, str],
) -> None:
    """Two replicas: Redis holds the denylist on PostgreSQL runs, the shared database on
    SQLite runs."""
    a, b, admin_key = strict
    _, token = await _registered(a.url, admin_key)
    async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as c:
        assert (await c.post(f"{b.url}/api/v1/auth/verify")).status_code == 200
        assert (await c.post(f"{a.url}/api/v1/auth/logout")).status_code == 200
        collab_error(await c.post(f"{b.url}/api/v1/auth/verify"), 401, "INVALID_TOKEN")


CLIENT_EXAMPLE = '''
import httpx as requests
import json

class CloudBrainClient:
    def __init__(self, base_url="http://localhost:8768/api/v1"):
        self.base_url = base_url
        self.token = None

    def login(self, ai_id, ai_name, ai_nickname):
        """Login and get JWT token"""
        response = requests.post(
            f"{self.base_url}/auth/login",
            json={
                "ai_id": ai_id,
                "ai_name": ai_name,
                "ai_nickname": ai_nickname
            }
        )
        data = response.json()
        if data.get("success"):
            self.token = data["token"]
        return data

    def send_message(self, content, target_ai_id):
        """Send message to another AI"""
        headers = {"Authorization": f"Bearer {self.token}"}
        response = requests.post(
            f"{self.base_url}/message/send",
            headers=headers,
            json={
                "message_type": "message",
                "content": content,
                "target_ai_id": target_ai_id
            }
        )
        return response.json()

    def get_inbox(self, limit=20):
        """Get inbox messages"""
        headers = {"Authorization": f"Bearer {self.token}"}
        response = requests.get(
            f"{self.base_url}/message/inbox",
            headers=headers,
            params={"limit": limit}
        )
        return response.json()
'''


async def test_the_documents_python_client_runs(
    strict: tuple[HubProcess, HubProcess, str],
) -> None:
    """The document's client example, with ``requests`` swapped for httpx, against a hub with
    open login: log in as two AIs, send, read the inbox."""
    a, _b, admin_key = strict
    async with httpx.AsyncClient(base_url=a.url, headers=bearer(admin_key), timeout=30) as c:
        glm = (await c.post("/api/v1/ai/register", json={"ai_name": unique_name("GLM47")})).json()
        peer = (await c.post("/api/v1/ai/register", json={"ai_name": unique_name("peer")})).json()

    def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        scope: dict[str, Any] = {}
        exec(compile(CLIENT_EXAMPLE, "client_example", "exec"), scope)  # noqa: S102 - the document's code
        sender = scope["CloudBrainClient"](base_url=f"{a.url}/api/v1")
        logged = sender.login(glm["ai_id"], glm["ai_name"], glm["ai_name"])
        sent = sender.send_message("Hello!", peer["ai_id"])
        receiver = scope["CloudBrainClient"](base_url=f"{a.url}/api/v1")
        receiver.login(peer["ai_id"], peer["ai_name"], peer["ai_name"])
        inbox = receiver.get_inbox()
        return logged, sent, inbox, sender.get_inbox()

    logged, sent, inbox, own_inbox = await asyncio.to_thread(run)
    assert logged["success"] is True
    assert logged["ai_id"] == glm["ai_id"]
    assert sent["success"] is True
    assert sent["sender_id"] == glm["ai_id"]
    assert sent["target_ai_id"] == peer["ai_id"]
    assert inbox["success"] is True
    assert [m["content"] for m in inbox["messages"]] == ["Hello!"]
    assert inbox["messages"][0]["sender_name"] == glm["ai_name"]
    assert own_inbox["messages"] == []
