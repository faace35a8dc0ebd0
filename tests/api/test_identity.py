"""Identity through HTTP: API keys, users, JWT login/refresh/logout, Basic auth, scopes."""

from __future__ import annotations

import base64
import uuid

import httpx
import jwt
import pytest

from tests.support import TEST_SECRET, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db


def basic(username: str, password: str) -> dict[str, str]:
    return {
        "Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    }


async def make_user(admin: httpx.AsyncClient, role: str = "member") -> tuple[str, str]:
    username, password = f"user-{uuid.uuid4().hex[:8]}", "s3cret-password"
    r = await admin.post(
        "/api/auth/users", json={"username": username, "password": password, "role": role}
    )
    assert r.status_code == 201, r.text
    assert r.json()["data"]["username"] == username
    return username, password


async def test_cli_minted_admin_key_authenticates(admin: httpx.AsyncClient) -> None:
    r = await admin.get("/api/auth/me")
    assert r.status_code == 200
    me = r.json()["data"]
    assert (me["kind"], me["name"], me["role"]) == ("api_key", "test-admin", "admin")


async def test_missing_and_bad_credentials_are_401(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/auth/me")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "authentication_failed"
    for header in ("Bearer ah_not-a-real-key", "Bearer not.a.jwt", "Token abc", "Basic !!!"):
        r = await client.get("/api/auth/me", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.json()["success"] is False


async def test_api_key_lifecycle_and_member_is_forbidden(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    created = await admin.post("/api/auth/keys", json={"name": "member-key", "role": "member"})
    assert created.status_code == 201
    data = created.json()["data"]
    key, key_id = data["key"], data["id"]
    assert key.startswith("ah_")
    assert data["key_prefix"] == key[:10]

    me = await client.get("/api/auth/me", headers=bearer(key))
    assert me.json()["data"]["role"] == "member"
    forbidden = await client.get("/api/auth/keys", headers=bearer(key))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "permission_denied"

    listed = (await admin.get("/api/auth/keys", params={"limit": 100})).json()["data"]["api_keys"]
    assert key_id in {k["id"] for k in listed}
    assert all("key" not in k and "key_hash" not in k for k in listed)

    revoked = await admin.delete(f"/api/auth/keys/{key_id}")
    assert revoked.status_code == 200
    assert revoked.json()["data"]["revoked_at"]
    assert (await client.get("/api/auth/me", headers=bearer(key))).status_code == 401
    missing = await admin.delete(f"/api/auth/keys/{uuid.uuid4()}")
    assert missing.status_code == 404


async def test_keys_are_stored_hashed(admin: httpx.AsyncClient, hub: HubProcess) -> None:
    key = (await admin.post("/api/auth/keys", json={"name": "hashed"})).json()["data"]["key"]
    from agenthub.db.engine import Database

    db = Database(hub.env["AGENTHUB_DATABASE_URL"])
    try:
        async with db.engine.connect() as conn:
            import sqlalchemy as sa

            rows = (await conn.execute(sa.text("SELECT key_hash, key_prefix FROM api_keys"))).all()
            passwords = (await conn.execute(sa.text("SELECT password_hash FROM users"))).all()
    finally:
        await db.dispose()
    assert rows
    assert all(key not in (h, p) for h, p in rows)
    assert all(p.startswith("$argon2") for (p,) in passwords)


async def test_key_list_paginates_sorts_and_selects_fields(admin: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:6]
    for name in ("c", "a", "b"):
        await admin.post("/api/auth/keys", json={"name": f"zz-{tag}-{name}"})
    r = await admin.get(
        "/api/auth/keys", params={"sort": "name", "order": "desc", "limit": 2, "fields": "name,id"}
    )
    assert r.status_code == 200
    data = r.json()["data"]
    assert [k["name"] for k in data["api_keys"]] == [f"zz-{tag}-c", f"zz-{tag}-b"]
    assert all(set(k) == {"name", "id"} for k in data["api_keys"])
    page = data["pagination"]
    assert (page["limit"], page["offset"], page["next_offset"], page["prev_offset"]) == (
        2,
        0,
        2,
        None,
    )
    second = (
        await admin.get(
            "/api/auth/keys", params={"sort": "name", "order": "desc", "limit": 2, "offset": 2}
        )
    ).json()
    assert second["data"]["api_keys"][0]["name"] == f"zz-{tag}-a"
    assert second["data"]["pagination"]["total"] == page["total"]

    for params in (
        {"sort": "key_hash"},
        {"fields": "secret"},
        {"limit": 0},
        {"limit": 101},
        {"order": "up"},
    ):
        bad = await admin.get("/api/auth/keys", params=params)
        assert bad.status_code == 400, params
        assert bad.json()["error"]["code"] == "invalid_request"


async def test_login_jwt_basic_refresh_and_logout(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    username, password = await make_user(admin)
    wrong = await client.post(
        "/api/auth/login", json={"username": username, "password": "nope-nope"}
    )
    assert wrong.status_code == 401
    unknown = await client.post(
        "/api/auth/login", json={"username": "ghost", "password": "nope-nope"}
    )
    assert unknown.status_code == 401

    login = await client.post("/api/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200
    tokens = login.json()["data"]
    assert tokens["username"] == username
    assert tokens["expires_at"].endswith("Z")
    me = await client.get("/api/auth/me", headers=bearer(tokens["token"]))
    assert me.json()["data"]["name"] == username
    assert me.json()["data"]["kind"] == "user"

    assert (await client.get("/api/auth/me", headers=basic(username, password))).status_code == 200
    assert (
        await client.get("/api/auth/me", headers=basic(username, "wrong-pass"))
    ).status_code == 401

    # Refresh rotates: the new pair works, the used refresh token does not.
    refreshed = await client.post(
        "/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    pair = refreshed.json()["data"]
    again = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 401
    # An access token is not a refresh token.
    assert (
        await client.post("/api/auth/refresh", json={"refresh_token": pair["token"]})
    ).status_code == 401

    out = await client.post("/api/auth/logout", headers=bearer(pair["token"]))
    assert out.status_code == 200
    assert out.json() == {"success": True, "data": {"message": "Logged out successfully"}}
    assert (await client.get("/api/auth/me", headers=bearer(pair["token"]))).status_code == 401
    # Logout revoked the paired refresh token too.
    after = await client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert after.status_code == 401
    # The untouched first access token still works until it expires.
    assert (await client.get("/api/auth/me", headers=bearer(tokens["token"]))).status_code == 200


async def test_expired_and_forged_tokens(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    username, password = await make_user(admin)
    token = (
        await client.post("/api/auth/login", json={"username": username, "password": password})
    ).json()["data"]["token"]
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    expired = jwt.encode(
        {**claims, "exp": 1_000_000, "iat": 999_000}, TEST_SECRET, algorithm="HS256"
    )
    r = await client.get("/api/auth/me", headers=bearer(expired))
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"].lower()
    forged = jwt.encode(claims, "another-secret-of-enough-length-xxxxxxxx", algorithm="HS256")
    assert (await client.get("/api/auth/me", headers=bearer(forged))).status_code == 401


async def test_only_admins_manage_identity(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    member_key = (await admin.post("/api/auth/keys", json={"name": "m", "role": "member"})).json()[
        "data"
    ]["key"]
    for method, path, body in (
        ("POST", "/api/auth/keys", {"name": "x"}),
        ("POST", "/api/auth/users", {"username": "x-user", "password": "password123"}),
        ("DELETE", f"/api/auth/keys/{uuid.uuid4()}", None),
    ):
        r = await client.request(method, path, json=body, headers=bearer(member_key))
        assert r.status_code == 403, (method, path)


async def test_user_validation(admin: httpx.AsyncClient) -> None:
    username, _ = await make_user(admin)
    dup = await admin.post(
        "/api/auth/users", json={"username": username, "password": "password123"}
    )
    assert dup.status_code == 409
    assert dup.json()["error"]["code"] == "resource_conflict"
    short = await admin.post("/api/auth/users", json={"username": "shorty", "password": "x"})
    assert short.status_code == 400
    bad = await admin.post(
        "/api/auth/users", json={"username": "bad name!", "password": "password123"}
    )
    assert bad.status_code == 400
    assert "username" in bad.json()["error"]["message"]


def test_cli_user_create_then_login(hub: HubProcess) -> None:
    username = f"cli-{uuid.uuid4().hex[:6]}"
    out = run_cli(
        hub.env, "user", "create", "--username", username, "--password", "cli-password", "--json"
    )
    assert f'"username": "{username}"' in out.stdout
    r = httpx.post(
        f"{hub.url}/api/auth/login", json={"username": username, "password": "cli-password"}
    )
    assert r.status_code == 200
    dup = run_cli(
        hub.env, "user", "create", "--username", username, "--password", "cli-password", check=False
    )
    assert dup.returncode == 1
    assert "already exists" in dup.stderr


async def test_a_refresh_token_is_redeemed_once_under_concurrency(
    admin: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    username, password = await make_user(admin)
    login = await client.post("/api/auth/login", json={"username": username, "password": password})
    refresh_token = login.json()["data"]["refresh_token"]
    import asyncio

    results = await asyncio.gather(
        *(client.post("/api/auth/refresh", json={"refresh_token": refresh_token}) for _ in range(8))
    )
    assert sorted(r.status_code for r in results) == [200] + [401] * 7
