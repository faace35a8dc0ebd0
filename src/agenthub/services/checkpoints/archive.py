"""Checkpoints as tar.gz archives: streamed out of the blob store, and read in from a user's
upload (so a project can be seeded with an existing directory)."""

from __future__ import annotations

import asyncio
import hashlib
import stat
import tarfile
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import PurePosixPath
from typing import IO, Any

from agenthub.core.errors import ValidationFailed
from agenthub.services.checkpoints.blobs import BlobStore

_BLOCK = 512


def _compressor() -> Any:
    return zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip stream


async def tar_gz(store: BlobStore, manifest: dict[str, Any], mtime: int) -> AsyncIterator[bytes]:
    """The manifest's tree as a gzipped tar stream, file contents read from ``store`` as they
    are sent (nothing is staged on disk or held whole in memory)."""
    gz = _compressor()
    for path in sorted(manifest):
        entry = manifest[path]
        kind = entry.get("type", "file")
        info = tarfile.TarInfo(path)
        info.mtime = mtime
        info.mode = int(entry.get("mode", 0o644)) & 0o7777
        if kind == "dir":
            info.type = tarfile.DIRTYPE
        elif kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = str(entry.get("target", ""))
            info.mode = 0o777
        else:
            info.size = int(entry["size"])
        if out := gz.compress(info.tobuf(format=tarfile.PAX_FORMAT)):
            yield out
        if kind == "file":
            async for chunk in store.open(entry["sha256"]):
                if out := gz.compress(chunk):
                    yield out
            if pad := -info.size % _BLOCK:
                gz.compress(b"\0" * pad)
    gz.compress(b"\0" * (2 * _BLOCK))
    yield gz.flush()


def _member_path(name: str) -> str:
    path = PurePosixPath(name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or not parts or "\x00" in name:
        raise ValidationFailed(f"the archive holds an unsafe path: {name!r}")
    return "/".join(parts)


def read_tar(
    fileobj: IO[bytes], put: Callable[[bytes], str], limit_bytes: int
) -> dict[str, dict[str, Any]]:
    """A manifest from a tar (any compression tarfile reads); each file's content goes through
    ``put`` (which stores it and returns its digest). Links are recorded, never followed;
    hard links, devices and FIFOs are refused."""
    manifest: dict[str, dict[str, Any]] = {}
    total = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
            for member in archive:
                path = _member_path(member.name)
                mode = member.mode & 0o7777 & ~(stat.S_ISUID | stat.S_ISGID)
                if member.isdir():
                    manifest.setdefault(
                        path, {"type": "dir", "mode": mode, "size": 0, "sha256": ""}
                    )
                elif member.issym():
                    target = member.linkname.encode()
                    manifest[path] = {
                        "type": "symlink",
                        "target": member.linkname,
                        "size": len(target),
                        "sha256": hashlib.sha256(target).hexdigest(),
                        "mode": 0o120777,
                    }
                elif member.isfile():
                    total += member.size
                    if total > limit_bytes:
                        raise ValidationFailed(
                            f"the archive unpacks to more than {limit_bytes} bytes"
                        )
                    source = archive.extractfile(member)
                    assert source is not None  # a regular file always has content
                    manifest[path] = {
                        "size": member.size,
                        "sha256": put(source.read()),
                        "mode": mode,
                    }
                else:
                    raise ValidationFailed(
                        f"the archive holds {member.name!r}, which is not a file, directory "
                        "or symbolic link"
                    )
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ValidationFailed(f"not a readable tar or tar.gz archive: {err}") from err
    # A directory entry is only kept when nothing under it is recorded.
    for path in [p for p, e in manifest.items() if e.get("type") == "dir"]:
        if any(other.startswith(path + "/") for other in manifest):
            del manifest[path]
    return manifest


async def manifest_from_upload(
    store: BlobStore, fileobj: IO[bytes], limit_bytes: int
) -> dict[str, dict[str, Any]]:
    """Store the files of an uploaded archive; their manifest."""
    loop = asyncio.get_running_loop()

    def put(data: bytes) -> str:
        return asyncio.run_coroutine_threadsafe(store.put_bytes(data), loop).result()

    return await asyncio.to_thread(read_tar, fileobj, put, limit_bytes)
