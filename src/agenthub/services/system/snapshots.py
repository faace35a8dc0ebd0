"""Hub snapshots: a consistent copy of the hub's database (SQLite's online backup, or
``pg_dump`` for PostgreSQL) stored in the blob store, with the list of blobs it references;
and restoring one into a fresh data dir or database."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub.core.clock import utcnow
from agenthub.core.errors import NotFound, Unavailable
from agenthub.core.events import EventBus
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.models import Checkpoint, HubSnapshot
from agenthub.services import events
from agenthub.services.checkpoints.blobs import BlobStore

READY, FAILED, PENDING = "ready", "failed", "pending"
DUMP_TIMEOUT_S = 3600.0


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        return None
    return Path(parsed.database)


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as pg_dump/pg_restore take it (no ``+driver``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)  # consistent while the hub keeps writing
    finally:
        dst.close()
        src.close()


async def _pg_dump(url: str, target: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "pg_dump",
        "--format=custom",
        "--no-owner",
        f"--file={target}",
        f"--dbname={libpq_url(url)}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), DUMP_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {err.decode(errors='replace').strip()}")


def _digest_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            yield chunk


async def _referenced(session: AsyncSession, store: BlobStore) -> list[str]:
    """Every blob a ready checkpoint needs: its manifest and the files it names."""
    digests: set[str] = set()
    manifests = (
        await session.scalars(
            sa.select(Checkpoint.manifest_sha256)
            .where(Checkpoint.status == READY, Checkpoint.manifest_sha256.is_not(None))
            .distinct()
        )
    ).all()
    for manifest_sha in manifests:
        assert manifest_sha is not None
        digests.add(manifest_sha)
        manifest: dict[str, Any] = json.loads(await store.read(manifest_sha))
        digests.update(e["sha256"] for e in manifest.values() if e.get("type", "file") == "file")
    return sorted(digests)


async def take(
    db: Database,
    bus: EventBus,
    settings: Settings,
    store: BlobStore,
    *,
    type_: str,
    reason: str,
    description: str,
) -> HubSnapshot:
    """Snapshot the hub now; the row says ``ready`` (or ``failed`` and why) when this returns."""
    fmt = "sqlite" if settings.is_sqlite else "pg_dump"
    async with events.unit_of_work(db, bus) as session:
        snapshot = HubSnapshot(
            id=uuid.uuid4(),
            type=type_,
            reason=reason,
            description=description,
            status=PENDING,
            database_format=fmt,
            created_at=utcnow(),
        )
        session.add(snapshot)
    error: str | None = None
    database_sha = blobs_sha = None
    size = count = 0
    try:
        with tempfile.TemporaryDirectory(prefix="agenthub-snapshot-") as tmp:
            dump = Path(tmp) / "database"
            path = sqlite_path(settings.resolved_database_url)
            if path is not None:
                await asyncio.to_thread(_sqlite_backup, path, dump)
            else:
                await _pg_dump(settings.resolved_database_url, dump)
            database_sha = await asyncio.to_thread(_digest_of, dump)
            size = await store.put(database_sha, _chunks(dump))
        async with events.unit_of_work(db, bus) as session:
            referenced = await _referenced(session, store)
        blobs_sha = await store.put_bytes(json.dumps(referenced).encode())
        count = len(referenced)
    except (OSError, RuntimeError, TimeoutError, sqlite3.Error) as err:
        error = f"{type(err).__name__}: {err}"
    async with events.unit_of_work(db, bus) as session:
        row = await session.get(HubSnapshot, snapshot.id)
        assert row is not None
        row.status = FAILED if error else READY
        row.error = error
        row.database_sha256, row.blobs_sha256 = database_sha, blobs_sha
        row.size_bytes, row.blob_count = size, count
        row.completed_at = utcnow()
        await events.record(
            session,
            "hub.checkpoint_failed" if error else "hub.checkpoint_created",
            {"checkpoint_uuid": str(row.id), "status": row.status, "error": error},
        )
        snapshot = row
    return snapshot


async def latest_ready(session: AsyncSession) -> HubSnapshot | None:
    return (
        await session.scalars(
            sa.select(HubSnapshot)
            .where(HubSnapshot.status == READY)
            .order_by(HubSnapshot.created_at.desc())
            .limit(1)
        )
    ).first()


async def restore(
    session: AsyncSession,
    store: BlobStore,
    snapshot_id: uuid.UUID,
    *,
    data_dir: Path,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Restore a snapshot: its database into ``data_dir`` (SQLite) or ``database_url``
    (PostgreSQL, via pg_restore), and every blob it references into ``data_dir/blobs``, so the
    restored hub stands on its own."""
    snapshot = await session.get(HubSnapshot, snapshot_id)
    if snapshot is None or snapshot.status != READY or snapshot.database_sha256 is None:
        raise NotFound(f"No ready hub checkpoint {snapshot_id}.", code="hub_checkpoint_not_found")
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agenthub-restore-") as tmp:
        dump = Path(tmp) / "database"
        with dump.open("wb") as f:
            async for chunk in store.open(snapshot.database_sha256):
                f.write(chunk)
        if snapshot.database_format == "sqlite":
            target = data_dir / "agenthub.db"
            if target.exists():
                raise Unavailable(f"{target} exists: restore into an empty data dir")
            await asyncio.to_thread(shutil.copyfile, dump, target)
        else:
            if not database_url:
                raise Unavailable("a pg_dump snapshot restores into --database-url")
            proc = await asyncio.create_subprocess_exec(
                "pg_restore",
                "--no-owner",
                "--clean",
                "--if-exists",
                f"--dbname={libpq_url(database_url)}",
                str(dump),
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise Unavailable(f"pg_restore failed: {err.decode(errors='replace').strip()}")
    copied = 0
    if snapshot.blobs_sha256 is not None:
        from agenthub.services.checkpoints.blobs import LocalBlobStore

        target_store = LocalBlobStore(data_dir / "blobs")
        wanted: list[str] = json.loads(await store.read(snapshot.blobs_sha256))
        for digest in sorted(await target_store.missing(wanted)):
            await target_store.put(digest, store.open(digest))
            copied += 1
        await target_store.close()
    return {
        "checkpoint_uuid": str(snapshot.id),
        "database_format": snapshot.database_format,
        "data_dir": str(data_dir),
        "blobs_copied": copied,
    }
