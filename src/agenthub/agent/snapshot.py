"""Content-addressed workspace checkpoints, the node's side: scan a workspace into a manifest.

Pure local filesystem work; whoever calls it moves blobs over the network. Restoring a workspace
from a manifest is :mod:`agenthub.agent.restore`.

A manifest maps POSIX paths relative to the workspace (no leading ``./``) to entries, and is
JSON-serialisable so the hub stores it as it is:

- a regular file: ``{"size": int, "sha256": str, "mode": int}``; ``mode`` is ``st_mode & 0o7777``.
  Regular files carry no ``"type"`` key (readers also take ``"type": "file"``).
- a symlink: ``{"type": "symlink", "target": str, "size": len(target bytes),
  "sha256": sha256(target bytes), "mode": st_mode}`` (``0o120777`` on Linux). A link is recorded,
  never followed, and its target never resolved: a link to a directory stays a link.
- a directory with nothing recorded under it: ``{"type": "dir", "mode": int, "size": 0,
  "sha256": ""}``, so that empty directories survive a round trip. Directories that hold recorded
  entries are implied by their paths and get default permissions when materialised.

Sockets, FIFOs and devices are skipped. Ignore rules are gitignore lines: :data:`DEFAULT_IGNORES`
plus the workspace's top-level ``.agenthubignore`` (a regular file; a symlink is not read);
``.git`` is kept. An ignored directory is not descended into.

:func:`scan` walks the whole workspace and re-hashes a file only when its ``(size, mtime_ns, ino,
ctime_ns)`` changed since the last scan, like git's index. Files modified within
:data:`RACY_WINDOW_NS` of the scan are not cached, since a later write in the same timestamp tick
could leave the stat unchanged (git's "racily clean" entries). Its result keeps a :class:`Tree`
(the directories it walked, the stat cache) so that :func:`agenthub.agent.rescan.rescan` can
produce the next manifest from a change journal's list of changed paths without walking again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import Any

import msgpack  # type: ignore[import-untyped]
from pathspec import GitIgnoreSpec, RegexPattern

Manifest = dict[str, dict[str, Any]]

DEFAULT_IGNORES: list[str] = [
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    "node_modules/.cache/",
    ".cache/",
    ".agenthub-snapshot/",
]
IGNORE_FILE = ".agenthubignore"
STAT_CACHE_FILE = "stat-cache.msgpack"
CHUNK = 1 << 20
# Wider than any local filesystem's timestamp tick (ext4 and xfs: a jiffy; FAT: 2 s aside).
RACY_WINDOW_NS = 1_000_000_000
_CACHE_VERSION = 1
_DIGEST = re.compile(r"[0-9a-f]{64}")

# [size, mtime_ns, ino, ctime_ns, sha256]
_CacheEntry = list[Any]


class BlobError(Exception):
    """A blob that ``fetch`` should have put in the cache is missing or has the wrong content."""


def blob_path(cache_dir: Path, digest: str) -> Path:
    """Where the cache keeps the blob with this sha256; ``fetch`` puts blobs here."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return cache_dir / digest[:2] / digest


class _Ignore:
    """Gitignore matching (``DEFAULT_IGNORES`` plus ``lines``); directories end with ``/``."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.spec = GitIgnoreSpec.from_lines([*DEFAULT_IGNORES, *lines])
        # Without negations a path is ignored when any pattern matches, so one alternation does
        # what pathspec's loop over the patterns does, ~5x faster (a third of a rescan's time).
        self.any: re.Pattern[str] | None = None
        active = [p for p in self.spec.patterns if p.include is not None]
        if active and all(isinstance(p, RegexPattern) and p.include for p in active):
            sources = [p.regex.pattern for p in active if isinstance(p, RegexPattern) and p.regex]
            with contextlib.suppress(re.error):
                # The patterns share a named group; as plain groups they combine.
                self.any = re.compile(
                    "|".join(f"(?:{r})" for r in sources).replace("(?P<ps_d>", "(?:")
                )

    def __call__(self, path: str) -> bool:
        if self.any is not None:
            return self.any.search(path) is not None
        return self.spec.match_file(path)


def _read_ignore_file(root: str) -> list[str]:
    try:
        fd = os.open(os.path.join(root, IGNORE_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # absent, or a symlink (ELOOP): not read
        return []
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return []
        return f.read().decode("utf-8", "surrogateescape").splitlines()


def _hash_fd(fd: int, size_hint: int) -> tuple[str, int]:
    """sha256 and length of what is read from ``fd`` to its end, 1 MiB at a time."""
    digest = hashlib.sha256()
    # Sized to the file: a 1 MiB buffer per small file costs more than hashing it.
    buf = bytearray(min(CHUNK, size_hint + 1))
    view = memoryview(buf)
    total = 0
    while n := os.readv(fd, [buf]):
        digest.update(view[:n])
        total += n
    return digest.hexdigest(), total


class _NotRegular(Exception):
    pass


def _hash_file(path: str) -> tuple[str, int, os.stat_result, bool]:
    """(sha256, bytes read, stat before reading, whether the file held still while read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symlink since it was listed
            raise _NotRegular from exc
        raise
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise _NotRegular
        digest, size = _hash_fd(fd, before.st_size)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    still = (size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )
    return digest, size, before, still


def _try_hash(path: str) -> tuple[str, int, os.stat_result, bool] | Exception:
    """:func:`_hash_file`, or the exception if the file vanished or is no longer regular."""
    # Sequential on purpose: on 2 cores a thread pool was slower for small files (GIL handoffs)
    # and no faster for large ones (OpenSSL hashes ~1 GB/s, near the page cache's read speed).
    try:
        return _hash_file(path)
    except (FileNotFoundError, _NotRegular) as exc:
        return exc


def _root_id(root: str) -> list[Any]:
    st = os.stat(root)
    return [os.path.realpath(root), st.st_dev, st.st_ino]


def _load_stat_cache(path: Path, root_id: list[Any]) -> dict[str, _CacheEntry]:
    """The cache for this workspace, or nothing if it is absent, corrupt or someone else's."""
    try:
        doc = msgpack.unpackb(path.read_bytes(), unicode_errors="surrogateescape")
    except Exception:  # unreadable or corrupt (msgpack raises several kinds): start afresh
        return {}
    if not isinstance(doc, dict) or doc.get("v") != _CACHE_VERSION or doc.get("root") != root_id:
        return {}
    entries = doc.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save_stat_cache(path: Path, root_id: list[Any], entries: dict[str, _CacheEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = msgpack.packb(
        {"v": _CACHE_VERSION, "root": root_id, "entries": entries}, unicode_errors="surrogateescape"
    )
    # No fsync: a torn file fails to unpack and is ignored, which costs a full re-hash only.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".stat-cache.")
    try:
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _symlink_entry(path: str, st: os.stat_result, dir_fd: int | None = None) -> dict[str, Any]:
    target = os.readlink(path, dir_fd=dir_fd)
    raw = os.fsencode(target)
    return {
        "type": "symlink",
        "target": target,
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "mode": st.st_mode,
    }


def _ancestors(rel: str) -> Iterable[str]:
    i = rel.find("/")
    while i != -1:
        yield rel[:i]
        i = rel.find("/", i + 1)


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass
class Tree:
    """What a scan saw besides its manifest, kept in memory so that the next scan may start
    from it and look only at the paths a change journal names (:mod:`agenthub.agent.rescan`)."""

    root_id: list[Any]
    ignore: _Ignore
    skip: set[str]  # the state directory, when it lies inside the workspace
    dirs: dict[str, tuple[int, int]] = field(default_factory=dict)  # walked: (mode, inode)
    cache: dict[str, _CacheEntry] = field(default_factory=dict)  # the stat cache as saved
    # Regular files with more than one link: a write through another name raises no event for
    # this one, so they too are looked at again every time.
    linked: set[str] = field(default_factory=set)
    empty: set[str] = field(default_factory=set)  # directories the manifest records as such
    rewalk: set[str] = field(default_factory=set)  # directories to walk again next time
    unsaved: bool = False  # ``cache`` is newer than the stat cache file (see :func:`save_cache`)


@dataclass
class ScanResult:
    manifest: Manifest
    hashed: int  # regular files whose content was read (stat cache misses)
    bytes_hashed: int
    total_size: int  # bytes in regular files
    file_count: int  # regular files
    tree: Tree | None = None  # what the next scan may start from (taken over by a rescan)
    journal: bool = False  # only what a change journal named was looked at (a rescan)


def _skip_of(real_root: str, state_dir: Path) -> set[str]:
    """The state directory relative to the workspace, when it lies inside it (never scanned)."""
    skip: set[str] = set()
    with contextlib.suppress(OSError):
        rel_state = os.path.relpath(os.path.realpath(state_dir), real_root)
        if not rel_state.startswith(".."):
            skip.add(rel_state.replace(os.sep, "/"))
    return skip


def new_tree(root: str, state_dir: Path) -> Tree:
    """An empty :class:`Tree` for ``root``: its identity, ignore rules and skipped state dir."""
    root_id = _root_id(root)
    return Tree(root_id, _Ignore(_read_ignore_file(root)), _skip_of(root_id[0], state_dir))


def save_cache(tree: Tree, state_dir: Path) -> None:
    """Write the tree's stat cache for the next full scan. A stale file is only slower, never
    wrong: an entry is trusted only while a file's stat, ctime included, is what it records."""
    _save_stat_cache(state_dir / STAT_CACHE_FILE, tree.root_id, tree.cache)
    tree.unsaved = False


def scan(workspace: Path, *, state_dir: Path) -> ScanResult:
    """Manifest of ``workspace``, reading only files whose stat changed since the last scan."""
    root = os.fspath(workspace)
    started = time.time_ns()
    tree = new_tree(root, state_dir)
    cache_path = state_dir / STAT_CACHE_FILE
    cache = _load_stat_cache(cache_path, tree.root_id)
    manifest: Manifest = {}
    to_hash: list[str] = []
    walk(root, [""], tree, cache, manifest, to_hash)
    hashed, bytes_hashed = hash_files(root, to_hash, manifest, tree, started)
    tree.empty = record_empty_dirs(manifest, tree.dirs)
    if tree.cache != cache:  # an unchanged workspace rewrites nothing
        _save_stat_cache(cache_path, tree.root_id, tree.cache)
    return result_of({rel: manifest[rel] for rel in sorted(manifest)}, hashed, bytes_hashed, tree)


def walk(
    root: str,
    stack: list[str],
    tree: Tree,
    cache: dict[str, _CacheEntry],
    manifest: Manifest,
    to_hash: list[str],
    on_dir: Callable[[str, int], object] | None = None,
) -> None:
    """Walk the directories in ``stack`` (relative; ``""`` is the root) and everything under
    them: links, and files whose stat matches ``cache``, into ``manifest`` (and their cache
    entries into ``tree.cache``); other files into ``to_hash``; directories into ``tree.dirs``.
    ``on_dir(rel, fd)`` is called with each directory opened, before it is listed.

    One pass: the stat of every entry is compared with the cache as the walk finds it. This
    loop runs once per file of the workspace, so it is kept to plain local operations, and each
    directory is listed through a descriptor so that every lstat resolves one name rather than
    the whole path (a fifth of a rescan's time).
    """
    is_ignored: Callable[[str], object] = (
        tree.ignore.any.search if tree.ignore.any is not None else tree.ignore.spec.match_file
    )
    cached = cache.get
    new_cache = tree.cache
    dirs = tree.dirs
    relink = tree.linked.add
    skip = tree.skip
    digest_ok = _DIGEST.fullmatch
    while stack:
        rel_dir = stack.pop()
        prefix = rel_dir + "/" if rel_dir else ""
        try:
            # A directory replaced by a symlink since it was listed is not entered (the
            # workspace itself may be a symlink).
            dir_fd = os.open(
                os.path.join(root, rel_dir) if rel_dir else root,
                _OPEN_DIR | os.O_NOFOLLOW if rel_dir else _OPEN_DIR,
            )
        except (FileNotFoundError, NotADirectoryError):  # vanished or replaced during the walk
            continue
        except OSError as exc:
            if exc.errno != errno.ELOOP or not rel_dir:
                raise
            continue
        try:
            if on_dir is not None:
                on_dir(rel_dir, dir_fd)
            with os.scandir(dir_fd) as it:
                for entry in it:
                    rel = prefix + entry.name
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    mode = st.st_mode
                    if S_ISREG(mode):
                        if is_ignored(rel):
                            continue
                        if st.st_nlink > 1:
                            relink(rel)
                        hit = cached(rel)
                        if (  # cache_hit's test, inline: this runs once per file
                            type(hit) is list
                            and len(hit) == 5
                            and hit[0] == st.st_size
                            and hit[1] == st.st_mtime_ns
                            and hit[2] == st.st_ino
                            and hit[3] == st.st_ctime_ns
                            and type(digest := hit[4]) is str
                            and digest_ok(digest)
                        ):
                            manifest[rel] = {
                                "size": st.st_size,
                                "sha256": digest,
                                "mode": mode & 0o7777,
                            }
                            new_cache[rel] = hit
                        else:
                            to_hash.append(rel)
                    elif S_ISDIR(mode):
                        if rel in skip or is_ignored(rel + "/"):
                            continue
                        dirs[rel] = (mode & 0o7777, st.st_ino)
                        stack.append(rel)
                    elif S_ISLNK(mode) and not is_ignored(rel):
                        with contextlib.suppress(OSError):
                            manifest[rel] = _symlink_entry(entry.name, st, dir_fd)
        finally:
            os.close(dir_fd)


def cache_hit(hit: object, st: os.stat_result) -> str | None:
    """The cached digest when ``hit`` (a stat cache entry) still describes ``st``.

    The full walk makes the same test inline (it runs once per file there); change both."""
    if (
        type(hit) is list
        and len(hit) == 5
        and hit[0] == st.st_size
        and hit[1] == st.st_mtime_ns
        and hit[2] == st.st_ino
        and hit[3] == st.st_ctime_ns
        and type(digest := hit[4]) is str
        and _DIGEST.fullmatch(digest)
    ):
        return digest
    return None


def hash_files(
    root: str, to_hash: list[str], manifest: Manifest, tree: Tree, started: int
) -> tuple[int, int]:
    """Hash ``to_hash`` into ``manifest`` (a file that vanished or became a link since it was
    listed is dropped, or recorded as the link); cache entries only for files that held still
    and are older than the racy window before ``started``. (files hashed, bytes read)"""
    hashed = bytes_hashed = 0
    racy_after = started - RACY_WINDOW_NS
    cache, linked = tree.cache, tree.linked
    for rel in to_hash:
        path = os.path.join(root, rel)
        result = _try_hash(path)
        if isinstance(result, Exception):  # gone, or replaced (by a link?) since it was listed
            manifest.pop(rel, None)
            cache.pop(rel, None)
            linked.discard(rel)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    manifest[rel] = _symlink_entry(path, st)
            continue
        digest, size, st, still = result
        hashed += 1
        bytes_hashed += size
        manifest[rel] = {"size": size, "sha256": digest, "mode": stat.S_IMODE(st.st_mode)}
        if still and max(st.st_mtime_ns, st.st_ctime_ns) < racy_after:
            cache[rel] = [size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest]
        else:
            cache.pop(rel, None)
        if st.st_nlink > 1:
            linked.add(rel)
    return hashed, bytes_hashed


def record_empty_dirs(manifest: Manifest, dirs: dict[str, tuple[int, int]]) -> set[str]:
    """Add a record for each directory with nothing recorded under it; their paths.

    Deepest first, so that a directory holding only an empty directory is implied by it."""
    covered = {rel.rpartition("/")[0] for rel in manifest}
    recorded: set[str] = set()
    for rel in sorted(dirs, key=lambda r: r.count("/"), reverse=True):
        if rel not in covered:
            manifest[rel] = {"type": "dir", "mode": dirs[rel][0], "size": 0, "sha256": ""}
            recorded.add(rel)
        covered.add(rel.rpartition("/")[0])
    return recorded


def result_of(manifest: Manifest, hashed: int, bytes_hashed: int, tree: Tree) -> ScanResult:
    total_size = file_count = 0
    for e in manifest.values():
        if "type" not in e:
            total_size += e["size"]
            file_count += 1
    return ScanResult(
        manifest=manifest,
        hashed=hashed,
        bytes_hashed=bytes_hashed,
        total_size=total_size,
        file_count=file_count,
        tree=tree,
    )
