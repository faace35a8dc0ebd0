"""Workloads as host processes: the engine under the sandbox, and on its own an UNSAFE fallback.

:class:`ProcessRunning` supervises one spawned process tree: it pumps stdout/stderr into the
sink line by line, enforces the timeout, kills the tree, accounts usage and cleans up. The
sandbox runtime is this runtime with a bubblewrap argv prefix. On its own, :class:`ProcessRuntime`
runs commands unsandboxed, with the agent's privileges, and is registered only when
``allow_unsafe`` is given on a host without bubblewrap (development only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from pathlib import Path

import psutil

from agenthub.agent.runtimes.base import (
    ExitInfo,
    FailedStart,
    LaunchSpec,
    LineSplitter,
    LogSink,
    Running,
    TreeSampler,
    Usage,
    deliver,
    exit_code_of,
    send_signal,
    tree_pids,
)
from agenthub.agent.runtimes.cgroups import Cgroup, Cgroups, cgroup_name

logger = logging.getLogger("agenthub.agent")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READ_CHUNK = 64 * 1024
_DRAIN_TIMEOUT_S = 2.0  # output still open after the tree died is held by an escaped process
_SAMPLE_INTERVAL_S = 1.0

# Joins the cgroup (or sets RLIMIT_AS) in the child before exec, so that nothing the workload
# forks can start outside it; a plain shell costs ~1 ms and, unlike preexec_fn, keeps Python's
# fast vfork spawn and is safe with threads (the docker runtime runs some).
_ENTER_CGROUP = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
_SET_RLIMIT = 'ulimit -v "$1" || exit 125; shift; exec "$@"'


class ProcessRuntime:
    """Runs workloads as plain processes of the agent's user: NO isolation at all."""

    name = "sandbox"
    # Processes between the spawned pid and the workload; they are not sent SIGTERM, since
    # killing them would cut the workload's grace period short.
    wrapper_depth = 0

    def __init__(self, machine_id: str, cgroups: Cgroups | None) -> None:
        self.machine_id = machine_id
        self.cgroups = cgroups

    def command_line(self, spec: LaunchSpec, cwd: Path) -> tuple[list[str], Path, dict[str, str]]:
        """The argv to spawn, its host working directory and its environment."""
        env = {"PATH": DEFAULT_PATH, "HOME": str(spec.workspace), **spec.env}
        return list(spec.command), cwd, env

    async def start(self, spec: LaunchSpec, on_log: LogSink) -> Running:
        """Spawn the workload, in its own cgroup when the host allows it."""
        if not spec.command:
            return FailedStart("empty command")
        cwd = spec.workspace / (spec.working_dir or "")
        cwd.mkdir(parents=True, exist_ok=True)
        argv, host_cwd, env = self.command_line(spec, cwd)
        cgroup = None
        if self.cgroups is not None:
            name = cgroup_name(
                self.machine_id, spec.workload_id, spec.attempt, secrets.token_hex(3)
            )
            try:
                cgroup = self.cgroups.create(
                    name, cpu_millicores=spec.cpu_millicores, memory_mib=spec.memory_mib
                )
            except OSError as err:
                logger.warning("cannot create cgroup %s (%s); limiting memory by rlimit", name, err)
        if cgroup is not None:
            files = [str(f) for f in cgroup.procs_files]
            argv = ["/bin/sh", "-c", _ENTER_CGROUP, "agenthub-enter", *files, "--", *argv]
        elif spec.memory_mib > 0:
            limit_kib = str(spec.memory_mib * 1024)
            argv = ["/bin/sh", "-c", _SET_RLIMIT, "agenthub-rlimit", limit_kib, *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=host_cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            if cgroup is not None:
                cgroup.remove()
            return FailedStart(f"cannot start {argv[0]!r}: {err}")
        return ProcessRunning(proc, spec, on_log, cgroup, self.wrapper_depth)

    def close(self) -> None:
        """Nothing to release: processes are owned by their workloads."""

    async def reap_orphans(self, machine_id: str) -> list[str]:
        """Kill processes left in this machine's cgroups by an earlier agent; drop the cgroups.

        Sandboxed workloads die with the agent (bubblewrap's --die-with-parent), so normally
        this only removes empty cgroups; it returns the names of cgroups that still had members.
        """
        if self.cgroups is None:
            return []
        killed: list[str] = []
        for cgroup in self.cgroups.existing(cgroup_name(machine_id) + "."):
            if cgroup.pids():
                killed.append(cgroup.name)
            await asyncio.to_thread(cgroup.remove)
        return killed


class ProcessRunning:
    """One spawned process tree, supervised from start to cleanup."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        spec: LaunchSpec,
        on_log: LogSink,
        cgroup: Cgroup | None,
        wrapper_depth: int,
    ) -> None:
        self._proc = proc
        self._spec = spec
        self._on_log = on_log
        self._cgroup = cgroup
        self._wrapper_depth = wrapper_depth
        self._root = _process(proc.pid)  # None if it already exited and was reaped
        self._sampler = TreeSampler(self._root)
        self._reason: str | None = None
        self._error: str | None = None
        self._terminating: asyncio.Future[None] | None = None
        self._result = asyncio.ensure_future(self._supervise())

    @property
    def handle(self) -> str:
        return str(self._proc.pid)

    async def wait(self) -> ExitInfo:
        return await asyncio.shield(self._result)

    async def stop(self, grace_s: float = 3.0) -> None:
        if not self._result.done():
            if self._reason is None:
                self._reason = "stopped"
            await self._terminate(grace_s)
        await asyncio.wait({self._result})

    def usage(self) -> Usage:
        if self._result.done() and not self._result.cancelled():
            return self._result.result().usage
        if self._cgroup is not None:
            return self._cgroup.usage()
        return self._sampler.current()  # sampled every second by the supervisor

    async def _supervise(self) -> ExitInfo:
        pumps = [
            asyncio.ensure_future(self._pump(self._proc.stdout, "stdout")),
            asyncio.ensure_future(self._pump(self._proc.stderr, "stderr")),
        ]
        exited = asyncio.ensure_future(self._proc.wait())
        sampler = None if self._cgroup is not None else asyncio.ensure_future(self._sample())
        timeout = self._spec.timeout_s
        await asyncio.wait({exited}, timeout=timeout)
        if not exited.done():
            if self._reason is None:
                self._reason = "timeout"
                self._error = f"timed out after {timeout:g}s"
            await self._terminate(3.0)
        returncode = await exited
        if sampler is not None:
            sampler.cancel()
        # The workload is over once its main process is: strays would hold the pipes open.
        self._kill_tree(signal.SIGKILL, after_exit=True)
        _, stuck = await asyncio.wait(pumps, timeout=_DRAIN_TIMEOUT_S)
        for pump in stuck:
            logger.warning("workload %s: output still open after exit", self._spec.workload_id)
            pump.cancel()
        exit_code = exit_code_of(returncode)
        if self._cgroup is not None:
            usage = self._cgroup.usage()
            if self._reason is None and self._cgroup.oom_killed():
                self._error = f"out of memory: exceeded the {self._spec.memory_mib} MiB limit"
            await asyncio.to_thread(self._cgroup.remove)
        else:
            usage = self._sampler.current()
        return ExitInfo(exit_code, self._reason or "exited", self._error, usage)

    async def _pump(self, reader: asyncio.StreamReader | None, stream: str) -> None:
        if reader is None:
            return
        splitter = LineSplitter()
        while chunk := await reader.read(_READ_CHUNK):
            deliver(self._on_log, stream, splitter.feed(chunk))
        deliver(self._on_log, stream, splitter.flush())

    async def _sample(self) -> None:
        # Often at first, so that short workloads are not missed entirely, then every second.
        delay = 0.05
        while True:
            self._sampler.sample()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _SAMPLE_INTERVAL_S)

    async def _terminate(self, grace_s: float) -> None:
        # Shared, so that a stop() racing the timeout does not restart the grace period.
        if self._terminating is None:
            self._terminating = asyncio.ensure_future(self._do_terminate(grace_s))
        await asyncio.shield(self._terminating)

    async def _do_terminate(self, grace_s: float) -> None:
        self._kill_tree(signal.SIGTERM)
        exited = asyncio.ensure_future(self._proc.wait())
        await asyncio.wait({exited}, timeout=grace_s)
        if not exited.done():
            self._kill_tree(signal.SIGKILL)
            await exited

    def _kill_tree(self, sig: signal.Signals, *, after_exit: bool = False) -> None:
        """Signal the workload's processes; SIGKILL reaches the wrappers too."""
        pids: set[int] = set()
        wrappers: set[int] = set()
        if not after_exit:
            # Descendants are found through the parent chain, which also reaches double-forked
            # daemons inside a pid namespace (they are reparented to its init, a wrapper).
            pids.update(tree_pids(self._root))
            level = {self._proc.pid}
            for _ in range(self._wrapper_depth):
                wrappers |= level
                level = {p.pid for pid in level for p in _children(pid)}
        if self._cgroup is not None:
            pids |= self._cgroup.pids()
        if sig == signal.SIGKILL or self._wrapper_depth == 0:
            # The process group reaches members that were reparented out of the tree (it
            # outlives its leader); pgid == pid thanks to start_new_session.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)
        if sig != signal.SIGKILL:
            pids -= wrappers
        send_signal(pids, sig)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.Error:
        return []
