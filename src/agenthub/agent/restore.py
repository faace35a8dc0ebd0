"""Materialising a workspace from a checkpoint manifest (see :mod:`agenthub.agent.snapshot` for
the format), the node's side of a restore.

:func:`materialize` copies blobs out of a node-local content-addressed cache
(``cache_dir/<d[:2]>/<d>``); it never hard-links them, because a workload may write its files in
place. It does not restore set-user-ID or set-group-ID bits: materialising as root must not mint
set-ID programs out of a checkpoint. Directories are made first, then the files are copied by up
to :data:`COPY_THREADS` threads (creating a file is mostly kernel work, which threads overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from agenthub.agent.snapshot import (
    _DIGEST,
    CHUNK,
    IGNORE_FILE,
    BlobError,
    Manifest,
    _ancestors,
    _hash_file,
    _Ignore,
    _NotRegular,
    _try_hash,
    blob_path,
)

_SETID = stat.S_ISUID | stat.S_ISGID
COPY_THREADS = min(4, os.cpu_count() or 1)  # threads a large restore copies files with


def _kind(entry: dict[str, Any]) -> str:
    return str(entry.get("type") or "file")


class _Want(NamedTuple):  # a tuple: ten thousand of them build ~5x faster than a dataclass
    kind: str  # "file", "symlink" or "dir"
    sha256: str = ""
    size: int = 0
    mode: int = 0
    target: str = ""


def _check_manifest(manifest: Manifest) -> dict[str, _Want]:
    """The manifest's entries, normalised; ValueError for anything that cannot be written safely."""
    wants: dict[str, _Want] = {}
    for path, entry in manifest.items():
        if not isinstance(path, str) or not path or "\0" in path:
            raise ValueError(f"bad manifest path {path!r}")
        if path.startswith("/"):
            raise ValueError(f"manifest path {path!r} is absolute")
        parts = path.split("/")
        if "" in parts or "." in parts or ".." in parts:
            raise ValueError(f"manifest path {path!r} is not a plain relative path")
        if not isinstance(entry, dict):
            raise ValueError(f"manifest entry for {path!r} is not an object")
        kind, mode = _kind(entry), entry.get("mode")
        if type(mode) is not int:
            raise ValueError(f"manifest entry for {path!r} has no integer mode")
        if kind == "file":
            digest, size = entry.get("sha256"), entry.get("size")
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise ValueError(f"manifest entry for {path!r} has no sha256 hex digest")
            if type(size) is not int or size < 0:
                raise ValueError(f"manifest entry for {path!r} has no size")
            wants[path] = _Want("file", digest, size, mode & 0o7777 & ~_SETID)
        elif kind == "symlink":
            target = entry.get("target")
            if not isinstance(target, str) or not target or "\0" in target:
                raise ValueError(f"manifest entry for {path!r} has no symlink target")
            wants[path] = _Want("symlink", target=target)
        elif kind == "dir":
            wants[path] = _Want("dir", mode=mode & 0o7777 & ~_SETID)
        else:
            raise ValueError(f"manifest entry for {path!r} has unknown type {kind!r}")
    passed: set[str] = set()  # directories whose ancestors, and themselves, are fine
    for path in wants:
        parent = path.rpartition("/")[0]
        while parent and parent not in passed:
            above = wants.get(parent)
            if above is not None and above.kind != "dir":
                raise ValueError(f"manifest path {path!r} would be written through {parent!r}")
            passed.add(parent)
            parent = parent.rpartition("/")[0]
    return wants


async def materialize(
    workspace: Path,
    manifest: Manifest,
    *,
    cache_dir: Path,
    fetch: Callable[[list[str]], Awaitable[None]],
) -> int:
    """Make ``workspace`` hold exactly ``manifest``; returns how many files were written.

    Blobs come from ``cache_dir`` (see :func:`blob_path`). ``fetch`` is awaited once, with the
    sorted digests the cache lacks (not at all when it lacks none), and must put them there; what
    it delivered is verified before anything is written (:class:`BlobError` otherwise, and the bad
    blob is dropped). Entries already right in the workspace are left alone, and so are untracked
    paths the ignore rules cover (the manifest's ``.agenthubignore``); everything else not in the
    manifest is removed. Nothing is written through a symlink. ValueError for a manifest path
    that is absolute, not normalised, or under a file or symlink of the same manifest.
    """
    wants = _check_manifest(manifest)
    digests = sorted({w.sha256 for w in wants.values() if w.kind == "file"})
    missing = await asyncio.to_thread(_missing_blobs, cache_dir, digests)
    if missing:
        await fetch(list(missing))
        await asyncio.to_thread(_verify_blobs, cache_dir, missing)
    return await asyncio.to_thread(_write_tree, os.fspath(workspace), wants, cache_dir)


def _missing_blobs(cache_dir: Path, digests: list[str]) -> list[str]:
    # Strings, not Paths, and access, not stat (which builds a result object): 10k blobs cost
    # ~20 ms instead of ~0.2 s. A name in the cache is only ever made for a blob (by ``fetch``).
    blobs = os.fspath(cache_dir)
    return [d for d in digests if not os.access(f"{blobs}/{d[:2]}/{d}", os.F_OK)]


def _verify_blobs(cache_dir: Path, digests: list[str]) -> None:
    for digest in digests:
        path = os.fspath(blob_path(cache_dir, digest))
        result = _try_hash(path)
        if isinstance(result, Exception):
            raise BlobError(f"fetch did not put blob {digest} into the cache")
        if result[0] != digest:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise BlobError(f"blob {digest} from fetch has sha256 {result[0]}; dropped it")


def _cache_rel(root: str, cache_dir: Path) -> str | None:
    rel = os.path.relpath(os.path.realpath(cache_dir), os.path.realpath(root))
    return None if rel.startswith("..") else rel.replace(os.sep, "/")


def _prune(
    root: str, wants: dict[str, _Want], keep: _Ignore, protect: str | None
) -> dict[str, os.stat_result]:
    """Remove what the manifest does not hold; the entries that may already be right, by path."""
    parents: set[str] = set(_ancestors(protect)) if protect else set()
    for rel in wants:
        parents.update(_ancestors(rel))
    existing: dict[str, os.stat_result] = {}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        prefix = rel_dir + "/" if rel_dir else ""
        with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
            for entry in it:
                rel = prefix + entry.name
                if rel == protect:
                    continue
                want = wants.get(rel)
                st = entry.stat(follow_symlinks=False)
                kind = stat.S_IFMT(st.st_mode)
                if kind == stat.S_IFDIR:
                    if (want is not None and want.kind == "dir") or rel in parents:
                        if want is not None:
                            existing[rel] = st
                        stack.append(rel)
                    elif want is None and keep(rel + "/"):
                        continue
                    else:
                        shutil.rmtree(entry.path)
                    continue
                if want is None and rel not in parents and keep(rel):
                    continue
                same_file = want is not None and want.kind == "file" and kind == stat.S_IFREG
                same_link = (
                    want is not None
                    and want.kind == "symlink"
                    and kind == stat.S_IFLNK
                    and os.readlink(entry.path) == want.target
                )
                if same_file or same_link:
                    existing[rel] = st
                    continue
                os.unlink(entry.path)
    return existing


def _ensure_dir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):  # changed under us since the prune
            raise


def _umask() -> int | None:
    """This process's umask, read without changing it (``os.umask`` would, for every thread);
    None where ``/proc`` does not tell."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _copy_blob(src: str, dst: str, mode: int, size: int, umask: int | None) -> None:
    """A new file ``dst`` with the content of ``src`` (``size`` is a hint) and ``mode``.

    The file is created with its mode when the umask leaves that mode as it is (no ``fchmod``
    then); otherwise it is created private and given its mode once written.
    """
    src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        direct = umask is not None and not mode & umask
        dst_fd = os.open(dst, _CREATE, mode if direct else 0o600)
        try:
            _copy_fd(src_fd, dst_fd, size)
            if not direct:
                os.fchmod(dst_fd, mode)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


# Above this, copy_file_range (which shares extents on btrfs and xfs, and saves a copy through
# user space elsewhere); below it, one read and one write cost fewer syscalls and less setup.
_SMALL_COPY = 256 << 10


def _copy_fd(src: int, dst: int, size: int) -> None:
    """Copy what ``src`` holds, to its end, into ``dst``; ``size`` is what it should hold."""
    if size > _SMALL_COPY:
        # Where copy_file_range is refused, carry on with reads and writes from where it stopped.
        left = size
        with contextlib.suppress(OSError):
            while left > 0 and (n := os.copy_file_range(src, dst, left)):
                left -= n
    # A read of size + 1 takes a file of the expected size in one call; the next one sees its
    # end. (Not CHUNK every time: os.read allocates what it is asked for.)
    want = min(size + 1, CHUNK)
    while chunk := os.read(src, want):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        want = CHUNK


def _keep_spec(wants: dict[str, _Want], cache_dir: Path) -> _Ignore:
    own = wants.get(IGNORE_FILE)
    if own is None or own.kind != "file":
        return _Ignore([])
    text = blob_path(cache_dir, own.sha256).read_bytes().decode("utf-8", "surrogateescape")
    return _Ignore(text.splitlines())


def _write_tree(root: str, wants: dict[str, _Want], cache_dir: Path) -> int:
    os.makedirs(root, exist_ok=True)
    existing = _prune(root, wants, _keep_spec(wants, cache_dir), _cache_rel(root, cache_dir))
    blobs = os.fspath(cache_dir)
    made: set[str] = set()
    dir_modes: list[tuple[str, int]] = []
    copies: list[tuple[str, str, int, int]] = []
    for rel in sorted(wants):
        want, have = wants[rel], existing.get(rel)
        path = os.path.join(root, rel)
        parent = rel.rpartition("/")[0]
        if parent and parent not in made:
            for above in _ancestors(rel):
                if above not in made:
                    _ensure_dir(os.path.join(root, above))
                    made.add(above)
        if want.kind == "dir":
            _ensure_dir(path)
            made.add(rel)
            dir_modes.append((path, want.mode))
        elif want.kind == "symlink":
            if have is None:
                os.symlink(want.target, path)
        else:
            if have is not None:
                if have.st_size == want.size and _holds(path, want.sha256):
                    if stat.S_IMODE(have.st_mode) != want.mode:
                        os.chmod(path, want.mode)
                    continue
                os.unlink(path)  # not truncated in place: it may be a hard link to elsewhere
            digest = want.sha256
            copies.append((f"{blobs}/{digest[:2]}/{digest}", path, want.mode, want.size))
    _copy_all(copies, _umask())
    # Last, and deepest first: a directory without write permission must not block its children.
    for path, mode in reversed(dir_modes):
        os.chmod(path, mode)
    return len(copies)


def _copy_all(copies: list[tuple[str, str, int, int]], umask: int | None) -> None:
    """Every copy, by a few threads when there are many: creating files is mostly kernel work,
    which runs beside the other threads (on 2 cores a restore of 10k small files took ~0.7x the
    time with two threads). Each thread takes runs of neighbouring paths, so threads seldom
    wait on the same directory."""
    workers = min(COPY_THREADS, len(copies) // 64)
    if workers < 2:
        for src, dst, mode, size in copies:
            _copy_blob(src, dst, mode, size, umask)
        return
    step = -(-len(copies) // (workers * 8))

    def run(start: int) -> None:
        for src, dst, mode, size in copies[start : start + step]:
            _copy_blob(src, dst, mode, size, umask)

    with ThreadPoolExecutor(workers, thread_name_prefix="materialize") as pool:
        for _ in pool.map(run, range(0, len(copies), step)):  # re-raises the first failure
            pass


def _holds(path: str, digest: str) -> bool:
    try:
        return _hash_file(path)[0] == digest
    except (OSError, _NotRegular):
        return False
