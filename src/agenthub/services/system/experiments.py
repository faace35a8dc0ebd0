"""Experimental hubs: a second hub started from a hub snapshot, with some settings changed,
for a limited time.

The hub process that starts one owns it (a child process that dies with it); every process
watches the experiments it owns and stops those whose time is up or whose stop was asked for
(on any replica: the request is a row update the owner sees on its next tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

import httpx
import psutil
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from agenthub.core.clock import isoformat_z, utcnow
from agenthub.core.errors import Conflict, NotFound, Unavailable, ValidationFailed
from agenthub.core.events import EventBus
from agenthub.core.processes import die_with_parent
from agenthub.core.settings import Settings
from agenthub.db.engine import Database
from agenthub.db.models import Experiment, HubInfo, HubSnapshot
from agenthub.services import events
from agenthub.services.checkpoints.blobs import BlobStore
from agenthub.services.system.hub import HUB_UUID
from agenthub.services.system.snapshots import READY, restore

log = logging.getLogger("agenthub.experiments")

STARTING, RUNNING, STOPPED, FAILED = "starting", "running", "stopped", "failed"
MAX_DAYS = 30.0
START_TIMEOUT_S = 60.0
WATCH_INTERVAL_S = 2.0
# Where an experiment lives and what it is: not the experiment's to change.
FIXED = frozenset(
    {"data_dir", "database_url", "redis_url", "redis_prefix", "secret_key", "env", "public_url"}
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def experiment_database(source: str, experiment_id: uuid.UUID) -> str:
    """The PostgreSQL database an experiment of a PostgreSQL hub runs on."""
    return f"{source}_exp_{experiment_id.hex[:12]}"


def check_changes(changes: dict[str, Any]) -> dict[str, str]:
    """Validate ``configuration_changes`` as settings; their environment form."""
    unknown = sorted(set(changes) - set(Settings.model_fields))
    if unknown:
        raise ValidationFailed(
            f"Unknown settings in configuration_changes: {', '.join(unknown)}.",
            details={"unknown": unknown},
        )
    fixed = sorted(set(changes) & FIXED)
    if fixed:
        raise ValidationFailed(
            f"An experiment cannot change {', '.join(fixed)}.", details={"fixed": fixed}
        )
    try:
        Settings(**changes)
    except ValidationError as err:
        raise ValidationFailed(f"Invalid configuration_changes: {err}") from err
    return {
        f"AGENTHUB_{key.upper()}": value if isinstance(value, str) else json.dumps(value)
        for key, value in changes.items()
    }


class Experiments:
    """The experimental hubs of this hub process."""

    def __init__(
        self, db: Database, bus: EventBus, settings: Settings, store: BlobStore, owner: str
    ) -> None:
        self.db, self.bus, self.settings, self.store, self.owner = db, bus, settings, store, owner
        self._children: dict[uuid.UUID, subprocess.Popen[bytes]] = {}

    async def spawn(
        self,
        *,
        base_checkpoint: uuid.UUID,
        name: str,
        changes: dict[str, Any],
        duration_days: float,
    ) -> Experiment:
        if not 0 < duration_days <= MAX_DAYS:
            raise ValidationFailed(
                f"experiment_duration_days must be above 0 and at most {MAX_DAYS:g}"
            )
        env_changes = check_changes(changes)
        experiment_id, hub_uuid, now = uuid.uuid4(), uuid.uuid4(), utcnow()
        data_dir = self.settings.data_dir.resolve() / "experiments" / str(experiment_id)
        async with events.unit_of_work(self.db, self.bus) as session:
            snapshot = await session.get(HubSnapshot, base_checkpoint)
            if snapshot is None:
                raise NotFound(
                    f"Hub checkpoint {base_checkpoint} not found.", code="hub_checkpoint_not_found"
                )
            if snapshot.status != READY:
                raise Conflict(f"Hub checkpoint {base_checkpoint} is {snapshot.status}.")
            database_url = (
                await self._create_database(experiment_id)
                if snapshot.database_format == "pg_dump"
                else None
            )
            experiment = Experiment(
                id=experiment_id,
                name=name,
                hub_uuid=hub_uuid,
                base_checkpoint_id=base_checkpoint,
                configuration_changes=changes,
                duration_days=duration_days,
                status=STARTING,
                owner=self.owner,
                data_dir=str(data_dir),
                created_at=now,
                ends_at=now + timedelta(days=duration_days),
            )
            session.add(experiment)
            await restore(
                session, self.store, base_checkpoint, data_dir=data_dir, database_url=database_url
            )
        url = database_url or f"sqlite+aiosqlite:///{data_dir / 'agenthub.db'}"
        await self._rename(url, hub_uuid)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHUB_")}
        env.update(env_changes)
        env.update(
            {
                "AGENTHUB_DATA_DIR": str(data_dir),
                "AGENTHUB_DATABASE_URL": url,
                "AGENTHUB_SECRET_KEY": self.settings.secret_key,
                "AGENTHUB_ENV": self.settings.env,
            }
        )
        with (data_dir / "hub.log").open("ab") as out:
            # Popen forks and execs at once; it does not wait on the child.
            child = subprocess.Popen(  # noqa: S603, ASYNC220 - our own executable
                [
                    sys.executable,
                    "-m",
                    "agenthub",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        self._children[experiment_id] = child
        hub_url = f"http://127.0.0.1:{port}"
        error = await self._wait_ready(child, hub_url)
        async with events.unit_of_work(self.db, self.bus) as session:
            row = await session.get(Experiment, experiment_id)
            assert row is not None
            row.pid, row.url = child.pid, hub_url
            if error:
                row.status, row.error, row.stopped_at = FAILED, error, utcnow()
                await asyncio.to_thread(self._terminate, experiment_id)
            else:
                row.status = RUNNING
            await events.record(
                session,
                "hub.experiment_started" if not error else "hub.experiment_failed",
                {"experiment_id": str(row.id), "name": name, "url": hub_url, "error": error},
            )
            return row

    async def _create_database(self, experiment_id: uuid.UUID) -> str:
        """A database for the experiment on the hub's own PostgreSQL server (kept after the
        experiment stops: its results are in it; ``experiment_database`` names it)."""
        source = make_url(self.settings.resolved_database_url)
        name = experiment_database(source.database or "agenthub", experiment_id)
        engine = create_async_engine(source, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.DBAPIError as err:
            raise Unavailable(
                f"Cannot create the experiment's database {name!r}: {err.orig}"
            ) from err
        finally:
            await engine.dispose()
        return source.set(database=name).render_as_string(hide_password=False)

    async def _rename(self, url: str, hub_uuid: uuid.UUID) -> None:
        """The experiment is another hub: it gets its own uuid."""
        db = Database(url)
        try:
            async with db.sessionmaker() as session, session.begin():
                await session.execute(sa.delete(HubInfo).where(HubInfo.key == HUB_UUID))
                session.add(HubInfo(key=HUB_UUID, value=str(hub_uuid)))
        finally:
            await db.dispose()

    async def _wait_ready(self, child: subprocess.Popen[bytes], url: str) -> str | None:
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2) as client:
            while asyncio.get_running_loop().time() < deadline:
                if child.poll() is not None:
                    return f"the experimental hub exited with code {child.returncode}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/api/v1/health")).status_code == 200:
                        return None
                await asyncio.sleep(0.2)
        return f"the experimental hub did not answer within {START_TIMEOUT_S:.0f} s"

    def _terminate(self, experiment_id: uuid.UUID) -> None:
        child = self._children.pop(experiment_id, None)
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)

    async def request_stop(self, experiment_id: uuid.UUID) -> Experiment:
        async with events.unit_of_work(self.db, self.bus) as session:
            row = await session.get(Experiment, experiment_id)
            if row is None:
                raise NotFound(
                    f"Experiment {experiment_id} not found.", code="experiment_not_found"
                )
            if row.status in (STOPPED, FAILED):
                raise Conflict(f"Experiment {experiment_id} is already {row.status}.")
            row.stop_requested_at = utcnow()
        await self.tick()
        async with events.unit_of_work(self.db, self.bus) as session:
            found = await session.get(Experiment, experiment_id)
            assert found is not None
            return found

    async def tick(self) -> int:
        """Stop the experiments of this process that are due or asked to stop, and mark failed
        those whose hub process on this host ended without stopping them (a crash)."""
        stopped = 0
        async with events.unit_of_work(self.db, self.bus) as session:
            stopped += await self._reap_orphans(session)
            rows = (
                await session.scalars(
                    sa.select(Experiment).where(
                        Experiment.owner == self.owner, Experiment.status == RUNNING
                    )
                )
            ).all()
            now = utcnow()
            for row in rows:
                child = self._children.get(row.id)
                died = child is None or child.poll() is not None
                if row.stop_requested_at is None and now < row.ends_at and not died:
                    continue
                await asyncio.to_thread(self._terminate, row.id)
                row.status, row.stopped_at = STOPPED, now
                if died and row.stop_requested_at is None and now < row.ends_at:
                    row.status, row.error = FAILED, "the experimental hub exited"
                await events.record(
                    session,
                    "hub.experiment_stopped",
                    {"experiment_id": str(row.id), "status": row.status},
                )
                stopped += 1
        return stopped

    async def _reap_orphans(self, session: AsyncSession) -> int:
        # The experimental hub dies with the process that started it (die_with_parent), so an
        # experiment whose owner process is gone is gone too; only this host's can be checked.
        rows = (
            await session.scalars(
                sa.select(Experiment).where(
                    Experiment.status.in_((RUNNING, STARTING)),
                    Experiment.owner != self.owner,
                    Experiment.owner.startswith(f"{socket.gethostname()}:"),
                )
            )
        ).all()
        reaped = 0
        for row in rows:
            if not owner_ended(row.owner or ""):
                continue
            row.status, row.error, row.stopped_at = FAILED, "its hub process ended", utcnow()
            await events.record(
                session,
                "hub.experiment_stopped",
                {"experiment_id": str(row.id), "status": row.status, "error": row.error},
            )
            reaped += 1
        return reaped

    async def run_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(WATCH_INTERVAL_S)
                try:
                    await self.tick()
                except Exception:
                    log.exception("experiment watch failed")
        finally:
            for experiment_id in list(self._children):
                self._terminate(experiment_id)

    async def all(self) -> list[Experiment]:
        async with events.unit_of_work(self.db, self.bus) as session:
            return list(
                (
                    await session.scalars(
                        sa.select(Experiment).order_by(Experiment.created_at.desc())
                    )
                ).all()
            )


def owner_ended(owner: str) -> bool:
    """Whether the hub process named by ``owner`` (``host:pid:nonce``, this host) has ended."""
    _host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return pid.isdigit() and not psutil.pid_exists(int(pid))


def as_dict(row: Experiment) -> dict[str, Any]:
    return {
        "experiment_id": str(row.id),
        "experimental_hub_uuid": str(row.hub_uuid),
        "name": row.name,
        "base_checkpoint": str(row.base_checkpoint_id),
        "configuration_changes": row.configuration_changes,
        "experiment_duration_days": row.duration_days,
        "status": row.status,
        "url": row.url,
        "error": row.error,
        "created_at": isoformat_z(row.created_at),
        "ends_at": isoformat_z(row.ends_at),
        "stopped_at": isoformat_z(row.stopped_at) if row.stopped_at else None,
    }
