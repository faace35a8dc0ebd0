"""Node TTL state in Redis: a hash per machine, a sorted set per pool and one for all machines
(scored by expiry, so listing reads an index and never scans the keyspace), and a capped list
of health samples per machine. Every change is one Lua script: atomic, one round trip."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.services.nodes.state import (
    PENDING,
    Expired,
    KeepaliveOutcome,
    KeepaliveStatus,
    NodeState,
)

# A hash outlives its logical expiry by this much so that the reaper can still read what the
# machine was when it claims it; keepalives compare against ``expires_at``, not the Redis TTL.
GRACE_S = 3600
HISTORY_TTL_S = 7 * 86400

_REGISTER = """
local old_pool = redis.call('HGET', KEYS[1], 'pool_name')
if old_pool and old_pool ~= ARGV[4] then
  redis.call('ZREM', ARGV[5] .. old_pool, ARGV[1])
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

_KEEPALIVE = """
local v = redis.call('HMGET', KEYS[1], 'token_id', 'status', 'expires_at', 'pool_name',
                     'last_sample_at', 'last_worker_seen')
local now = tonumber(ARGV[3])
if not v[1] or v[2] == 'pending' or tonumber(v[3]) <= now then return {0} end
if v[1] ~= ARGV[2] then return {-1} end
local expires = now + tonumber(ARGV[4])
local n = redis.call('HINCRBY', KEYS[1], 'keepalives', 1)
redis.call('HSET', KEYS[1], 'status', 'ready', 'last_keepalive', ARGV[3], 'expires_at',
           tostring(expires), 'metrics', ARGV[7])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'agent_version', ARGV[6]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], expires, ARGV[1])
redis.call('ZADD', ARGV[12] .. v[4], expires, ARGV[1])
-- Interval 0: every keepalive is sampled (even one a little behind the last, in time).
if tonumber(ARGV[9]) <= 0 or not v[5] or now - tonumber(v[5]) >= tonumber(ARGV[9]) then
  redis.call('LPUSH', KEYS[3], ARGV[8])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[10]) - 1)
  redis.call('EXPIRE', KEYS[3], ARGV[11])
  redis.call('HSET', KEYS[1], 'last_sample_at', ARGV[3])
end
return {1, n, v[6] or ''}
"""

_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[3] .. 'node:' .. id
  local v = redis.call('HMGET', key, 'status', 'expires_at', 'pool_name')
  if v[2] and tonumber(v[2]) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], v[2], id)
  else
    redis.call('ZREM', KEYS[1], id)
    if v[3] then redis.call('ZREM', ARGV[3] .. 'nodes:pool:' .. v[3], id) end
    redis.call('DEL', key)
    table.insert(out, id)
    table.insert(out, v[1] or '')
  end
end
return out
"""


def _opt_float(value: str | None) -> float | None:
    return float(value) if value else None


class RedisNodeStates:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._all = f"{prefix}nodes:all"
        self._register = redis.register_script(_REGISTER)
        self._keepalive = redis.register_script(_KEEPALIVE)
        self._claim = redis.register_script(_CLAIM)

    def _node(self, machine_id: str) -> str:
        return f"{self._prefix}node:{machine_id}"

    def _pool(self, pool_name: str) -> str:
        return f"{self._prefix}nodes:pool:{pool_name}"

    def _history(self, machine_id: str) -> str:
        return f"{self._prefix}node:{machine_id}:health"

    async def put_pending(
        self,
        machine_id: str,
        pool_name: str,
        token_id: str,
        ttl: int,
        *,
        session: AsyncSession | None = None,
    ) -> None:
        key = self._node(machine_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(
                key,
                mapping={
                    "machine_id": machine_id,
                    "status": PENDING,
                    "pool_name": pool_name,
                    "token_id": token_id,
                    "expires_at": repr(time.time() + ttl),
                },
            )
            pipe.expire(key, ttl)
            pipe.zrem(self._all, machine_id)
            await pipe.execute()

    async def register(
        self, state: NodeState, ttl: int, *, session: AsyncSession | None = None
    ) -> None:
        expires = time.time() + ttl
        fields: dict[str, Any] = {
            "machine_id": state.machine_id,
            "pool_name": state.pool_name,
            "token_id": state.token_id,
            "status": state.status,
            "provider_name": state.provider_name,
            "hostname": state.hostname,
            "private_ip": state.private_ip,
            "cpu": state.cpu,
            "memory": state.memory,
            "gpu_count": state.gpu_count,
            "gpu_type": state.gpu_type or "",
            "agent_version": state.agent_version,
            "metrics": json.dumps(state.metrics),
            "expires_at": repr(expires),
            "keepalives": 0,
        }
        flat: list[Any] = [x for pair in fields.items() for x in pair]
        await self._register(
            keys=[self._node(state.machine_id), self._all, self._pool(state.pool_name)],
            args=[
                state.machine_id,
                repr(expires),
                ttl + GRACE_S,
                state.pool_name,
                f"{self._prefix}nodes:pool:",
                *flat,
            ],
        )

    async def keepalive(
        self,
        machine_id: str,
        token_id: str,
        *,
        now: float,
        ttl: int,
        agent_version: str,
        metrics: dict[str, Any],
        sample: dict[str, Any],
        sample_interval: float,
        history: int,
    ) -> KeepaliveOutcome:
        result = await self._keepalive(
            keys=[self._node(machine_id), self._all, self._history(machine_id)],
            args=[
                machine_id,
                token_id,
                repr(now),
                ttl,
                ttl + GRACE_S,
                agent_version,
                json.dumps(metrics),
                json.dumps(sample),
                sample_interval,
                history,
                HISTORY_TTL_S,
                f"{self._prefix}nodes:pool:",
            ],
        )
        code = int(result[0])
        if code == 0:
            return KeepaliveOutcome(KeepaliveStatus.NOT_FOUND)
        if code == -1:
            return KeepaliveOutcome(KeepaliveStatus.FOREIGN)
        return KeepaliveOutcome(
            KeepaliveStatus.OK, first=int(result[1]) == 1, last_worker_seen=_opt_float(result[2])
        )

    @staticmethod
    def _decode(raw: dict[str, str], now: float) -> NodeState | None:
        expires = float(raw.get("expires_at") or 0)
        if expires <= now or "machine_id" not in raw:
            return None
        return NodeState(
            machine_id=raw["machine_id"],
            pool_name=raw["pool_name"],
            token_id=raw["token_id"],
            status=raw["status"],
            provider_name=raw.get("provider_name", "generic"),
            hostname=raw.get("hostname", ""),
            private_ip=raw.get("private_ip", ""),
            cpu=int(raw.get("cpu") or 0),
            memory=int(raw.get("memory") or 0),
            gpu_count=int(raw.get("gpu_count") or 0),
            gpu_type=raw.get("gpu_type") or None,
            agent_version=raw.get("agent_version", ""),
            metrics=json.loads(raw.get("metrics") or "{}"),
            expires_at=expires,
            last_keepalive=_opt_float(raw.get("last_keepalive")),
            last_worker_seen=_opt_float(raw.get("last_worker_seen")),
        )

    async def get(
        self, machine_id: str, *, session: AsyncSession | None = None
    ) -> NodeState | None:
        return (await self.get_many([machine_id])).get(machine_id)

    async def get_many(
        self, machine_ids: list[str], *, session: AsyncSession | None = None
    ) -> dict[str, NodeState]:
        if not machine_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for machine_id in machine_ids:
                pipe.hgetall(self._node(machine_id))
            raws = await pipe.execute()
        now = time.time()
        found = {}
        for raw in raws:
            state = self._decode(raw, now)
            if state is not None:
                found[state.machine_id] = state
        return found

    async def live(
        self, pool_name: str | None = None, *, session: AsyncSession | None = None
    ) -> list[NodeState]:
        index = self._pool(pool_name) if pool_name else self._all
        ids: list[str] = await self._redis.zrangebyscore(  # type: ignore[assignment]
            index, f"({time.time()!r}", "+inf"
        )
        states = await self.get_many(ids)
        return [states[i] for i in ids if i in states]

    async def claim_expired(
        self, now: float, limit: int = 500, *, session: AsyncSession | None = None
    ) -> list[Expired]:
        flat = await self._claim(keys=[self._all], args=[repr(now), limit, self._prefix])
        return [Expired(flat[i], flat[i + 1] or None) for i in range(0, len(flat), 2)]

    async def history(
        self, machine_id: str, limit: int, *, session: AsyncSession | None = None
    ) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(self._history(machine_id), 0, limit - 1)
        return [json.loads(item) for item in raw]
