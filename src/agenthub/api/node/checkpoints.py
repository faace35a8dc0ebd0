"""Work protocol, checkpoints: a node uploads the blobs a workspace snapshot needs and commits
its manifest; it downloads blobs to materialise a workspace.

Blob routes are open to any live node: blobs are named by their sha256, so knowing a name is
knowing the content's fingerprint already (an assignment or a manifest handed to that node).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Query, Request
from pydantic import BaseModel, Field
from starlette.responses import StreamingResponse

from agenthub.api.deps import RuntimeDep, SessionDep
from agenthub.api.gateway.auth import MachineDep
from agenthub.api.routing import SurfaceRouter
from agenthub.core.errors import NotFound, PayloadTooLarge, ValidationFailed
from agenthub.services import events
from agenthub.services.checkpoints import checkpoints
from agenthub.services.checkpoints.blobs import BlobMismatch, is_digest
from agenthub.services.scheduling import protocol

router = SurfaceRouter(prefix="/api/v1/node", tags=["node"])

MACHINE_ID = Field(min_length=1, max_length=64, description="The registered machine's id.")


class MissingRequest(BaseModel):
    machine_id: str = MACHINE_ID
    digests: list[str] = Field(max_length=200_000)


class MissingResponse(BaseModel):
    missing: list[str]


class CommitRequest(BaseModel):
    machine_id: str = MACHINE_ID
    manifest: dict[str, dict[str, Any]] | None = None
    error: str | None = Field(None, max_length=4000)


class CommitResponse(BaseModel):
    checkpoint_id: uuid.UUID
    status: str
    size_bytes: int
    file_count: int


def _digest(value: str) -> str:
    if not is_digest(value):
        raise ValidationFailed("a blob is named by its sha256: 64 lowercase hex digits")
    return value


@router.post("/blobs/missing", response_model=MissingResponse)
async def missing_blobs(
    body: MissingRequest, principal: MachineDep, runtime: RuntimeDep, session: SessionDep
) -> MissingResponse:
    """Which of these blobs the hub does not have (the node uploads only those)."""
    await protocol.live_node(session, runtime.nodes, principal, body.machine_id)
    for digest in body.digests:
        _digest(digest)
    return MissingResponse(missing=sorted(await runtime.blobs.missing(set(body.digests))))


@router.put("/blobs/{digest}", status_code=201)
async def put_blob(
    digest: str,
    request: Request,
    principal: MachineDep,
    runtime: RuntimeDep,
    machine_id: str = Query(min_length=1, max_length=64),
) -> dict[str, Any]:
    """Upload one blob (the request body, streamed); refused unless it hashes to ``digest``."""
    _digest(digest)
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        await protocol.live_node(session, runtime.nodes, principal, machine_id)
    try:
        size = await runtime.blobs.put(digest, request.stream())
    except BlobMismatch as err:
        raise ValidationFailed(str(err), code="digest_mismatch") from err
    return {"digest": digest, "size": size}


MAX_BATCH_BYTES = 64 * 1024 * 1024


def parse_batch(body: bytes) -> list[tuple[str, bytes]]:
    """``<sha256> <size>\n<size bytes>`` repeated."""
    blobs: list[tuple[str, bytes]] = []
    at = 0
    while at < len(body):
        end = body.find(b"\n", at, at + 100)
        if end < 0:
            raise ValidationFailed("malformed blob batch: a header line is missing")
        try:
            digest, size_text = body[at:end].decode().split(" ")
            size = int(size_text)
        except ValueError as err:
            raise ValidationFailed("malformed blob batch header") from err
        _digest(digest)
        start = end + 1
        if size < 0 or start + size > len(body):
            raise ValidationFailed(f"blob batch truncated in {digest}")
        blobs.append((digest, body[start : start + size]))
        at = start + size
    return blobs


@router.post("/blobs/batch", status_code=201)
async def put_blobs(
    request: Request,
    principal: MachineDep,
    runtime: RuntimeDep,
    machine_id: str = Query(min_length=1, max_length=64),
) -> dict[str, Any]:
    """Upload many small blobs in one request (stored with one durability barrier); each must
    hash to its name, or none is stored."""
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        await protocol.live_node(session, runtime.nodes, principal, machine_id)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BATCH_BYTES:
            raise PayloadTooLarge(f"a blob batch holds at most {MAX_BATCH_BYTES} bytes")
    blobs = parse_batch(bytes(body))
    try:
        size = await runtime.blobs.put_many(blobs)
    except BlobMismatch as err:
        raise ValidationFailed(str(err), code="digest_mismatch") from err
    return {"stored": len(blobs), "size": size}


@router.get("/blobs/{digest}")
async def get_blob(
    digest: str,
    principal: MachineDep,
    runtime: RuntimeDep,
    machine_id: str = Query(min_length=1, max_length=64),
) -> StreamingResponse:
    _digest(digest)
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        await protocol.live_node(session, runtime.nodes, principal, machine_id)
    size = await runtime.blobs.size(digest)
    if size is None:
        raise NotFound(f"Blob {digest} not found.", code="blob_not_found")

    async def body() -> AsyncIterator[bytes]:
        async for chunk in runtime.blobs.open(digest):
            yield chunk

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size)},
    )


@router.post("/checkpoints/{checkpoint_id}", response_model=CommitResponse)
async def commit_checkpoint(
    checkpoint_id: uuid.UUID,
    body: CommitRequest,
    principal: MachineDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> CommitResponse:
    """The node's snapshot of a pending checkpoint (or the reason it could not take it)."""
    node = await protocol.live_node(session, runtime.nodes, principal, body.machine_id)
    if body.manifest is None and not body.error:
        raise ValidationFailed("send the manifest, or an error saying why there is none")
    checkpoint = await checkpoints.commit(
        session, runtime.blobs, node.id, checkpoint_id, manifest=body.manifest, error=body.error
    )
    return CommitResponse(
        checkpoint_id=checkpoint.id,
        status=checkpoint.status,
        size_bytes=checkpoint.size_bytes,
        file_count=checkpoint.file_count,
    )
