"""Node-side runtimes: what actually runs a workload on this machine.

``detect_runtimes`` finds the runtimes this host can use right now ("sandbox" under bubblewrap,
"docker" when an engine answers); ``unavailable_reasons`` says why the others are missing.
"""

from __future__ import annotations

import logging
import shutil

from agenthub.agent.runtimes.base import (
    ExitInfo,
    LaunchSpec,
    LogSink,
    Running,
    Runtime,
    RuntimeUnavailable,
    Usage,
)
from agenthub.agent.runtimes.cgroups import Cgroups
from agenthub.agent.runtimes.docker import DockerRuntime
from agenthub.agent.runtimes.docker import probe as probe_docker
from agenthub.agent.runtimes.process import ProcessRuntime
from agenthub.agent.runtimes.sandbox import INSTALL_HINT, SandboxRuntime

__all__ = [
    "DockerRuntime",
    "ExitInfo",
    "LaunchSpec",
    "LogSink",
    "ProcessRuntime",
    "Running",
    "Runtime",
    "RuntimeUnavailable",
    "SandboxRuntime",
    "Usage",
    "detect_runtimes",
    "unavailable_reasons",
]

logger = logging.getLogger("agenthub.agent")

_reasons: dict[str, str] = {}


def detect_runtimes(machine_id: str, *, allow_unsafe: bool = False) -> dict[str, Runtime]:
    """The runtimes usable on this host, by name. Blocking (up to ~2 s for the docker ping).

    Without bubblewrap there is no "sandbox" runtime, unless ``allow_unsafe`` registers the
    unsandboxed process runtime under that name (development only; logged loudly).
    """
    runtimes: dict[str, Runtime] = {}
    reasons: dict[str, str] = {}
    cgroups, cgroup_reason = Cgroups.detect()
    if cgroup_reason:
        logger.info("no cgroup limits for sandboxed workloads: %s", cgroup_reason)

    bwrap = shutil.which("bwrap")
    if bwrap is None:
        reasons["sandbox"] = INSTALL_HINT
    else:
        sandbox = SandboxRuntime(machine_id, cgroups, bwrap)
        problem = sandbox.probe()
        if problem is None:
            runtimes["sandbox"] = sandbox
        else:
            reasons["sandbox"] = problem
    if "sandbox" not in runtimes and allow_unsafe:
        logger.warning(
            "UNSAFE: %s; running workloads as PLAIN PROCESSES with the agent's privileges and "
            "full access to this machine (allow_unsafe is for development only)",
            reasons["sandbox"],
        )
        runtimes["sandbox"] = ProcessRuntime(machine_id, cgroups)
        del reasons["sandbox"]

    docker_problem = probe_docker()
    if docker_problem is None:
        runtimes["docker"] = DockerRuntime(machine_id)
    else:
        reasons["docker"] = docker_problem

    _reasons.clear()
    _reasons.update(reasons)
    return runtimes


def unavailable_reasons() -> dict[str, str]:
    """Why each runtime missing from the last ``detect_runtimes`` is missing."""
    return dict(_reasons)
