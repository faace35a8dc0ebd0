"""The node's part of checkpoints: snapshot a workspace the hub asked for (upload only the blobs
the hub lacks, then commit the manifest), and materialise a workspace from a checkpoint through
a node-local blob cache (download only the blobs the cache lacks)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import httpx

from agenthub.agent.snapshot import materialize, scan
from agenthub.agent.workload import workspace_path
from agenthub.client.gateway import GatewayError
from agenthub.client.node import NodeClient

logger = logging.getLogger("agenthub.agent")

TRANSFERS = 4  # requests moving blobs at once
SMALL_BLOB = 1024 * 1024  # files up to this size travel in batches
BATCH_BYTES = 16 * 1024 * 1024


class Snapshots:
    """Takes the snapshots the hub asks for (each once, however often a poll repeats it)."""

    def __init__(self, client: NodeClient, machine_id: str, work_dir: Path) -> None:
        self._client = client
        self._machine_id = machine_id
        self._work_dir = work_dir
        self.cache_dir = work_dir / "blob-cache"
        self._state_root = work_dir / "snapshot-state"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.taken = 0

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

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in list(self._tasks.values()):
            # Cancelled on shutdown: the hub fails a checkpoint that never arrives.
            with contextlib.suppress(BaseException):
                await task

    async def _take(self, checkpoint_id: str, workspace: str) -> None:
        try:
            path = workspace_path(self._work_dir, workspace)
            if not path.is_dir():
                raise FileNotFoundError(f"workspace {workspace!r} is not on this node")
            state = self._state_root / workspace
            result = await asyncio.to_thread(scan, path, state_dir=state)
            manifest = result.manifest
            by_digest: dict[str, Path] = {}
            for name, entry in manifest.items():
                if entry.get("type", "file") == "file":
                    by_digest.setdefault(entry["sha256"], path / name)
            sizes = {
                e["sha256"]: int(e["size"])
                for e in manifest.values()
                if e.get("type", "file") == "file"
            }
            missing = await self._client.missing_blobs(self._machine_id, by_digest)
            gate = asyncio.Semaphore(TRANSFERS)

            async def upload(digest: str) -> None:
                async with gate:
                    await self._client.put_blob(self._machine_id, digest, by_digest[digest])

            async def upload_batch(batch: list[str]) -> None:
                async with gate:
                    await self._client.put_blobs(
                        self._machine_id, [(d, by_digest[d]) for d in batch]
                    )

            # Small files go many to a request (and to one flush on the hub); large ones alone.
            large = [d for d in missing if sizes[d] > SMALL_BLOB]
            batches: list[list[str]] = [[]]
            filled = 0
            for digest in (d for d in missing if sizes[d] <= SMALL_BLOB):
                if filled + sizes[digest] > BATCH_BYTES and batches[-1]:
                    batches.append([])
                    filled = 0
                batches[-1].append(digest)
                filled += sizes[digest]
            await asyncio.gather(
                *(upload(d) for d in large), *(upload_batch(b) for b in batches if b)
            )
            await self._client.commit_checkpoint(self._machine_id, checkpoint_id, manifest)
            self.taken += 1
            logger.info(
                "checkpoint %s of %s: %d files, %d uploaded",
                checkpoint_id,
                workspace,
                result.file_count,
                len(missing),
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
        return await materialize(workspace, manifest, cache_dir=self.cache_dir, fetch=self._fetch)
