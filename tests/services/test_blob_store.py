"""The checkpoint blob store: the same behaviour from the local directory and from S3.

Every test runs on a LocalBlobStore in a temp dir and on an S3BlobStore talking HTTP to a real
S3-compatible server (moto's server mode) on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agenthub.core.settings import Settings
from agenthub.services.checkpoints import blobs as blobs_module
from agenthub.services.checkpoints.blobs import (
    BlobMismatch,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    build_blob_store,
    is_digest,
)
from tests.services.s3_support import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stream(data: bytes, chunk: int = 100_000) -> AsyncIterator[bytes]:
    """``data`` in uneven chunks, as an HTTP request body arrives."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


@dataclass
class Case:
    store: BlobStore
    stored: Callable[[], Awaitable[list[str]]]  # everything the store left behind, temp included


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Case]:
    store: BlobStore
    if request.param == "local":
        root = tmp_path / "blobs"
        store = LocalBlobStore(root)

        async def stored() -> list[str]:
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = f"blobs-{uuid.uuid4().hex[:12]}"
        store = S3BlobStore(
            bucket,
            "cas/",
            server.endpoint_url,
            REGION,
            create_bucket=True,
            session=server.session,
        )

        async def stored() -> list[str]:
            return await asyncio.to_thread(server.keys, bucket)

    try:
        yield Case(store, stored)
    finally:
        await store.close()


async def collect(store: BlobStore, digest: str) -> list[bytes]:
    return [chunk async for chunk in store.open(digest)]


@pytest.mark.parametrize("size", [0, 11, 5 * MiB + 123], ids=["empty", "small", "5MB"])
async def test_round_trip(blobs: Case, size: int) -> None:
    data = os.urandom(size)
    digest = sha(data)

    assert await blobs.store.put(digest, stream(data)) == size

    assert await blobs.store.has(digest)
    assert await blobs.store.size(digest) == size
    assert await blobs.store.read(digest) == data
    chunks = await collect(blobs.store, digest)
    assert sha(b"".join(chunks)) == digest
    assert all(64 * 1024 <= len(c) <= MiB for c in chunks[:-1])
    assert len(chunks) == (size + MiB - 1) // MiB
    assert len(await blobs.stored()) == 1


async def test_put_bytes_returns_the_digest(blobs: Case) -> None:
    data = b"manifest: {}"
    assert await blobs.store.put_bytes(data) == sha(data)
    assert await blobs.store.read(sha(data)) == data


async def test_missing_names_only_absent_blobs(blobs: Case) -> None:
    stored = [await blobs.store.put_bytes(f"blob {i}".encode()) for i in range(3)]
    absent = [sha(f"never stored {i}".encode()) for i in range(5)]

    assert await blobs.store.missing(stored + absent) == set(absent)
    assert await blobs.store.missing(stored) == set()
    assert await blobs.store.missing([]) == set()
    # Enough digests that S3 lists the key range instead of sending a HEAD each.
    many = [sha(f"absent {i}".encode()) for i in range(300)]
    assert await blobs.store.missing(many + stored) == set(many)


async def test_same_blob_twice_is_stored_once(blobs: Case) -> None:
    data = os.urandom(2 * MiB)
    digest = sha(data)
    await blobs.store.put(digest, stream(data))
    before = await blobs.stored()

    consumed = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in stream(data):
            consumed += len(chunk)
            yield chunk

    assert await blobs.store.put(digest, counted()) == len(data)
    assert consumed == len(data)  # the stream is drained and checked all the same
    assert await blobs.stored() == before
    assert len(before) == 1
    with pytest.raises(BlobMismatch):
        await blobs.store.put(digest, stream(data[:-1]))
    assert await blobs.store.read(digest) == data


async def test_mismatching_stream_stores_nothing(blobs: Case) -> None:
    claimed = sha(b"what the node said it sent")
    sent = os.urandom(3 * MiB)

    with pytest.raises(BlobMismatch) as raised:
        await blobs.store.put(claimed, stream(sent))

    assert (raised.value.expected, raised.value.actual) == (claimed, sha(sent))
    assert not await blobs.store.has(claimed)
    assert not await blobs.store.has(sha(sent))
    assert await blobs.stored() == []


async def test_stream_failing_midway_stores_nothing(blobs: Case) -> None:
    data = os.urandom(4 * MiB)

    async def cut() -> AsyncIterator[bytes]:
        async for chunk in stream(data[: 3 * MiB]):
            yield chunk
        raise ConnectionResetError("the node went away")

    with pytest.raises(ConnectionResetError):
        await blobs.store.put(sha(data), cut())

    assert not await blobs.store.has(sha(data))
    assert await blobs.stored() == []


async def test_cancelled_put_stores_nothing(blobs: Case) -> None:
    data = os.urandom(4 * MiB)
    halfway = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in stream(data[: 2 * MiB]):
            yield chunk
        halfway.set()
        await asyncio.Event().wait()
        yield data[2 * MiB :]  # never reached

    put = asyncio.create_task(blobs.store.put(sha(data), stalls()))
    await halfway.wait()
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put

    assert not await blobs.store.has(sha(data))
    assert await blobs.stored() == []


async def test_absent_blob(blobs: Case) -> None:
    digest = sha(b"absent")
    with pytest.raises(KeyError):
        await collect(blobs.store, digest)
    with pytest.raises(KeyError):
        await blobs.store.read(digest)
    assert await blobs.store.size(digest) is None
    assert not await blobs.store.has(digest)
    await blobs.store.delete(digest)  # deleting what is not there is not an error


async def test_delete(blobs: Case) -> None:
    keep = await blobs.store.put_bytes(b"keep")
    gone = await blobs.store.put_bytes(b"gone")

    await blobs.store.delete(gone)

    assert await blobs.store.missing([keep, gone]) == {gone}
    assert len(await blobs.stored()) == 1


BAD_DIGESTS = ["", "abc", sha(b"x").upper(), sha(b"x")[:-1], sha(b"x") + "0", "../" + "0" * 61]


@pytest.mark.parametrize("bad", BAD_DIGESTS)
async def test_invalid_digests_are_rejected(blobs: Case, bad: str) -> None:
    assert not is_digest(bad)
    with pytest.raises(ValueError, match="not a blob digest"):
        await blobs.store.put(bad, stream(b"x"))
    with pytest.raises(ValueError, match="not a blob digest"):
        await blobs.store.missing([sha(b"x"), bad])
    for call in (blobs.store.has, blobs.store.read, blobs.store.size, blobs.store.delete):
        with pytest.raises(ValueError, match="not a blob digest"):
            await call(bad)
    with pytest.raises(ValueError, match="not a blob digest"):
        blobs.store.open(bad)
    assert await blobs.stored() == []


async def test_large_blob_goes_up_in_parts(s3_server: S3Server) -> None:
    store = S3BlobStore(
        f"parts-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3_server.endpoint_url,
        create_bucket=True,
        session=s3_server.session,
        multipart_threshold=5 * MiB,
        part_size=5 * MiB,  # S3's smallest
    )
    data = os.urandom(11 * MiB)
    try:
        assert await store.put(sha(data), stream(data)) == len(data)
        assert sha(b"".join(await collect(store, sha(data)))) == sha(data)
        assert await asyncio.to_thread(s3_server.keys, store.bucket) == ["blobs/" + sha(data)]
        etag = await asyncio.to_thread(s3_server.etag, store.bucket, "blobs/" + sha(data))
        assert etag.endswith('-3"')  # the ETag of an object completed from 3 parts
    finally:
        await store.close()


def test_is_digest() -> None:
    assert is_digest(sha(b""))
    assert not is_digest(sha(b"").upper())
    assert not is_digest(sha(b"") + "\n")


def test_dead_uploads_are_cleaned_on_start(tmp_path: Path) -> None:
    LocalBlobStore(tmp_path)
    dead, live = tmp_path / "tmp" / "dead.part", tmp_path / "tmp" / "live.part"
    dead.write_bytes(b"half a blob")
    live.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(dead, (two_hours_ago, two_hours_ago))

    LocalBlobStore(tmp_path)

    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == ["live.part"]


async def test_build_blob_store_from_settings(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = build_blob_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalBlobStore)
    assert local.root == tmp_path / "blobs"
    other = build_blob_store(Settings(data_dir=tmp_path, blob_dir=tmp_path / "elsewhere"))
    assert isinstance(other, LocalBlobStore)
    assert other.root == tmp_path / "elsewhere"

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    bucket = f"from-settings-{uuid.uuid4().hex[:8]}"
    s3 = build_blob_store(
        Settings(
            s3_bucket=bucket,
            s3_endpoint_url=s3_server.endpoint_url,
            s3_create_bucket=True,
            s3_prefix="p/",
        )
    )
    try:
        assert s3.name == "s3"
        digest = await s3.put_bytes(b"hello")
        assert await asyncio.to_thread(s3_server.keys, bucket) == [f"p/{digest}"]
    finally:
        await s3.close()


async def test_put_many_stores_all_or_nothing(blobs: Case) -> None:
    items = [os.urandom(n) for n in (0, 10, 5000, 5000)]
    batch = [(sha(b), b) for b in items] + [(sha(items[1]), items[1])]  # a repeat
    assert await blobs.store.put_many(batch) == sum(len(b) for _, b in batch)
    for data in items:
        assert await blobs.store.read(sha(data)) == data
    before = await blobs.stored()
    bad = [(sha(b"fine"), b"fine"), (sha(b"claimed"), b"something else")]
    with pytest.raises(BlobMismatch):
        await blobs.store.put_many(bad)
    assert not await blobs.store.has(sha(b"fine"))
    assert await blobs.stored() == before


async def test_put_many_makes_data_durable_before_names_and_names_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that keeps a power cut from leaving a partial blob under its name: every
    temporary file written, a flush, the renames, another flush, and only then success."""
    store = LocalBlobStore(tmp_path / "blobs")
    events: list[str] = []
    real_syncfs, real_replace = blobs_module._syncfs, os.replace

    def syncfs(path: Path | str) -> None:
        # Every temporary file is complete by the time of the flush.
        parts = sorted((tmp_path / "blobs" / "tmp").iterdir())
        events.append(f"syncfs {len(parts)} parts {sum(p.stat().st_size for p in parts)} bytes")
        real_syncfs(path)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(blobs_module, "_syncfs", syncfs)
    monkeypatch.setattr(blobs_module.os, "replace", replace)
    items = [os.urandom(n) for n in (1, 2000, 3000)]
    await store.put_many([(sha(b), b) for b in items])

    assert events == [
        "syncfs 3 parts 5001 bytes",
        "rename",
        "rename",
        "rename",
        "syncfs 0 parts 0 bytes",
    ]
    for data in items:
        assert await store.read(sha(data)) == data


async def test_put_many_cut_short_leaves_whole_blobs_or_none_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    items = [os.urandom(100 + n) for n in range(4)]
    real_replace = os.replace
    renames = 0

    def failing_replace(src: str, dst: str) -> None:
        nonlocal renames
        renames += 1
        if renames == 3:
            raise OSError("disk went away")
        real_replace(src, dst)

    monkeypatch.setattr(blobs_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="went away"):
        await store.put_many([(sha(b), b) for b in items])
    monkeypatch.setattr(blobs_module.os, "replace", real_replace)

    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    stored = [data for data in items if await store.has(sha(data))]
    assert len(stored) == 2
    for data in stored:
        assert await store.read(sha(data)) == data
    # A retry stores the rest; the missing ones are reported as missing until then.
    assert await store.missing(sha(b) for b in items) == {sha(b) for b in items} - {
        sha(b) for b in stored
    }
    await store.put_many([(sha(b), b) for b in items])
    assert await store.missing(sha(b) for b in items) == set()


async def test_put_many_fails_whole_when_a_shard_directory_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many new blobs: their shard directories are made by another thread, and a failure there
    fails the batch before any blob gets its name."""
    store = LocalBlobStore(tmp_path / "blobs")
    items = [os.urandom(50) + bytes([i]) for i in range(60)]
    shards = {f"{sha(b)[:2]}/{sha(b)[2:4]}" for b in items}
    assert len(shards) >= 16  # enough for the thread
    doomed = sorted(shards)[len(shards) // 2]
    real_makedirs = blobs_module._makedirs
    threads: set[str] = set()

    def makedirs(path: str) -> None:
        threads.add(threading.current_thread().name)
        if path.endswith(doomed):
            raise PermissionError(13, "Permission denied", path)
        real_makedirs(path)

    monkeypatch.setattr(blobs_module, "_makedirs", makedirs)
    with pytest.raises(PermissionError):
        await store.put_many([(sha(b), b) for b in items])
    assert all(name.startswith("blob-shards") for name in threads)
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert await store.missing(sha(b) for b in items) == {sha(b) for b in items}

    monkeypatch.setattr(blobs_module, "_makedirs", real_makedirs)
    assert await store.put_many([(sha(b), b) for b in items]) == sum(len(b) for b in items)
    for data in items:
        assert await store.read(sha(data)) == data
