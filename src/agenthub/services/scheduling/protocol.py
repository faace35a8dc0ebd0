"""The hub's side of the work protocol with node agents (``/api/v1/node``).

The agent long-polls for assignments and reports status, usage and log lines. Nothing here
trusts the agent's memory or the hub's: every poll carries the complete list of what the
agent runs, and the hub reconciles it against what it believes is placed on that node —
assignments are repeated until the agent lists them, a run the agent no longer has is
``lost``, and a run the hub does not recognise (an orphan) is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import utcnow
from agenthub.core.errors import NotFound, Unauthorized
from agenthub.core.events import EventBus, EventDict
from agenthub.db.engine import Database
from agenthub.db.models import AiIdentity, Node, Workload
from agenthub.services import events
from agenthub.services.checkpoints import checkpoints
from agenthub.services.nodes.gateway import require_machine
from agenthub.services.nodes.state import READY, REGISTERED, NodeStates
from agenthub.services.scheduling import logs, workloads
from agenthub.services.scheduling.spec import (
    FAILED,
    FINISHED,
    PLACED,
    RUNNING,
    RUNTIMES,
    SCHEDULED,
    STARTING,
    SUCCEEDED,
    TERMINATED,
)

MAX_WAIT_S = 30.0
REPORTABLE = (STARTING, RUNNING, SUCCEEDED, FAILED, TERMINATED)
_WAKE_TYPES = ("workload.scheduled", "workload.cancel_requested", "checkpoint.requested")
# The env variable a run finds its workload token in (see services/scheduling/tokens.py).
TOKEN_ENV = "AGENTHUB_TOKEN"  # noqa: S105 - a variable name, not a secret
# Makes the credentials of one assignment, as env entries: the workload token and, for a run
# with a Collab identity (an Intelligent Machine's), that identity's id and access token.
TokenMinter = Callable[[Workload, AiIdentity | None], dict[str, str]]


@dataclass(frozen=True)
class RunRef:
    workload_id: uuid.UUID
    attempt: int


@dataclass(frozen=True)
class StatusUpdate:
    workload_id: uuid.UUID
    attempt: int
    status: str
    at: float
    exit_code: int | None = None
    error: str | None = None
    cpu_seconds: float | None = None
    memory_peak_mib: float | None = None


@dataclass(frozen=True)
class LogBatch:
    workload_id: uuid.UUID
    attempt: int
    lines: list[logs.LogLine]


@dataclass
class PollResult:
    assignments: list[dict[str, Any]] = field(default_factory=list)
    cancel: list[dict[str, Any]] = field(default_factory=list)
    # Checkpoints of workspaces on this node to take and upload.
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.assignments or self.cancel or self.snapshots)


def assignment(workload: Workload, *, credentials: dict[str, str] | None = None) -> dict[str, Any]:
    """What a node agent needs to start a run of ``workload``; ``credentials`` (from a
    :data:`TokenMinter`) go in its env over any value the spec set: the hub owns those names."""
    env = {**workload.env, **(credentials or {})}
    return {
        "workload_id": str(workload.id),
        "attempt": workload.attempt,
        "runtime": workload.runtime,
        "command": list(workload.command),
        "env": env,
        "files": dict(workload.files),
        "workspace_manifest": workload.workspace_manifest,
        "workspace": workload.workspace,
        "working_dir": workload.working_dir,
        "image": workload.image,
        "resources": {
            "cpu_millicores": workload.cpu_millicores,
            "memory_mib": workload.memory_mib,
            "gpu_count": workload.gpu_count,
        },
        "timeout_s": workload.timeout_s,
        "network": workload.network,
        "ports": list(workload.ports),
        "volumes": list(workload.volumes),
    }


def _cancel(workload_id: uuid.UUID, attempt: int, reason: str) -> dict[str, Any]:
    return {"workload_id": str(workload_id), "attempt": attempt, "reason": reason}


async def live_node(
    session: AsyncSession, states: NodeStates, principal: Principal | None, machine_id: str
) -> Node:
    """The caller's node: its keepalive TTL must run and this token must have registered it."""
    principal = require_machine(principal)
    state = await states.get(machine_id, session=session)
    if state is None or state.status not in (REGISTERED, READY):
        raise NotFound("Machine state expired or never registered", code="machine_not_found")
    if state.token_id != str(principal.id):
        raise Unauthorized("Invalid token", code="invalid_token")
    node = await session.get(Node, machine_id)
    if node is None:
        raise NotFound("Machine state expired or never registered", code="machine_not_found")
    return node


async def _collab_identities(
    session: AsyncSession, placed: Sequence[Workload]
) -> dict[str, AiIdentity]:
    """The Collab identities of the machines about to start, by machine id (one query)."""
    owners = [
        uuid.UUID(w.owner_id)
        for w in placed
        if w.status == SCHEDULED and w.owner_kind == "machine" and w.owner_id
    ]
    if not owners:
        return {}
    rows = await session.scalars(sa.select(AiIdentity).where(AiIdentity.machine_id.in_(owners)))
    return {str(ai.machine_id): ai for ai in rows}


async def sync(
    session: AsyncSession,
    states: NodeStates,
    principal: Principal | None,
    machine_id: str,
    runtimes: list[str],
    running: list[RunRef],
    mint_token: TokenMinter | None = None,
) -> PollResult:
    """Reconcile what the agent runs with what the hub placed on its node.

    ``mint_token`` makes each assignment's workload token (never stored: minted per answer)."""
    node = await live_node(session, states, principal, machine_id)
    known = sorted({r for r in runtimes if r in RUNTIMES})
    if known != sorted(node.runtimes or []):
        node.runtimes = known
        await events.record(session, "node.updated", {"node_id": node.id, "runtimes": known})
    result = PollResult()
    reported = {(r.workload_id, r.attempt) for r in running}
    placed = await workloads.placed_on(session, machine_id)
    identities = await _collab_identities(session, placed) if mint_token is not None else {}
    for workload in placed:
        key = (workload.id, workload.attempt)
        if key in reported:
            reported.discard(key)
            if workload.cancel_requested_at is not None:
                reason = workload.cancel_reason or "cancelled"
                result.cancel.append(_cancel(workload.id, workload.attempt, reason))
        elif workload.status == SCHEDULED:
            credentials = (
                mint_token(workload, identities.get(workload.owner_id or ""))
                if mint_token is not None
                else None
            )
            result.assignments.append(assignment(workload, credentials=credentials))
        else:
            # Started here, but the agent no longer has it: it restarted, or the run died
            # with it. The restart policy decides whether it runs again.
            await workloads.vanished(session, workload, "the node agent no longer runs it")
    result.snapshots = [
        {"checkpoint_id": str(c.id), "workspace": c.workspace}
        for c in await checkpoints.pending_for_node(session, machine_id)
    ]
    for workload_id, attempt in reported:
        result.cancel.append(_cancel(workload_id, attempt, "not assigned to this node"))
    return result


class NodeWakeups:
    """Wakes the polls parked on this hub process for a node when work or a cancel for that
    node is committed (on any replica: events come through the bus).

    One bus subscriber per process, looking nodes up in a dict: a pass that places 50,000
    workloads publishes 50,000 events, which must not be offered to every parked poll.
    """

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._stack: contextlib.AsyncExitStack | None = None

    def _offer(self, event: EventDict) -> bool:
        if event.get("type") in _WAKE_TYPES:
            for woken in self._waiters.get(event["data"].get("node_id"), ()):
                woken.set()
        return False  # nothing is queued: the waiters are flags

    async def _subscribed(self) -> None:
        if self._stack is None:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(self._bus.subscribe(self._offer))
            self._stack = stack

    @contextlib.asynccontextmanager
    async def waiting(self, node_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set when something for ``node_id`` is committed while the block runs."""
        await self._subscribed()
        woken = asyncio.Event()
        self._waiters.setdefault(node_id, set()).add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters.get(node_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[node_id]

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None


async def poll(
    db: Database,
    bus: EventBus,
    wakeups: NodeWakeups,
    states: NodeStates,
    principal: Principal | None,
    machine_id: str,
    runtimes: list[str],
    running: list[RunRef],
    wait_s: float,
    mint_token: TokenMinter | None = None,
) -> PollResult:
    """Answer at once when there is work or a cancel; else wait up to ``wait_s`` for one.

    No database session is held while waiting (SQLite has one connection per process)."""
    # Waiting before the first look, so an assignment committed in between still wakes us.
    async with wakeups.waiting(machine_id) as woken:
        async with events.unit_of_work(db, bus) as session:
            result = await sync(
                session, states, principal, machine_id, runtimes, running, mint_token
            )
        if result or wait_s <= 0:
            return result
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout=min(wait_s, MAX_WAIT_S))
        if not woken.is_set():
            return result
        async with events.unit_of_work(db, bus) as session:
            return await sync(session, states, principal, machine_id, runtimes, running, mint_token)


async def report(
    session: AsyncSession,
    states: NodeStates,
    principal: Principal | None,
    machine_id: str,
    updates: list[StatusUpdate],
    log_batches: list[LogBatch],
    *,
    max_log_lines: int,
) -> list[dict[str, Any]]:
    """Apply the agent's status updates and log lines; returns runs it should stop."""
    await live_node(session, states, principal, machine_id)
    # Lines first: a final status may re-queue the workload (clearing its node), and the
    # lines that came with it still belong to the run that ended.
    for batch in log_batches:
        workload = await session.get(Workload, batch.workload_id)
        if workload is not None and workload.node_id == machine_id:
            await logs.append(session, workload, batch.attempt, batch.lines, max_log_lines)
    cancel: list[dict[str, Any]] = []
    for update in updates:
        workload = await _current_run(session, machine_id, update.workload_id, update.attempt)
        if workload is None:
            if update.status not in FINISHED:
                cancel.append(
                    _cancel(update.workload_id, update.attempt, "not assigned to this node")
                )
            continue
        await _apply(session, workload, update)
        if workload.status in PLACED and workload.cancel_requested_at is not None:
            cancel.append(
                _cancel(workload.id, workload.attempt, workload.cancel_reason or "cancelled")
            )
    return cancel


async def _current_run(
    session: AsyncSession, machine_id: str, workload_id: uuid.UUID, attempt: int
) -> Workload | None:
    workload = (
        await session.scalars(
            sa.select(Workload).where(Workload.id == workload_id).with_for_update()
        )
    ).one_or_none()
    if workload is None or workload.node_id != machine_id or workload.attempt != attempt:
        return None
    if workload.status not in PLACED:
        return None
    return workload


async def _apply(session: AsyncSession, workload: Workload, update: StatusUpdate) -> None:
    if update.cpu_seconds is not None:
        workload.cpu_seconds = max(workload.cpu_seconds, float(update.cpu_seconds))
    if update.memory_peak_mib is not None:
        workload.memory_peak_mib = max(workload.memory_peak_mib, float(update.memory_peak_mib))
    status = update.status
    if status == STARTING and workload.status == SCHEDULED:
        workload.status = STARTING
        await session.flush()
        await workloads.record(session, workload, "workload.starting")
    elif status == RUNNING and workload.status in (SCHEDULED, STARTING):
        workload.status = RUNNING
        workload.started_at = utcnow()
        await session.flush()
        await workloads.record(session, workload, "workload.running")
    elif status == TERMINATED and workload.requeue_on_stop:
        await workloads.requeue(session, workload, reason=workload.cancel_reason or "node drained")
    elif status in (SUCCEEDED, FAILED, TERMINATED):
        error = update.error
        if status == TERMINATED and workload.cancel_reason:
            error = workload.cancel_reason
        cancelled = workload.cancel_requested_at is not None
        await workloads.finish(
            session,
            workload,
            status,
            exit_code=update.exit_code,
            error=error,
            restart=not cancelled,
        )
