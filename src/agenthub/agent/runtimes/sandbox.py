"""The "sandbox" runtime: workloads under bubblewrap, as uid 1000 in their own namespaces.

The sandbox sees a read-only copy of the system directories only (so /root, /home, the hub's
data and other workspaces do not exist in it), its workspace read-write at /workspace, a private
/tmp, /proc and /dev, and its own pid, ipc, uts and user namespaces (and network namespace when
the spec has no network). bwrap runs its own init as pid 1 of the namespace: when that dies the
kernel kills everything in it, daemonised grandchildren included, and --die-with-parent makes it
die with the agent.

Privileges: an unprivileged agent uses a user namespace (uid 1000 inside, the agent's uid
outside). An agent running as root does not: a user namespace would map the sandbox to root
outside, and root owns files such as /etc/shadow. Instead bwrap (as root) builds the namespaces
and mounts, and ``setpriv`` then drops the workload to the unprivileged host uid/gid
:data:`HOST_UID` with no capabilities, no supplementary groups and no_new_privs before exec; the
workspace is handed to that uid first. Workloads cannot see one another (own pid namespace, own
workspace), so sharing the uid costs no isolation between them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from agenthub.agent.runtimes.base import LaunchSpec
from agenthub.agent.runtimes.cgroups import Cgroups
from agenthub.agent.runtimes.process import DEFAULT_PATH, ProcessRuntime

logger = logging.getLogger("agenthub.agent")

INSTALL_HINT = "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
SANDBOX_UID = 1000
SANDBOX_GID = 1000
# The host uid/gid a root agent's workloads run as ("nobody" on Debian).
HOST_UID = 65534
HOST_GID = 65534
_READ_ONLY_DIRS = ("/usr", "/etc", "/opt")
# On merged-/usr systems these are symlinks into /usr and are recreated as such.
_MAYBE_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxRuntime(ProcessRuntime):
    """Runs each workload in a bubblewrap sandbox; see the module docstring for what it sees."""

    name = "sandbox"
    wrapper_depth = 2  # the outer bwrap, then bwrap's init (pid 1 in the namespace)

    def __init__(self, machine_id: str, cgroups: Cgroups | None, bwrap: str) -> None:
        super().__init__(machine_id, cgroups)
        self.bwrap = bwrap
        self._system_args = _system_args()
        self._setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
        if os.geteuid() == 0 and self._setpriv is None:
            logger.warning(
                "the agent runs as root and setpriv (util-linux) is missing: sandboxes fall "
                "back to a user namespace, which maps them to root outside"
            )

    def command_line(self, spec: LaunchSpec, cwd: Path) -> tuple[list[str], Path, dict[str, str]]:
        """bwrap's argv around the spec's command; bwrap itself starts in the workspace."""
        inside = "/workspace" + (f"/{spec.working_dir}" if spec.working_dir else "")
        argv = [
            self.bwrap,
            "--die-with-parent",
            "--new-session",  # no controlling terminal: no TIOCSTI injection into ours
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            "sandbox",
            *(self._identity_args(spec)),
            *([] if spec.network else ["--unshare-net"]),
            *self._system_args,
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",  # noqa: S108 - a private tmpfs inside the sandbox, not the host's /tmp
            "--bind",
            str(spec.workspace),
            "/workspace",
            "--chdir",
            inside,
            "--clearenv",
        ]
        env = {"HOME": "/workspace", "PATH": DEFAULT_PATH, **spec.env}
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv.append("--")
        if self._setpriv is not None:
            argv += [
                self._setpriv,
                f"--reuid={HOST_UID}",
                f"--regid={HOST_GID}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        argv += spec.command
        return argv, spec.workspace, {"PATH": DEFAULT_PATH}

    def _identity_args(self, spec: LaunchSpec) -> list[str]:
        if self._setpriv is None:
            return ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        _hand_over(spec.workspace, HOST_UID, HOST_GID)
        return []

    def probe(self) -> str | None:
        """Run a trivial sandbox with every flag start() uses; None if it works, else why not."""
        with tempfile.TemporaryDirectory(prefix="agenthub-probe-") as tmp:
            spec = LaunchSpec("probe", 0, ["true"], {}, Path(tmp), network=False)
            argv, cwd, env = self.command_line(spec, Path(tmp))
            try:
                done = subprocess.run(  # noqa: S603 - argv built above, no shell
                    argv, cwd=cwd, env=env, capture_output=True, timeout=10, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                return f"bubblewrap does not run: {err}"
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()
            return f"bubblewrap cannot create a sandbox here (exit {done.returncode}): {detail}"
        return None


def _hand_over(workspace: Path, uid: int, gid: int) -> None:
    """Give the workspace (and what a checkpoint or an earlier run left in it) to ``uid``."""
    for root, dirs, files in os.walk(workspace):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            if os.lstat(path).st_uid != uid:
                os.lchown(path, uid, gid)
    if workspace.stat().st_uid != uid:
        os.chown(workspace, uid, gid)


def _system_args() -> list[str]:
    """Read-only binds (and symlinks) for the system directories that exist on this host."""
    args: list[str] = []
    for directory in _READ_ONLY_DIRS:
        if os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    for directory in _MAYBE_LINKS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    # A resolv.conf that links out of /etc (systemd-resolved: /run/systemd/resolve) would dangle.
    resolv = os.path.realpath("/etc/resolv.conf")
    if not resolv.startswith(("/etc/", "/usr/", "/opt/")):
        parent = os.path.dirname(resolv)
        args += ["--ro-bind-try", parent, parent]
    return args
