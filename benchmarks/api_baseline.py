"""HTTP throughput and latency of the hub, measured against a bare-uvicorn baseline.

Run it from the repository root::

    .venv/bin/python benchmarks/api_baseline.py [--duration 5] [--concurrency 32] [--json]

What it does, in one run:

1. Starts ``benchmarks/_bare_app.py`` (a raw ASGI app returning a tiny JSON body, no framework)
   under uvicorn, one process, ``--log-level warning``.
2. Starts the hub (``python -m agenthub serve --log-level warning``, also one uvicorn process)
   on a fresh SQLite database in a temporary data dir, with rate limiting enabled but with
   limits so high that it never refuses a request. An admin key is minted with
   ``agenthub admin create-key`` and 20 more keys are created through the API, so the list
   route below returns a full page.
3. Measures three scenarios, each with the same load generator:

   * ``bare GET /``                  -- the baseline;
   * ``hub GET /api/v1/health``      -- public route (database ping, host utilization);
   * ``hub GET /api/auth/keys``      -- authenticated admin list (API key check, rate limit
     counters, a paginated SELECT, Pydantic serialization, the response envelope).

The load generator runs in a separate process (``multiprocessing`` with ``spawn``), never in
a server process: ``--concurrency`` asyncio workers, each with its own keep-alive HTTP/1.1
connection, sending requests back to back (closed loop, no pipelining). It warms up for
``--warmup`` seconds (nothing recorded), then records every response that completes in the
next ``--duration`` seconds. Throughput is 2xx responses per second of that window; p50/p99
are latencies of the 2xx responses (nearest rank); errors are non-2xx responses plus
transport failures. It also samples the CPU time that the server process and the load
generator used during the window, so one can tell which side was the bottleneck.

How to read the ratios (each hub figure divided by the baseline's figure):

* ``rps x`` -- hub requests/s / bare requests/s. 0.25 means the route sustains a quarter of
  what uvicorn alone does on this machine; lower is more framework/application overhead.
* ``p50 x``, ``p99 x`` -- hub latency / bare latency. 4.0 means a request takes four times as
  long as the bare one under the same concurrency; higher is worse.

The default client (``--client raw``) is a minimal HTTP/1.1 client on asyncio (uvloop) with
the httptools parser, because an ``httpx`` client costs about a millisecond of CPU per request:
on a small machine it, not uvicorn, sets the baseline's ceiling. ``--client httpx`` (one
``httpx.AsyncClient`` per worker) is kept for comparison. The raw client, the load-generator
process and the server handling are shared with ``keepalive.py`` (``_loadgen.py``).

The baseline includes the load generator's own cost. If its CPU column is near 100% for the
bare scenario, the client (not uvicorn) capped the baseline, and the ratios understate the
hub's overhead relative to uvicorn itself. Server and client share the machine's cores, so the
numbers are only comparable between runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from _loadgen import (
    TRANSPORT_ERRORS,
    RawConnection,
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

EXTRA_KEYS = 20
HUGE_LIMIT = "100000000"


# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    """What one load-generator process is asked to do."""

    url: str
    headers: dict[str, str]
    concurrency: int
    warmup_s: float
    duration_s: float
    server_pid: int
    client: str  # "raw" or "httpx"


@dataclass
class LoadResult:
    """What one load-generator process measured during the recorded window."""

    ok: int
    non_2xx: int
    transport_errors: int
    status_counts: dict[str, int]
    window_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_pct: float
    client_cpu_pct: float

    @property
    def errors(self) -> int:
        return self.non_2xx + self.transport_errors


class _RawClient:
    """A connection of its own per load worker, reopened if the server closes it."""

    def __init__(self, spec: LoadSpec) -> None:
        url = httpx.URL(spec.url)
        self.host, self.port = url.host, url.port or 80
        self.raw = build_request("GET", self.host, self.port, url.raw_path.decode(), spec.headers)
        self.conn: RawConnection | None = None

    async def get(self) -> int:
        if self.conn is None or self.conn.closed:
            loop = asyncio.get_running_loop()
            _, self.conn = await loop.create_connection(RawConnection, self.host, self.port)
        try:
            return await self.conn.request(self.raw)
        except BaseException:
            await self.aclose()  # never reuse a connection in an unknown state
            raise

    async def aclose(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None


class _HttpxClient:
    """httpx, one AsyncClient (one connection) per load worker.

    One client shared by all workers is far slower: its connection pool, not the server,
    becomes the bottleneck as concurrency grows.
    """

    def __init__(self, spec: LoadSpec) -> None:
        self.url, self.headers = spec.url, spec.headers
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1), timeout=30.0, trust_env=False
        )

    async def get(self) -> int:
        response = await self.client.get(self.url, headers=self.headers)
        return response.status_code

    async def aclose(self) -> None:
        await self.client.aclose()


async def _generate_load(spec: LoadSpec) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counts = {"ok": 0, "non_2xx": 0, "transport": 0}
    loop = asyncio.get_running_loop()
    window_start = loop.time() + spec.warmup_s
    window_end = window_start + spec.duration_s

    async def one_worker() -> None:
        client = _RawClient(spec) if spec.client == "raw" else _HttpxClient(spec)
        try:
            while loop.time() < window_end:
                t0 = time.perf_counter()
                try:
                    status = await client.get()
                except TRANSPORT_ERRORS:
                    if window_start <= loop.time() <= window_end:
                        counts["transport"] += 1
                    await asyncio.sleep(0.01)  # do not spin on a refused connection
                    continue
                elapsed = time.perf_counter() - t0
                if not window_start <= loop.time() <= window_end:
                    continue  # warm-up, or finished after the window closed
                if 200 <= status < 300:
                    counts["ok"] += 1
                    latencies.append(elapsed)
                else:
                    counts["non_2xx"] += 1
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
        finally:
            await client.aclose()

    cpu = asyncio.ensure_future(sample_cpu_window(spec.server_pid, window_start, window_end))
    await asyncio.gather(cpu, *(one_worker() for _ in range(spec.concurrency)))
    server_cpu_pct, client_cpu_pct = cpu.result()

    latencies.sort()
    to_ms = 1000.0
    return LoadResult(
        ok=counts["ok"],
        non_2xx=counts["non_2xx"],
        transport_errors=counts["transport"],
        status_counts=statuses,
        window_s=spec.duration_s,
        rps=counts["ok"] / spec.duration_s,
        p50_ms=percentile(latencies, 50) * to_ms,
        p99_ms=percentile(latencies, 99) * to_ms,
        mean_ms=(sum(latencies) / len(latencies) * to_ms) if latencies else math.nan,
        server_cpu_pct=server_cpu_pct,
        client_cpu_pct=client_cpu_pct,
    )


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one scenario's load in a fresh ``spawn``-ed process and return its measurements."""
    result = run_in_process(_generate_load, spec, spec.warmup_s + spec.duration_s + 120.0)
    assert isinstance(result, LoadResult)
    return result


# --------------------------------------------------------------------------------------------
# Hub setup
# --------------------------------------------------------------------------------------------


def hub_env(data_dir: Path) -> dict[str, str]:
    """The parent environment without inherited AGENTHUB_* settings, plus the benchmark's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
    env.update(
        {
            "AGENTHUB_DATA_DIR": str(data_dir),
            "AGENTHUB_SECRET_KEY": secrets.token_urlsafe(48),
            "AGENTHUB_RATE_LIMIT_PER_MINUTE": HUGE_LIMIT,
            "AGENTHUB_RATE_LIMIT_PER_HOUR": HUGE_LIMIT,
            "AGENTHUB_RATE_LIMIT_PER_DAY": HUGE_LIMIT,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def create_admin_key(env: Mapping[str, str], cwd: Path) -> str:
    """Mint an admin key straight in the hub's database (``agenthub admin create-key``)."""
    done = subprocess.run(
        [sys.executable, "-m", "agenthub", "admin", "create-key", "--name", "bench", "--json"],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"create-key failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    key: str = json.loads(done.stdout)["key"]
    return key


def seed_keys(server: Server, admin_key: str) -> int:
    """Create EXTRA_KEYS keys through the API; return how many keys the list route shows."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=server.base_url, timeout=30.0, trust_env=False) as client:
        for i in range(EXTRA_KEYS):
            response = client.post("/api/auth/keys", json={"name": f"k{i}"}, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(
                    f"POST /api/auth/keys -> {response.status_code}: {response.text}"
                )
        response = client.get("/api/auth/keys", headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET /api/auth/keys -> {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
    items = body.get("data", body).get("api_keys", [])
    return len(items)


# --------------------------------------------------------------------------------------------
# Scenarios and report
# --------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """One measured scenario, with its ratios against the baseline (``None`` for the baseline)."""

    name: str
    method: str
    path: str
    result: LoadResult
    ratios: dict[str, float] = field(default_factory=dict)


def with_ratios(scenario: ScenarioResult, baseline: LoadResult) -> ScenarioResult:
    r = scenario.result
    scenario.ratios = {
        "rps": ratio(r.rps, baseline.rps),
        "p50": ratio(r.p50_ms, baseline.p50_ms),
        "p99": ratio(r.p99_ms, baseline.p99_ms),
    }
    return scenario


def render_table(scenarios: list[ScenarioResult]) -> str:
    """A Markdown table of absolute figures and ratios against the first (baseline) row."""
    header = (
        "| scenario | req/s | p50 ms | p99 ms | errors | rps x | p50 x | p99 x "
        "| server CPU | client CPU |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    rows = [header, rule]
    for s in scenarios:
        r = s.result
        if s.ratios:
            ratio_cells = f"{s.ratios['rps']:.3f} | {s.ratios['p50']:.2f} | {s.ratios['p99']:.2f}"
        else:
            ratio_cells = "1 (baseline) | 1 | 1"
        rows.append(
            f"| {s.name} `{s.method} {s.path}` | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.errors} | {ratio_cells} | {r.server_cpu_pct:.0f}% | {r.client_cpu_pct:.0f}% |"
        )
    return "\n".join(rows)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Start both servers, measure the three scenarios, stop everything; return the report."""
    started = datetime.now(UTC)
    scenarios: list[ScenarioResult] = []

    def measure(server: Server, name: str, path: str, headers: dict[str, str]) -> ScenarioResult:
        log(f"measuring {name} GET {path} ({args.warmup:g} s warm-up + {args.duration:g} s)")
        spec = LoadSpec(
            url=server.base_url + path,
            headers=headers,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            duration_s=args.duration,
            server_pid=server.proc.pid,
            client=args.client,
        )
        return ScenarioResult(name=name, method="GET", path=path, result=run_load(spec))

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agenthub-bench-")))
        data_dir = tmp / "data"
        data_dir.mkdir()
        uvicorn_flags = ["--log-level", "warning"]

        port = free_port()
        bare = stack.enter_context(
            start_server(
                "bare",
                bare_server_argv(port, uvicorn_flags),
                env=os.environ,
                cwd=tmp,
                log_dir=tmp,
                port=port,
            )
        )
        wait_ready(bare, "/")
        baseline = measure(bare, "bare", "/", {})
        scenarios.append(baseline)
        stop_process(bare.proc)  # do not leave an idle server competing for the cores

        env = hub_env(data_dir)
        admin_key = create_admin_key(env, cwd=tmp)
        port = free_port()
        hub = stack.enter_context(
            start_server(
                "hub",
                [sys.executable, "-m", "agenthub", "serve", "--port", str(port), *uvicorn_flags],
                env=env,
                cwd=tmp,
                log_dir=tmp,
                port=port,
            )
        )
        wait_ready(hub, "/api/v1/health")
        listed = seed_keys(hub, admin_key)
        log(f"hub ready; GET /api/auth/keys lists {listed} keys per page")
        scenarios.append(measure(hub, "hub", "/api/v1/health", {}))
        auth = {"Authorization": f"Bearer {admin_key}"}
        scenarios.append(measure(hub, "hub", "/api/auth/keys", auth))

    for s in scenarios[1:]:
        with_ratios(s, baseline.result)
    return {
        "date": started.isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "concurrency": args.concurrency,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "client": args.client,
        },
        "keys_listed_per_page": listed,
        "scenarios": [
            {
                "name": s.name,
                "method": s.method,
                "path": s.path,
                **asdict(s.result),
                "errors": s.result.errors,
                "ratios": s.ratios or None,
            }
            for s in scenarios
        ],
        "table": render_table(scenarios),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="recorded seconds (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first (1)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator's HTTP client: raw (asyncio + httptools, default) or httpx",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.concurrency < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --concurrency >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the ExitStack stops the servers and removes the temp dir.
    stop_on_sigterm()
    try:
        report = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted; servers stopped and temporary files removed")
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    machine, settings = report["machine"], report["settings"]
    print(
        f"agenthub API baseline -- {report['date']}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}, {machine['platform']}"
    )
    print(
        f"concurrency {settings['concurrency']}, {settings['warmup_s']:g} s warm-up, "
        f"{settings['duration_s']:g} s recorded per scenario, {settings['client']} client; "
        "ratios are hub / bare (rps x < 1 and p50/p99 x > 1 mean slower than bare uvicorn)"
    )
    print()
    print(report["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
