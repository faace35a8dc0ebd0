"""The "docker" runtime: workloads as containers of the local Docker engine.

The Docker SDK is synchronous. Short calls (create, start, stop, remove, stats) run in the
default executor; the two calls that block for a workload's whole life, following its output
and waiting for its exit, run in one dedicated thread per workload, so that long workloads
cannot starve the executor. That thread hands lines to the event loop with
``call_soon_threadsafe``, and resolves the exit after the last line, so callbacks' FIFO order
guarantees ``wait()`` returns only once all output went to the sink.

Usage is sampled from one-shot container stats (a few ms each) shortly after start and then
every few seconds: the cgroup a container is accounted in disappears when it exits, so the last
interval of a workload, and all of a workload shorter than the first sample, are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agenthub.agent.runtimes.base import (
    ExitInfo,
    FailedStart,
    LaunchSpec,
    LineSplitter,
    LogSink,
    Running,
    RuntimeUnavailable,
    Usage,
    deliver,
)

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.types import CancellableStream

logger = logging.getLogger("agenthub.agent")

_FIRST_SAMPLE_S = 0.5
_SAMPLE_INTERVAL_S = 3.0
_MIB = 1024 * 1024


def probe(timeout_s: float = 2.0) -> str | None:
    """None if a Docker engine answers a ping within ``timeout_s``, else why not."""
    import docker
    from docker.errors import DockerException

    client = None
    try:
        client = docker.from_env(timeout=math.ceil(timeout_s))
        client.ping()
    except DockerException as err:
        return f"no Docker engine answers ({err}): install docker.io and start dockerd"
    finally:
        if client is not None:
            client.close()
    return None


class DockerRuntime:
    """Runs workloads as containers labelled with this machine, workload and attempt."""

    name = "docker"

    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        self._client: DockerClient | None = None
        self._client_lock = threading.Lock()

    def client(self) -> DockerClient:
        """The engine client, created on first use (blocking: call from a thread)."""
        with self._client_lock:
            if self._client is None:
                import docker

                self._client = docker.from_env()
            return self._client

    def close(self) -> None:
        """Close the engine client's connections (at agent shutdown)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    async def start(self, spec: LaunchSpec, on_log: LogSink) -> Running:
        """Create and start the container; the image must already be on this node."""
        from docker.errors import DockerException, ImageNotFound

        if not spec.image:
            raise RuntimeUnavailable("the docker runtime needs an image in the workload spec")
        if spec.working_dir:
            (spec.workspace / spec.working_dir).mkdir(parents=True, exist_ok=True)
        try:
            container, stream = await asyncio.to_thread(self._create, spec)
        except ImageNotFound as err:
            raise RuntimeUnavailable(
                f"image {spec.image!r} is not available on this node (no registry is "
                "reachable): docker import/load it first"
            ) from err
        except DockerException as err:
            return FailedStart(f"cannot create the container: {err}")
        try:
            await asyncio.to_thread(container.start)
        except DockerException as err:
            _close_stream(stream)
            await asyncio.to_thread(_remove, container)
            return FailedStart(f"cannot start the container: {err}")
        return DockerRunning(container, stream, spec, on_log)

    def _create(
        self, spec: LaunchSpec
    ) -> tuple[Container, CancellableStream[tuple[bytes | None, bytes | None]]]:
        client = self.client()
        client.images.get(spec.image or "")  # raises ImageNotFound; never pulls
        volumes = {str(spec.workspace): {"bind": "/workspace", "mode": "rw"}}
        for volume in spec.volumes:
            mode = "ro" if volume.get("read_only") else "rw"
            volumes[str(volume["source"])] = {"bind": str(volume["target"]), "mode": mode}
        options: dict[str, Any] = {}
        if spec.memory_mib > 0:
            # memswap equal to the limit: no swap, so the limit kills instead of thrashing.
            options["mem_limit"] = options["memswap_limit"] = f"{spec.memory_mib}m"
        if spec.cpu_millicores > 0:
            options["nano_cpus"] = spec.cpu_millicores * 1_000_000
        if spec.gpu_count > 0:
            from docker.types import DeviceRequest

            options["device_requests"] = [
                DeviceRequest(count=spec.gpu_count, capabilities=[["gpu"]])
            ]
        if spec.network:
            options["ports"] = {
                f"{p['container_port']}/{p.get('protocol') or 'tcp'}": p.get("host_port")
                for p in spec.ports
            }
        else:
            options["network_mode"] = "none"
        container = client.containers.create(
            spec.image or "",
            spec.command,
            environment=spec.env,
            working_dir="/workspace" + (f"/{spec.working_dir}" if spec.working_dir else ""),
            volumes=volumes,
            # tini as pid 1 (Docker's --init): forwards SIGTERM, so stop() is graceful for
            # commands without a handler, and reaps the zombies an agent's tools leave.
            init=True,
            # No setuid escalation inside: what starts unprivileged stays so.
            security_opt=["no-new-privileges:true"],
            labels={
                "agenthub.machine": self.machine_id,
                "agenthub.workload": spec.workload_id,
                "agenthub.attempt": str(spec.attempt),
            },
            **options,
        )
        try:
            # Attached before start, as `docker run` does, so no early output can be missed.
            stream = client.api.attach(container.id or "", stream=True, logs=True, demux=True)
        except Exception:
            _remove(container)
            raise
        return container, stream

    async def reap_orphans(self, machine_id: str) -> list[str]:
        """Remove every container labelled with ``machine_id``; return their ids."""
        return await asyncio.to_thread(self._reap, machine_id)

    def _reap(self, machine_id: str) -> list[str]:
        found = self.client().containers.list(
            all=True, filters={"label": f"agenthub.machine={machine_id}"}
        )
        for container in found:
            _remove(container)
        return [container.id or "" for container in found]


class DockerRunning:
    """One container, followed from start to removal."""

    def __init__(
        self,
        container: Container,
        stream: CancellableStream[tuple[bytes | None, bytes | None]],
        spec: LaunchSpec,
        on_log: LogSink,
    ) -> None:
        self._container = container
        self._stream = stream
        self._spec = spec
        self._on_log = on_log
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[tuple[int | None, str | None]] = self._loop.create_future()
        self._usage = Usage()
        self._reason: str | None = None
        self._error: str | None = None
        self._stopping: asyncio.Future[None] | None = None
        threading.Thread(target=self._follow, name=f"docker-{self.handle}", daemon=True).start()
        self._result = asyncio.ensure_future(self._supervise())

    @property
    def handle(self) -> str:
        return (self._container.id or "")[:12]

    async def wait(self) -> ExitInfo:
        return await asyncio.shield(self._result)

    async def stop(self, grace_s: float = 3.0) -> None:
        if not self._result.done():
            if self._reason is None:
                self._reason = "stopped"
            await self._stop(grace_s)
        await asyncio.wait({self._result})

    def usage(self) -> Usage:
        return self._usage

    def _follow(self) -> None:
        """Thread: deliver the output, then the exit status."""
        splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
        result: tuple[int | None, str | None]
        try:
            for frame in self._stream:
                for name, data in zip(("stdout", "stderr"), frame, strict=True):
                    if data and (lines := splitters[name].feed(data)):
                        self._post(deliver, self._on_log, name, lines)
            for name, splitter in splitters.items():
                self._post(deliver, self._on_log, name, splitter.flush())
            status = self._container.wait()
            result = (int(status["StatusCode"]), None)
        except Exception as err:  # the thread must resolve the exit whatever happens
            result = (None, f"lost track of the container: {err}")
        finally:
            _close_stream(self._stream)
        self._post(self._set_exited, result)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(callback, *args)

    def _set_exited(self, result: tuple[int | None, str | None]) -> None:
        if not self._exited.done():
            self._exited.set_result(result)

    async def _supervise(self) -> ExitInfo:
        sampler = asyncio.ensure_future(self._sample())
        timeout = self._spec.timeout_s
        await asyncio.wait({self._exited}, timeout=timeout)
        if not self._exited.done():
            if self._reason is None:
                self._reason = "timeout"
                self._error = f"timed out after {timeout:g}s"
            await self._stop(3.0)
        exit_code, lost = await self._exited
        sampler.cancel()
        if lost is None and self._reason is None and await asyncio.to_thread(self._oom_killed):
            self._error = f"out of memory: exceeded the {self._spec.memory_mib} MiB limit"
        await asyncio.to_thread(_remove, self._container)
        if lost is not None:
            return ExitInfo(exit_code, "error", lost, self._usage)
        return ExitInfo(exit_code, self._reason or "exited", self._error, self._usage)

    async def _stop(self, grace_s: float) -> None:
        # Shared, so that a stop() racing the timeout does not restart the grace period.
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._docker_stop(grace_s))
        await asyncio.shield(self._stopping)
        await asyncio.wait({self._exited})

    async def _docker_stop(self, grace_s: float) -> None:
        from docker.errors import DockerException

        # The engine sends SIGTERM to the container's pid 1 and SIGKILL after the grace
        # period, which takes the whole pid namespace down with it.
        try:
            await asyncio.to_thread(self._container.stop, timeout=max(1, math.ceil(grace_s)))
        except DockerException as err:
            logger.warning("cannot stop container %s: %s", self.handle, err)

    async def _sample(self) -> None:
        await asyncio.sleep(_FIRST_SAMPLE_S)
        while True:
            stats = await asyncio.to_thread(self._stats)
            if stats is not None:
                self._usage = stats
            await asyncio.sleep(_SAMPLE_INTERVAL_S)

    def _stats(self) -> Usage | None:
        try:
            stats: dict[str, Any] = self._container.stats(stream=False, one_shot=True)  # type: ignore[assignment]
            cpu_ns = stats["cpu_stats"]["cpu_usage"]["total_usage"]
            memory = stats["memory_stats"]
            peak = memory.get("max_usage") or memory.get("usage") or 0  # v1 has max_usage
        except Exception:  # stats of a container that just exited are empty or refused
            return None
        if not cpu_ns:
            return None
        return Usage(
            cpu_seconds=max(self._usage.cpu_seconds, cpu_ns / 1e9),
            memory_peak_mib=max(self._usage.memory_peak_mib, peak / _MIB),
        )

    def _oom_killed(self) -> bool:
        try:
            self._container.reload()
            return bool(self._container.attrs["State"]["OOMKilled"])
        except Exception:
            return False


def _close_stream(stream: CancellableStream[Any]) -> None:
    with contextlib.suppress(Exception):
        stream.close()
    # CancellableStream.close() closes the socket but not the HTTP response's file object,
    # which keeps the descriptor open; the SDK offers no public way to close it.
    response = getattr(stream, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


def _remove(container: Container) -> None:
    from docker.errors import DockerException, NotFound

    try:
        container.remove(force=True)
    except NotFound:
        pass
    except DockerException as err:
        logger.warning("cannot remove container %s: %s", container.id, err)
