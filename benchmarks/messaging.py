"""Collab messages per second and send -> WebSocket delivery latency, against a bare relay.

Run it from the repository root::

    .venv/bin/python benchmarks/messaging.py [--ais 50] [--duration 5] [--warmup 1]
        [--rate 200] [--delivery-connections 16] [--delivery-timeout 5] [--workers 1] [--json]

It needs PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust authentication; see
``--postgres-dsn``) and Redis on 127.0.0.1:6379 (``--redis-url``).

What it does, in one run, for each server below:

1. Setup, not timed: ``--ais`` AIs, each registered (``POST /api/v1/ai/register``) and logged
   in (``POST /api/v1/auth/login``) for a token, and each connected to the live event socket
   ``/api/ws?token=<its token>&types=collab.message`` -- all of them stay connected through both
   measurements below.
2. Throughput, closed loop: every AI is an asyncio worker with its own keep-alive HTTP/1.1
   connection, alternating back to back ``POST /api/v1/message/send`` (a direct message to a
   random other AI) and ``GET /api/v1/message/inbox?limit=20&unread_only=true`` (which marks
   what it returns read). ``--warmup`` seconds unrecorded, then ``--duration`` seconds
   recorded. ``msg/s`` counts 2xx sends completed in the window (one message = one send);
   ``req/s`` counts sends and inbox reads; p50/p99 are per request type (nearest rank);
   ``delivered/s`` counts ``collab.message`` frames the target sockets received in the window,
   and ``ws p99`` is the send -> socket latency of the messages sent in the window (at
   saturation, so mostly queueing).
3. Delivery latency, open loop: direct messages from a random AI to a random other AI at a fixed
   ``--rate`` on a timer, over up to ``--delivery-connections`` keep-alive connections (each
   request carries its sender's token). Every message's content carries its sequence number
   and the ``time.perf_counter()`` reading taken just before its request is written; the
   receiving socket, in the same process, subtracts it from the time its frame arrives. The
   p50/p99 are over the messages due in the recorded window whose send answered 2xx;
   ``undelivered`` counts those whose frame did not reach the target's socket within
   ``--delivery-timeout`` seconds. ``sent/s`` counts 2xx sends completed in the window;
   ``lag p99`` is how late after its due time a message's request was written (waiting for a
   free connection). A lag of many milliseconds means the server did not keep up with the
   offered rate, and that wait is not in the latency (which starts at the send): the latency
   target counts as reached only if the lag p99 is under it too.

Servers:

* ``bare relay`` -- the baseline: ``relay_app`` below under uvicorn, with the uvicorn settings
  the hub uses, one process. It is ``benchmarks/_bare_app.py`` plus the least a message relay
  needs: it accepts the same WebSocket URL (the token is the AI's id), reads and parses the
  send body and pushes a frame shaped like the hub's to the target's socket(s), then answers
  201; every other request (the inbox read) gets the bare app's tiny 200 answer.
* ``hub PostgreSQL + Redis`` -- ``python -m agenthub serve --workers N`` (``--workers``,
  default 1) on a PostgreSQL database created for the run and Redis under a random key prefix
  (events reach the sockets through Redis pub/sub).
* ``hub SQLite`` -- one process (its event bus is in-process, so more workers would need
  Redis) on a fresh SQLite file.

Each hub gets a fresh data dir and secret key and ``AGENTHUB_RATE_LIMIT_ENABLED=false``: the
AIs send far above the per-AI limits, and the limiter's own cost is not what this measures.

How to read the ratios (each hub figure divided by the bare relay's figure in the same run):

* ``msg/s x`` -- hub msg/s / relay msg/s under the same closed loop. 0.05 means the hub
  sustains 5% of the message rate uvicorn can relay on this machine; lower is more overhead.
* ``send p99 x`` -- hub send p99 / relay send p99 under the same concurrency; higher is worse.
* ``p99 x`` (delivery) -- hub send -> socket p99 / relay send -> socket p99 at the same
  offered rate; higher is worse.

The baseline includes the load generator's cost: if its client CPU is near 100% in the relay
rows, the client capped the baseline and the ratios understate the hub's overhead. The server
CPU column is the server's process tree only; ``db+Redis CPU`` is every PostgreSQL and Redis
process, and ``machine CPU`` every process on the machine (200% = both cores of a 2-core
machine). ``machine CPU ms/msg`` divides the machine's CPU by the message rate: what one message
(a send and an inbox read, with the database, Redis and the load generator) costs in all, and
so how many cores a target rate would need at that cost. Everything shares the machine's
cores, so figures are comparable only between runs on the same machine.

The load generator (HTTP clients and WebSocket clients together, so both timestamps come from
one clock) runs in its own ``spawn``-ed process with the raw asyncio + httptools client of
``_loadgen.py``; the WebSocket clients use the ``websockets`` library (permessage-deflate
offered, as by default; no client pings). Everything the run creates is removed at the end,
also on error, Ctrl-C or SIGTERM: servers stopped, the PostgreSQL database dropped, the Redis
keys under the run's prefix deleted and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from _bare_app import app as bare_app
from _loadgen import (
    HOST,
    TRANSPORT_ERRORS,
    Server,
    bare_server_argv,
    build_request,
    free_port,
    log,
    percentile,
    ratio,
    run_in_process,
    sample_cpu_window,
    sample_machine_window,
    start_server,
    stop_on_sigterm,
    stop_process,
    wait_ready,
)
from keepalive import (
    VARIANTS,
    _Client,
    _jsonable,
    _Tally,
    cleanup_stack,
    hub_env,
    postgres_database,
    redis_prefix,
)

SEND_PATH = "/api/v1/message/send"
INBOX_TARGET = "/api/v1/message/inbox?limit=20&unread_only=true"
REGISTER_PATH = "/api/v1/ai/register"
LOGIN_PATH = "/api/v1/auth/login"
WS_PATH = "/api/ws"
HEALTH_PATH = "/api/v1/health"
FRAME_TYPE = "collab_message"  # a `collab.message` event on /api/ws (dots become underscores)
REGISTER_CONCURRENCY = 16
TARGET_MSG_RATE = 2000.0
TARGET_P99_MS = 50.0
ERROR_BODY_CHARS = 500

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --------------------------------------------------------------------------------------------
# The baseline server: a bare relay (served by uvicorn as ``messaging:relay_app``)
# --------------------------------------------------------------------------------------------

_relay_queues: dict[int, list[asyncio.Queue[str]]] = {}  # AI id -> its sockets' frame queues
_relay_ids = itertools.count(1)
_CREATED_BODY = b'{"success":true}'
_CREATED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_CREATED_BODY)).encode()),
]


async def relay_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Relay ``POST /api/v1/message/send`` bodies to the target's ``/api/ws`` sockets.

    Everything else (lifespan, the inbox read, readiness probes) is ``_bare_app.app``.
    """
    if scope["type"] == "websocket":
        await _relay_socket(scope, receive, send)
    elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == SEND_PATH:
        await _relay_send(scope, receive, send)
    else:
        await bare_app(scope, receive, send)


async def _relay_send(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request = json.loads(body)
    target = request["target_ai_id"]
    sender = next(
        int(value.decode().removeprefix("Bearer "))
        for name, value in scope["headers"]
        if name == b"authorization"
    )
    frame = json.dumps(
        {
            "type": FRAME_TYPE,
            "data": {
                "message_id": next(_relay_ids),
                "sender_id": sender,
                "target_ai_id": target,
                "message_type": request["message_type"],
                "content": request["content"],
                "created_at": datetime.now(UTC).isoformat(),
            },
        }
    )
    for queue in _relay_queues.get(target, []):
        queue.put_nowait(frame)
    await send({"type": "http.response.start", "status": 201, "headers": _CREATED_HEADERS})
    await send({"type": "http.response.body", "body": _CREATED_BODY})


async def _relay_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """Accept ``/api/ws?token=<AI id>``; write its queued frames until the client leaves."""
    await receive()  # websocket.connect
    ai_id = int(parse_qs(scope["query_string"].decode())["token"][0])
    await send({"type": "websocket.accept"})
    queue: asyncio.Queue[str] = asyncio.Queue()
    _relay_queues.setdefault(ai_id, []).append(queue)
    gone = asyncio.ensure_future(receive())  # the client sends nothing: this is its disconnect
    try:
        while True:
            frame = asyncio.ensure_future(queue.get())
            await asyncio.wait({frame, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not frame.done():
                frame.cancel()
                return
            await send({"type": "websocket.send", "text": frame.result()})
    finally:
        _relay_queues[ai_id].remove(queue)
        gone.cancel()


def relay_server_argv(port: int, uvicorn_flags: list[str]) -> list[str]:
    """``bare_server_argv`` serving ``relay_app`` (this module sits next to ``_bare_app``)."""
    argv = bare_server_argv(port, uvicorn_flags)
    argv[argv.index("_bare_app:app")] = f"{Path(__file__).stem}:relay_app"
    return argv


# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What one load-generator process is asked to do."""

    host: str
    port: int
    server_pid: int
    ai_ids: list[int]
    tokens: list[str]  # tokens[i] authenticates ai_ids[i]
    warmup_s: float
    duration_s: float
    rate: float
    delivery_connections: int
    delivery_timeout_s: float


@dataclass
class ThroughputResult:
    sends: int  # 2xx sends completed in the window
    inbox_reads: int  # 2xx inbox reads completed in the window
    errors: int
    status_counts: dict[str, int]
    first_error: str | None
    msg_rps: float
    req_rps: float
    send_p50_ms: float
    send_p99_ms: float
    inbox_p50_ms: float
    inbox_p99_ms: float
    delivered_rps: float  # frames received by the target sockets in the window, per second
    ws_p99_ms: float  # send -> socket p99 of the messages sent in the window
    server_cpu_pct: float
    client_cpu_pct: float
    stores_cpu_pct: float  # PostgreSQL and Redis processes
    machine_cpu_pct: float  # every process on the machine

    @property
    def machine_ms_per_msg(self) -> float:
        """CPU of the whole machine per message (one send and one inbox read), in ms."""
        return 10.0 * self.machine_cpu_pct / self.msg_rps if self.msg_rps else math.nan


@dataclass
class DeliveryResult:
    offered_rps: float
    scheduled: int  # messages due in the window
    sent: int  # of those, sends answered 2xx
    errors: int  # of those, sends answered non-2xx or failed
    unanswered: int  # of those, sends still unanswered when the run gave up on them
    status_counts: dict[str, int]
    first_error: str | None
    sent_rps: float  # 2xx sends completed in the window, per second
    lag_p99_ms: float  # p99 of how late sends were written after their due time
    send_p99_ms: float
    delivered: int
    undelivered: int  # sent, but no frame at the target within the timeout
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_pct: float
    client_cpu_pct: float


@dataclass
class LoadResult:
    throughput: ThroughputResult
    delivery: DeliveryResult
    sockets_closed: int  # sockets the server closed during the run
    first_close: str | None


def _ms(sorted_seconds: list[float], pct: float) -> float:
    return percentile(sorted_seconds, pct) * 1000.0


def _send_request(spec: LoadSpec, sender: int, target: int, seq: int, sent_at: float) -> bytes:
    body = {
        "message_type": "message",
        "content": f"bench {seq} {sent_at:.6f}",
        "target_ai_id": spec.ai_ids[target],
    }
    headers = {
        "Authorization": f"Bearer {spec.tokens[sender]}",
        "Content-Type": "application/json",
    }
    raw_body = json.dumps(body, separators=(",", ":")).encode()
    return build_request("POST", spec.host, spec.port, SEND_PATH, headers, raw_body)


def _other(rng: random.Random, sender: int, count: int) -> int:
    """A uniformly random index in ``range(count)`` other than ``sender``."""
    return (sender + 1 + rng.randrange(count - 1)) % count


class _Sockets:
    """One ``/api/ws`` connection per AI; records when each message's frame arrived."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.receipts: dict[int, tuple[float, float]] = {}  # seq -> (arrived at, latency)
        self.closed = 0
        self.first_close: str | None = None
        self.connections: list[ClientConnection] = []
        self.listeners: list[asyncio.Task[None]] = []
        self.awaited: set[int] = set()  # seqs whose frames ``wait_for`` waits for
        self.all_arrived = asyncio.Event()

    async def wait_for(self, seqs: list[int], timeout_s: float) -> None:
        """Return once every one of ``seqs`` has arrived, or after ``timeout_s``."""
        self.awaited = set(seqs).difference(self.receipts)
        if self.awaited:
            self.all_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_arrived.wait(), timeout_s)

    async def open(self) -> None:
        async def one(token: str) -> ClientConnection:
            url = f"ws://{self.spec.host}:{self.spec.port}{WS_PATH}?token={quote(token)}"
            return await connect(url + "&types=collab.message", proxy=None, ping_interval=None)

        self.connections = list(await asyncio.gather(*(one(t) for t in self.spec.tokens)))
        self.listeners = [
            asyncio.ensure_future(self._listen(ws, ai_id))
            for ws, ai_id in zip(self.connections, self.spec.ai_ids, strict=True)
        ]

    async def _listen(self, ws: ClientConnection, ai_id: int) -> None:
        clock = time.perf_counter
        try:
            async for raw in ws:
                arrived = clock()
                frame = json.loads(raw)
                data = frame.get("data") or {}
                if frame.get("type") != FRAME_TYPE or data.get("target_ai_id") != ai_id:
                    continue
                _, seq, sent_at = data["content"].split()
                self.receipts.setdefault(int(seq), (arrived, arrived - float(sent_at)))
                if self.awaited:
                    self.awaited.discard(int(seq))
                    if not self.awaited:
                        self.all_arrived.set()
        except ConnectionClosed:
            pass
        self.closed += 1
        if self.first_close is None:
            self.first_close = f"code {ws.close_code}: {ws.close_reason!r}"

    async def close(self) -> None:
        listeners = self.listeners
        self.listeners = []
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in self.connections), return_exceptions=True)


async def _exchange(
    client: _Client, raw: bytes, tally: _Tally, window: tuple[float, float]
) -> bool:
    """Send one request; count it in ``tally`` if it completes inside ``window``; 2xx?"""
    clock = time.perf_counter
    t0 = clock()
    try:
        status, body = await client.send(raw)
    except TRANSPORT_ERRORS as exc:
        if window[0] <= clock() <= window[1]:
            tally.error_transport(exc)
        await asyncio.sleep(0.01)  # do not spin on a refused connection
        return False
    now = clock()
    ok = 200 <= status < 300
    if window[0] <= now <= window[1]:
        if ok:
            tally.ok_in_window += 1
            tally.latencies.append(now - t0)
        else:
            tally.error_status(status, body)
    return ok


def _merge_errors(*tallies: _Tally) -> tuple[int, dict[str, int], str | None]:
    counts: dict[str, int] = {}
    for tally in tallies:
        for status, n in tally.statuses.items():
            counts[status] = counts.get(status, 0) + n
    errors = sum(t.non_2xx + t.transport for t in tallies)
    first = next((t.first_error for t in tallies if t.first_error), None)
    return errors, counts, first


async def _throughput(
    spec: LoadSpec, sockets: _Sockets, seqs: Iterator[int], offset: float
) -> ThroughputResult:
    """Closed loop: each AI alternates a send to a random other AI and an inbox read."""
    clock = time.perf_counter
    start = clock() + spec.warmup_s
    end = start + spec.duration_s
    window = (start, end)
    count = len(spec.ai_ids)
    sends, reads = _Tally(), _Tally()
    sent_in_window: list[int] = []

    async def ai_loop(index: int) -> None:
        rng = random.Random(index)  # noqa: S311 - picks recipients, not secrets
        inbox = build_request(
            "GET",
            spec.host,
            spec.port,
            INBOX_TARGET,
            {"Authorization": f"Bearer {spec.tokens[index]}"},
        )
        client = _Client(spec.host, spec.port)
        try:
            while clock() < end:
                seq = next(seqs)
                sent_at = clock()
                raw = _send_request(spec, index, _other(rng, index, count), seq, sent_at)
                if await _exchange(client, raw, sends, window) and start <= sent_at <= end:
                    sent_in_window.append(seq)
                await _exchange(client, inbox, reads, window)
        finally:
            client.close()

    cpu = asyncio.ensure_future(sample_cpu_window(spec.server_pid, start + offset, end + offset))
    machine = asyncio.ensure_future(sample_machine_window(start + offset, end + offset))
    await asyncio.gather(cpu, machine, *(ai_loop(i) for i in range(count)))
    send_lat, read_lat = sorted(sends.latencies), sorted(reads.latencies)
    arrived = sum(start <= at <= end for at, _ in sockets.receipts.values())
    ws_lat = sorted(sockets.receipts[s][1] for s in sent_in_window if s in sockets.receipts)
    errors, counts, first = _merge_errors(sends, reads)
    return ThroughputResult(
        sends=sends.ok_in_window,
        inbox_reads=reads.ok_in_window,
        errors=errors,
        status_counts=counts,
        first_error=first,
        msg_rps=sends.ok_in_window / spec.duration_s,
        req_rps=(sends.ok_in_window + reads.ok_in_window) / spec.duration_s,
        send_p50_ms=_ms(send_lat, 50),
        send_p99_ms=_ms(send_lat, 99),
        inbox_p50_ms=_ms(read_lat, 50),
        inbox_p99_ms=_ms(read_lat, 99),
        delivered_rps=arrived / spec.duration_s,
        ws_p99_ms=_ms(ws_lat, 99),
        server_cpu_pct=cpu.result()[0],
        client_cpu_pct=cpu.result()[1],
        machine_cpu_pct=machine.result()[0],
        stores_cpu_pct=machine.result()[1],
    )


async def _delivery(
    spec: LoadSpec, sockets: _Sockets, seqs: Iterator[int], offset: float
) -> DeliveryResult:
    """Open loop: direct messages due at a fixed rate; send -> socket latency of each."""
    clock = time.perf_counter
    interval = 1.0 / spec.rate
    t0 = clock() + 0.05
    start = t0 + spec.warmup_s
    end = start + spec.duration_s
    first_in_window = math.ceil(spec.warmup_s * spec.rate)
    total = math.ceil((spec.warmup_s + spec.duration_s) * spec.rate)  # due before the end
    count = len(spec.ai_ids)
    rng = random.Random(-1)  # noqa: S311 - picks senders and recipients, not secrets
    tally = _Tally()
    sent: list[int] = []  # seqs of the window's messages whose send answered 2xx
    lags: list[float] = []  # of the window's messages: how late after its due time each went
    answered = 0
    next_index = 0

    async def sender() -> None:
        nonlocal next_index, answered
        client = _Client(spec.host, spec.port)
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                due = t0 + i * interval
                delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                source = rng.randrange(count)
                seq = next(seqs)
                sent_at = clock()
                if i >= first_in_window:
                    lags.append(sent_at - due)
                raw = _send_request(spec, source, _other(rng, source, count), seq, sent_at)
                try:
                    status, body = await client.send(raw)
                except TRANSPORT_ERRORS as exc:
                    if i >= first_in_window:
                        answered += 1
                        tally.error_transport(exc)
                    await asyncio.sleep(0.01)  # do not spin on a refused connection
                    continue
                now = clock()
                ok = 200 <= status < 300
                if ok and start <= now <= end:
                    tally.ok_in_window += 1
                if i < first_in_window:
                    continue
                answered += 1
                if ok:
                    tally.latencies.append(now - sent_at)
                    sent.append(seq)
                else:
                    tally.error_status(status, body)
        finally:
            client.close()

    cpu = asyncio.ensure_future(sample_cpu_window(spec.server_pid, start + offset, end + offset))
    senders = [asyncio.ensure_future(sender()) for _ in range(spec.delivery_connections)]
    await cpu
    # Sends still unanswered a timeout after the window are given up; then the frames of the
    # sent ones get up to another timeout to arrive (later than that after their send, they
    # count as undelivered).
    _, pending = await asyncio.wait(senders, timeout=spec.delivery_timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    await sockets.wait_for(sent, spec.delivery_timeout_s)
    latencies = sorted(
        sockets.receipts[s][1]
        for s in sent
        if s in sockets.receipts and sockets.receipts[s][1] <= spec.delivery_timeout_s
    )
    scheduled = total - first_in_window
    return DeliveryResult(
        offered_rps=spec.rate,
        scheduled=scheduled,
        sent=len(sent),
        errors=tally.non_2xx + tally.transport,
        unanswered=scheduled - answered,
        status_counts=tally.statuses,
        first_error=tally.first_error,
        sent_rps=tally.ok_in_window / spec.duration_s,
        lag_p99_ms=_ms(sorted(lags), 99),
        send_p99_ms=_ms(sorted(tally.latencies), 99),
        delivered=len(latencies),
        undelivered=len(sent) - len(latencies),
        p50_ms=_ms(latencies, 50),
        p99_ms=_ms(latencies, 99),
        max_ms=latencies[-1] * 1000.0 if latencies else math.nan,
        server_cpu_pct=cpu.result()[0],
        client_cpu_pct=cpu.result()[1],
    )


async def measure(spec: LoadSpec) -> LoadResult:
    """Connect every AI's socket, run the throughput then the delivery measurement."""
    offset = asyncio.get_running_loop().time() - time.perf_counter()  # CPU sampling: loop time
    seqs = itertools.count()
    sockets = _Sockets(spec)
    await sockets.open()
    try:
        throughput = await _throughput(spec, sockets, seqs, offset)
        delivery = await _delivery(spec, sockets, seqs, offset)
    finally:
        await sockets.close()
    return LoadResult(
        throughput=throughput,
        delivery=delivery,
        sockets_closed=sockets.closed,
        first_close=sockets.first_close,
    )


def run_load(spec: LoadSpec) -> LoadResult:
    """Run both measurements in a fresh ``spawn``-ed process and return them."""
    timeout = 2 * (spec.warmup_s + spec.duration_s) + 2 * spec.delivery_timeout_s + 120.0
    result = run_in_process(measure, spec, timeout)
    assert isinstance(result, LoadResult)
    return result


# --------------------------------------------------------------------------------------------
# AIs
# --------------------------------------------------------------------------------------------


def _describe(response: httpx.Response) -> str:
    return f"HTTP {response.status_code}: {response.text[:ERROR_BODY_CHARS]}"


async def _register_all(base_url: str, names: list[str]) -> list[tuple[int, str]]:
    semaphore = asyncio.Semaphore(REGISTER_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, trust_env=False) as client:

        async def one(name: str) -> tuple[int, str]:
            async with semaphore:
                response = await client.post(REGISTER_PATH, json={"ai_name": name})
                if response.status_code != 201:
                    raise RuntimeError(f"register {name}: {_describe(response)}")
                made = response.json()
                credentials = {"ai_id": made["ai_id"], "ai_name": name, "secret": made["secret"]}
                response = await client.post(LOGIN_PATH, json=credentials)
                if response.status_code != 200:
                    raise RuntimeError(f"login {name}: {_describe(response)}")
                return int(made["ai_id"]), str(response.json()["token"])

        return list(await asyncio.gather(*(one(name) for name in names)))


def register_ais(server: Server, count: int) -> tuple[list[int], list[str], float]:
    """Register and log in ``count`` AIs; return their ids, tokens and the seconds it took."""
    run = secrets.token_hex(3)
    t0 = time.perf_counter()
    made = asyncio.run(_register_all(server.base_url, [f"bench-{run}-{i}" for i in range(count)]))
    return [ai_id for ai_id, _ in made], [token for _, token in made], time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# Scenarios and report
# --------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    result: LoadResult
    ratios: dict[str, float] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def render_throughput_table(scenarios: list[ScenarioResult]) -> str:
    rows = [
        "| scenario | msg/s | req/s | send p50 ms | send p99 ms | inbox p50 ms | inbox p99 ms "
        "| errors | delivered/s | ws p99 ms | msg/s x | send p99 x | server CPU | client CPU "
        "| db+Redis CPU | machine CPU | machine CPU ms/msg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        r = s.result.throughput
        ratios = (
            f"{s.ratios['msg_rps']:.3f} | {s.ratios['send_p99']:.2f}"
            if s.ratios
            else "1 (baseline) | 1"
        )
        rows.append(
            f"| {s.name} | {r.msg_rps:,.0f} | {r.req_rps:,.0f} | {_fmt(r.send_p50_ms)} "
            f"| {_fmt(r.send_p99_ms)} | {_fmt(r.inbox_p50_ms)} | {_fmt(r.inbox_p99_ms)} "
            f"| {r.errors} | {r.delivered_rps:,.0f} | {_fmt(r.ws_p99_ms)} | {ratios} "
            f"| {r.server_cpu_pct:.0f}% | {r.client_cpu_pct:.0f}% | {r.stores_cpu_pct:.0f}% "
            f"| {r.machine_cpu_pct:.0f}% | {_fmt(r.machine_ms_per_msg)} |"
        )
    return "\n".join(rows)


def render_delivery_table(scenarios: list[ScenarioResult]) -> str:
    rows = [
        "| scenario | offered/s | sent/s | lag p99 ms | send p99 ms | delivered | undelivered "
        "| p50 ms "
        "| p99 ms | max ms | errors | p99 x | server CPU | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        r = s.result.delivery
        p99_ratio = f"{s.ratios['delivery_p99']:.2f}" if s.ratios else "1 (baseline)"
        rows.append(
            f"| {s.name} | {r.offered_rps:,.0f} | {r.sent_rps:,.0f} | {_fmt(r.lag_p99_ms)} "
            f"| {_fmt(r.send_p99_ms)} "
            f"| {r.delivered:,} | {r.undelivered:,} | {_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} "
            f"| {_fmt(r.max_ms)} | {r.errors} | {p99_ratio} "
            f"| {r.server_cpu_pct:.0f}% | {r.client_cpu_pct:.0f}% |"
        )
    return "\n".join(rows)


def delivery_met(r: DeliveryResult) -> bool:
    """Every message due in the window sent on schedule and delivered, p99 under the target.

    A send more than the target late means the server did not keep up with the offered rate
    (the latency measured from the send would then hide the wait for a free connection)."""
    return (
        r.errors == 0
        and r.unanswered == 0
        and r.undelivered == 0
        and r.lag_p99_ms < TARGET_P99_MS
        and r.p99_ms < TARGET_P99_MS
    )


def target_lines(hubs: list[ScenarioResult], rate: float) -> list[str]:
    rates = []
    for s in hubs:
        r = s.result.throughput
        verdict = "reached" if r.msg_rps >= TARGET_MSG_RATE and r.errors == 0 else "not reached"
        cores = r.machine_ms_per_msg * TARGET_MSG_RATE / 1000.0
        rates.append(
            f"{s.name} {r.msg_rps:,.0f} msg/s: {verdict} (the machine spent "
            f"{_fmt(r.machine_ms_per_msg)} ms of CPU per message: {TARGET_MSG_RATE:,.0f} msg/s "
            f"at that cost would need {_fmt(cores)} cores)"
        )
    latencies = []
    for s in hubs:
        d = s.result.delivery
        verdict = "reached" if delivery_met(d) else "not reached"
        latencies.append(
            f"{s.name} p99 {_fmt(d.p99_ms)} ms, {d.undelivered} undelivered: {verdict}"
        )
    return [
        f"≥ {TARGET_MSG_RATE:,.0f} msg/s (send + inbox read) target: " + "; ".join(rates),
        f"send -> WebSocket p99 < {TARGET_P99_MS:g} ms at {rate:,.0f} msg/s target: "
        + "; ".join(latencies),
    ]


def _check_errors(server: Server, result: LoadResult) -> None:
    """Log the first error of each measurement, and the server's log after a 5xx."""
    for what, first, counts in (
        ("throughput", result.throughput.first_error, result.throughput.status_counts),
        ("delivery", result.delivery.first_error, result.delivery.status_counts),
    ):
        if first:
            log(f"  {what}: first error: {first}")
        if any(status.startswith("5") for status in counts):
            log(f"  {server.name} log tail:\n{server.log_tail()}")
    if result.sockets_closed:
        log(f"  {result.sockets_closed} sockets closed by the server; first: {result.first_close}")


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Start each server in turn, measure it, stop everything; return the report."""
    started = datetime.now(UTC)
    uvicorn_flags = ["--log-level", "warning"]
    notes = [
        "rate limiting off in the hubs (AGENTHUB_RATE_LIMIT_ENABLED=false)",
        f"hub PostgreSQL + Redis served with `serve --workers {args.workers}`; hub SQLite with "
        "one process (in-process event bus)",
        "baseline: bare relay (uvicorn + a raw ASGI app that parses each send and pushes its "
        "frame to the target's socket; inbox reads get a tiny 200), same requests and sockets",
    ]
    scenarios: list[ScenarioResult] = []

    def load(server: Server, ai_ids: list[int], tokens: list[str]) -> LoadResult:
        log(
            f"  {len(ai_ids)} sockets; closed loop ({args.warmup:g} s + {args.duration:g} s), "
            f"then {args.rate:g} msg/s open loop ({args.warmup:g} s + {args.duration:g} s)"
        )
        spec = LoadSpec(
            host=HOST,
            port=server.port,
            server_pid=server.proc.pid,
            ai_ids=ai_ids,
            tokens=tokens,
            warmup_s=args.warmup,
            duration_s=args.duration,
            rate=args.rate,
            delivery_connections=args.delivery_connections,
            delivery_timeout_s=args.delivery_timeout,
        )
        result = run_load(spec)
        _check_errors(server, result)
        return result

    with cleanup_stack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agenthub-bench-")))

        log("bare relay baseline")
        port = free_port()
        argv = relay_server_argv(port, uvicorn_flags)
        with start_server("relay", argv, os.environ, tmp, tmp, port) as relay:
            wait_ready(relay, "/")
            ids = list(range(1, args.ais + 1))
            baseline = ScenarioResult("bare relay", load(relay, ids, [str(i) for i in ids]))
            scenarios.append(baseline)

        prefix = stack.enter_context(redis_prefix(args.redis_url))
        for variant in (VARIANTS["redis"], VARIANTS["sqlite"]):
            log(variant.label)
            with cleanup_stack() as scenario_stack:
                database_url = (
                    scenario_stack.enter_context(postgres_database(args.postgres_dsn))
                    if variant.postgres
                    else None
                )
                data_dir = tmp / f"data-{variant.key}"
                data_dir.mkdir()
                env = hub_env(
                    data_dir,
                    database_url,
                    args.redis_url if variant.redis else None,
                    prefix if variant.redis else None,
                )
                env["AGENTHUB_RATE_LIMIT_ENABLED"] = "false"
                port = free_port()
                workers = args.workers if variant.redis else 1
                argv = [sys.executable, "-m", "agenthub", "serve", "--port", str(port)]
                argv += [*uvicorn_flags, "--workers", str(workers)]
                hub = scenario_stack.enter_context(
                    start_server(f"hub-{variant.key}", argv, env, tmp, tmp, port)
                )
                wait_ready(hub, HEALTH_PATH)
                ai_ids, tokens, took = register_ais(hub, args.ais)
                log(f"  registered and logged in {len(ai_ids)} AIs in {took:.1f} s")
                scenarios.append(
                    ScenarioResult(
                        variant.label,
                        load(hub, ai_ids, tokens),
                        setup={"register_s": round(took, 2)},
                    )
                )
                stop_process(hub.proc)  # before its database is dropped
        log("cleaning up")

    base = baseline.result
    for s in scenarios[1:]:
        s.ratios = {
            "msg_rps": ratio(s.result.throughput.msg_rps, base.throughput.msg_rps),
            "send_p99": ratio(s.result.throughput.send_p99_ms, base.throughput.send_p99_ms),
            "delivery_p99": ratio(s.result.delivery.p99_ms, base.delivery.p99_ms),
        }
    hubs = scenarios[1:]
    return {
        "date": started.isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "ais": args.ais,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rate": args.rate,
            "delivery_connections": args.delivery_connections,
            "delivery_timeout_s": args.delivery_timeout,
            "workers": args.workers,
        },
        "notes": notes,
        "scenarios": [
            {
                "name": s.name,
                "setup": s.setup or None,
                **asdict(s.result),
                "delivery_target_met": delivery_met(s.result.delivery),
                "ratios": s.ratios or None,
            }
            for s in scenarios
        ],
        "targets": target_lines(hubs, args.rate),
        "throughput_table": render_throughput_table(scenarios),
        "delivery_table": render_delivery_table(scenarios),
    }


def print_report(report: dict[str, Any]) -> None:
    machine, settings = report["machine"], report["settings"]
    print(
        f"agenthub messaging benchmark -- {report['date']}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}, {machine['platform']}"
    )
    print(
        f"{settings['ais']} AIs, each with a connected /api/ws socket; {settings['warmup_s']:g} s "
        f"warm-up, {settings['duration_s']:g} s recorded per measurement"
    )
    for note in report["notes"]:
        print(f"- {note}")
    print()
    print(
        "Throughput, closed loop: each AI alternates send (to a random other AI) and inbox "
        "read; msg/s = sends/s; ratios are hub / bare relay:"
    )
    print()
    print(report["throughput_table"])
    print()
    print(
        f"Delivery, open loop: {settings['rate']:,.0f} direct msg/s offered over up to "
        f"{settings['delivery_connections']} connections; send -> frame at the target's socket, "
        f"undelivered = no frame within {settings['delivery_timeout_s']:g} s:"
    )
    print()
    print(report["delivery_table"])
    print()
    for line in report["targets"]:
        print(line)
    for s in report["scenarios"]:
        for key in ("throughput", "delivery"):
            if s[key]["first_error"]:
                print(f"first error ({s['name']}, {key}): {s[key]['first_error']}")
        d = s["delivery"]
        if d["unanswered"]:
            print(
                f"{s['name']}: {d['unanswered']:,} of {d['scheduled']:,} messages due in the "
                f"delivery window were still unanswered {settings['delivery_timeout_s']:g} s "
                "after it (not sent: neither delivered nor undelivered)"
            )
        if s["sockets_closed"]:
            print(
                f"{s['name']}: {s['sockets_closed']} sockets closed by the server; first: "
                f"{s['first_close']}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--ais", type=int, default=50, help="connected AIs (50)")
    parser.add_argument("--duration", type=float, default=5.0, help="recorded seconds (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first (1)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="delivery: messages per second offered (200)"
    )
    parser.add_argument(
        "--delivery-connections",
        type=int,
        default=16,
        help="delivery: most HTTP connections sending at once (16)",
    )
    parser.add_argument(
        "--delivery-timeout",
        type=float,
        default=5.0,
        help="delivery: seconds after which a message counts as undelivered (5)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes of the PostgreSQL + Redis hub (`serve --workers`) (1)",
    )
    parser.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin connection; the benchmark database is created next to it",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the Redis scenario"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if (
        args.duration <= 0
        or args.warmup < 0
        or args.rate <= 0
        or args.delivery_timeout <= 0
        or args.ais < 2
        or args.delivery_connections < 1
        or args.workers < 1
    ):
        parser.error(
            "--duration, --rate and --delivery-timeout must be > 0, --warmup >= 0, --ais >= 2, "
            "--delivery-connections and --workers >= 1"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()  # SIGTERM unwinds like Ctrl-C, so everything started is cleaned up
    try:
        report = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted; servers stopped, database, Redis keys and temporary files removed")
        return 130
    if args.json:
        print(json.dumps(_jsonable(report), indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
