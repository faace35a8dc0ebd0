"""The node agent: registers this machine with the hub, keeps it alive and runs its work.

Lifecycle: ``GET /config`` (who the token says we are, how often to keep alive) → ``POST
/register`` → ``POST /keepalive`` on a jittered interval. A keepalive the hub answers with
``machine_not_found`` (TTL lapsed, hub state lost) triggers an immediate re-registration; an
unreachable or failing hub is retried with exponential backoff; a refused token ends the agent
with exit code 2, since retrying cannot fix it. Once the machine is ready, the work loop
(:mod:`agenthub.agent.work`) polls for workloads beside the keepalives; ``shutdown()`` stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from agenthub import __version__
from agenthub.agent.host import Capacity, HostProbe, hostname, private_ip
from agenthub.agent.retry import Backoff
from agenthub.agent.runtimes import detect_runtimes, unavailable_reasons
from agenthub.agent.runtimes.base import Runtime
from agenthub.agent.work import DEFAULT_POLL_WAIT_S, WorkLoop
from agenthub.client.gateway import GatewayClient, GatewayError, InvalidToken, MachineNotFound
from agenthub.client.node import NodeClient

logger = logging.getLogger("agenthub.agent")

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TOKEN_REFUSED = 2

DEFAULT_KEEPALIVE_INTERVAL_S = 60.0
DEFAULT_POOL = "default"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# Jitter spreads a fleet's keepalives so that agents started together do not hit the hub together.
_rng = random.SystemRandom()


def _default_work_dir() -> Path:
    return Path.home() / ".agenthub" / "agent"


@dataclass
class AgentConfig:
    """How a node agent reaches the hub and what it says about its machine."""

    hub_url: str
    token: str
    pool_name: str | None = None  # None: the pool the token is bound to
    machine_id: str | None = None  # None: the token's machine, else derived from host + token
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    keepalive_interval_s: float | None = None  # None: what the hub recommends
    provider_name: str = "generic"
    work_dir: Path = field(default_factory=_default_work_dir)
    hostname: str | None = None
    allow_unsafe: bool = False  # the unsandboxed process runtime when bwrap is missing (dev only)
    poll_wait_s: float = DEFAULT_POLL_WAIT_S
    runtimes: dict[str, Runtime] | None = None  # None: what this machine offers
    shutdown_report_budget_s: float = 2.0  # how long shutdown waits to report stopped workloads
    change_journal: bool = True  # inotify-driven checkpoints of running workloads' workspaces


def derive_machine_id(host: str, token: str) -> str:
    """A stable 8-hex-character machine id for this host and token."""
    return hashlib.sha256(f"{host}{token}".encode()).hexdigest()[:8]


class _Fatal(Exception):
    """The hub answered in a way no retry can fix; ``run()`` returns ``exit_code``."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


async def _close_runtimes(runtimes: dict[str, Runtime]) -> None:
    """Release what runtimes hold (the docker runtime's engine connections)."""
    for name, runtime in runtimes.items():
        try:
            await asyncio.to_thread(runtime.close)
        except Exception:
            logger.exception("closing the %s runtime failed", name)


def _token_refused(what: str, err: InvalidToken) -> None:
    logger.error(
        "the hub refused this machine token: revoked, wrong pool or bound to "
        "another machine (%s on %s: %s)",
        err.status,
        what,
        err.message,
    )


class NodeAgent:
    """One worker machine's agent. ``await run()`` until ``shutdown()``; returns an exit code."""

    def __init__(
        self, config: AgentConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._transport = transport
        self.hostname = config.hostname or hostname()
        self.machine_id: str | None = config.machine_id
        self.pool_name: str | None = config.pool_name
        self.keepalive_interval_s = config.keepalive_interval_s or DEFAULT_KEEPALIVE_INTERVAL_S
        self.registrations = 0
        self.keepalives = 0
        self.ready = asyncio.Event()  # set after the first successful keepalive
        self._stop = asyncio.Event()
        self._stop_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host = HostProbe(config.work_dir)
        self.runtimes: dict[str, Runtime] = {}
        self.work: WorkLoop | None = None  # set once the machine id is known

    def shutdown(self) -> None:
        """Make ``run()`` return promptly; safe from signal handlers and other threads."""
        self._stop_requested = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not running yet: run() sees the flag
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._stop.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> int:
        """Register and keep alive until ``shutdown()``: 0 then, 2 if the token is refused."""
        # The loop is published before the flag is read and shutdown() sets the flag before
        # reading the loop, so a stop requested from another thread right now is never lost.
        self._loop = asyncio.get_running_loop()
        if self._stop_requested:
            return EXIT_OK
        main = asyncio.create_task(self._main(), name="agenthub-agent")
        stop = asyncio.create_task(self._stop.wait(), name="agenthub-agent-stop")
        try:
            await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            try:
                # Before the keepalive side goes: the hub should hear the workloads stopped
                # from a machine it still considers alive.
                await self._stop_work()
            finally:
                main.cancel()
                # An in-flight request is abandoned: the hub will let the TTL lapse.
                with contextlib.suppress(asyncio.CancelledError):
                    await stop
                if not main.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await main
        if main.cancelled():
            logger.info("agent stopped (machine %s)", self.machine_id)
            return EXIT_OK
        return main.result()

    async def _main(self) -> int:
        try:
            self.config.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            logger.error("cannot create the work dir %s: %s", self.config.work_dir, err)
            return EXIT_ERROR
        async with GatewayClient(
            self.config.hub_url, self.config.token, transport=self._transport
        ) as client:
            try:
                machine_id, pool_name = await self._configure(client)
                self.runtimes = await self._detect_runtimes(machine_id)
                self.work = WorkLoop(
                    NodeClient(self.config.hub_url, self.config.token, transport=self._transport),
                    machine_id,
                    self.runtimes,
                    self.config.work_dir,
                    poll_wait_s=self.config.poll_wait_s,
                    hub_url=self.config.hub_url.rstrip("/"),
                    change_journal=self.config.change_journal,
                )
                capacity = await self._host.capacity()
                exit_code = EXIT_ERROR
                try:
                    # Both run until shutdown (the work loop may return then); a _Fatal from
                    # either ends the other.
                    async with asyncio.TaskGroup() as group:
                        group.create_task(
                            self._stay_registered(client, machine_id, pool_name, capacity)
                        )
                        group.create_task(self._work(self.work))
                except* _Fatal as fatal:
                    exit_code = max(
                        err.exit_code for err in fatal.exceptions if isinstance(err, _Fatal)
                    )
                return exit_code
            except _Fatal as fatal:
                return fatal.exit_code

    async def _stop_work(self) -> None:
        """Stop the workloads, report that best-effort, release the runtimes we detected."""
        if self.work is not None:
            await self.work.shutdown(self.config.shutdown_report_budget_s)
        if self.config.runtimes is None:  # injected runtimes belong to whoever injected them
            await _close_runtimes(self.runtimes)

    async def _stay_registered(
        self, client: GatewayClient, machine_id: str, pool_name: str, capacity: Capacity
    ) -> None:
        while True:
            await self._register(client, machine_id, pool_name, capacity)
            # Returns when the hub no longer knows the machine.
            await self._keep_alive(client, machine_id, pool_name, capacity)

    async def _work(self, work: WorkLoop) -> None:
        """Run the work loop once the machine is registered and alive."""
        await self.ready.wait()
        try:
            await work.run()
        except InvalidToken as err:
            _token_refused("poll/report", err)
            raise _Fatal(EXIT_TOKEN_REFUSED) from err

    async def _detect_runtimes(self, machine_id: str) -> dict[str, Runtime]:
        if self.config.runtimes is not None:
            runtimes = dict(self.config.runtimes)
        else:
            # Blocking (a docker ping may take seconds): off the loop, keepalives are not late.
            runtimes = await asyncio.to_thread(
                detect_runtimes, machine_id, allow_unsafe=self.config.allow_unsafe
            )
        if runtimes:
            logger.info("workload runtimes: %s", ", ".join(sorted(runtimes)))
            return runtimes
        reasons = "; ".join(f"{name}: {why}" for name, why in unavailable_reasons().items())
        logger.error(
            "no workload runtime is available on this machine (%s). Install bubblewrap for "
            "sandboxed workloads (`apt-get install bubblewrap`) or start Docker, then restart "
            "the agent; until then the machine stays registered but receives no work",
            reasons or "none detected",
        )
        return runtimes

    async def _retrying(self, what: str, client_call: Callable[[], Awaitable[T]]) -> T:
        """Await ``client_call()`` until it succeeds, backing off on transient failures."""
        backoff = Backoff(cap=min(30.0, self.keepalive_interval_s))
        while True:
            try:
                return await client_call()
            except InvalidToken as err:
                _token_refused(what, err)
                raise _Fatal(EXIT_TOKEN_REFUSED) from err
            except MachineNotFound:
                raise
            except GatewayError as err:
                if not err.transient:
                    logger.error("the hub rejected %s: %s %s", what, err.status, err.message)
                    raise _Fatal(EXIT_ERROR) from err
                error: Exception = err
            except httpx.HTTPError as err:
                error = err
            delay = backoff.next_delay()
            logger.warning(
                "%s failed (%s: %s); retrying in %.1fs",
                what,
                type(error).__name__,
                error,
                delay,
            )
            await asyncio.sleep(delay)

    async def _configure(self, client: GatewayClient) -> tuple[str, str]:
        """Settle machine id, pool and keepalive interval: flags first, then the hub's word."""
        data = await self._retrying("config", client.config)
        machine = data.get("machine") or {}
        keepalive = data.get("keepalive") or {}
        machine_id = self.config.machine_id or str(
            machine.get("machine_id") or derive_machine_id(self.hostname, self.config.token)
        )
        pool_name = self.config.pool_name or str(machine.get("pool_name") or DEFAULT_POOL)
        self.machine_id, self.pool_name = machine_id, pool_name
        if self.config.keepalive_interval_s is None and keepalive.get("interval_seconds"):
            self.keepalive_interval_s = float(keepalive["interval_seconds"])
        ttl = keepalive.get("ttl_seconds")
        if ttl and self.keepalive_interval_s >= float(ttl):
            logger.warning(
                "keepalive interval %.1fs is not shorter than the hub's TTL %ss: "
                "the machine will lapse between keepalives",
                self.keepalive_interval_s,
                ttl,
            )
        return machine_id, pool_name

    def _registration(self, machine_id: str, pool_name: str, capacity: Capacity) -> dict[str, Any]:
        body: dict[str, Any] = {
            "machine_id": machine_id,
            "hostname": self.hostname,
            "provider_name": self.config.provider_name,
            "pool_name": pool_name,
            "cpu": capacity.cpu,
            "memory": capacity.memory,
            "gpu_count": capacity.gpu_count,
            "gpu_type": capacity.gpu_type,
            "private_ip": private_ip(),
            "agent_version": __version__,
            # The hub places a workload only where its runtime exists.
            "runtimes": sorted(self.runtimes),
        }
        # Sent only when given: the hub keeps labels and taints an admin set otherwise, also
        # across this agent's re-registrations.
        if self.config.labels:
            body["labels"] = dict(self.config.labels)
        if self.config.taints:
            body["taints"] = [dict(taint) for taint in self.config.taints]
        return body

    async def _register(
        self, client: GatewayClient, machine_id: str, pool_name: str, capacity: Capacity
    ) -> None:
        registration = self._registration(machine_id, pool_name, capacity)

        async def call() -> dict[str, Any]:
            return await client.register(registration)

        try:
            await self._retrying("register", call)
        except MachineNotFound as err:
            # Only a keepalive should say this; a hub that says it on register is broken.
            logger.error("the hub rejected register: %s %s", err.status, err.message)
            raise _Fatal(EXIT_ERROR) from err
        self.registrations += 1
        logger.info(
            "registered machine %s (%s) in pool %s: cpu %s, memory %s, gpus %s",
            machine_id,
            self.hostname,
            pool_name,
            registration["cpu"],
            registration["memory"],
            registration["gpu_count"],
        )

    async def _keep_alive(
        self, client: GatewayClient, machine_id: str, pool_name: str, capacity: Capacity
    ) -> None:
        """Keep the machine alive until the hub says it no longer knows it."""

        async def call() -> dict[str, Any]:
            return await client.keepalive(
                machine_id,
                pool_name,
                agent_version=__version__,
                provider_name=self.config.provider_name,
                metrics=self._host.metrics(capacity),
            )

        first = True
        while True:
            try:
                await self._retrying("keepalive", call)
            except MachineNotFound as err:
                logger.warning(
                    "the hub no longer knows machine %s (%s); re-registering",
                    machine_id,
                    err.message,
                )
                return
            self.keepalives += 1
            self.ready.set()
            if first:
                first = False
                logger.info("machine %s is ready", machine_id)
            else:
                logger.debug("keepalive %d sent for machine %s", self.keepalives, machine_id)
            await asyncio.sleep(self.keepalive_interval_s * _rng.uniform(0.9, 1.1))
