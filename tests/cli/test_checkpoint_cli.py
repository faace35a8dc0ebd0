"""``agenthub checkpoint push|pull`` against a running hub: a directory goes up as the
project's checkpoint and comes back down the same."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.support import HubProcess, bearer, run_cli

pytestmark = pytest.mark.db


def test_push_then_pull_round_trips_a_directory(
    hub: HubProcess, admin_key: str, tmp_path: Path
) -> None:
    project = httpx.post(
        f"{hub.url}/api/v1/projects", json={"name": "cli-seed"}, headers=bearer(admin_key)
    ).json()["uuid"]
    source = tmp_path / "repo"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (source / "pkg" / "tool.sh").chmod(0o755)
    (source / "notes.md").write_text("notes\n")
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    os.symlink("pkg/tool.sh", source / "tool")
    flags = ["--url", hub.url, "--key", admin_key, "--json"]

    pushed = run_cli(hub.env, "checkpoint", "push", str(source), "--project", project, *flags)
    created = json.loads(pushed.stdout)
    assert created["file_count"] == 2
    current = httpx.get(f"{hub.url}/api/v1/projects/{project}", headers=bearer(admin_key)).json()
    assert current["current_checkpoint"] == created["uuid"]

    target = tmp_path / "copy"
    pulled = json.loads(
        run_cli(hub.env, "checkpoint", "pull", created["uuid"], str(target), *flags).stdout
    )
    assert pulled["files"] == 2
    assert (target / "pkg" / "tool.sh").read_text() == "#!/bin/sh\necho tool\n"
    assert (target / "pkg" / "tool.sh").stat().st_mode & 0o777 == 0o755
    assert (target / "notes.md").read_text() == "notes\n"
    assert os.readlink(target / "tool") == "pkg/tool.sh"
    assert not (target / "__pycache__").exists()

    refused = run_cli(
        hub.env, "checkpoint", "pull", created["uuid"], str(target), *flags, check=False
    )
    assert refused.returncode != 0
    assert "not empty" in " ".join((refused.stderr + refused.stdout).split())
    wrong = run_cli(
        hub.env, "checkpoint", "push", str(source), "--project", "not-a-uuid", *flags, check=False
    )
    assert wrong.returncode != 0
    assert "400" in " ".join((wrong.stderr + wrong.stdout).split())
