"""Content-addressed blob store of workspace checkpoints: a blob is named by its bytes' sha256.

Two stores behind one protocol: :class:`LocalBlobStore` (a directory, the default) and
:class:`S3BlobStore` (an S3 or S3-compatible bucket, when ``AGENTHUB_S3_BUCKET`` is set). Both
check the digest before a blob becomes visible under its name, so a reader never sees a
half-written or corrupt blob, whatever happens to the writer.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ctypes
import functools
import hashlib
import os
import re
import secrets
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    import boto3.session
    from botocore.exceptions import ClientError
    from types_boto3_s3 import S3Client

    from agenthub.core.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

CHUNK_SIZE = 1 << 20  # chunks yielded by open()
BATCH_SIZE = 1 << 20  # incoming bytes gathered before one hash/write goes to a thread
TMP_MAX_AGE_S = 3600.0
S3_CONCURRENCY = 32
# One PUT up to this size: a hub that dies mid-PUT leaves nothing behind, where an interrupted
# multipart upload leaves invisible parts that are billed until aborted. Beyond it, parallel
# parts and per-part retries win (and a single PUT stops at 5 GiB).
S3_MULTIPART_THRESHOLD = 512 << 20
S3_PART_SIZE = 64 << 20
SHARD_THREADS = 1  # threads making a batch's shard directories beside the one writing its files
_DIGEST = re.compile(r"[0-9a-f]{64}")

Offload = Callable[[Callable[[], None]], Awaitable[None]]


class BlobMismatch(Exception):
    """The content did not hash to the digest it was sent as; nothing was stored."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"content hashes to sha256 {actual}, not {expected}")
        self.expected = expected
        self.actual = actual


class BlobStore(Protocol):
    """Blobs named by their sha256 (64 lowercase hex digits); every method rejects other names
    with ``ValueError``."""

    name: str

    async def missing(self, digests: Iterable[str]) -> set[str]:
        """Which of these digests are not stored."""
        ...

    async def has(self, digest: str) -> bool: ...

    async def put(self, digest: str, chunks: AsyncIterable[bytes]) -> int:
        """Store a stream under its digest; its size. Raises :class:`BlobMismatch` (and stores
        nothing) if the stream hashes to another digest. Storing a stored blob is a no-op."""
        ...

    async def put_many(self, blobs: list[tuple[str, bytes]]) -> int:
        """Store many small blobs at once (one durability barrier for all); each is verified
        first and nothing is stored if one does not match. Returns the bytes written."""
        ...

    async def put_bytes(self, data: bytes) -> str:
        """Store ``data``; its digest."""
        ...

    def open(self, digest: str) -> AsyncIterator[bytes]:
        """The blob in chunks of at most 1 MiB; iterating raises ``KeyError`` if it is absent."""
        ...

    async def read(self, digest: str) -> bytes:
        """The whole blob (for small ones); ``KeyError`` if it is absent."""
        ...

    async def size(self, digest: str) -> int | None: ...

    async def delete(self, digest: str) -> None: ...

    async def close(self) -> None:
        """Release clients and threads (the store is unusable afterwards)."""
        ...


def is_digest(value: str) -> bool:
    """Whether ``value`` names a blob: a sha256 in 64 lowercase hex digits."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _check(digest: str) -> str:
    if not is_digest(digest):
        raise ValueError(f"not a blob digest (sha256 in 64 lowercase hex digits): {digest!r}")
    return digest


def _verified(digest: str, actual: str, size: int) -> int:
    if actual != digest:
        raise BlobMismatch(digest, actual)
    return size


async def _in_thread(fn: Callable[[], None]) -> None:
    await asyncio.to_thread(fn)


async def _drain(
    chunks: AsyncIterable[bytes], write: Callable[[bytes], object] | None, offload: Offload
) -> tuple[str, int]:
    """Hash (and write) a stream off the event loop; its sha256 and size.

    Chunks are gathered into ~1 MiB batches so a thread hop costs little per byte, and one batch
    is hashed and written while the next is received. (Hashing and writing in two threads of
    their own measured slower on two cores.) Work in a thread cannot be stopped, so it is
    shielded from cancellation and awaited before the caller may close the file.
    """
    hasher = hashlib.sha256()

    def consume(batch: list[bytes]) -> None:
        for chunk in batch:
            hasher.update(chunk)  # releases the GIL: hashing runs beside the event loop
            if write is not None:
                write(chunk)

    in_flight: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    batched = size = 0

    async def flush() -> None:
        nonlocal in_flight, batch, batched, size
        if in_flight is not None:
            await asyncio.shield(in_flight)  # one batch at a time: the hash sees chunks in order
        in_flight = asyncio.ensure_future(offload(functools.partial(consume, batch)))
        size += batched
        batch, batched = [], 0

    try:
        async for chunk in chunks:
            if chunk:
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH_SIZE:
                    await flush()
        if batch:
            await flush()
        if in_flight is not None:
            await asyncio.shield(in_flight)
    except BaseException:
        if in_flight is not None:
            await asyncio.wait({in_flight})
            if not in_flight.cancelled():
                in_flight.exception()  # retrieved: the error being raised is the one that counts
        raise
    return hasher.hexdigest(), size


class _Base(abc.ABC):
    """What both stores share: ``put_bytes`` and the generic ``put_many`` over ``put``/``has``."""

    name: str

    @abc.abstractmethod
    async def put(self, digest: str, chunks: AsyncIterable[bytes]) -> int: ...

    @abc.abstractmethod
    async def has(self, digest: str) -> bool: ...

    async def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()

        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.put(digest, one())
        return digest

    async def put_many(self, blobs: list[tuple[str, bytes]]) -> int:
        _verify_all(blobs)
        total = 0
        for digest, data in blobs:
            total += len(data)
            if not await self.has(digest):
                await self.put_bytes(data)
        return total


def _verify_all(blobs: list[tuple[str, bytes]]) -> None:
    for digest, data in blobs:
        actual = hashlib.sha256(data).hexdigest()
        if actual != _check(digest):
            raise BlobMismatch(digest, actual)


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        fn: Callable[[int], int] = ctypes.CDLL("libc.so.6", use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return fn


def _syncfs(path: Path | str) -> None:
    """Flush the filesystem holding ``path`` (one barrier for many files): Linux ``syncfs``,
    else ``os.sync``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        syncfs = _libc_syncfs()
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _present(path: str) -> bool:
    """Whether a blob is stored under ``path``. Only this store makes names there, and only by
    renaming a verified regular file, so the name's existence is enough; ``access`` answers
    that at half the cost of ``stat``, which builds a result object (10k digests: ~20 ms)."""
    return os.access(path, os.F_OK)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


def _makedirs_all(paths: list[str]) -> None:
    for path in paths:
        _makedirs(path)


class LocalBlobStore(_Base):
    """Blobs as files ``root/<d[:2]>/<d[2:4]>/<digest>``, written through ``root/tmp``."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_name = os.fspath(root)
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        # Temp files of a process that died mid-upload. A live upload touches its file with
        # every batch, so an hour-old one has no writer left.
        cutoff = time.time() - TMP_MAX_AGE_S
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def _name(self, digest: str) -> str:
        """:meth:`_path` as a string, without building a ``Path`` (10k of those cost ~0.1 s)."""
        return f"{self._root_name}/{digest[:2]}/{digest[2:4]}/{digest}"

    async def missing(self, digests: Iterable[str]) -> set[str]:
        wanted = {_check(d) for d in digests}
        return await asyncio.to_thread(lambda: {d for d in wanted if not _present(self._name(d))})

    async def has(self, digest: str) -> bool:
        return await asyncio.to_thread(_present, self._name(_check(digest)))

    async def put(self, digest: str, chunks: AsyncIterable[bytes]) -> int:
        final = self._path(_check(digest))
        if await asyncio.to_thread(_present, self._name(digest)):
            return _verified(digest, *await _drain(chunks, None, _in_thread))
        tmp = self._tmp / f"{secrets.token_hex(16)}.part"
        file = await asyncio.to_thread(tmp.open, "xb")
        try:
            actual, size = await _drain(chunks, file.write, _in_thread)
            _verified(digest, actual, size)
            await asyncio.to_thread(self._commit, file, tmp, final)
        except BaseException:
            # The content was verified before any commit, so even a commit cut short by
            # cancellation can only leave the complete blob under its name, or nothing.
            file.close()
            tmp.unlink(missing_ok=True)
            raise
        return size

    def _commit(self, file: IO[bytes], tmp: Path, final: Path) -> None:
        file.flush()
        os.fsync(file.fileno())
        file.close()
        shard = final.parent
        if not shard.is_dir():
            shard.mkdir(parents=True, exist_ok=True)
            _fsync_dir(shard.parent)
            _fsync_dir(self.root)
        os.replace(tmp, final)
        _fsync_dir(shard)  # the rename itself survives a power cut

    async def put_many(self, blobs: list[tuple[str, bytes]]) -> int:
        _verify_all(blobs)
        return await asyncio.to_thread(self._put_many, blobs)

    def _put_many(self, blobs: list[tuple[str, bytes]]) -> int:
        """Write every new blob to a temporary name, one filesystem flush, rename them all,
        another flush for the renames: two barriers instead of two fsyncs per blob.

        The first flush makes every temporary file's data durable before any rename can be, so
        even across a power cut a blob's name never points at a partial file; the second makes
        the names durable before the batch is reported stored. ``syncfs`` also writes out other
        dirty data of the same filesystem (so it can take ~100 ms while other processes write a
        lot); an ``fdatasync`` of each file and an ``fsync`` of each shard directory would not,
        but cost a device flush each: on the benchmark's disk, ``fdatasync`` of 100 new 5 KB
        files took ~20 ms before any directory, one ``syncfs`` after writing them 2-3 ms.
        """
        new: list[tuple[bytes, str]] = []
        seen: set[str] = set()
        total = 0
        for digest, data in blobs:
            total += len(data)
            final = self._name(digest)
            if digest in seen or _present(final):
                continue
            seen.add(digest)
            new.append((data, final))
        if not new:
            return total
        staged: list[tuple[str, str]] = []
        renamed = 0  # staged[:renamed] have their real names: no temporary file left to remove
        tmp_dir = os.fspath(self._tmp)
        # Shard directories are made by another thread while this one writes the temporary
        # files: nearly every new blob needs a directory of its own (there are 65,536), and both
        # are kernel work. Storing 10k blobs took ~0.85x the time; a second thread gained nothing.
        shards = sorted({final[: final.rindex("/")] for _, final in new})
        with contextlib.ExitStack() as threads:
            made: list[Future[None]] = []
            if SHARD_THREADS < 1 or len(shards) < 16:  # not worth a thread
                _makedirs_all(shards)
            else:
                pool = threads.enter_context(
                    ThreadPoolExecutor(SHARD_THREADS, thread_name_prefix="blob-shards")
                )
                step = -(-len(shards) // SHARD_THREADS)
                for i in range(0, len(shards), step):
                    made.append(pool.submit(_makedirs_all, shards[i : i + step]))
            try:
                for data, final in new:
                    tmp = f"{tmp_dir}/{secrets.token_hex(16)}.part"
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                    fd = os.open(tmp, flags, 0o666)
                    staged.append((tmp, final))
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view) :]
                    finally:
                        os.close(fd)
                _syncfs(tmp_dir)
                for future in made:
                    future.result()
                for tmp, final in staged:
                    os.replace(tmp, final)
                    renamed += 1
                _syncfs(self._root_name)
            finally:
                for tmp, _ in staged[renamed:]:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
        return total

    def open(self, digest: str) -> AsyncIterator[bytes]:
        return self._chunks(self._path(_check(digest)))

    async def _chunks(self, path: Path) -> AsyncIterator[bytes]:
        try:
            file = await asyncio.to_thread(path.open, "rb", buffering=0)
        except FileNotFoundError:
            raise KeyError(path.name) from None
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
                yield chunk
        finally:
            file.close()

    async def read(self, digest: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(_check(digest)).read_bytes)
        except FileNotFoundError:
            raise KeyError(digest) from None

    async def size(self, digest: str) -> int | None:
        try:
            stat = await asyncio.to_thread(self._path(_check(digest)).stat)
        except FileNotFoundError:
            return None
        return stat.st_size

    async def delete(self, digest: str) -> None:
        await asyncio.to_thread(self._path(_check(digest)).unlink, missing_ok=True)

    async def close(self) -> None:
        return None


def _not_found(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}


class S3BlobStore(_Base):
    """Blobs as objects ``prefix + digest`` of an S3 (or S3-compatible) bucket.

    boto3 is synchronous: its calls run in a pool of this store's own threads (one client, which
    is thread-safe), so ``missing`` can send many HEADs at once. Credentials not given here come
    from the standard AWS chain (``AWS_ACCESS_KEY_ID``..., ``~/.aws``, instance roles). A given
    ``session`` (which then carries the credentials) lends its loaded service models: making a
    session costs a few hundred milliseconds.
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "blobs/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        *,
        create_bucket: bool = False,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        spool_dir: Path | None = None,
        session: boto3.session.Session | None = None,
        multipart_threshold: int = S3_MULTIPART_THRESHOLD,
        part_size: int = S3_PART_SIZE,
    ) -> None:
        # Imported here: boto3 takes most of a second to import, and most hubs store locally.
        import boto3.session
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
        from botocore.exceptions import ClientError

        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self._spool_dir = spool_dir
        self._client_error = ClientError
        self._executor = ThreadPoolExecutor(S3_CONCURRENCY, thread_name_prefix="s3-blobs")
        config = Config(max_pool_connections=S3_CONCURRENCY, retries={"mode": "standard"})
        if endpoint_url is not None:
            # Many S3-compatible servers reject the CRC checksums botocore adds by default;
            # content is verified by sha256 before upload anyway.
            config = config.merge(
                Config(
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
            )
        if session is None:
            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                region_name=region,
            )
        self._client: S3Client = session.client(
            "s3", region_name=region, endpoint_url=endpoint_url, config=config
        )
        self._multipart_threshold = multipart_threshold
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=part_size,
            max_concurrency=4,
        )
        self._bucket_ready = not create_bucket
        self._bucket_lock = asyncio.Lock()

    def _key(self, digest: str) -> str:
        return self.prefix + _check(digest)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if not self._bucket_ready:
            async with self._bucket_lock:
                if not self._bucket_ready:
                    await self._offload(self._create_bucket)
                    self._bucket_ready = True
        return await self._offload(fn, *args, **kwargs)

    async def _offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _create_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except self._client_error as err:
            if not _not_found(err):
                raise
        extra: dict[str, Any] = {}
        if self.region != "us-east-1":  # the one region that refuses to be named here
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(Bucket=self.bucket, **extra)
        except self._client_error as err:
            if err.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def _head(self, key: str) -> int | None:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except self._client_error as err:
            if _not_found(err):
                return None
            raise

    async def missing(self, digests: Iterable[str]) -> set[str]:
        wanted = sorted({_check(d) for d in digests})
        if len(wanted) >= 2 * S3_CONCURRENCY:
            present = await self._run(self._list_present, wanted)
            if present is not None:
                return set(wanted) - present
        limit = asyncio.Semaphore(S3_CONCURRENCY)

        async def absent(digest: str) -> bool:
            async with limit:
                return await self._run(self._head, self.prefix + digest) is None

        found = await asyncio.gather(*(absent(d) for d in wanted))
        return {d for d, gone in zip(wanted, found, strict=True) if gone}

    def _list_present(self, wanted: list[str]) -> set[str] | None:
        """The wanted digests stored, by listing the key range they span (1000 keys a request),
        or None as soon as the first page shows that would take more round trips than HEADs."""
        lo, hi = wanted[0], wanted[-1]
        want = set(wanted)
        present: set[str] = set()
        # A string sorts after its own prefixes, so the listing starts at `lo` at the latest.
        kwargs: dict[str, Any] = {"StartAfter": self.prefix + lo[:-1]}
        first = True
        while True:
            page = self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1000, **kwargs
            )
            names = [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
            present.update(want.intersection(names))
            if not page.get("IsTruncated") or not names or names[-1] >= hi:
                return present
            if first:
                # Digests are uniform: the share of the range one page covered tells how many
                # pages the whole range takes, against HEADs sent S3_CONCURRENCY at a time.
                first = False
                if not is_digest(names[-1]):
                    return None
                covered = max(int(names[-1], 16) - int(lo, 16), 1)
                pages = (int(hi, 16) - int(lo, 16)) / covered
                if pages > len(wanted) / S3_CONCURRENCY:
                    return None
            kwargs = {"ContinuationToken": page["NextContinuationToken"]}

    async def has(self, digest: str) -> bool:
        return await self._run(self._head, self._key(digest)) is not None

    async def put(self, digest: str, chunks: AsyncIterable[bytes]) -> int:
        key = self._key(digest)
        if await self._run(self._head, key) is not None:
            return _verified(digest, *await _drain(chunks, None, self._offload))
        # An anonymous temp file: it vanishes with its process, so a crash leaves nothing.
        spool = await self._offload(self._new_spool)
        try:
            actual, size = await _drain(chunks, spool.write, self._offload)
            _verified(digest, actual, size)
            # One PUT (or a multipart upload, completed as one) is atomic: the key never holds
            # part of a blob.
            await self._offload(self._upload, spool, key, size)
        finally:
            spool.close()
        return size

    def _new_spool(self) -> IO[bytes]:
        return tempfile.TemporaryFile(dir=self._spool_dir)  # closed by put()

    def _upload(self, spool: IO[bytes], key: str, size: int) -> None:
        spool.flush()
        spool.seek(0)
        if size < self._multipart_threshold:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=spool, ContentLength=size)
        else:
            self._client.upload_fileobj(spool, self.bucket, key, Config=self._transfer)

    def open(self, digest: str) -> AsyncIterator[bytes]:
        return self._chunks(self._key(digest))

    async def _chunks(self, key: str) -> AsyncIterator[bytes]:
        try:
            response = await self._run(self._client.get_object, Bucket=self.bucket, Key=key)
        except self._client_error as err:
            if _not_found(err):
                raise KeyError(key) from None
            raise
        body = response["Body"]
        try:
            while chunk := await self._offload(body.read, CHUNK_SIZE):
                yield chunk
        finally:
            body.close()

    async def read(self, digest: str) -> bytes:
        return await self._run(self._read, self._key(digest))

    def _read(self, key: str) -> bytes:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self._client_error as err:
            if _not_found(err):
                raise KeyError(key) from None
            raise
        try:
            return body.read()
        finally:
            body.close()

    async def size(self, digest: str) -> int | None:
        return await self._run(self._head, self._key(digest))

    async def delete(self, digest: str) -> None:
        await self._run(self._client.delete_object, Bucket=self.bucket, Key=self._key(digest))

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown)
        self._client.close()


def build_blob_store(settings: Settings) -> BlobStore:
    """The store the settings name: S3 when ``s3_bucket`` is set, else a local directory."""
    if settings.s3_bucket:
        return S3BlobStore(
            settings.s3_bucket,
            settings.s3_prefix,
            settings.s3_endpoint_url,
            settings.s3_region,
            create_bucket=settings.s3_create_bucket,
        )
    return LocalBlobStore(settings.blob_dir or settings.data_dir / "blobs")
