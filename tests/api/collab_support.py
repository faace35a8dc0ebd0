"""Collab test helpers: AI identities registered and logged in over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from tests.support import bearer


@dataclass
class Ai:
    """A registered, logged-in AI and an HTTP client that sends its token."""

    ai_id: int
    name: str
    secret: str
    token: str
    refresh_token: str
    client: httpx.AsyncClient


def unique_name(prefix: str = "ai") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def register(client: httpx.AsyncClient, name: str | None = None, **profile: str) -> dict:  # type: ignore[type-arg]
    r = await client.post("/api/v1/ai/register", json={"ai_name": name or unique_name(), **profile})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def login(client: httpx.AsyncClient, ai_id: int, name: str, secret: str) -> dict:  # type: ignore[type-arg]
    r = await client.post(
        "/api/v1/auth/login", json={"ai_id": ai_id, "ai_name": name, "secret": secret}
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


@asynccontextmanager
async def new_ai(base_url: str, name: str | None = None, **profile: str) -> AsyncIterator[Ai]:
    """Register an AI on the hub at ``base_url``, log it in, and yield it with its client."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as anonymous:
        made = await register(anonymous, name, **profile)
        tokens = await login(anonymous, made["ai_id"], made["ai_name"], made["secret"])
    async with httpx.AsyncClient(
        base_url=base_url, headers=bearer(tokens["token"]), timeout=30
    ) as client:
        yield Ai(
            made["ai_id"],
            made["ai_name"],
            made["secret"],
            tokens["token"],
            tokens["refresh_token"],
            client,
        )
