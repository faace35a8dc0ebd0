"""The change journal and the scans it drives, on real files with real inotify: after any mix of
changes a rescan from the journal gives exactly the manifest of a fresh full walk, and whatever
the journal cannot vouch for makes it invalid (the caller then walks fully)."""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agenthub.agent.checkpoints import Snapshots
from agenthub.agent.journal import ChangeJournal
from agenthub.agent.rescan import Changes, rescan
from agenthub.agent.snapshot import STAT_CACHE_FILE, ScanResult, scan
from agenthub.client.node import NodeClient
from tests.agent.snapshot_support import file_digests, past_racy_window, sha256sum


class Journalled:
    """A journal started before its baseline full scan, and the rescans that follow."""

    def __init__(self, ws: Path, state: Path, **options: Any) -> None:
        self.ws, self.state = ws, state
        self.journal = ChangeJournal(ws, state_dir=state, **options)
        self.journal.start()
        assert self.journal.valid, self.journal.error
        self.last = scan(ws, state_dir=state)
        self.fulls = 0

    def rescan(self) -> ScanResult:
        changes = self.journal.take()
        assert changes is not None, self.journal.error
        self.last = rescan(
            self.ws, self.last, changes, state_dir=self.state, watch=self.journal.watch
        )
        return self.last

    def full(self) -> ScanResult:
        """A fresh full walk with a stat cache of its own (it hashes every file)."""
        self.fulls += 1
        return scan(self.ws, state_dir=self.state.parent / f"full-{self.fulls}")

    def close(self) -> None:
        self.journal.close()


@pytest.fixture
def journalled(tmp_path: Path) -> Iterator[Journalled]:
    ws = tmp_path / "ws"
    for i in range(60):
        d = ws / f"d{i % 6}" / f"e{i // 6 % 2}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(os.urandom(i * 7 % 300))
    (ws / ".agenthubignore").write_text("*.log\nbuild/\n")
    (ws / "empty").mkdir()
    past_racy_window()  # the baseline caches every file: a missed change would go unnoticed
    j = Journalled(ws, tmp_path / "state")
    yield j
    j.close()


def queue_limit() -> int:
    """How many events the kernel queues per inotify instance before it overflows."""
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def assert_same(result: ScanResult, full: ScanResult) -> None:
    assert result.manifest == full.manifest
    assert list(result.manifest) == list(full.manifest)  # the same order, too
    assert (result.file_count, result.total_size) == (full.file_count, full.total_size)


class Mutator:
    """Random changes of every kind a workload makes, inside one workspace."""

    def __init__(self, ws: Path, outside: Path, rng: random.Random) -> None:
        self.ws, self.outside, self.rng = ws, outside, rng
        self.made = 0

    def _name(self, stem: str) -> str:
        self.made += 1
        return f"{stem}{self.made}"

    def _entries(self) -> tuple[list[Path], list[Path], list[Path]]:
        """(regular files, symlinks, directories) under the workspace, ignore file aside."""
        files, links, dirs = [], [], []
        for top, subdirs, names in os.walk(self.ws):
            for name in subdirs:
                p = Path(top) / name
                (links if p.is_symlink() else dirs).append(p)
            for name in names:
                p = Path(top) / name
                if p.is_symlink():
                    links.append(p)
                elif p.name != ".agenthubignore" and p.is_file():
                    files.append(p)
        return files, links, dirs

    def _dir(self) -> Path:
        dirs = self._entries()[2]
        return self.rng.choice([self.ws, *dirs])

    def create(self) -> None:
        (self._dir() / self._name("n")).write_bytes(os.urandom(self.rng.randrange(0, 900)))

    def rewrite_same_size_same_mtime(self) -> None:
        files = self._entries()[0]
        if files:
            p = self.rng.choice(files)
            st = p.stat()
            with open(p, "r+b") as f:  # in place: same inode, same size
                f.write(os.urandom(st.st_size))
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))

    def append(self) -> None:
        files = self._entries()[0]
        if files:
            with open(self.rng.choice(files), "ab") as f:
                f.write(b"more")

    def delete(self) -> None:
        files, links, _ = self._entries()
        if files or links:
            os.unlink(self.rng.choice(files + links))

    def chmod(self) -> None:
        files, _, dirs = self._entries()
        if files:
            self.rng.choice(files).chmod(self.rng.choice([0o600, 0o644, 0o755, 0o700]))
        if dirs and self.rng.random() < 0.3:
            self.rng.choice(dirs).chmod(self.rng.choice([0o755, 0o700, 0o750]))

    def symlink(self) -> None:
        target = self.rng.choice(["d0", "../x", "no/such", "d1/e0/f1.txt", "/etc/hostname"])
        link = self._dir() / self._name("l")
        link.symlink_to(target)

    def retarget(self) -> None:
        links = self._entries()[1]
        if links:
            link = self.rng.choice(links)
            tmp = link.with_name(self._name(".tmp"))
            tmp.symlink_to(self._name("t"))
            os.replace(tmp, link)  # ln -sfn

    def deep_tree(self) -> None:
        top = self._dir() / self._name("deep")
        leaf = top.joinpath(*(self._name("x") for _ in range(self.rng.randrange(2, 5))))
        leaf.mkdir(parents=True)
        (leaf / "in-new-dir").write_text("written at once")
        (top / "top-file").write_text("top")

    def move_file(self) -> None:
        files = self._entries()[0]
        if files:
            os.replace(self.rng.choice(files), self._dir() / self._name("mv"))

    def move_dir(self) -> None:
        dirs = self._entries()[2]
        if dirs:
            src = self.rng.choice(dirs)
            dst = self._dir()
            if dst != src and src not in dst.parents:
                os.rename(src, dst / self._name("moved"))

    def dir_to_file(self) -> None:
        dirs = self._entries()[2]
        if dirs:
            d = self.rng.choice(dirs)
            shutil.rmtree(d)
            d.write_text("was a directory")

    def file_to_dir(self) -> None:
        files = self._entries()[0]
        if files:
            p = self.rng.choice(files)
            p.unlink()
            p.mkdir()
            if self.rng.random() < 0.5:
                (p / "inside").write_text("was a file")

    def empty_dirs(self) -> None:
        (self._dir() / self._name("void")).mkdir()
        empties = [d for d in self._entries()[2] if not any(d.iterdir())]
        if empties and self.rng.random() < 0.5:
            self.rng.choice(empties).rmdir()

    def ignored(self) -> None:
        d = self._dir()
        (d / self._name("noise.log")).write_text("ignored")
        (d / "__pycache__").mkdir(exist_ok=True)
        (d / "__pycache__" / self._name("m.pyc")).write_bytes(b"\0")
        (self.ws / "build" / "obj").mkdir(parents=True, exist_ok=True)
        (self.ws / "build" / "obj" / self._name("o")).write_bytes(b"\0")

    def out_and_back(self) -> None:
        dirs = self._entries()[2]
        if dirs and self.rng.random() < 0.5:
            os.rename(self.rng.choice(dirs), self.outside / self._name("away"))
        away = [p for p in self.outside.iterdir() if p.is_dir()]
        if away and self.rng.random() < 0.5:
            os.rename(self.rng.choice(away), self._dir() / self._name("back"))

    def rmtree(self) -> None:
        dirs = self._entries()[2]
        if dirs and self.rng.random() < 0.5:
            shutil.rmtree(self.rng.choice(dirs))

    OPERATIONS = (
        "create",
        "rewrite_same_size_same_mtime",
        "rewrite_same_size_same_mtime",
        "append",
        "delete",
        "chmod",
        "symlink",
        "retarget",
        "deep_tree",
        "move_file",
        "move_dir",
        "dir_to_file",
        "file_to_dir",
        "empty_dirs",
        "ignored",
        "out_and_back",
        "rmtree",
    )


@pytest.mark.parametrize("seed", range(4))
def test_rescans_equal_fresh_full_walks_through_random_changes(
    journalled: Journalled, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    outside = tmp_path / "outside"
    outside.mkdir()
    mutate = Mutator(journalled.ws, outside, rng)
    done: list[str] = []
    # Every kind of change several times, in a random order, a random number per round.
    ops = [op for _ in range(4) for op in rng.sample(Mutator.OPERATIONS, len(Mutator.OPERATIONS))]
    for round_ in range(14):
        for _ in range(rng.randrange(1, 9)):
            if not ops:
                break
            op = ops.pop()
            # An operation the tree's current shape refuses (a directory where a file was
            # expected, say) is simply skipped: the scans are what is under test.
            with contextlib.suppress(OSError):
                getattr(mutate, op)()
                done.append(op)
            if rng.random() < 0.3:
                journalled.journal.drain()  # as the event loop's reader does between scans
        if round_ == 7:
            past_racy_window()  # so that some of what changed is trusted from the cache again
        result = journalled.rescan()
        assert result.journal, f"round {round_} fell back to a full walk"
        assert_same(result, journalled.full())
    assert set(done) == set(Mutator.OPERATIONS)


def test_a_change_that_keeps_size_and_mtime_is_seen_by_its_event(journalled: Journalled) -> None:
    p = journalled.ws / "d3" / "e0" / "f3.txt"
    st = p.stat()
    with open(p, "r+b") as f:
        f.write(os.urandom(st.st_size))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = journalled.rescan()
    assert result.journal
    assert result.hashed == 1
    assert (
        file_digests(result.manifest)["d3/e0/f3.txt"]
        == sha256sum(journalled.ws, ["d3/e0/f3.txt"])["d3/e0/f3.txt"]
    )
    assert_same(result, journalled.full())


def test_an_unchanged_workspace_rescans_without_reading_anything(
    journalled: Journalled,
) -> None:
    result = journalled.rescan()
    assert result.journal
    assert result.hashed == 0
    assert result.manifest == journalled.full().manifest


def test_a_chmod_of_an_empty_directory_is_seen(journalled: Journalled) -> None:
    (journalled.ws / "empty").chmod(0o700)
    result = journalled.rescan()
    assert result.journal
    assert result.manifest["empty"]["mode"] == 0o700
    assert_same(result, journalled.full())


def test_a_directory_changed_while_it_was_away_is_walked_again_on_its_return(
    journalled: Journalled, tmp_path: Path
) -> None:
    ws = journalled.ws
    os.rename(ws / "d4", tmp_path / "away")
    (tmp_path / "away" / "e0" / "f4.txt").write_text("changed where no watch looks")
    (tmp_path / "away" / "e1" / "new.txt").write_text("made there")
    os.rename(tmp_path / "away", ws / "d4")  # the same directory (inode) at the same path
    result = journalled.rescan()
    assert result.journal
    assert "d4/e1/new.txt" in result.manifest
    assert_same(result, journalled.full())


def test_a_directory_moved_inside_keeps_its_watches_and_one_moved_out_loses_them(
    journalled: Journalled, tmp_path: Path
) -> None:
    ws, journal = journalled.ws, journalled.journal
    watched = journal.watches
    os.rename(ws / "d1", ws / "d2" / "d1-moved")
    assert journalled.rescan().manifest == journalled.full().manifest
    assert journal.watches == watched
    (ws / "d2" / "d1-moved" / "e0" / "late.txt").write_text("written after the move")
    changes = journal.take()
    assert changes is not None
    assert changes.files == {"d2/d1-moved/e0/late.txt"}
    journalled.last = rescan(ws, journalled.last, changes, state_dir=journalled.state)
    assert "d2/d1-moved/e0/late.txt" in journalled.last.manifest

    os.rename(ws / "d2", tmp_path / "d2-outside")
    assert journalled.rescan().manifest == journalled.full().manifest
    assert journal.watches == watched - 6  # d2, its two, d1-moved and its two
    (tmp_path / "d2-outside" / "e0" / "not-ours.txt").write_text("outside the workspace")
    assert journal.take() == Changes()


def test_a_new_hard_link_makes_the_rescan_walk_fully_and_then_both_names_are_rechecked(
    journalled: Journalled,
) -> None:
    ws = journalled.ws
    original = ws / "d0" / "e0" / "f0.txt"
    os.link(original, ws / "d4" / "alias")
    with open(ws / "d4" / "alias", "r+b") as f:  # no event for d0/e0/f0.txt's directory
        f.write(b"through the alias")
    result = journalled.rescan()
    assert not result.journal  # the other name could have been anywhere
    assert_same(result, journalled.full())
    assert result.manifest["d0/e0/f0.txt"] == result.manifest["d4/alias"]

    past_racy_window()
    # Both names are looked at once more and, old enough now, trusted from the cache.
    assert journalled.rescan().journal
    with open(ws / "d4" / "alias", "r+b") as f:
        f.write(b"written again!")
    result = journalled.rescan()
    assert result.journal
    assert_same(result, journalled.full())
    assert (
        file_digests(result.manifest)["d0/e0/f0.txt"]
        == sha256sum(ws, ["d0/e0/f0.txt"])["d0/e0/f0.txt"]
    )


def test_a_write_through_a_shared_mapping_is_not_in_the_journal_but_a_full_walk_sees_it(
    journalled: Journalled,
) -> None:
    """Why a machine's final checkpoint walks fully."""
    p = journalled.ws / "d5" / "e0" / "f5.txt"
    size = p.stat().st_size
    with open(p, "r+b") as f:
        mapping = mmap.mmap(f.fileno(), size)
    try:
        assert journalled.rescan().journal  # the open and close came before this scan
        mapping[:4] = b"MMAP"
        mapping.flush()
        stale = journalled.rescan()
        assert stale.journal
        full = journalled.full()
        assert stale.manifest["d5/e0/f5.txt"] != full.manifest["d5/e0/f5.txt"]
        assert (
            full.manifest["d5/e0/f5.txt"]["sha256"]
            == sha256sum(journalled.ws, ["d5/e0/f5.txt"])["d5/e0/f5.txt"]
        )
    finally:
        mapping.close()


def test_an_overflowing_queue_makes_the_journal_invalid(journalled: Journalled) -> None:
    limit = queue_limit()
    flood = journalled.ws / "d0" / "flood"
    for _ in range(limit // 2 + 10):  # a create and a delete each: never coalesced
        flood.write_bytes(b"")
        flood.unlink()
    assert journalled.journal.take() is None
    assert journalled.journal.error is not None
    assert "overflowed" in journalled.journal.error


def test_too_many_pending_paths_make_the_journal_invalid(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    j = Journalled(ws, tmp_path / "state", max_dirty=10)
    for i in range(10):
        (ws / f"f{i}").write_text("x")
    assert j.journal.take() is not None
    for i in range(11):
        (ws / f"g{i}").write_text("x")
    assert j.journal.take() is None
    assert "more than 10" in str(j.journal.error)
    j.close()


@pytest.mark.parametrize("how", ["removed", "moved", "replaced-through-symlink", "ignore-rules"])
def test_the_journal_is_invalid_once_the_root_or_its_rules_change(tmp_path: Path, how: str) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f").write_text("x")
    ws = tmp_path / "ws"
    ws.symlink_to(real)
    j = Journalled(ws, tmp_path / "state")
    assert j.journal.take() == Changes()
    if how == "removed":
        shutil.rmtree(real)
    elif how == "moved":
        real.rename(tmp_path / "elsewhere")
        (real / "sub").mkdir(parents=True)
    elif how == "replaced-through-symlink":
        other = tmp_path / "other"
        other.mkdir()
        ws.unlink()
        ws.symlink_to(other)  # no event at all: the root's identity says so
    else:
        (real / ".agenthubignore").write_text("sub/\n")
    assert j.journal.take() is None
    assert j.journal.error
    j.close()


def test_a_rescan_after_the_ignore_rules_changed_is_a_full_scan(journalled: Journalled) -> None:
    (journalled.ws / ".agenthubignore").write_text("*.log\nbuild/\nd1/\n")
    changes = Changes(files={".agenthubignore"})
    result = rescan(journalled.ws, journalled.last, changes, state_dir=journalled.state)
    assert not result.journal
    assert not any(p.startswith("d1/") for p in result.manifest)


def test_a_watch_that_cannot_be_added_makes_the_journal_invalid(journalled: Journalled) -> None:
    (journalled.ws / "fresh").mkdir()
    changes = journalled.journal.take()
    assert changes is not None
    assert changes.subtrees == {"fresh"}
    fd = os.open(journalled.ws / "fresh", os.O_RDONLY | os.O_DIRECTORY)
    try:
        # A descriptor that is not an open directory any more: inotify_add_watch fails.
        os.close(fd)
        journalled.journal.watch("fresh", fd)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    assert journalled.journal.take() is None
    assert "cannot watch 'fresh'" in str(journalled.journal.error)


def snapshots_for(tmp_path: Path, live: bool = True, journal: bool = True) -> Snapshots:
    """Node-side snapshots of ``tmp_path/workspaces/*`` (no hub: only scans are taken)."""
    return Snapshots(cast(NodeClient, None), "m", tmp_path, journal=journal, live=lambda _: live)


async def test_the_node_drains_events_as_they_come_and_rescans_from_them(tmp_path: Path) -> None:
    ws = tmp_path / "workspaces" / "w"
    (ws / "a").mkdir(parents=True)
    (ws / "a" / "one").write_text("1")
    snapshots = snapshots_for(tmp_path)
    state = tmp_path / "state"
    first = await snapshots._scan("w", ws, state)
    assert not first.journal
    journal = snapshots._journals["w"].journal
    (ws / "a" / "two").write_text("2")
    await asyncio.sleep(0.2)  # the loop's reader drains without anyone asking
    assert journal.events > 0
    second = await snapshots._scan("w", ws, state)
    assert second.journal
    assert sorted(second.manifest) == ["a/one", "a/two"]
    assert (snapshots.full_scans, snapshots.journal_scans) == (1, 1)
    await snapshots.close()
    assert journal.fileno() == -1


async def test_rescans_keep_the_stat_cache_in_memory_until_the_journal_stops(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "workspaces" / "w"
    ws.mkdir(parents=True)
    for i in range(5):
        (ws / f"f{i}").write_text(str(i))
    await asyncio.to_thread(past_racy_window)
    snapshots = snapshots_for(tmp_path)
    state = tmp_path / "state"
    assert (await snapshots._scan("w", ws, state)).hashed == 5
    saved = (state / STAT_CACHE_FILE).stat().st_mtime_ns
    (ws / "f1").write_text("changed")
    await asyncio.to_thread(past_racy_window)  # so that its new stat goes into the cache
    assert (await snapshots._scan("w", ws, state)).hashed == 1
    assert (state / STAT_CACHE_FILE).stat().st_mtime_ns == saved  # not written yet
    await snapshots.close()  # the journal stops: the cache is written for the next full walk
    assert scan(ws, state_dir=state).hashed == 0


async def test_after_an_overflow_the_node_walks_fully_with_a_new_journal(tmp_path: Path) -> None:
    ws = tmp_path / "workspaces" / "w"
    ws.mkdir(parents=True)
    snapshots = snapshots_for(tmp_path)
    state = tmp_path / "state"
    await snapshots._scan("w", ws, state)
    old = snapshots._journals["w"].journal
    limit = queue_limit()
    for _ in range(limit // 2 + 10):  # without yielding: the reader gets no chance
        (ws / "flood").write_bytes(b"")
        (ws / "flood").unlink()
    (ws / "survivor").write_text("made last")
    result = await snapshots._scan("w", ws, state)
    assert not result.journal
    assert sorted(result.manifest) == ["survivor"]
    assert snapshots._journals["w"].journal is not old
    assert old.fileno() == -1
    (ws / "after").write_text("seen by the new journal")
    result = await snapshots._scan("w", ws, state)
    assert result.journal
    assert sorted(result.manifest) == ["after", "survivor"]
    await snapshots.close()


async def test_checkpoints_walk_fully_when_nothing_runs_or_the_journal_is_off(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "workspaces" / "w"
    ws.mkdir(parents=True)
    (ws / "f").write_text("x")
    for snapshots in (snapshots_for(tmp_path, live=False), snapshots_for(tmp_path, journal=False)):
        for _ in range(2):
            result = await snapshots._scan("w", ws, tmp_path / "state")
            assert not result.journal
        assert (snapshots.full_scans, snapshots.journal_scans) == (2, 0)
        assert not snapshots._journals
        await snapshots.close()
