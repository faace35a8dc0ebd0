"""What a workload is asked to be: its statuses, and the validation of a new workload's spec.

Every surface that runs something on a node (Hub machines, Cluster containers, pipelines)
builds a :class:`WorkloadSpec` and hands it to :func:`~agenthub.services.scheduling.workloads.
create_workload`; the rules below hold whichever surface it came from.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from agenthub.core.errors import ValidationFailed
from agenthub.services.nodes.resources import check_labels

QUEUED, SCHEDULED, STARTING, RUNNING = "queued", "scheduled", "starting", "running"
SUCCEEDED, FAILED, TERMINATED, LOST = "succeeded", "failed", "terminated", "lost"
STATUSES = (QUEUED, SCHEDULED, STARTING, RUNNING, SUCCEEDED, FAILED, TERMINATED, LOST)
# On a node, holding its share of the node's capacity.
PLACED = (SCHEDULED, STARTING, RUNNING)
ACTIVE = (QUEUED, *PLACED)
FINISHED = (SUCCEEDED, FAILED, TERMINATED, LOST)

RUNTIMES = ("sandbox", "docker")
RESTART_POLICIES = ("never", "on_failure", "always")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

MAX_CPU_MILLICORES = 1_024_000
MAX_MEMORY_MIB = 16 * 1024 * 1024
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_COMMAND_ARGS = 4096
MAX_ENV = 512
MAX_FILES = 1000
MAX_FILES_BYTES = 10 * 1024 * 1024  # total UTF-8 content of a workload's files
MAX_FILE_PATH = 4096
MAX_FILE_NAME = 255  # bytes per path component (NAME_MAX)

_WORKSPACE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass
class WorkloadSpec:
    """A workload to create; :meth:`validated` checks it and fills the defaults."""

    command: list[str]
    runtime: str = "sandbox"
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workspace: str | None = None  # default: the workload's id
    working_dir: str | None = None
    image: str | None = None
    network: bool = True
    ports: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    # Text files (relative path -> content) written into the workspace before the command runs.
    files: dict[str, str] = field(default_factory=dict)
    # A checkpoint manifest (its blob's sha256) the workspace is materialised from first.
    workspace_manifest: str | None = None
    cpu_millicores: int = 1000
    memory_mib: int = 512
    gpu_count: int = 0
    pool_name: str = "default"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)
    priority: int = 0
    restart_policy: str = "never"
    max_restarts: int = 3
    timeout_s: float | None = None
    project_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    owner_kind: str | None = None
    owner_id: str | None = None

    def validated(self) -> WorkloadSpec:
        """Raise :class:`ValidationFailed` with an actionable message on the first bad field."""
        if self.runtime not in RUNTIMES:
            raise ValidationFailed(f"runtime must be one of {', '.join(RUNTIMES)}")
        _check_command(self.command)
        if self.runtime == "docker" and not self.image:
            raise ValidationFailed("image is required for the docker runtime")
        if self.runtime == "sandbox" and (self.image or self.ports or self.volumes):
            raise ValidationFailed("image, ports and volumes apply to the docker runtime only")
        if len(self.env) > MAX_ENV:
            raise ValidationFailed(f"env has more than {MAX_ENV} variables")
        for key, value in self.env.items():
            if not _ENV_NAME.match(key):
                raise ValidationFailed(f"env name {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
            if "\x00" in value:
                raise ValidationFailed(f"env value of {key} contains a NUL byte")
        if self.workspace is not None and not _WORKSPACE.match(self.workspace):
            raise ValidationFailed(
                "workspace must be 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
            )
        if self.working_dir is not None:
            parts = self.working_dir.split("/")
            if self.working_dir.startswith("/") or ".." in parts or "\x00" in self.working_dir:
                raise ValidationFailed("working_dir must be a relative path inside the workspace")
        _check_files(self.files)
        if not 1 <= self.cpu_millicores <= MAX_CPU_MILLICORES:
            raise ValidationFailed(f"cpu_millicores must be between 1 and {MAX_CPU_MILLICORES}")
        if not 1 <= self.memory_mib <= MAX_MEMORY_MIB:
            raise ValidationFailed(f"memory_mib must be between 1 and {MAX_MEMORY_MIB}")
        if not 0 <= self.gpu_count <= 64:
            raise ValidationFailed("gpu_count must be between 0 and 64")
        if self.restart_policy not in RESTART_POLICIES:
            raise ValidationFailed(f"restart_policy must be one of {', '.join(RESTART_POLICIES)}")
        if not 0 <= self.max_restarts <= 1000:
            raise ValidationFailed("max_restarts must be between 0 and 1000")
        if not -1000 <= self.priority <= 1000:
            raise ValidationFailed("priority must be between -1000 and 1000")
        if self.timeout_s is not None and not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ValidationFailed(f"timeout_s must be above 0 and at most {MAX_TIMEOUT_S:.0f}")
        self.node_selector = check_labels(self.node_selector)
        self.tolerations = [_check_toleration(t) for t in self.tolerations]
        return self


def _check_command(command: list[str]) -> None:
    if not command or not all(isinstance(arg, str) for arg in command):
        raise ValidationFailed("command must be a non-empty list of strings (an argv)")
    if not command[0]:
        raise ValidationFailed("command[0] (the program) must not be empty")
    if len(command) > MAX_COMMAND_ARGS:
        raise ValidationFailed(f"command has more than {MAX_COMMAND_ARGS} arguments")
    if any("\x00" in arg for arg in command):
        raise ValidationFailed("command arguments must not contain NUL bytes")


def _check_files(files: dict[str, str]) -> None:
    if len(files) > MAX_FILES:
        raise ValidationFailed(f"files has {len(files)} entries; at most {MAX_FILES} are allowed")
    total = 0
    parents: set[str] = set()
    for path, content in files.items():
        _check_file_path(path)
        if not isinstance(content, str):
            raise ValidationFailed(f"files[{path!r}] must be text (a string)")
        if "\x00" in content:
            raise ValidationFailed(
                f"files[{path!r}] contains a NUL byte; only text files are allowed"
            )
        try:
            total += len(content.encode())
        except UnicodeEncodeError as err:
            raise ValidationFailed(
                f"files[{path!r}] is not valid UTF-8 text: {err.reason}"
            ) from err
        parts = path.split("/")
        parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
    if total > MAX_FILES_BYTES:
        raise ValidationFailed(
            f"files hold {total} bytes in total; at most {MAX_FILES_BYTES} (10 MiB) are allowed"
        )
    clash = sorted(parents.intersection(files))
    if clash:
        raise ValidationFailed(
            f"files: {clash[0]!r} is both a file and the directory of another file"
        )


def _check_file_path(path: object) -> None:
    if not isinstance(path, str) or not path:
        raise ValidationFailed("files: a path must be a non-empty string")
    if len(path) > MAX_FILE_PATH:
        raise ValidationFailed(
            f"files: path {path[:64]!r}... is longer than {MAX_FILE_PATH} characters"
        )
    if "\x00" in path:
        raise ValidationFailed(f"files: path {path!r} contains a NUL byte")
    try:
        path.encode()
    except UnicodeEncodeError as err:
        raise ValidationFailed(f"files: path {path!r} is not valid UTF-8: {err.reason}") from err
    if path.startswith("/"):
        raise ValidationFailed(
            f"files: path {path!r} must be relative to the workspace (no leading '/')"
        )
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValidationFailed(
            f"files: path {path!r} must name a file inside the workspace: "
            "no '..', '.' or empty components"
        )
    if any(len(part.encode()) > MAX_FILE_NAME for part in path.split("/")):
        raise ValidationFailed(
            f"files: path {path!r} has a component longer than {MAX_FILE_NAME} bytes"
        )


def _check_toleration(raw: dict[str, str]) -> dict[str, str]:
    operator = raw.get("operator") or "Equal"
    if operator not in TOLERATION_OPERATORS:
        raise ValidationFailed(
            f"toleration operator must be one of {', '.join(TOLERATION_OPERATORS)}"
        )
    effect = raw.get("effect") or ""
    if effect and effect not in TAINT_EFFECTS:
        raise ValidationFailed(
            f"toleration effect must be empty or one of {', '.join(TAINT_EFFECTS)}"
        )
    key = raw.get("key") or ""
    if not key and operator != "Exists":
        raise ValidationFailed("a toleration without a key must use operator Exists")
    return {"key": key, "operator": operator, "value": raw.get("value") or "", "effect": effect}


def tolerates(tolerations: list[dict[str, str]], taint: dict[str, str]) -> bool:
    """Whether one of ``tolerations`` matches ``taint`` (Kubernetes' rules)."""
    for t in tolerations:
        if t["effect"] and t["effect"] != taint.get("effect"):
            continue
        if not t["key"]:  # operator Exists with no key: tolerates everything
            return True
        if t["key"] != taint.get("key"):
            continue
        if t["operator"] == "Exists" or t["value"] == (taint.get("value") or ""):
            return True
    return False
