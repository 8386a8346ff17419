"""Queries of the metadata store. Every method is synchronous and short; the registry runs them in a thread.

Writes are single transactions, so a concurrent push of the same tag or blob by several clients (in several
processes) ends in one consistent state: the last committed tag wins, links are idempotent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..manifests import Manifest
from .engine import with_retries, write_transaction
from .tables import blobs, manifest_references, manifests, repositories, repository_blobs, tags, uploads


@dataclass(frozen=True, slots=True)
class StoredManifest:
    media_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Referrer:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository: str
    size: int
    writer: str | None = None
    """The claim token of the request writing to the session now, if any."""
    writer_process: str | None = None
    """That request's process (process_identity), when it could be told."""
    writer_since: float | None = None


class BadReference(Exception):
    """A pushed manifest names a blob or child manifest the repository lacks, or gives it the wrong size."""

    def __init__(self, kind: str, digest: str, declared_size: int, stored_size: int | None) -> None:
        super().__init__(f"{kind} {digest}: size {declared_size}, stored {stored_size}")
        self.kind = kind
        """'blob' (config or layer) or 'manifest' (an index's child)."""
        self.digest = digest
        self.declared_size = declared_size
        self.stored_size = stored_size
        """None when the repository does not have it at all."""


WRITER_LEASE_SECONDS = 60.0
"""A session's writer renews its claim well within this; a claim not renewed for this long belongs to a process
that died (on another host: on its own, the claimant's host frees the claim at once) and another may take over."""


class MetadataStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self.writer_lease = WRITER_LEASE_SECONDS

    def close(self) -> None:
        self.engine.dispose()

    def _bytewise(self, column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        """Lists are sorted by bytes, as the spec's lexical order; SQLite does so already, PostgreSQL needs "C"."""
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    # --- reads ---------------------------------------------------------------------------------------------
    def _scalar(self, query: sa.Executable) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def repository_exists(self, name: str) -> bool:
        return self._scalar(sa.select(_repository_id_of(name))) is not None

    def tag_digest(self, repository: str, tag: str) -> str | None:
        return self._scalar(
            sa.select(manifests.c.digest)
            .select_from(tags.join(repositories).join(manifests, manifests.c.id == tags.c.manifest_id))
            .where(repositories.c.name == repository, tags.c.name == tag)
        )

    def manifest(self, repository: str, digest: str) -> StoredManifest | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(manifests.c.media_type, manifests.c.content)
                .select_from(manifests.join(repositories))
                .where(repositories.c.name == repository, manifests.c.digest == digest)
            ).first()
        return StoredManifest(row.media_type, bytes(row.content)) if row else None

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob this repository may serve, or None."""
        return self._scalar(
            sa.select(blobs.c.size)
            .select_from(repository_blobs.join(repositories).join(blobs))
            .where(repositories.c.name == repository, repository_blobs.c.digest == digest)
        )

    def known_blob_size(self, digest: str) -> int | None:
        """Size of a verified blob in storage, whatever repository links it."""
        return self._scalar(sa.select(blobs.c.size).where(blobs.c.digest == digest))

    def tags(self, repository: str, last: str | None, limit: int | None) -> list[str] | None:
        """Tag names after `last`, sorted by bytes; None when the repository does not exist."""
        with self.engine.connect() as conn:
            repo_id = conn.execute(sa.select(_repository_id_of(repository))).scalar()
            if repo_id is None:
                return None
            name = self._bytewise(tags.c.name)
            query = sa.select(tags.c.name).where(tags.c.repository_id == repo_id).order_by(name)
            if last:
                query = query.where(name > last)
            if limit is not None:
                query = query.limit(limit)
            return list(conn.execute(query).scalars())

    def repositories(self, last: str | None, limit: int) -> list[str]:
        name = self._bytewise(repositories.c.name)
        query = sa.select(repositories.c.name).order_by(name).limit(limit)
        if last:
            query = query.where(name > last)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        query = (
            sa.select(
                manifests.c.media_type,
                manifests.c.digest,
                manifests.c.size,
                manifests.c.artifact_type,
                manifests.c.annotations,
            )
            .select_from(manifests.join(repositories))
            .where(repositories.c.name == repository, manifests.c.subject_digest == subject)
            .order_by(manifests.c.id)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        with self.engine.connect() as conn:
            return [
                Referrer(
                    r.media_type,
                    r.digest,
                    r.size,
                    r.artifact_type,
                    json.loads(r.annotations) if r.annotations else None,
                )
                for r in conn.execute(query)
            ]

    def upload(self, upload_id: str) -> Upload | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*_UPLOAD_COLUMNS).where(uploads.c.id == upload_id)).first()
        return _upload(row) if row else None

    # --- writes --------------------------------------------------------------------------------------------
    def _repository_id(self, conn: sa.Connection, name: str, now: float) -> int:
        conn.execute(
            self._insert(repositories).values(name=name, created_at=now).on_conflict_do_nothing(index_elements=["name"])
        )
        return conn.execute(sa.select(_repository_id_of(name))).scalar_one()

    def _link(self, conn: sa.Connection, repo_id: int, digest: str, size: int, now: float) -> None:
        conn.execute(
            self._insert(blobs)
            .values(digest=digest, size=size, created_at=now)
            .on_conflict_do_nothing(index_elements=["digest"])
        )
        conn.execute(
            self._insert(repository_blobs)
            .values(repository_id=repo_id, digest=digest, created_at=now)
            .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
        )

    def link_blob(self, repository: str, digest: str, size: int) -> None:
        def run() -> None:
            now = time.time()
            with write_transaction(self.engine) as conn:
                self._link(conn, self._repository_id(conn, repository, now), digest, size, now)

        with_retries(run)

    def _check_references(self, conn: sa.Connection, repo_id: int, manifest: Manifest) -> None:
        """Raise BadReference unless every blob and child is in the repository with the size the manifest gives.

        Runs inside the write transaction and locks the rows it reads (FOR SHARE on PostgreSQL; SQLite's write
        transaction excludes every other writer), so a concurrent delete cannot remove them before the commit.
        """
        wanted = [("blob", d) for d in manifest.blobs] + [("manifest", d) for d in manifest.children]
        if not wanted:
            return
        found = {
            ("blob", row.digest): row.size
            for row in conn.execute(
                sa.select(repository_blobs.c.digest, blobs.c.size)
                .select_from(repository_blobs.join(blobs))
                .where(
                    repository_blobs.c.repository_id == repo_id,
                    repository_blobs.c.digest.in_({d.digest for d in manifest.blobs}),
                )
                .with_for_update(read=True, of=repository_blobs)
            )
        }
        found |= {
            ("manifest", row.digest): row.size
            for row in conn.execute(
                sa.select(manifests.c.digest, manifests.c.size)
                .where(
                    manifests.c.repository_id == repo_id,
                    manifests.c.digest.in_({d.digest for d in manifest.children}),
                )
                .with_for_update(read=True)
            )
        }
        for kind, descriptor in wanted:
            size = found.get((kind, descriptor.digest))
            if size != descriptor.size:
                raise BadReference(kind, descriptor.digest, descriptor.size, size)

    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None) -> None:
        """Store the manifest (and move the tag) after checking its references in the same transaction."""

        def run() -> None:
            now = time.time()
            with write_transaction(self.engine) as conn:
                repo_id = self._repository_id(conn, repository, now)
                self._check_references(conn, repo_id, manifest)
                # ON CONFLICT: a client pushing the same manifest concurrently (PostgreSQL, READ COMMITTED)
                manifest_id = conn.execute(
                    self._insert(manifests)
                    .values(
                        repository_id=repo_id,
                        digest=manifest.digest,
                        media_type=manifest.media_type,
                        content=manifest.raw,
                        size=len(manifest.raw),
                        subject_digest=manifest.subject.digest if manifest.subject else None,
                        artifact_type=manifest.artifact_type,
                        annotations=json.dumps(manifest.annotations) if manifest.annotations else None,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
                    .returning(manifests.c.id)
                ).scalar()
                if manifest_id is not None:
                    refs = {(d.digest, "blob") for d in manifest.blobs}
                    refs |= {(d.digest, "foreign") for d in manifest.foreign}
                    refs |= {(d.digest, "manifest") for d in manifest.children}
                    if refs:
                        conn.execute(
                            manifest_references.insert(),
                            [{"manifest_id": manifest_id, "digest": d, "kind": k} for d, k in sorted(refs)],
                        )
                else:
                    manifest_id = conn.execute(
                        sa.select(manifests.c.id).where(
                            manifests.c.repository_id == repo_id, manifests.c.digest == manifest.digest
                        )
                    ).scalar_one()
                if tag is not None:
                    conn.execute(
                        self._insert(tags)
                        .values(repository_id=repo_id, name=tag, manifest_id=manifest_id, updated_at=now)
                        .on_conflict_do_update(
                            index_elements=["repository_id", "name"],
                            set_={"manifest_id": manifest_id, "updated_at": now},
                        )
                    )

        with_retries(run)

    def delete_manifest(self, repository: str, digest: str) -> bool:
        def run() -> bool:
            with write_transaction(self.engine) as conn:
                manifest_id = conn.execute(
                    sa.select(manifests.c.id)
                    .select_from(manifests.join(repositories))
                    .where(repositories.c.name == repository, manifests.c.digest == digest)
                ).scalar()
                if manifest_id is None:
                    return False
                conn.execute(tags.delete().where(tags.c.manifest_id == manifest_id))
                conn.execute(manifest_references.delete().where(manifest_references.c.manifest_id == manifest_id))
                conn.execute(manifests.delete().where(manifests.c.id == manifest_id))
                return True

        return with_retries(run)

    def delete_tag(self, repository: str, tag: str) -> bool:
        def run() -> bool:
            with write_transaction(self.engine) as conn:
                result = conn.execute(
                    tags.delete().where(tags.c.repository_id == _repository_id_of(repository), tags.c.name == tag)
                )
                return result.rowcount > 0

        return with_retries(run)

    def unlink_blob(self, repository: str, digest: str) -> bool:
        def run() -> bool:
            with write_transaction(self.engine) as conn:
                result = conn.execute(
                    repository_blobs.delete().where(
                        repository_blobs.c.repository_id == _repository_id_of(repository),
                        repository_blobs.c.digest == digest,
                    )
                )
                return result.rowcount > 0

        return with_retries(run)

    def create_upload(self, upload_id: str, repository: str) -> None:
        def run() -> None:
            now = time.time()
            with write_transaction(self.engine, durable=False) as conn:
                conn.execute(
                    uploads.insert().values(id=upload_id, repository=repository, size=0, created_at=now, updated_at=now)
                )

        with_retries(run)

    def claim_upload(
        self,
        upload_id: str,
        repository: str,
        size: int | None,
        token: str,
        process: str | None = None,
        takeover: str | None = None,
    ) -> Upload | None:
        """Become the session's only writer, if it belongs to `repository`, holds `size` bytes (when given) and no
        live writer has it (or its writer is `takeover`, a claim found dead); the session as claimed, or None.
        One statement: this runs before every chunk."""

        def run() -> Upload | None:
            now = time.time()
            free = [uploads.c.writer.is_(None), uploads.c.writer_since < now - self.writer_lease]
            if takeover is not None:
                free.append(uploads.c.writer == takeover)
            conditions = [uploads.c.id == upload_id, uploads.c.repository == repository, sa.or_(*free)]
            if size is not None:
                conditions.append(uploads.c.size == size)
            with write_transaction(self.engine, durable=False) as conn:
                claimed = conn.execute(
                    uploads.update()
                    .where(*conditions)
                    .values(writer=token, writer_since=now, writer_process=process)
                    .returning(uploads.c.size)
                ).scalar()
            return None if claimed is None else Upload(upload_id, repository, claimed, token, process, now)

        return with_retries(run)

    def renew_upload(self, upload_id: str, token: str) -> bool:
        """Extend the writer's lease; False if the claim is no longer the writer's (the session was deleted)."""

        def run() -> bool:
            with write_transaction(self.engine, durable=False) as conn:
                return (
                    conn.execute(
                        uploads.update()
                        .where(uploads.c.id == upload_id, uploads.c.writer == token)
                        .values(writer_since=time.time())
                    ).rowcount
                    > 0
                )

        return with_retries(run)

    def release_upload(self, upload_id: str, token: str, size: int) -> bool:
        """Record the session's new size and let the next writer in; False if the session was deleted meanwhile."""

        def run() -> bool:
            with write_transaction(self.engine, durable=False) as conn:
                return (
                    conn.execute(
                        uploads.update()
                        .where(uploads.c.id == upload_id, uploads.c.writer == token)
                        .values(size=size, writer=None, writer_since=None, writer_process=None, updated_at=time.time())
                    ).rowcount
                    > 0
                )

        return with_retries(run)

    def delete_upload(self, upload_id: str) -> Upload | None:
        """End a session whoever writes to it; the session as it was (with its writer, if any), or None."""

        def run() -> Upload | None:
            with write_transaction(self.engine, durable=False) as conn:
                row = conn.execute(
                    uploads.delete().where(uploads.c.id == upload_id).returning(*_UPLOAD_COLUMNS)
                ).first()
            return _upload(row) if row else None

        return with_retries(run)

    def finish_upload(self, upload_id: str, repository: str, digest: str, size: int, token: str | None) -> bool:
        """Link the verified blob to its repository and end the session, in one transaction. With the writer's
        `token`, nothing is linked (False) if the session was deleted meanwhile."""

        def run() -> bool:
            now = time.time()
            with write_transaction(self.engine) as conn:
                ended = conn.execute(uploads.delete().where(uploads.c.id == upload_id, uploads.c.writer == token))
                if token is not None and ended.rowcount == 0:
                    return False
                self._link(conn, self._repository_id(conn, repository, now), digest, size, now)
                return True

        return with_retries(run)


_UPLOAD_COLUMNS = (
    uploads.c.id,
    uploads.c.repository,
    uploads.c.size,
    uploads.c.writer,
    uploads.c.writer_process,
    uploads.c.writer_since,
)


def _upload(row: sa.Row[Any]) -> Upload:
    return Upload(row.id, row.repository, row.size, row.writer, row.writer_process, row.writer_since)


def _repository_id_of(name: str) -> sa.ScalarSelect[int]:
    """The id of a repository by name, as a subquery: NULL when it does not exist, so a statement filtering on it
    matches nothing rather than needing a separate look-up first."""
    return sa.select(repositories.c.id).where(repositories.c.name == name).scalar_subquery()
