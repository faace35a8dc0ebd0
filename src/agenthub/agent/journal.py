"""A workspace's change journal: which paths changed since the last scan, from Linux inotify, so
that a checkpoint taken while a machine runs looks only at those instead of walking the whole
workspace (what git's fsmonitor gets from watchman).

Every directory the scan would enter is watched (ignored ones and the state directory are not).
An event names an entry of a watched directory and goes into a
:class:`~agenthub.agent.rescan.Changes`: a directory made or moved in as a subtree to walk (its
watch can only be added once it exists, so what was made in it before that is known only by
walking it; :func:`~agenthub.agent.rescan.rescan` walks it and calls :meth:`ChangeJournal.watch`
for each of its directories before listing it), anything else as a name to look at again.
Watches are kept as a tree (watch → parent watch, name), so a directory moved inside the
workspace keeps its watches; one moved out of it is no longer reachable and its watches are
removed at the next :meth:`take`.

Start the journal before the scan the next one is compared with: a change made after a
directory's watch was added is in the journal, one made before is in that scan. Drain it often
(:meth:`drain`, from an event loop's reader): the kernel queues at most
``fs.inotify.max_queued_events`` events (16384 by default) and a busy workspace overflows that.
:meth:`take` drains once more and hands over what was recorded; what happens after that belongs
to the next take (looking at a path twice is harmless).

The journal becomes invalid — :meth:`take` returns None, and its owner walks fully and starts a
new one — when the kernel's queue overflowed, a watch could not be added (``ENOSPC`` past
``fs.inotify.max_user_watches``), the workspace root was deleted, moved, unmounted or replaced,
an event names a watch it does not know, more than ``max_dirty`` paths are pending, the ignore
rules (``.agenthubignore``) changed, or anything unexpected happened.

Not seen by inotify: writes through a shared ``mmap`` (no event until the mapping goes, and
then only if the file was opened for writing), and writes through a hard link whose other name
is outside the watched directories (the event goes to the directory of the name written
through). A rescan looks again at every file that had several links when last seen, and walks
fully when it finds a new one; what remains is why the checkpoint that ends a machine always
walks fully.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inotify_simple import INotify, flags  # type: ignore[import-untyped]

from agenthub.agent.rescan import Changes
from agenthub.agent.snapshot import _OPEN_DIR, IGNORE_FILE, new_tree

MASK = (
    flags.MODIFY
    | flags.ATTRIB
    | flags.CLOSE_WRITE
    | flags.CREATE
    | flags.DELETE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.ONLYDIR
    | flags.EXCL_UNLINK
)
MAX_DIRTY = 100_000  # pending paths past which a full walk is cheaper than keeping them
_READS_PER_DRAIN = 64  # a writer faster than the drain must not hold the event loop forever
_MAX_DEPTH = 4096
_NEW_DIR = flags.CREATE | flags.MOVED_TO
_SELF_GONE = flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT
_PROC_FD = "/proc/self/fd"


class _Lost(Exception):
    """The journal can no longer tell everything that changed."""


class ChangeJournal:
    """The changes under one workspace since the last :meth:`take`. Thread-safe: events may be
    drained on an event loop while a scan in another thread adds watches."""

    def __init__(self, workspace: Path, *, state_dir: Path, max_dirty: int = MAX_DIRTY) -> None:
        self.root = os.fspath(workspace)
        self.error: str | None = "not started"  # why the journal is not valid
        self.events = 0  # events read so far
        self._state_dir = state_dir
        self._max_dirty = max_dirty
        self._lock = threading.Lock()
        self._inotify: Any = None  # an inotify_simple.INotify while open
        self._root_wd = -1
        self._root_key: tuple[int, int] = (0, 0)
        # wd -> (parent wd, name); parent None once moved away from its parent.
        self._nodes: dict[int, tuple[int | None, str]] = {}
        self._child: dict[tuple[int, str], int] = {}
        self._retired: set[int] = set()  # removed by us; their last events are still queued
        self._unreachable = False  # some watch may hang under no watched directory any more
        self._files: set[str] = set()
        self._subtrees: set[str] = set()
        self._by_fd = os.path.isdir(_PROC_FD)
        self._ignore: Callable[[str], bool] = lambda _: False
        self._skip: set[str] = set()

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def watches(self) -> int:
        return len(self._nodes)

    def fileno(self) -> int:
        """The inotify descriptor (readable when events wait); -1 when closed."""
        return -1 if self._inotify is None else int(self._inotify.fileno())

    def start(self) -> None:
        """Watch every directory a scan would enter; afterwards ``valid`` says whether that
        worked (and ``error`` why not). Run it before the scan that the first :meth:`take` is
        to be compared with."""
        with self._lock:
            if self._inotify is not None:
                raise RuntimeError("the journal was already started")
            self.error = None
            try:
                tree = new_tree(self.root, self._state_dir)
                self._ignore, self._skip = tree.ignore, tree.skip
                self._inotify = INotify(nonblocking=True)
                self._watch_all()
            except Exception as err:
                self._invalidate(f"cannot watch the workspace: {err}")

    def drain(self) -> None:
        """Read the events that wait and record what they name (never raises)."""
        with self._lock:
            if self._inotify is None:
                return
            try:
                self._drain()
            except Exception as err:
                self._invalidate(f"reading events failed: {err!r}")

    def take(self) -> Changes | None:
        """Everything changed since the last take (or since :meth:`start`), or None when the
        journal cannot tell (see ``error``)."""
        with self._lock:
            if self._inotify is not None and self.error is None:
                try:
                    self._drain()
                    self._check_root()
                    self._prune()
                except Exception as err:
                    self._invalidate(str(err))
            if self.error is not None:
                return None
            changes = Changes(self._files, self._subtrees)
            self._files, self._subtrees = set(), set()
            return changes

    def watch(self, rel: str, fd: int) -> None:
        """Watch the directory ``rel``, open as ``fd`` (a scan calls this before listing a
        directory it walks afresh). A failure makes the journal invalid; it never raises."""
        if not rel:
            return
        with self._lock:
            if self._inotify is None or self.error is not None:
                return
            try:
                self._watch(rel, fd)
            except Exception as err:
                self._invalidate(f"cannot watch {rel!r}: {err}")

    def close(self) -> None:
        with self._lock:
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
            if self.error is None:
                self.error = "closed"
            self._nodes.clear()
            self._child.clear()

    # Everything below runs with the lock held.

    def _invalidate(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self._files, self._subtrees = set(), set()

    def _add(self, fd: int, rel: str) -> int:
        # Through the descriptor the scan opened (with O_NOFOLLOW below the root), so the watch
        # is on the very directory that is listed, wherever a concurrent rename moved it.
        if self._by_fd:
            wd = self._inotify.add_watch(f"{_PROC_FD}/{fd}", MASK)
        else:
            path = os.path.join(self.root, rel) if rel else self.root
            wd = self._inotify.add_watch(path, MASK | (flags.DONT_FOLLOW if rel else 0))
        return int(wd)

    def _watch_all(self) -> None:
        fd = os.open(self.root, _OPEN_DIR)
        try:
            st = os.fstat(fd)
            self._root_key = (st.st_dev, st.st_ino)
            self._root_wd = self._add(fd, "")
            self._nodes[self._root_wd] = (-1, "")
            stack: list[str] = []
            self._list_dirs("", fd, stack)
        finally:
            os.close(fd)
        while stack:
            rel = stack.pop()
            try:
                fd = os.open(os.path.join(self.root, rel), _OPEN_DIR | os.O_NOFOLLOW)
            except OSError:
                continue  # gone or replaced: its parent's watch has the event
            try:
                self._watch(rel, fd)
                self._list_dirs(rel, fd, stack)
            finally:
                os.close(fd)

    def _list_dirs(self, rel: str, fd: int, stack: list[str]) -> None:
        prefix = rel + "/" if rel else ""
        with os.scandir(fd) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    sub = prefix + entry.name
                    if sub not in self._skip and not self._ignore(sub + "/"):
                        stack.append(sub)

    def _watch(self, rel: str, fd: int) -> None:
        parent, _, name = rel.rpartition("/")
        parent_wd = self._wd_of(parent)
        if parent_wd is None:
            raise _Lost(f"the parent of {rel!r} is not watched")
        self._attach(self._add(fd, rel), parent_wd, name)

    def _wd_of(self, rel: str) -> int | None:
        wd = self._root_wd
        if rel:
            for part in rel.split("/"):
                child = self._child.get((wd, part))
                if child is None:
                    return None
                wd = child
        return wd

    def _attach(self, wd: int, parent_wd: int, name: str) -> None:
        old = self._nodes.get(wd)  # the same directory, seen before under another name
        if old is not None and old[0] is not None and self._child.get((old[0], old[1])) == wd:
            del self._child[(old[0], old[1])]
        previous = self._child.get((parent_wd, name))
        if previous is not None and previous != wd:
            self._detach(previous)
        self._nodes[wd] = (parent_wd, name)
        self._child[(parent_wd, name)] = wd
        self._retired.discard(wd)

    def _detach(self, wd: int) -> None:
        node = self._nodes.get(wd)
        if node is None:
            return
        if node[0] is not None and self._child.get((node[0], node[1])) == wd:
            del self._child[(node[0], node[1])]
        self._nodes[wd] = (None, node[1])
        self._unreachable = True

    def _forget(self, wd: int) -> None:
        self._retired.discard(wd)
        node = self._nodes.pop(wd, None)
        if node is not None and node[0] is not None and self._child.get((node[0], node[1])) == wd:
            del self._child[(node[0], node[1])]
        self._unreachable = True

    def _path(self, wd: int) -> str | None:
        """Where the directory of watch ``wd`` is now; None if no longer under the root."""
        parts: list[str] = []
        for _ in range(_MAX_DEPTH):
            if wd == self._root_wd:
                return "/".join(reversed(parts))
            node = self._nodes.get(wd)
            if node is None or node[0] is None:
                return None
            parts.append(node[1])
            wd = node[0]
        raise _Lost("the watches' parents form a loop")

    def _drain(self) -> None:
        if self.error is not None:
            # Still read, so that the descriptor does not stay readable for an event loop.
            for _ in range(_READS_PER_DRAIN):
                if not self._inotify.read(timeout=0):
                    return
            return
        for _ in range(_READS_PER_DRAIN):
            events = self._inotify.read(timeout=0)
            if not events:
                return
            self.events += len(events)
            try:
                self._record(events)
            except _Lost as lost:
                self._invalidate(str(lost))
            if self.error is not None:
                return

    def _record(self, events: list[tuple[int, int, int, str]]) -> None:
        nodes, files, subtrees = self._nodes, self._files, self._subtrees
        ignore, skip, root_wd = self._ignore, self._skip, self._root_wd
        paths: dict[int, str | None] = {}
        for wd, mask, _cookie, name in events:
            if mask & flags.Q_OVERFLOW:
                raise _Lost("the kernel's event queue overflowed")
            if mask & flags.IGNORED:
                if wd == root_wd:
                    raise _Lost("the workspace root is no longer watched")
                self._forget(wd)
                paths.clear()
                continue
            if mask & _SELF_GONE:
                if wd == root_wd or mask & flags.UNMOUNT:
                    raise _Lost("the workspace root was deleted, moved or unmounted")
                continue  # the directory's parent names it
            if not name:
                continue  # about a watched directory itself: its parent's watch names it
            if wd not in nodes:
                if wd in self._retired:
                    continue
                raise _Lost(f"an event came for an unknown watch ({wd})")
            base = paths[wd] if wd in paths else paths.setdefault(wd, self._path(wd))
            if base is None:
                continue  # in a directory moved away: its new place is walked afresh
            rel = f"{base}/{name}" if base else name
            if rel == IGNORE_FILE:
                raise _Lost("the ignore rules changed")
            is_dir = mask & flags.ISDIR
            if rel in skip or ignore(rel + "/" if is_dir else rel):
                continue
            if is_dir and mask & _NEW_DIR:
                subtrees.add(rel)
            else:
                files.add(rel)
                if is_dir and mask & flags.MOVED_FROM:
                    moved = self._child.get((wd, name))
                    if moved is not None:
                        self._detach(moved)
                        paths.clear()
            if len(files) + len(subtrees) > self._max_dirty:
                raise _Lost(f"more than {self._max_dirty} paths changed")

    def _check_root(self) -> None:
        try:
            st = os.stat(self.root)
        except OSError as err:
            raise _Lost(f"the workspace root is gone: {err}") from err
        if (st.st_dev, st.st_ino) != self._root_key:
            raise _Lost("the workspace root was replaced")

    def _prune(self) -> None:
        """Stop watching directories that are no longer under the root (moved out of it)."""
        if not self._unreachable:
            return
        for wd in [wd for wd in self._nodes if wd != self._root_wd and self._path(wd) is None]:
            node = self._nodes.pop(wd)
            if node[0] is not None and self._child.get((node[0], node[1])) == wd:
                del self._child[(node[0], node[1])]
            with contextlib.suppress(OSError):  # already gone with its directory
                self._inotify.rm_watch(wd)
            self._retired.add(wd)  # either way an IN_IGNORED for it is still to come
        self._unreachable = False
