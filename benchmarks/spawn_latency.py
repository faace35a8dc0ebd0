"""Spawn latency: submit -> workload process running on the local node, beside ``docker run``.

Run it from the repository root::

    .venv/bin/python benchmarks/spawn_latency.py [--runs 100] [--warmup 5] [--postgres]
        [--no-docker] [--json]

It needs bubblewrap and busybox (``scripts/system-deps.sh test``); the ``docker run`` baseline
needs a Docker engine (without one the output says so and prints no ratio). ``--postgres`` adds
a second hub on PostgreSQL + Redis (127.0.0.1:5432 user ``postgres``, 127.0.0.1:6379; see
``--postgres-dsn``, ``--redis-url``).

**What "process start" means.** Every row runs the same command, ``busybox adjtimex``, and takes
the moment the workload process started from what the process itself prints: busybox calls
``adjtimex(2)`` (a read-only query) right after exec and prints the kernel's ``CLOCK_REALTIME`` as
``time.tv_sec`` / ``time.tv_usec``. The realtime clock is not namespaced (time namespaces only
shift the monotonic and boot clocks), so the sandbox, the container and this process read the
same clock; the query needs no privilege, so it works as ``nobody`` in the sandbox and under
docker's default seccomp profile. (busybox 1.35's ``date`` has no ``%N``: ``date +%s.%N``
prints a literal ``%N``, i.e. whole seconds, inside the busybox image.) Latency = that printed
time - ``time.time()`` taken just before the request or the subprocess call.

What it does, in one run:

1. Starts ``python -m agenthub up --port P --json`` in a fresh temporary data dir: the hub on
   SQLite with its in-process event bus and its local node agent (``agenthub agent`` in its own
   process, pool ``default``), default settings except a random secret key and every rate limit
   (per principal and per machine token) at 1,000,000,000: the limiter runs but never refuses
   the ~4 requests a run makes. The admin key is the one ``up`` prints on first start. With
   ``--postgres`` a second ``up`` runs on a PostgreSQL database created for the run and Redis
   under a random key prefix (the bus is then Redis pub/sub). It waits until the node is
   ``ready`` and its agent reports the ``sandbox`` runtime.
2. Runs ``--warmup`` unrecorded rounds, then ``--runs`` recorded rounds, one thing at a time.
   A round runs each of the following once, in this order, so that a slow moment of the
   machine hits every row alike:

   * **hub sandbox**, per hub: ``t0``; ``POST /api/workloads {"command": ["busybox",
     "adjtimex"], "runtime": "sandbox"}`` with the admin key over a kept-alive connection; then
     it waits for the workload's final event on ``GET /api/stream/events`` (one SSE stream
     opened before the first run, so the hub is not polled while the workload runs); then
     ``GET /api/workloads/{id}`` and ``GET /api/workloads/{id}/logs``. Rows: submit -> process
     start (printed time), submit -> ``running`` recorded by the hub (``started_at``), submit
     -> ``succeeded`` recorded (``finished_at``).
   * **docker run --rm**: ``t0``; ``docker run --rm <image> busybox adjtimex`` as a
     subprocess, image ``agenthub-test/busybox:latest`` (the tests' image, imported from the
     host's busybox-static; if it is missing an equivalent ``agenthub-bench/busybox:spawn`` is
     imported for the run and removed after it). Default network (bridge), default runtime.
     Rows: invoke -> process start, invoke -> ``docker`` exited.
   * **sandbox runtime alone**: the node agent's own ``SandboxRuntime`` (same bwrap flags,
     setpriv drop to ``nobody`` when root, a cgroup per run when the host allows) driven from
     this process: ``t0``; workspace mkdir, ``start()``. It is what the agent does after it
     received an assignment, without the hub.
   * **bare bwrap**: ``bwrap --ro-bind / / busybox adjtimex`` as a subprocess, the floor of a
     bubblewrap launch.
   * **plain exec**: ``busybox adjtimex`` as a subprocess, no sandbox: the fork/exec floor, and
     a check that the printed clock is this process's clock (its latency is never negative).

3. After the runs, reads each workload's ``workload.*`` events (``GET /api/events``, their
   ``created_at``) and the agent's ``assigned workload <id>`` log line (from ``up``'s output,
   millisecond resolution), and splits the hub's submit -> process start into stages: POST
   handling, scheduler wake-up and plan, the pass's writes, commit + event + long-poll wake-up
   + answer, the agent's start of the sandbox, and the report back.

Percentiles are nearest-rank over the recorded runs. The ratio is hub p50 / ``docker run`` p50
from the same run (target: p50 < 100 ms and <= 0.3x docker). The hub, its agent, dockerd and
this process share the machine's cores, so figures compare only between runs on one machine.

Everything the run creates is removed at the end, also on error, Ctrl-C or SIGTERM: the hubs
and their agents are stopped (their sandboxes die with them), containers labelled with the
run's id removed, an image imported for the run removed, the PostgreSQL database dropped, the
Redis keys deleted and the temporary directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from _loadgen import (
    Server,
    free_port,
    log,
    percentile,
    ratio,
    start_server,
    stop_on_sigterm,
    wait_ready,
)
from agenthub.agent.runtimes.base import LaunchSpec
from agenthub.agent.runtimes.cgroups import Cgroups
from agenthub.agent.runtimes.sandbox import SandboxRuntime
from keepalive import (
    HEALTH_PATH,
    _jsonable,
    cleanup_stack,
    hub_env,
    postgres_database,
    redis_prefix,
)

COMMAND = ["busybox", "adjtimex"]
TEST_IMAGE = "agenthub-test/busybox:latest"
BENCH_IMAGE = "agenthub-bench/busybox:spawn"
TARGET_P50_MS = 100.0
TARGET_RATIO = 0.3
FINAL_TYPES = ("workload.succeeded", "workload.failed", "workload.terminated", "workload.lost")
NODE_READY_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 60.0
EVENT_PAGE = 1000
_TV = re.compile(r"time\.tv_(sec|usec):\s*(\d+)")
_ASSIGNED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO agenthub\.agent: assigned workload "
    r"([0-9a-f-]{36}) attempt (\d+)",
    re.MULTILINE,
)


def printed_time(lines: list[str]) -> float:
    """The realtime clock ``busybox adjtimex`` printed (seconds since the epoch, µs)."""
    found: dict[str, int] = {}
    for line in lines:
        if match := _TV.search(line):
            found[match.group(1)] = int(match.group(2))
    if set(found) != {"sec", "usec"}:
        raise RuntimeError(f"no time.tv_sec/time.tv_usec in the output: {lines[:20]!r}")
    return found["sec"] + found["usec"] / 1e6


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


# --------------------------------------------------------------------------------------------
# Subprocess rows: docker run, bare bwrap, plain exec, and the sandbox runtime alone
# --------------------------------------------------------------------------------------------


@dataclass
class ProcRun:
    invoked: float  # time.time() before the call
    started: float  # printed by the process
    exited: float  # time.time() once it exited and its output was read


async def run_command(argv: list[str]) -> ProcRun:
    invoked = time.time()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode()[-500:]}")
    return ProcRun(invoked, printed_time(out.decode().splitlines()), exited)


class RuntimeAlone:
    """The node agent's ``SandboxRuntime``, driven from this process (no hub)."""

    def __init__(self, work_dir: Path) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise RuntimeError("bubblewrap is not installed: run scripts/system-deps.sh test")
        self.cgroups, reason = Cgroups.detect()
        self.cgroup_note = f"cgroup v{self.cgroups.version}" if self.cgroups else f"{reason}"
        self.runtime = SandboxRuntime(secrets.token_hex(4), self.cgroups, bwrap)
        if problem := self.runtime.probe():
            raise RuntimeError(problem)
        self.work_dir = work_dir
        self.count = 0

    async def run(self) -> ProcRun:
        self.count += 1
        lines: list[str] = []
        workspace = self.work_dir / f"w{self.count}"
        spec = LaunchSpec(f"bench-{self.count}", 1, list(COMMAND), {}, workspace)
        invoked = time.time()
        workspace.mkdir(parents=True)  # the agent creates the workspace after the assignment
        running = await self.runtime.start(spec, lambda _stream, text: lines.append(text))
        info = await running.wait()
        exited = time.time()
        if info.exit_code != 0:
            raise RuntimeError(f"sandbox runtime: {info}; output {lines[-5:]!r}")
        return ProcRun(invoked, printed_time(lines), exited)


def docker_version() -> str | None:
    done = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _image_exists(image: str) -> bool:
    argv = ["docker", "image", "inspect", image]
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0


def prepare_docker(stack: contextlib.ExitStack, tmp: Path, run_id: str) -> tuple[str | None, str]:
    """(image, note): the image to run, or None and why there is no docker baseline."""
    if shutil.which("docker") is None:
        return None, "docker is not installed"
    version = docker_version()
    if version is None:
        return None, "the Docker engine does not answer (`docker version` failed)"
    stack.callback(remove_containers, run_id)
    if _image_exists(TEST_IMAGE):
        return TEST_IMAGE, f"docker {version}, image {TEST_IMAGE}"
    busybox = shutil.which("busybox")
    if busybox is None:
        return None, f"no image {TEST_IMAGE} and no busybox to build one"
    root = tmp / "image"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    tarball = tmp / "image.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=".")
    subprocess.run(["docker", "import", str(tarball), BENCH_IMAGE], check=True, timeout=120)
    stack.callback(
        subprocess.run, ["docker", "image", "rm", "-f", BENCH_IMAGE], capture_output=True
    )
    return BENCH_IMAGE, f"docker {version}, image {BENCH_IMAGE} (imported for this run)"


def remove_containers(run_id: str) -> None:
    """Containers of this run still there (a ``docker run --rm`` cut short)."""
    argv = ["docker", "ps", "-aq", "--filter", f"label=agenthub-bench-spawn={run_id}"]
    found = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    ids = found.stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60, check=False)
        log(f"removed {len(ids)} leftover containers")


# --------------------------------------------------------------------------------------------
# The hub (``agenthub up``) and its local node agent
# --------------------------------------------------------------------------------------------


@dataclass
class HubRun:
    workload_id: str
    submitted: float  # time.time() before the POST
    acked: float  # the POST's 201 received
    started: float  # printed by the process
    queued: float  # queued_at
    scheduled: float  # scheduled_at (the pass's clock, before its writes)
    running: float  # started_at: the hub recorded `running`
    finished: float  # finished_at: the hub recorded `succeeded`
    scheduled_event: float | None = None  # workload.scheduled created_at (after the writes)
    starting_event: float | None = None  # workload.starting created_at
    assigned: float | None = None  # the agent logged the assignment (ms resolution)


@dataclass
class Hub:
    key: str
    label: str
    server: Server
    admin_key: str
    machine_id: str
    runs: list[HubRun] = field(default_factory=list)
    client: httpx.AsyncClient | None = None
    finals: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    listening: asyncio.Event | None = None

    def _final(self, workload_id: str) -> asyncio.Future[dict[str, Any]]:
        if workload_id not in self.finals:
            self.finals[workload_id] = asyncio.get_running_loop().create_future()
        return self.finals[workload_id]

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        """A client with the admin key and the SSE stream of final workload events."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        async with httpx.AsyncClient(
            base_url=self.server.base_url, headers=headers, timeout=30.0, trust_env=False
        ) as client:
            self.client = client
            self.listening = asyncio.Event()
            listener = asyncio.create_task(self._listen(client))
            subscribed = asyncio.create_task(self.listening.wait())
            try:
                done, _ = await asyncio.wait(
                    {listener, subscribed}, timeout=30, return_when=asyncio.FIRST_COMPLETED
                )
                if listener in done:
                    listener.result()  # raises why the stream ended
                if not done:
                    raise RuntimeError(f"{self.label}: the event stream did not open in 30 s")
                yield
            finally:
                subscribed.cancel()
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await listener

    async def _listen(self, client: httpx.AsyncClient) -> None:
        params = {"types": ",".join(FINAL_TYPES)}
        timeout = httpx.Timeout(30.0, read=None)
        async with client.stream(
            "GET", "/api/stream/events", params=params, timeout=timeout
        ) as response:
            response.raise_for_status()
            assert self.listening is not None
            self.listening.set()
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:].strip())
                future = self._final(str(event["data"]["workload_id"]))
                if not future.done():
                    future.set_result(event)

    async def run_once(self) -> HubRun:
        client = self.client
        assert client is not None
        body = {"command": list(COMMAND), "runtime": "sandbox"}
        submitted = time.time()
        response = await client.post("/api/workloads", json=body)
        acked = time.time()
        if response.status_code != 201:
            raise RuntimeError(f"{self.label}: POST /api/workloads: {response.text[:500]}")
        workload_id = response.json()["data"]["id"]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._final(workload_id)), RUN_TIMEOUT_S)
        workload = (await client.get(f"/api/workloads/{workload_id}")).json()["data"]
        if workload["status"] != "succeeded":
            raise RuntimeError(
                f"{self.label}: workload {workload_id} is {workload['status']} after "
                f"{time.time() - submitted:.1f} s (error: {workload['error']}); hub log:\n"
                f"{self.server.log_tail()}"
            )
        texts: list[str] = []
        for _ in range(20):  # lines go before the final status in a report; this is a guard
            lines = (await client.get(f"/api/workloads/{workload_id}/logs")).json()["data"]
            texts = [line["text"] for line in lines["lines"]]
            if any("tv_usec" in text for text in texts):
                break
            await asyncio.sleep(0.05)
        return HubRun(
            workload_id=workload_id,
            submitted=submitted,
            acked=acked,
            started=printed_time(texts),
            queued=_epoch(workload["queued_at"]) or 0.0,
            scheduled=_epoch(workload["scheduled_at"]) or 0.0,
            running=_epoch(workload["started_at"]) or 0.0,
            finished=_epoch(workload["finished_at"]) or 0.0,
        )

    async def add_event_times(self) -> None:
        """Each recorded run's ``workload.scheduled`` / ``workload.starting`` created_at."""
        assert self.client is not None
        seen: dict[tuple[str, str], float] = {}
        after = 0
        while True:
            params: dict[str, Any] = {"types": "workload.*", "after_id": after}
            params["limit"] = EVENT_PAGE
            page = (await self.client.get("/api/events", params=params)).json()["data"]
            for event in page["events"]:
                key = (str(event["data"].get("workload_id")), event["type"])
                seen.setdefault(key, _epoch(event["created_at"]) or 0.0)
            if len(page["events"]) < EVENT_PAGE:
                break
            after = page["last_id"]
        for run in self.runs:
            run.scheduled_event = seen.get((run.workload_id, "workload.scheduled"))
            run.starting_event = seen.get((run.workload_id, "workload.starting"))

    def add_assignment_times(self) -> None:
        """When the agent logged each assignment (its log is in ``up``'s output)."""
        text = self.server.log_path.read_text(errors="replace")
        assigned = {
            workload_id: datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for stamp, workload_id, _ in _ASSIGNED.findall(text)
        }
        for run in self.runs:
            run.assigned = assigned.get(run.workload_id)


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    postgres: bool


VARIANTS = {
    "sqlite": Variant("sqlite", "hub SQLite", postgres=False),
    "postgres": Variant("postgres", "hub PostgreSQL + Redis", postgres=True),
}


def _up_info(server: Server) -> dict[str, Any]:
    """The JSON line ``up --json`` prints before anything else."""
    for line in server.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            info = json.loads(line)
            if isinstance(info, dict) and "bootstrap_admin_key" in info:
                return info
    raise RuntimeError(f"{server.name} printed no JSON line:\n{server.log_tail()}")


def wait_node_ready(server: Server, admin_key: str, machine_id: str) -> None:
    """Until the local node is ready and its agent offers the sandbox runtime."""
    deadline = time.monotonic() + NODE_READY_TIMEOUT_S
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=server.base_url, headers=headers, trust_env=False) as client:
        while time.monotonic() < deadline:
            response = client.get(f"/api/nodes/{machine_id}")
            ready = response.status_code == 200 and response.json()["data"]["status"] == "ready"
            runtimes = re.search(r"workload runtimes: (.*)", server.log_path.read_text())
            if ready and runtimes:
                if "sandbox" not in runtimes.group(1).split(", "):
                    raise RuntimeError(f"the local agent has no sandbox: {runtimes.group(0)}")
                return
            time.sleep(0.2)
    raise RuntimeError(f"{server.name}: node {machine_id} not ready:\n{server.log_tail()}")


def start_hub(
    stack: contextlib.ExitStack, variant: Variant, tmp: Path, args: argparse.Namespace
) -> Hub:
    database_url = prefix = None
    if variant.postgres:
        database_url = stack.enter_context(postgres_database(args.postgres_dsn))
        prefix = stack.enter_context(redis_prefix(args.redis_url))
    data_dir = tmp / f"data-{variant.key}"
    data_dir.mkdir()
    env = hub_env(data_dir, database_url, args.redis_url if prefix else None, prefix)
    port = free_port()
    argv = [sys.executable, "-m", "agenthub", "up", "--port", str(port), "--json"]
    server = stack.enter_context(start_server(f"up-{variant.key}", argv, env, tmp, tmp, port))
    wait_ready(server, HEALTH_PATH)
    info = _up_info(server)
    if not info.get("bootstrap_admin_key") or not info.get("local_machine_id"):
        raise RuntimeError(f"up printed no admin key or local machine: {info}")
    wait_node_ready(server, info["bootstrap_admin_key"], info["local_machine_id"])
    log(f"{variant.label}: up at {server.base_url}, node {info['local_machine_id']} ready")
    return Hub(
        variant.key, variant.label, server, info["bootstrap_admin_key"], info["local_machine_id"]
    )


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


@dataclass
class Samples:
    docker: list[ProcRun] = field(default_factory=list)
    runtime: list[ProcRun] = field(default_factory=list)
    bwrap: list[ProcRun] = field(default_factory=list)
    exec: list[ProcRun] = field(default_factory=list)


async def measure(
    hubs: list[Hub], image: str | None, runtime: RuntimeAlone, run_id: str, args: argparse.Namespace
) -> Samples:
    samples = Samples()
    docker_argv = ["docker", "run", "--rm", "--label", f"agenthub-bench-spawn={run_id}"]
    bwrap_argv = [runtime.runtime.bwrap, "--ro-bind", "/", "/", *COMMAND]
    async with contextlib.AsyncExitStack() as astack:
        for hub in hubs:
            await astack.enter_async_context(hub.connected())
        total = args.warmup + args.runs
        started = time.monotonic()
        for i in range(total):
            keep = i >= args.warmup
            for hub in hubs:
                run = await hub.run_once()
                if keep:
                    hub.runs.append(run)
            rows: list[tuple[list[ProcRun], Callable[[], Awaitable[ProcRun]]]] = []
            if image is not None:
                rows.append((samples.docker, partial(run_command, [*docker_argv, image, *COMMAND])))
            rows += [
                (samples.runtime, runtime.run),
                (samples.bwrap, partial(run_command, bwrap_argv)),
                (samples.exec, partial(run_command, list(COMMAND))),
            ]
            for target, run_one in rows:
                result = await run_one()
                if keep:
                    target.append(result)
            if (i + 1) % 10 == 0 or i + 1 == total:
                log(f"  round {i + 1}/{total} ({time.monotonic() - started:.0f} s)")
        for hub in hubs:
            await hub.add_event_times()
            hub.add_assignment_times()
    return samples


def stats(values_s: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles in milliseconds."""
    ms = sorted(v * 1000.0 for v in values_s)
    return {
        "n": len(ms),
        "min": ms[0] if ms else float("nan"),
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": ms[-1] if ms else float("nan"),
    }


def _gaps(runs: list[Any], end: str, start: str) -> list[float]:
    pairs = [(getattr(r, end), getattr(r, start)) for r in runs]
    return [e - s for e, s in pairs if e is not None and s is not None]


def hub_stages(hub: Hub) -> list[tuple[str, dict[str, float]]]:
    """The hub's submit -> process start, split where the hub and the agent leave a time."""
    r = hub.runs
    return [
        ("submit -> POST answered 201", stats(_gaps(r, "acked", "submitted"))),
        ("submit -> row inserted (queued_at)", stats(_gaps(r, "queued", "submitted"))),
        ("queued_at -> pass planned (scheduled_at)", stats(_gaps(r, "scheduled", "queued"))),
        (
            "scheduled_at -> pass wrote it (workload.scheduled event)",
            stats(_gaps(r, "scheduled_event", "scheduled")),
        ),
        (
            "scheduled event -> agent has the assignment (agent log, ms)",
            stats(_gaps(r, "assigned", "scheduled_event")),
        ),
        ("agent has it -> process start", stats(_gaps(r, "started", "assigned"))),
        (
            "process start -> hub recorded starting (< 0: before)",
            stats(_gaps(r, "starting_event", "started")),
        ),
        ("process start -> hub recorded running", stats(_gaps(r, "running", "started"))),
        ("process start -> hub recorded succeeded", stats(_gaps(r, "finished", "started"))),
    ]


def environment(image_note: str, runtime: RuntimeAlone) -> dict[str, Any]:
    bwrap = subprocess.run(
        [runtime.runtime.bwrap, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    busybox = subprocess.run(["busybox"], capture_output=True, text=True, check=False).stdout
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "bwrap": bwrap,
        "busybox": busybox.splitlines()[0] if busybox else "?",
        "docker": image_note,
        "uid": os.geteuid(),
        "sandbox_identity": (
            "root agent: workloads drop to nobody via setpriv"
            if os.geteuid() == 0 and shutil.which("setpriv")
            else "user namespace, uid 1000 inside"
        ),
        "cgroups": runtime.cgroup_note,
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    run_id = secrets.token_hex(4)
    with cleanup_stack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agenthub-spawn-")))
        image, image_note = (None, "--no-docker") if args.no_docker else (None, "")
        if not args.no_docker:
            image, image_note = prepare_docker(stack, tmp, run_id)
        if image is None:
            log(f"no docker baseline: {image_note}")
        runtime = RuntimeAlone(tmp / "runtime-alone")
        keys = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
        hubs = [start_hub(stack, VARIANTS[key], tmp, args) for key in keys]
        log(f"{args.warmup} warm-up + {args.runs} recorded rounds")
        samples = asyncio.run(measure(hubs, image, runtime, run_id, args))
        env = environment(image_note, runtime)
        log("cleaning up")
    return report(started, env, hubs, samples, image is not None, args)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(
    started: datetime,
    env: dict[str, Any],
    hubs: list[Hub],
    samples: Samples,
    have_docker: bool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []

    def row(name: str, what: str, values: list[float]) -> None:
        rows.append({"name": name, "measures": what, **stats(values)})

    for hub in hubs:
        row(
            f"{hub.label} sandbox",
            "submit -> process start",
            _gaps(hub.runs, "started", "submitted"),
        )
        row(hub.label, "submit -> running recorded", _gaps(hub.runs, "running", "submitted"))
        row(hub.label, "submit -> succeeded recorded", _gaps(hub.runs, "finished", "submitted"))
    if have_docker:
        row(
            "docker run --rm",
            "invoke -> process start",
            _gaps(samples.docker, "started", "invoked"),
        )
        row("docker run --rm", "invoke -> exited", _gaps(samples.docker, "exited", "invoked"))
    row(
        "sandbox runtime alone",
        "mkdir + start() -> process start",
        _gaps(samples.runtime, "started", "invoked"),
    )
    row("bare bwrap", "invoke -> process start", _gaps(samples.bwrap, "started", "invoked"))
    row("plain exec", "invoke -> process start", _gaps(samples.exec, "started", "invoked"))
    docker_p50 = stats(_gaps(samples.docker, "started", "invoked"))["p50"]
    for r in rows:
        r["x_docker_p50"] = ratio(r["p50"], docker_p50) if have_docker else float("nan")
    clock_ok = all(r["min"] >= 0 for r in rows if r["measures"].endswith("process start"))
    verdicts = []
    for hub, hub_row in zip(hubs, rows[0 : len(hubs) * 3 : 3], strict=True):
        p50 = hub_row["p50"]
        text = f"{hub.label}: p50 {p50:.1f} ms: " + (
            "< 100 ms, met" if p50 < TARGET_P50_MS else "not met"
        )
        if have_docker:
            x = hub_row["x_docker_p50"]
            text += f"; {x:.2f}x docker run p50: " + ("met" if x <= TARGET_RATIO else "not met")
        else:
            text += "; no docker ratio (no docker baseline)"
        verdicts.append(text)
    return {
        "date": started.isoformat(timespec="seconds"),
        "environment": env,
        "settings": {"runs": args.runs, "warmup": args.warmup, "command": COMMAND},
        "rows": rows,
        "stages": {hub.label: [{"stage": s, **v} for s, v in hub_stages(hub)] for hub in hubs},
        "verdicts": verdicts,
        "clock_ok": clock_ok,
        "runs": {
            **{hub.label: [asdict(r) for r in hub.runs] for hub in hubs},
            "docker": [asdict(r) for r in samples.docker],
            "runtime_alone": [asdict(r) for r in samples.runtime],
            "bwrap": [asdict(r) for r in samples.bwrap],
            "exec": [asdict(r) for r in samples.exec],
        },
    }


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}"


def print_report(rep: dict[str, Any]) -> None:
    e = rep["environment"]
    print(
        f"agenthub spawn latency benchmark -- {rep['date']}, {e['cpu_count']} CPUs, "
        f"Python {e['python']}, {e['platform']}"
    )
    print(
        f"{e['bwrap']}; {e['busybox'].split(' multi-call')[0]}; SQLite {e['sqlite']}; "
        f"{e['docker'] or 'no docker'}; uid {e['uid']} ({e['sandbox_identity']}); "
        f"sandbox cgroups: {e['cgroups']}"
    )
    s = rep["settings"]
    print(
        f"command `{' '.join(s['command'])}` (prints the host realtime clock right after exec); "
        f"{s['warmup']} warm-up + {s['runs']} recorded rounds, one run at a time, rows "
        "interleaved; hub = `agenthub up` with its local node agent, default settings"
    )
    print()
    print("| row | measures | n | p50 ms | p90 ms | p99 ms | max ms | p50 x docker |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rep["rows"]:
        x = r["x_docker_p50"]
        print(
            f"| {r['name']} | {r['measures']} | {r['n']} | {_ms(r['p50'])} | {_ms(r['p90'])} "
            f"| {_ms(r['p99'])} | {_ms(r['max'])} | {'-' if x != x else f'{x:.2f}'} |"
        )
    for label, stages in rep["stages"].items():
        print()
        print(f"{label}, where submit -> process start goes (each stage on its own):")
        print()
        print("| stage | n | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|---:|")
        for st in stages:
            print(
                f"| {st['stage']} | {st['n']} | {_ms(st['p50'])} | {_ms(st['p90'])} "
                f"| {_ms(st['p99'])} | {_ms(st['max'])} |"
            )
    print()
    print(
        f"Target: p50 < {TARGET_P50_MS:.0f} ms and <= {TARGET_RATIO}x docker run p50 "
        "(submit -> process start)"
    )
    for verdict in rep["verdicts"]:
        print(f"- {verdict}")
    if not rep["clock_ok"]:
        print("CLOCK CHECK FAILED: a process printed a time before it was invoked")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100, help="recorded rounds (100)")
    parser.add_argument("--warmup", type=int, default=5, help="unrecorded rounds first (5)")
    parser.add_argument("--postgres", action="store_true", help="also a hub on PostgreSQL + Redis")
    parser.add_argument("--no-docker", action="store_true", help="skip the docker baseline")
    parser.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin connection; the benchmark database is created next to it",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        rep = run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted; hubs stopped, containers, database and temporary files removed")
        return 130
    if args.json:
        print(json.dumps(_jsonable(rep), indent=2, ensure_ascii=False))
    else:
        print_report(rep)
    return 0 if rep["clock_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
