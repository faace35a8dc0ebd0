"""Hub snapshots: POST /hub/checkpoint copies the database and lists its blobs; the snapshot is
named by /hub/status and /health; ``agenthub hub restore`` brings it up as a second hub."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from agenthub.services.system.experiments import experiment_database
from tests.api.hub_support import hub_error
from tests.conftest import _postgres_admin, new_database
from tests.support import Backend, HubProcess, bearer, run_cli

pytestmark = pytest.mark.db


def one_file_tar(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_snapshot_then_restore_into_a_second_hub(
    backend: Backend, hub: HubProcess, admin_key: str, tmp_path: Path
) -> None:
    admin = httpx.Client(base_url=hub.url, headers=bearer(admin_key), timeout=60)
    project = admin.post("/api/v1/projects", json={"name": "snapshotted"}).json()["uuid"]
    uploaded = admin.post(
        f"/api/v1/projects/{project}/checkpoints",
        content=one_file_tar("kept.txt", b"kept across the restore\n"),
    ).json()["uuid"]

    r = admin.post(
        "/api/v1/hub/checkpoint",
        json={"type": "manual", "reason": "before upgrade", "description": "nightly"},
    )
    assert r.status_code == 201, r.text
    snap = r.json()
    assert snap["status"] == "ready"
    assert snap["database_format"] == ("sqlite" if backend.name == "sqlite" else "pg_dump")
    assert snap["size_bytes"] > 0
    assert snap["blob_count"] >= 2
    assert snap["created_at"].endswith("Z")
    assert admin.get("/api/v1/hub/status").json()["last_checkpoint"] == snap["checkpoint_uuid"]
    assert admin.get("/api/v1/health").json()["last_checkpoint"] == snap["checkpoint_uuid"]
    member_key = admin.post("/api/auth/keys", json={"name": "m", "role": "member"}).json()["data"][
        "key"
    ]
    hub_error(
        httpx.post(f"{hub.url}/api/v1/hub/checkpoint", json={}, headers=bearer(member_key)),
        403,
        "FORBIDDEN",
    )
    # Made after the snapshot: the restored hub must not have it.
    later = admin.post("/api/v1/projects", json={"name": "after"}).json()["uuid"]

    restored_dir = tmp_path / "restored"
    target = Backend(
        backend.name,
        new_database(tmp_path) if backend.name == "postgres" else "",
        backend.redis_url,
        f"agenthub-restored-{uuid.uuid4().hex[:8]}:",
    )
    args = ["hub", "restore", snap["checkpoint_uuid"], "--data-dir", str(restored_dir), "--json"]
    if backend.name == "postgres":
        args += ["--database-url", target.database_url]
    result = json.loads(run_cli(hub.env, *args).stdout)
    assert result["blobs_copied"] == snap["blob_count"]
    env = target.env(restored_dir)
    if backend.name == "sqlite":
        env["AGENTHUB_DATABASE_URL"] = f"sqlite+aiosqlite:///{restored_dir / 'agenthub.db'}"
    second = HubProcess(env, tmp_path / "restored-hub.log")
    try:
        other = httpx.Client(base_url=second.url, headers=bearer(admin_key), timeout=30)
        assert other.get(f"/api/v1/projects/{project}").status_code == 200
        assert other.get(f"/api/v1/projects/{later}").status_code == 404
        kept = other.get(f"/api/v1/checkpoints/{uploaded}/files/kept.txt")
        assert kept.status_code == 200
        assert kept.content == b"kept across the restore\n"
        other.close()
    finally:
        second.stop()
    admin.close()
    bad = run_cli(
        hub.env, "hub", "restore", str(uuid.uuid4()), "--data-dir", str(tmp_path / "x"), check=False
    )
    assert bad.returncode != 0


def test_experimental_hubs_start_from_a_snapshot_and_stop(
    backend: Backend, hub: HubProcess, admin_key: str
) -> None:
    admin = httpx.Client(base_url=hub.url, headers=bearer(admin_key), timeout=90)
    project = admin.post("/api/v1/projects", json={"name": "before-experiment"}).json()["uuid"]
    snap = admin.post("/api/v1/hub/checkpoint", json={"reason": "experiment"}).json()
    body = {
        "base_checkpoint": snap["checkpoint_uuid"],
        "experiment_name": "spread",
        "configuration_changes": {"scheduler_strategy": "spread"},
        "experiment_duration_days": 1,
    }
    hub_error(
        admin.post(
            "/api/v1/hub/spawn-experimental",
            json={**body, "configuration_changes": {"no_such_setting": 1}},
        ),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(
        admin.post(
            "/api/v1/hub/spawn-experimental",
            json={**body, "configuration_changes": {"database_url": "sqlite://"}},
        ),
        400,
        "VALIDATION_ERROR",
    )
    hub_error(
        admin.post(
            "/api/v1/hub/spawn-experimental", json={**body, "base_checkpoint": str(uuid.uuid4())}
        ),
        404,
        "NOT_FOUND",
    )
    r = admin.post("/api/v1/hub/spawn-experimental", json=body)
    assert r.status_code == 201, r.text
    started = r.json()
    assert started["status"] == "running"
    assert started["configuration_changes"] == {"scheduler_strategy": "spread"}
    url = started["url"]
    experimental = httpx.Client(base_url=url, headers=bearer(admin_key), timeout=30)
    status = experimental.get("/api/v1/hub/status").json()
    assert status["hub_uuid"] == started["experimental_hub_uuid"]
    assert status["hub_uuid"] != admin.get("/api/v1/hub/status").json()["hub_uuid"]
    assert experimental.get(f"/api/v1/projects/{project}").status_code == 200
    listed = admin.get("/api/v1/hub/experiments").json()["experiments"]
    assert started["experiment_id"] in [e["experiment_id"] for e in listed]

    stopped = admin.post(f"/api/v1/hub/experiments/{started['experiment_id']}/stop").json()
    assert stopped["status"] == "stopped"
    with pytest.raises(httpx.ConnectError):
        experimental.get("/api/v1/health")
    experimental.close()
    hub_error(
        admin.post(f"/api/v1/hub/experiments/{started['experiment_id']}/stop"), 409, "CONFLICT"
    )

    # One whose time is up is stopped by the hub on its own.
    short = admin.post(
        "/api/v1/hub/spawn-experimental", json={**body, "experiment_duration_days": 3 / 86400}
    ).json()
    assert short["status"] == "running"
    for _ in range(100):
        found = [
            e
            for e in admin.get("/api/v1/hub/experiments").json()["experiments"]
            if e["experiment_id"] == short["experiment_id"]
        ]
        if found[0]["status"] == "stopped":
            break
        time.sleep(0.2)
    assert found[0]["status"] == "stopped"
    admin.close()
    if backend.name == "postgres":
        # Each experiment of a PostgreSQL hub got its own database on the same server.
        source = make_url(backend.database_url).database
        for experiment in (started, short):
            name = experiment_database(source or "", uuid.UUID(experiment["experiment_id"]))
            _postgres_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
