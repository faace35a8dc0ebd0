"""Hub surface: checkpoints — list, inspect, diff, spawn from one, take one of a machine."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import tempfile
from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import Query, Request
from starlette.responses import StreamingResponse

from agenthub.api.deps import PrincipalDep, RuntimeDep, SessionDep
from agenthub.api.hub.params import HubPage
from agenthub.api.hub.schemas import HubModel, ReadModel, ResourceConstraints
from agenthub.api.routing import SurfaceRouter
from agenthub.core.errors import NotFound, PayloadTooLarge, ValidationFailed
from agenthub.core.events import EventDict
from agenthub.db.models import Checkpoint
from agenthub.services import events
from agenthub.services.checkpoints import checkpoints
from agenthub.services.checkpoints.archive import manifest_from_upload, tar_gz
from agenthub.services.machines import machines
from agenthub.services.projects import projects

router = SurfaceRouter(prefix="/api/v1", tags=["hub"])

MANUAL_WAIT_S = 60.0


def size_mb(checkpoint: Checkpoint) -> float:
    return round(checkpoint.size_bytes / (1024 * 1024), 6)


class CheckpointSummary(ReadModel):
    uuid: UUID
    created_at: datetime
    created_by_machine: UUID | None
    type: str
    status: str
    size_mb: float
    description: str
    file_count: int


class CheckpointList(ReadModel):
    checkpoints: list[CheckpointSummary]
    total_count: int
    has_more: bool
    next_offset: int | None


class CheckpointRead(ReadModel):
    uuid: UUID
    project_uuid: UUID
    parent_checkpoint: UUID | None
    created_by_machine: UUID | None
    proxmox_snapshot_id: str | None
    type: str
    status: str
    description: str
    error: str | None
    file_manifest: dict[str, dict[str, Any]] | None
    file_count: int
    size_bytes: int
    created_at: datetime
    completed_at: datetime | None
    metadata: dict[str, Any]


class CheckpointSpawn(HubModel):
    machine_type: str
    prompt: str
    file_modifications: dict[str, str] = {}
    resource_constraints: ResourceConstraints = ResourceConstraints()


class SpawnedFrom(ReadModel):
    machine_uuid: UUID
    vm_id: str
    status: str
    spawned_at: datetime
    parent_checkpoint: UUID


class Diff(ReadModel):
    files_added: list[str]
    files_modified: list[str]
    files_deleted: list[str]
    total_changes: int
    summary: str
    patch: str | None = None
    patch_skipped: list[str] | None = None


class ManualCheckpoint(HubModel):
    context: str | None = None
    description: str = ""


class CheckpointTaken(ReadModel):
    checkpoint_uuid: UUID
    status: str
    created_at: datetime
    size_mb: float | None
    file_count: int | None
    error: str | None


def summary_of(c: Checkpoint) -> CheckpointSummary:
    return CheckpointSummary(
        uuid=c.id,
        created_at=c.created_at,
        created_by_machine=c.machine_id,
        type=c.type,
        status=c.status,
        size_mb=size_mb(c),
        description=c.description,
        file_count=c.file_count,
    )


@router.get("/projects/{project_uuid}/checkpoints", response_model=CheckpointList)
async def list_checkpoints(
    project_uuid: UUID,
    principal: PrincipalDep,
    session: SessionDep,
    page: HubPage,
    type: str | None = Query(None, description="initial, automatic, manual or terminate"),
) -> CheckpointList:
    found, total = await checkpoints.list_checkpoints(
        session, principal, project_uuid, page=page, type_=type
    )
    return CheckpointList(
        checkpoints=[summary_of(c) for c in found],
        total_count=total,
        has_more=page.has_more(total),
        next_offset=page.next_offset(total),
    )


@router.get("/checkpoints/{checkpoint_uuid}", response_model=CheckpointRead)
async def get_checkpoint(
    checkpoint_uuid: UUID, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> CheckpointRead:
    c = await checkpoints.get_checkpoint(session, principal, checkpoint_uuid)
    manifest = (
        await checkpoints.manifest_of(runtime.blobs, c) if c.status == checkpoints.READY else None
    )
    return CheckpointRead(
        uuid=c.id,
        project_uuid=c.project_id,
        parent_checkpoint=c.parent_id,
        created_by_machine=c.machine_id,
        proxmox_snapshot_id=c.runtime_snapshot_id,
        type=c.type,
        status=c.status,
        description=c.description,
        error=c.error,
        file_manifest=manifest,
        file_count=c.file_count,
        size_bytes=c.size_bytes,
        created_at=c.created_at,
        completed_at=c.completed_at,
        metadata=c.meta,
    )


@router.get("/checkpoints/{first_uuid}/diff/{second_uuid}", response_model=Diff)
async def diff(
    first_uuid: UUID,
    second_uuid: UUID,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
    patch: bool = Query(False, description="Also a unified diff of the changed text files."),
) -> Diff:
    """What changed from the first checkpoint to the second."""
    a = await checkpoints.get_checkpoint(session, principal, first_uuid)
    b = await checkpoints.get_checkpoint(session, principal, second_uuid)
    first = await checkpoints.manifest_of(runtime.blobs, a)
    second = await checkpoints.manifest_of(runtime.blobs, b)
    added, modified, deleted = checkpoints.diff_manifests(first, second)
    text = skipped = None
    if patch:
        text, skipped = await checkpoints.unified_patch(
            runtime.blobs, first, second, sorted([*added, *modified, *deleted])
        )
    return Diff(
        patch=text,
        patch_skipped=skipped,
        files_added=added,
        files_modified=modified,
        files_deleted=deleted,
        total_changes=len(added) + len(modified) + len(deleted),
        summary=checkpoints.summary(added, modified, deleted),
    )


@router.post("/checkpoints/{checkpoint_uuid}/spawn", status_code=201, response_model=SpawnedFrom)
async def spawn_from(
    checkpoint_uuid: UUID,
    body: CheckpointSpawn,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> SpawnedFrom:
    """A new machine whose workspace starts as this checkpoint's."""
    start = await checkpoints.get_checkpoint(session, principal, checkpoint_uuid)
    limits = body.resource_constraints
    found, _ = await machines.spawn(
        session,
        runtime.settings,
        principal,
        type_name=body.machine_type,
        project_id=start.project_id,
        prompt=body.prompt,
        checkpoint_id=start.id,
        file_modifications=body.file_modifications,
        max_money=limits.max_money,
        max_time_minutes=limits.max_time_minutes,
        max_api_calls=limits.max_api_calls,
    )
    return SpawnedFrom(
        machine_uuid=found.machine.id,
        vm_id=found.machine.vm_id,
        status=found.status,
        spawned_at=found.machine.created_at,
        parent_checkpoint=start.id,
    )


@router.post("/machines/{machine_uuid}/checkpoint", status_code=201, response_model=CheckpointTaken)
async def checkpoint_machine(
    machine_uuid: UUID,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    body: ManualCheckpoint | None = None,
) -> CheckpointTaken:
    """Checkpoint a working machine now; answers once its node uploaded it (or after a minute,
    still ``pending``)."""
    body = body or ManualCheckpoint()
    done = asyncio.Event()
    wanted: list[str] = []

    def ended(event: EventDict) -> bool:
        if (
            event.get("type") in ("checkpoint.ready", "checkpoint.failed")
            and event.get("data", {}).get("checkpoint_uuid") in wanted
        ):
            done.set()
        return False

    # Listening before the request commits, so a fast node cannot answer unheard.
    async with runtime.bus.subscribe(ended):
        async with events.unit_of_work(runtime.db, runtime.bus) as session:
            taken = await machines.checkpoint_now(
                session,
                principal,
                machine_uuid,
                context=body.context,
                description=body.description,
            )
            wanted.append(str(taken.id))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=MANUAL_WAIT_S)
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        c = await session.get(Checkpoint, taken.id)
        assert c is not None
    ready = c.status == checkpoints.READY
    return CheckpointTaken(
        checkpoint_uuid=c.id,
        status=c.status,
        created_at=c.created_at,
        size_mb=size_mb(c) if ready else None,
        file_count=c.file_count if ready else None,
        error=c.error,
    )


@router.get("/checkpoints/{checkpoint_uuid}/archive")
async def archive(
    checkpoint_uuid: UUID, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> StreamingResponse:
    """The checkpoint's workspace as a tar.gz, streamed."""
    c = await checkpoints.get_checkpoint(session, principal, checkpoint_uuid)
    manifest = await checkpoints.manifest_of(runtime.blobs, c)
    return StreamingResponse(
        tar_gz(runtime.blobs, manifest, int(c.created_at.timestamp())),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="checkpoint-{c.id}.tar.gz"'},
    )


@router.get("/checkpoints/{checkpoint_uuid}/files/{path:path}")
async def file(
    checkpoint_uuid: UUID,
    path: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> StreamingResponse:
    """One file of the checkpoint's workspace."""
    c = await checkpoints.get_checkpoint(session, principal, checkpoint_uuid)
    manifest = await checkpoints.manifest_of(runtime.blobs, c)
    entry = manifest.get(path.strip("/"))
    if entry is None or entry.get("type", "file") != "file":
        raise NotFound(f"{path!r} is not a file of checkpoint {c.id}.", code="file_not_found")
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return StreamingResponse(
        runtime.blobs.open(entry["sha256"]),
        media_type=media,
        headers={"Content-Length": str(entry["size"])},
    )


@router.post(
    "/projects/{project_uuid}/checkpoints", status_code=201, response_model=CheckpointSummary
)
async def upload(
    project_uuid: UUID,
    request: Request,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    description: str = Query("", max_length=1000),
) -> CheckpointSummary:
    """A checkpoint from a tar or tar.gz of a directory (the request body); it becomes the
    project's current checkpoint."""
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        await projects.get_project(session, principal, project_uuid)
    limit = runtime.settings.checkpoint_upload_max_mb * 1024 * 1024
    with tempfile.TemporaryFile() as spool:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(
                    f"uploads are limited to {runtime.settings.checkpoint_upload_max_mb} MB"
                )
            await asyncio.to_thread(spool.write, chunk)
        if not received:
            raise ValidationFailed("send a tar or tar.gz archive as the request body")
        spool.seek(0)
        manifest = await manifest_from_upload(runtime.blobs, spool, limit * 4)
    async with events.unit_of_work(runtime.db, runtime.bus) as session:
        c = await checkpoints.create_uploaded(
            session,
            runtime.settings,
            runtime.blobs,
            principal,
            project_uuid,
            manifest,
            description=description,
        )
        return summary_of(c)
