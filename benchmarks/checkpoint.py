"""Workspace checkpoints against git on the same tree, in the same run.

Run it from the repository root::

    .venv/bin/python benchmarks/checkpoint.py [--files 10000] [--mb 100] [--rounds 3] [--json]

A synthetic workspace of ``--files`` files holding ``--mb`` MB in all (99.9% small files of
0-10 KiB in 700 directories, the rest in ten large ones; random content, so nothing
compresses or deduplicates) is built in a temporary directory. Then, per round:

- **full**: ``scan`` of the fresh tree (every file hashed, the stat cache written) plus
  storing every blob the scan names in a fresh local blob store (what a node's first
  checkpoint costs, without the HTTP transfer) — beside ``git add -A && git commit -q`` of
  the same tree in a fresh repository.
- **incremental (full walk)**: 1% of the files rewritten (same sizes, new content); ``scan``
  with the stat cache, then the blob-presence work of a real checkpoint (below) and storing
  the blobs the store lacks — beside ``git add -A && git commit -q``.
- **incremental (journal)**: another 1% rewritten; the change journal's events drained and
  ``rescan`` from them, then the same blob work — beside another ``git add -A && git commit``.
  The journal (``agent/journal.py``, inotify) is started before the full step's scan, which is
  its baseline, and that setup is not timed; between the two incremental steps it catches up
  on the first 1% (untimed), as it would have at the previous checkpoint.
- **restore**: ``materialize`` of the first manifest into an empty directory from the blob
  cache (every file copied) — beside ``git checkout`` of the first commit into an empty work
  tree (``git --work-tree=EMPTY checkout -f HEAD~2 -- .``).

The blob-presence work of an incremental step is what a node and the hub do for a real
checkpoint: the node asks which of the blobs not in the manifest it last committed the hub
lacks (``POST /blobs/missing``, here the store's ``missing``), those are stored, and the hub,
committing, checks that every blob its parent checkpoint does not vouch for is stored (its
parent's digests come from the hub's per-process cache, filled when that parent was committed).
HTTP, the manifest's JSON and the commit's database work are not included, for either side.

Automatic ``git gc`` is off in the benchmark's repository: ``git commit`` would otherwise start
one in the background (detached, so never in git's time) that packs and deletes the loose
objects during the steps after it. Before each timed step dirty data is written back (``sync``,
untimed; the page cache is not dropped), so that no step pays for the writeback of the step
before it (a flush inside ours would otherwise also write git's objects out). Ours goes first
in even rounds and git in odd ones, and every round's files are kept until the last round
ends: on ext4 without a journal (as on the machine the results were taken on) each create
passes over recently freed inodes (for seconds to minutes after they are freed), so whichever
side ran first after a round's cleanup paid seconds more.

Printed: the median of the rounds for each, and ours / git (below 1 is faster than git);
``--json`` adds every round's times. Targets: full ≤ 1x, incremental ≤ 0.5x (each way is
shown against it), restore ≤ 1x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agenthub.agent.checkpoints import wanted_blobs
from agenthub.agent.journal import ChangeJournal
from agenthub.agent.rescan import rescan
from agenthub.agent.restore import materialize
from agenthub.agent.snapshot import ScanResult, blob_path, scan
from agenthub.services.checkpoints.blobs import LocalBlobStore
from agenthub.services.checkpoints.checkpoints import manifest_digests, store_manifest


def build_tree(root: Path, files: int, total_mb: int, rng: random.Random) -> list[Path]:
    large = 10
    large_size = total_mb * 1024 * 1024 // 2 // large
    small_budget = total_mb * 1024 * 1024 - large * large_size
    small = files - large
    paths = []
    for i in range(small):
        d = root / f"d{i % 700:03d}" / f"s{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = min(10 * 1024, max(0, int(rng.gauss(small_budget / small, 2048))))
        p = d / f"f{i}.txt"
        p.write_bytes(rng.randbytes(size))
        paths.append(p)
    for i in range(large):
        p = root / f"big{i}.bin"
        p.write_bytes(rng.randbytes(large_size))
        paths.append(p)
    return paths


def git(cwd: Path, *args: str) -> None:
    # The repository lives beside the tree, so the checkpoint scans never see its objects.
    subprocess.run(
        ["git", f"--git-dir={cwd.parent / 'repo.git'}", f"--work-tree={cwd}", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "b",
            "GIT_AUTHOR_EMAIL": "b@b",
            "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@b",
        },
    )


async def store_blobs(
    store: LocalBlobStore, tree: Path, entries: dict[str, tuple[str, int]], digests: list[str]
) -> None:
    """What the hub does with a node's upload: small blobs in batches of 16 MB (one durability
    barrier per batch, as ``POST /blobs/batch``), large ones alone."""
    batch: list[tuple[str, bytes]] = []
    filled = 0
    for digest in digests:
        rel, size = entries[digest]
        data = await asyncio.to_thread((tree / rel).read_bytes)
        if size > 1024 * 1024:

            async def one(data: bytes = data) -> Any:
                yield data

            await store.put(digest, one())
            continue
        batch.append((digest, data))
        filled += size
        if filled >= 16 * 1024 * 1024:
            await store.put_many(batch)
            batch, filled = [], 0
    if batch:
        await store.put_many(batch)


class Hub:
    """The blob side of a node and a hub checkpointing one workspace, one checkpoint after
    another: what the node last committed, and the parent checkpoint's manifest."""

    def __init__(self, store: LocalBlobStore) -> None:
        self.store = store
        self.known: frozenset[str] = frozenset()  # the node's: blobs of its last commit
        self.parent: str | None = None  # the hub's: manifest blob of the parent checkpoint

    async def deliver(self, tree: Path, manifest: dict[str, Any]) -> tuple[int, int]:
        """Upload what the hub lacks and check the blobs as a commit does (not storing the
        manifest yet, see :meth:`commit`); (digests asked about, blobs stored)."""
        # The node: one pass for the blobs not in its last commit (``wanted_blobs`` in
        # agent/checkpoints.py), asks about those, uploads the missing ones.
        asked = wanted_blobs(manifest, self.known)
        missing = sorted(await self.store.missing(asked)) if asked else []
        await store_blobs(self.store, tree, asked, missing)
        # The hub, committing: every digest its parent checkpoint does not vouch for is stored.
        digests = {e["sha256"] for e in manifest.values() if "type" not in e}
        vouched = await manifest_digests(self.store, self.parent) if self.parent else frozenset()
        lacking = await self.store.missing(digests - vouched)
        assert not lacking, f"{len(lacking)} blobs were never stored"
        return len(asked), len(missing)

    async def commit(self, manifest: dict[str, Any]) -> None:
        """The rest of a commit (untimed): the manifest stored, and remembered by both sides."""
        digests = {e["sha256"] for e in manifest.values() if "type" not in e}
        self.parent = await store_manifest(self.store, manifest, digests)
        self.known = frozenset(digests)


def fill_cache(cache: Path, store_root: Path) -> None:
    for blob in store_root.rglob("*"):
        if blob.is_file() and blob.relative_to(store_root).parts[0] != "tmp":
            target = blob_path(cache, blob.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, target)


def run_git(work: Path, tree: Path, *args: str) -> None:
    subprocess.run(
        ["git", f"--git-dir={work / 'repo.git'}", f"--work-tree={tree}", *args],
        cwd=tree,
        check=True,
        capture_output=True,
    )


async def pair(
    ours: Callable[[], Awaitable[object]], theirs: Callable[[], object], ours_first: bool
) -> tuple[float, float]:
    """Time ``ours`` and ``theirs`` (git), in the order given; the page cache is flushed (untimed)
    before each, so that neither pays for the writeback of what ran before it."""

    async def time_ours() -> float:
        os.sync()
        started = time.perf_counter()
        await ours()
        return time.perf_counter() - started

    def time_theirs() -> float:
        os.sync()
        started = time.perf_counter()
        theirs()
        return time.perf_counter() - started

    if ours_first:
        mine = await time_ours()
        return mine, time_theirs()
    git_time = time_theirs()
    return await time_ours(), git_time


async def one_round(
    work: Path, files: int, total_mb: int, seed: int, ours_first: bool
) -> dict[str, float]:
    rng = random.Random(seed)  # noqa: S311 - synthetic file content, not secrets
    tree = work / "tree"
    paths = build_tree(tree, files, total_mb, rng)
    store = LocalBlobStore(work / "store")
    out: dict[str, float] = {}
    git(tree, "init", "-q")
    # With 10k loose objects, `git commit` starts a detached `git gc --auto`, which packs them
    # on both cores and then deletes them while the next steps are being timed (that work was
    # never in git's own time). Off, so that nothing of either side runs in the background.
    git(tree, "config", "gc.auto", "0")
    git(tree, "config", "maintenance.auto", "false")
    # Files younger than the racy window are never trusted from the stat cache: let the tree
    # age past it, as a workspace does between a machine's last write and its checkpoint.
    await asyncio.sleep(1.1)

    manifests: list[dict[str, Any]] = []
    hub = Hub(store)
    state = work / "state"
    # The journal is started before the scan it follows (untimed): a change after a
    # directory's watch was added is in the journal, one before is in that scan.
    journal = ChangeJournal(tree, state_dir=state)
    await asyncio.to_thread(journal.start)
    assert journal.valid, journal.error
    scans: list[ScanResult] = []

    async def full() -> None:
        first = await asyncio.to_thread(scan, tree, state_dir=state)
        out["full_uploaded"] = (await hub.deliver(tree, first.manifest))[1]
        manifests.append(first.manifest)
        scans.append(first)

    def git_commit(message: str) -> None:
        git(tree, "add", "-A")
        git(tree, "commit", "-q", "-m", message)

    out["full"], out["git_full"] = await pair(full, lambda: git_commit("full"), ours_first)
    await hub.commit(manifests[-1])

    def rewrite_one_percent() -> None:
        for p in rng.sample(paths, max(1, len(paths) // 100)):
            p.write_bytes(rng.randbytes(p.stat().st_size))

    await asyncio.sleep(1.1)  # past the racy window: the stat cache trusts the first scan's entries
    rewrite_one_percent()

    async def incremental_walk() -> None:
        second = await asyncio.to_thread(scan, tree, state_dir=state)
        out["walk_hashed"] = second.hashed
        out["walk_asked"], out["walk_uploaded"] = await hub.deliver(tree, second.manifest)
        manifests.append(second.manifest)

    out["walk"], out["git_walk"] = await pair(
        incremental_walk, lambda: git_commit("one percent"), ours_first
    )
    await hub.commit(manifests[-1])

    # The journal catches up with the first 1%, as it would have at that checkpoint (untimed).
    changes = journal.take()
    assert changes is not None, journal.error
    caught_up = await asyncio.to_thread(
        rescan, tree, scans[-1], changes, state_dir=state, watch=journal.watch, save=False
    )
    assert caught_up.journal
    assert caught_up.manifest == manifests[-1]
    await asyncio.sleep(1.1)  # as before the first incremental step
    rewrite_one_percent()

    async def incremental_journal() -> None:
        changes = journal.take()  # drains the events that wait
        assert changes is not None, journal.error
        # As the node does: the stat cache stays in memory while the journal runs.
        third = await asyncio.to_thread(
            rescan, tree, caught_up, changes, state_dir=state, watch=journal.watch, save=False
        )
        assert third.journal
        out["journal_hashed"] = third.hashed
        out["journal_asked"], out["journal_uploaded"] = await hub.deliver(tree, third.manifest)
        manifests.append(third.manifest)

    out["journal"], out["git_journal"] = await pair(
        incremental_journal, lambda: git_commit("another one percent"), ours_first
    )
    await hub.commit(manifests[-1])
    journal.close()
    # What the journal gave is what a full walk gives.
    assert manifests[-1] == (await asyncio.to_thread(scan, tree, state_dir=work / "check")).manifest

    cache = work / "cache"
    fill_cache(cache, work / "store")

    async def no_fetch(missing: list[str]) -> None:
        raise AssertionError(f"the cache lacks {len(missing)} blobs")

    target, empty = work / "restored", work / "checkout"
    target.mkdir()
    empty.mkdir()

    async def restore() -> None:
        await materialize(target, manifests[0], cache_dir=cache, fetch=no_fetch)

    out["restore"], out["git_restore"] = await pair(
        restore, lambda: run_git(work, empty, "checkout", "-f", "HEAD~2", "--", "."), ours_first
    )
    await store.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = []
    # Every round's files stay until the last round is done: ext4 without a journal passes over
    # recently freed inodes on every create, so creating files just after deleting a previous
    # round's ~70k made whichever side ran first pay up to several seconds more.
    with contextlib.ExitStack() as dirs:
        for seed in range(args.rounds):
            tmp = dirs.enter_context(tempfile.TemporaryDirectory(prefix="agenthub-bench-"))
            # Alternate which side goes first, so that neither always runs on the other's heels.
            rounds.append(await one_round(Path(tmp), args.files, args.mb, seed, seed % 2 == 0))
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    steps = (
        ("full", "full", 1.0),
        ("walk", "incremental (full walk)", 0.5),
        ("journal", "incremental (journal)", 0.5),
        ("restore", "restore", 1.0),
    )
    ratios = {key: median[key] / median["git_" + key] for key, _, _ in steps}
    if args.json:
        print(json.dumps({"median_s": median, "ratios": ratios, "rounds_s": rounds}, indent=2))
        return
    print(f"{args.files} files, {args.mb} MB, {args.rounds} rounds (medians)")
    for key, label, target in steps:
        met = "met" if ratios[key] <= target else "NOT met"
        print(
            f"  {label:25s} ours {median[key] * 1000:8.0f} ms"
            f"   git {median['git_' + key] * 1000:8.0f} ms"
            f"   ratio {ratios[key]:.2f}x (target <= {target}x: {met})"
        )
    for key, label in (("walk", "full walk"), ("journal", "journal")):
        print(
            f"  incremental ({label}): {median[key + '_hashed']:.0f} files re-hashed, "
            f"{median[key + '_asked']:.0f} digests asked about, "
            f"{median[key + '_uploaded']:.0f} blobs stored"
        )


if __name__ == "__main__":
    asyncio.run(main())
