"""Workspace scans on the node: checked against ``sha256sum``, the ignore rules and the stat
cache, all on real files of this machine's filesystem."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pathspec import GitIgnoreSpec

from agenthub.agent import snapshot
from agenthub.agent.snapshot import DEFAULT_IGNORES, STAT_CACHE_FILE, Manifest, scan
from agenthub.services.checkpoints.checkpoints import diff_manifests
from tests.agent.snapshot_support import (
    DIGEST_A,
    DIGEST_B,
    file_digests,
    file_entry,
    past_racy_window,
    sha256sum,
)


def test_scan_matches_sha256sum_and_records_links_modes_and_empty_dirs(
    tree: Path, tmp_path: Path, outside: Path
) -> None:
    result = scan(tree, state_dir=tmp_path / "state")
    m = result.manifest

    files = file_digests(m)
    assert sorted(files) == [
        ".agenthubignore",
        ".git/HEAD",
        "data.bin",
        "private.txt",
        "run.sh",
        "src/pkg/__init__.py",
        "src/pkg/deep/mod.py",
    ]
    assert files == sha256sum(tree, sorted(files))
    assert m["run.sh"]["mode"] == 0o755
    assert m["private.txt"]["mode"] == 0o600
    assert m["data.bin"]["size"] == 3 * snapshot.CHUNK + 17

    target = str(outside / "secret")
    assert m["link-out"] == {
        "type": "symlink",
        "target": target,
        "size": len(target.encode()),
        "sha256": hashlib.sha256(target.encode()).hexdigest(),
        "mode": 0o120777,
    }
    assert m["link-dir"]["type"] == "symlink"
    assert m["link-dir"]["target"] == "src/pkg"
    assert m["dangling"]["target"] == "no/such/file"
    assert not any(p.startswith("link-dir/") for p in m)

    # Only the innermost empty directory is recorded; ".git/refs" is empty too.
    assert m["empty/nested-empty"] == {"type": "dir", "mode": 0o755, "size": 0, "sha256": ""}
    assert m[".git/refs"]["type"] == "dir"
    assert "empty" not in m
    assert "src" not in m

    for skipped in ("__pycache__", "src/pkg/__pycache__", "debug.log", "build", "fifo"):
        assert not any(p == skipped or p.startswith(skipped + "/") for p in m), skipped
    assert result.file_count == 7
    assert result.hashed == 7
    assert result.total_size == sum(m[p]["size"] for p in files)
    assert result.bytes_hashed == result.total_size


def test_agenthubignore_negation(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".agenthubignore").write_text("*.log\n!keep.log\n")
    for name in ("a.log", "keep.log", "b.txt"):
        (ws / name).write_text(name)
    assert sorted(scan(ws, state_dir=tmp_path / "state").manifest) == [
        ".agenthubignore",
        "b.txt",
        "keep.log",
    ]


@pytest.mark.parametrize("extra", [[], ["*.log", "/build/", "docs/_build/", "**/tmp"]])
def test_ignore_matching_agrees_with_pathspec(extra: list[str]) -> None:
    """Rules without negations are matched with one combined regex; it must agree with pathspec."""
    spec = GitIgnoreSpec.from_lines([*DEFAULT_IGNORES, *extra])
    ignore = snapshot._Ignore(extra)
    assert ignore.any is not None
    paths = [
        "__pycache__/",
        "a/__pycache__/",
        "__pycache__",
        "x.pyc",
        "a/b/x.pyc",
        "x.pyc/",
        "node_modules/.cache/",
        "node_modules/.cache",
        "a/.cache/",
        ".git/",
        ".git/HEAD",
        "build/",
        "a/build/",
        "build",
        "docs/_build/",
        "a/docs/_build/",
        "a/tmp",
        "tmp/",
        "x.log",
        "a/x.log/",
        "src/main.py",
        ".agenthub-snapshot/",
    ]
    assert [ignore(p) for p in paths] == [spec.match_file(p) for p in paths]


def test_rescan_hashes_only_the_changed_file(tmp_path: Path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    for i in range(2000):
        d = ws / f"d{i % 20}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i:05d}\n")
    past_racy_window()
    first = scan(ws, state_dir=state)
    assert (first.hashed, first.file_count) == (2000, 2000)
    assert (state / STAT_CACHE_FILE).is_file()

    # Same size, new content: only the stat says it changed.
    (ws / "d7" / "f7.txt").write_text("FILE 00007\n")
    second = scan(ws, state_dir=state)
    assert second.hashed == 1
    assert second.bytes_hashed == len("FILE 00007\n")
    assert diff_manifests(first.manifest, second.manifest) == ([], ["d7/f7.txt"], [])
    assert file_digests(second.manifest)["d7/f7.txt"] == sha256sum(ws, ["d7/f7.txt"])["d7/f7.txt"]


def test_touched_file_is_rehashed_to_the_same_digest(tmp_path: Path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    for name in ("a", "b", "c"):
        (ws / name).write_text(name * 1000)
    past_racy_window()
    before = scan(ws, state_dir=state)
    st = (ws / "b").stat()
    os.utime(ws / "b", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    after = scan(ws, state_dir=state)
    assert after.hashed == 1
    assert after.manifest == before.manifest


def test_recently_written_files_are_not_trusted_from_the_cache(tmp_path: Path) -> None:
    """A write in the same timestamp tick as the scan could leave the stat unchanged."""
    ws, state = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    (ws / "new").write_text("fresh")
    assert scan(ws, state_dir=state).hashed == 1
    assert scan(ws, state_dir=state).hashed == 1


def test_stat_cache_of_another_workspace_or_corrupt_is_ignored(tmp_path: Path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    for i in range(5):
        (ws / f"f{i}").write_text(str(i))
    past_racy_window()
    assert scan(ws, state_dir=state).hashed == 5
    assert scan(ws, state_dir=state).hashed == 0

    # Every file keeps its stat (inode included) when the directory moves: only the cache's
    # record of which workspace it describes keeps it from being trusted.
    moved = tmp_path / "moved"
    ws.rename(moved)
    assert scan(moved, state_dir=state).hashed == 5
    assert scan(moved, state_dir=state).hashed == 0

    (state / STAT_CACHE_FILE).write_bytes(b"\x92\xc1garbage")
    result = scan(moved, state_dir=state)
    assert result.hashed == 5
    assert file_digests(result.manifest) == sha256sum(moved, [f"f{i}" for i in range(5)])


def test_diff_manifests() -> None:
    link = {"type": "symlink", "target": "x", "size": 1, "sha256": DIGEST_B, "mode": 0o120777}
    empty_dir = {"type": "dir", "mode": 0o755, "size": 0, "sha256": ""}
    a: Manifest = {
        "same": file_entry(),
        "content": file_entry(DIGEST_A),
        "mode": file_entry(mode=0o644),
        "link": link,
        "became-dir": file_entry(),
        "gone": file_entry(),
        "typed": {**file_entry(), "type": "file"},
    }
    b: Manifest = {
        "same": file_entry(),
        "content": file_entry(DIGEST_B),
        "mode": file_entry(mode=0o755),
        "link": {**link, "target": "y"},
        "became-dir": empty_dir,
        "new": file_entry(),
        "typed": file_entry(),  # "type": "file" and no type are the same thing
    }
    # Directories are in manifests so that empty ones survive a restore; they are not files,
    # so a file that became a directory was deleted.
    assert diff_manifests(a, b) == (["new"], ["content", "link", "mode"], ["became-dir", "gone"])
    assert diff_manifests(b, a) == (["became-dir", "gone"], ["content", "link", "mode"], ["new"])
    assert diff_manifests(a, a) == ([], [], [])


def test_unchanged_workspace_does_not_rewrite_the_stat_cache(tmp_path: Path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    for i in range(3):
        (ws / f"f{i}").write_text(str(i))
    past_racy_window()
    scan(ws, state_dir=state)
    written = (state / STAT_CACHE_FILE).stat().st_ino

    assert scan(ws, state_dir=state).hashed == 0
    assert (state / STAT_CACHE_FILE).stat().st_ino == written  # not replaced

    (ws / "f1").unlink()
    assert scan(ws, state_dir=state).hashed == 0
    assert (state / STAT_CACHE_FILE).stat().st_ino != written  # the entry for f1 is gone
    assert sorted(
        snapshot._load_stat_cache(state / STAT_CACHE_FILE, snapshot._root_id(str(ws)))
    ) == ["f0", "f2"]


def test_workspace_reached_through_a_symlink_is_scanned(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "ws-link"
    link.symlink_to(tree)
    assert scan(link, state_dir=tmp_path / "s1").manifest == (
        scan(tree, state_dir=tmp_path / "s2").manifest
    )
