"""The scheduler over a real database (SQLite, and PostgreSQL in the ``db`` run): fair share,
no overbooking when passes race, node loss, drain, and the leader lease."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterable

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal, PrincipalKind, Role
from agenthub.core.events import InProcessBus
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.migrate import upgrade
from agenthub.db.models import Node, Workload
from agenthub.services import events
from agenthub.services.nodes.sql_state import SqlNodeStates
from agenthub.services.nodes.state import NodeState
from agenthub.services.scheduling import workloads
from agenthub.services.scheduling.leases import RedisLease, SqlLease
from agenthub.services.scheduling.scheduler import schedule_pass
from agenthub.services.scheduling.spec import LOST, PLACED, QUEUED, SUCCEEDED, WorkloadSpec
from tests.support import Backend

pytestmark = pytest.mark.db
REDIS_URL = os.environ.get("AGENTHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN = Principal(kind=PrincipalKind.API_KEY, id=uuid.uuid4(), name="t", role=Role.ADMIN)


class Shares:
    def __init__(self, greediness: dict[str | None, float]) -> None:
        self.values = greediness

    async def greediness(
        self, session: AsyncSession, projects: Iterable[str | None]
    ) -> dict[str | None, float]:
        return {p: self.values.get(p, 0.5) for p in projects}


class Env:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.bus = InProcessBus()
        self.states = SqlNodeStates(db)
        self.settings = Settings(database_url=db.engine.url.render_as_string(False))

    async def node(self, node_id: str, cpu: int, memory: int = 65536) -> None:
        async with self.db.session() as session:
            session.add(
                Node(
                    id=node_id,
                    pool_name="default",
                    cpu_millicores=cpu,
                    memory_mib=memory,
                    status="ready",
                    runtimes=["sandbox"],
                )
            )
            await session.flush()
            state = NodeState(
                node_id, "default", "tok", status="registered", cpu=cpu, memory=memory
            )
            await self.states.register(state, 600, session=session)
        outcome = await self.states.keepalive(
            node_id,
            "tok",
            now=time.time(),
            ttl=600,
            agent_version="",
            metrics={},
            sample={},
            sample_interval=3600,
            history=1,
        )
        assert outcome.first

    async def submit(self, n: int, project: uuid.UUID | None = None, **spec: object) -> None:
        async with events.unit_of_work(self.db, self.bus) as session:
            for _ in range(n):
                await workloads.create_workload(
                    session,
                    self.settings,
                    ADMIN,
                    WorkloadSpec(command=["true"], project_id=project, **spec),  # type: ignore[arg-type]
                )

    async def count(self, *where: sa.ColumnElement[bool]) -> int:
        async with self.db.session() as session:
            return int(
                await session.scalar(sa.select(sa.func.count(Workload.id)).where(*where)) or 0
            )


@pytest.fixture
async def env(backend_factory) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    await asyncio.to_thread(upgrade, backend.database_url)
    db = Database(backend.database_url, pool_size=8)
    yield Env(db)
    await db.dispose()


async def _books_balance(env: Env) -> None:
    """Every node's allocation equals its placed workloads' requests, within capacity."""
    async with env.db.session() as session:
        for node in (await session.scalars(sa.select(Node))).all():
            placed = (
                await session.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(Workload.cpu_millicores), 0)).where(
                        Workload.node_id == node.id, Workload.status.in_(PLACED)
                    )
                )
            ).scalar_one()
            assert node.cpu_allocated == placed, node.id
            assert node.cpu_allocated <= node.cpu_millicores, node.id


async def test_fair_share_within_ten_percent_over_300_placements(env: Env) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    shares = Shares({str(a): 0.2, str(b): 0.8})
    await env.node("aaaa0001", cpu=10_000)
    await env.submit(300, a)
    await env.submit(300, b)
    rng = random.Random(3)  # noqa: S311 - reproducible test data
    placed = {a: 0, b: 0}
    while sum(placed.values()) < 300:
        result = await schedule_pass(env.db, env.bus, env.states, shares)
        assert result.conflicts == 0
        async with events.unit_of_work(env.db, env.bus) as session:
            running = (
                await session.scalars(sa.select(Workload).where(Workload.status.in_(PLACED)))
            ).all()
            for w in rng.sample(list(running), k=max(1, len(running) // 2)):
                placed[w.project_id] += 1  # type: ignore[index]
                await workloads.finish(session, w, SUCCEEDED, exit_code=0)
    total = sum(placed.values())
    # Within 10% of the 300 placements of the 20/80 split (60 and 240).
    assert abs(placed[a] - 0.2 * total) <= 0.1 * total, placed
    await _books_balance(env)


async def test_racing_passes_never_overbook(env: Env) -> None:
    for i in range(3):
        await env.node(f"bbbb000{i}", cpu=4000)
    await env.submit(200, cpu_millicores=700)
    results = await asyncio.gather(
        *(schedule_pass(env.db, env.bus, env.states, Shares({})) for _ in range(4))
    )
    # 3 nodes x 5 slots of 700m in 4000m: exactly 15 placed, whoever won each node.
    assert sum(r.placed for r in results) == 15
    assert await env.count(Workload.status == "scheduled") == 15
    await _books_balance(env)


async def test_node_lost_requeues_by_restart_policy_and_releases_capacity(env: Env) -> None:
    await env.node("cccc0001", cpu=4000)
    await env.submit(1, restart_policy="on_failure")
    await env.submit(1, restart_policy="never")
    await env.submit(1)  # stays scheduled (never started)
    await schedule_pass(env.db, env.bus, env.states, Shares({}))
    async with env.db.session() as session:
        ws = (await session.scalars(sa.select(Workload).order_by(Workload.created_at))).all()
        ws[0].status = ws[1].status = "running"
    async with events.unit_of_work(env.db, env.bus) as session:
        affected = await workloads.node_lost(session, "cccc0001")
    assert len(affected) == 3
    async with env.db.session() as session:
        by_policy = {
            (w.restart_policy, w.attempt): w.status
            for w in (await session.scalars(sa.select(Workload))).all()
        }
        node = await session.get(Node, "cccc0001")
        assert node is not None
        assert node.cpu_allocated == 0
    # on_failure: lost, then queued again as attempt 2; never: stays lost; unstarted: queued.
    assert by_policy[("on_failure", 2)] == QUEUED
    assert by_policy[("never", 1)] == LOST
    assert by_policy[("never", 2)] == QUEUED


async def test_drain_requeues_unstarted_and_asks_the_agent_to_stop_the_rest(env: Env) -> None:
    await env.node("dddd0001", cpu=4000)
    await env.submit(2)
    await schedule_pass(env.db, env.bus, env.states, Shares({}))
    async with env.db.session() as session:
        first = (await session.scalars(sa.select(Workload).order_by(Workload.created_at))).first()
        assert first is not None
        first.status = "running"
    async with events.unit_of_work(env.db, env.bus) as session:
        await workloads.drain_node(session, "dddd0001", "drained")
    async with env.db.session() as session:
        ws = {w.status: w for w in (await session.scalars(sa.select(Workload))).all()}
    assert ws["queued"].attempt == 2
    assert ws["queued"].node_id is None
    assert ws["running"].requeue_on_stop
    assert ws["running"].cancel_requested_at is not None


async def test_sql_lease_has_one_holder(env: Env) -> None:
    one = SqlLease(env.db, "scheduler", "one", ttl_s=0.5)
    two = SqlLease(env.db, "scheduler", "two", ttl_s=0.5)
    assert await one.acquire()
    assert not await two.acquire()
    assert await one.acquire()  # renewing
    await asyncio.sleep(0.6)  # one stops renewing: the lease lapses
    assert await two.acquire()
    assert not await one.acquire()
    await two.release()
    assert await one.acquire()


async def test_redis_lease_has_one_holder() -> None:
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await redis.ping()
    except Exception:
        await redis.aclose(close_connection_pool=True)
        pytest.skip("no Redis on this run")
    prefix = f"agenthub-test-{uuid.uuid4().hex[:8]}:"
    try:
        one = RedisLease(redis, prefix, "scheduler", "one", ttl_s=0.5)
        two = RedisLease(redis, prefix, "scheduler", "two", ttl_s=0.5)
        assert await one.acquire()
        assert not await two.acquire()
        await asyncio.sleep(0.6)
        assert await two.acquire()
        await two.release()
        assert await one.acquire()
    finally:
        await redis.delete(f"{prefix}lease:scheduler")
        await redis.aclose(close_connection_pool=True)


async def test_a_cancelled_run_on_a_lost_node_is_not_restarted(env: Env) -> None:
    await env.node("eeee0001", cpu=4000)
    await env.submit(1, restart_policy="always")
    await schedule_pass(env.db, env.bus, env.states, Shares({}))
    async with events.unit_of_work(env.db, env.bus) as session:
        w = (await session.scalars(sa.select(Workload))).one()
        w.status = "running"
        await session.flush()
        await workloads.cancel_workload(session, ADMIN, w.id, "stop it")
    async with events.unit_of_work(env.db, env.bus) as session:
        await workloads.node_lost(session, "eeee0001")
    async with env.db.session() as session:
        w = (await session.scalars(sa.select(Workload))).one()
    assert (w.status, w.attempt, w.error) == ("terminated", 1, "stop it")


async def _queued_reasons(env: Env) -> dict[int, tuple[str, str | None]]:
    """cpu request -> (status, pending_reason) of every workload."""
    async with env.db.session() as session:
        rows = (await session.scalars(sa.select(Workload))).all()
        return {w.cpu_millicores: (w.status, w.pending_reason) for w in rows}


async def test_a_workload_no_node_fits_says_why_until_one_does(env: Env) -> None:
    await env.node("ffff0001", cpu=1000)
    await env.submit(1, cpu_millicores=2000, memory_mib=256)
    await env.submit(1, cpu_millicores=500, memory_mib=256)
    result = await schedule_pass(env.db, env.bus, env.states, Shares({}))
    assert (result.placed, result.explained) == (1, 1)
    reasons = await _queued_reasons(env)
    assert reasons[500] == ("scheduled", None)
    assert reasons[2000] == (
        QUEUED,
        "waiting for capacity: no ready node in pool 'default' has 2000m CPU / 256 MiB free "
        "and fits its runtime 'sandbox', node selector and tolerations",
    )
    async with env.db.session() as session:
        before = await session.scalar(
            sa.select(Workload.updated_at).where(Workload.status == QUEUED)
        )
    # A stuck queue is not rewritten by every pass.
    again = await schedule_pass(env.db, env.bus, env.states, Shares({}))
    assert (again.placed, again.explained, again.queued) == (0, 0, 1)
    async with env.db.session() as session:
        after = await session.scalar(
            sa.select(Workload.updated_at).where(Workload.status == QUEUED)
        )
    assert after == before
    # A node with room appears: placed, and the reason goes in the same write.
    await env.node("ffff0002", cpu=4000)
    placed = await schedule_pass(env.db, env.bus, env.states, Shares({}))
    assert (placed.placed, placed.explained) == (1, 0)
    assert (await _queued_reasons(env))[2000] == ("scheduled", None)
    await _books_balance(env)


async def test_without_a_ready_node_the_reason_says_so_and_a_requeue_clears_it(env: Env) -> None:
    await env.submit(1, cpu_millicores=700, gpu_count=1)
    result = await schedule_pass(env.db, env.bus, env.states, Shares({}))
    assert (result.placed, result.explained) == (0, 1)
    status, reason = (await _queued_reasons(env))[700]
    assert status == QUEUED
    assert reason is not None
    assert reason.startswith("waiting for a node: pool 'default' has no ready node")
    # Placed (on a node with a GPU), then its node is drained before it started: queued again
    # with no stale reason; the next pass (the node is in maintenance) explains it afresh.
    await env.node("ffff0003", cpu=4000)
    async with env.db.session() as session:
        await session.execute(sa.update(Node).values(gpu_count=1))
    assert (await schedule_pass(env.db, env.bus, env.states, Shares({}))).placed == 1
    async with events.unit_of_work(env.db, env.bus) as session:
        await session.execute(sa.update(Node).values(maintenance=True))
        await workloads.drain_node(session, "ffff0003", "drained")
    assert (await _queued_reasons(env))[700] == (QUEUED, None)
    assert (await schedule_pass(env.db, env.bus, env.states, Shares({}))).explained == 1
    _, reason = (await _queued_reasons(env))[700]
    assert reason is not None
    assert reason.startswith("waiting for a node:")


async def test_reasons_are_written_in_chunks_for_a_long_queue(env: Env) -> None:
    await env.node("ffff0004", cpu=1000)
    await env.submit(1203, cpu_millicores=1500)
    result = await schedule_pass(env.db, env.bus, env.states, Shares({}))
    assert (result.placed, result.explained) == (0, 1203)
    assert await env.count(Workload.pending_reason.is_(None)) == 0
