"""Experiments whose hub process crashed are marked failed by the next hub on the host."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from agenthub.core.clock import utcnow
from agenthub.core.events import InProcessBus
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.migrate import upgrade
from agenthub.db.models import Event, Experiment, HubSnapshot
from agenthub.services.checkpoints.blobs import LocalBlobStore
from agenthub.services.system.experiments import RUNNING, Experiments, owner_ended
from tests.support import Backend

pytestmark = pytest.mark.db


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_ended() -> None:
    host = socket.gethostname()
    assert not owner_ended(f"{host}:{os.getpid()}:abcd")
    assert owner_ended(f"{host}:{_dead_pid()}:abcd")
    assert not owner_ended("garbage")


async def test_orphaned_experiments_of_this_host_are_failed(
    backend_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    backend: Backend = backend_factory()
    await asyncio.to_thread(upgrade, backend.database_url)
    db = Database(backend.database_url)
    host = socket.gethostname()
    owners = {
        "crashed": f"{host}:{_dead_pid()}:dead",
        "alive": f"{host}:{os.getpid()}:other",
        "elsewhere": f"some-other-host:{_dead_pid()}:far",
    }
    now = utcnow()
    snapshot = uuid.uuid4()
    try:
        async with db.session() as session:
            session.add(
                HubSnapshot(
                    id=snapshot, status="ready", database_format="sqlite_backup", created_at=now
                )
            )
            await session.flush()
            for name, owner in owners.items():
                session.add(
                    Experiment(
                        name=name,
                        hub_uuid=uuid.uuid4(),
                        base_checkpoint_id=snapshot,
                        duration_days=1,
                        status=RUNNING,
                        owner=owner,
                        created_at=now,
                        ends_at=now + timedelta(days=1),
                    )
                )
        settings = Settings(database_url=backend.database_url, data_dir=tmp_path)
        experiments = Experiments(
            db, InProcessBus(), settings, LocalBlobStore(tmp_path / "blobs"), f"{host}:1:me"
        )
        assert await experiments.tick() == 1
        async with db.session() as session:
            rows = {e.name: e for e in await session.scalars(sa.select(Experiment))}
            stopped = (
                await session.scalars(
                    sa.select(Event).where(Event.type == "hub.experiment_stopped")
                )
            ).all()
        assert rows["crashed"].status == "failed"
        assert rows["crashed"].error == "its hub process ended"
        assert rows["crashed"].stopped_at is not None
        assert rows["alive"].status == RUNNING
        assert rows["elsewhere"].status == RUNNING
        assert [e.data["status"] for e in stopped] == ["failed"]
        # Nothing left to do the second time.
        assert await experiments.tick() == 0
    finally:
        await db.dispose()
