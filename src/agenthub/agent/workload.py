"""One assignment on this node: check it, start it in its runtime, watch it, report its end.

Every path reports ``starting`` first and exactly one final status (``succeeded``, ``failed`` or
``terminated``) last, so the hub sees the same sequence whether the workload ran, was refused by
the node or was cancelled before it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from agenthub.agent.reporter import Key, Reporter
from agenthub.agent.runtimes.base import (
    ExitInfo,
    FailedStart,
    LaunchSpec,
    Running,
    Runtime,
    RuntimeUnavailable,
    Usage,
)
from agenthub.agent.snapshot import BlobError
from agenthub.client.gateway import GatewayError

logger = logging.getLogger("agenthub.agent")

# The hub's rule for workspace names, checked again here: the name becomes a path on this node.
WORKSPACE_NAME = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,128}$")
USAGE_INTERVAL_S = 5.0
STOP_GRACE_S = 3.0
# The hub's limits on an assignment's files, checked again here: never trust the hub blindly.
MAX_FILES = 1000
MAX_FILES_BYTES = 10 * 1024 * 1024
MAX_FILE_PATH = 4096
MAX_FILE_NAME = 255
# Where a workload finds the hub the agent itself uses (unless its assignment sets it).
HUB_URL_ENV = "AGENTHUB_URL"

# Last-resort stops still running; held so that they are not garbage-collected mid-way.
_abandoned: set[asyncio.Task[None]] = set()


def _keep(task: asyncio.Task[None]) -> None:
    if not task.done():
        _abandoned.add(task)
        task.add_done_callback(_abandoned.discard)


# Fills an empty workspace from a checkpoint manifest (the node's blob cache, the hub's blobs).
Prepare = Callable[[Path, str], Awaitable[int]]


class AssignmentError(ValueError):
    """The assignment cannot run on this node; the message says why (it goes to the hub)."""


def usage_body(usage: Usage) -> dict[str, float]:
    """A runtime's usage in the report's format."""
    return {"cpu_seconds": usage.cpu_seconds, "memory_peak_mib": usage.memory_peak_mib}


def workspace_path(work_dir: Path, name: object) -> Path:
    """``<work_dir>/workspaces/<name>`` for a valid workspace name."""
    if not isinstance(name, str) or not WORKSPACE_NAME.match(name):
        raise AssignmentError(
            f"workspace name {name!r} is invalid: 1-128 letters, digits, '.', '_' or '-', "
            "not starting with '.'"
        )
    return work_dir / "workspaces" / name


def _working_dir(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AssignmentError(f"working_dir {value!r} must be a string")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise AssignmentError(
            f"working_dir {value!r} must be relative to the workspace, without '..'"
        )
    return value


def assignment_files(assignment: dict[str, Any]) -> dict[str, str]:
    """The assignment's files (relative path -> text), checked; raises :class:`AssignmentError`."""
    files = assignment.get("files") or {}
    if not isinstance(files, dict):
        raise AssignmentError("files must map relative paths to text")
    if len(files) > MAX_FILES:
        raise AssignmentError(f"files has {len(files)} entries; at most {MAX_FILES} are allowed")
    total = 0
    for path, content in files.items():
        _check_file_path(path)
        if not isinstance(content, str) or "\x00" in content:
            raise AssignmentError(f"file {path!r} must be text without NUL bytes")
        try:
            total += len(content.encode())
        except UnicodeEncodeError as err:
            raise AssignmentError(f"file {path!r} is not valid UTF-8 text") from err
    if total > MAX_FILES_BYTES:
        raise AssignmentError(f"files hold {total} bytes; at most {MAX_FILES_BYTES} are allowed")
    return dict(files)


def _check_file_path(path: object) -> None:
    if not isinstance(path, str) or not path or len(path) > MAX_FILE_PATH:
        raise AssignmentError(f"file path {path!r} must be 1-{MAX_FILE_PATH} characters")
    parts = path.split("/")
    if (
        "\x00" in path
        or path.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or any(len(part.encode(errors="replace")) > MAX_FILE_NAME for part in parts)
    ):
        raise AssignmentError(
            f"file path {path!r} must be relative to the workspace, without '..', '.', empty "
            "or over-long components or NUL bytes"
        )


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_files(workspace: Path, files: dict[str, str]) -> None:
    """Write ``files`` (checked by :func:`assignment_files`) into ``workspace``.

    The agent may run as root, and the workspace holds whatever earlier runs left there:
    symlinks out of it (``src -> /etc``), FIFOs, hard links to files elsewhere. So each
    directory is entered through its parent's file descriptor with ``O_NOFOLLOW`` (never by a
    path a concurrent run could swap), and each file is written under a fresh name
    (``O_CREAT|O_EXCL|O_NOFOLLOW``) and renamed over the old entry. The old entry is replaced,
    never opened: ``O_TRUNC`` on a hard link would truncate the file it links to.
    Raises :class:`AssignmentError`.
    """
    try:
        root = os.open(workspace, _DIR_FLAGS)
    except OSError as err:
        raise AssignmentError(f"cannot open workspace {workspace}: {err.strerror}") from err
    try:
        for path, content in files.items():
            try:
                _write_one(root, path.split("/"), content.encode())
            except OSError as err:
                raise AssignmentError(f"cannot write file {path!r}: {_why(err)}") from err
    finally:
        os.close(root)


def _why(err: OSError) -> str:
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a directory on its path is a symlink or a file (refused)"
    if err.errno == errno.EISDIR:
        return "a directory is in the way"
    return err.strerror or str(err)


def _write_one(root: int, parts: list[str], data: bytes) -> None:
    opened: list[int] = []
    try:
        parent = root
        for name in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
            # A symlinked component fails here (ELOOP, or ENOTDIR) instead of leading out.
            parent = os.open(name, _DIR_FLAGS, dir_fd=parent)
            opened.append(parent)
        temp = f".agenthub-{secrets.token_hex(8)}.tmp"
        fd = os.open(temp, _NEW_FILE_FLAGS, 0o644, dir_fd=parent)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.replace(temp, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise
        finally:
            os.close(fd)
    finally:
        for fd_ in reversed(opened):
            os.close(fd_)


def launch_spec(
    assignment: dict[str, Any], key: Key, workspace: Path, *, hub_url: str | None = None
) -> LaunchSpec:
    """The runtime's launch spec for ``assignment``; raises :class:`AssignmentError`.

    ``hub_url`` (the hub this agent uses) becomes ``AGENTHUB_URL`` unless the env sets it."""
    command = assignment.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise AssignmentError("command must be a non-empty list of strings")
    env = assignment.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise AssignmentError("env must map strings to strings")
    env = dict(env)
    if hub_url:
        env.setdefault(HUB_URL_ENV, hub_url)
    resources = assignment.get("resources") or {}
    timeout = assignment.get("timeout_s")
    try:
        return LaunchSpec(
            workload_id=key[0],
            attempt=key[1],
            command=list(command),
            env=env,
            workspace=workspace,
            working_dir=_working_dir(assignment.get("working_dir")),
            image=assignment.get("image") or None,
            cpu_millicores=int(resources.get("cpu_millicores", 1000)),
            memory_mib=int(resources.get("memory_mib", 512)),
            gpu_count=int(resources.get("gpu_count", 0)),
            timeout_s=float(timeout) if timeout is not None else None,
            network=bool(assignment.get("network", True)),
            ports=list(assignment.get("ports") or []),
            volumes=list(assignment.get("volumes") or []),
        )
    except (TypeError, ValueError, AttributeError) as err:
        raise AssignmentError(f"invalid resources or timeout: {err}") from err


def outcome(info: ExitInfo, stopped: bool) -> tuple[str, int | None, str | None]:
    """``(status, exit_code, error)`` for how the process ended; ``stopped``: we stopped it."""
    if info.reason == "stopped" or (info.reason == "exited" and stopped):
        # A process that exits on our SIGTERM, even with 0, was still terminated on request.
        return "terminated", info.exit_code, info.error
    if info.reason == "exited":
        if info.exit_code == 0:
            return "succeeded", 0, None
        # The runtime's word when it has one (e.g. "out of memory: exceeded the 64 MiB limit").
        return "failed", info.exit_code, info.error or f"exited with code {info.exit_code}"
    if info.reason == "timeout":
        return "failed", info.exit_code, info.error or "timed out"
    return "failed", None, info.error or f"the runtime failed ({info.reason})"


class Workload:
    """Runs one ``(workload_id, attempt)``; ``cancel()`` stops it at any point of its life."""

    def __init__(
        self,
        key: Key,
        assignment: dict[str, Any],
        *,
        runtimes: dict[str, Runtime],
        work_dir: Path,
        reporter: Reporter,
        hub_url: str | None = None,
        prepare: Prepare | None = None,
        usage_interval_s: float = USAGE_INTERVAL_S,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.key = key
        self.assignment = assignment
        self.status = "starting"
        self.cancel_reason: str | None = None
        self.process: Running | None = None
        self._runtimes = runtimes
        self._work_dir = work_dir
        self._reporter = reporter
        self._hub_url = hub_url
        self._prepare = prepare
        self._usage_interval_s = usage_interval_s
        self._stop_grace_s = stop_grace_s
        self._cancelled = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "terminated")

    def cancel(self, reason: str) -> None:
        """Stop the workload (SIGTERM, grace, SIGKILL) and report it ``terminated``."""
        if self.cancel_reason is None:
            self.cancel_reason = reason or "cancelled"
        self._cancelled.set()

    async def run(self) -> None:
        """The whole life of the workload, ending with its final status queued for the hub."""
        self._reporter.update(self.key, "starting")
        try:
            await self._run()
        except Exception as err:
            # A runtime bug must not leave the hub waiting forever for this workload's end, nor
            # the process running once the hub was told it ended.
            logger.exception("workload %s attempt %d: agent error", *self.key)
            if self.process is not None:
                with contextlib.suppress(Exception):
                    await self.process.stop(self._stop_grace_s)
            self._finish("failed", error=f"node agent error: {type(err).__name__}: {err}")

    async def _run(self) -> None:
        try:
            runtime_name = str(self.assignment.get("runtime") or "")
            runtime = self._runtimes.get(runtime_name)
            if runtime is None:
                have = ", ".join(sorted(self._runtimes)) or "none"
                raise AssignmentError(
                    f"runtime {runtime_name!r} is not available on this node (it has: {have})"
                )
            workspace = workspace_path(self._work_dir, self.assignment.get("workspace"))
            spec = launch_spec(self.assignment, self.key, workspace, hub_url=self._hub_url)
            files = assignment_files(self.assignment)
            try:
                # Kept after the workload ends: later steps snapshot it.
                workspace.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise AssignmentError(f"cannot create workspace {workspace}: {err}") from err
            manifest = self.assignment.get("workspace_manifest")
            if manifest:
                # A first run starts from its checkpoint; a restart keeps what the run left.
                if self._prepare is None:
                    raise AssignmentError("this node cannot start a workspace from a checkpoint")
                if not any(workspace.iterdir()):
                    try:
                        await self._prepare(workspace, str(manifest))
                    except (OSError, ValueError, BlobError, GatewayError, httpx.HTTPError) as err:
                        raise AssignmentError(
                            f"cannot restore the workspace from its checkpoint: {err}"
                        ) from err
            if files:
                # Before the runtime starts: the sandbox hands the workspace (these files
                # included) to the workload's uid as it starts it.
                await asyncio.to_thread(write_files, workspace, files)
        except AssignmentError as err:
            logger.warning("workload %s attempt %d refused: %s", *self.key, err)
            self._finish("failed", error=str(err))
            return
        if self._cancelled.is_set():
            self._finish("terminated", error=self.cancel_reason)
            return
        try:
            self.process = await runtime.start(spec, self._on_log)
        except RuntimeUnavailable as err:
            self._finish("failed", error=str(err) or f"runtime {runtime_name!r} is unavailable")
            return
        if not isinstance(self.process, FailedStart):  # never ran: its wait() says why
            self.status = "running"
            self._reporter.update(self.key, "running")
            logger.info(
                "workload %s attempt %d running in %s (%s)",
                *self.key,
                runtime_name,
                self.process.handle,
            )
        info, stopped = await self._supervise(self.process)
        status, exit_code, error = outcome(info, stopped)
        if status == "terminated":
            error = error or self.cancel_reason
        self._finish(status, exit_code=exit_code, error=error, usage=info.usage)

    async def _supervise(self, process: Running) -> tuple[ExitInfo, bool]:
        """Wait for the process, refreshing usage and stopping it on cancel; whether we did."""
        waiting = asyncio.create_task(process.wait())
        cancelled = asyncio.create_task(self._cancelled.wait())
        stopping: asyncio.Task[None] | None = None
        try:
            while not waiting.done():
                watched: set[asyncio.Future[Any]] = {waiting}
                if stopping is None:
                    watched.add(cancelled)
                done, _ = await asyncio.wait(
                    watched, timeout=self._usage_interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping is None and cancelled in done:
                    logger.info(
                        "stopping workload %s attempt %d: %s", *self.key, self.cancel_reason
                    )
                    stopping = asyncio.create_task(process.stop(self._stop_grace_s))
                elif not done:
                    usage = usage_body(process.usage())
                    self._reporter.update(self.key, "running", usage=usage)
            if stopping is not None:
                try:
                    await stopping
                except Exception:
                    # It ended anyway (wait() returned): report how, not the stop's failure.
                    logger.exception("stopping workload %s attempt %d failed", *self.key)
            return waiting.result(), stopping is not None
        finally:
            cancelled.cancel()
            if not waiting.done():
                waiting.cancel()
                # Abandoned (the agent is shutting down past its budget): the process must not
                # outlive the agent, so the stop goes on without us.
                _keep(stopping or asyncio.create_task(process.stop(0.5)))

    def _on_log(self, stream: str, text: str) -> None:
        self._reporter.log(self.key, stream, text)

    def _finish(
        self,
        status: str,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.status = status
        self._reporter.update(
            self.key,
            status,
            exit_code=exit_code,
            error=error,
            usage=usage_body(usage) if usage is not None else None,
        )
        logger.info("workload %s attempt %d %s%s", *self.key, status, f": {error}" if error else "")
