"""An assignment's files on the node: checked again there, and written into the workspace
without ever following what an earlier run left in it (symlinks, hard links, FIFOs) out of it.

Real files on this machine's filesystem; the whole path through a sandbox is in
test_work_loop.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agenthub.agent.workload import (
    MAX_FILES,
    MAX_FILES_BYTES,
    AssignmentError,
    assignment_files,
    launch_spec,
    write_files,
)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspaces" / "ws"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workspace, with a file a workload must never reach."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("keep me\n")
    return path


def test_files_land_in_nested_directories(workspace: Path) -> None:
    write_files(workspace, {"a.txt": "one\n", "src/pkg/mod.py": "print('hi')\n", "src/b": ""})
    assert (workspace / "a.txt").read_text() == "one\n"
    assert (workspace / "src" / "pkg" / "mod.py").read_text() == "print('hi')\n"
    assert (workspace / "src" / "b").read_bytes() == b""
    mode = os.lstat(workspace / "a.txt").st_mode
    assert stat.S_ISREG(mode)
    # No temporary file is left behind.
    assert sorted(p.name for p in workspace.iterdir()) == ["a.txt", "src"]


def test_a_file_is_replaced_with_the_assignment_s_content(workspace: Path) -> None:
    (workspace / "conf").write_text("changed by the last run, and much longer than the new\n")
    write_files(workspace, {"conf": "fresh\n"})
    assert (workspace / "conf").read_text() == "fresh\n"


def test_a_symlinked_directory_is_refused(workspace: Path, outside: Path) -> None:
    (workspace / "src").symlink_to(outside)
    with pytest.raises(AssignmentError, match=r"'src/x'.*symlink"):
        write_files(workspace, {"src/x": "pwned"})
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_a_symlinked_directory_deeper_down_is_refused(workspace: Path, outside: Path) -> None:
    (workspace / "a" / "b").mkdir(parents=True)
    (workspace / "a" / "b" / "c").symlink_to(outside)
    with pytest.raises(AssignmentError, match="symlink"):
        write_files(workspace, {"a/b/c/secret": "pwned"})
    assert (outside / "secret").read_text() == "keep me\n"


def test_a_symlinked_file_is_replaced_not_followed(workspace: Path, outside: Path) -> None:
    (workspace / "notes").symlink_to(outside / "secret")
    (workspace / "dangling").symlink_to(outside / "created-through-a-link")
    write_files(workspace, {"notes": "mine\n", "dangling": "mine too\n"})
    assert (outside / "secret").read_text() == "keep me\n"
    assert not (outside / "created-through-a-link").exists()
    assert not (workspace / "notes").is_symlink()
    assert (workspace / "notes").read_text() == "mine\n"


def test_a_hard_link_to_a_file_elsewhere_is_replaced_not_truncated(
    workspace: Path, outside: Path
) -> None:
    os.link(outside / "secret", workspace / "linked")
    write_files(workspace, {"linked": "new\n"})
    assert (outside / "secret").read_text() == "keep me\n"
    assert (workspace / "linked").read_text() == "new\n"
    assert os.stat(workspace / "linked").st_nlink == 1


def test_a_fifo_in_the_way_does_not_block_the_agent(workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")
    write_files(workspace, {"pipe": "data\n"})  # opening the FIFO would block forever
    assert stat.S_ISREG(os.lstat(workspace / "pipe").st_mode)


@pytest.mark.parametrize(
    ("existing", "path", "message"),
    [("dir", "dir", "a directory is in the way"), ("file", "file/inner", "symlink or a file")],
)
def test_what_cannot_be_replaced_fails_with_a_reason(
    workspace: Path, existing: str, path: str, message: str
) -> None:
    if existing == "dir":
        (workspace / "dir" / "keep").mkdir(parents=True)
    else:
        (workspace / "file").write_text("x")
    with pytest.raises(AssignmentError, match=message):
        write_files(workspace, {path: "y"})


def test_a_symlinked_workspace_is_refused(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "ws-link"
    link.symlink_to(outside)
    with pytest.raises(AssignmentError, match="cannot open workspace"):
        write_files(link, {"a": "b"})
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../up", "a/../../b", "a//b", "./a", "a/", ".", "nul\x00", "x" * 256],
)
def test_bad_paths_are_refused_on_the_node(path: str) -> None:
    with pytest.raises(AssignmentError, match="file path"):
        assignment_files({"files": {path: "x"}})


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["a"], "files must map"),
        ({"a": 1}, "must be text"),
        ({"a": "nul\x00"}, "must be text"),
        ({f"f{i}": "" for i in range(MAX_FILES + 1)}, "at most 1000"),
        ({"a": "x" * MAX_FILES_BYTES, "b": "y"}, "at most 10485760"),
    ],
)
def test_bad_files_are_refused_on_the_node(files: object, message: str) -> None:
    with pytest.raises(AssignmentError, match=message):
        assignment_files({"files": files})


def test_good_files_pass_and_none_is_empty() -> None:
    files = {"a/b.txt": "x", "é/ü.md": "ü" * 10}
    assert assignment_files({"files": files}) == files
    assert assignment_files({}) == {}
    assert assignment_files({"files": None}) == {}


def test_the_hub_url_reaches_the_env_unless_the_assignment_sets_it(tmp_path: Path) -> None:
    spec = launch_spec({"command": ["true"]}, ("w", 1), tmp_path, hub_url="http://hub:8000")
    assert spec.env == {"AGENTHUB_URL": "http://hub:8000"}
    own = {"command": ["true"], "env": {"AGENTHUB_URL": "http://elsewhere"}}
    spec = launch_spec(own, ("w", 1), tmp_path, hub_url="http://hub:8000")
    assert spec.env == {"AGENTHUB_URL": "http://elsewhere"}
    assert launch_spec({"command": ["true"]}, ("w", 1), tmp_path).env == {}
