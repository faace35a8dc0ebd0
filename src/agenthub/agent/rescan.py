"""A scan that looks only at what changed: the manifest a full :func:`~agenthub.agent.snapshot.scan`
would produce now, built from the previous scan's result and the paths a change journal
(:mod:`agenthub.agent.journal`) recorded since that scan.

The previous result's :class:`~agenthub.agent.snapshot.Tree` says which directories the walk saw
(with their inodes) and holds the stat cache. Each named path is looked at again with ``lstat``
through its parent directory's descriptor, as the full walk does, and judged by the same rules:

- gone, ignored, or a socket/FIFO/device: dropped, and if it was a directory, everything that was
  recorded under it too;
- a regular file: taken from the stat cache when ``(size, mtime_ns, ino, ctime_ns)`` still match,
  otherwise hashed (and cached only outside the racy window);
- a symlink: recorded, never followed;
- a directory: when it is the same directory (same inode) only its mode is taken again; a new or
  different one (or one the journal says was created or moved in) is walked afresh with the full
  walk's own loop, and whatever was recorded under its path before is dropped.

Files written within the racy window of the last scan are not in the stat cache (a later full
walk hashes them again), but a rescan does not look at them again unless named: a write after
the journal was read raises an event that the next rescan gets, whatever the timestamps say.
Files with several links (the tree's ``linked``) are looked at every time: a write through
another name raises no event in this one's directory. A regular file found with several links
that was not known as linked (a link made since the last scan, whose other name may be
anywhere) makes the rescan walk fully instead. Empty directories are recorded again only when
the set of paths changed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import Any

from agenthub.agent.snapshot import (
    _OPEN_DIR,
    IGNORE_FILE,
    Manifest,
    ScanResult,
    Tree,
    _ancestors,
    _root_id,
    _symlink_entry,
    cache_hit,
    hash_files,
    record_empty_dirs,
    result_of,
    save_cache,
    scan,
    walk,
)


@dataclass
class Changes:
    """Paths (relative to the workspace) that changed since a scan, as a journal recorded them."""

    files: set[str] = field(default_factory=set)  # look at this name again
    subtrees: set[str] = field(default_factory=set)  # a directory made or moved in: walk it


def rescan(
    workspace: Path,
    previous: ScanResult,
    changes: Changes,
    *,
    state_dir: Path,
    watch: Callable[[str, int], object] | None = None,
    save: bool = True,
) -> ScanResult:
    """What :func:`~agenthub.agent.snapshot.scan` would give now, looking only at ``changes``.

    ``previous`` is the last scan of this workspace, and ``changes`` must hold every path changed
    since it was taken; its tree is taken over (and left as ``None``), so a result serves one
    rescan. ``watch(rel, fd)`` is called for each directory walked afresh, before it is listed
    (a journal watches it). With ``save`` False the stat cache is only kept in the result's tree
    (``tree.unsaved``; :func:`~agenthub.agent.snapshot.save_cache` writes it). Falls back to a full
    scan when ``previous`` has no tree, the workspace is no longer the same directory, or its
    ignore rules changed.
    """
    root = os.fspath(workspace)
    tree = previous.tree
    if (
        tree is None
        or IGNORE_FILE in changes.files
        or IGNORE_FILE in changes.subtrees
        or _root_id(root) != tree.root_id
    ):
        return scan(workspace, state_dir=state_dir)
    previous.tree = None
    return _Rescan(root, tree, dict(previous.manifest)).run(changes, state_dir, watch, save)


def _outermost(paths: Iterable[str]) -> set[str]:
    """``paths`` without those under another of them."""
    kept: set[str] = set()
    for rel in sorted(paths, key=lambda r: r.count("/")):
        if not any(a in kept for a in _ancestors(rel)):
            kept.add(rel)
    return kept


class _Rescan:
    def __init__(self, root: str, tree: Tree, manifest: Manifest) -> None:
        self.root, self.tree, self.manifest = root, tree, manifest
        self.structural = False  # a path was added or removed: empty directories change
        self.cache_changed = False
        self.purge: list[str] = []  # "dir/" of directories dropped: all under them goes too
        self.gone: set[str] = set()  # directories dropped or walked afresh by this scan
        self.fresh: list[str] = []  # directories to walk afresh
        self.to_hash: list[str] = []

    def run(
        self,
        changes: Changes,
        state_dir: Path,
        watch: Callable[[str, int], object] | None,
        save: bool,
    ) -> ScanResult:
        started = time.time_ns()
        tree = self.tree
        subtrees = _outermost(changes.subtrees | tree.rewalk)
        items = dict.fromkeys(subtrees, True)
        for rel in (*changes.files, *tree.linked):
            if rel not in items and not any(a in subtrees for a in _ancestors(rel)):
                items[rel] = False
        linked_before = tree.linked
        tree.rewalk, tree.linked = set(), set(linked_before)
        groups: dict[str, list[tuple[str, bool]]] = {}
        for rel, fresh in items.items():
            parent, _, name = rel.rpartition("/")
            groups.setdefault(parent, []).append((name, fresh))
        # Shallow first: a directory is judged before anything named under it.
        for parent in sorted(groups, key=lambda p: p.count("/") if p else -1):
            self._group(parent, groups[parent])
        self._purge(self.manifest, tree.dirs)
        manifest = self.manifest
        if self.fresh:
            self.structural = True
            walk(self.root, self.fresh, tree, tree.cache, manifest, self.to_hash, watch)
        if not tree.linked <= linked_before:
            # A new link to some file: its other name, anywhere in the workspace, may have
            # been written through it with no event of its own.
            return scan(Path(self.root), state_dir=state_dir)
        to_hash = self.to_hash
        if any(rel not in manifest for rel in to_hash):
            self.structural = True
        hashed, bytes_hashed = hash_files(self.root, to_hash, manifest, tree, started)
        if any(rel not in manifest for rel in to_hash):
            self.structural = True
        if self.purge:  # cache entries of what was under a dropped directory and is not back
            prefixes = tuple(self.purge)
            for rel in [r for r in tree.cache if r.startswith(prefixes) and r not in manifest]:
                del tree.cache[rel]
            self.cache_changed = True
        if self.structural:
            for rel in tree.empty:
                entry = manifest.get(rel)
                if entry is not None and entry.get("type") == "dir":
                    del manifest[rel]
            tree.empty = record_empty_dirs(manifest, tree.dirs)
            manifest = {rel: manifest[rel] for rel in sorted(manifest)}
        if self.cache_changed or to_hash:
            tree.unsaved = True
        if save and tree.unsaved:
            save_cache(tree, state_dir)
        result = result_of(manifest, hashed, bytes_hashed, tree)
        result.journal = True
        return result

    def _drop(self, rel: str) -> None:
        """``rel`` is no longer recorded, nor anything under it if it was a directory."""
        tree = self.tree
        if self.manifest.pop(rel, None) is not None:
            self.structural = True
        if tree.cache.pop(rel, None) is not None:
            self.cache_changed = True
        tree.linked.discard(rel)
        if rel in tree.dirs:
            del tree.dirs[rel]
            self.purge.append(rel + "/")
            self.gone.add(rel)
            self.structural = True

    def _purge(self, *recorded: dict[str, Any]) -> None:
        if not self.purge:
            return
        prefixes = tuple(self.purge)
        for d in recorded:
            for rel in [r for r in d if r.startswith(prefixes)]:
                del d[rel]
        tree = self.tree
        tree.linked = {r for r in tree.linked if not r.startswith(prefixes)}

    def _group(self, parent: str, names: list[tuple[str, bool]]) -> None:
        tree = self.tree
        prefix = parent + "/" if parent else ""
        if parent and (
            parent not in tree.dirs
            or parent in self.gone
            or any(a in self.gone for a in _ancestors(parent))
        ):
            # Under a directory walked afresh (which covers them), dropped (which drops them),
            # or not one the walk enters (ignored, or never a directory): nothing to look at.
            return
        try:
            fd = os.open(
                os.path.join(self.root, parent) if parent else self.root,
                _OPEN_DIR | os.O_NOFOLLOW if parent else _OPEN_DIR,
            )
        except OSError:
            if not parent:
                raise
            # Replaced or removed since the journal was read: the change that did it is in the
            # journal's next batch; until then it is looked at again next time in any case.
            self._drop(parent)
            tree.rewalk.add(parent)
            return
        try:
            for name, fresh in names:
                self._one(fd, prefix + name, name, fresh)
        finally:
            os.close(fd)

    def _one(self, fd: int, rel: str, name: str, fresh: bool) -> None:
        """Look at ``rel`` (``name`` in the directory open as ``fd``) again."""
        tree = self.tree
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            self._drop(rel)
            return
        mode = st.st_mode
        if S_ISDIR(mode):
            if rel in tree.skip or tree.ignore(rel + "/"):
                self._drop(rel)
                return
            now = (mode & 0o7777, st.st_ino)
            before = tree.dirs.get(rel)
            if fresh or before is None or before[1] != st.st_ino:
                self._drop(rel)
                tree.dirs[rel] = now
                self.gone.add(rel)
                self.fresh.append(rel)
                self.structural = True
            elif before != now:
                tree.dirs[rel] = now
                if rel in tree.empty:
                    self.manifest[rel] = {"type": "dir", "mode": now[0], "size": 0, "sha256": ""}
            return
        if rel in tree.dirs:  # a directory replaced by a file or a link
            self._drop(rel)
        manifest = self.manifest
        if S_ISREG(mode) and not tree.ignore(rel):
            if st.st_nlink > 1:
                tree.linked.add(rel)
            else:
                tree.linked.discard(rel)
            digest = cache_hit(tree.cache.get(rel), st)
            if digest is None:
                if tree.cache.pop(rel, None) is not None:
                    self.cache_changed = True
                self.to_hash.append(rel)
                return
            if rel not in manifest:
                self.structural = True
            manifest[rel] = {"size": st.st_size, "sha256": digest, "mode": mode & 0o7777}
        elif S_ISLNK(mode) and not tree.ignore(rel):
            try:
                entry = _symlink_entry(name, st, fd)
            except OSError:  # gone again
                self._drop(rel)
                return
            if rel not in manifest:
                self.structural = True
            manifest[rel] = entry
        else:  # ignored, or a socket, FIFO or device: skipped, as by the full walk
            self._drop(rel)
