"""Shared parts of the HTTP benchmarks: a raw HTTP/1.1 client, server processes, statistics.

Used by ``api_baseline.py``, ``keepalive.py`` and ``messaging.py``. Nothing here measures
anything by itself:

* ``RawConnection`` / ``BodyConnection`` -- one keep-alive HTTP/1.1 connection on asyncio,
  parsed with httptools (the C parser uvicorn itself uses), one request in flight at a time;
* ``run_in_process`` -- run a load-generator coroutine in a fresh ``spawn``-ed process (never
  in a server process), on uvloop when it is installed;
* ``sample_machine_window`` -- CPU time of the whole machine and of PostgreSQL and Redis;
* ``sample_cpu_window`` -- CPU time of the server process tree and of the load generator
  between the two edges of the recorded window;
* ``start_server`` / ``wait_ready`` / ``stop_process`` -- server subprocesses that are always
  stopped when the benchmark exits, Ctrl-C and errors included.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar, cast

import httptools
import httpx
import psutil

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0

SpecT = TypeVar("SpecT")
ResultT = TypeVar("ResultT")


# --------------------------------------------------------------------------------------------
# Statistics and output
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (``nan`` when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client
# --------------------------------------------------------------------------------------------


class RawConnection(asyncio.Protocol):
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


class BodyConnection(RawConnection):
    """A ``RawConnection`` that also keeps the last response's body (to report errors).

    httptools only calls ``on_body`` when the protocol defines it, so ``RawConnection``
    itself stays free of that per-response callback.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = bytearray()

    def on_body(self, body: bytes) -> None:
        self.body += body

    async def request(self, raw: bytes) -> int:
        self.body = bytearray()
        return await super().request(raw)


def build_request(
    method: str, host: str, port: int, target: str, headers: Mapping[str, str], body: bytes = b""
) -> bytes:
    """The bytes of one HTTP/1.1 request (``Content-Length`` added when there is a body)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Accept: */*"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


TRANSPORT_ERRORS = (OSError, httpx.HTTPError, httptools.HttpParserError)


# --------------------------------------------------------------------------------------------
# Load-generator process
# --------------------------------------------------------------------------------------------


def run_event_loop(main: Callable[[SpecT], Awaitable[ResultT]], spec: SpecT) -> ResultT:
    """Run ``main(spec)`` to completion on uvloop (asyncio's default loop without it)."""

    async def call() -> ResultT:
        return await main(spec)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(call())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(call())


def _process_entry(
    main: Callable[[SpecT], Awaitable[ResultT]], spec: SpecT, conn: Connection
) -> None:
    """Entry point of the load-generator process: send back the result or a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop us
    try:
        conn.send(("ok", run_event_loop(main, spec)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_in_process(
    main: Callable[[SpecT], Awaitable[ResultT]], spec: SpecT, timeout_s: float
) -> ResultT:
    """Run ``main(spec)`` in a fresh ``spawn``-ed process and return what it returned.

    ``main`` must be a module-level coroutine function and ``spec`` and the result picklable.
    The process is always reaped, even when the caller is interrupted.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_process_entry, args=(main, spec, sender), name="load-generator")
    proc.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
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
    return cast(ResultT, payload)


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and of its descendants alive right now."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = p.cpu_times()
            total += times.user + times.system
    return total


async def sample_cpu_window(
    server_pid: int, window_start: float, window_end: float
) -> tuple[float, float]:
    """Sleep through the window (loop-time edges); return (server %, client %) of one core.

    The server figure covers the server process and its children (uvicorn workers); the
    client figure is this load-generator process.
    """
    loop = asyncio.get_running_loop()
    server = psutil.Process(server_pid)
    edges: list[tuple[float, float, float]] = []
    for when in (window_start, window_end):
        await asyncio.sleep(max(0.0, when - loop.time()))
        edges.append((tree_cpu_seconds(server), time.process_time(), loop.time()))
    (server0, client0, wall0), (server1, client1, wall1) = edges
    wall = wall1 - wall0
    return 100.0 * (server1 - server0) / wall, 100.0 * (client1 - client0) / wall


STORE_PROCESSES = frozenset({"postgres", "redis-server"})


def _machine_cpu() -> tuple[float, float]:
    """Busy CPU seconds of the whole machine, and of the database/Redis processes alive now."""
    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    stores = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        if p.info["name"] in STORE_PROCESSES and p.info["cpu_times"] is not None:
            stores += p.info["cpu_times"].user + p.info["cpu_times"].system
    return busy, stores


async def sample_machine_window(window_start: float, window_end: float) -> tuple[float, float]:
    """Sleep through the window (loop-time edges); return (machine %, stores %) of one core.

    The machine figure is every process on it (up to 100% per core); the stores figure is
    PostgreSQL's and Redis's processes (server, backends, background workers), so that a
    request's whole cost can be read, not only the hub's share of it. Backends that exit within
    the window are missed; the load keeps its connections open, so that loses little.
    """
    loop = asyncio.get_running_loop()
    edges: list[tuple[float, float, float]] = []
    for when in (window_start, window_end):
        await asyncio.sleep(max(0.0, when - loop.time()))
        edges.append((*_machine_cpu(), loop.time()))
    (busy0, stores0, wall0), (busy1, stores1, wall1) = edges
    wall = wall1 - wall0
    return 100.0 * (busy1 - busy0) / wall, 100.0 * (stores1 - stores0) / wall


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
    """Terminate one child we started (SIGTERM, then SIGKILL after 10 s), and what it started.

    Descendants (uvicorn worker processes) that outlive their parent are killed by pid.
    """
    if proc.poll() is not None:
        return
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    proc.terminate()
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@contextlib.contextmanager
def start_server(
    name: str, argv: list[str], env: Mapping[str, str], cwd: Path, log_dir: Path, port: int
) -> Iterator[Server]:
    """Start a server subprocess; always stop it when the block exits."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
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


def bare_server_argv(port: int, uvicorn_flags: list[str]) -> list[str]:
    """uvicorn serving ``_bare_app.py``, with the uvicorn settings the hub uses."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "_bare_app:app",
        "--app-dir",
        str(Path(__file__).resolve().parent),
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-proxy-headers",  # the hub runs uvicorn with proxy_headers=False too
        *uvicorn_flags,
    ]


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so cleanup code runs."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
