"""The interface between the node agent's work loop and its runtimes, and what runtimes share.

A runtime turns a :class:`LaunchSpec` into a :class:`Running` workload: it starts it, hands
every line of its output to a :data:`LogSink`, enforces its timeout, and kills its whole process
tree on request. Failures that make a node unfit for a spec (no such image, no engine) raise
:class:`RuntimeUnavailable` from ``start``; failures of the workload itself, including a
command that cannot be started, come back from ``wait`` as an :class:`ExitInfo`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

logger = logging.getLogger("agenthub.agent")

LogSink = Callable[[str, str], None]
"""``on_log(stream, text)``: stream is "stdout" or "stderr", text one line without its newline.
Always called on the event loop thread."""

MAX_LINE_BYTES = 16 * 1024
_MIB = 1024 * 1024


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a runtime needs to run one attempt of one workload."""

    workload_id: str
    attempt: int
    command: list[str]  # argv, non-empty
    env: dict[str, str]
    workspace: Path  # host directory, created by the caller, writable
    working_dir: str | None = None  # relative to the workspace, already validated
    image: str | None = None  # docker only (required there)
    cpu_millicores: int = 1000
    memory_mib: int = 512
    gpu_count: int = 0
    timeout_s: float | None = None
    network: bool = True
    # docker: {"container_port": int, "host_port": int | None, "protocol": "tcp" | "udp"}
    ports: list[dict[str, Any]] = field(default_factory=list)
    # docker: {"source": host path or volume name, "target": abs path, "read_only": bool}
    volumes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    """Resources a workload has used so far (or in total, once it ended)."""

    cpu_seconds: float = 0.0
    memory_peak_mib: float = 0.0


@dataclass(frozen=True)
class ExitInfo:
    """How a workload ended.

    ``reason`` is "exited", "timeout", "stopped" (``stop()`` was called) or "error" (it could
    not start, or the runtime failed); ``exit_code`` is 128 + signo for a signal death and
    None when it never started.
    """

    exit_code: int | None
    reason: str
    error: str | None
    usage: Usage


class RuntimeUnavailable(Exception):
    """This runtime cannot run this spec on this node; the message says what would fix it."""


class Running(Protocol):
    """A started workload."""

    @property
    def handle(self) -> str:
        """Pid or container id, for logs."""
        ...

    async def wait(self) -> ExitInfo:
        """Resolve once it ended and all its output went to the sink; safe to call repeatedly."""
        ...

    async def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM the whole tree, SIGKILL after ``grace_s``; return once it is dead."""
        ...

    def usage(self) -> Usage:
        """A cheap live sample."""
        ...


class Runtime(Protocol):
    """A way of running workloads on this node ("sandbox" or "docker")."""

    name: str

    async def start(self, spec: LaunchSpec, on_log: LogSink) -> Running:
        """Start one workload; raise RuntimeUnavailable when this node cannot run the spec."""
        ...

    async def reap_orphans(self, machine_id: str) -> list[str]:
        """Kill what an earlier agent process on this machine left running; say what."""
        ...

    def close(self) -> None:
        """Release what the runtime holds (connections); blocking, call it off the loop."""
        ...


class FailedStart:
    """A workload that never started: ``wait`` reports reason "error" with the cause."""

    def __init__(self, error: str) -> None:
        self._info = ExitInfo(exit_code=None, reason="error", error=error, usage=Usage())

    @property
    def handle(self) -> str:
        return "-"

    async def wait(self) -> ExitInfo:
        return self._info

    async def stop(self, grace_s: float = 3.0) -> None:
        return None

    def usage(self) -> Usage:
        return self._info.usage


class LineSplitter:
    """Cuts a byte stream into decoded lines; a line over ``limit`` bytes comes out in pieces."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        """Lines completed by ``data``."""
        self._buf += data
        lines: list[str] = []
        while True:
            newline = self._buf.find(b"\n", 0, self._limit + 1)
            if newline >= 0:
                piece = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                if piece.endswith(b"\r"):
                    piece = piece[:-1]
            elif len(self._buf) > self._limit:
                cut = _utf8_boundary(self._buf, self._limit)
                piece = bytes(self._buf[:cut])
                del self._buf[:cut]
            else:
                return lines
            lines.append(piece.decode("utf-8", errors="replace"))

    def flush(self) -> list[str]:
        """The unterminated last line, if any (the stream ended)."""
        if not self._buf:
            return []
        rest = bytes(self._buf).decode("utf-8", errors="replace")
        self._buf.clear()
        return [rest]


def _utf8_boundary(buf: bytearray, cut: int) -> int:
    # Back off over continuation bytes (10xxxxxx) so a piece does not end mid-character; a
    # malformed run of more than three of them is cut anyway.
    for back in range(4):
        if cut - back > 0 and buf[cut - back] & 0xC0 != 0x80:
            return cut - back
    return cut


def deliver(on_log: LogSink, stream: str, lines: list[str]) -> None:
    """Hand ``lines`` to the sink; a failing sink is logged, never allowed to stop the reader."""
    for line in lines:
        try:
            on_log(stream, line)
        except Exception:
            logger.exception("log sink failed on a %s line", stream)


def exit_code_of(returncode: int) -> int:
    """A Popen return code as a shell would report it: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def send_signal(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each pid; processes that are already gone are fine."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def tree_pids(root: psutil.Process | None) -> list[int]:
    """``root`` and all its live descendants, root first; empty once root is gone.

    ``is_running`` compares the creation time too, so a recycled pid is never mistaken for root.
    """
    try:
        if root is None or not root.is_running():
            return []
        return [root.pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.Error:
        return []


class TreeSampler:
    """Usage of a process tree by psutil sampling, for hosts without cgroup accounting.

    CPU is the largest sum seen of each live member's own and reaped children's time, so time
    of members that exit between samples is kept once their parent reaps them; what a member
    used after the last sample, or an orphan reaped outside the tree, is missed. Memory is the
    largest sum of resident set sizes seen.
    """

    def __init__(self, root: psutil.Process | None) -> None:
        self._root = root
        self._cpu = 0.0
        self._peak = 0.0

    def sample(self) -> Usage:
        """Take a sample now and return the totals so far."""
        cpu = 0.0
        rss = 0
        for pid in tree_pids(self._root):
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            cpu += times.user + times.system + times.children_user + times.children_system
        self._cpu = max(self._cpu, cpu)
        self._peak = max(self._peak, rss / _MIB)
        return self.current()

    def current(self) -> Usage:
        """The totals as of the last sample."""
        return Usage(cpu_seconds=self._cpu, memory_peak_mib=self._peak)
