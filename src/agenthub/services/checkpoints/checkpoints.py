"""Checkpoints of machine workspaces: requested by the hub, taken and uploaded by the node that
holds the workspace, committed here once every blob it names is stored.

Life of a checkpoint: ``waiting`` (its machine is being stopped; taken once it has) →
``pending`` (the node is asked on its next poll) → ``ready`` | ``failed``. A project's first
checkpoint is its empty ``initial`` one.
"""

from __future__ import annotations

import difflib
import json
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.auth import Principal
from agenthub.core.clock import utcnow
from agenthub.core.errors import Conflict, LimitExceeded, NotFound, ValidationFailed
from agenthub.core.pagination import Page
from agenthub.core.settings import Settings
from agenthub.db.models import Checkpoint, Machine, Project
from agenthub.services import events
from agenthub.services.checkpoints.blobs import BlobStore, is_digest
from agenthub.services.projects.budgets import allocations
from agenthub.services.projects.projects import can_see, get_project

TYPES = ("initial", "automatic", "manual", "terminate")
WAITING, PENDING, READY, FAILED = "waiting", "pending", "ready", "failed"
MAX_MANIFEST_ENTRIES = 1_000_000


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The canonical encoding (so equal workspaces share one manifest blob)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def _event(checkpoint: Checkpoint, **extra: Any) -> dict[str, Any]:
    return {
        "checkpoint_uuid": str(checkpoint.id),
        "project_uuid": str(checkpoint.project_id),
        "machine_uuid": str(checkpoint.machine_id) if checkpoint.machine_id else None,
        "type": checkpoint.type,
        "status": checkpoint.status,
        **extra,
    }


async def record(session: AsyncSession, checkpoint: Checkpoint, type_: str, **extra: Any) -> None:
    await events.record(
        session, type_, _event(checkpoint, **extra), project_id=checkpoint.project_id
    )


async def create_initial(session: AsyncSession, store: BlobStore, project: Project) -> Checkpoint:
    """A project's empty first checkpoint; it becomes the project's current one."""
    digest = await store.put_bytes(manifest_bytes({}))
    now = utcnow()
    checkpoint = Checkpoint(
        id=uuid.uuid4(),
        project_id=project.id,
        type="initial",
        status=READY,
        description="The project's empty initial workspace.",
        meta={"trigger": "project_created", "machine_context": None},
        manifest_sha256=digest,
        size_bytes=0,
        file_count=0,
        created_at=now,
        completed_at=now,
    )
    session.add(checkpoint)
    await session.flush()
    project.current_checkpoint_id = checkpoint.id
    await record(session, checkpoint, "checkpoint.ready")
    return checkpoint


async def request(
    session: AsyncSession,
    machine: Machine,
    *,
    type_: str,
    trigger: str,
    node_id: str | None,
    workspace: str | None,
    description: str = "",
    context: str | None = None,
    waiting: bool = False,
) -> Checkpoint:
    """Ask for a checkpoint of ``machine``'s workspace (``waiting``: once it has stopped)."""
    checkpoint = Checkpoint(
        id=uuid.uuid4(),
        project_id=machine.project_id,
        parent_id=machine.last_checkpoint_id or machine.checkpoint_id,
        machine_id=machine.id,
        type=type_,
        status=WAITING if waiting else PENDING,
        description=description,
        meta={"trigger": trigger, "machine_context": context or machine.vm_id},
        node_id=node_id,
        workspace=workspace,
        created_at=utcnow(),
    )
    session.add(checkpoint)
    await session.flush()
    if not waiting:
        await record(session, checkpoint, "checkpoint.requested", node_id=node_id)
    return checkpoint


async def release_waiting(
    session: AsyncSession, machine: Machine, node_id: str | None, workspace: str
) -> list[Checkpoint]:
    """The machine has stopped: its ``waiting`` checkpoints are now asked of its node."""
    rows = (
        await session.scalars(
            sa.select(Checkpoint).where(
                Checkpoint.machine_id == machine.id, Checkpoint.status == WAITING
            )
        )
    ).all()
    for checkpoint in rows:
        checkpoint.node_id, checkpoint.workspace = node_id, workspace
        if node_id is None:
            checkpoint.status, checkpoint.error = FAILED, "the machine never ran on a node"
            await record(session, checkpoint, "checkpoint.failed", error=checkpoint.error)
        else:
            checkpoint.status = PENDING
            await record(session, checkpoint, "checkpoint.requested", node_id=node_id)
    return list(rows)


async def get_checkpoint(
    session: AsyncSession, principal: Principal, checkpoint_id: uuid.UUID
) -> Checkpoint:
    row = (
        await session.execute(
            sa.select(Checkpoint, Project)
            .join(Project, Project.id == Checkpoint.project_id)
            .where(Checkpoint.id == checkpoint_id)
        )
    ).one_or_none()
    if row is None or not can_see(principal, row[1]):
        raise NotFound(f"Checkpoint {checkpoint_id} not found.", code="checkpoint_not_found")
    return row[0]


async def list_checkpoints(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    page: Page,
    type_: str | None = None,
) -> tuple[Sequence[Checkpoint], int]:
    await get_project(session, principal, project_id)
    stmt = sa.select(Checkpoint).where(Checkpoint.project_id == project_id)
    if type_ is not None:
        if type_ not in TYPES:
            raise ValidationFailed(f"type must be one of {', '.join(TYPES)}")
        stmt = stmt.where(Checkpoint.type == type_)
    total = await session.scalar(sa.select(sa.func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(
        stmt.order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    return rows.all(), int(total or 0)


async def count_ready(session: AsyncSession, project_id: uuid.UUID) -> int:
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(Checkpoint)
            .where(Checkpoint.project_id == project_id, Checkpoint.status == READY)
        )
        or 0
    )


async def manifest_of(store: BlobStore, checkpoint: Checkpoint) -> dict[str, Any]:
    if checkpoint.status != READY or checkpoint.manifest_sha256 is None:
        raise Conflict(
            f"Checkpoint {checkpoint.id} is {checkpoint.status}; it has no files yet.",
            code="checkpoint_not_ready",
        )
    manifest: dict[str, Any] = json.loads(await store.read(checkpoint.manifest_sha256))
    return manifest


def diff_manifests(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Paths added in ``b``, modified (content, mode, kind or link target) and deleted.
    Empty directories are in manifests only so that they survive a restore; they are not files
    and are left out here."""
    a = {p: e for p, e in a.items() if e.get("type") != "dir"}
    b = {p: e for p, e in b.items() if e.get("type") != "dir"}
    added = sorted(set(b) - set(a))
    deleted = sorted(set(a) - set(b))
    modified = sorted(p for p in set(a) & set(b) if _identity(a[p]) != _identity(b[p]))
    return added, modified, deleted


def _identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    # A missing type means a regular file: manifests from a node scan and from an uploaded
    # archive must compare equal for the same file.
    return (
        entry.get("type") or "file",
        entry.get("sha256"),
        entry.get("mode"),
        entry.get("target"),
    )


def summary(added: list[str], modified: list[str], deleted: list[str]) -> str:
    if not (added or modified or deleted):
        return "No changes."
    parts = []
    for count, word in (
        (len(added), "added"),
        (len(modified), "modified"),
        (len(deleted), "deleted"),
    ):
        if count:
            parts.append(f"{count} file{'s' if count != 1 else ''} {word}")
    return ", ".join(parts) + "."


def _check_manifest(manifest: dict[str, Any]) -> tuple[set[str], int, int]:
    """Validate an uploaded manifest; the blobs it names, its size and file count."""
    if len(manifest) > MAX_MANIFEST_ENTRIES:
        raise ValidationFailed(f"a manifest has at most {MAX_MANIFEST_ENTRIES} entries")
    digests: set[str] = set()
    size = files = 0
    for path, entry in manifest.items():
        if (
            not path
            or path.startswith("/")
            or ".." in path.split("/")
            or "\x00" in path
            or not isinstance(entry, dict)
        ):
            raise ValidationFailed(f"invalid manifest entry {path!r}")
        kind = entry.get("type", "file")
        if kind == "file":
            digest = entry.get("sha256")
            if not isinstance(digest, str) or not is_digest(digest):
                raise ValidationFailed(f"manifest entry {path!r} has no valid sha256")
            digests.add(digest)
            size += int(entry.get("size", 0))
            files += 1
        elif kind not in ("symlink", "dir"):
            raise ValidationFailed(f"manifest entry {path!r} has an unknown type {kind!r}")
    return digests, size, files


class _DigestCache:
    """File digests of manifests, by the manifest's own digest: a pure function of that digest
    (manifests are content-addressed), so one cache per process serves every store. Holds at
    most ``limit`` digests in all; the least recently used manifests go first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._sets: OrderedDict[str, frozenset[str]] = OrderedDict()

    def get(self, manifest_sha256: str) -> frozenset[str] | None:
        digests = self._sets.get(manifest_sha256)
        if digests is not None:
            self._sets.move_to_end(manifest_sha256)
        return digests

    def put(self, manifest_sha256: str, digests: frozenset[str]) -> None:
        if manifest_sha256 in self._sets or len(digests) > self.limit:
            return
        self._sets[manifest_sha256] = digests
        self.held += len(digests)
        while self.held > self.limit:
            self.held -= len(self._sets.popitem(last=False)[1])


MANIFEST_DIGESTS = _DigestCache(200_000)  # ~25 MB at most


async def manifest_digests(store: BlobStore, manifest_sha256: str) -> frozenset[str]:
    """The file digests of the stored manifest ``manifest_sha256``."""
    digests = MANIFEST_DIGESTS.get(manifest_sha256)
    if digests is None:
        manifest = json.loads(await store.read(manifest_sha256))
        digests = frozenset(
            e["sha256"] for e in manifest.values() if e.get("type", "file") == "file"
        )
        MANIFEST_DIGESTS.put(manifest_sha256, digests)
    return digests


async def store_manifest(store: BlobStore, manifest: dict[str, Any], digests: set[str]) -> str:
    """Store ``manifest`` (whose file digests are ``digests``) as a blob; its digest. The
    digests are remembered: the commit of its child checkpoint looks them up."""
    manifest_sha256 = await store.put_bytes(manifest_bytes(manifest))
    MANIFEST_DIGESTS.put(manifest_sha256, frozenset(digests))
    return manifest_sha256


async def _vouched(
    session: AsyncSession, store: BlobStore, checkpoint: Checkpoint
) -> frozenset[str]:
    """Blobs known to be stored because the checkpoint's parent, a ready one, references them.

    A ready checkpoint's blobs were all there when it was committed, and nothing removes them
    while it exists: no checkpoint is ever deleted, no blob either (``BlobStore.delete`` has no
    caller), and a hub snapshot copies every referenced blob. A blob garbage collector would
    have to keep whatever a ready checkpoint references, or this shortcut must go.
    """
    if checkpoint.parent_id is None:
        return frozenset()
    parent = await session.get(Checkpoint, checkpoint.parent_id)
    if parent is None or parent.status != READY or parent.manifest_sha256 is None:
        return frozenset()
    try:
        return await manifest_digests(store, parent.manifest_sha256)
    except Exception:  # unreadable: then every blob is checked, as without a parent
        return frozenset()


async def commit(
    session: AsyncSession,
    store: BlobStore,
    node_id: str,
    checkpoint_id: uuid.UUID,
    *,
    manifest: dict[str, Any] | None,
    error: str | None = None,
) -> Checkpoint:
    """The node's answer to a pending checkpoint: its manifest (every blob already uploaded),
    or why it could not take it. Every blob the manifest names must be stored; those its
    parent checkpoint references are known to be, so only the others are looked up."""
    checkpoint = (
        await session.scalars(
            sa.select(Checkpoint).where(Checkpoint.id == checkpoint_id).with_for_update()
        )
    ).one_or_none()
    if checkpoint is None or checkpoint.node_id != node_id:
        raise NotFound(f"Checkpoint {checkpoint_id} not found.", code="checkpoint_not_found")
    if checkpoint.status != PENDING:
        raise Conflict(f"Checkpoint {checkpoint_id} is {checkpoint.status}, not pending.")
    now = utcnow()
    if manifest is None:
        checkpoint.status, checkpoint.error, checkpoint.completed_at = FAILED, error, now
        await record(session, checkpoint, "checkpoint.failed", error=error)
        return checkpoint
    digests, size, files = _check_manifest(manifest)
    lacking = await store.missing(digests - await _vouched(session, store, checkpoint))
    if lacking:
        raise ValidationFailed(
            f"{len(lacking)} blob(s) of the manifest were not uploaded",
            code="blobs_missing",
            details={"missing": sorted(lacking)[:100]},
        )
    checkpoint.manifest_sha256 = await store_manifest(store, manifest, digests)
    checkpoint.size_bytes, checkpoint.file_count = size, files
    checkpoint.status, checkpoint.completed_at = READY, now
    if checkpoint.machine_id is not None:
        await session.execute(
            sa.update(Machine)
            .where(Machine.id == checkpoint.machine_id)
            .values(
                last_checkpoint_id=checkpoint.id,
                checkpoints_created=Machine.checkpoints_created + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            sa.update(Project)
            .where(Project.id == checkpoint.project_id)
            .values(current_checkpoint_id=checkpoint.id, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    await record(session, checkpoint, "checkpoint.ready", size_bytes=size, file_count=files)
    return checkpoint


async def pending_for_node(session: AsyncSession, node_id: str) -> Sequence[Checkpoint]:
    return (
        await session.scalars(
            sa.select(Checkpoint)
            .where(Checkpoint.node_id == node_id, Checkpoint.status == PENDING)
            .order_by(Checkpoint.created_at)
        )
    ).all()


async def expire_pending(session: AsyncSession, older_than_s: float) -> int:
    """Fail checkpoints a node has not delivered in time (it died, or lost the workspace)."""
    now = utcnow()
    rows = (
        await session.scalars(
            sa.select(Checkpoint).where(
                Checkpoint.status == PENDING,
                Checkpoint.created_at < now - timedelta(seconds=older_than_s),
            )
        )
    ).all()
    for checkpoint in rows:
        checkpoint.status, checkpoint.completed_at = FAILED, now
        checkpoint.error = f"the node did not deliver it within {older_than_s:.0f} s"
        await record(session, checkpoint, "checkpoint.failed", error=checkpoint.error)
    return len(rows)


GB = 1024**3


async def storage_used(session: AsyncSession, project_id: uuid.UUID) -> int:
    """Bytes the project's ready checkpoints hold (each counted whole, as a user sees them)."""
    return int(
        await session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Checkpoint.size_bytes), 0)).where(
                Checkpoint.project_id == project_id, Checkpoint.status == READY
            )
        )
        or 0
    )


async def create_uploaded(
    session: AsyncSession,
    settings: Settings,
    store: BlobStore,
    principal: Principal,
    project_id: uuid.UUID,
    manifest: dict[str, Any],
    *,
    description: str = "",
) -> Checkpoint:
    """A checkpoint from a user's upload (its blobs already stored); it becomes the project's
    current checkpoint, so the next machine starts from it."""
    project = await get_project(session, principal, project_id, lock=True)
    _, size, files = _check_manifest(manifest)
    allocation = (await allocations(session, settings, [project]))[project.id]
    used = await storage_used(session, project.id)
    available = allocation.storage_gb * GB - used
    if size > available:
        raise LimitExceeded(
            "The project's storage budget cannot hold this checkpoint: "
            f"it needs {size} bytes, {max(0, int(available))} are left.",
            code="storage_exceeded",
            details={
                "required_storage_bytes": size,
                "available_storage_bytes": max(0, int(available)),
                "storage_gb": allocation.storage_gb,
            },
        )
    now = utcnow()
    checkpoint = Checkpoint(
        id=uuid.uuid4(),
        project_id=project.id,
        parent_id=project.current_checkpoint_id,
        type="manual",
        status=READY,
        description=description or "Uploaded by a user.",
        meta={"trigger": "upload", "machine_context": None, "uploaded_by": principal.name},
        manifest_sha256=await store.put_bytes(manifest_bytes(manifest)),
        size_bytes=size,
        file_count=files,
        created_at=now,
        completed_at=now,
    )
    session.add(checkpoint)
    await session.flush()
    project.current_checkpoint_id = checkpoint.id
    project.updated_at = now
    await record(session, checkpoint, "checkpoint.ready", size_bytes=size, file_count=files)
    return checkpoint


PATCH_FILE_LIMIT = 256 * 1024
PATCH_TOTAL_LIMIT = 4 * 1024 * 1024


async def unified_patch(
    store: BlobStore,
    a: dict[str, Any],
    b: dict[str, Any],
    paths: list[str],
) -> tuple[str, list[str]]:
    """A unified diff of the text files among ``paths`` (as ``git diff`` would show them), and
    the paths left out: binary, larger than :data:`PATCH_FILE_LIMIT`, or past the total limit."""

    async def text(manifest: dict[str, Any], path: str) -> list[str] | None:
        entry = manifest.get(path)
        if entry is None or entry.get("type", "file") != "file":
            return []
        if int(entry["size"]) > PATCH_FILE_LIMIT:
            return None
        data = await store.read(entry["sha256"])
        if b"\x00" in data:
            return None
        try:
            return data.decode().splitlines(keepends=True)
        except UnicodeDecodeError:
            return None

    out: list[str] = []
    skipped: list[str] = []
    total = 0
    for path in paths:
        old, new = await text(a, path), await text(b, path)
        if old is None or new is None or total > PATCH_TOTAL_LIMIT:
            skipped.append(path)
            continue
        chunk = "".join(
            difflib.unified_diff(
                old,
                new,
                fromfile=f"a/{path}" if path in a else "/dev/null",
                tofile=f"b/{path}" if path in b else "/dev/null",
            )
        )
        total += len(chunk)
        out.append(chunk if chunk.endswith("\n") or not chunk else chunk + "\n")
    return "".join(out), skipped
