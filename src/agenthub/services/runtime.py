"""The hub's infrastructure, chosen from settings: the composition root of a hub process.

Redis, when configured, backs rate limits, token revocation and event fan-out so that hub
replicas share them; otherwise the database and an in-process bus do.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis

from agenthub.core.auth import Principal
from agenthub.core.events import EventBus, InProcessBus, RedisBus
from agenthub.core.ratelimit import RateLimiter, RedisRateLimiter, standard_windows
from agenthub.core.revocation import RedisRevocationStore, RevocationStore
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.state import SqlRateLimiter, SqlRevocationStore
from agenthub.services.checkpoints.blobs import BlobStore, build_blob_store
from agenthub.services.identity import ais
from agenthub.services.identity.principals import Authenticator
from agenthub.services.machines.controller import MachineController
from agenthub.services.nodes.redis_state import RedisNodeStates
from agenthub.services.nodes.sql_state import SqlNodeStates
from agenthub.services.nodes.state import NodeStates
from agenthub.services.nodes.tokens import MachineTokenCache
from agenthub.services.projects.budgets import ProjectShares
from agenthub.services.scheduling.leases import Lease, RedisLease, SqlLease
from agenthub.services.scheduling.protocol import NodeWakeups
from agenthub.services.scheduling.scheduler import Scheduler
from agenthub.services.system.experiments import Experiments


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: Redis | None
    bus: EventBus
    limiter: RateLimiter
    # Machine tokens get their own windows: keepalives of many machines are not user traffic.
    machine_limiter: RateLimiter
    # AI identities (Collab) have their own limits, per AI.
    ai_limiter: RateLimiter
    revocations: RevocationStore
    authenticator: Authenticator
    nodes: NodeStates
    scheduler: Scheduler
    machines: MachineController
    blobs: BlobStore
    experiments: Experiments
    wakeups: NodeWakeups
    started_at: float = field(default_factory=time.time)

    def limiter_for(self, principal: Principal | None) -> RateLimiter:
        """The rate limiter whose windows apply to ``principal`` (by IP when ``None``)."""
        if principal is not None and principal.is_machine:
            return self.machine_limiter
        if principal is not None and principal.is_ai:
            return self.ai_limiter
        return self.limiter

    async def close(self) -> None:
        await self.wakeups.close()
        await self.blobs.close()
        await self.bus.stop()
        if self.redis is not None:
            await self.redis.aclose(close_connection_pool=True)
        await self.db.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Wire the infrastructure; :meth:`EventBus.start` must still be awaited."""
    db = Database(settings.resolved_database_url, pool_size=settings.database_pool_size)
    windows = standard_windows(
        settings.rate_limit_per_minute, settings.rate_limit_per_hour, settings.rate_limit_per_day
    )
    machine_windows = standard_windows(
        settings.machine_rate_limit_per_minute,
        settings.machine_rate_limit_per_hour,
        settings.machine_rate_limit_per_day,
    )
    ai_windows = standard_windows(
        settings.collab_rate_limit_per_minute,
        settings.collab_rate_limit_per_hour,
        settings.collab_rate_limit_per_day,
    )
    redis: Redis | None = None
    limiter: RateLimiter
    machine_limiter: RateLimiter
    ai_limiter: RateLimiter
    revocations: RevocationStore
    bus: EventBus
    nodes: NodeStates
    if settings.redis_url:
        # A blocking pool: under a burst, requests wait for a connection (up to the timeout)
        # instead of failing with "Too many connections".
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            decode_responses=True,
            max_connections=settings.redis_max_connections,
            timeout=10,
        )
        redis = Redis(connection_pool=pool)
        limiter = RedisRateLimiter(redis, windows, settings.redis_prefix)
        machine_limiter = RedisRateLimiter(redis, machine_windows, settings.redis_prefix)
        ai_limiter = RedisRateLimiter(redis, ai_windows, settings.redis_prefix)
        revocations = RedisRevocationStore(redis, settings.redis_prefix)
        bus = RedisBus(redis, settings.redis_prefix)
        nodes = RedisNodeStates(redis, settings.redis_prefix)
    else:
        limiter = SqlRateLimiter(db, windows)
        machine_limiter = SqlRateLimiter(db, machine_windows)
        ai_limiter = SqlRateLimiter(db, ai_windows)
        revocations = SqlRevocationStore(db)
        bus = InProcessBus()
        nodes = SqlNodeStates(db)
    authenticator = Authenticator(
        db,
        settings.secret_key,
        revocations,
        MachineTokenCache(settings.machine_token_cache_s),
        ais.AiCache(settings.ai_identity_cache_s),
    )
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def lease(name: str) -> Lease:
        if redis is not None:
            return RedisLease(
                redis, settings.redis_prefix, name, holder, settings.scheduler_lease_ttl_s
            )
        return SqlLease(db, name, holder, settings.scheduler_lease_ttl_s)

    blobs = build_blob_store(settings)
    scheduler = Scheduler(
        db,
        bus,
        nodes,
        lease("scheduler"),
        ProjectShares(),
        strategy=settings.scheduler_strategy,
        batch=settings.scheduler_batch,
        interval_s=settings.scheduler_interval_s,
    )
    return Runtime(
        settings,
        db,
        redis,
        bus,
        limiter,
        machine_limiter,
        ai_limiter,
        revocations,
        authenticator,
        nodes,
        scheduler,
        MachineController(db, bus, settings, lease("machines")),
        blobs,
        Experiments(db, bus, settings, blobs, holder),
        NodeWakeups(bus),
    )
