"""Helpers shared by the tests of workspace scans, rescans and restores."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from agenthub.agent import snapshot
from agenthub.agent.snapshot import Manifest

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64


def past_racy_window() -> None:
    """Files written just now are re-hashed by the next scan whatever their stat; wait that out."""
    time.sleep(snapshot.RACY_WINDOW_NS / 1e9 + 0.05)


def sha256sum(root: Path, rels: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sha256sum", "--", *rels], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    return {path: digest for digest, path in (line.split("  ", 1) for line in out.splitlines())}


def file_digests(manifest: Manifest) -> dict[str, str]:
    return {path: e["sha256"] for path, e in manifest.items() if "type" not in e}


def file_entry(digest: str = DIGEST_A, mode: int = 0o644) -> dict[str, object]:
    return {"size": 1, "sha256": digest, "mode": mode}
