"""Scheduler placements per second with a full queue, against the same writes done alone.

Run it from the repository root::

    .venv/bin/python benchmarks/scheduler.py [--nodes 1000] [--workloads 50000]
        [--projects 10] [--scenario sqlite|postgres|all] [--json] [--py-spy DIR]

The PostgreSQL scenario needs PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust
authentication; see ``--postgres-dsn``) and Redis on 127.0.0.1:6379 (``--redis-url``).

What it does, per scenario (``hub SQLite``: the default SQLite file in a fresh data dir, no
Redis; ``hub PostgreSQL + Redis``: a PostgreSQL database created for the run and Redis under a
random key prefix):

1. Starts a real hub, ``python -m agenthub serve --port P --log-level warning``, with a fresh
   data dir and secret key, rate limiting on with every limit (per principal and per machine
   token) at 1,000,000,000, ``AGENTHUB_MACHINE_KEEPALIVE_TTL_S=3600`` (no node lapses during
   the run), ``AGENTHUB_SCHEDULER_BATCH=5000`` (the default, stated) and
   ``AGENTHUB_SCHEDULER_INTERVAL_S=600``: the periodic pass, a safety net, never runs during
   the measurement, so what is measured is the event-driven path -- a wake event, then passes
   until the queue is empty -- and no half-done periodic pass that started before the clock
   is counted in or out of it.
2. Mints one pool-wide worker token (``agenthub machine create --pool default --token-type
   worker --json``) and an admin API key (``agenthub admin create-key --json``), and enrolls
   ``--nodes`` simulated nodes (no processes) through the Gateway API, 16 at a time, not
   timed: ``POST /api/v1/machine/register`` (cpu ``64000m``, memory ``256Gi``, runtimes
   ``["sandbox"]``; labels ``zone=a..d`` on every node and ``disk=ssd`` on every other one;
   every 50th node tainted ``dedicated=bench:NoSchedule``), then one
   ``POST /api/v1/machine/keepalive`` each, which makes it ``ready``.
3. Queues ``--workloads`` workloads while no node can take them: one SQL ``UPDATE nodes SET
   maintenance = true`` (so any pass that runs meanwhile finds no node), then a SQLAlchemy
   Core bulk insert from this process into ``workloads`` (plus one ``workload.queued`` row each
   in ``events``), every column filled as ``create_workload`` fills it, the constraint fields
   normalised by ``WorkloadSpec.validated()``. Going through ``POST /api/workloads`` would take
   minutes and measure the API, not the scheduler. Each workload asks for 1000m / 512 MiB and
   belongs to one of ``--projects`` projects (UUIDs) round robin, priorities 0/5/10, queued_at
   1 ms apart; 70% have no constraint, 10% select ``disk=ssd``, 19% select one zone, 1%
   tolerate the taint. The insert is timed and printed, not part of the figure. On PostgreSQL
   the tables are then ``VACUUM ANALYZE``-d (what autovacuum does after a bulk load). The run
   checks that nothing was placed meanwhile.
4. Measures. The clock starts, then one SQL ``UPDATE nodes SET maintenance = false`` for all
   nodes but the last, then ``POST /api/nodes/{last}/maintenance {"enable": false}`` through
   the Cluster API as admin: the real route, which records ``node.maintenance_changed``, a
   scheduler wake event. (Releasing all nodes through the API would put 1,000 HTTP calls on the
   clock; the SQL update costs a few milliseconds and is inside the figure.) Then this process
   polls ``SELECT count(*) FROM workloads WHERE status = 'queued'`` every 50 ms until it is 0.
   ``placements/s`` = workloads / seconds from the start of the clock to the poll that saw 0,
   so it includes the wake-up and up to one poll interval; ``first placement`` is the first
   poll that saw fewer queued (a pass writes its placements in one transaction, so with
   ``projects x 5000 >= workloads`` the first placement and the last are one commit). Events
   the pass publishes after its commit (on Redis: one ``PUBLISH`` per placement) are not in
   the figure. ``hub CPU`` is the hub process's CPU time over that window, in % of one core.
5. Checks the result: every workload ``scheduled`` exactly once (one ``workload.scheduled``
   event each, no duplicates), no node's ``cpu_allocated`` / ``memory_allocated`` above its
   capacity, each node's allocation equal to the sum of the requests placed on it, every
   placement honouring its node selector and the taint. Any failure is printed and the run
   exits non-zero.
6. Baselines, same run, same database, written from this process after the hub is stopped,
   each after putting the rows back as they were (queued, allocations 0, the
   ``workload.scheduled`` events deleted; ``VACUUM ANALYZE`` on PostgreSQL), through the hub's
   own engine settings (same driver, SQLite pragmas and ``BEGIN IMMEDIATE``), exactly the
   placements the hub made, node by node in the hub's grouping, in one transaction:

   * ``floor writes`` -- the same row changes in their plainest form: per node ``UPDATE
     workloads SET status, node_id, scheduled_at, updated_at WHERE id IN (...)`` and ``UPDATE
     nodes SET *_allocated = *_allocated + ...``, then one executemany ``INSERT`` of one
     ``workload.scheduled`` event per placement, no ``RETURNING``. ``x vs floor`` is hub
     placements/s divided by this: below 1 means slower than the writes alone.
   * ``pass statements`` -- the statements a pass sends, worded as ``schedule_pass`` and
     ``events.record_many`` word them (the ``status = 'queued'`` guard and ``RETURNING`` on the
     workload update, the conditional node update, the event insert ``RETURNING`` ids in
     parameter order), still without reading, planning, savepoints or an ORM session. Its gap
     to the floor is the cost of how the statements are worded; the hub's gap to it is
     everything else a pass does.

7. Also times, in this process, the two parts of a pass that need no writes: the hub's own
   queue read (``scheduler._read_queues``: the per-project ``SELECT`` and building one
   ``Request`` per row) and ``placement.plan`` over those requests and one ``NodeSlot`` per
   node (best of 3), so the output shows where the time goes.

``--py-spy DIR`` records the hub with ``py-spy record --nonblocking --format raw`` during the
measured window (``DIR/scheduler-<scenario>.txt``, collapsed stacks, for speedscope or
``flamegraph.pl``); sampling perturbs the figures a little, so record separately from the run
whose numbers you keep. py-spy is looked up on PATH and in ``.tools/bin``.

The hub, PostgreSQL, Redis and this process share the machine's cores, so figures compare only
between runs on the same machine. Everything the run creates is removed at the end, also on
error, Ctrl-C or SIGTERM: the hub is stopped, the PostgreSQL database dropped, the Redis keys
under the run's prefix deleted and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from _loadgen import (
    Server,
    free_port,
    log,
    ratio,
    start_server,
    stop_on_sigterm,
    stop_process,
    tree_cpu_seconds,
    wait_ready,
)
from agenthub.core.clock import utcnow
from agenthub.core.settings import Settings
from agenthub.db.engine import create_engine
from agenthub.db.models import Event, Node, Workload
from agenthub.services import events
from agenthub.services.scheduling.placement import (
    DEFAULT_GREEDINESS,
    NodeSlot,
    Placer,
    Request,
    plan,
)
from agenthub.services.scheduling.scheduler import _read_queues, _write_node
from agenthub.services.scheduling.spec import QUEUED, SCHEDULED, WorkloadSpec
from keepalive import (
    HEALTH_PATH,
    KEEPALIVE_PATH,
    POOL,
    REGISTER_PATH,
    _jsonable,
    cleanup_stack,
    hub_env,
    keepalive_body,
    machine_ids,
    mint_worker_token,
    postgres_database,
    redis_prefix,
)

TARGET_RATE = 5000.0
SCHEDULER_BATCH = 5000  # the hub's default, set explicitly so the figures say what they used
ENROLL_CONCURRENCY = 16
POLL_S = 0.05
PLACE_TIMEOUT_S = 600.0
PLAN_REPEATS = 3
INSERT_CHUNK = 5000
ERROR_CHARS = 500
NODE_CPU, NODE_MEMORY = "64000m", "256Gi"
WORKLOAD_CPU, WORKLOAD_MEMORY = 1000, 512
ZONES = ("a", "b", "c", "d")
PRIORITIES = (0, 0, 5, 0, 10)
TAINT = {"key": "dedicated", "value": "bench", "effect": "NoSchedule"}
TAINT_EVERY = 50  # node index % 50 == 49 is tainted
MAINTENANCE_PATH = "/api/nodes/{}/maintenance"


# --------------------------------------------------------------------------------------------
# What is enrolled and queued
# --------------------------------------------------------------------------------------------


def node_labels(index: int) -> dict[str, str]:
    labels = {"zone": ZONES[index % len(ZONES)]}
    if index % 2 == 0:
        labels["disk"] = "ssd"
    return labels


def node_taints(index: int) -> list[dict[str, str]]:
    return [dict(TAINT)] if index % TAINT_EVERY == TAINT_EVERY - 1 else []


def register_body(token: str, machine_id: str, index: int) -> dict[str, Any]:
    return {
        "token": token,
        "machine_id": machine_id,
        "hostname": f"bench-{index}",
        "provider_name": "generic",
        "pool_name": POOL,
        "cpu": NODE_CPU,
        "memory": NODE_MEMORY,
        "gpu_count": "0",
        "private_ip": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
        "agent_version": "bench",
        "runtimes": ["sandbox"],
        "labels": node_labels(index),
        "taints": node_taints(index),
    }


def constraint_specs() -> list[WorkloadSpec]:
    """The workload shapes, validated (so stored exactly as the API would store them).

    Index ``i % 100`` picks the shape: 0-9 ``disk=ssd``, 10-28 one zone, 29 tolerates the
    taint, the rest none.
    """

    def spec(**kw: Any) -> WorkloadSpec:
        return WorkloadSpec(
            command=["true"], cpu_millicores=WORKLOAD_CPU, memory_mib=WORKLOAD_MEMORY, **kw
        ).validated()

    zones = [spec(node_selector={"zone": z}) for z in ZONES]
    ssd = spec(node_selector={"disk": "ssd"})
    tolerant = spec(tolerations=[{**TAINT, "operator": "Equal"}])
    plain = spec()
    return [ssd] * 10 + [zones[k % len(zones)] for k in range(19)] + [tolerant] + [plain] * 70


def workload_rows(count: int, projects: list[uuid.UUID]) -> list[dict[str, Any]]:
    """One row per workload, every column as ``create_workload`` sets it."""
    shapes = constraint_specs()
    start = utcnow() - timedelta(milliseconds=count)
    rows = []
    for i in range(count):
        s = shapes[i % len(shapes)]
        workload_id = uuid.uuid4()
        queued_at = start + timedelta(milliseconds=i)
        rows.append(
            {
                "id": workload_id,
                "name": None,
                "project_id": projects[i % len(projects)],
                "tenant_id": None,
                "created_by": "bench",
                "owner_kind": None,
                "owner_id": None,
                "pool_name": s.pool_name,
                "cpu_millicores": s.cpu_millicores,
                "memory_mib": s.memory_mib,
                "gpu_count": s.gpu_count,
                "node_selector": s.node_selector,
                "tolerations": s.tolerations,
                "priority": PRIORITIES[(i // len(projects)) % len(PRIORITIES)],
                "restart_policy": s.restart_policy,
                "max_restarts": s.max_restarts,
                "restarts": 0,
                "timeout_s": s.timeout_s,
                "runtime": s.runtime,
                "command": list(s.command),
                "env": {},
                "workspace": str(workload_id),
                "working_dir": None,
                "image": None,
                "network": s.network,
                "ports": [],
                "volumes": [],
                "status": QUEUED,
                "error": None,
                "node_id": None,
                "attempt": 1,
                "exit_code": None,
                "cancel_requested_at": None,
                "cancel_reason": None,
                "requeue_on_stop": False,
                "queued_at": queued_at,
                "scheduled_at": None,
                "started_at": None,
                "finished_at": None,
                "cpu_seconds": 0.0,
                "memory_peak_mib": 0.0,
                "log_lines": 0,
                "created_at": queued_at,
                "updated_at": queued_at,
            }
        )
    return rows


def queued_event(row: dict[str, Any]) -> dict[str, Any]:
    """The ``workload.queued`` event ``create_workload`` records for ``row``."""
    return {
        "type": "workload.queued",
        "data": {
            "workload_id": str(row["id"]),
            "name": None,
            "status": QUEUED,
            "node_id": None,
            "attempt": 1,
            "owner_kind": None,
            "owner_id": None,
        },
        "actor": "bench",
        "project_id": row["project_id"],
        "tenant_id": None,
        "created_at": row["created_at"],
    }


# --------------------------------------------------------------------------------------------
# Hub set-up through its API and CLI
# --------------------------------------------------------------------------------------------


def _cli_json(env: dict[str, str], cwd: Path, *argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "agenthub", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"agenthub {' '.join(argv)} failed ({done.returncode}):\n{out}")
    try:
        payload: dict[str, Any] = json.loads(out[out.index("{") : out.rindex("}") + 1])
    except ValueError as exc:
        raise RuntimeError(f"agenthub {' '.join(argv)} printed no JSON: {out!r}") from exc
    return payload


def mint_admin_key(env: dict[str, str], cwd: Path) -> str:
    key: str = _cli_json(env, cwd, "admin", "create-key", "--name", "bench", "--json")["key"]
    return key


async def _enroll_all(base_url: str, token: str, ids: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    semaphore = asyncio.Semaphore(ENROLL_CONCURRENCY)
    failures: list[str] = []
    limits = httpx.Limits(max_connections=ENROLL_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60.0, trust_env=False, limits=limits
    ) as client:

        async def enroll(index: int, machine_id: str) -> None:
            async with semaphore:
                body = register_body(token, machine_id, index)
                response = await client.post(REGISTER_PATH, json=body, headers=headers)
                if response.is_success:
                    response = await client.post(
                        KEEPALIVE_PATH, json=keepalive_body(machine_id), headers=headers
                    )
            if not response.is_success:
                failures.append(
                    f"{response.request.url.path} {machine_id}: HTTP {response.status_code}: "
                    f"{response.text[:ERROR_CHARS]}"
                )

        await asyncio.gather(*(enroll(i, mid) for i, mid in enumerate(ids)))
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(ids)} nodes failed to enroll: {failures[0]}")


# --------------------------------------------------------------------------------------------
# Database access from this process
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def engines(url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """(writer, reader): the writer has the hub's engine settings (SQLite: ``BEGIN
    IMMEDIATE``, one connection); the reader is a plain engine, so polling never takes
    SQLite's write lock."""
    writer = create_engine(url)
    reader = create_async_engine(url, pool_size=2)
    try:
        yield writer, reader
    finally:
        await writer.dispose()
        await reader.dispose()


async def vacuum_analyze(engine: AsyncEngine) -> None:
    """PostgreSQL: what autovacuum would do after a bulk change (no-op on SQLite)."""
    if engine.dialect.name != "postgresql":
        return
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        for table in ("workloads", "nodes", "events"):
            await conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


async def count_status(reader: AsyncEngine, status: str) -> int:
    async with reader.connect() as conn:
        stmt = sa.select(sa.func.count()).select_from(Workload).where(Workload.status == status)
        return int((await conn.execute(stmt)).scalar_one())


async def set_maintenance(writer: AsyncEngine, enable: bool, keep: str | None = None) -> None:
    stmt = sa.update(Node).values(maintenance=enable)
    if keep is not None:
        stmt = stmt.where(Node.id != keep)
    async with writer.begin() as conn:
        await conn.execute(stmt)


async def insert_workloads(writer: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with writer.begin() as conn:
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            await conn.execute(sa.insert(Workload), chunk)
            await conn.execute(sa.insert(Event), [queued_event(r) for r in chunk])


@dataclass
class InMemory:
    """The parts of a pass that need no writes, timed in this process."""

    queue_read_s: float  # the hub's _read_queues: SELECT per project + one Request per row
    requests: int
    plan_s: float  # best of PLAN_REPEATS
    planned: int

    @property
    def plan_rate(self) -> float:
        return ratio(self.planned, self.plan_s)


async def time_in_memory(writer: AsyncEngine) -> InMemory:
    async with AsyncSession(writer) as session:
        t0 = time.perf_counter()
        queues = await _read_queues(session, SCHEDULER_BATCH)
        read_s = time.perf_counter() - t0
        nodes = (await session.scalars(sa.select(Node).order_by(Node.id))).all()
    requests = sum(len(q) for q in queues.values())
    greediness = dict.fromkeys(queues, DEFAULT_GREEDINESS)
    best, planned = float("inf"), 0
    for _ in range(PLAN_REPEATS):
        slots = [
            NodeSlot(
                id=n.id,
                pool=n.pool_name,
                cpu_free=n.cpu_millicores - n.cpu_allocated,
                memory_free=n.memory_mib - n.memory_allocated,
                gpu_free=n.gpu_count - n.gpu_allocated,
                labels=dict(n.labels or {}),
                taints=list(n.taints or []),
                runtimes=frozenset(n.runtimes or []),
            )
            for n in nodes
        ]
        t0 = time.perf_counter()
        placements = plan(Placer(slots, "binpack"), queues, greediness, {})
        best = min(best, time.perf_counter() - t0)
        planned = len(placements)
    return InMemory(read_s, requests, best, planned)


@dataclass
class Measured:
    placed: int
    elapsed_s: float
    first_s: float
    hub_cpu_pct: float
    polls: int


async def measure(
    hub: Server, admin_key: str, writer: AsyncEngine, reader: AsyncEngine, wake_node: str, n: int
) -> Measured:
    """Release the nodes, wake the scheduler, poll until the queue is empty."""
    proc = psutil.Process(hub.proc.pid)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=60.0, trust_env=False) as client:
        cpu0 = tree_cpu_seconds(proc)
        t0 = time.perf_counter()
        await set_maintenance(writer, False, keep=wake_node)
        response = await client.post(
            MAINTENANCE_PATH.format(wake_node),
            json={"enable": False},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        if not response.is_success:
            raise RuntimeError(
                f"maintenance off for {wake_node}: HTTP {response.status_code}: "
                f"{response.text[:ERROR_CHARS]}"
            )
        first = None
        polls = 0
        while True:
            queued = await count_status(reader, QUEUED)
            now = time.perf_counter() - t0
            polls += 1
            if first is None and queued < n:
                first = now
            if queued == 0:
                cpu1 = tree_cpu_seconds(proc)
                return Measured(n, now, first or now, 100.0 * (cpu1 - cpu0) / now, polls)
            if hub.proc.poll() is not None:
                raise RuntimeError(f"the hub exited:\n{hub.log_tail()}")
            if now > PLACE_TIMEOUT_S:
                raise RuntimeError(
                    f"{queued:,} of {n:,} workloads still queued after {now:.0f} s:\n"
                    f"{hub.log_tail()}"
                )
            await asyncio.sleep(POLL_S)


# --------------------------------------------------------------------------------------------
# Checks and the baseline
# --------------------------------------------------------------------------------------------


async def check_placements(
    reader: AsyncEngine, n: int
) -> tuple[list[str], dict[str, list[Placement]]]:
    """Problems found (empty when all is well) and the placements by node, in the hub's
    grouping."""
    problems: list[str] = []
    async with reader.connect() as conn:
        nodes = {
            row.id: row
            for row in await conn.execute(
                sa.select(
                    Node.id,
                    Node.cpu_millicores,
                    Node.cpu_allocated,
                    Node.memory_mib,
                    Node.memory_allocated,
                    Node.labels,
                    Node.taints,
                )
            )
        }
        placed = (
            await conn.execute(
                sa.select(
                    Workload.id,
                    Workload.project_id,
                    Workload.status,
                    Workload.node_id,
                    Workload.cpu_millicores,
                    Workload.memory_mib,
                    Workload.node_selector,
                    Workload.tolerations,
                )
            )
        ).all()
        scheduled_events = (
            await conn.execute(sa.select(Event.data).where(Event.type == "workload.scheduled"))
        ).scalars()
        event_ids = [d["workload_id"] for d in scheduled_events]
    statuses: dict[str, int] = defaultdict(int)
    by_node: dict[str, list[Placement]] = defaultdict(list)
    cpu: dict[str, int] = defaultdict(int)
    memory: dict[str, int] = defaultdict(int)
    for w in placed:
        statuses[w.status] += 1
        if w.status != SCHEDULED:
            continue
        node = nodes.get(w.node_id)
        if node is None:
            problems.append(f"workload {w.id} scheduled on unknown node {w.node_id!r}")
            continue
        by_node[w.node_id].append(Placement(w.id, w.project_id, w.cpu_millicores, w.memory_mib))
        cpu[w.node_id] += w.cpu_millicores
        memory[w.node_id] += w.memory_mib
        if any(node.labels.get(k) != v for k, v in (w.node_selector or {}).items()):
            problems.append(f"workload {w.id} on node {node.id} breaks its node selector")
        if node.taints and not any(t.get("key") == TAINT["key"] for t in w.tolerations or []):
            problems.append(f"workload {w.id} on tainted node {node.id} without a toleration")
    if statuses.get(SCHEDULED, 0) != n or len(placed) != n:
        problems.append(f"statuses {dict(statuses)}, expected {n:,} scheduled")
    if len(event_ids) != n or len(set(event_ids)) != n:
        problems.append(
            f"{len(event_ids):,} workload.scheduled events for {len(set(event_ids)):,} "
            f"distinct workloads, expected {n:,} for {n:,}"
        )
    for node in nodes.values():
        if node.cpu_allocated > node.cpu_millicores or node.memory_allocated > node.memory_mib:
            problems.append(
                f"node {node.id} overbooked: {node.cpu_allocated}m, {node.memory_allocated} MiB"
            )
        if (node.cpu_allocated, node.memory_allocated) != (cpu[node.id], memory[node.id]):
            problems.append(
                f"node {node.id} books {node.cpu_allocated}m/{node.memory_allocated} MiB, its "
                f"workloads ask {cpu[node.id]}m/{memory[node.id]} MiB"
            )
    return problems[:20], dict(by_node)


async def reset(writer: AsyncEngine) -> None:
    """Put the rows back as they were before the measurement (the hub is stopped)."""
    async with writer.begin() as conn:
        await conn.execute(
            sa.update(Workload)
            .where(Workload.status == SCHEDULED)
            .values(status=QUEUED, node_id=None, scheduled_at=None, updated_at=Workload.queued_at)
        )
        await conn.execute(
            sa.update(Node).values(cpu_allocated=0, memory_allocated=0, gpu_allocated=0)
        )
        await conn.execute(sa.delete(Event).where(Event.type == "workload.scheduled"))
    await vacuum_analyze(writer)


@dataclass(frozen=True)
class Placement:
    """One workload as the hub placed it (what the baselines write again)."""

    id: uuid.UUID
    project_id: uuid.UUID | None
    cpu: int
    memory: int


def scheduled_event(placement: Placement, node_id: str, now: datetime) -> dict[str, Any]:
    """The ``workload.scheduled`` row a pass writes (this benchmark's workloads have no name,
    no owner and are on attempt 1)."""
    return {
        "type": "workload.scheduled",
        "data": {
            "workload_id": str(placement.id),
            "name": None,
            "status": SCHEDULED,
            "node_id": node_id,
            "attempt": 1,
            "owner_kind": None,
            "owner_id": None,
        },
        "actor": None,
        "project_id": placement.project_id,
        "tenant_id": None,
        "created_at": now,
    }


async def floor_writes(writer: AsyncEngine, by_node: dict[str, list[Placement]]) -> float:
    """The same row changes in their plainest form; returns seconds.

    Per node: ``UPDATE workloads SET status, node_id, scheduled_at, updated_at WHERE id IN
    (...)`` and ``UPDATE nodes SET *_allocated = *_allocated + ... WHERE id = ...``; then one
    executemany ``INSERT`` of the events, no ``RETURNING``. One transaction.
    """
    t0 = time.perf_counter()
    async with writer.begin() as conn:
        now = utcnow()
        events: list[dict[str, Any]] = []
        for node_id, placed in by_node.items():
            await conn.execute(
                sa.update(Workload)
                .where(Workload.id.in_([p.id for p in placed]))
                .values(status=SCHEDULED, node_id=node_id, scheduled_at=now, updated_at=now)
            )
            await conn.execute(
                sa.update(Node)
                .where(Node.id == node_id)
                .values(
                    cpu_allocated=Node.cpu_allocated + sum(p.cpu for p in placed),
                    memory_allocated=Node.memory_allocated + sum(p.memory for p in placed),
                )
            )
            events.extend(scheduled_event(p, node_id, now) for p in placed)
        await conn.execute(sa.insert(Event), events)
    return time.perf_counter() - t0


async def pass_writes(writer: AsyncEngine, by_node: dict[str, list[Placement]]) -> float:
    """The writes of a pass, done by the hub's own functions; returns seconds.

    ``_write_node`` per node (the conditional booking, then the still-queued workloads placed)
    and ``events.record_many`` for the events, in one transaction: exactly what
    ``schedule_pass`` writes, without its reads and its plan, so this column cannot drift from
    the code it measures.
    """
    placed_rows = 0
    scheduled: list[tuple[str, dict[str, Any], uuid.UUID | None, uuid.UUID | None]] = []
    t0 = time.perf_counter()
    async with AsyncSession(writer, expire_on_commit=False) as session, session.begin():
        now = utcnow()
        for node_id, placed in by_node.items():
            requests = [
                Request(
                    id=p.id,
                    project=None,
                    priority=0,
                    cpu=p.cpu,
                    memory=p.memory,
                    gpu=0,
                    pool=POOL,
                    runtime="sandbox",
                )
                for p in placed
            ]
            rows = await _write_node(session, node_id, requests, now)
            placed_rows += len(rows)
            scheduled.extend(
                (
                    "workload.scheduled",
                    {
                        "workload_id": str(r.id),
                        "name": r.name,
                        "status": SCHEDULED,
                        "node_id": node_id,
                        "attempt": r.attempt,
                        "owner_kind": r.owner_kind,
                        "owner_id": r.owner_id,
                    },
                    r.project_id,
                    r.tenant_id,
                )
                for r in rows
            )
        await events.record_many(session, scheduled)
        published = events.take_pending(session)
    elapsed = time.perf_counter() - t0
    if len(published) != placed_rows:
        raise RuntimeError(f"pass writes: {placed_rows} placements but {len(published)} events")
    return elapsed


async def write_again(
    writer: AsyncEngine, reader: AsyncEngine, by_node: dict[str, list[Placement]], exact: bool
) -> float:
    """Reset, then write the hub's placements again (``pass_writes`` or ``floor_writes``)."""
    n = sum(len(p) for p in by_node.values())
    await reset(writer)
    if (queued := await count_status(reader, QUEUED)) != n:
        raise RuntimeError(f"reset left {queued:,} of {n:,} workloads queued")
    took = await (pass_writes if exact else floor_writes)(writer, by_node)
    if (scheduled := await count_status(reader, SCHEDULED)) != n:
        raise RuntimeError(f"baseline placed {scheduled:,} of {n:,}")
    return took


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    postgres: bool


VARIANTS = {
    "sqlite": Variant("sqlite", "hub SQLite", postgres=False),
    "postgres": Variant("postgres", "hub PostgreSQL + Redis", postgres=True),
}


@dataclass
class ScenarioResult:
    name: str
    enroll_s: float
    insert_s: float
    in_memory: InMemory
    measured: Measured
    floor_s: float  # floor_writes
    pass_writes_s: float  # pass_writes
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return ratio(self.measured.placed, self.measured.elapsed_s)

    @property
    def floor_rate(self) -> float:
        return ratio(self.measured.placed, self.floor_s)

    @property
    def pass_writes_rate(self) -> float:
        return ratio(self.measured.placed, self.pass_writes_s)


def find_py_spy() -> str:
    found = shutil.which("py-spy")
    local = Path(__file__).resolve().parent.parent / ".tools" / "bin" / "py-spy"
    if found:
        return found
    if local.exists():
        return str(local)
    raise RuntimeError("--py-spy: no py-spy on PATH or in .tools/bin")


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    argv = [find_py_spy(), "record", "--nonblocking", "--format", "raw", "--rate", "100"]
    argv += ["--pid", str(pid), "--output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the clock starts
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_scenario(variant: Variant, args: argparse.Namespace, tmp: Path) -> ScenarioResult:
    log(variant.label)
    with cleanup_stack() as stack:
        database_url = None
        prefix = None
        if variant.postgres:
            database_url = stack.enter_context(postgres_database(args.postgres_dsn))
            prefix = stack.enter_context(redis_prefix(args.redis_url))
        data_dir = tmp / f"data-{variant.key}"
        data_dir.mkdir()
        env = hub_env(data_dir, database_url, args.redis_url if prefix else None, prefix)
        env.update(
            {
                "AGENTHUB_MACHINE_KEEPALIVE_TTL_S": "3600",
                "AGENTHUB_SCHEDULER_INTERVAL_S": "600",
                "AGENTHUB_SCHEDULER_BATCH": str(SCHEDULER_BATCH),
                "AGENTHUB_LOCAL_AGENT": "false",
            }
        )
        url = Settings(data_dir=data_dir, database_url=database_url).resolved_database_url
        port = free_port()
        argv = [sys.executable, "-m", "agenthub", "serve", "--port", str(port)]
        hub = stack.enter_context(
            start_server(
                f"hub-{variant.key}", [*argv, "--log-level", "warning"], env, tmp, tmp, port
            )
        )
        wait_ready(hub, HEALTH_PATH)
        token = mint_worker_token(env, tmp)
        admin_key = mint_admin_key(env, tmp)
        ids = machine_ids(args.nodes)
        t0 = time.perf_counter()
        asyncio.run(_enroll_all(hub.base_url, token, ids))
        enroll_s = time.perf_counter() - t0
        log(f"  enrolled {len(ids):,} nodes (register + keepalive) in {enroll_s:.1f} s")
        projects = [uuid.uuid4() for _ in range(args.projects)]
        rows = workload_rows(args.workloads, projects)

        async def prepare() -> tuple[float, InMemory]:
            async with engines(url) as (writer, reader):
                async with reader.connect() as conn:
                    ready = (
                        await conn.execute(
                            sa.select(sa.func.count())
                            .select_from(Node)
                            .where(Node.status == "ready")
                        )
                    ).scalar_one()
                if ready != len(ids):
                    raise RuntimeError(f"{ready} of {len(ids)} nodes are ready")
                await set_maintenance(writer, True)
                t0 = time.perf_counter()
                await insert_workloads(writer, rows)
                insert_s = time.perf_counter() - t0
                await vacuum_analyze(writer)
                queued = await count_status(reader, QUEUED)
                if queued != len(rows):
                    raise RuntimeError(f"{queued} of {len(rows)} workloads queued before the clock")
                return insert_s, await time_in_memory(writer)

        insert_s, in_memory = asyncio.run(prepare())
        log(f"  queued {len(rows):,} workloads (bulk insert) in {insert_s:.1f} s")
        log(
            f"  in this process: queue read {in_memory.queue_read_s:.2f} s for "
            f"{in_memory.requests:,} requests; plan() {in_memory.plan_s:.2f} s for "
            f"{in_memory.planned:,} placements"
        )
        if in_memory.planned != len(rows):
            raise RuntimeError(
                f"plan() places {in_memory.planned:,} of {len(rows):,}: the workload mix does "
                "not fit the nodes (or needs more than one pass); the run would never finish"
            )
        spy = None
        if args.py_spy:
            spy_out = Path(args.py_spy) / f"scheduler-{variant.key}.txt"
            spy = start_py_spy(hub.proc.pid, spy_out)

        async def run() -> tuple[Measured, list[str], dict[str, list[Placement]]]:
            async with engines(url) as (writer, reader):
                measured = await measure(hub, admin_key, writer, reader, ids[-1], len(rows))
                problems, by_node = await check_placements(reader, len(rows))
                return measured, problems, by_node

        try:
            measured, problems, by_node = asyncio.run(run())
        finally:
            if spy is not None:
                stop_py_spy(spy)
                log(f"  py-spy profile: {spy_out}")
        log(
            f"  placed {measured.placed:,} in {measured.elapsed_s:.2f} s "
            f"({measured.placed / measured.elapsed_s:,.0f}/s); first after {measured.first_s:.2f} s"
        )
        for problem in problems:
            log(f"  CHECK FAILED: {problem}")
        stop_process(hub.proc)  # the baselines write alone

        async def baselines() -> tuple[float, float]:
            async with engines(url) as (writer, reader):
                floor_s = await write_again(writer, reader, by_node, exact=False)
                log(f"  floor writes: {len(rows):,} placements in {floor_s:.2f} s")
                pass_s = await write_again(writer, reader, by_node, exact=True)
                log(f"  the pass's statements alone: {len(rows):,} placements in {pass_s:.2f} s")
                return floor_s, pass_s

        floor_s, pass_writes_s = asyncio.run(baselines())
        log("  cleaning up")
    return ScenarioResult(
        name=variant.label,
        enroll_s=enroll_s,
        insert_s=insert_s,
        in_memory=in_memory,
        measured=measured,
        floor_s=floor_s,
        pass_writes_s=pass_writes_s,
        problems=problems,
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def render_table(results: list[ScenarioResult]) -> str:
    rows = [
        "| scenario | placements/s | x vs floor | all placed after s | first placement s "
        "| hub CPU | floor writes/s | pass statements/s | queue read s | plan() in memory/s "
        "| checks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        m = r.measured
        rows.append(
            f"| {r.name} | {r.rate:,.0f} | {ratio(r.rate, r.floor_rate):.3f} "
            f"| {m.elapsed_s:.2f} | {m.first_s:.2f} | {m.hub_cpu_pct:.0f}% "
            f"| {r.floor_rate:,.0f} | {r.pass_writes_rate:,.0f} "
            f"| {r.in_memory.queue_read_s:.2f} | {r.in_memory.plan_rate:,.0f} "
            f"| {'ok' if not r.problems else 'FAILED'} |"
        )
    return "\n".join(rows)


def target_line(results: list[ScenarioResult]) -> str:
    parts = [
        f"{r.name} {r.rate:,.0f}/s: "
        + ("reached" if r.rate >= TARGET_RATE and not r.problems else "not reached")
        for r in results
    ]
    return f"≥ {TARGET_RATE:,.0f} placements/s target: " + "; ".join(parts)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    keys = ["sqlite", "postgres"] if args.scenario == "all" else [args.scenario]
    results: list[ScenarioResult] = []
    with cleanup_stack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agenthub-bench-")))
        for key in keys:
            results.append(run_scenario(VARIANTS[key], args, tmp))
    return {
        "date": started.isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "nodes": args.nodes,
            "workloads": args.workloads,
            "projects": args.projects,
            "scheduler_batch": SCHEDULER_BATCH,
            "poll_s": POLL_S,
            "node": {"cpu": NODE_CPU, "memory": NODE_MEMORY},
            "workload": {"cpu_millicores": WORKLOAD_CPU, "memory_mib": WORKLOAD_MEMORY},
        },
        "scenarios": [
            {
                "name": r.name,
                "placements_per_s": r.rate,
                "ratio_vs_floor": ratio(r.rate, r.floor_rate),
                "floor_writes_per_s": r.floor_rate,
                "pass_statements_per_s": r.pass_writes_rate,
                "measured": asdict(r.measured),
                "floor_writes_s": r.floor_s,
                "pass_statements_s": r.pass_writes_s,
                "in_memory": {**asdict(r.in_memory), "plan_per_s": r.in_memory.plan_rate},
                "setup": {"enroll_s": r.enroll_s, "insert_s": r.insert_s},
                "problems": r.problems,
            }
            for r in results
        ],
        "target": target_line(results),
        "table": render_table(results),
        "ok": not any(r.problems for r in results),
    }


def print_report(report: dict[str, Any]) -> None:
    machine, s = report["machine"], report["settings"]
    print(
        f"agenthub scheduler benchmark -- {report['date']}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}, {machine['platform']}"
    )
    print(
        f"{s['nodes']:,} nodes ({s['node']['cpu']}, {s['node']['memory']}), "
        f"{s['workloads']:,} queued workloads ({s['workload']['cpu_millicores']}m, "
        f"{s['workload']['memory_mib']} MiB) in {s['projects']} projects; scheduler batch "
        f"{s['scheduler_batch']:,} per project; queue polled every {s['poll_s'] * 1000:.0f} ms"
    )
    for sc in report["scenarios"]:
        print(
            f"- {sc['name']}: set-up (not timed in the figures): {s['nodes']:,} nodes enrolled "
            f"through the API in {sc['setup']['enroll_s']:.1f} s, {s['workloads']:,} workloads "
            f"bulk-inserted in {sc['setup']['insert_s']:.1f} s; floor writes "
            f"{sc['floor_writes_s']:.2f} s, the pass's statements {sc['pass_statements_s']:.2f} s, "
            f"plan() {sc['in_memory']['plan_s']:.3f} s"
        )
    print()
    print(
        "x vs floor = hub placements/s / the same row changes written alone in their plainest "
        "form (< 1: slower); pass statements = the pass's own statements written alone:"
    )
    print()
    print(report["table"])
    print()
    print(report["target"])
    for sc in report["scenarios"]:
        for problem in sc["problems"]:
            print(f"CHECK FAILED ({sc['name']}): {problem}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes (1000)")
    parser.add_argument("--workloads", type=int, default=50000, help="queued workloads (50000)")
    parser.add_argument("--projects", type=int, default=10, help="projects they belong to (10)")
    parser.add_argument(
        "--scenario", choices=["sqlite", "postgres", "all"], default="all", help="(all)"
    )
    parser.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin connection; the benchmark database is created next to it",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis")
    parser.add_argument(
        "--py-spy", metavar="DIR", help="record the hub with py-spy during the measurement"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.workloads < 1 or args.projects < 1:
        parser.error("--nodes, --workloads and --projects must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        report = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted; hub stopped, database, Redis keys and temporary files removed")
        return 130
    if args.json:
        print(json.dumps(_jsonable(report), indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
