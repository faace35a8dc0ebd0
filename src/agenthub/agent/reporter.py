"""Status updates and log lines, batched into ``POST /api/v1/node/report`` requests.

Reporting runs beside the long poll (a parked poll must not hold back a status). Everything queued
while a report is on its way or while the pacing interval runs goes into the next one: the hub
rate-limits machine tokens, so the agent never sends a request per line. Status updates are kept
until the hub took them and go out in the order they were queued; log lines are bounded, oldest
dropped first, and the loss is announced in the workload's own log.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agenthub.agent.retry import Backoff
from agenthub.client.gateway import GatewayError, InvalidToken, MachineNotFound
from agenthub.client.node import NodeClient

logger = logging.getLogger("agenthub.agent")

Key = tuple[str, int]  # (workload_id, attempt)

FINAL_STATUSES = frozenset({"succeeded", "failed", "terminated"})
MIN_REPORT_INTERVAL_S = 0.2
# A status change (started, running, finished) waits at most this long behind the last report;
# log lines and usage refreshes wait MIN_REPORT_INTERVAL_S. At most 20 reports a second.
MIN_STATUS_INTERVAL_S = 0.05
MAX_PENDING_LINES = 10_000
MAX_LINES_PER_REPORT = 2_000
MAX_UPDATES_PER_REPORT = 1_000
MAX_ERROR_CHARS = 4_000  # the hub refuses longer error texts (and with them the whole report)
# Bounds one request's size whatever the workload prints (the runtime splits output into lines,
# but a line without a newline can be long).
MAX_REPORT_TEXT_CHARS = 512 * 1024
MAX_LINE_CHARS = 16 * 1024
# The keepalive side re-registers a machine the hub forgot; give it that long before retrying.
MACHINE_NOT_FOUND_WAIT_S = 2.0
RETRY_CAP_S = 10.0


@dataclass
class _Line:
    seq: int
    key: Key
    at: float
    stream: str
    text: str


@dataclass
class _Update:
    seq: int
    key: Key
    body: dict[str, Any]
    change: bool = True  # False for a usage-only `running` refresh


@dataclass
class _Batch:
    updates: list[_Update] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0


class Reporter:
    """Queues updates and lines; ``run()`` sends them until cancelled.

    ``on_cancel`` receives the hub's ``cancel`` list of every answered report; ``on_delivered``
    the ``(key, status)`` of every update the hub took (or refused for good: retrying a request
    the hub calls invalid cannot help, and a workload must not stay listed forever).
    """

    def __init__(
        self,
        client: NodeClient,
        machine_id: str,
        *,
        on_cancel: Callable[[list[dict[str, Any]]], None],
        on_delivered: Callable[[list[tuple[Key, str]]], None],
        min_interval_s: float = MIN_REPORT_INTERVAL_S,
        min_status_interval_s: float = MIN_STATUS_INTERVAL_S,
        max_pending_lines: int = MAX_PENDING_LINES,
    ) -> None:
        self._client = client
        self._machine_id = machine_id
        self._on_cancel = on_cancel
        self._on_delivered = on_delivered
        self._min_interval_s = min_interval_s
        self._min_status_interval_s = min(min_status_interval_s, min_interval_s)
        self._max_pending_lines = max_pending_lines
        self._seq = itertools.count()
        self._lines: deque[_Line] = deque()
        self._updates: deque[_Update] = deque()
        self._last_running: dict[Key, _Update] = {}  # a pending usage refresh, to coalesce
        self._dropped: dict[Key, int] = {}
        self._inflight: _Batch | None = None
        self._queued = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.reports = 0
        self.failed_reports = 0
        self.dropped_lines = 0

    def update(
        self,
        key: Key,
        status: str,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        usage: dict[str, float] | None = None,
    ) -> None:
        """Queue a status update (never dropped)."""
        if error is not None:
            error = _clean(error)[:MAX_ERROR_CHARS]
        body: dict[str, Any] = {
            "workload_id": key[0],
            "attempt": key[1],
            "status": status,
            "exit_code": exit_code,
            "error": error,
            "usage": usage,
            "at": time.time(),
        }
        previous = self._last_running.get(key)
        if status == "running" and previous is not None and usage is not None:
            # A repeated `running` only refreshes usage: while the hub is away, keep the newest.
            previous.body.update(usage=usage, at=body["at"])
        else:
            change = status != "running" or usage is None
            entry = _Update(next(self._seq), key, body, change)
            self._updates.append(entry)
            if status == "running":
                self._last_running[key] = entry
            else:
                self._last_running.pop(key, None)
        self._wake()

    def log(self, key: Key, stream: str, text: str) -> None:
        """Queue one line of a workload's output (the oldest pending line goes when full)."""
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS] + " [line truncated by the agent]"
        text = _clean(text)
        if len(self._lines) >= self._max_pending_lines:
            oldest = self._lines.popleft()
            self._dropped[oldest.key] = self._dropped.get(oldest.key, 0) + 1
            self.dropped_lines += 1
        self._lines.append(_Line(next(self._seq), key, time.time(), stream, text))
        self._wake()

    @property
    def pending(self) -> int:
        """Updates and lines not yet taken by the hub (in flight included)."""
        inflight = self._inflight
        held = len(inflight.updates) + inflight.lines if inflight else 0
        return held + len(self._updates) + len(self._lines)

    async def drained(self) -> None:
        """Return once everything queued so far has reached the hub."""
        await self._drained.wait()

    def _wake(self) -> None:
        self._drained.clear()
        self._queued.set()

    async def run(self) -> None:
        """Send reports until cancelled; raises :class:`InvalidToken` if the hub refuses us."""
        backoff = Backoff(cap=RETRY_CAP_S)
        last_sent = -math.inf
        while True:
            if self._inflight is None:
                await self._queued.wait()
                interval = self._min_interval_s
                if any(update.change for update in self._updates):
                    interval = self._min_status_interval_s
                pause = last_sent + interval - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)  # what arrives meanwhile joins this report
                self._queued.clear()
                self._inflight = self._take()
                if self._inflight is None:
                    self._drained.set()
                    continue
            batch = self._inflight
            last_sent = time.monotonic()
            delay = await self._send(batch, backoff)
            if delay is None:
                backoff.reset()
                self._inflight = None
                if not self._updates and not self._lines:
                    self._drained.set()
            else:
                await asyncio.sleep(delay)

    async def _send(self, batch: _Batch, backoff: Backoff) -> float | None:
        """Send ``batch``: None once it is settled, else how long to wait before resending."""
        updates = [update.body for update in batch.updates]
        try:
            answer = await self._client.report(self._machine_id, updates, batch.logs)
        except InvalidToken:
            raise
        except MachineNotFound as err:
            delay, error = MACHINE_NOT_FOUND_WAIT_S, f"{err}"
        except GatewayError as err:
            if not err.transient:
                logger.error(
                    "the hub rejected a report of %d updates and %d log lines; dropping it: %s",
                    len(updates),
                    batch.lines,
                    err,
                )
                self.failed_reports += 1
                self._settled(batch)
                return None
            delay, error = backoff.next_delay(), f"{err}"
        except httpx.HTTPError as err:
            delay, error = backoff.next_delay(), f"{type(err).__name__}: {err}"
        else:
            self.reports += 1
            self._settled(batch)
            if answer["cancel"]:
                self._on_cancel(answer["cancel"])
            return None
        self.failed_reports += 1
        logger.warning("report failed (%s); retrying in %.1fs", error, delay)
        return delay

    def _settled(self, batch: _Batch) -> None:
        self._on_delivered([(update.key, update.body["status"]) for update in batch.updates])

    def _take(self) -> _Batch | None:
        """The next report: lines up to the size bounds, and the updates queued before the
        first line left behind (so a final status never overtakes the output before it)."""
        batch = _Batch()
        grouped: dict[Key, list[dict[str, Any]]] = {}
        now = time.time()
        for key, count in self._dropped.items():
            notice = f"[agent] {count} log lines dropped"
            grouped[key] = [{"at": now, "stream": "stderr", "text": notice}]
            batch.lines += 1
        self._dropped.clear()
        chars = 0
        while self._lines and batch.lines < MAX_LINES_PER_REPORT and chars < MAX_REPORT_TEXT_CHARS:
            line = self._lines.popleft()
            chars += len(line.text)
            batch.lines += 1
            grouped.setdefault(line.key, []).append(
                {"at": line.at, "stream": line.stream, "text": line.text}
            )
        boundary = self._lines[0].seq if self._lines else math.inf
        while (
            self._updates
            and self._updates[0].seq < boundary
            and len(batch.updates) < MAX_UPDATES_PER_REPORT
        ):
            update = self._updates.popleft()
            if self._last_running.get(update.key) is update:
                del self._last_running[update.key]  # on its way: later refreshes queue anew
            batch.updates.append(update)
        batch.logs = [
            {"workload_id": key[0], "attempt": key[1], "lines": lines}
            for key, lines in grouped.items()
        ]
        if not batch.updates and not batch.logs:
            return None
        if self._lines or self._updates:
            self._queued.set()  # more is waiting: the next report follows after the interval
        return batch


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; a hub that fails on one line would refuse every retry.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
