"""The S3 storage driver: blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW), on aiobotocore.

Why aiobotocore (docs/s3.md has the measurements): it exposes the whole S3 API, and this driver needs the parts
that simpler clients leave out: multipart uploads continued across requests and nodes, `UploadPartCopy` (multipart
copy of blobs above 5 GB without the bytes passing through a node), presigned URLs, SSE-KMS and storage classes.

How the driver contract maps onto S3:
- A path is a key under `rootdirectory`; directories are key prefixes, so none is ever left behind empty.
- `put_content` is one PutObject and `stream_write` one multipart upload completed at the end: S3 replaces an
  object atomically, so readers see the old object or the new one, never a mix.
- `move` is a server-side copy (multipart above `multipartcopythresholdsize`) then a delete of the source.
- A chunked upload is one multipart upload from its first part to its `commit`, whatever requests and nodes its
  chunks arrive through. A `Writer` holds at most `chunksize` bytes of a node's memory and uploads full parts as
  they fill; `close` uploads what is left as a part when it is 5 MiB or more, else stores it as the upload's own
  small object under `path`, whose metadata names the open multipart upload and the parts and bytes it holds
  (`_Session`): nothing stays in a node's memory between requests, and any node continues it. The next writer
  reads that tail back (under 5 MiB) as the start of its first part; `commit` completes the multipart upload into
  `path`. The object under `path` is therefore whole and readable only after `commit`, as the driver contract
  allows. A killed node leaves the state it last recorded (after every part): its size is where the client
  resumes, and parts uploaded past it are uploaded again or left out. Removing the upload's directory, or
  `cancel`, aborts the multipart upload; `purge_temporary` aborts old ones no state names (a crashed writer's).
- A writer appending to a plain object (not a session) starts a multipart upload whose first parts are
  server-side copies of it (`UploadPartCopy`); an object under 5 MiB, too small to be a part, is read back.
- Retries with exponential backoff on throttling, 5xx and connection errors, and connect and read timeouts, are
  botocore's ("standard" retry mode), set on the client here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.handlers import add_expect_header

from docker_registry.core import exceptions
from docker_registry.core.driver import CHUNK_SIZE, Base, Stat, Writer

__all__ = ["Driver", "Settings"]

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART = 5 * MiB
"""S3's smallest part but the last."""
MAX_COPY_PART = 5 * GiB
"""S3's largest single copy (CopyObject, UploadPartCopy)."""
MAX_PARTS = 10_000
DELETE_BATCH = 1000
DELETES_AT_ONCE = 4
"""DeleteObjects requests of `remove_many` under way at once."""
PRESIGN_SECONDS = 20 * 60
"""How long a redirect URL stays valid: as Distribution's 20 minutes."""
PRESIGN_REUSE = 5 * 60
"""How long one presigned URL is handed out again for the same key. botocore presigns at about half a millisecond of
CPU a URL (it resolves the endpoint rules and runs its event hooks every time): more than a whole cached manifest
GET. Reused for at most 5 minutes, a URL still has 15 of its 20 minutes left when a client gets it."""
PRESIGN_CACHE = 4096
"""Presigned URLs kept per worker (about 600 bytes each): the blobs being pulled at the moment."""
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
"""Seconds: a node that cannot reach S3 answers an error instead of holding its client's request forever."""
MAX_ATTEMPTS = 5
"""Attempts per S3 call, backing off exponentially between them (botocore's standard retry mode)."""
MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
LIVE_WRITES = "_live-writes/"
"""Under the driver's root: an empty object per multipart upload of a streamed write that runs long, rewritten
every `HEARTBEAT_SECONDS` while the write lasts and removed at its end. A slow client's parts (`chunksize` bytes
each) can come further apart than the age after which `purge_temporary` takes an upload for abandoned (a probe's
client at 4 KiB/s had its upload aborted mid-body by a collection on another node); the marker tells them apart."""
HEARTBEAT_SECONDS = 20.0
"""Well under the youngest age garbage collection purges at (60 s)."""
SESSION_UPLOAD = "registry-multipart-upload"
SESSION_PARTS = "registry-multipart-parts"
SESSION_SIZE = "registry-multipart-size"
"""User metadata (`x-amz-meta-*`) of a chunked upload's state object: see `_Session`."""
STORAGE_CLASSES = {
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "NONE",
}


def _bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise exceptions.ConfigError(f"{key}: must be true or false, got {value!r}")


def _int(options: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = options.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise exceptions.ConfigError(f"{key}: must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise exceptions.ConfigError(f"{key}: must be between {low} and {high}, got {number}")
    return number


def _text(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise exceptions.ConfigError(f"{key}: must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The driver's options (Distribution's `storage.s3` keys), checked: a bad one is a ConfigError naming it."""

    bucket: str
    region: str | None = None
    regionendpoint: str | None = None
    accesskey: str | None = None
    secretkey: str | None = None
    sessiontoken: str | None = None
    rootdirectory: str = ""
    secure: bool = True
    skipverify: bool = False
    encrypt: bool = False
    keyid: str | None = None
    chunksize: int = 10 * MiB
    forcepathstyle: bool = False
    storageclass: str = "STANDARD"
    objectacl: str | None = None
    multipartcopythresholdsize: int = 32 * MiB
    multipartcopychunksize: int = 32 * MiB
    multipartcopymaxconcurrency: int = 100

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        bucket = _text(options, "bucket")
        if bucket is None:
            raise exceptions.ConfigError("bucket: required")
        accesskey, secretkey = _text(options, "accesskey"), _text(options, "secretkey")
        if (accesskey is None) != (secretkey is None):
            raise exceptions.ConfigError(
                "accesskey: accesskey and secretkey go together (or neither, for credentials "
                "from the environment or the instance profile)"
            )
        storageclass = (_text(options, "storageclass") or "STANDARD").upper()
        if storageclass not in STORAGE_CLASSES:
            raise exceptions.ConfigError(f"storageclass: must be one of {', '.join(sorted(STORAGE_CLASSES))}")
        endpoint = _text(options, "regionendpoint")
        if endpoint is not None and "://" in endpoint and not endpoint.startswith(("http://", "https://")):
            raise exceptions.ConfigError(f"regionendpoint: must be an http:// or https:// URL, got {endpoint!r}")
        if options.get("v4auth") is not None and not _bool(options, "v4auth", True):
            raise exceptions.ConfigError("v4auth: only signature version 4 is supported")
        return cls(
            bucket=bucket,
            region=_text(options, "region"),
            regionendpoint=endpoint,
            accesskey=accesskey,
            secretkey=secretkey,
            sessiontoken=_text(options, "sessiontoken"),
            rootdirectory=(_text(options, "rootdirectory") or "").strip("/"),
            secure=_bool(options, "secure", True),
            skipverify=_bool(options, "skipverify", False),
            encrypt=_bool(options, "encrypt", False),
            keyid=_text(options, "keyid"),
            chunksize=_int(options, "chunksize", 10 * MiB, MIN_PART, MAX_COPY_PART),
            forcepathstyle=_bool(options, "forcepathstyle", False),
            storageclass=storageclass,
            objectacl=_text(options, "objectacl"),
            multipartcopythresholdsize=_int(options, "multipartcopythresholdsize", 32 * MiB, 0, MAX_COPY_PART),
            multipartcopychunksize=_int(options, "multipartcopychunksize", 32 * MiB, MIN_PART, MAX_COPY_PART),
            multipartcopymaxconcurrency=_int(options, "multipartcopymaxconcurrency", 100, 1, 10_000),
        )

    def endpoint_url(self) -> str | None:
        if self.regionendpoint is None or "://" in self.regionendpoint:
            return self.regionendpoint
        return f"{'https' if self.secure else 'http'}://{self.regionendpoint}"


THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestTimeout"}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


REFUSED = {
    "403",  # a HEAD's answer has no body: its status is all botocore reports (revoked keys, a bucket policy)
    "NoSuchBucket",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
}
"""Answers that say the bucket or the credentials are wrong, not the request: the bucket deleted, keys revoked or
expired. Nothing a client sent can cure them, but an operator can: the server answers 503 (with the code in its
log), as for an unreachable endpoint, where these were 500s."""


def _unavailable(error: Exception) -> exceptions.UnreachableError | None:
    """The driver's error for what retries did not cure (throttling, 5xx, no connection, a timeout) or what the
    bucket's configuration refuses (`REFUSED`): the server answers it with 503, which clients retry; None for an
    answer the caller handles (missing key, bad range)."""
    if isinstance(error, ClientError):
        code = _code(error)
        if code in REFUSED:
            return exceptions.UnreachableError(f"S3 refused the request: {code} (check the bucket and credentials)")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status < 500 and code not in THROTTLED:
            return None
        return exceptions.UnreachableError(f"S3 answered {code or status} after {MAX_ATTEMPTS} attempts")
    if isinstance(error, BotoCoreError | aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return exceptions.UnreachableError(f"S3 unreachable: {error}")
    return None


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        unavailable = _unavailable(exc)
        if unavailable is None:
            raise
        raise unavailable from exc


class _Client:
    """The aiobotocore client, its calls' lasting failures raised as `exceptions.UnreachableError`."""

    def __init__(self, client: Any) -> None:
        self._inner = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name == "get_paginator" or not callable(attribute):  # paginators: translated where they are iterated
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            with _translated():
                return await attribute(*args, **kwargs)

        return call


class PresignedUrls:
    """Presigned URLs by key, each handed out again until `reuse` seconds after it was signed; the least recently
    used are dropped beyond `size`. Reusing a URL changes nothing a client can tell: the registry still checks the
    blob and the client's access before every redirect, and a key names the same bytes as long as it exists."""

    def __init__(
        self, reuse: float = PRESIGN_REUSE, size: int = PRESIGN_CACHE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reuse, self._size, self._clock = reuse, size, clock
        self._urls: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str) -> str | None:
        entry = self._urls.get(key)
        if entry is None:
            return None
        signed, url = entry
        if self._clock() - signed >= self._reuse:
            del self._urls[key]
            return None
        self._urls.move_to_end(key)
        return url

    def put(self, key: str, url: str) -> None:
        self._urls[key] = (self._clock(), url)
        self._urls.move_to_end(key)
        while len(self._urls) > self._size:
            self._urls.popitem(last=False)


class Driver(Base):
    """Objects in one S3 bucket under `rootdirectory`. The client is made on first use, in the running loop."""

    moves_by_copy = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.settings = Settings.from_options(self.options)
        self._root = f"{self.settings.rootdirectory}/" if self.settings.rootdirectory else ""
        self._stack: contextlib.AsyncExitStack | None = None
        self._client_obj: Any = None
        self._lock: asyncio.Lock | None = None
        self._presigned = PresignedUrls()

    # --- the client -----------------------------------------------------------------------------------------
    async def _client(self) -> Any:
        if self._client_obj is not None:
            return self._client_obj
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client_obj is None:
                s = self.settings
                config = AioConfig(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                    s3={"addressing_style": "path" if s.forcepathstyle else "auto"},
                    signature_version="s3v4",
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    max_pool_connections=64,
                )
                endpoint = s.endpoint_url()
                plain = endpoint is not None and endpoint.startswith("http://")
                # A plain-HTTP endpoint needs no CA bundle: never let AWS_CA_BUNDLE (set on many machines) be read.
                verify: bool | str | None = False if (s.skipverify or plain) else None
                stack = contextlib.AsyncExitStack()
                client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=s.region
                        or os.environ.get("AWS_REGION")
                        or os.environ.get("AWS_DEFAULT_REGION")
                        or "us-east-1",
                        endpoint_url=endpoint,
                        use_ssl=not plain and s.secure,
                        verify=verify,
                        aws_access_key_id=s.accesskey,
                        aws_secret_access_key=s.secretkey,
                        aws_session_token=s.sessiontoken,
                        config=config,
                    )
                )
                # No `Expect: 100-continue` on PUTs (botocore adds it to every upload): waiting for the "continue" is
                # outside the read timeout, so an endpoint that accepted the connection and then never answered held
                # a write, and the client's request, forever (probe); the body goes out at once, the answer is
                # awaited within the read timeout.
                client.meta.events.unregister("before-call.s3", add_expect_header)
                self._client_obj = _Client(client)
                self._stack = stack
        return self._client_obj

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client_obj = self._stack, None, None
            await stack.aclose()

    async def check(self) -> None:
        """Reach the bucket once (HeadBucket): a missing bucket, bad credentials or an unreachable endpoint is a
        ConfigError naming the key most likely at fault, so the server exits 2 at start-up instead of failing
        every request."""
        try:
            client = await self._client()
            await client.head_bucket(Bucket=self.settings.bucket)
        except ClientError as exc:
            raise self._refused(exc) from None
        except (exceptions.UnreachableError, BotoCoreError, OSError) as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _code(cause) in REFUSED:  # translated by the client
                raise self._refused(cause) from None
            key = "regionendpoint" if self.settings.regionendpoint else "region"
            raise exceptions.ConfigError(f"{key}: cannot reach S3: {exc}") from None

    def _refused(self, error: ClientError) -> exceptions.ConfigError:
        code, bucket = _code(error), self.settings.bucket
        if code in ("404", "NoSuchBucket", "NotFound"):
            return exceptions.ConfigError(f"bucket: no bucket {bucket!r}")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return exceptions.ConfigError(f"accesskey: access to bucket {bucket!r} denied ({code})")
        return exceptions.ConfigError(f"bucket: {bucket!r} answered {code}")

    # --- keys -----------------------------------------------------------------------------------------------
    def _key(self, path: str) -> str:
        return self._root + path

    def _dir(self, prefix: str) -> str:
        return self._root + prefix + "/" if prefix else self._root

    def _path(self, key: str) -> str:
        return key[len(self._root) :]

    def _extra(self) -> dict[str, Any]:
        """Arguments every object creation carries: storage class, encryption, ACL."""
        s = self.settings
        extra: dict[str, Any] = {}
        if s.storageclass != "NONE":
            extra["StorageClass"] = s.storageclass
        if s.encrypt:
            extra["ServerSideEncryption"] = "aws:kms" if s.keyid else "AES256"
            if s.keyid:
                extra["SSEKMSKeyId"] = s.keyid
        if s.objectacl:
            extra["ACL"] = s.objectacl
        return extra

    async def _head(self, path: str) -> dict[str, Any]:
        client = await self._client()
        try:
            head: dict[str, Any] = await client.head_object(Bucket=self.settings.bucket, Key=self._key(path))
        except ClientError as exc:
            if _code(exc) in MISSING:
                raise exceptions.FileNotFoundError(path) from None
            raise
        return head

    # --- whole objects --------------------------------------------------------------------------------------
    async def _get_content(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self._stream_read(path, 0, None)])

    async def _put_content(self, path: str, data: bytes) -> None:
        client = await self._client()
        await client.put_object(Bucket=self.settings.bucket, Key=self._key(path), Body=data, **self._extra())

    async def _stream_read(self, path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
        if length == 0:
            await self._head(path)
            return
        client = await self._client()
        args: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": self._key(path)}
        if offset or length is not None:
            args["Range"] = f"bytes={offset}-{'' if length is None else offset + length - 1}"
        try:
            response = await client.get_object(**args)
        except ClientError as exc:
            code = _code(exc)
            if code in MISSING:
                raise exceptions.FileNotFoundError(path) from None
            if code == "InvalidRange":  # offset at or past the end: nothing to read, if the object exists
                await self._head(path)
                return
            raise
        body = response["Body"]
        try:
            with _translated():
                async for chunk in body.iter_chunks(CHUNK_SIZE):
                    yield chunk
        finally:
            body.close()

    async def _stream_write(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        writer = _Writer(self, path, checkpoints=False)  # the previous object stays readable until the end
        marked: list[str] = []
        heartbeat = asyncio.create_task(self._heartbeat(writer, marked))
        try:
            async for chunk in chunks:
                await writer.write(chunk)
            await writer.commit()
        except BaseException:
            await writer.abort()  # the previous object, if any, stays
            raise
        finally:
            heartbeat.cancel()
            await asyncio.wait({heartbeat})  # no marker written after the one removed here
            if marked:
                await self._remove_marker(marked[0])
        return writer.size

    def _live_key(self, upload_id: str) -> str:
        return self._key(LIVE_WRITES + hashlib.sha256(upload_id.encode()).hexdigest())

    async def _heartbeat(self, writer: _Writer, marked: list[str]) -> None:
        """Mark the writer's multipart upload alive every `HEARTBEAT_SECONDS` until cancelled (`LIVE_WRITES`). A
        marker that cannot be written now is tried again at the next beat: it must never fail the write."""
        client = await self._client()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            upload_id = writer.upload_id
            if upload_id is None:  # no part yet: nothing in S3 to purge
                continue
            key = self._live_key(upload_id)
            with contextlib.suppress(ClientError, BotoCoreError, exceptions.UnreachableError):
                await client.put_object(Bucket=self.settings.bucket, Key=key, Body=b"")
                if not marked:
                    marked.append(key)

    async def _remove_marker(self, key: str) -> None:
        """A marker left behind (S3 unreachable now) is removed by the next purge once it is old."""
        client = await self._client()
        with contextlib.suppress(ClientError, BotoCoreError, exceptions.UnreachableError):
            await client.delete_object(Bucket=self.settings.bucket, Key=key)

    async def _marked_alive(self, upload_id: str, older_than: float) -> bool:
        client = await self._client()
        try:
            head = await client.head_object(Bucket=self.settings.bucket, Key=self._live_key(upload_id))
        except ClientError as exc:
            if _code(exc) in MISSING:
                return False
            raise
        return bool(head["LastModified"].timestamp() >= older_than)

    # --- namespace ------------------------------------------------------------------------------------------
    async def _list_directory(self, prefix: str) -> list[str]:
        client = await self._client()
        found: list[str] = []
        paginator = client.get_paginator("list_objects_v2")
        directory = self._dir(prefix)
        with _translated():
            async for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=directory, Delimiter="/"):
                found.extend(self._path(item["Prefix"]).rstrip("/") for item in page.get("CommonPrefixes", []))
                found.extend(self._path(item["Key"]) for item in page.get("Contents", []) if item["Key"] != directory)
        if not found:
            raise exceptions.FileNotFoundError(prefix or "/")
        return sorted(found)

    async def _keys_under(self, directory: str) -> AsyncIterator[str]:
        client = await self._client()
        paginator = client.get_paginator("list_objects_v2")
        with _translated():
            async for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=directory):
                for item in page.get("Contents", []):
                    yield item["Key"]

    async def _walk(self, prefix: str) -> AsyncIterator[str]:
        async for key in self._keys_under(self._dir(prefix)):
            yield self._path(key)

    async def _exists(self, path: str) -> bool:
        try:
            await self._head(path)
            return True
        except exceptions.FileNotFoundError:
            pass
        client = await self._client()
        listed = await client.list_objects_v2(Bucket=self.settings.bucket, Prefix=self._dir(path), MaxKeys=1)
        return bool(listed.get("Contents"))

    async def _remove(self, path: str) -> None:
        """The object, or every object under the directory; multipart uploads left there are aborted too."""
        client = await self._client()
        bucket, key = self.settings.bucket, self._key(path)
        found = True
        try:
            await self._head(path)
        except exceptions.FileNotFoundError:
            found = False
        batch: list[str] = [key] if found else []
        async for child in self._keys_under(key + "/"):
            batch.append(child)
            found = True
            if len(batch) == DELETE_BATCH:
                await self._delete(batch)
                batch = []
        if batch:
            await self._delete(batch)
        paginator = client.get_paginator("list_multipart_uploads")
        with _translated():
            pages = [page async for page in paginator.paginate(Bucket=bucket, Prefix=key)]
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Key"] == key or upload["Key"].startswith(key + "/"):
                    with contextlib.suppress(ClientError, exceptions.UnreachableError):
                        await client.abort_multipart_upload(
                            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
        if not found:
            raise exceptions.FileNotFoundError(path)

    async def _remove_many(self, paths: Sequence[str]) -> None:
        """DeleteObjects, 1,000 keys a request, a few requests at once: S3 deletes a missing key without complaint,
        and a directory's name is no key (its objects stay)."""
        keys = [self._key(path) for path in paths]
        batches = [keys[i : i + DELETE_BATCH] for i in range(0, len(keys), DELETE_BATCH)]
        limit = asyncio.Semaphore(DELETES_AT_ONCE)

        async def delete(batch: list[str]) -> None:
            async with limit:
                await self._delete(batch)

        await asyncio.gather(*(delete(batch) for batch in batches))

    async def _delete(self, keys: list[str]) -> None:
        client = await self._client()
        if len(keys) == 1:
            await client.delete_object(Bucket=self.settings.bucket, Key=keys[0])
            return
        result = await client.delete_objects(
            Bucket=self.settings.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        errors = result.get("Errors", [])
        if errors:
            raise exceptions.UnspecifiedError(f"deleting {errors[0].get('Key')}: {errors[0].get('Message')}")

    async def _stat(self, path: str) -> Stat:
        head = await self._head(path)
        return Stat(size=int(head["ContentLength"]), mtime=head["LastModified"].timestamp())

    async def _get_size(self, path: str) -> int:
        return int((await self._head(path))["ContentLength"])

    async def _content_redirect_url(self, path: str) -> str | None:
        key = self._key(path)
        url = self._presigned.get(key)
        if url is None:
            client = await self._client()
            url = str(
                await client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.settings.bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS
                )
            )
            self._presigned.put(key, url)
        return url

    # --- copies ---------------------------------------------------------------------------------------------
    async def _move(self, src: str, dst: str) -> None:
        """A server-side copy, then the source deleted: S3 replaces `dst` atomically, so readers see the old or the
        new object; the bytes never pass through this node."""
        size = int((await self._head(src))["ContentLength"])
        client = await self._client()
        bucket = self.settings.bucket
        source = {"Bucket": bucket, "Key": self._key(src)}
        if size <= min(self.settings.multipartcopythresholdsize, MAX_COPY_PART) or size < MIN_PART:
            try:
                await client.copy_object(Bucket=bucket, Key=self._key(dst), CopySource=source, **self._extra())
            except ClientError as exc:
                if _code(exc) in MISSING:
                    raise exceptions.FileNotFoundError(src) from None
                raise
        else:
            await self._multipart_copy(src, dst, size)
        await client.delete_object(Bucket=bucket, Key=self._key(src))

    async def _multipart_copy(self, src: str, dst: str, size: int) -> None:
        client = await self._client()
        bucket, key = self.settings.bucket, self._key(dst)
        upload = await client.create_multipart_upload(Bucket=bucket, Key=key, **self._extra())
        upload_id = upload["UploadId"]
        try:
            parts = [part for part, _ in await self._copy_parts(key, upload_id, src, 0, size, first=1)]
            await client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await self._abort_upload(key, upload_id)
            raise

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload, its parts deleted; one already gone, or S3 unreachable now, is left to
        `purge_temporary` (garbage collection) or the bucket's lifecycle rule."""
        client = await self._client()
        with contextlib.suppress(ClientError, BotoCoreError, exceptions.UnreachableError):
            await client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)

    async def _copy_parts(
        self, key: str, upload_id: str, src: str, start: int, end: int, first: int
    ) -> list[tuple[dict[str, Any], int]]:
        """Parts `first`, ... of upload `upload_id` copied server-side from bytes `[start, end)` of `src`, with their
        sizes, in
        `multipartcopychunksize` pieces (grown so that they fit S3's 10,000 parts), a bounded number at once."""
        client = await self._client()
        piece = max(self.settings.multipartcopychunksize, -(-(end - start) // (MAX_PARTS - first)))
        piece = min(piece, MAX_COPY_PART - MIN_PART)
        ranges = [(begin, min(begin + piece, end)) for begin in range(start, end, piece)]
        if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] < MIN_PART:  # only the upload's last part may be small
            ranges[-2:] = [(ranges[-2][0], end)]
        limit = asyncio.Semaphore(self.settings.multipartcopymaxconcurrency)
        source = {"Bucket": self.settings.bucket, "Key": self._key(src)}

        async def one(number: int, begin: int, stop: int) -> tuple[dict[str, Any], int]:
            async with limit:
                result = await client.upload_part_copy(
                    Bucket=self.settings.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={begin}-{stop - 1}",
                )
            return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}, stop - begin

        return list(await asyncio.gather(*(one(first + i, b, e) for i, (b, e) in enumerate(ranges))))

    # --- writers ---------------------------------------------------------------------------------------------
    async def _writer(self, path: str, append: bool) -> Writer:
        if not append:
            return _Writer(self, path)
        head = await self._head(path)
        size = int(head["ContentLength"])
        session = _Session.of(head.get("Metadata") or {})
        if session is not None:
            return _Writer(self, path, session=session, tail=size)
        if size < MIN_PART:  # too small to be copied as a part: read back before the first write
            return _Writer(self, path, tail=size)
        return _Writer(self, path, existing=size)

    async def _purge_temporary(self, older_than: float, dry_run: bool) -> tuple[int, int]:
        """Abort multipart uploads begun before `older_than`, with no part uploaded since, that no session's state
        object names: those of a `stream_write` or a writer cut short by a crash (a session's own is aborted when its
        directory is removed)."""
        client = await self._client()
        bucket = self.settings.bucket
        paginator = client.get_paginator("list_multipart_uploads")
        with _translated():
            uploads = [
                (upload["Key"], upload["UploadId"])
                async for page in paginator.paginate(Bucket=bucket, Prefix=self._root)
                for upload in page.get("Uploads", [])
                if upload["Initiated"].timestamp() < older_than
            ]
        count = size = 0
        for key, upload_id in uploads:
            if await self._session_upload(key) == upload_id:
                continue
            parts = await self._list_parts(key, upload_id)
            if any(part["LastModified"] >= older_than for part in parts.values()):
                continue  # a write still running (S3 dates an upload by its start, a part by its upload)
            if await self._marked_alive(upload_id, older_than):
                continue  # a slow one, between two parts
            count, size = count + 1, size + sum(part["Size"] for part in parts.values())
            if not dry_run:
                with contextlib.suppress(ClientError):
                    await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        if not dry_run:
            await self._remove_old_markers(older_than)
        return count, size

    async def _remove_old_markers(self, older_than: float) -> None:
        """Markers not renewed since `older_than`: their write ended without removing its own, or died."""
        client = await self._client()
        paginator = client.get_paginator("list_objects_v2")
        with _translated():
            async for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=self._key(LIVE_WRITES)):
                for item in page.get("Contents", []):
                    if item["LastModified"].timestamp() < older_than:
                        await self._remove_marker(item["Key"])

    async def _session_upload(self, key: str) -> str | None:
        """The multipart upload the session state object at `key` names, if there is one."""
        client = await self._client()
        try:
            head = await client.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in MISSING:
                return None
            raise
        session = _Session.of(head.get("Metadata") or {})
        return None if session is None else session.upload_id

    async def _list_parts(self, key: str, upload_id: str) -> dict[int, dict[str, Any]]:
        """The parts S3 holds for an upload, by number (`ETag`, `Size`, `LastModified` in seconds since the epoch);
        empty if the upload is gone."""
        client = await self._client()
        paginator = client.get_paginator("list_parts")
        parts: dict[int, dict[str, Any]] = {}
        try:
            with _translated():
                async for page in paginator.paginate(Bucket=self.settings.bucket, Key=key, UploadId=upload_id):
                    for part in page.get("Parts", []):
                        parts[int(part["PartNumber"])] = {
                            "ETag": part["ETag"],
                            "Size": int(part["Size"]),
                            "LastModified": part["LastModified"].timestamp(),
                        }
        except ClientError as exc:
            if _code(exc) in MISSING:
                return {}
            raise
        return parts


@dataclass(frozen=True)
class _Session:
    """A chunked upload in progress, as its state object records it: the object under the upload's own key holds
    the tail (the bytes after the last part, under S3's 5 MiB minimum) and, in its metadata, the open multipart
    upload and how many parts and bytes it holds. One PutObject replaces tail and state together, so whatever a
    killed node left, the state object describes bytes that are all there."""

    upload_id: str
    parts: int
    size: int
    """Bytes in the parts, the tail not included."""

    @classmethod
    def of(cls, metadata: Mapping[str, str]) -> _Session | None:
        upload_id = metadata.get(SESSION_UPLOAD)
        if not upload_id:
            return None
        try:
            return cls(upload_id, int(metadata[SESSION_PARTS]), int(metadata[SESSION_SIZE]))
        except (KeyError, ValueError):
            raise exceptions.UnspecifiedError(f"damaged upload state: {dict(metadata)}") from None

    def metadata(self) -> dict[str, str]:
        return {SESSION_UPLOAD: self.upload_id, SESSION_PARTS: str(self.parts), SESSION_SIZE: str(self.size)}


class _Writer(Writer):
    """Appends to `path` through one multipart upload that lasts from the upload's first part to its `commit`,
    across writers, requests and nodes (see the module's docstring). A writer holds at most `chunksize` bytes."""

    def __init__(
        self,
        driver: Driver,
        path: str,
        *,
        session: _Session | None = None,
        tail: int = 0,
        existing: int = 0,
        checkpoints: bool = True,
    ) -> None:
        self.path = path
        self._driver = driver
        self._key = driver._key(path)
        self._session = session is not None
        """Opened on a session's state object: `commit` completes its multipart upload even without writes."""
        self._upload_id = session.upload_id if session else None
        self._persisted = session is not None
        """The upload is named by the state object: others may continue it, so a failure here must not abort it."""
        self._part_count = session.parts if session else 0
        self._parts_size = session.size if session else 0
        self._etags: dict[int, tuple[str, int]] = {}
        """Parts this writer uploaded; earlier writers' are listed from S3 at `commit`."""
        self._existing = existing
        """Bytes of a plain object under `path`, continued by server-side copies of it as the first parts."""
        self._tail = tail
        """Bytes under `path` that come after the parts (a session's tail, or a small plain object), read back into
        the buffer before the first write."""
        self._size = self._parts_size + tail + existing
        self._buffer: list[bytes] = []
        self._buffered = 0
        """Bytes not uploaded yet, kept as received: joined once per part (a bytearray grown and sliced costs two
        more copies of every part)."""
        self._changed = not (session is not None or tail or existing)
        """A fresh writer truncates `path` even if nothing is written; an appending one without writes leaves it."""
        self._checkpoints = checkpoints
        """Record the session after every part, so a killed writer loses at most one part's worth."""
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def upload_id(self) -> str | None:
        """The multipart upload, once the first part started it."""
        return self._upload_id

    async def write(self, data: bytes) -> int:
        if self._closed:
            raise exceptions.UsageError(f"write to {self.path} after close")
        await self._load_tail()
        self._buffer.append(bytes(data))
        self._buffered += len(data)
        self._size += len(data)
        self._changed = True
        if self._buffered >= self._driver.settings.chunksize:
            await self._upload_part()
            if self._checkpoints:
                await self._save_state()  # a writer killed from here on leaves the session at this size
        return len(data)

    async def _load_tail(self) -> None:
        """The bytes after the last part become the start of the next one (under 5 MiB: S3 takes no smaller part)."""
        if not self._tail:
            return
        tail = await self._driver._get_content(self.path)
        if len(tail) != self._tail:
            raise exceptions.UnspecifiedError(f"{self.path} changed while being continued")
        self._buffer.insert(0, tail)
        self._buffered += len(tail)
        self._tail = 0

    async def _start(self) -> str:
        if self._upload_id is None:
            client = await self._driver._client()
            upload = await client.create_multipart_upload(
                Bucket=self._driver.settings.bucket, Key=self._key, **self._driver._extra()
            )
            self._upload_id = str(upload["UploadId"])
            if self._existing:
                copied = await self._driver._copy_parts(
                    self._key, self._upload_id, self.path, 0, self._existing, first=1
                )
                for part, size in copied:
                    self._etags[part["PartNumber"]] = (part["ETag"], size)
                self._part_count, self._parts_size, self._existing = len(copied), self._existing, 0
        return self._upload_id

    async def _upload_part(self) -> None:
        """Everything buffered as the next part: `chunksize` bytes or a little more, or the tail at the end."""
        upload_id = await self._start()
        if self._part_count >= MAX_PARTS:
            raise exceptions.UsageError(f"{self.path}: more than {MAX_PARTS} parts; raise chunksize")
        client = await self._driver._client()
        body = b"".join(self._buffer)
        self._buffer, self._buffered = [body], len(body)  # kept until S3 has it
        number = self._part_count + 1
        result = await client.upload_part(
            Bucket=self._driver.settings.bucket, Key=self._key, UploadId=upload_id, PartNumber=number, Body=body
        )
        self._buffer, self._buffered = [], 0
        self._etags[number] = (result["ETag"], len(body))
        self._part_count, self._parts_size = number, self._parts_size + len(body)

    async def _save_state(self) -> None:
        """Record the session under `path`: the tail (what is buffered) as the body, the upload in the metadata."""
        assert self._upload_id is not None
        client = await self._driver._client()
        state = _Session(self._upload_id, self._part_count, self._parts_size)
        await client.put_object(
            Bucket=self._driver.settings.bucket,
            Key=self._key,
            Body=b"".join(self._buffer),
            Metadata=state.metadata(),
            **self._driver._extra(),
        )
        self._persisted = True

    async def close(self) -> None:
        """Leave the session for the next writer: a tail of 5 MiB or more is uploaded as a part, a smaller one is
        stored with the state object. A session still under 5 MiB in all is a plain object until it grows."""
        if self._closed:
            return
        self._closed = True
        if not self._changed:
            return
        try:
            if self._upload_id is None and not self._existing and self._buffered < MIN_PART:
                await self._put_plain()  # too small for a part: the next writer reads it back
                return
            await self._start()
            if self._buffered >= MIN_PART:
                await self._upload_part()
            await self._save_state()
        except BaseException:
            await self.abort()
            raise
        finally:
            self._buffer, self._buffered = [], 0

    async def commit(self) -> None:
        """Complete the multipart upload (the tail as its last part): the object under `path` is then whole and
        readable, and S3 acknowledges it only once it is durable."""
        if self._closed:
            return
        self._closed = True
        if not (self._changed or self._session):
            return
        try:
            if self._upload_id is None and not self._existing:
                await self._put_plain()
                return
            await self._load_tail()
            upload_id = await self._start()
            if self._buffered:
                await self._upload_part()
            parts = await self._all_parts()
            client = await self._driver._client()
            try:
                await client.complete_multipart_upload(
                    Bucket=self._driver.settings.bucket,
                    Key=self._key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except ClientError as exc:
                if _code(exc) in MISSING:  # aborted meanwhile: the upload was removed
                    raise exceptions.FileNotFoundError(self.path) from None
                raise
            self._upload_id, self._persisted = None, False
        except BaseException:
            await self.abort()
            raise
        finally:
            self._buffer, self._buffered = [], 0

    async def _put_plain(self) -> None:
        client = await self._driver._client()
        body = b"".join(self._buffer)
        await client.put_object(Bucket=self._driver.settings.bucket, Key=self._key, Body=body, **self._driver._extra())

    async def _all_parts(self) -> list[dict[str, Any]]:
        """Parts 1..n for CompleteMultipartUpload: this writer's, and earlier writers' as S3 lists them (a part a
        killed writer uploaded past the recorded state has a higher number, or was uploaded again since). Their sizes
        must add up to the session's: every byte written is in the object, or the commit fails."""
        assert self._upload_id is not None
        known = dict(self._etags)
        if len(known) < self._part_count:
            listed = await self._driver._list_parts(self._key, self._upload_id)
            for number, part in listed.items():
                known.setdefault(number, (part["ETag"], part["Size"]))
        numbers = range(1, self._part_count + 1)
        if any(n not in known for n in numbers) or sum(known[n][1] for n in numbers) != self._size:
            raise exceptions.UnspecifiedError(f"{self.path}: the multipart upload lost parts")
        return [{"PartNumber": n, "ETag": known[n][0]} for n in numbers]

    async def abort(self) -> None:
        """Drop what this writer has not published; the object under `path` (a session's state) stays as it was."""
        self._closed = True
        self._buffer, self._buffered = [], 0
        if self._upload_id is not None and not self._persisted:
            upload_id, self._upload_id = self._upload_id, None
            await self._driver._abort_upload(self._key, upload_id)

    async def cancel(self) -> None:
        self._persisted = False  # the session ends here: its upload too
        await self.abort()
        client = await self._driver._client()
        await client.delete_object(Bucket=self._driver.settings.bucket, Key=self._key)
