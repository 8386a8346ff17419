"""A closing PUT whose blob was published but whose link the database refused (a lock held past the lock timeout,
the database gone for a moment): the client's retry must find the session free, or gone, never claimed by the
failed request for the claim's 60 s lease. The real lock on a streamed last chunk is
`tests/test_server_database_faults.py`; the link written in the database writer's thread right after publishing
(a small blob's PUT) has no window a test can hold a lock in, so the database's refusal is made here."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from docker_registry.core.digest import blob_path, parse_digest
from docker_registry.server.registry.errors import BLOB_UPLOAD_UNKNOWN, RegistryError
from docker_registry.server.store.metadata import MetadataStore


async def body(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _refuse_one_link(store: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next `finish_upload` fails as a database that cannot write does; the list counts the refusals."""
    refused: list[int] = []
    real = store.finish_upload

    def finish_upload(*args: Any, **kwargs: Any) -> bool:
        if not refused:
            refused.append(1)
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "finish_upload", finish_upload)
    return refused


async def test_a_small_sessions_put_refused_after_publishing_ends_the_session(  # type: ignore[no-untyped-def]
    file_uploads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATCH, then a PUT without a body: the session's bytes are moved to the blob's path, then the link fails.
    Nothing is left of the session to resume: it is ended (the retry hears BLOB_UPLOAD_UNKNOWN and starts again),
    and the new upload of the same bytes finishes."""
    uploads, store, driver = file_uploads
    data = b"a small layer"
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    upload = await uploads.start("repo")
    await uploads.append("repo", upload.id, body(data), start=0, arrived=True)
    refused = _refuse_one_link(store, monkeypatch)
    with pytest.raises(sa.exc.OperationalError):
        await uploads.complete("repo", upload.id, digest, None)
    assert refused
    assert await driver.get_content(blob_path(digest)) == data  # published, verified, pinned
    with pytest.raises(RegistryError) as info:
        await uploads.get("repo", upload.id)
    assert info.value.error is BLOB_UPLOAD_UNKNOWN

    again = await uploads.start("repo")
    await uploads.append("repo", again.id, body(data), start=0, arrived=True)
    await uploads.complete("repo", again.id, digest, None)
    assert store.blob_size("repo", digest) == len(data)


async def test_a_whole_body_put_refused_after_publishing_frees_the_empty_session(  # type: ignore[no-untyped-def]
    file_uploads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST, then a PUT with the whole blob: written at the blob's path, then the link fails. The session was
    never written: it is released, empty, and the client's PUT sent again finishes it."""
    uploads, store, _driver = file_uploads
    data = b"a whole small layer in the PUT"
    digest = parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    upload = await uploads.start("repo")
    _refuse_one_link(store, monkeypatch)
    with pytest.raises(sa.exc.OperationalError):
        await uploads.complete("repo", upload.id, digest, body(data))
    session = await uploads.get("repo", upload.id)
    assert (session.size, session.writer) == (0, None)
    await uploads.complete("repo", upload.id, digest, body(data))
    assert store.blob_size("repo", digest) == len(data)
