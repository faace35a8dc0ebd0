"""Machine keepalives per second the hub sustains, measured against a bare-uvicorn baseline.

Run it from the repository root::

    .venv/bin/python benchmarks/keepalive.py [--machines 2000] [--concurrency 64]
        [--rate 2000] [--duration 5] [--warmup 1] [--workers 1] [--postgres-no-redis] [--json]

It needs PostgreSQL on 127.0.0.1:5432 (user ``postgres``, trust authentication; see
``--postgres-dsn``) and Redis on 127.0.0.1:6379 (``--redis-url``).

What it does, in one run:

1. Baseline: starts ``benchmarks/_bare_app.py`` (a raw ASGI app that answers every request
   with a tiny JSON body) under uvicorn and sends it exactly the request stream the hub gets
   below, ``POST /api/v1/machine/keepalive`` with the same headers and bodies. The app never
   reads the body, but uvicorn still parses it; a probe checks that the bare app answers such
   a POST with 200 before it is used (otherwise the baseline falls back to ``GET /``, and the
   output says so).
2. For each hub scenario, starts ``python -m agenthub serve --log-level warning`` (one uvicorn
   process unless ``--workers`` is given and ``serve`` supports it) with a fresh temporary data
   dir, a fresh secret key, and rate limiting enabled with every limit -- per principal and per
   machine token -- at 1,000,000,000, so the limiter does its work but never refuses:

   * ``hub PostgreSQL + Redis`` -- a PostgreSQL database created for this run
     (``AGENTHUB_DATABASE_URL``) and Redis under a random key prefix
     (``AGENTHUB_REDIS_URL``, ``AGENTHUB_REDIS_PREFIX=bench-<random>:``);
   * ``hub SQLite`` -- no Redis: machine state lives in the database-backed store, the default
     SQLite file in the data dir;
   * ``hub PostgreSQL, no Redis`` -- only with ``--postgres-no-redis``.

   It mints one pool-wide worker token (``agenthub machine create --pool default
   --token-type worker --json``) and enrolls ``--machines`` machines with it (8-hex-digit
   ids), 16 at a time, not timed: ``POST /api/v1/machine/register``, then one keepalive each,
   which moves the machine from ``registered`` to ``ready`` (a database write and an event).
   So the measured keepalives are the steady-state kind, a ready machine refreshing its TTL,
   as in a running fleet, and the run stops early if registration or keepalive is broken.
3. Measures, with the same load generator for every scenario:

   * closed loop: ``--concurrency`` asyncio workers, each with its own keep-alive HTTP/1.1
     connection, sending keepalives back to back (no pipelining). Each request is a keepalive
     for the next machine in round-robin over all registered machines, authenticated with the
     worker token. ``--warmup`` seconds unrecorded, then ``--duration`` seconds recorded:
     keepalives/s counts 2xx responses completed in the window; p50/p99 are latencies of those
     responses (nearest rank); errors are non-2xx responses plus transport failures (the first
     error body is printed). CPU time of the server process tree and of the load generator
     during the window tells which side was the bottleneck.
   * open loop, hub scenarios (and the baseline, as a floor): keepalives sent at a fixed
     ``--rate`` on a timer, over up to ``--open-connections`` keep-alive connections. Request
     ``i`` is due at ``start + i / rate`` whatever happened to earlier requests; its latency is
     measured from that due time, not from when it was actually written, so time spent waiting
     for a free connection or a slow server counts (no coordinated omission). ``achieved/s`` is
     2xx responses completed in the recorded window per second. Requests due in the window are
     given up to 5 s after it to complete; any still unanswered then are counted as their wait
     so far, and the p50/p99 are then printed as lower bounds (``>=``). The timer has about
     1 ms resolution, so a request can be written up to ~1 ms after its due time; the bare row
     shows that floor.

The load generator runs in its own process (``multiprocessing`` with ``spawn``), never in a
server process; it is the raw asyncio + httptools client shared with ``api_baseline.py``
(``_loadgen.py``), which costs far less CPU per request than ``httpx``.

How to read the ratios (closed loop, each hub figure divided by the baseline's figure):

* ``rps x`` -- hub keepalives/s / bare requests/s. 0.05 means the hub sustains 5% of what
  uvicorn alone does with the same requests on this machine; lower is more overhead.
* ``p99 x`` -- hub p99 / bare p99 under the same concurrency; higher is worse.

The baseline includes the load generator's own cost: if its client CPU is near 100% for the
bare scenario, the client capped the baseline and the ratios understate the hub's overhead.
Servers, PostgreSQL, Redis and the load generator share the machine's cores, so the figures are
only comparable between runs on the same machine.

Everything the run creates is removed at the end, also on error, Ctrl-C or SIGTERM: servers
are stopped, the PostgreSQL databases dropped, the Redis keys under the run's prefix deleted
(SCAN + DEL) and the temporary directory removed.
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
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis

from _loadgen import (
    HOST,
    TRANSPORT_ERRORS,
    BodyConnection,
    Server,
    bare_server_argv,
    build_request,
    free_port,
    log,
    percentile,
    ratio,
    run_in_process,
    sample_cpu_window,
    start_server,
    stop_on_sigterm,
    stop_process,
    wait_ready,
)

KEEPALIVE_PATH = "/api/v1/machine/keepalive"
REGISTER_PATH = "/api/v1/machine/register"
HEALTH_PATH = "/api/v1/health"
POOL = "default"
HUGE_LIMIT = "1000000000"
REGISTER_CONCURRENCY = 16
OPEN_LOOP_DRAIN_S = 5.0
TARGET_RPS = 5000.0
TARGET_P99_MS = 50.0
ERROR_BODY_CHARS = 500
METRICS = {
    "cpu_utilization_pct": 12.5,
    "memory_utilization_pct": 40.1,
    "total_cpu_available": 8000,
    "total_memory_available": 16384,
    "free_gpu_count": 0,
}


# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What one load-generator process is asked to do."""

    host: str
    port: int
    requests: list[bytes]  # one prebuilt request per machine, sent in round-robin
    mode: str  # "closed" or "open"
    connections: int  # closed loop: workers; open loop: maximum connections
    rate: float  # open loop: requests per second (0 for the closed loop)
    warmup_s: float
    duration_s: float
    drain_s: float
    server_pid: int


@dataclass
class LoadResult:
    """What one load-generator process measured."""

    mode: str
    ok: int
    non_2xx: int
    transport_errors: int
    status_counts: dict[str, int]
    first_error: str | None
    window_s: float
    rps: float  # 2xx responses completed in the window, per second
    p50_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_pct: float
    client_cpu_pct: float
    offered_rps: float | None = None  # open loop only
    scheduled: int = 0  # open loop: requests due in the window
    unanswered: int = 0  # open loop: of those, still unanswered at the end of the drain

    @property
    def errors(self) -> int:
        return self.non_2xx + self.transport_errors

    @property
    def latency_is_lower_bound(self) -> bool:
        return self.unanswered > 0


class _Tally:
    """Counters of one measurement; single-threaded (one event loop), so no locking."""

    def __init__(self) -> None:
        self.ok_in_window = 0
        self.non_2xx = 0
        self.transport = 0
        self.statuses: dict[str, int] = {}
        self.first_error: str | None = None
        self.latencies: list[float] = []

    def error_status(self, status: int, body: bytes) -> None:
        self.non_2xx += 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if self.first_error is None:
            text = body.decode("utf-8", errors="replace")[:ERROR_BODY_CHARS]
            self.first_error = f"HTTP {status}: {text}"

    def error_transport(self, exc: BaseException) -> None:
        self.transport += 1
        if self.first_error is None:
            self.first_error = f"transport: {exc!r}"


class _Client:
    """A connection of its own per worker/sender, reopened if the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.conn: BodyConnection | None = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.conn is None or self.conn.closed:
            loop = asyncio.get_running_loop()
            _, self.conn = await loop.create_connection(BodyConnection, self.host, self.port)
        try:
            status = await self.conn.request(raw)
        except BaseException:
            self.close()  # never reuse a connection in an unknown state
            raise
        return status, bytes(self.conn.body)

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None


def _result(
    spec: LoadSpec, tally: _Tally, cpu: tuple[float, float], **open_loop: Any
) -> LoadResult:
    latencies = sorted(tally.latencies)
    to_ms = 1000.0
    return LoadResult(
        mode=spec.mode,
        ok=tally.ok_in_window,
        non_2xx=tally.non_2xx,
        transport_errors=tally.transport,
        status_counts=tally.statuses,
        first_error=tally.first_error,
        window_s=spec.duration_s,
        rps=tally.ok_in_window / spec.duration_s,
        p50_ms=percentile(latencies, 50) * to_ms,
        p99_ms=percentile(latencies, 99) * to_ms,
        mean_ms=(sum(latencies) / len(latencies) * to_ms) if latencies else math.nan,
        server_cpu_pct=cpu[0],
        client_cpu_pct=cpu[1],
        **open_loop,
    )


async def closed_loop(spec: LoadSpec) -> LoadResult:
    """``spec.connections`` workers, each sending its next keepalive as soon as one returns."""
    loop = asyncio.get_running_loop()
    window_start = loop.time() + spec.warmup_s
    window_end = window_start + spec.duration_s
    requests = itertools.cycle(spec.requests)  # shared: round-robin over all machines
    tally = _Tally()

    async def worker() -> None:
        client = _Client(spec.host, spec.port)
        try:
            while loop.time() < window_end:
                raw = next(requests)
                t0 = time.perf_counter()
                try:
                    status, body = await client.send(raw)
                except TRANSPORT_ERRORS as exc:
                    if window_start <= loop.time() <= window_end:
                        tally.error_transport(exc)
                    await asyncio.sleep(0.01)  # do not spin on a refused connection
                    continue
                elapsed = time.perf_counter() - t0
                if not window_start <= loop.time() <= window_end:
                    continue  # warm-up, or finished after the window closed
                if 200 <= status < 300:
                    tally.ok_in_window += 1
                    tally.latencies.append(elapsed)
                else:
                    tally.error_status(status, body)
        finally:
            client.close()

    cpu = asyncio.ensure_future(sample_cpu_window(spec.server_pid, window_start, window_end))
    await asyncio.gather(cpu, *(worker() for _ in range(spec.connections)))
    return _result(spec, tally, cpu.result())


async def open_loop(spec: LoadSpec) -> LoadResult:
    """Keepalives due at a fixed rate; latency counted from each one's due time.

    Request ``i`` is due at ``t0 + i / rate``. Each sender owns one connection and takes the
    next request number when it is free, sleeps until that request is due (if it is not late
    already) and sends it. When every connection is busy, due requests wait -- and that wait
    is part of their latency, as it would be for a machine whose keepalive is queued.
    """
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    interval = 1.0 / spec.rate
    t0 = clock() + 0.05
    window_start = t0 + spec.warmup_s
    window_end = window_start + spec.duration_s
    first_in_window = math.ceil(spec.warmup_s * spec.rate)
    total = math.ceil((spec.warmup_s + spec.duration_s) * spec.rate)  # due before window_end
    answered = bytearray(total)
    next_index = 0
    tally = _Tally()
    n_requests = len(spec.requests)

    async def sender() -> None:
        nonlocal next_index
        client = _Client(spec.host, spec.port)
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                due = t0 + i * interval
                delay = due - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    status, body = await client.send(spec.requests[i % n_requests])
                except TRANSPORT_ERRORS as exc:
                    if i >= first_in_window:
                        answered[i] = 1
                        tally.error_transport(exc)
                    await asyncio.sleep(0.01)  # do not spin on a refused connection
                    continue
                now = clock()
                ok = 200 <= status < 300
                if ok and window_start <= now <= window_end:
                    tally.ok_in_window += 1
                if i < first_in_window:
                    continue  # due during the warm-up
                answered[i] = 1
                if ok:
                    tally.latencies.append(now - due)
                else:
                    tally.error_status(status, body)
        finally:
            client.close()

    offset = loop.time() - clock()  # CPU sampling uses loop time
    cpu = asyncio.ensure_future(
        sample_cpu_window(spec.server_pid, window_start + offset, window_end + offset)
    )
    senders = [asyncio.ensure_future(sender()) for _ in range(spec.connections)]
    await cpu
    deadline = window_end + spec.drain_s
    _, pending = await asyncio.wait(senders, timeout=max(0.0, deadline - clock()))
    stopped = clock()
    for task in pending:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    unanswered = 0
    for i in range(first_in_window, total):
        if not answered[i]:
            unanswered += 1
            tally.latencies.append(stopped - (t0 + i * interval))  # a lower bound
    return _result(
        spec,
        tally,
        cpu.result(),
        offered_rps=spec.rate,
        scheduled=total - first_in_window,
        unanswered=unanswered,
    )


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one measurement in a fresh ``spawn``-ed process and return it."""
    main = closed_loop if spec.mode == "closed" else open_loop
    timeout = spec.warmup_s + spec.duration_s + spec.drain_s + 120.0
    result = run_in_process(main, spec, timeout)
    assert isinstance(result, LoadResult)
    return result


# --------------------------------------------------------------------------------------------
# Requests, machines, tokens
# --------------------------------------------------------------------------------------------


def machine_ids(count: int) -> list[str]:
    """``count`` unique random machine ids of 8 lowercase hex digits."""
    ids: dict[str, None] = {}
    while len(ids) < count:
        ids[secrets.token_hex(4)] = None
    return list(ids)


def keepalive_body(machine_id: str) -> dict[str, Any]:
    return {
        "machine_id": machine_id,
        "pool_name": POOL,
        "agent_version": "bench",
        "metrics": METRICS,
    }


def register_body(token: str, machine_id: str, index: int) -> dict[str, Any]:
    return {
        "token": token,
        "machine_id": machine_id,
        "hostname": f"bench-{index}",
        "provider_name": "generic",
        "pool_name": POOL,
        "cpu": "8000m",
        "memory": "16Gi",
        "gpu_count": "0",
        "private_ip": "10.0.0.1",
    }


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def keepalive_requests(
    port: int, token: str, ids: list[str], method: str = "POST", path: str = KEEPALIVE_PATH
) -> list[bytes]:
    """One prebuilt keepalive request per machine (or the bodiless GET fallback)."""
    headers = {"Authorization": f"Bearer {token}"}
    if method == "GET":
        return [build_request("GET", HOST, port, path, headers)]
    headers["Content-Type"] = "application/json"
    return [
        build_request(method, HOST, port, path, headers, _json_bytes(keepalive_body(mid)))
        for mid in ids
    ]


def mint_worker_token(env: dict[str, str], cwd: Path) -> str:
    """One pool-wide worker token, straight from the CLI (``agenthub machine create``)."""
    argv = [sys.executable, "-m", "agenthub", "machine", "create"]
    argv += ["--pool", POOL, "--token-type", "worker", "--json"]
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"machine create failed ({done.returncode}):\n{done.stderr}{done.stdout}"
        )
    out = done.stdout
    try:
        payload = json.loads(out[out.index("{") : out.rindex("}") + 1])
        token: str = payload["token"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"machine create printed no token: {out!r}") from exc
    return token


def _describe(response: httpx.Response) -> str:
    return f"HTTP {response.status_code}: {response.text[:ERROR_BODY_CHARS]}"


async def _enroll_all(base_url: str, token: str, ids: list[str]) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    semaphore = asyncio.Semaphore(REGISTER_CONCURRENCY)
    failures: list[str] = []
    first_keepalive = ""
    limits = httpx.Limits(max_connections=REGISTER_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60.0, trust_env=False, limits=limits
    ) as client:

        async def enroll(index: int, machine_id: str) -> None:
            nonlocal first_keepalive
            async with semaphore:
                response = await client.post(
                    REGISTER_PATH, json=register_body(token, machine_id, index), headers=headers
                )
                if not 200 <= response.status_code < 300:
                    failures.append(f"register {machine_id}: {_describe(response)}")
                    return
                response = await client.post(
                    KEEPALIVE_PATH, json=keepalive_body(machine_id), headers=headers
                )
            if not 200 <= response.status_code < 300:
                failures.append(f"keepalive {machine_id}: {_describe(response)}")
            elif index == 0:
                first_keepalive = response.text

        await asyncio.gather(*(enroll(i, mid) for i, mid in enumerate(ids)))
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(ids)} machines failed to enroll; first: "
            f"{failures[0][:ERROR_BODY_CHARS]}"
        )
    return first_keepalive


def enroll_machines(server: Server, token: str, ids: list[str]) -> tuple[float, str]:
    """Register every machine and send its first keepalive (``registered`` -> ``ready``).

    ``REGISTER_CONCURRENCY`` machines at a time, not timed. Returns the seconds it took and
    the first machine's keepalive response.
    """
    t0 = time.perf_counter()
    first_keepalive = asyncio.run(_enroll_all(server.base_url, token, ids))
    return time.perf_counter() - t0, first_keepalive


def bare_accepts_post(server: Server, body: dict[str, Any]) -> bool:
    """Whether the bare app answers a keepalive-sized POST with 200 (twice, one connection)."""
    with httpx.Client(base_url=server.base_url, timeout=10.0, trust_env=False) as client:
        try:
            return all(client.post(KEEPALIVE_PATH, json=body).status_code == 200 for _ in range(2))
        except httpx.HTTPError:
            return False


def serve_supports_workers(env: dict[str, str], cwd: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "agenthub", "serve", "--help"],
        env={**env, "COLUMNS": "200"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return "--workers" in done.stdout


# --------------------------------------------------------------------------------------------
# PostgreSQL and Redis (created for the run, removed at its end)
# --------------------------------------------------------------------------------------------


async def _postgres_admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_database(admin_dsn: str) -> Iterator[str]:
    """Create a fresh database; yield its SQLAlchemy asyncpg URL; drop it on exit."""
    name = f"agenthub_bench_{secrets.token_hex(4)}"
    asyncio.run(_postgres_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    log(f"created PostgreSQL database {name}")
    try:
        parts = urlsplit(admin_dsn)
        yield urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", "", ""))
    finally:
        asyncio.run(_postgres_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        log(f"dropped PostgreSQL database {name}")


def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN + DEL); return how many were deleted."""
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


@contextlib.contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A random key prefix for the run; its keys are deleted on exit."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    finally:
        client.close()
    prefix = f"bench-{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        log(f"deleted {delete_redis_prefix(url, prefix)} Redis keys under {prefix!r}")


@contextlib.contextmanager
def cleanup_stack() -> Iterator[contextlib.ExitStack]:
    """An ExitStack whose unwinding a second Ctrl-C or SIGTERM cannot cut short."""
    stack = contextlib.ExitStack()
    try:
        yield stack
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


# --------------------------------------------------------------------------------------------
# Scenarios and report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubVariant:
    key: str
    label: str
    postgres: bool
    redis: bool


VARIANTS = {
    "redis": HubVariant("redis", "hub PostgreSQL + Redis", postgres=True, redis=True),
    "sqlite": HubVariant("sqlite", "hub SQLite", postgres=False, redis=False),
    "postgres": HubVariant("postgres", "hub PostgreSQL, no Redis", postgres=True, redis=False),
}


@dataclass
class ScenarioResult:
    name: str
    request: str  # what was sent, e.g. "POST /api/v1/machine/keepalive"
    closed: LoadResult
    open: LoadResult | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)


def hub_env(
    data_dir: Path, database_url: str | None, redis_url: str | None, prefix: str | None
) -> dict[str, str]:
    """The parent environment without inherited AGENTHUB_* settings, plus the scenario's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    env.update(
        {
            "AGENTHUB_DATA_DIR": str(data_dir),
            "AGENTHUB_SECRET_KEY": secrets.token_urlsafe(48),
            "AGENTHUB_RATE_LIMIT_ENABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for scope in ("RATE_LIMIT", "MACHINE_RATE_LIMIT"):
        for period in ("MINUTE", "HOUR", "DAY"):
            env[f"AGENTHUB_{scope}_PER_{period}"] = HUGE_LIMIT
    if database_url:
        env["AGENTHUB_DATABASE_URL"] = database_url
    if redis_url and prefix:
        env["AGENTHUB_REDIS_URL"] = redis_url
        env["AGENTHUB_REDIS_PREFIX"] = prefix
    return env


def _fmt_ms(value: float, lower_bound: bool = False) -> str:
    if math.isnan(value):
        return "-"
    return f"{'>= ' if lower_bound else ''}{value:.2f}"


def render_closed_table(scenarios: list[ScenarioResult]) -> str:
    header = (
        "| scenario | keepalives/s | p50 ms | p99 ms | errors | rps x (vs bare) | p99 x "
        "| server CPU | client CPU |"
    )
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in scenarios:
        r = s.closed
        ratios = (
            f"{s.ratios['rps']:.3f} | {s.ratios['p99']:.2f}" if s.ratios else "1 (baseline) | 1"
        )
        rows.append(
            f"| {s.name} `{s.request}` | {r.rps:,.0f} | {_fmt_ms(r.p50_ms)} | {_fmt_ms(r.p99_ms)} "
            f"| {r.errors} | {ratios} | {r.server_cpu_pct:.0f}% | {r.client_cpu_pct:.0f}% |"
        )
    return "\n".join(rows)


def render_open_table(scenarios: list[ScenarioResult]) -> str:
    rows = [
        "| scenario | offered/s | achieved/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in scenarios:
        r = s.open
        if r is None:
            continue
        bound = r.latency_is_lower_bound
        rows.append(
            f"| {s.name} | {r.offered_rps or 0:,.0f} | {r.rps:,.0f} | {_fmt_ms(r.p50_ms, bound)} "
            f"| {_fmt_ms(r.p99_ms, bound)} | {r.errors} |"
        )
    return "\n".join(rows)


def open_loop_met(r: LoadResult) -> bool:
    """The open-loop target: every due keepalive answered 2xx, p99 under the target."""
    return (
        r.errors == 0
        and r.unanswered == 0
        and r.p99_ms < TARGET_P99_MS
        and r.rps >= 0.99 * (r.offered_rps or 0.0)
    )


def target_lines(hubs: list[ScenarioResult], rate: float) -> list[str]:
    parts = [
        f"{s.name} {s.closed.rps:,.0f}/s: "
        + ("reached" if s.closed.rps >= TARGET_RPS and s.closed.errors == 0 else "not reached")
        for s in hubs
    ]
    lines = [f"≥ {TARGET_RPS:,.0f} keepalives/s target: " + "; ".join(parts)]
    opened = [s for s in hubs if s.open is not None]
    if opened:
        parts = []
        for s in opened:
            r = s.open
            assert r is not None
            p99 = _fmt_ms(r.p99_ms, r.latency_is_lower_bound)
            verdict = "reached" if open_loop_met(r) else "not reached"
            parts.append(f"{s.name} p99 {p99} ms at {r.rps:,.0f}/s achieved: {verdict}")
        lines.append(
            f"p99 < {TARGET_P99_MS:g} ms at {rate:,.0f} keepalives/s offered target: "
            + "; ".join(parts)
        )
    return lines


def _jsonable(value: Any) -> Any:
    """NaN as null, so the output is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Start each server in turn, measure it, stop everything; return the report."""
    started = datetime.now(UTC)
    notes: list[str] = []
    scenarios: list[ScenarioResult] = []
    uvicorn_flags = ["--log-level", "warning"]
    ids = machine_ids(args.machines)

    def load(server: Server, requests: list[bytes], mode: str) -> LoadResult:
        what = (
            f"{args.concurrency} connections, closed loop"
            if mode == "closed"
            else f"{args.rate:g}/s offered, up to {args.open_connections} connections"
        )
        log(f"  {mode} loop: {what} ({args.warmup:g} s warm-up + {args.duration:g} s)")
        spec = LoadSpec(
            host=HOST,
            port=server.port,
            requests=requests,
            mode=mode,
            connections=args.concurrency if mode == "closed" else args.open_connections,
            rate=args.rate if mode == "open" else 0.0,
            warmup_s=args.warmup,
            duration_s=args.duration,
            drain_s=OPEN_LOOP_DRAIN_S,
            server_pid=server.proc.pid,
        )
        result = run_load(spec)
        if result.first_error:
            log(f"  first error: {result.first_error}")
        return result

    with cleanup_stack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agenthub-bench-")))
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}

        workers_supported = serve_supports_workers(base_env, tmp)
        worker_flags: list[str] = []
        if workers_supported:
            worker_flags = ["--workers", str(args.workers)]
            notes.append(f"hub served with `serve --workers {args.workers}`")
        else:
            notes.append(
                "`agenthub serve` has no --workers option: each hub ran as one uvicorn process"
                + (f" (--workers {args.workers} ignored)" if args.workers != 1 else "")
            )

        # Baseline ------------------------------------------------------------------------
        log("bare uvicorn baseline")
        port = free_port()
        with cleanup_stack() as bare_stack:
            bare = bare_stack.enter_context(
                start_server(
                    "bare", bare_server_argv(port, uvicorn_flags), os.environ, tmp, tmp, port
                )
            )
            wait_ready(bare, "/")
            dummy_token = secrets.token_urlsafe(64)
            if bare_accepts_post(bare, keepalive_body(ids[0])):
                method, path = "POST", KEEPALIVE_PATH
                notes.append(
                    "baseline: bare app sent the same POST keepalive requests (body parsed by "
                    "uvicorn, not read by the app)"
                )
            else:
                method, path = "GET", "/"
                notes.append("baseline: bare app refused the POST; it was sent GET / instead")
            requests = keepalive_requests(port, dummy_token, ids, method, path)
            baseline = ScenarioResult(
                name="bare uvicorn",
                request=f"{method} {path}",
                closed=load(bare, requests, "closed"),
            )
            baseline.open = load(bare, requests, "open")
            scenarios.append(baseline)
            stop_process(bare.proc)

        # Hub scenarios -------------------------------------------------------------------
        variants = [VARIANTS["redis"], VARIANTS["sqlite"]]
        if args.postgres_no_redis:
            variants.append(VARIANTS["postgres"])
        prefix: str | None = None
        if any(v.redis for v in variants):
            prefix = stack.enter_context(redis_prefix(args.redis_url))

        for variant in variants:
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
                port = free_port()
                argv = [sys.executable, "-m", "agenthub", "serve", "--port", str(port)]
                hub = scenario_stack.enter_context(
                    start_server(
                        f"hub-{variant.key}",
                        [*argv, *uvicorn_flags, *worker_flags],
                        env,
                        tmp,
                        tmp,
                        port,
                    )
                )
                wait_ready(hub, HEALTH_PATH)
                token = mint_worker_token(env, tmp)
                took, first_keepalive = enroll_machines(hub, token, ids)
                log(f"  registered and readied {len(ids)} machines in {took:.1f} s")
                log(f"  a first keepalive answered: {first_keepalive[:200]}")
                requests = keepalive_requests(port, token, ids)
                result = ScenarioResult(
                    name=variant.label,
                    request=f"POST {KEEPALIVE_PATH}",
                    closed=load(hub, requests, "closed"),
                    setup={"enroll_s": round(took, 2)},
                )
                result.open = load(hub, requests, "open")
                scenarios.append(result)
                stop_process(hub.proc)  # before its database is dropped
        log("cleaning up")

    for s in scenarios[1:]:
        s.ratios = {
            "rps": ratio(s.closed.rps, baseline.closed.rps),
            "p99": ratio(s.closed.p99_ms, baseline.closed.p99_ms),
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
            "machines": args.machines,
            "concurrency": args.concurrency,
            "rate": args.rate,
            "open_connections": args.open_connections,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "open_loop_drain_s": OPEN_LOOP_DRAIN_S,
            "workers": args.workers if workers_supported else None,
        },
        "notes": notes,
        "scenarios": [
            {
                "name": s.name,
                "request": s.request,
                "setup": s.setup or None,
                "closed_loop": {**asdict(s.closed), "errors": s.closed.errors},
                "open_loop": (
                    {
                        **asdict(s.open),
                        "errors": s.open.errors,
                        "latency_is_lower_bound": s.open.latency_is_lower_bound,
                        "target_met": open_loop_met(s.open),
                    }
                    if s.open is not None
                    else None
                ),
                "ratios": s.ratios or None,
            }
            for s in scenarios
        ],
        "targets": target_lines(hubs, args.rate),
        "closed_table": render_closed_table(scenarios),
        "open_table": render_open_table(scenarios),
    }


def print_report(report: dict[str, Any]) -> None:
    machine, settings = report["machine"], report["settings"]
    print(
        f"agenthub keepalive benchmark -- {report['date']}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}, {machine['platform']}"
    )
    print(
        f"{settings['machines']:,} machines, {settings['warmup_s']:g} s warm-up, "
        f"{settings['duration_s']:g} s recorded per measurement; closed loop: "
        f"{settings['concurrency']} connections; open loop: {settings['rate']:,.0f}/s offered "
        f"over up to {settings['open_connections']} connections, latency from each request's "
        "due time"
    )
    for note in report["notes"]:
        print(f"- {note}")
    print()
    print("Closed loop (ratios are hub / bare; rps x < 1 and p99 x > 1 mean slower than bare):")
    print()
    print(report["closed_table"])
    print()
    print("Open loop (fixed rate):")
    print()
    print(report["open_table"])
    print()
    for line in report["targets"]:
        print(line)
    errors = [
        (s["name"], mode, s[key]["first_error"])
        for s in report["scenarios"]
        for mode, key in (("closed", "closed_loop"), ("open", "open_loop"))
        if s[key] is not None and s[key]["first_error"]
    ]
    for name, mode, first in errors:
        print(f"first error ({name}, {mode} loop): {first}")
    unanswered = [
        (s["name"], s["open_loop"]["unanswered"], s["open_loop"]["scheduled"])
        for s in report["scenarios"]
        if s["open_loop"] is not None and s["open_loop"]["unanswered"]
    ]
    for name, missing, scheduled in unanswered:
        print(
            f"{name}: {missing:,} of {scheduled:,} keepalives due in the window were unanswered "
            f"{OPEN_LOOP_DRAIN_S:g} s after it (counted as their wait so far: p50/p99 are lower "
            "bounds)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--machines", type=int, default=2000, help="machines registered (2000)")
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop connections (64)")
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="open-loop keepalives per second (2000)"
    )
    parser.add_argument(
        "--open-connections",
        type=int,
        default=256,
        help="most connections the open loop uses at once (256)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="recorded seconds (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first (1)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="hub worker processes, passed as `serve --workers` when serve supports it (1)",
    )
    parser.add_argument(
        "--postgres-no-redis",
        action="store_true",
        help="also measure the hub on PostgreSQL without Redis",
    )
    parser.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin connection; benchmark databases are created next to it",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the Redis scenario"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if (
        args.duration <= 0
        or args.warmup < 0
        or args.concurrency < 1
        or args.machines < 1
        or args.rate <= 0
        or args.open_connections < 1
        or args.workers < 1
    ):
        parser.error(
            "--duration and --rate must be > 0, --warmup >= 0, and --concurrency, --machines, "
            "--open-connections and --workers >= 1"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()  # SIGTERM unwinds like Ctrl-C, so everything started is cleaned up
    try:
        report = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted; servers stopped, databases, Redis keys and temporary files removed")
        return 130
    if args.json:
        print(json.dumps(_jsonable(report), indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
