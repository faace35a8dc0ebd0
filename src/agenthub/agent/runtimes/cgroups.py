"""Per-workload cgroups: memory and cpu limits, exact accounting, and a handle on every process.

Workload cgroups are created under the agent's *own* cgroup (``<own>/agenthub/<name>``), not
at the hierarchy's root: whoever started the agent (systemd, a container engine) limits the
agent's subtree, and workloads must stay inside those limits rather than escape them.
Both cgroup v1 (memory + cpu + cpuacct controllers) and the v2 unified hierarchy are handled;
when neither is writable the runtimes fall back to rlimits and psutil sampling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from pathlib import Path

from agenthub.agent.runtimes.base import Usage, send_signal

logger = logging.getLogger("agenthub.agent")

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "cpu", "cpuacct")
_CFS_PERIOD_US = 100_000
_MIB = 1024 * 1024


class Cgroup:
    """One workload's cgroup: a directory per v1 controller, or a single v2 directory."""

    def __init__(self, name: str, version: int, dirs: dict[str, Path]) -> None:
        self.name = name
        self.version = version
        self._dirs = dirs  # controller -> directory; v2 uses the key "unified"

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid into to join (one per dir)."""
        return [d / "cgroup.procs" for d in dict.fromkeys(self._dirs.values())]

    def _file(self, controller: str, name: str) -> Path:
        return self._dirs["unified" if self.version == 2 else controller] / name

    def pids(self) -> set[int]:
        """Every process in the cgroup now."""
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(line) for line in procs.read_text().split())
        return found

    def usage(self) -> Usage:
        """Exact totals from the kernel's accounting."""
        try:
            if self.version == 1:
                cpu_ns = int(self._file("cpuacct", "cpuacct.usage").read_text())
                peak = int(self._file("memory", "memory.max_usage_in_bytes").read_text())
                return Usage(cpu_seconds=cpu_ns / 1e9, memory_peak_mib=peak / _MIB)
            stat = _keyed(self._file("cpu", "cpu.stat"))
            peak_file = self._file("memory", "memory.peak")  # kernel 5.19+
            if not peak_file.exists():
                peak_file = self._file("memory", "memory.current")
            peak = int(peak_file.read_text())
            return Usage(cpu_seconds=stat.get("usage_usec", 0) / 1e6, memory_peak_mib=peak / _MIB)
        except (OSError, ValueError):
            return Usage()

    def oom_killed(self) -> bool:
        """Whether the kernel killed a member for exceeding the memory limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            return _keyed(self._file("memory", name)).get("oom_kill", 0) > 0
        except OSError:
            return False

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal every member."""
        send_signal(self.pids(), sig)

    def remove(self, timeout_s: float = 2.0) -> bool:
        """Kill what is left, then delete the cgroup; False if members would not die in time."""
        deadline = time.monotonic() + timeout_s
        while self.pids():
            self.kill()
            if time.monotonic() > deadline:
                logger.warning("cgroup %s still has processes; leaving it", self.name)
                return False
            time.sleep(0.01)
        for directory in dict.fromkeys(self._dirs.values()):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()
        return True


class Cgroups:
    """Where this process may create workload cgroups."""

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self._bases = bases  # controller -> <own cgroup>/agenthub

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT) -> tuple[Cgroups | None, str | None]:
        """The usable hierarchy, or None and why not."""
        own = _own_cgroups()
        try:
            if (root / "cgroup.controllers").exists():
                return cls._detect_v2(root, own.get("", "/"))
            return cls._detect_v1(root, own)
        except OSError as err:
            return None, f"cgroups are not writable here ({err}); using rlimits instead"

    @classmethod
    def _detect_v1(cls, root: Path, own: dict[str, str]) -> tuple[Cgroups | None, str | None]:
        bases: dict[str, Path] = {}
        for controller in _V1_CONTROLLERS:
            mount = root / controller
            if not mount.is_dir():
                return None, f"cgroup v1 controller {controller!r} is not mounted at {mount}"
            # Inside a container without a cgroup namespace the mount is the container's own
            # cgroup, while /proc/self/cgroup shows the host path: then the mount is ours.
            mine = mount / own.get(controller, "/").lstrip("/")
            base = (mine if mine.is_dir() else mount) / "agenthub"
            base.mkdir(exist_ok=True)
            # Resolved, so that co-mounted controllers ("cpu,cpuacct") share one directory.
            bases[controller] = base.resolve()
        return cls(1, bases), None

    @classmethod
    def _detect_v2(cls, root: Path, own: str) -> tuple[Cgroups | None, str | None]:
        mine = root / own.lstrip("/")
        if not mine.is_dir():
            mine = root
        available = set((mine / "cgroup.controllers").read_text().split())
        missing = {"memory", "cpu"} - available
        if missing:
            return None, f"cgroup v2 controllers {sorted(missing)} are not available in {mine}"
        base = mine / "agenthub"
        base.mkdir(exist_ok=True)
        try:
            # The kernel refuses controllers for children of a cgroup that has processes of
            # its own (except the root), so this fails unless the agent sits in a delegated
            # cgroup with a leaf of its own.
            (mine / "cgroup.subtree_control").write_text("+memory +cpu")
            (base / "cgroup.subtree_control").write_text("+memory +cpu")
        except OSError as err:
            return None, f"cannot enable cgroup v2 memory/cpu controllers below {mine}: {err}"
        return cls(2, {"unified": base}), None

    def create(self, name: str, *, cpu_millicores: int, memory_mib: int) -> Cgroup:
        """A new cgroup with the limits set (a value <= 0 means unlimited)."""
        dirs = {ctrl: base / name for ctrl, base in self._bases.items()}
        cgroup = Cgroup(name, self.version, dirs)
        try:
            for directory in dict.fromkeys(dirs.values()):
                directory.mkdir()
            if self.version == 1:
                self._limit_v1(dirs, cpu_millicores, memory_mib)
            else:
                self._limit_v2(dirs["unified"], cpu_millicores, memory_mib)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    @staticmethod
    def _limit_v1(dirs: dict[str, Path], cpu_millicores: int, memory_mib: int) -> None:
        if memory_mib > 0:
            limit = str(memory_mib * _MIB)
            (dirs["memory"] / "memory.limit_in_bytes").write_text(limit)
            # Without this the limit only bounds RAM and a host with swap would swap instead
            # of killing; the file exists only when swap accounting is on.
            with contextlib.suppress(FileNotFoundError):
                (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(limit)
        if cpu_millicores > 0:
            (dirs["cpu"] / "cpu.cfs_period_us").write_text(str(_CFS_PERIOD_US))
            quota = max(1000, cpu_millicores * _CFS_PERIOD_US // 1000)
            (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))

    @staticmethod
    def _limit_v2(directory: Path, cpu_millicores: int, memory_mib: int) -> None:
        if memory_mib > 0:
            (directory / "memory.max").write_text(str(memory_mib * _MIB))
            with contextlib.suppress(FileNotFoundError):
                (directory / "memory.swap.max").write_text("0")
        if cpu_millicores > 0:
            quota = max(1000, cpu_millicores * _CFS_PERIOD_US // 1000)
            (directory / "cpu.max").write_text(f"{quota} {_CFS_PERIOD_US}")

    def existing(self, prefix: str) -> list[Cgroup]:
        """Cgroups already present whose names start with ``prefix`` (left by earlier agents)."""
        first = next(iter(self._bases.values()))
        names = sorted(p.name for p in first.iterdir() if p.is_dir() and p.name.startswith(prefix))
        return [
            Cgroup(name, self.version, {c: b / name for c, b in self._bases.items()})
            for name in names
        ]


def cgroup_name(*parts: object) -> str:
    """A cgroup directory name made of ``parts``, with anything unusual replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", ".".join(str(p) for p in parts))[:200]


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller ("" is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                paths[controller] = path
    return paths


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" per line) as a dict."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            values[key] = int(value)
    return values
