"""The node's part of checkpoints: snapshot a workspace the hub asked for (upload only the blobs
the hub lacks, then commit the manifest), and materialise a workspace from a checkpoint through
a node-local blob cache (download only the blobs the cache lacks).

A checkpoint of a workspace whose workload still runs (one taken on request mid-run) looks only
at what the workspace's change journal (:mod:`agenthub.agent.journal`) says changed since the
previous one: the first such checkpoint starts the journal and walks fully, the next ones
rescan. Any other checkpoint, such as the one that ends a machine and becomes its project's
current checkpoint, walks the whole workspace, since inotify misses writes through a shared
mmap or through a hard link from outside. The journal is closed when the workload ends.

The hub is asked only about blobs it is not known to hold: those of the manifest this node last
committed for the workspace, or restored it from, are there (the hub never deletes a blob a
checkpoint references, and it checked them all when that manifest was committed or handed out).
Should the hub still lack one at commit (its store was changed under it), the node asks about
them all and commits again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agenthub.agent.journal import ChangeJournal
from agenthub.agent.rescan import rescan
from agenthub.agent.restore import materialize
from agenthub.agent.snapshot import Manifest, ScanResult, save_cache, scan
from agenthub.agent.workload import workspace_path
from agenthub.client.gateway import GatewayError
from agenthub.client.node import NodeClient

logger = logging.getLogger("agenthub.agent")

TRANSFERS = 4  # requests moving blobs at once
SMALL_BLOB = 1024 * 1024  # files up to this size travel in batches
BATCH_BYTES = 16 * 1024 * 1024
KNOWN_WORKSPACES = 64  # workspaces whose committed digests are remembered
JOURNAL_ATTEMPTS = 3  # journals that could not start, per workspace, before it goes without


def _file_digests(manifest: Manifest) -> set[str]:
    return {e["sha256"] for e in manifest.values() if e.get("type", "file") == "file"}


def wanted_blobs(manifest: Manifest, known: frozenset[str]) -> dict[str, tuple[str, int]]:
    """Digest -> (a path holding it, size) for the file blobs of ``manifest`` not in ``known``.

    One pass, and strings rather than Paths (ten thousand Paths cost ~25 ms): mid-run, nearly
    every blob is known and only the new ones are wanted."""
    wanted: dict[str, tuple[str, int]] = {}
    for name, entry in manifest.items():
        if entry.get("type", "file") == "file":
            digest = entry["sha256"]
            if digest not in known and digest not in wanted:
                wanted[digest] = (name, entry["size"])
    return wanted


@dataclass
class _Journalled:
    journal: ChangeJournal
    state: Path
    last: ScanResult | None = None  # the scan its changes are relative to
    rescanning: bool = False  # a thread is updating ``last``'s tree

    def close(self) -> None:
        self.journal.close()
        tree = self.last.tree if self.last is not None else None
        if tree is not None and tree.unsaved and not self.rescanning:
            # Rescans keep the stat cache in memory; the next full walk starts from it.
            try:
                save_cache(tree, self.state)
            except Exception:  # only the next full walk's speed depends on it
                logger.exception("saving the stat cache of %s failed", self.journal.root)


class Snapshots:
    """Takes the snapshots the hub asks for (each once, however often a poll repeats it).

    ``live(workspace)`` says whether a workload still runs in a workspace (its checkpoints may
    then use a change journal, unless ``journal`` is False); call :meth:`release` when one ends.
    """

    def __init__(
        self,
        client: NodeClient,
        machine_id: str,
        work_dir: Path,
        *,
        journal: bool = True,
        live: Callable[[str], bool] | None = None,
    ) -> None:
        self._client = client
        self._machine_id = machine_id
        self._work_dir = work_dir
        self.cache_dir = work_dir / "blob-cache"
        self._state_root = work_dir / "snapshot-state"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._use_journal = journal
        self._live: Callable[[str], bool] = live or (lambda _: False)
        self._journals: dict[str, _Journalled] = {}
        self._journal_failures: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Workspace -> digests of the manifest last committed (or restored) there: the hub has them.
        self._known: OrderedDict[str, frozenset[str]] = OrderedDict()
        self.taken = 0
        self.full_scans = 0
        self.journal_scans = 0
        # Per recent checkpoint, how many digests the hub was asked about.
        self.asked: deque[int] = deque(maxlen=100)

    def take(self, checkpoint_id: str, workspace: str) -> None:
        if checkpoint_id in self._tasks:
            return
        task = asyncio.create_task(
            self._take(checkpoint_id, workspace), name=f"checkpoint-{checkpoint_id}"
        )
        self._tasks[checkpoint_id] = task
        # Forgotten a while after it ended, so a repeat from a poll in flight is not retaken.
        task.add_done_callback(
            lambda _: asyncio.get_running_loop().call_later(
                60, self._tasks.pop, checkpoint_id, None
            )
        )

    def release(self, workspace: str) -> None:
        """A workload of ``workspace`` ended: close its change journal once nothing runs there
        (a checkpoint being taken closes it when it is done)."""
        lock = self._locks.get(workspace)
        if (lock is None or not lock.locked()) and not self._live(workspace):
            self._stop_journal(workspace)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            # Cancelled on shutdown: the hub fails a checkpoint that never arrives.
            with contextlib.suppress(BaseException):
                await task
        for workspace in list(self._journals):
            self._stop_journal(workspace)

    async def _take(self, checkpoint_id: str, workspace: str) -> None:
        try:
            path = workspace_path(self._work_dir, workspace)
            if not path.is_dir():
                raise FileNotFoundError(f"workspace {workspace!r} is not on this node")
            lock = self._locks.setdefault(workspace, asyncio.Lock())
            async with lock:
                try:
                    result = await self._scan(workspace, path, self._state_root / workspace)
                    uploaded = await self._deliver(workspace, path, checkpoint_id, result.manifest)
                finally:
                    if not self._live(workspace):
                        self._stop_journal(workspace)
            self.taken += 1
            logger.info(
                "checkpoint %s of %s: %d files, %d uploaded (%s)",
                checkpoint_id,
                workspace,
                result.file_count,
                uploaded,
                "journal" if result.journal else "full walk",
            )
        except asyncio.CancelledError:
            raise
        except (GatewayError, httpx.HTTPError) as err:
            # The hub may retry by asking again; it fails the checkpoint if it never arrives.
            logger.warning("checkpoint %s: could not reach the hub: %s", checkpoint_id, err)
        except Exception as err:
            logger.exception("checkpoint %s of %s failed", checkpoint_id, workspace)
            try:
                await self._client.commit_checkpoint(
                    self._machine_id, checkpoint_id, None, error=f"{type(err).__name__}: {err}"
                )
            except (GatewayError, httpx.HTTPError):
                logger.warning("checkpoint %s: could not report its failure", checkpoint_id)

    async def _scan(self, workspace: str, path: Path, state: Path) -> ScanResult:
        """The workspace's manifest: from its change journal while a workload runs there,
        otherwise (and whenever the journal cannot tell) by a full walk."""
        if not (self._use_journal and self._live(workspace)):
            self._stop_journal(workspace)
            self.full_scans += 1
            return await asyncio.to_thread(scan, path, state_dir=state)
        entry = self._journals.get(workspace)
        if entry is not None and entry.last is not None:
            changes = entry.journal.take()
            if changes is not None:
                entry.rescanning = True
                try:
                    result = await asyncio.to_thread(
                        rescan,
                        path,
                        entry.last,
                        changes,
                        state_dir=state,
                        watch=entry.journal.watch,
                        save=False,
                    )
                except BaseException:
                    entry.last = None  # its tree was half taken over
                    self._stop_journal(workspace)  # the changes it took are lost with it
                    raise
                finally:
                    entry.rescanning = False
                entry.last = result
                if self._journals.get(workspace) is not entry:  # stopped while it ran
                    entry.close()
                if result.journal:
                    self.journal_scans += 1
                else:
                    self.full_scans += 1
                return result
            logger.info("%s: %s; walking it fully", workspace, entry.journal.error)
        self._stop_journal(workspace)
        entry = await self._start_journal(workspace, path, state)
        result = await asyncio.to_thread(scan, path, state_dir=state)
        if entry is not None:
            entry.last = result
        self.full_scans += 1
        return result

    async def _start_journal(self, workspace: str, path: Path, state: Path) -> _Journalled | None:
        """A change journal for ``workspace``, started before the full walk it will follow."""
        failures = self._journal_failures.get(workspace, 0)
        if failures >= JOURNAL_ATTEMPTS:
            return None
        journal = ChangeJournal(path, state_dir=state)
        await asyncio.to_thread(journal.start)
        if not journal.valid:
            self._journal_failures[workspace] = failures + 1
            logger.warning("%s: no change journal: %s", workspace, journal.error)
            journal.close()
            return None
        # Drained as events come, not only at checkpoints, or a busy workspace would overflow
        # the kernel's queue in between.
        asyncio.get_running_loop().add_reader(journal.fileno(), self._on_events, workspace, journal)
        entry = self._journals[workspace] = _Journalled(journal, state)
        return entry

    def _on_events(self, workspace: str, journal: ChangeJournal) -> None:
        journal.drain()
        if not journal.valid:
            logger.info("%s: %s; the next checkpoint walks it fully", workspace, journal.error)
            entry = self._journals.get(workspace)
            if entry is not None and entry.journal is journal:
                self._stop_journal(workspace)

    def _stop_journal(self, workspace: str) -> None:
        entry = self._journals.pop(workspace, None)
        if entry is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to unregister
                asyncio.get_running_loop().remove_reader(entry.journal.fileno())
            entry.close()

    async def _deliver(
        self, workspace: str, path: Path, checkpoint_id: str, manifest: Manifest
    ) -> int:
        """Upload the blobs of ``manifest`` the hub lacks and commit it; how many were sent."""
        known = self._known.get(workspace, frozenset())
        ask = wanted_blobs(manifest, known)
        self.asked.append(len(ask))
        missing = await self._client.missing_blobs(self._machine_id, ask) if ask else []
        await self._upload(path, missing, ask)
        try:
            await self._client.commit_checkpoint(self._machine_id, checkpoint_id, manifest)
        except GatewayError as err:
            if err.code != "blobs_missing" or not known:
                raise
            # The hub lost a blob it once had: ask about them all, and commit again.
            logger.warning("checkpoint %s: the hub lacks blobs it had; resending", checkpoint_id)
            self._known.pop(workspace, None)
            ask = wanted_blobs(manifest, frozenset())
            self.asked.append(len(ask))
            missing = await self._client.missing_blobs(self._machine_id, ask)
            await self._upload(path, missing, ask)
            await self._client.commit_checkpoint(self._machine_id, checkpoint_id, manifest)
        self._remember(workspace, _file_digests(manifest))
        return len(missing)

    async def _upload(
        self, root: Path, missing: list[str], files: dict[str, tuple[str, int]]
    ) -> None:
        gate = asyncio.Semaphore(TRANSFERS)

        async def upload(digest: str) -> None:
            async with gate:
                await self._client.put_blob(self._machine_id, digest, root / files[digest][0])

        async def upload_batch(batch: list[str]) -> None:
            async with gate:
                await self._client.put_blobs(
                    self._machine_id, [(d, root / files[d][0]) for d in batch]
                )

        # Small files go many to a request (and to one flush on the hub); large ones alone.
        large = [d for d in missing if files[d][1] > SMALL_BLOB]
        batches: list[list[str]] = [[]]
        filled = 0
        for digest in (d for d in missing if files[d][1] <= SMALL_BLOB):
            size = files[digest][1]
            if filled + size > BATCH_BYTES and batches[-1]:
                batches.append([])
                filled = 0
            batches[-1].append(digest)
            filled += size
        await asyncio.gather(*(upload(d) for d in large), *(upload_batch(b) for b in batches if b))

    def _remember(self, workspace: str, digests: Iterable[str]) -> None:
        self._known[workspace] = frozenset(digests)
        self._known.move_to_end(workspace)
        while len(self._known) > KNOWN_WORKSPACES:
            self._known.popitem(last=False)

    def _cached(self, digest: str) -> Path:
        return self.cache_dir / digest[:2] / digest

    async def _fetch(self, digests: list[str]) -> None:
        gate = asyncio.Semaphore(TRANSFERS)

        async def one(digest: str) -> None:
            async with gate:
                target = self._cached(digest)
                target.parent.mkdir(parents=True, exist_ok=True)
                await self._client.get_blob(self._machine_id, digest, target)

        await asyncio.gather(*(one(d) for d in digests))

    async def materialize(self, workspace: Path, manifest_sha256: str) -> int:
        """Make ``workspace`` hold the checkpoint whose manifest is ``manifest_sha256``."""
        cached = self._cached(manifest_sha256)
        if not cached.exists():
            await self._fetch([manifest_sha256])
        raw = await asyncio.to_thread(cached.read_bytes)
        if hashlib.sha256(raw).hexdigest() != manifest_sha256:
            cached.unlink(missing_ok=True)
            raise ValueError(f"manifest {manifest_sha256} arrived corrupt")
        manifest: dict[str, Any] = json.loads(raw)
        written = await materialize(
            workspace, manifest, cache_dir=self.cache_dir, fetch=self._fetch
        )
        # Every blob of a manifest the hub hands out is in its store.
        self._remember(workspace.name, _file_digests(manifest))
        return written
