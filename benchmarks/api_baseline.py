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
``httpx.AsyncClient`` per worker) is kept for comparison.

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
import multiprocessing
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any, cast

import httptools
import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
EXTRA_KEYS = 20
READY_TIMEOUT_S = 60.0
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


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (``nan`` when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class _RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: write a prebuilt request, await the status code.

    The response is parsed by httptools (the C parser uvicorn itself uses); the body is
    read to its end and dropped. Requests are never pipelined: one in flight at a time.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


class _RawClient:
    """A connection of its own per load worker, reopened if the server closes it."""

    def __init__(self, spec: LoadSpec) -> None:
        url = httpx.URL(spec.url)
        self.host, self.port = url.host, url.port or 80
        target = url.raw_path.decode()
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: */*"]
        lines += [f"{name}: {value}" for name, value in spec.headers.items()]
        self.raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.conn: _RawConnection | None = None

    async def get(self) -> int:
        if self.conn is None or self.conn.closed:
            loop = asyncio.get_running_loop()
            _, self.conn = await loop.create_connection(_RawConnection, self.host, self.port)
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


TRANSPORT_ERRORS = (OSError, httpx.HTTPError, httptools.HttpParserError)


async def _generate_load(spec: LoadSpec) -> LoadResult:
    server = psutil.Process(spec.server_pid)
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

    cpu: dict[str, float] = {}

    async def sample_cpu() -> None:
        for edge, when in (("0", window_start), ("1", window_end)):
            await asyncio.sleep(max(0.0, when - loop.time()))
            server_times = server.cpu_times()
            cpu["server" + edge] = server_times.user + server_times.system
            cpu["client" + edge] = time.process_time()
            cpu["wall" + edge] = loop.time()

    await asyncio.gather(sample_cpu(), *(one_worker() for _ in range(spec.concurrency)))

    latencies.sort()
    wall = cpu["wall1"] - cpu["wall0"]
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
        server_cpu_pct=100.0 * (cpu["server1"] - cpu["server0"]) / wall,
        client_cpu_pct=100.0 * (cpu["client1"] - cpu["client0"]) / wall,
    )


def _run_event_loop(spec: LoadSpec) -> LoadResult:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(_generate_load(spec))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_generate_load(spec))


def _load_worker(spec: LoadSpec, conn: Connection) -> None:
    """Entry point of the load-generator process: send back a LoadResult or a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop us
    try:
        conn.send(("ok", _run_event_loop(spec)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one scenario's load in a fresh ``spawn``-ed process and return its measurements."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_worker, args=(spec, sender), name="load-generator")
    proc.start()
    sender.close()
    try:
        if not receiver.poll(spec.warmup_s + spec.duration_s + 120.0):
            raise RuntimeError("load generator did not report back in time")
        status, payload = receiver.recv()
        proc.join(timeout=30.0)
    finally:
        receiver.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status != "ok":
        raise RuntimeError(f"load generator failed:\n{payload}")
    assert isinstance(payload, LoadResult)
    return payload


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A server subprocess and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate one child we started (SIGTERM, then SIGKILL after 10 s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def start_server(
    name: str, argv: list[str], env: Mapping[str, str], cwd: Path, log_dir: Path, port: int
) -> Iterator[Server]:
    """Start a server subprocess; always stop it when the block exits."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal Ctrl-C reaches us, and we stop it in order
        )
    server = Server(name=name, proc=proc, port=port, log_path=log_path)
    try:
        yield server
    finally:
        stop_process(proc)


def wait_ready(server: Server, path: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``GET path`` until it answers 200, or fail with the server's log."""
    deadline = time.monotonic() + timeout_s
    url = server.base_url + path
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


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


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


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


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "_bare_app:app",
                    "--app-dir",
                    str(BENCH_DIR),
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--no-proxy-headers",  # the hub runs uvicorn with proxy_headers=False too
                    *uvicorn_flags,
                ],
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


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
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
