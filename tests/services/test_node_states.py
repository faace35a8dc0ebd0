"""The node TTL stores under concurrency: the database store always, Redis when the run has it
(the PostgreSQL run). Atomic keepalives, exactly-once expiry claims, bounded history."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from agenthub.db.engine import Database
from agenthub.db.migrate import upgrade
from agenthub.services.nodes.redis_state import RedisNodeStates
from agenthub.services.nodes.sql_state import SqlNodeStates
from agenthub.services.nodes.state import KeepaliveStatus, NodeState, NodeStates
from tests.support import Backend

pytestmark = pytest.mark.db
REDIS_URL = os.environ.get("AGENTHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(params=["sql", "redis"])
async def states(request: pytest.FixtureRequest, backend_factory) -> AsyncIterator[NodeStates]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    if request.param == "redis":
        # Redis runs beside both test runs; the store does not depend on the database.
        redis = Redis.from_url(REDIS_URL, decode_responses=True)
        yield RedisNodeStates(redis, backend.redis_prefix)
        keys = [k async for k in redis.scan_iter(f"{backend.redis_prefix}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose(close_connection_pool=True)
        # Every connection, including any a cancelled call left checked out.
        await redis.connection_pool.disconnect(inuse_connections=True)
        return
    await asyncio.to_thread(upgrade, backend.database_url)
    db = Database(backend.database_url)
    yield SqlNodeStates(db)
    await db.dispose()


def _state(machine_id: str, token: str, pool: str = "default") -> NodeState:
    return NodeState(
        machine_id=machine_id,
        pool_name=pool,
        token_id=token,
        status="registered",
        hostname="h",
        private_ip="10.0.0.1",
        cpu=1000,
        memory=1024,
    )


async def _keepalive(
    states: NodeStates, machine_id: str, token: str, ttl: int = 30
) -> KeepaliveStatus:
    outcome = await states.keepalive(
        machine_id,
        token,
        now=time.time(),
        ttl=ttl,
        agent_version="t",
        metrics={"cpu_utilization_pct": 1.0},
        sample={"cpu_usage": 1.0},
        sample_interval=0,
        history=5,
    )
    return outcome.status


async def test_concurrent_keepalives_are_all_counted_and_one_is_first(states: NodeStates) -> None:
    token = str(uuid.uuid4())
    await states.register(_state("0000aaaa", token), 30)
    outcomes = await asyncio.gather(
        *(
            states.keepalive(
                "0000aaaa",
                token,
                now=time.time(),
                ttl=30,
                agent_version="",
                metrics={},
                sample={"n": i},
                sample_interval=0,
                history=5,
            )
            for i in range(40)
        )
    )
    assert all(o.status is KeepaliveStatus.OK for o in outcomes)
    assert sum(o.first for o in outcomes) == 1
    assert len(await states.history("0000aaaa", 100)) == 5
    live = await states.get("0000aaaa")
    assert live is not None
    assert live.status == "ready"


async def test_keepalive_outcomes(states: NodeStates) -> None:
    token = str(uuid.uuid4())
    assert await _keepalive(states, "0000bbbb", token) is KeepaliveStatus.NOT_FOUND
    await states.put_pending("0000bbbb", "default", token, 30)
    assert await _keepalive(states, "0000bbbb", token) is KeepaliveStatus.NOT_FOUND
    await states.register(_state("0000bbbb", token), 30)
    assert await _keepalive(states, "0000bbbb", str(uuid.uuid4())) is KeepaliveStatus.FOREIGN
    assert await _keepalive(states, "0000bbbb", token) is KeepaliveStatus.OK


async def test_expiry_is_claimed_exactly_once(states: NodeStates) -> None:
    token = str(uuid.uuid4())
    ids = [f"1000{i:04x}" for i in range(30)]
    keep = ids[0]
    # The kept one last and with a longer TTL: registering the others on a loaded machine
    # must not use up the time it has until its keepalive.
    for machine_id in [*ids[1:], keep]:
        await states.register(_state(machine_id, token, pool="p1"), 3 if machine_id == keep else 1)
    assert {s.machine_id for s in await states.live("p1")} == set(ids)
    await asyncio.sleep(0.6)
    assert await _keepalive(states, keep, token, ttl=30) is KeepaliveStatus.OK
    await asyncio.sleep(0.6)
    assert await _keepalive(states, ids[1], token) is KeepaliveStatus.NOT_FOUND
    claims = await asyncio.gather(*(states.claim_expired(time.time()) for _ in range(4)))
    claimed = [e.machine_id for batch in claims for e in batch]
    assert sorted(claimed) == sorted(ids[1:])  # each once, the kept-alive one not at all
    assert all(e.status == "registered" for batch in claims for e in batch)
    assert [s.machine_id for s in await states.live("p1")] == [keep]
    assert await states.claim_expired(time.time()) == []
