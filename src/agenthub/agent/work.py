"""The node agent's work loop: long-poll the hub for assignments and cancels, run them.

Only the node connects: it parks a ``POST /api/v1/node/poll`` at the hub, which answers as soon as
it has something for the node (an assignment, a cancel) or after ``wait_s``. Every poll lists what
the agent runs, so that the hub can reconcile after either side restarted; an assignment comes back
on every poll until it is listed, so the agent dedupes by ``(workload_id, attempt)``. Status and
output go out through the :class:`~agenthub.agent.reporter.Reporter`, beside the poll.

A workload stays listed as running until the hub has taken its final status: a poll that raced
ahead of that report must not make the hub think the workload vanished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx

from agenthub.agent.checkpoints import Snapshots
from agenthub.agent.reporter import FINAL_STATUSES, MACHINE_NOT_FOUND_WAIT_S, Key, Reporter
from agenthub.agent.retry import Backoff
from agenthub.agent.runtimes.base import Runtime
from agenthub.agent.workload import STOP_GRACE_S, USAGE_INTERVAL_S, Workload
from agenthub.client.gateway import GatewayError, InvalidToken, MachineNotFound
from agenthub.client.node import NodeClient

logger = logging.getLogger("agenthub.agent")

DEFAULT_POLL_WAIT_S = 20.0
RETRY_CAP_S = 10.0
# Polls start at least this far apart: a hub that keeps answering at once (an orphan cancel the
# node has nothing to do about) must not turn the poll into a busy loop against its rate limit.
MIN_POLL_INTERVAL_S = 0.5
# Finished keys remembered to ignore an assignment the hub repeats from a stale view.
_FINISHED_MEMORY = 4096
SHUTDOWN_REASON = "the node agent is shutting down"


def _key(item: dict[str, Any]) -> Key | None:
    workload_id, attempt = item.get("workload_id"), item.get("attempt", 1)
    if not isinstance(workload_id, str) or not workload_id:
        return None
    try:
        return workload_id, int(attempt)
    except (TypeError, ValueError):
        return None


class WorkLoop:
    """Polls for work, runs it and reports on it. Owns ``client`` (closed by ``shutdown()``)."""

    def __init__(
        self,
        client: NodeClient,
        machine_id: str,
        runtimes: dict[str, Runtime],
        work_dir: Path,
        *,
        poll_wait_s: float = DEFAULT_POLL_WAIT_S,
        usage_interval_s: float = USAGE_INTERVAL_S,
        stop_grace_s: float = STOP_GRACE_S,
        hub_url: str | None = None,
        change_journal: bool = True,
    ) -> None:
        self.machine_id = machine_id
        self.runtimes = dict(runtimes)
        self.work_dir = work_dir
        self.poll_wait_s = poll_wait_s
        # Given to workloads as AGENTHUB_URL: the hub as this node reaches it.
        self.hub_url = hub_url
        self._client = client
        self._usage_interval_s = usage_interval_s
        self._stop_grace_s = stop_grace_s
        self.reporter = Reporter(
            client, machine_id, on_cancel=self._cancel_all, on_delivered=self._delivered
        )
        self.snapshots = Snapshots(
            client, machine_id, work_dir, journal=change_journal, live=self._workspace_live
        )
        self._workloads: dict[Key, Workload] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._finished: OrderedDict[Key, None] = OrderedDict()
        self._poller: asyncio.Task[None] | None = None
        self._reporting: asyncio.Task[None] | None = None
        self._closed = False
        self.polls = 0  # poll requests sent (answered or not)
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.reaped: list[str] = []

    @property
    def running(self) -> dict[str, str]:
        """Workload id → local status, for everything listed to the hub as running here."""
        return {key[0]: workload.status for key, workload in self._workloads.items()}

    def _workspace_live(self, workspace: str) -> bool:
        """Whether a workload that has not ended runs in ``workspace`` (it may still write)."""
        return any(
            not w.finished and w.assignment.get("workspace") == workspace
            for w in self._workloads.values()
        )

    async def run(self) -> None:
        """Reap leftovers of an earlier agent, then poll and report until ``shutdown()``.

        Raises :class:`InvalidToken` when the hub refuses the token; other errors are retried.
        """
        await self._reap_orphans()
        if self._closed:
            return
        self._reporting = asyncio.create_task(self.reporter.run(), name="agenthub-report")
        self._poller = asyncio.create_task(self._poll_forever(), name="agenthub-poll")
        done, _ = await asyncio.wait(
            {self._reporting, self._poller}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if not task.cancelled():
                task.result()

    async def _reap_orphans(self) -> None:
        # Runtimes that outlive the agent (docker containers) would otherwise run unlisted: the
        # hub has already been told nothing runs here by the time they would be found.
        for name, runtime in self.runtimes.items():
            try:
                reaped = await runtime.reap_orphans(self.machine_id)
            except Exception:
                logger.exception("reaping leftover %s workloads failed", name)
                continue
            if reaped:
                logger.warning("stopped %d leftover %s workloads: %s", len(reaped), name, reaped)
                self.reaped.extend(reaped)

    async def _poll_forever(self) -> None:
        backoff = Backoff(cap=RETRY_CAP_S)
        last_start = -MIN_POLL_INTERVAL_S
        eager = False
        while True:
            pause = last_start + MIN_POLL_INTERVAL_S - time.monotonic()
            if pause > 0 and not eager:
                await asyncio.sleep(pause)
            eager = False
            last_start = time.monotonic()
            self.polls += 1
            try:
                answer = await self._client.poll(
                    self.machine_id, sorted(self.runtimes), list(self._workloads), self.poll_wait_s
                )
            except InvalidToken:
                raise
            except MachineNotFound:
                # The keepalive side re-registers; until then the hub has nothing for us.
                logger.info("the hub does not know this machine yet; polling again shortly")
                await asyncio.sleep(MACHINE_NOT_FOUND_WAIT_S)
                continue
            except (GatewayError, httpx.HTTPError) as err:
                delay = backoff.next_delay()
                if isinstance(err, GatewayError) and not err.transient:
                    # Not fixed by retrying soon (a hub without the work routes, a bug): keep the
                    # node alive and ask again at the slowest pace.
                    delay = RETRY_CAP_S
                    logger.error("the hub rejected a poll: %s; retrying in %.0fs", err, delay)
                else:
                    logger.warning("poll failed (%s); retrying in %.1fs", err, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            # Cancels first: a stop must not wait behind the start of new work.
            self._cancel_all(answer["cancel"])
            for item in answer.get("snapshots", []):
                checkpoint, workspace = item.get("checkpoint_id"), item.get("workspace")
                if isinstance(checkpoint, str) and isinstance(workspace, str):
                    self.snapshots.take(checkpoint, workspace)
            accepted = [a for a in answer["assignments"] if self._accept(a)]
            # New work came: poll again at once (the next answer has no reason to be immediate,
            # since it lists what we accepted), so back-to-back submissions start without delay.
            eager = bool(accepted)

    def _accept(self, assignment: dict[str, Any]) -> bool:
        """Start ``assignment`` unless it runs or ran here; whether it was new."""
        key = _key(assignment)
        if key is None:
            logger.error("ignoring an assignment without a valid workload_id/attempt")
            return False
        if self._closed or key in self._workloads or key in self._finished:
            return False
        workload = Workload(
            key,
            assignment,
            runtimes=self.runtimes,
            work_dir=self.work_dir,
            reporter=self.reporter,
            hub_url=self.hub_url,
            prepare=self.snapshots.materialize,
            usage_interval_s=self._usage_interval_s,
            stop_grace_s=self._stop_grace_s,
        )
        self._workloads[key] = workload
        self.started += 1
        logger.info("assigned workload %s attempt %d", *key)
        task = self._tasks[key] = asyncio.create_task(workload.run(), name=f"workload-{key[0]}")
        workspace = assignment.get("workspace")
        if isinstance(workspace, str):
            task.add_done_callback(lambda _: self.snapshots.release(workspace))
        return True

    def _cancel_all(self, cancels: list[dict[str, Any]]) -> None:
        for item in cancels:
            key = _key(item)
            workload = self._workloads.get(key) if key is not None else None
            if workload is None or workload.finished or workload.cancel_reason is not None:
                # Not running here (any more): what we list in `running` tells the hub so.
                continue
            self.cancelled += 1
            workload.cancel(str(item.get("reason") or "cancelled by the hub"))

    def _delivered(self, updates: list[tuple[Key, str]]) -> None:
        for key, status in updates:
            if status not in FINAL_STATUSES or key not in self._workloads:
                continue
            del self._workloads[key]
            self._tasks.pop(key, None)
            self.finished += 1
            self._finished[key] = None
            while len(self._finished) > _FINISHED_MEMORY:
                self._finished.popitem(last=False)

    async def shutdown(self, report_budget_s: float = 2.0) -> None:
        """Stop polling, stop every workload, report that best-effort, close the client."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._poller is not None:
                self._poller.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._poller
            await self._stop_workloads()
            await self.snapshots.close()
            await self._flush(report_budget_s)
        finally:
            await self._client.aclose()

    async def _stop_workloads(self) -> None:
        for workload in self._workloads.values():
            workload.cancel(SHUTDOWN_REASON)
        tasks = [task for task in self._tasks.values() if not task.done()]
        if not tasks:
            return
        logger.info("stopping %d workloads", len(tasks))
        # The runtime's stop() escalates to SIGKILL after the grace, so this is a bound, not a hope.
        _, late = await asyncio.wait(tasks, timeout=self._stop_grace_s + 2.0)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)

    async def _flush(self, budget_s: float) -> None:
        reporting = self._reporting
        if reporting is None:
            return
        if not reporting.done():
            drained = asyncio.create_task(self.reporter.drained())
            await asyncio.wait(
                {drained, reporting}, timeout=budget_s, return_when=asyncio.FIRST_COMPLETED
            )
            drained.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drained
            if self.reporter.pending:
                logger.warning(
                    "shutting down with %d updates and log lines unreported",
                    self.reporter.pending,
                )
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reporting
