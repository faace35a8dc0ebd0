"""Node TTL state in the database, for hubs without Redis: one ``node_leases`` row per machine,
updated with single atomic statements, and bounded ``node_health_samples``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.db.engine import Database
from agenthub.db.models import NodeHealthSample, NodeLease
from agenthub.services.nodes.state import (
    PENDING,
    Expired,
    KeepaliveOutcome,
    KeepaliveStatus,
    NodeState,
)

_COLUMNS = {
    "cpu": "cpu_millicores",
    "memory": "memory_mib",
}


def _to_state(row: NodeLease) -> NodeState:
    return NodeState(
        machine_id=row.machine_id,
        pool_name=row.pool_name,
        token_id=row.token_id,
        status=row.status,
        provider_name=row.provider_name,
        hostname=row.hostname,
        private_ip=row.private_ip,
        cpu=row.cpu_millicores,
        memory=row.memory_mib,
        gpu_count=row.gpu_count,
        gpu_type=row.gpu_type,
        agent_version=row.agent_version,
        metrics=dict(row.metrics or {}),
        expires_at=row.expires_at,
        last_keepalive=row.last_keepalive,
        last_worker_seen=row.last_worker_seen,
    )


class SqlNodeStates:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        lease = NodeLease.__table__
        self._touch = (
            sa.update(NodeLease)
            .where(
                NodeLease.machine_id == sa.bindparam("mid"),
                NodeLease.status != PENDING,
                NodeLease.expires_at > sa.bindparam("now"),
                NodeLease.token_id == sa.bindparam("tok"),
            )
            .values(
                status="ready",
                last_keepalive=sa.bindparam("now"),
                expires_at=sa.bindparam("expires"),
                metrics=sa.bindparam("metrics", type_=lease.c.metrics.type),
                agent_version=sa.func.coalesce(
                    sa.func.nullif(sa.bindparam("version"), ""), NodeLease.agent_version
                ),
                keepalives=NodeLease.keepalives + 1,
            )
            .returning(NodeLease.keepalives, NodeLease.last_worker_seen, NodeLease.last_sample_at)
        )

    @asynccontextmanager
    async def _use(self, session: AsyncSession | None) -> AsyncIterator[AsyncSession]:
        """The caller's unit of work, or a transaction of our own."""
        if session is not None:
            yield session
        else:
            async with self._db.session() as own:
                yield own

    async def _upsert(self, values: dict[str, Any], session: AsyncSession | None) -> None:
        stmt = self._insert(NodeLease).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["machine_id"],
            set_={k: stmt.excluded[k] for k in values if k != "machine_id"},
        )
        async with self._use(session) as s:
            await s.execute(stmt)

    async def put_pending(
        self,
        machine_id: str,
        pool_name: str,
        token_id: str,
        ttl: int,
        *,
        session: AsyncSession | None = None,
    ) -> None:
        await self._upsert(
            {
                "machine_id": machine_id,
                "pool_name": pool_name,
                "provider_name": "generic",
                "status": PENDING,
                "token_id": token_id,
                "hostname": "",
                "private_ip": "",
                "cpu_millicores": 0,
                "memory_mib": 0,
                "gpu_count": 0,
                "gpu_type": None,
                "agent_version": "",
                "metrics": {},
                "expires_at": time.time() + ttl,
                "last_keepalive": None,
                "last_worker_seen": None,
                "last_sample_at": None,
                "keepalives": 0,
            },
            session,
        )

    async def register(
        self, state: NodeState, ttl: int, *, session: AsyncSession | None = None
    ) -> None:
        values = {_COLUMNS.get(k, k): v for k, v in asdict(state).items()}
        values.update(expires_at=time.time() + ttl, last_sample_at=None, keepalives=0)
        await self._upsert(values, session)

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
        params = {
            "mid": machine_id,
            "tok": token_id,
            "now": now,
            "expires": now + ttl,
            "metrics": metrics,
            "version": agent_version,
        }
        async with self._db.session() as session:
            row = (await session.execute(self._touch, params)).first()
            if row is None:
                owner = await session.scalar(
                    sa.select(NodeLease.token_id).where(
                        NodeLease.machine_id == machine_id,
                        NodeLease.status != PENDING,
                        NodeLease.expires_at > now,
                    )
                )
                status = KeepaliveStatus.FOREIGN if owner else KeepaliveStatus.NOT_FOUND
                return KeepaliveOutcome(status)
            keepalives, last_worker_seen, last_sample_at = row
            due = last_sample_at is None or now - last_sample_at >= sample_interval
            if sample_interval <= 0 or due:
                await self._sample(session, machine_id, now, sample, history)
        return KeepaliveOutcome(
            KeepaliveStatus.OK, first=keepalives == 1, last_worker_seen=last_worker_seen
        )

    @staticmethod
    async def _sample(
        session: AsyncSession, machine_id: str, now: float, sample: dict[str, Any], history: int
    ) -> None:
        await session.execute(
            sa.update(NodeLease)
            .where(NodeLease.machine_id == machine_id)
            .values(last_sample_at=now)
        )
        session.add(NodeHealthSample(node_id=machine_id, data=sample))
        await session.flush()
        # Keep the newest ``history`` samples of this node.
        oldest_kept = (
            sa.select(NodeHealthSample.id)
            .where(NodeHealthSample.node_id == machine_id)
            .order_by(NodeHealthSample.id.desc())
            .offset(history - 1)
            .limit(1)
            .scalar_subquery()
        )
        await session.execute(
            sa.delete(NodeHealthSample).where(
                NodeHealthSample.node_id == machine_id, NodeHealthSample.id < oldest_kept
            )
        )

    async def get(
        self, machine_id: str, *, session: AsyncSession | None = None
    ) -> NodeState | None:
        return (await self.get_many([machine_id], session=session)).get(machine_id)

    async def get_many(
        self, machine_ids: list[str], *, session: AsyncSession | None = None
    ) -> dict[str, NodeState]:
        if not machine_ids:
            return {}
        async with self._use(session) as s:
            rows = await s.scalars(
                sa.select(NodeLease).where(
                    NodeLease.machine_id.in_(machine_ids), NodeLease.expires_at > time.time()
                )
            )
            return {row.machine_id: _to_state(row) for row in rows}

    async def live(
        self, pool_name: str | None = None, *, session: AsyncSession | None = None
    ) -> list[NodeState]:
        query = sa.select(NodeLease).where(
            NodeLease.status != PENDING, NodeLease.expires_at > time.time()
        )
        if pool_name:
            query = query.where(NodeLease.pool_name == pool_name)
        async with self._use(session) as s:
            rows = await s.scalars(query.order_by(NodeLease.machine_id))
            return [_to_state(row) for row in rows]

    async def claim_expired(
        self, now: float, limit: int = 500, *, session: AsyncSession | None = None
    ) -> list[Expired]:
        due = (
            sa.select(NodeLease.machine_id)
            .where(NodeLease.expires_at <= now)
            .order_by(NodeLease.expires_at)
            .limit(limit)
        )
        stmt = (
            sa.delete(NodeLease)
            .where(NodeLease.machine_id.in_(due), NodeLease.expires_at <= now)
            .returning(NodeLease.machine_id, NodeLease.status)
        )
        async with self._use(session) as s:
            rows = (await s.execute(stmt)).all()
        return [Expired(machine_id, status) for machine_id, status in rows]

    async def history(
        self, machine_id: str, limit: int, *, session: AsyncSession | None = None
    ) -> list[dict[str, Any]]:
        async with self._use(session) as s:
            rows = await s.scalars(
                sa.select(NodeHealthSample.data)
                .where(NodeHealthSample.node_id == machine_id)
                .order_by(NodeHealthSample.id.desc())
                .limit(limit)
            )
            return [dict(r) for r in rows]
