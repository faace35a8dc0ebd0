"""The scheduler: places queued workloads on ready nodes.

One pass reads the queue (per project, highest priority and oldest first), the schedulable
nodes and what each project already runs, plans placements in memory
(:mod:`~agenthub.services.scheduling.placement`), then writes them node by node. Each node's
write is conditional — the workloads must still be queued and the node must still have the
capacity — so two passes racing (two replicas for a moment, or an old leader that has not
noticed it lost its lease) never overbook a node or place a workload twice. What the pass
looked at and could not place gets a ``pending_reason`` (once per stay in the queue: a stuck
queue is not rewritten on every pass); placing it clears that in the same write.

:class:`Scheduler` is the controller: it runs a pass whenever something that can change the
answer happens (a workload queued or finished, a node ready or changed), and every
``interval_s`` in any case, on the replica that holds the scheduler lease.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from agenthub.core.clock import utcnow
from agenthub.core.events import EventBus
from agenthub.db.engine import Database
from agenthub.db.models import Node, Workload
from agenthub.services import events
from agenthub.services.nodes.state import READY, NodeStates
from agenthub.services.scheduling.leases import Leadership, Lease, run_on_events
from agenthub.services.scheduling.placement import (
    DEFAULT_GREEDINESS,
    NodeSlot,
    Placer,
    Request,
    plan,
)
from agenthub.services.scheduling.spec import PLACED, QUEUED, SCHEDULED

log = logging.getLogger(__name__)

# Events after which a pass may place something it could not before.
WAKE_EVENTS = frozenset(
    {
        "workload.queued",
        "workload.succeeded",
        "workload.failed",
        "workload.terminated",
        "workload.lost",
        "node.ready",
        "node.updated",
        "node.maintenance_changed",
    }
)

# Ids per statement when a pass writes pending reasons (bound parameters stay well below the
# limits of SQLite and asyncpg).
EXPLAIN_CHUNK = 500


class ShareSource(Protocol):
    async def greediness(
        self, session: AsyncSession, projects: Iterable[str | None]
    ) -> dict[str | None, float]:
        """Each project's greediness in 0..1 (its weight in the fair share)."""


class DefaultShares:
    """Every project weighs the same until projects carry their own greediness."""

    async def greediness(
        self, session: AsyncSession, projects: Iterable[str | None]
    ) -> dict[str | None, float]:
        return dict.fromkeys(projects, DEFAULT_GREEDINESS)


@dataclass
class PassResult:
    placed: int = 0
    queued: int = 0  # queued workloads this pass looked at
    explained: int = 0  # queued workloads given a pending_reason by this pass
    conflicts: int = 0  # nodes whose conditional write lost a race
    truncated: bool = False  # some project had more queued than one pass reads


def _project_key(project_id: uuid.UUID | None) -> str | None:
    return str(project_id) if project_id is not None else None


async def _read_queues(
    session: AsyncSession, batch: int, explained: set[uuid.UUID] | None = None
) -> dict[str | None, list[Request]]:
    """Each project's queue, in the order it is served; adds to ``explained`` the ids that
    already carry a ``pending_reason``."""
    projects = (
        await session.execute(
            sa.select(Workload.project_id).where(Workload.status == QUEUED).distinct()
        )
    ).scalars()
    columns = (
        Workload.id,
        Workload.project_id,
        Workload.priority,
        Workload.cpu_millicores,
        Workload.memory_mib,
        Workload.gpu_count,
        Workload.pool_name,
        Workload.runtime,
        Workload.node_selector,
        Workload.tolerations,
        Workload.pending_reason,
    )
    queues: dict[str | None, list[Request]] = {}
    for project_id in list(projects):
        match = (
            Workload.project_id.is_(None)
            if project_id is None
            else Workload.project_id == project_id
        )
        rows = (
            await session.execute(
                sa.select(*columns)
                .where(Workload.status == QUEUED, match)
                .order_by(Workload.priority.desc(), Workload.queued_at, Workload.id)
                .limit(batch)
            )
        ).all()
        if explained is not None:
            explained.update(row.id for row in rows if row.pending_reason is not None)
        queues[_project_key(project_id)] = [
            Request(
                id=row.id,
                project=_project_key(row.project_id),
                priority=row.priority,
                cpu=row.cpu_millicores,
                memory=row.memory_mib,
                gpu=row.gpu_count,
                pool=row.pool_name,
                runtime=row.runtime,
                selector=tuple(sorted((row.node_selector or {}).items())),
                tolerations=tuple(tuple(sorted(t.items())) for t in row.tolerations or []),
            )
            for row in rows
        ]
    return queues


async def _read_nodes(session: AsyncSession, states: NodeStates) -> list[NodeSlot]:
    ready = [s.machine_id for s in await states.live(session=session) if s.status == READY]
    if not ready:
        return []
    nodes = await session.scalars(
        sa.select(Node).where(Node.id.in_(ready), Node.maintenance.is_(False))
    )
    return [
        NodeSlot(
            id=node.id,
            pool=node.pool_name,
            cpu_free=node.cpu_millicores - node.cpu_allocated,
            memory_free=node.memory_mib - node.memory_allocated,
            gpu_free=node.gpu_count - node.gpu_allocated,
            labels=dict(node.labels or {}),
            taints=list(node.taints or []),
            runtimes=frozenset(node.runtimes or []),
        )
        for node in nodes
    ]


async def _project_usage(session: AsyncSession) -> dict[str | None, float]:
    rows = await session.execute(
        sa.select(Workload.project_id, sa.func.sum(Workload.cpu_millicores))
        .where(Workload.status.in_(PLACED))
        .group_by(Workload.project_id)
    )
    return {_project_key(project): float(total or 0) for project, total in rows}


class _LostRace(Exception):
    """The node's capacity changed under this pass; nothing was written for it."""


_PLACED_COLUMNS = (
    Workload.id,
    Workload.name,
    Workload.project_id,
    Workload.tenant_id,
    Workload.attempt,
    Workload.cpu_millicores,
    Workload.memory_mib,
    Workload.gpu_count,
    Workload.owner_kind,
    Workload.owner_id,
)


def _book(node_id: str, cpu: int, memory: int, gpu: int) -> sa.Update:
    """Add to a node's books only if it stays within capacity (a conditional write)."""
    return (
        sa.update(Node)
        .where(
            Node.id == node_id,
            Node.maintenance.is_(False),
            Node.cpu_allocated + cpu <= Node.cpu_millicores,
            Node.memory_allocated + memory <= Node.memory_mib,
            Node.gpu_allocated + gpu <= Node.gpu_count,
        )
        .values(
            cpu_allocated=Node.cpu_allocated + cpu,
            memory_allocated=Node.memory_allocated + memory,
            gpu_allocated=Node.gpu_allocated + gpu,
        )
        .execution_options(synchronize_session=False)
    )


async def _write_node(
    session: AsyncSession, node_id: str, requests: list[Request], now: Any
) -> Sequence[Any]:
    """Place ``requests`` on ``node_id`` if it still has room and they are still queued.

    The node is booked first, for everything planned; then the workloads still queued are
    placed, and what was booked for any that left the queue meanwhile (cancelled, or taken by
    a racing pass) is given back. A failed booking has written nothing, so no savepoint is
    needed.
    """
    cpu = sum(r.cpu for r in requests)
    memory = sum(r.memory for r in requests)
    gpu = sum(r.gpu for r in requests)
    booked = await session.execute(_book(node_id, cpu, memory, gpu))
    if getattr(booked, "rowcount", 0) != 1:
        raise _LostRace(node_id)
    placed = (
        await session.execute(
            sa.update(Workload)
            # `status || ''`: an expression no index serves. Without statistics SQLite would
            # otherwise pick the (status, project_id) index over the primary key once the IN
            # list is long, and scan the whole queue for every node. PostgreSQL is unaffected.
            .where(Workload.id.in_([r.id for r in requests]), Workload.status.concat("") == QUEUED)
            .values(
                status=SCHEDULED,
                node_id=node_id,
                scheduled_at=now,
                updated_at=now,
                pending_reason=None,
            )
            .returning(*_PLACED_COLUMNS)
            .execution_options(synchronize_session=False)
        )
    ).all()
    unused = (
        cpu - sum(row.cpu_millicores for row in placed),
        memory - sum(row.memory_mib for row in placed),
        gpu - sum(row.gpu_count for row in placed),
    )
    if any(unused):
        await session.execute(
            sa.update(Node)
            .where(Node.id == node_id)
            .values(
                cpu_allocated=Node.cpu_allocated - unused[0],
                memory_allocated=Node.memory_allocated - unused[1],
                gpu_allocated=Node.gpu_allocated - unused[2],
            )
            .execution_options(synchronize_session=False)
        )
    return placed


def _text(value: QueryableAttribute[int] | str) -> sa.ColumnElement[str]:
    if isinstance(value, str):
        return sa.literal(value, sa.String)
    return sa.cast(value, sa.String)


def _pending_reason(ready_pools: set[str]) -> sa.ColumnElement[str]:
    """The reason, as an expression over each row (one statement words it per workload)."""
    pool = _text("'") + Workload.pool_name + _text("'")
    no_node = (
        _text("waiting for a node: pool ")
        + pool
        + _text(" has no ready node (none registered, in maintenance, or keepalive lapsed)")
    )
    if not ready_pools:
        return no_node
    gpus = sa.case(
        (Workload.gpu_count > 0, _text(" / ") + _text(Workload.gpu_count) + _text(" GPU")),
        else_=_text(""),
    )
    no_room = (
        _text("waiting for capacity: no ready node in pool ")
        + pool
        + _text(" has ")
        + _text(Workload.cpu_millicores)
        + _text("m CPU / ")
        + _text(Workload.memory_mib)
        + _text(" MiB")
        + gpus
        + _text(" free and fits its runtime '")
        + Workload.runtime
        + _text("', node selector and tolerations")
    )
    return sa.case((Workload.pool_name.in_(sorted(ready_pools)), no_room), else_=no_node)


async def _explain(
    session: AsyncSession, ids: list[uuid.UUID], ready_pools: set[str], now: Any
) -> int:
    """Give the still-queued ``ids`` without a reason the reason they wait: one UPDATE (in
    chunks of :data:`EXPLAIN_CHUNK` ids)."""
    reason = _pending_reason(ready_pools)
    explained = 0
    for start in range(0, len(ids), EXPLAIN_CHUNK):
        done = await session.execute(
            sa.update(Workload)
            .where(
                Workload.id.in_(ids[start : start + EXPLAIN_CHUNK]),
                # As in _write_node: keep SQLite on the primary key.
                Workload.status.concat("") == QUEUED,
                Workload.pending_reason.is_(None),
            )
            .values(pending_reason=reason, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        explained += getattr(done, "rowcount", 0) or 0
    return explained


async def schedule_pass(
    db: Database,
    bus: EventBus,
    states: NodeStates,
    shares: ShareSource,
    *,
    strategy: str = "binpack",
    batch: int = 5000,
) -> PassResult:
    """Place what fits now; one transaction, events published after it commits."""
    result = PassResult()
    async with events.unit_of_work(db, bus) as session:
        explained: set[uuid.UUID] = set()
        queues = await _read_queues(session, batch, explained)
        result.queued = sum(len(q) for q in queues.values())
        result.truncated = any(len(q) >= batch for q in queues.values())
        if not result.queued:
            return result
        slots = await _read_nodes(session, states)
        if not slots:
            waiting = [r.id for q in queues.values() for r in q if r.id not in explained]
            if waiting:
                result.explained = await _explain(session, waiting, set(), utcnow())
            return result
        ready_pools = {slot.pool for slot in slots}
        usage = await _project_usage(session)
        greediness = await shares.greediness(session, list(queues))
        placements = plan(Placer(slots, strategy), queues, greediness, usage)
        by_node: dict[str, list[Request]] = {}
        for request, node_id in placements:
            by_node.setdefault(node_id, []).append(request)
        now = utcnow()
        scheduled: list[tuple[str, dict[str, Any], uuid.UUID | None, uuid.UUID | None]] = []
        for node_id, requests in by_node.items():
            try:
                rows = await _write_node(session, node_id, requests, now)
            except _LostRace:
                result.conflicts += 1
                continue
            result.placed += len(rows)
            scheduled.extend(
                (
                    "workload.scheduled",
                    {
                        "workload_id": str(row.id),
                        "name": row.name,
                        "status": SCHEDULED,
                        "node_id": node_id,
                        "attempt": row.attempt,
                        "owner_kind": row.owner_kind,
                        "owner_id": row.owner_id,
                    },
                    row.project_id,
                    row.tenant_id,
                )
                for row in rows
            )
        if len(placements) < result.queued:
            # Planned (placed, or lost to a race and worth a fresh look) or already explained.
            skip = explained | {request.id for request, _ in placements}
            waiting = [r.id for q in queues.values() for r in q if r.id not in skip]
            if waiting:
                result.explained = await _explain(session, waiting, ready_pools, now)
        await events.record_many(session, scheduled)
    return result


class Scheduler:
    """The scheduling controller of one hub process (active while it holds the lease)."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        states: NodeStates,
        lease: Lease,
        shares: ShareSource | None = None,
        *,
        strategy: str = "binpack",
        batch: int = 5000,
        interval_s: float = 2.0,
    ) -> None:
        self.db, self.bus, self.states, self.lease = db, bus, states, lease
        self.shares = shares or DefaultShares()
        self.strategy, self.batch, self.interval_s = strategy, batch, interval_s
        self.leadership = Leadership(lease)
        self.passes = 0

    async def run_until_idle(self) -> int:
        """Passes until one places nothing more; returns how many were placed."""
        total = 0
        while True:
            result = await schedule_pass(
                self.db,
                self.bus,
                self.states,
                self.shares,
                strategy=self.strategy,
                batch=self.batch,
            )
            self.passes += 1
            total += result.placed
            # A full batch may hide more behind it; a lost race deserves a fresh look.
            if not (result.placed and (result.truncated or result.conflicts)):
                return total

    async def run_forever(self) -> None:
        try:
            await run_on_events(self.bus, WAKE_EVENTS, self.interval_s, self._tick)
        finally:
            await self.leadership.release()

    async def _tick(self) -> None:
        try:
            was_leader = self.leadership.is_leader
            leader = await self.leadership.check()
            if leader != was_leader:
                log.info("scheduler %s: %s", self.lease.holder, "leading" if leader else "standby")
            if leader:
                started = time.perf_counter()
                placed = await self.run_until_idle()
                if placed:
                    log.debug(
                        "placed %d workloads in %.1f ms",
                        placed,
                        (time.perf_counter() - started) * 1000,
                    )
        except Exception:  # a failed pass is retried on the next wake or tick
            log.exception("scheduler pass failed")
