"""Fixtures: a backend per test run (AGENTHUB_TEST_BACKEND=sqlite|postgres) and hubs on it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support import Backend, HubProcess, bearer, run_cli

BACKEND = os.environ.get("AGENTHUB_TEST_BACKEND", "sqlite")
POSTGRES_URL = os.environ.get(
    "AGENTHUB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AGENTHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _postgres_admin(sql: str) -> None:
    """Run one statement on the server (in a thread: callers may be inside an event loop)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _postgres_execute(sql)).result()


async def _postgres_execute(sql: str) -> None:
    import asyncpg

    url = make_url(POSTGRES_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def new_database(tmp: Path) -> str:
    """A fresh, empty database on the run's backend; its URL."""
    if BACKEND == "postgres":
        name = f"agenthub_test_{uuid.uuid4().hex[:12]}"
        _postgres_admin(f'CREATE DATABASE "{name}"')
        _created_databases.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    return f"sqlite+aiosqlite:///{tmp / f'agenthub-{uuid.uuid4().hex[:8]}.db'}"


_created_databases: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for name in _created_databases:
        _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def backend_factory(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Make a fresh backend (new database, new Redis prefix) for tests that need isolation."""

    def make() -> Backend:
        tmp = tmp_path_factory.mktemp("db")
        redis = REDIS_URL if BACKEND == "postgres" else None
        return Backend(BACKEND, new_database(tmp), redis, f"agenthub-test-{uuid.uuid4().hex[:8]}:")

    return make


@pytest.fixture(scope="session")
def backend(backend_factory) -> Backend:  # type: ignore[no-untyped-def]
    return backend_factory()


@pytest.fixture(scope="session")
def hub_env(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return backend.env(tmp_path_factory.mktemp("hub-data"))


@pytest.fixture(scope="session")
def hub(hub_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """The hub most tests share (generous rate limits)."""
    process = HubProcess(hub_env, tmp_path_factory.mktemp("logs") / "hub.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def admin_key(hub: HubProcess) -> str:
    """An admin key minted by the CLI straight into the hub's database."""
    import json

    out = run_cli(hub.env, "admin", "create-key", "--name", "test-admin", "--json")
    return str(json.loads(out.stdout)["key"])


@pytest.fixture
async def client(hub: HubProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as c:
        yield c


@pytest.fixture
async def admin(hub: HubProcess, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hub.url, headers=bearer(admin_key), timeout=30) as c:
        yield c
