"""Node runtimes, run for real: bubblewrap sandboxes, cgroups, plain processes and Docker."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agenthub.agent.runtimes import (
    DockerRuntime,
    ProcessRuntime,
    RuntimeUnavailable,
    SandboxRuntime,
    detect_runtimes,
    unavailable_reasons,
)
from agenthub.agent.runtimes.base import LineSplitter
from agenthub.agent.runtimes.cgroups import Cgroups
from agenthub.agent.runtimes.docker import probe as probe_docker
from tests.agent.runtime_support import (
    build_busybox_image,
    processes_with,
    run,
    spec,
    stop_soon,
)

REPO = Path(__file__).resolve().parents[2]
CGROUPS, CGROUPS_REASON = Cgroups.detect()
needs_cgroups = pytest.mark.skipif(CGROUPS is None, reason=f"cgroups: {CGROUPS_REASON}")


@pytest.fixture(scope="module")
def machine_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def sandbox(machine_id: str) -> SandboxRuntime:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.fail("bubblewrap is missing: run scripts/system-deps.sh test")
    runtime = SandboxRuntime(machine_id, CGROUPS, bwrap)
    assert runtime.probe() is None
    return runtime


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


def marker() -> str:
    """A unique `sleep` argument to find a workload's processes on the host by."""
    return f"4242.{uuid.uuid4().int % 10**9}"


# -- line splitting ----------------------------------------------------------------------------


def test_line_splitter_cuts_lines_and_long_pieces() -> None:
    splitter = LineSplitter(limit=8)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\r\nd\n\n") == ["abc", "d", ""]
    assert splitter.feed(b"0123456789abcdefXY") == ["01234567", "89abcdef"]
    # "é" is two bytes: a piece never ends in the middle of it.
    assert splitter.feed("\n1234567é\n".encode()) == ["XY", "1234567", "é"]
    assert splitter.feed(b"tail \xff") == []
    assert splitter.flush() == ["tail \ufffd"]
    assert splitter.flush() == []


# -- sandbox: what the workload can see and touch ----------------------------------------------


async def test_sandbox_writes_only_its_workspace(
    sandbox: SandboxRuntime, workspace: Path, tmp_path: Path
) -> None:
    name = f"agenthub-test-{uuid.uuid4().hex}"
    outside = tmp_path / "outside"
    outside.mkdir()
    script = (
        "echo data > /workspace/out.txt && echo wrote workspace; "
        f"for p in /etc/{name} /usr/{name} {outside}/{name}; do "
        'if echo x > "$p" 2>/dev/null; then echo "wrote $p"; else echo "denied $p"; fi; done'
    )
    info, logs = await run(sandbox, spec(workspace, "sh", "-c", script))
    assert info.exit_code == 0, logs.lines
    assert (workspace / "out.txt").read_text() == "data\n"
    assert logs.of("stdout") == [
        "wrote workspace",
        f"denied /etc/{name}",
        f"denied /usr/{name}",
        f"denied {outside}/{name}",
    ]
    for path in (Path("/etc") / name, Path("/usr") / name, outside / name):
        assert not path.exists()


async def test_sandbox_hides_the_host_and_runs_unprivileged(
    sandbox: SandboxRuntime, workspace: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-workspace"
    other.mkdir()
    (other / "secret").write_text("s3cret")
    hidden = [Path("/root"), Path.home(), other / "secret"]
    if not str(REPO).startswith(("/usr/", "/etc/", "/opt/")):
        hidden.append(REPO)
    checks = "; ".join(f'test -e "{p}" && echo "visible {p}" || echo "hidden {p}"' for p in hidden)
    shadow = 'cat /etc/shadow >/dev/null 2>&1 && echo "read shadow" || echo "no shadow"'
    info, logs = await run(
        sandbox,
        spec(
            workspace,
            "sh",
            "-c",
            f"{checks}; {shadow}; id -u; id -g; pwd; touch f",
            working_dir="sub/dir",
        ),
    )
    assert info.exit_code == 0, logs.lines
    # A root agent drops its workloads to "nobody" on the host (never root in a user
    # namespace); an unprivileged agent maps them to uid 1000 in a user namespace.
    uid = "65534" if os.geteuid() == 0 else "1000"
    assert logs.of("stdout") == [
        *(f"hidden {p}" for p in hidden),
        "no shadow",
        uid,
        uid,
        "/workspace/sub/dir",
    ]
    assert (workspace / "sub" / "dir" / "f").is_file()


async def test_sandbox_environment_is_exactly_the_spec(
    sandbox: SandboxRuntime, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTHUB_TEST_LEAK", "host-secret")
    info, logs = await run(sandbox, spec(workspace, "env", env={"GREETING": "hi there"}))
    assert info.exit_code == 0
    env = dict(line.split("=", 1) for line in logs.of("stdout"))
    assert env.pop("GREETING") == "hi there"
    assert env.pop("HOME") == "/workspace"
    assert env.pop("PATH") == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env.pop("PWD") == "/workspace"  # bwrap --chdir sets it
    assert env == {}


async def test_sandbox_delivers_output_lines_in_order(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    # Order within a stream is guaranteed; across stdout and stderr (two pipes) only when the
    # writes are apart in time, hence the sleeps.
    script = (
        "for i in 1 2 3 4 5; do echo out$i; done; sleep 0.2; echo err1 >&2; sleep 0.2; "
        "echo out6; head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 0.2; printf tail >&2"
    )
    info, logs = await run(sandbox, spec(workspace, "sh", "-c", script))
    assert info.exit_code == 0
    assert logs.threads == {threading.get_ident()}  # the event loop's thread
    assert logs.lines == [
        *(("stdout", f"out{i}") for i in range(1, 6)),
        ("stderr", "err1"),
        ("stdout", "out6"),
        ("stdout", "x" * 16384),
        ("stdout", "x" * 16384),
        ("stdout", "x" * (40000 - 2 * 16384)),
        ("stderr", "tail"),
    ]


async def test_a_failing_sink_does_not_stall_the_workload(
    sandbox: SandboxRuntime, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(stream: str, text: str) -> None:
        raise RuntimeError("sink is down")

    # 200 KB: more than a pipe holds, so an unread pipe would block the writer for good.
    script = "i=0; while [ $i -lt 2000 ]; do printf '%099d\\n' $i; i=$((i+1)); done; exit 7"
    with caplog.at_level(logging.ERROR, logger="agenthub.agent"):
        running = await sandbox.start(spec(workspace, "sh", "-c", script), broken)
        info = await running.wait()
    assert info.exit_code == 7
    assert sum("log sink failed" in r.message for r in caplog.records) == 2000


async def test_sandbox_exit_codes(sandbox: SandboxRuntime, workspace: Path) -> None:
    info, _ = await run(sandbox, spec(workspace, "sh", "-c", "exit 3"))
    assert (info.exit_code, info.reason, info.error) == (3, "exited", None)
    info, _ = await run(sandbox, spec(workspace, "sh", "-c", "kill -9 $$"))
    assert (info.exit_code, info.reason) == (137, "exited")
    info, logs = await run(sandbox, spec(workspace, "no-such-command-here"))
    assert info.exit_code != 0
    assert any("no-such-command-here" in line for line in logs.of("stderr"))


async def test_sandbox_timeout(sandbox: SandboxRuntime, workspace: Path) -> None:
    started = time.monotonic()
    info, _ = await run(sandbox, spec(workspace, "sleep", "30", timeout_s=1))
    elapsed = time.monotonic() - started
    assert (info.reason, info.error) == ("timeout", "timed out after 1s")
    assert info.exit_code == 128 + 15
    assert 0.9 < elapsed < 3


async def test_sandbox_stop_kills_a_daemonised_grandchild(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    mark = marker()
    script = f"(setsid sleep {mark} &) ; sleep 300"
    running = await sandbox.start(spec(workspace, "sh", "-c", script), lambda s, t: None)
    took = await stop_soon(running, mark, grace_s=2)
    info = await running.wait()
    assert info.reason == "stopped"
    assert took < 2  # plain `sleep` dies of SIGTERM; no need to wait for the grace period
    assert processes_with(mark) == []
    assert await running.wait() == info  # wait() may be called again


async def test_sandbox_stop_is_graceful_then_forceful(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    # SIGTERM reaches the workload, not bwrap: it can clean up within the grace period.
    mark = marker()
    graceful = f"trap 'echo cleaned up; exit 0' TERM; sleep {mark} & wait"
    logs: list[str] = []
    running = await sandbox.start(
        spec(workspace, "sh", "-c", graceful), lambda s, t: logs.append(t)
    )
    await stop_soon(running, mark, grace_s=5)
    info = await running.wait()
    assert (info.reason, info.exit_code, logs) == ("stopped", 0, ["cleaned up"])

    # A workload that ignores SIGTERM is killed once the grace period is over.
    mark = marker()
    stubborn = f"trap '' TERM; sleep {mark}"
    running = await sandbox.start(spec(workspace, "sh", "-c", stubborn), lambda s, t: None)
    took = await stop_soon(running, mark, grace_s=0.5)
    info = await running.wait()
    assert (info.reason, info.exit_code) == ("stopped", 137)
    assert 0.5 <= took < 2.5
    assert processes_with(mark) == []


async def test_sandbox_network_off_means_no_network(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        connect = f"echo > /dev/tcp/127.0.0.1/{port} && echo connected"
        on, on_logs = await run(sandbox, spec(workspace, "bash", "-c", connect, network=True))
        off, off_logs = await run(sandbox, spec(workspace, "bash", "-c", connect, network=False))
    assert (on.exit_code, on_logs.of("stdout")) == (0, ["connected"])
    assert off.exit_code != 0
    assert off_logs.of("stdout") == []


# -- cgroup limits and accounting --------------------------------------------------------------


@needs_cgroups
async def test_sandbox_memory_limit_kills_the_hog(sandbox: SandboxRuntime, workspace: Path) -> None:
    # `tail` keeps the whole (newline-free) line in memory: 200 MB.
    hog = "head -c 200000000 /dev/zero | tail > /dev/null"
    info, _ = await run(sandbox, spec(workspace, "sh", "-c", hog, memory_mib=48))
    assert info.exit_code == 137
    assert info.error == "out of memory: exceeded the 48 MiB limit"
    assert 40 < info.usage.memory_peak_mib <= 48.5
    roomy, _ = await run(sandbox, spec(workspace, "sh", "-c", hog, memory_mib=1024))
    assert (roomy.exit_code, roomy.error) == (0, None)
    assert roomy.usage.memory_peak_mib > 150


async def test_sandbox_without_cgroups_limits_memory_by_rlimit(workspace: Path) -> None:
    runtime = SandboxRuntime("test-rlimit", None, shutil.which("bwrap") or "bwrap")
    hog = "head -c 200000000 /dev/zero | tail > /dev/null"
    info, logs = await run(runtime, spec(workspace, "sh", "-c", hog, memory_mib=48))
    assert info.exit_code != 0
    assert any("memory" in line for line in logs.of("stderr")), logs.lines
    roomy, _ = await run(runtime, spec(workspace, "sh", "-c", hog, memory_mib=1024))
    assert roomy.exit_code == 0
    # Without cgroups usage is sampled with psutil: at 0.05 s, 0.15 s, 0.35 s, 0.75 s...
    burn = "timeout 1.2 sh -c 'while :; do :; done'"
    busy, _ = await run(runtime, spec(workspace, "sh", "-c", burn))
    assert busy.exit_code == 124
    assert 0.4 < busy.usage.cpu_seconds < 1.3
    assert busy.usage.memory_peak_mib > 0


@needs_cgroups
async def test_sandbox_cpu_is_limited_and_accounted(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    burn = "timeout 1 sh -c 'while :; do :; done'"
    info, _ = await run(sandbox, spec(workspace, "sh", "-c", burn, cpu_millicores=200))
    assert info.exit_code == 124
    assert 0.1 < info.usage.cpu_seconds < 0.35


@needs_cgroups
async def test_sandbox_reaps_cgroups_left_by_an_earlier_agent(tmp_path: Path) -> None:
    assert CGROUPS is not None
    earlier = f"test-{uuid.uuid4().hex[:8]}"
    cgroup = CGROUPS.create(f"{earlier}.wl.1.abc", cpu_millicores=500, memory_mib=64)
    mark = marker()
    leftover = await asyncio.create_subprocess_exec("sleep", mark)
    for procs in cgroup.procs_files:
        procs.write_text(str(leftover.pid))
    runtime = SandboxRuntime(earlier, CGROUPS, shutil.which("bwrap") or "bwrap")
    assert await runtime.reap_orphans(earlier) == [cgroup.name]
    assert await asyncio.wait_for(leftover.wait(), 5) == -9
    assert CGROUPS.existing(earlier) == []


def test_cgroup_v2_without_controllers_is_refused() -> None:
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.controllers").exists():
        pytest.skip("no hybrid cgroup2 mount without controllers on this host")
    if {"memory", "cpu"} <= set((unified / "cgroup.controllers").read_text().split()):
        pytest.skip("this cgroup2 mount has the controllers")
    found, reason = Cgroups.detect(unified)
    assert found is None
    assert reason is not None
    assert "controllers" in reason


# -- detection and the unsafe fallback ---------------------------------------------------------


async def test_missing_bwrap_is_reported_and_only_unsafe_falls_back(
    tmp_path: Path,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if shutil.which("bwrap"):
        assert "sandbox" in detect_runtimes("test-detect")
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    runtimes = detect_runtimes("test-detect")
    assert "sandbox" not in runtimes
    assert "apt-get install bubblewrap" in unavailable_reasons()["sandbox"]

    with caplog.at_level(logging.WARNING, logger="agenthub.agent"):
        unsafe = detect_runtimes("test-detect", allow_unsafe=True)["sandbox"]
    assert type(unsafe) is ProcessRuntime
    assert any("UNSAFE" in r.message for r in caplog.records)
    info, logs = await run(unsafe, spec(workspace, "sh", "-c", "pwd; echo $HOME; exit 5"))
    assert info.exit_code == 5
    assert logs.of("stdout") == [str(workspace), str(workspace)]


async def test_unsafe_process_runtime_stop_kills_the_tree(workspace: Path) -> None:
    runtime = ProcessRuntime("test-process", CGROUPS)
    mark = marker()
    # The grandchild stays in the process group (and in the cgroup when there is one).
    script = f"(sleep {mark} &) ; sleep 300"
    running = await runtime.start(spec(workspace, "sh", "-c", script), lambda s, t: None)
    await stop_soon(running, mark, grace_s=2)
    assert (await running.wait()).reason == "stopped"
    assert processes_with(mark) == []


# -- docker ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busybox() -> str:
    problem = probe_docker()
    if problem is not None:
        pytest.skip(f"docker info fails ({problem}); run scripts/system-deps.sh test")
    return build_busybox_image()


@pytest.fixture
async def docker_runtime(busybox: str, machine_id: str) -> AsyncIterator[DockerRuntime]:
    runtime = DockerRuntime(machine_id)
    yield runtime
    await runtime.reap_orphans(machine_id)
    runtime.close()


async def test_docker_runs_a_container(
    docker_runtime: DockerRuntime, busybox: str, workspace: Path
) -> None:
    script = "echo hello; echo oops >&2; echo made > /workspace/made.txt; pwd; exit 3"
    info, logs = await run(
        docker_runtime, spec(workspace, "sh", "-c", script, image=busybox, working_dir="w")
    )
    assert (info.exit_code, info.reason, info.error) == (3, "exited", None)
    assert logs.of("stdout") == ["hello", "/workspace/w"]
    assert logs.of("stderr") == ["oops"]
    assert (workspace / "made.txt").read_text() == "made\n"
    info, logs = await run(docker_runtime, spec(workspace, "echo", "hello", image=busybox))
    assert (info.exit_code, logs.lines) == (0, [("stdout", "hello")])


async def test_docker_stop_and_timeout(
    docker_runtime: DockerRuntime, busybox: str, workspace: Path, machine_id: str
) -> None:
    running = await docker_runtime.start(
        spec(workspace, "sleep", "300", image=busybox), lambda s, t: None
    )
    started = time.monotonic()
    await running.stop(grace_s=5)
    info = await running.wait()
    assert info.reason == "stopped"
    assert info.exit_code == 128 + 15  # tini forwarded SIGTERM: no need for SIGKILL
    assert time.monotonic() - started < 4

    started = time.monotonic()
    info, _ = await run(docker_runtime, spec(workspace, "sleep", "30", image=busybox, timeout_s=1))
    assert (info.reason, info.error) == ("timeout", "timed out after 1s")
    assert time.monotonic() - started < 4
    # Both containers were removed once done.
    assert await docker_runtime.reap_orphans(machine_id) == []


async def test_docker_missing_image_is_unavailable(
    docker_runtime: DockerRuntime, workspace: Path
) -> None:
    with pytest.raises(RuntimeUnavailable, match="is not available on this node"):
        await docker_runtime.start(
            spec(workspace, "true", image="agenthub-test/no-such-image:1"), lambda s, t: None
        )


async def test_docker_reaps_labelled_containers(busybox: str) -> None:
    import docker

    earlier = f"test-{uuid.uuid4().hex[:8]}"
    client = docker.from_env()
    leftover = client.containers.run(
        busybox, ["sleep", "300"], detach=True, labels={"agenthub.machine": earlier}
    )
    unrelated = client.containers.run(
        busybox, ["sleep", "300"], detach=True, labels={"agenthub.machine": earlier + "x"}
    )
    runtime = DockerRuntime(earlier)
    try:
        assert await runtime.reap_orphans(earlier) == [leftover.id]
        assert client.containers.list(all=True, filters={"id": leftover.id or ""}) == []
        assert client.containers.list(filters={"id": unrelated.id or ""}) != []
    finally:
        unrelated.remove(force=True)
        client.close()
        runtime.close()


async def test_docker_network_off(
    docker_runtime: DockerRuntime, busybox: str, workspace: Path
) -> None:
    info, logs = await run(
        docker_runtime, spec(workspace, "cat", "/proc/net/dev", image=busybox, network=False)
    )
    assert info.exit_code == 0
    interfaces = {line.split(":")[0].strip() for line in logs.of("stdout") if ":" in line}
    assert interfaces == {"lo"}
