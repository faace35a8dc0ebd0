"""Restoring workspaces on the node: materialisation round trips through a blob cache, over
used workspaces and unsafe manifests, on real files of this machine's filesystem."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from agenthub.agent import restore
from agenthub.agent.restore import materialize
from agenthub.agent.snapshot import BlobError, Manifest, blob_path, scan
from agenthub.services.checkpoints.checkpoints import diff_manifests
from tests.agent.snapshot_support import file_digests, file_entry


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

    assert written == len(file_digests(original))
    assert len(fetch.calls) == 1
    assert fetch.calls[0] == sorted(set(file_digests(original).values()))
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


@pytest.mark.parametrize(
    "manifest",
    [
        {"../escape": file_entry()},
        {"a/../../escape": file_entry()},
        {"/etc/escape": file_entry()},
        {"./a": file_entry()},
        {"a//b": file_entry()},
        {"a/b/..": file_entry()},
        {
            "link": {"type": "symlink", "target": "..", "mode": 0o120777},
            "link/escape": file_entry(),
        },
        {"f": file_entry(), "f/escape": file_entry()},
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


def _many_files(ws: Path, count: int) -> None:
    for i in range(count):
        d = ws / f"d{i % 9}" / f"e{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 37 % 5000))
        (d / f"f{i}").chmod((0o644, 0o755, 0o600, 0o444)[i % 4])
    (ws / "big").write_bytes(os.urandom(restore._SMALL_COPY * 2 + 3))  # copy_file_range path


async def test_large_restore_copies_in_threads_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _many_files(src, 300)
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    monkeypatch.setattr(restore, "COPY_THREADS", 3)
    threads: set[str] = set()
    copy = restore._copy_blob

    def spy(*args: Any) -> None:
        threads.add(threading.current_thread().name)
        copy(*args)

    monkeypatch.setattr(restore, "_copy_blob", spy)
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
    monkeypatch.setattr(restore, "COPY_THREADS", 2)
    copy = restore._copy_blob

    def failing(src_path: str, dst: str, *args: Any) -> None:
        if dst.endswith("/f150"):
            raise OSError(28, "No space left on device")
        copy(src_path, dst, *args)

    monkeypatch.setattr(restore, "_copy_blob", failing)
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
        assert restore._umask() == umask
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
    (src / "large").write_bytes(os.urandom(restore._SMALL_COPY + 5000))
    manifest = scan(src, state_dir=tmp_path / "state").manifest
    fetch = Fetcher(tmp_path / "cache", _sources(src, manifest))
    lying = {
        "small": {**manifest["small"], "size": 10},
        "large": {**manifest["large"], "size": restore._SMALL_COPY * 3},
        "small-longer": {**manifest["small"], "size": 9000},
        "large-shorter": {**manifest["large"], "size": restore._SMALL_COPY + 1},
    }
    await materialize(tmp_path / "out", lying, cache_dir=fetch.cache, fetch=fetch)
    for name, source in (
        ("small", "small"),
        ("large", "large"),
        ("small-longer", "small"),
        ("large-shorter", "large"),
    ):
        assert (tmp_path / "out" / name).read_bytes() == (src / source).read_bytes(), name
