"""Fixtures shared by the node agent's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agenthub.agent import snapshot


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_text("never read by a scan, never written by a restore\n")
    return path


@pytest.fixture
def tree(tmp_path: Path, outside: Path) -> Path:
    """A workspace with the kinds of entry a checkpoint records, skips and ignores."""
    ws = tmp_path / "ws"
    (ws / "src" / "pkg" / "deep").mkdir(parents=True)
    (ws / "src" / "pkg" / "__init__.py").write_text("")
    (ws / "src" / "pkg" / "deep" / "mod.py").write_text("print('hi')\n" * 100)
    (ws / "data.bin").write_bytes(os.urandom(3 * snapshot.CHUNK + 17))  # several hash chunks
    (ws / "run.sh").write_text("#!/bin/sh\necho run\n")
    (ws / "run.sh").chmod(0o755)
    (ws / "private.txt").write_text("mine\n")
    (ws / "private.txt").chmod(0o600)
    (ws / "empty" / "nested-empty").mkdir(parents=True)
    (ws / ".git" / "refs").mkdir(parents=True)
    (ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (ws / "src" / "pkg" / "__pycache__").mkdir()
    (ws / "src" / "pkg" / "__pycache__" / "y.pyc").write_bytes(b"\0")
    (ws / ".agenthubignore").write_text("*.log\nbuild/\n")
    (ws / "debug.log").write_text("noise\n")
    (ws / "build").mkdir()
    (ws / "build" / "out.o").write_bytes(b"\0" * 10)
    (ws / "link-out").symlink_to(outside / "secret")
    (ws / "link-dir").symlink_to("src/pkg")  # a link to a directory is not descended into
    (ws / "dangling").symlink_to("no/such/file")
    os.mkfifo(ws / "fifo")  # skipped, and never opened (opening a FIFO would block)
    return ws
