"""Async client for the work protocol (``/api/v1/node/...``): how a node agent gets work.

The node long-polls ``/poll`` for assignments and cancels and sends status, usage and log lines to
``/report``; the hub never connects to the node. Errors use the Gateway envelope
(``{"error": msg, "code": code}``) and surface as :class:`~agenthub.client.gateway.GatewayError`
and its subclasses; transport failures are left as ``httpx`` errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from agenthub.client.gateway import GatewayError, MachineTokenClient, error_from

__all__ = ["MAX_POLL_WAIT_S", "NodeClient"]

_PREFIX = "/api/v1/node"
MAX_POLL_WAIT_S = 30.0
# A parked poll may legitimately take wait_s; this much more is what a slow answer may add.
_POLL_TIMEOUT_MARGIN_S = 10.0
_CHUNK = 1024 * 1024
_TRANSFER_TIMEOUT_S = 300.0


class NodeClient(MachineTokenClient):
    """Poll for work and report on it with a machine token."""

    prefix = _PREFIX

    async def poll(
        self,
        machine_id: str,
        runtimes: Iterable[str],
        running: Iterable[tuple[str, int]],
        wait_s: float,
    ) -> dict[str, Any]:
        """``POST /poll``: new assignments and cancels, waiting up to ``wait_s`` for some.

        ``running`` lists every ``(workload_id, attempt)`` this agent runs or is starting, so that
        the hub can reconcile. Returns ``{"assignments": [...], "cancel": [...]}``, both lists
        present (empty when the hub sent none).
        """
        wait_s = min(max(wait_s, 0.0), MAX_POLL_WAIT_S)
        body = {
            "machine_id": machine_id,
            "runtimes": list(runtimes),
            "running": [{"workload_id": wid, "attempt": attempt} for wid, attempt in running],
            "wait_s": wait_s,
        }
        data = await self._call_object(
            "POST", "/poll", json=body, timeout=wait_s + _POLL_TIMEOUT_MARGIN_S
        )
        return {
            "assignments": _objects(data, "assignments"),
            "cancel": _objects(data, "cancel"),
            "snapshots": _objects(data, "snapshots"),
        }

    async def report(
        self,
        machine_id: str,
        updates: list[dict[str, Any]],
        logs: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """``POST /report``: status updates (in order) and log lines.

        Returns ``{"cancel": [...]}``: workloads the hub does not recognise as this node's.
        """
        body = {"machine_id": machine_id, "updates": updates, "logs": logs}
        data = await self._call_object("POST", "/report", json=body)
        return {"cancel": _objects(data, "cancel")}

    async def missing_blobs(self, machine_id: str, digests: Iterable[str]) -> list[str]:
        """``POST /blobs/missing``: which of these blobs the hub lacks."""
        body = {"machine_id": machine_id, "digests": sorted(set(digests))}
        data = await self._call_object("POST", "/blobs/missing", json=body)
        missing = data.get("missing")
        if not isinstance(missing, list) or not all(isinstance(d, str) for d in missing):
            raise GatewayError(200, "invalid_response", "expected a list of digests")
        return missing

    async def put_blob(self, machine_id: str, digest: str, path: Path) -> None:
        """``PUT /blobs/{digest}``: upload one file, streamed from disk."""

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, _CHUNK):
                    yield chunk

        await self._call(
            "PUT",
            f"/blobs/{digest}",
            params={"machine_id": machine_id},
            content=chunks(),
            timeout=_TRANSFER_TIMEOUT_S,
        )

    async def put_blobs(self, machine_id: str, blobs: list[tuple[str, Path]]) -> None:
        """``POST /blobs/batch``: many small files in one request."""

        def pack() -> bytes:
            parts: list[bytes] = []
            for digest, path in blobs:
                data = path.read_bytes()
                parts.append(f"{digest} {len(data)}\n".encode())
                parts.append(data)
            return b"".join(parts)

        await self._call(
            "POST",
            "/blobs/batch",
            params={"machine_id": machine_id},
            content=await asyncio.to_thread(pack),
            timeout=_TRANSFER_TIMEOUT_S,
        )

    async def get_blob(self, machine_id: str, digest: str, into: Path) -> None:
        """``GET /blobs/{digest}``: download one blob into ``into`` (written whole or not at
        all: a temporary name renamed at the end)."""
        partial = into.with_name(f".{into.name}.partial")
        async with self._http.stream(
            "GET",
            f"{self.prefix}/blobs/{digest}",
            params={"machine_id": machine_id},
            timeout=_TRANSFER_TIMEOUT_S,
        ) as response:
            if not response.is_success:
                await response.aread()
                raise error_from(response)
            with partial.open("wb") as f:
                async for chunk in response.aiter_bytes(_CHUNK):
                    await asyncio.to_thread(f.write, chunk)
        partial.replace(into)

    async def commit_checkpoint(
        self,
        machine_id: str,
        checkpoint_id: str,
        manifest: dict[str, Any] | None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """``POST /checkpoints/{id}``: the manifest of a snapshot (blobs uploaded), or why
        there is none."""
        body = {"machine_id": machine_id, "manifest": manifest, "error": error}
        return await self._call_object(
            "POST", f"/checkpoints/{checkpoint_id}", json=body, timeout=_TRANSFER_TIMEOUT_S
        )


def _objects(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise GatewayError(200, "invalid_response", f"expected a list of objects in {key!r}")
    return value
