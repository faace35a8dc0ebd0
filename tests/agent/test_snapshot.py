"""Workspace checkpoints on the node: scans checked against ``sha256sum``, the stat cache, and
materialisation round trips, all on real files of this machine's filesystem."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pathspec import GitIgnoreSpec

from agenthub.agent import snapshot
from agenthub.agent.snapshot import (
    DEFAULT_IGNORES,
    STAT_CACHE_FILE,
    BlobError,
    Manifest,
    blob_path,
    materialize,
    scan,
)
from agenthub.services.checkpoints.checkpoints import diff_manifests

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def _past_racy_window() -> None:
    """Files written just now are re-hashed by the next scan whatever their stat; wait that out."""
    time.sleep(snapshot.RACY_WINDOW_NS / 1e9 + 0.05)


def _sha256sum(root: Path, rels: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sha256sum", "--", *rels], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    return {path: digest for digest, path in (line.split("  ", 1) for line in out.splitlines())}


def _files(manifest: Manifest) -> dict[str, str]:
    return {path: e["sha256"] for path, e in manifest.items() if "type" not in e}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("never read by a scan, never written by a restore\n")
    return path


@pytest.fixture
def tree(tmp_path: Path, outside: Path) -> Path:
    """A workspace with the kinds of entry a checkpoint records, skips and ignores."""
    ws = tmp_path / "ws"
    (ws / "src" / "pkg" / "deep").mkdir(parents=True)
    (ws / "src" / "pkg" / "__init__.py").write_text("")
    (ws / "src" / "pkg" / "deep" / "mod.py").write_text("print('hi')\n" * 100)
    (ws / "data.bin").write_bytes(os.urandom(3 * snapshot.CHUNK + 17))  # several hash chunks
    (ws / "run.sh").write_text("#!/bin/sh\necho run\n")
    (ws / "run.sh").chmod(0o755)
    (ws / "private.txt").write_text("mine\n")
    (ws / "private.txt").chmod(0o600)
    (ws / "empty" / "nested-empty").mkdir(parents=True)
    (ws / ".git" / "refs").mkdir(parents=True)
    (ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (ws / "src" / "pkg" / "__pycache__").mkdir()
    (ws / "src" / "pkg" / "__pycache__" / "y.pyc").write_bytes(b"\0")
    (ws / ".agenthubignore").write_text("*.log\nbuild/\n")
    (ws / "debug.log").write_text("noise\n")
    (ws / "build").mkdir()
    (ws / "build" / "out.o").write_bytes(b"\0" * 10)
    (ws / "link-out").symlink_to(outside / "secret")
    (ws / "link-dir").symlink_to("src/pkg")  # a link to a directory is not descended into
    (ws / "dangling").symlink_to("no/such/file")
    os.mkfifo(ws / "fifo")  # skipped, and never opened (opening a FIFO would block)
    return ws


def test_scan_matches_sha256sum_and_records_links_modes_and_empty_dirs(
    tree: Path, tmp_path: Path, outside: Path
) -> None:
    result = scan(tree, state_dir=tmp_path / "state")
    m = result.manifest

    files = _files(m)
    assert sorted(files) == [
        ".agenthubignore",
        ".git/HEAD",
        "data.bin",
        "private.txt",
        "run.sh",
        "src/pkg/__init__.py",
        "src/pkg/deep/mod.py",
    ]
    assert files == _sha256sum(tree, sorted(files))
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
    _past_racy_window()
    first = scan(ws, state_dir=state)
    assert (first.hashed, first.file_count) == (2000, 2000)
    assert (state / STAT_CACHE_FILE).is_file()

    # Same size, new content: only the stat says it changed.
    (ws / "d7" / "f7.txt").write_text("FILE 00007\n")
    second = scan(ws, state_dir=state)
    assert second.hashed == 1
    assert second.bytes_hashed == len("FILE 00007\n")
    assert diff_manifests(first.manifest, second.manifest) == ([], ["d7/f7.txt"], [])
    assert _files(second.manifest)["d7/f7.txt"] == _sha256sum(ws, ["d7/f7.txt"])["d7/f7.txt"]


def test_touched_file_is_rehashed_to_the_same_digest(tmp_path: Path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    for name in ("a", "b", "c"):
        (ws / name).write_text(name * 1000)
    _past_racy_window()
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
    _past_racy_window()
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
    assert _files(result.manifest) == _sha256sum(moved, [f"f{i}" for i in range(5)])


class Fetcher:
    """Stands in for the download: puts blobs from a source workspace into the cache."""

    def __init__(self, cache: Path, sources: dict[str, Path]) -> None:
        self.cache, self.sources = cache, sources
        self.calls: list[list[str]] = []

    async def __call__(self, digests: list[str]) -> None:
        self.calls.append(digests)
        for digest in digests:
            dst = blob_path(self.cache, digest)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.sources[digest], dst)


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _write_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.write(data)


def _sources(ws: Path, manifest: Manifest) -> dict[str, Path]:
    return {e["sha256"]: ws / path for path, e in manifest.items() if "type" not in e}


async def test_materialize_round_trips_files_modes_links_and_empty_dirs(
    tree: Path, tmp_path: Path, outside: Path
) -> None:
    (tree / "copy.sh").write_bytes((tree / "run.sh").read_bytes())  # same blob twice
    (tree / "copy.sh").chmod(0o700)
    original = scan(tree, state_dir=tmp_path / "state").manifest
    cache = tmp_path / "cache"
    fetch = Fetcher(cache, _sources(tree, original))
    restored = tmp_path / "restored" / "ws"

    written = await materialize(restored, original, cache_dir=cache, fetch=fetch)

    assert written == len(_files(original))
    assert len(fetch.calls) == 1
    assert fetch.calls[0] == sorted(set(_files(original).values()))
    again = scan(restored, state_dir=tmp_path / "state2").manifest
    assert again == original
    assert os.readlink(restored / "link-out") == str(outside / "secret")
    assert stat.S_IMODE((restored / "copy.sh").stat().st_mode) == 0o700
    assert (outside / "secret").read_text().startswith("never read")


async def test_materialized_files_are_copies_not_links_to_the_cache(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "f").write_text("original")
    manifest = scan(ws, state_dir=tmp_path / "state").manifest
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    await materialize(out, manifest, cache_dir=cache, fetch=Fetcher(cache, _sources(ws, manifest)))

    _write_in_place(out / "f", b"CHANGED!")  # as a workload may
    blob = blob_path(cache, manifest["f"]["sha256"])
    assert blob.read_text() == "original"
    assert (out / "f").stat().st_ino != blob.stat().st_ino


async def test_materialize_fetches_only_missing_blobs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    for i in range(6):
        (ws / f"f{i}").write_text(f"content {i}")
    manifest = scan(ws, state_dir=tmp_path / "state").manifest
    cache = tmp_path / "cache"
    cached = [manifest[f"f{i}"]["sha256"] for i in range(3)]
    for i, digest in enumerate(cached):
        blob_path(cache, digest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ws / f"f{i}", blob_path(cache, digest))

    fetch = Fetcher(cache, _sources(ws, manifest))
    assert await materialize(tmp_path / "a", manifest, cache_dir=cache, fetch=fetch) == 6
    assert fetch.calls == [sorted(manifest[f"f{i}"]["sha256"] for i in range(3, 6))]

    assert await materialize(tmp_path / "b", manifest, cache_dir=cache, fetch=fetch) == 6
    assert len(fetch.calls) == 1  # everything cached now: not called again
    assert scan(tmp_path / "b", state_dir=tmp_path / "s").manifest == manifest


async def test_corrupt_or_missing_blob_from_fetch_raises_and_writes_nothing(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "good").write_text("good")
    (ws / "bad").write_text("the real content")
    manifest = scan(ws, state_dir=tmp_path / "state").manifest
    cache = tmp_path / "cache"
    bad_digest = manifest["bad"]["sha256"]

    async def corrupt(digests: list[str]) -> None:
        for digest in digests:
            blob_path(cache, digest).parent.mkdir(parents=True, exist_ok=True)
            data = b"tampered" if digest == bad_digest else (ws / "good").read_bytes()
            blob_path(cache, digest).write_bytes(data)

    out = tmp_path / "out"
    with pytest.raises(BlobError, match=bad_digest):
        await materialize(out, manifest, cache_dir=cache, fetch=corrupt)
    assert not out.exists()
    assert not blob_path(cache, bad_digest).exists()  # dropped, so a retry fetches it again

    async def nothing(digests: list[str]) -> None:
        return None

    with pytest.raises(BlobError, match="did not put"):
        await materialize(out, manifest, cache_dir=cache, fetch=nothing)
    assert not out.exists()


def _file(digest: str = DIGEST_A, mode: int = 0o644) -> dict[str, object]:
    return {"size": 1, "sha256": digest, "mode": mode}


@pytest.mark.parametrize(
    "manifest",
    [
        {"../escape": _file()},
        {"a/../../escape": _file()},
        {"/etc/escape": _file()},
        {"./a": _file()},
        {"a//b": _file()},
        {"a/b/..": _file()},
        {"link": {"type": "symlink", "target": "..", "mode": 0o120777}, "link/escape": _file()},
        {"f": _file(), "f/escape": _file()},
        {"f": {"size": 1, "sha256": "../../etc/passwd", "mode": 0o644}},
    ],
)
async def test_materialize_refuses_unsafe_manifests(
    manifest: Manifest, tmp_path: Path, outside: Path
) -> None:
    async def fetch(digests: list[str]) -> None:
        raise AssertionError("nothing may be fetched for a manifest that is refused")

    ws = tmp_path / "area" / "ws"
    with pytest.raises(ValueError, match="manifest"):
        await materialize(ws, manifest, cache_dir=tmp_path / "cache", fetch=fetch)
    assert not (tmp_path / "area").exists()
    assert _listing(outside) == ["secret"]


async def test_materialize_over_a_used_workspace(tmp_path: Path, outside: Path) -> None:
    """Leftovers go, unchanged files stay, links planted by a workload are not followed."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "kept.txt").write_text("kept")
    (src / "d" / "changed.txt").write_text("new content")
    (src / "mode.sh").write_text("#!/bin/sh\n")
    (src / "mode.sh").chmod(0o755)
    (src / "setuid").write_text("x")
    (src / "setuid").chmod(0o4755)
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    assert manifest["setuid"]["mode"] == 0o4755

    ws = tmp_path / "ws"
    (ws / "d").mkdir(parents=True)
    (ws / "d" / "kept.txt").write_text("kept")
    (ws / "d" / "changed.txt").write_text("OLD CONTENT")
    (ws / "mode.sh").write_text("#!/bin/sh\n")  # same content, mode 0o644
    (ws / "stray.txt").write_text("not in the checkpoint")
    (ws / "stray-dir" / "x").mkdir(parents=True)
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "m.pyc").write_bytes(b"ignored: left alone")
    os.link(outside / "secret", ws / "setuid")  # a hard link: must be replaced, not truncated
    (ws / "sub").symlink_to(outside)  # would put "sub/f" into the outside directory
    (ws / "sub-file").symlink_to(outside / "secret")
    fetch = Fetcher(tmp_path / "cache", _sources(src, manifest))
    manifest = {**manifest, "sub/f": manifest["d/kept.txt"], "sub-file": manifest["d/kept.txt"]}

    written = await materialize(ws, manifest, cache_dir=fetch.cache, fetch=fetch)

    assert written == 4  # d/changed.txt, setuid, sub/f, sub-file
    assert _listing(outside) == ["secret"]
    assert (outside / "secret").read_text().startswith("never read")
    assert (ws / "__pycache__" / "m.pyc").read_bytes() == b"ignored: left alone"
    assert not (ws / "sub").is_symlink()
    assert stat.S_IMODE((ws / "setuid").stat().st_mode) == 0o755  # set-ID bits not restored
    after = scan(ws, state_dir=tmp_path / "state-ws").manifest
    assert diff_manifests(manifest, after) == ([], ["setuid"], [])
    assert after["mode.sh"]["mode"] == 0o755


def test_diff_manifests() -> None:
    link = {"type": "symlink", "target": "x", "size": 1, "sha256": DIGEST_B, "mode": 0o120777}
    empty_dir = {"type": "dir", "mode": 0o755, "size": 0, "sha256": ""}
    a: Manifest = {
        "same": _file(),
        "content": _file(DIGEST_A),
        "mode": _file(mode=0o644),
        "link": link,
        "became-dir": _file(),
        "gone": _file(),
        "typed": {**_file(), "type": "file"},
    }
    b: Manifest = {
        "same": _file(),
        "content": _file(DIGEST_B),
        "mode": _file(mode=0o755),
        "link": {**link, "target": "y"},
        "became-dir": empty_dir,
        "new": _file(),
        "typed": _file(),  # "type": "file" and no type are the same thing
    }
    # Directories are in manifests so that empty ones survive a restore; they are not files,
    # so a file that became a directory was deleted.
    assert diff_manifests(a, b) == (["new"], ["content", "link", "mode"], ["became-dir", "gone"])
    assert diff_manifests(b, a) == (["became-dir", "gone"], ["content", "link", "mode"], ["new"])
    assert diff_manifests(a, a) == ([], [], [])


async def test_materialize_keeps_a_blob_cache_inside_the_workspace(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("content")
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    ws = tmp_path / "ws"
    fetch = Fetcher(ws / "node" / "blobs", _sources(src, manifest))

    assert await materialize(ws, manifest, cache_dir=fetch.cache, fetch=fetch) == 1
    assert await materialize(ws, manifest, cache_dir=fetch.cache, fetch=fetch) == 0
    assert blob_path(fetch.cache, manifest["f"]["sha256"]).read_text() == "content"
    assert _listing(ws) == ["f", "node"]


def test_unchanged_workspace_does_not_rewrite_the_stat_cache(tmp_path: Path) -> None:
    ws, state = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    for i in range(3):
        (ws / f"f{i}").write_text(str(i))
    _past_racy_window()
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


def _many_files(ws: Path, count: int) -> None:
    for i in range(count):
        d = ws / f"d{i % 9}" / f"e{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 37 % 5000))
        (d / f"f{i}").chmod((0o644, 0o755, 0o600, 0o444)[i % 4])
    (ws / "big").write_bytes(os.urandom(snapshot._SMALL_COPY * 2 + 3))  # copy_file_range path


async def test_large_restore_copies_in_threads_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _many_files(src, 300)
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    monkeypatch.setattr(snapshot, "COPY_THREADS", 3)
    threads: set[str] = set()
    copy = snapshot._copy_blob

    def spy(*args: Any) -> None:
        threads.add(threading.current_thread().name)
        copy(*args)

    monkeypatch.setattr(snapshot, "_copy_blob", spy)
    out = tmp_path / "out"
    fetch = Fetcher(tmp_path / "cache", _sources(src, manifest))

    assert await materialize(out, manifest, cache_dir=fetch.cache, fetch=fetch) == 301
    assert threads
    assert all(name.startswith("materialize") for name in threads)
    assert scan(out, state_dir=tmp_path / "state-out").manifest == manifest


async def test_a_copy_failing_in_a_thread_fails_the_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _many_files(src, 200)
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    monkeypatch.setattr(snapshot, "COPY_THREADS", 2)
    copy = snapshot._copy_blob

    def failing(src_path: str, dst: str, *args: Any) -> None:
        if dst.endswith("/f150"):
            raise OSError(28, "No space left on device")
        copy(src_path, dst, *args)

    monkeypatch.setattr(snapshot, "_copy_blob", failing)
    fetch = Fetcher(tmp_path / "cache", _sources(src, manifest))
    with pytest.raises(OSError, match="No space left"):
        await materialize(tmp_path / "out", manifest, cache_dir=fetch.cache, fetch=fetch)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o027])
async def test_restored_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    modes = (0o644, 0o755, 0o600, 0o664, 0o444, 0o700, 0o000)
    for mode in modes:
        (src / f"m{mode:o}").write_text(f"{mode:o}")
        (src / f"m{mode:o}").chmod(mode)
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    fetch = Fetcher(tmp_path / "cache", _sources(src, manifest))
    before = os.umask(umask)
    try:
        assert snapshot._umask() == umask
        await materialize(tmp_path / "out", manifest, cache_dir=fetch.cache, fetch=fetch)
    finally:
        os.umask(before)
    for mode in modes:
        assert stat.S_IMODE((tmp_path / "out" / f"m{mode:o}").stat().st_mode) == mode
        (tmp_path / "out" / f"m{mode:o}").chmod(0o600)
        assert (tmp_path / "out" / f"m{mode:o}").read_text() == f"{mode:o}"


async def test_restore_copies_the_whole_blob_whatever_size_the_manifest_claims(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "small").write_bytes(os.urandom(3000))
    (src / "large").write_bytes(os.urandom(snapshot._SMALL_COPY + 5000))
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    fetch = Fetcher(tmp_path / "cache", _sources(src, manifest))
    lying = {
        "small": {**manifest["small"], "size": 10},
        "large": {**manifest["large"], "size": snapshot._SMALL_COPY * 3},
        "small-longer": {**manifest["small"], "size": 9000},
        "large-shorter": {**manifest["large"], "size": snapshot._SMALL_COPY + 1},
    }
    await materialize(tmp_path / "out", lying, cache_dir=fetch.cache, fetch=fetch)
    for name, source in (
        ("small", "small"),
        ("large", "large"),
        ("small-longer", "small"),
        ("large-shorter", "large"),
    ):
        assert (tmp_path / "out" / name).read_bytes() == (src / source).read_bytes(), name
