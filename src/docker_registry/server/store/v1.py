"""The legacy v1 API's records: images (global, as in the original), each repository's index images, v1 tags and
repository properties. No API knowledge: the v1 feature decides what the records mean to a client.

A v1 tag shares the tag namespace of v2: the tag row itself is the v2 one (pointing at the manifest the v1 bridge
built), and `v1_tags` remembers which v1 image that manifest stands for. A v2 push that moves the tag leaves the
`v1_tags` row behind pointing at another manifest: the tag is then a v2 tag, seen by v1 through the chain its
manifest is presented as (`v1_presented`).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import Enum

import sqlalchemy as sa

from docker_registry.core.digest import Digest

from .base import REPOSITORY_ID, REPOSITORY_ID_OF, StoreBase, like_pattern, matchable, per_dialect, stored_digest
from .models import V1Image, V1Tag
from .tables import (
    blobs,
    manifests,
    registry_secrets,
    repositories,
    repository_blobs,
    tags,
    v1_images,
    v1_presented,
    v1_repositories,
    v1_repository_images,
    v1_tags,
)

_IMAGE = sa.select(v1_images).where(v1_images.c.id == sa.bindparam("image_id"))
_INSERT_BLOB = per_dialect(
    lambda insert: (
        insert(blobs)
        .values(digest=sa.bindparam("digest"), size=sa.bindparam("size"), created_at=sa.bindparam("now"))
        .on_conflict_do_nothing(index_elements=["digest"])
    )
)
_INSERT_IMAGE = per_dialect(lambda insert: insert(v1_images).on_conflict_do_nothing(index_elements=["id"]))
_INSERT_IMAGE_ID = per_dialect(
    lambda insert: insert(v1_images).on_conflict_do_nothing(index_elements=["id"]).returning(v1_images.c.id)
)
"""As `_INSERT_IMAGE`, with the id back when the row was inserted."""
"""Inserts race on PostgreSQL (two pushes or presentations of one image at once): the first one wins, as it holds
the same content."""
_INSERT_PRESENTED = per_dialect(
    lambda insert: insert(v1_presented).on_conflict_do_nothing(index_elements=["manifest_digest"])
)
_INSERT_INDEX_IMAGE = per_dialect(
    lambda insert: insert(v1_repository_images).on_conflict_do_nothing(index_elements=["repository_id", "image_id"])
)
_UPSERT_V1_TAG = per_dialect(
    lambda insert: (
        statement := insert(v1_tags).values(
            repository_id=sa.bindparam("repository_id"),
            name=sa.bindparam("tag"),
            manifest_id=sa.bindparam("manifest_id"),
            image_id=sa.bindparam("image_id"),
            json=sa.bindparam("json"),
        )
    ).on_conflict_do_update(
        index_elements=["repository_id", "name"],
        set_={
            "manifest_id": statement.excluded.manifest_id,
            "image_id": statement.excluded.image_id,
            "json": statement.excluded.json,
        },
    )
)
_UPSERT_PROPERTIES = per_dialect(
    lambda insert: (
        statement := insert(v1_repositories).values(
            repository_id=sa.bindparam("repository_id"),
            properties=sa.bindparam("properties"),
            description=sa.bindparam("description"),
        )
    ).on_conflict_do_update(
        index_elements=["repository_id"],
        set_={"properties": statement.excluded.properties, "description": statement.excluded.description},
    )
)
PRESENTATION_SECRET = "v1-presentation"
_SECRET = sa.select(registry_secrets.c.value).where(registry_secrets.c.name == PRESENTATION_SECRET)
_INSERT_SECRET = per_dialect(lambda insert: insert(registry_secrets).on_conflict_do_nothing(index_elements=["name"]))
_TAGGED = (
    tags.join(manifests, manifests.c.id == tags.c.manifest_id)
    .outerjoin(
        v1_tags,
        sa.and_(
            v1_tags.c.repository_id == tags.c.repository_id,
            v1_tags.c.name == tags.c.name,
            v1_tags.c.manifest_id == tags.c.manifest_id,
        ),
    )
    .outerjoin(v1_presented, v1_presented.c.manifest_digest == manifests.c.digest)
)
_TAG_IMAGE = sa.func.coalesce(v1_tags.c.image_id, v1_presented.c.image_id)
_TAGS = (
    sa.select(tags.c.name, manifests.c.digest, _TAG_IMAGE.label("image_id"), v1_tags.c.json)
    .select_from(_TAGGED)
    .where(tags.c.repository_id == REPOSITORY_ID_OF)
)
"""Every tag of a repository with its manifest and, if known, its v1 image: the one a v1 push pointed it at (while
the tag still points at the manifest that push made), else the chain its v2 manifest was presented as."""


_V1_RECORDED = sa.union_all(
    sa.select(1).where(v1_repository_images.c.repository_id == REPOSITORY_ID_OF),
    sa.select(1).where(v1_repositories.c.repository_id == REPOSITORY_ID_OF),
).limit(1)
"""A repository v1 has records of: index images a push listed, properties."""

_TOP = v1_images.alias("top")
_LISTED = v1_images.alias("listed")
_HOLDERS = sa.union(
    sa.select(repositories.c.name)
    .select_from(
        v1_repository_images.join(repositories, repositories.c.id == v1_repository_images.c.repository_id).outerjoin(
            _LISTED, _LISTED.c.id == v1_repository_images.c.image_id
        )
    )
    .where(
        v1_repository_images.c.image_id == sa.bindparam("image_id"),
        sa.or_(
            v1_repository_images.c.listed_by.is_(None),
            _LISTED.c.id.is_(None),
            v1_repository_images.c.listed_by == _LISTED.c.pusher,
        ),
    ),
    sa.select(repositories.c.name)
    .select_from(
        _TAGGED.join(repositories, repositories.c.id == tags.c.repository_id).join(_TOP, _TOP.c.id == _TAG_IMAGE)
    )
    .where(
        tags.c.repository_id.in_(
            sa.select(repository_blobs.c.repository_id).where(
                repository_blobs.c.digest
                == sa.select(v1_images.c.layer_digest)
                .where(v1_images.c.id == sa.bindparam("image_id"))
                .scalar_subquery()
            )
        ),
        _TOP.c.ancestry.like(sa.bindparam("in_ancestry"), escape="\\"),
    ),
)
"""The repositories that hold a v1 image: their index images list it, or a tag's chain contains it (a v1 tag's, or
the chain its v2 manifest was presented as). A listing made before the image existed (`listed_by`) holds it only
once its lister pushed it: until then it keeps others from writing it; after, it opens nobody else's image. Only
repositories that link the image's layer can hold it in a chain (a chain's manifest references every layer of it):
they are the ones whose tags are read."""
_PUSHED = sa.select(v1_images.c.pusher, v1_images.c.complete).where(v1_images.c.id == sa.bindparam("image_id"))
ANONYMOUS = ""
"""The pusher, and lister, recorded for an anonymous caller under auth: someone, as a user is (anonymous callers
are one another), where NULL means "without auth, or recorded before 0028" and keeps the rules from before. Recorded
as NULL, an anonymous push under a public id was open to everyone, as it was before 0028."""


def identity(user: str | None) -> str:
    """Who a caller under auth is, for `pusher` and `listed_by`: the user, or `ANONYMOUS`."""
    return ANONYMOUS if user is None else user


@dataclass(frozen=True, slots=True)
class V1Holding:
    """Who may use a v1 image, which belongs to no repository: the repositories that hold it (`_HOLDERS`) and the
    user who pushed it. The auth gate asks it about the image a path names, the v1 feature about those a body names
    (a json's parent, a tag's image): neither may import the other, so the rule lives with the records."""

    holders: list[str]
    pusher: str | None
    """The authenticated user who wrote its json; None when anonymous, without auth, or not pushed through v1 since
    migration 0028 (imported, presented, older): such an image keeps the rules from before."""
    found: bool
    complete: bool

    def readable_by(self, user: str | None, may_pull: Callable[[str], bool], pushes_somewhere: bool) -> bool:
        """Its pusher may read it, and whoever may pull a repository holding it. One that nothing holds is its
        pusher's alone: ids are global, some are public (images pulled from Docker Hub), and an id is no proof of
        the right to someone's content. Without a pusher and a holder (an unknown id: a 404 follows), as before:
        who may push somewhere, who could list it anyway."""
        if self.pusher is not None and self.pusher == user:
            return True
        if self.holders:
            return any(may_pull(holder) for holder in self.holders)
        return self.pusher is None and pushes_somewhere

    def writable_by(self, user: str | None, readable: bool) -> bool:
        """Whether `user`, allowed to push where it is listed (or somewhere), may write its json, layer or checksum:
        not an incomplete image whose json another user wrote, nor a complete one they cannot read (it never
        changes: the 409 would tell their engine it was pushed already, and the engine would build on it)."""
        if not self.found:
            return True
        if self.complete:
            return readable
        return self.pusher is None or self.pusher == user


class PutJson(Enum):
    """What a v1 json PUT found."""

    STORED = "stored"
    EXISTS = "exists"
    """A complete image has that id: it can no longer change."""
    NO_PARENT = "no-parent"
    PARENT_INCOMPLETE = "parent-incomplete"
    """Its parent is being pushed: engines push a parent whole first, and a child's ancestry is copied from its
    parent's, which a new json of the parent would change under it."""
    NOT_YOURS = "not-yours"
    """Another user wrote the json of the incomplete image."""


def _columns(image: V1Image) -> dict[str, object]:
    return {
        "id": image.id,
        "json": image.json,
        "parent": image.parent,
        "ancestry": json.dumps(image.ancestry),
        "layer_digest": None if image.layer_digest is None else str(image.layer_digest),
        "size": image.size,
        "checksum": image.checksum,
        "diff_id": None if image.diff_id is None else str(image.diff_id),
        "complete": image.complete,
    }


def _image(row: sa.Row[tuple[object, ...]]) -> V1Image:
    mapping = row._mapping
    return V1Image(
        id=mapping["id"],
        json=bytes(mapping["json"]),
        parent=mapping["parent"],
        ancestry=json.loads(mapping["ancestry"]),
        layer_digest=stored_digest(mapping["layer_digest"]) if mapping["layer_digest"] else None,
        size=mapping["size"],
        checksum=mapping["checksum"],
        diff_id=stored_digest(mapping["diff_id"]) if mapping["diff_id"] else None,
        complete=bool(mapping["complete"]),
    )


def _presented_as(found: V1Image, image: V1Image) -> bool:
    """Whether a stored image is a presentation of the same layer at the same place of a chain: presented images
    are complete without a payload checksum, which every image pushed through v1 has once it has its layer."""
    return (
        found.complete
        and found.checksum is None
        and (found.layer_digest, found.diff_id, found.parent) == (image.layer_digest, image.diff_id, image.parent)
    )


class V1Queries(StoreBase):
    # --- images ----------------------------------------------------------------------------------------------
    def v1_image(self, image_id: str) -> V1Image | None:
        row = self._read(lambda conn: conn.execute(_IMAGE, {"image_id": image_id}).first())
        return None if row is None else _image(row)

    def v1_images(self, image_ids: Sequence[str]) -> dict[str, V1Image]:
        query = sa.select(v1_images).where(v1_images.c.id.in_(list(image_ids)))
        rows = self._read(lambda conn: conn.execute(query).all())
        return {row.id: _image(row) for row in rows}

    def put_v1_json(self, image_id: str, raw: bytes, parent: str | None, pusher: str | None) -> PutJson:
        """Record an image's json, written by `pusher` (again, while it is incomplete, by the same user or over a
        json nobody authenticated wrote: a retried push starts over from its json)."""

        def put(conn: sa.Connection) -> PutJson:
            existing = conn.execute(_IMAGE, {"image_id": image_id}).first()
            if existing is not None and existing.complete:
                return PutJson.EXISTS
            if pusher is not None and existing is not None and existing.pusher not in (None, pusher):
                return PutJson.NOT_YOURS  # without auth (`pusher` None) nobody is told apart, as before 0028
            ancestry = [image_id]
            if parent is not None:
                parent_row = conn.execute(_IMAGE, {"image_id": parent}).first()
                if parent_row is None:
                    return PutJson.NO_PARENT
                if not parent_row.complete:
                    return PutJson.PARENT_INCOMPLETE
                ancestry += json.loads(parent_row.ancestry)
            values = {
                "json": raw,
                "pusher": pusher,
                "parent": parent,
                "ancestry": json.dumps(ancestry),
                "layer_digest": None,
                "size": None,
                "checksum": None,
                "diff_id": None,
                "complete": False,
                "created_at": time.time(),
            }
            if existing is None:
                if conn.execute(_INSERT_IMAGE_ID[self._dialect].values(id=image_id, **values)).first() is None:
                    return self._raced_json(conn, image_id, pusher)
            else:
                conn.execute(v1_images.update().where(v1_images.c.id == image_id).values(**values))
            return PutJson.STORED

        return self._write(put)

    @staticmethod
    def _raced_json(conn: sa.Connection, image_id: str, pusher: str | None) -> PutJson:
        """A first json PUT whose insert found the row another PUT of the same id inserted meanwhile (PostgreSQL:
        both read no row; SQLite's writers take turns): that one stands, and says whose it is."""
        raced = conn.execute(_IMAGE, {"image_id": image_id}).first()
        if raced is not None and raced.complete:
            return PutJson.EXISTS
        if pusher is not None and raced is not None and raced.pusher not in (None, pusher):
            return PutJson.NOT_YOURS
        return PutJson.STORED

    def put_v1_layer(
        self,
        image_id: str,
        digest: Digest,
        size: int,
        checksum: str,
        diff_id: Digest | None,
        json_bytes: bytes,
        pusher: str | None,
    ) -> bool:
        """Record the verified layer blob of an incomplete image whose json is still `json_bytes` (the checksum
        was computed over them), written by `pusher` or by nobody authenticated; False if the image is gone,
        complete, or its json changed meanwhile (another user's since)."""

        def put(conn: sa.Connection) -> bool:
            now = time.time()
            updated = conn.execute(
                v1_images.update()
                .where(
                    v1_images.c.id == image_id,
                    v1_images.c.complete.is_(False),
                    v1_images.c.json == json_bytes,
                    sa.true() if pusher is None else sa.or_(v1_images.c.pusher.is_(None), v1_images.c.pusher == pusher),
                )
                .values(
                    layer_digest=str(digest),
                    size=size,
                    checksum=checksum,
                    diff_id=None if diff_id is None else str(diff_id),
                )
            ).rowcount
            if updated:
                conn.execute(_INSERT_BLOB[self._dialect], {"digest": str(digest), "size": size, "now": now})
            return bool(updated)

        return self._write(put)

    def complete_v1_image(self, image_id: str, checksum: str) -> bool:
        """Mark the image complete if its layer's checksum is `checksum`."""
        statement = (
            v1_images.update()
            .where(
                v1_images.c.id == image_id,
                v1_images.c.complete.is_(False),
                v1_images.c.checksum == checksum,
                v1_images.c.layer_digest.is_not(None),
            )
            .values(complete=True)
        )
        return self._write(lambda conn: conn.execute(statement).rowcount > 0)

    def import_v1_image(self, image: V1Image) -> bool:
        """An image read from an original registry's storage; False (nothing changed) if one with that id is
        there already, complete, or incomplete and the imported one is not complete either."""

        def put(conn: sa.Connection) -> bool:
            existing = conn.execute(_IMAGE, {"image_id": image.id}).first()
            if existing is not None and (existing.complete or not image.complete):
                return False
            now = time.time()
            values = {**_columns(image), "created_at": now}
            if image.layer_digest is not None and image.size is not None:
                conn.execute(
                    _INSERT_BLOB[self._dialect], {"digest": str(image.layer_digest), "size": image.size, "now": now}
                )
            if existing is None:
                conn.execute(_INSERT_IMAGE[self._dialect].values(**values))
            else:
                conn.execute(v1_images.update().where(v1_images.c.id == image.id).values(**values))
            return True

        return self._write(put)

    def v1_image_holding(self, image_id: str) -> V1Holding:
        """The repositories that hold the image (`_HOLDERS`), by name (none for an unknown image, or one that no
        repository lists: pushed without `PUT /v1/repositories/<repo>/` and never tagged), and who pushed it."""
        params = {"image_id": image_id, "in_ancestry": like_pattern(json.dumps(image_id))}

        def read(conn: sa.Connection) -> V1Holding:
            holders = sorted(conn.execute(_HOLDERS, params).scalars().all())
            pushed = conn.execute(_PUSHED, params).first()
            if pushed is None:
                return V1Holding(holders, None, found=False, complete=False)
            return V1Holding(holders, pushed.pusher, found=True, complete=bool(pushed.complete))

        return self._read(read)

    def v1_presentation_secret(self) -> str:
        """The key presented images' ids are derived with (`v1/presented`), drawn by the first worker of any node
        that asks and shared by all."""

        def draw(conn: sa.Connection) -> str:
            found = conn.execute(_SECRET).scalar()
            if found is None:
                conn.execute(
                    _INSERT_SECRET[self._dialect].values(name=PRESENTATION_SECRET, value=secrets.token_hex(32))
                )
                found = conn.execute(_SECRET).scalar_one()
            return str(found)

        return self._write(draw)

    # --- index images ----------------------------------------------------------------------------------------
    def v1_index_images(self, repository: str) -> list[dict[str, str]] | None:
        """The repository's index images (`{"id"[, "checksum"]}`); None if it has none."""
        query = (
            sa.select(v1_repository_images.c.image_id, v1_repository_images.c.checksum)
            .where(v1_repository_images.c.repository_id == REPOSITORY_ID_OF)
            .order_by(v1_repository_images.c.image_id)
        )
        rows = self._read(lambda conn: conn.execute(query, {"repository": repository}).all())
        if not rows:
            return None
        return [{"id": r.image_id, "checksum": r.checksum} if r.checksum else {"id": r.image_id} for r in rows]

    def put_v1_index_images(
        self,
        repository: str,
        images: Sequence[tuple[str, str | None]],
        lister: str | None,
        readable: Collection[str] | None,
    ) -> None:
        """Merge into the repository's index images; a known checksum is kept when the new entry has none. An
        image that exists is listed only if `lister` may read it (it is in `readable`; None: every image): listing
        another's image is no way to read it. One that does not exist yet is listed as `lister`'s, to hold once
        they push it."""

        def put(conn: sa.Connection) -> None:
            repo_id = self._repository_id(conn, repository, time.time())
            ids = sorted({image_id for image_id, _ in images})
            existing = set(conn.execute(sa.select(v1_images.c.id).where(v1_images.c.id.in_(ids))).scalars())
            for image_id, checksum in sorted(set(images)):
                if image_id in existing and readable is not None and image_id not in readable:
                    continue
                listed_by = None if image_id in existing else lister
                where = sa.and_(
                    v1_repository_images.c.repository_id == repo_id, v1_repository_images.c.image_id == image_id
                )
                found = conn.execute(
                    sa.select(v1_repository_images.c.checksum, v1_repository_images.c.listed_by).where(where)
                ).first()
                if found is None:
                    conn.execute(
                        _INSERT_INDEX_IMAGE[self._dialect].values(
                            repository_id=repo_id, image_id=image_id, checksum=checksum, listed_by=listed_by
                        )
                    )
                    continue
                changes: dict[str, str | None] = {}
                if checksum and found.checksum != checksum:
                    changes["checksum"] = checksum
                if listed_by is None and found.listed_by is not None:  # listed again by who may read it now
                    changes["listed_by"] = None
                if changes:
                    conn.execute(v1_repository_images.update().where(where).values(**changes))

        self._write(put)

    # --- tags ------------------------------------------------------------------------------------------------
    def v1_tags(self, repository: str) -> dict[str, V1Tag] | None:
        """Every tag of the repository as v1 sees it; None if the repository is unknown, or holds nothing v1 sees
        (no tag, no index images, no properties): what the original's repository deletion leaves, while its
        untagged manifests keep the row."""

        def read(conn: sa.Connection) -> dict[str, V1Tag] | None:
            params = {"repository": repository}
            if conn.execute(REPOSITORY_ID, params).scalar() is None:
                return None
            rows = conn.execute(_TAGS, params).all()
            if not rows and conn.execute(_V1_RECORDED, params).first() is None:
                return None
            return {row.name: V1Tag(stored_digest(row.digest), row.image_id, row.json) for row in rows}

        return self._read(read)

    def present_v2_image(self, manifest: Digest, chain: Sequence[V1Image], top: str) -> str | None:
        """Record the v1 chain (top first) a v2-pushed image manifest is presented as, and its top image id (empty
        when v1 clients cannot use the manifest: then the chain is empty); images already presented (a chain shares
        its base with others) are left as they are. Returns the top id recorded for the manifest (another
        presentation's, when two ran at once), or None, writing nothing, when an id of the chain is another image's:
        ids are derived from content, so anyone may compute them and push a v1 image of their own under one before
        the manifest is presented; such an image is never taken for the presented one."""

        def put(conn: sa.Connection) -> str | None:
            fresh: list[V1Image] = []
            for image in reversed(chain):
                row = conn.execute(_IMAGE, {"image_id": image.id}).first()
                if row is None:
                    fresh.append(image)
                elif not _presented_as(_image(row), image):
                    return None
            now = time.time()
            for image in fresh:
                conn.execute(_INSERT_IMAGE[self._dialect].values(**_columns(image), created_at=now))
            conn.execute(_INSERT_PRESENTED[self._dialect].values(manifest_digest=str(manifest), image_id=top))
            recorded = sa.select(v1_presented.c.image_id).where(v1_presented.c.manifest_digest == str(manifest))
            return str(conn.execute(recorded).scalar_one())

        return self._write(put)

    def put_v1_tag(self, repository: str, tag: str, manifest: Digest, image_id: str, tag_json: str) -> bool:
        """Remember that the tag (which a v2 write just pointed at `manifest`) stands for `image_id`; False, writing
        nothing, when the manifest or the image went meanwhile (a collection deletes presented images nothing
        reaches, and the tag's check of its image was another transaction)."""

        def put(conn: sa.Connection) -> bool:
            if conn.execute(_IMAGE, {"image_id": image_id}).first() is None:
                return False
            repo_id = conn.execute(REPOSITORY_ID, {"repository": repository}).scalar()
            manifest_id = conn.execute(
                sa.select(manifests.c.id).where(
                    manifests.c.repository_id == repo_id, manifests.c.digest == str(manifest)
                )
            ).scalar()
            if manifest_id is None:
                return False
            params = {
                "repository_id": repo_id,
                "tag": tag,
                "manifest_id": manifest_id,
                "image_id": image_id,
                "json": tag_json,
            }
            conn.execute(_UPSERT_V1_TAG[self._dialect], params)
            return True

        return self._write(put)

    def delete_v1_tags(self, repository: str, names: Sequence[str]) -> int:
        """Delete tags (whichever API wrote them: one namespace) with their v1 records; how many were deleted."""

        def delete(conn: sa.Connection) -> int:
            repo_id = conn.execute(REPOSITORY_ID, {"repository": repository}).scalar()
            deleted = 0
            for name in sorted(set(names)):
                deleted += conn.execute(
                    tags.delete().where(tags.c.repository_id == repo_id, tags.c.name == name)
                ).rowcount
                conn.execute(v1_tags.delete().where(v1_tags.c.repository_id == repo_id, v1_tags.c.name == name))
            return deleted

        return self._write(delete)

    def delete_v1_repository(self, repository: str, tag_names: Sequence[str]) -> bool:
        """The original's repository deletion: the tags named (those v1 clients see, whichever API wrote them),
        the index images and properties; manifests and blobs stay, untagged, as v2 deletes by tag leave them.
        False if there was nothing to delete."""

        def delete(conn: sa.Connection) -> bool:
            repo_id = conn.execute(REPOSITORY_ID, {"repository": repository}).scalar()
            if repo_id is None:
                return False
            found = 0
            for name in sorted(set(tag_names)):
                found += conn.execute(
                    tags.delete().where(tags.c.repository_id == repo_id, tags.c.name == name)
                ).rowcount
            for table in (v1_tags, v1_repository_images, v1_repositories):
                found += conn.execute(table.delete().where(table.c.repository_id == repo_id)).rowcount
            return found > 0

        return self._write(delete)

    # --- properties and search -------------------------------------------------------------------------------
    def v1_properties(self, repository: str) -> tuple[dict[str, str], str] | None:
        """The repository's properties and description; None if none were set."""
        query = sa.select(v1_repositories.c.properties, v1_repositories.c.description).where(
            v1_repositories.c.repository_id == REPOSITORY_ID_OF
        )
        row = self._read(lambda conn: conn.execute(query, {"repository": repository}).first())
        return None if row is None else (json.loads(row.properties), row.description)

    def put_v1_properties(self, repository: str, properties: dict[str, str], description: str = "") -> None:
        def put(conn: sa.Connection) -> None:
            repo_id = self._repository_id(conn, repository, time.time())
            params = {"repository_id": repo_id, "properties": json.dumps(properties), "description": description}
            conn.execute(_UPSERT_PROPERTIES[self._dialect], params)

        self._write(put)

    def search_repositories(self, term: str) -> list[tuple[str, str]]:
        """(name, description) of the repositories whose name or description contains `term`, sorted by name."""
        if not matchable(term):
            return []
        pattern = like_pattern(term)
        description = sa.func.coalesce(v1_repositories.c.description, "")
        # case-insensitive on every database, as the original's search on SQLite (PostgreSQL's LIKE is not)
        matching = sa.or_(repositories.c.name.ilike(pattern, escape="\\"), description.ilike(pattern, escape="\\"))
        query = (
            sa.select(repositories.c.name, description.label("description"))
            .select_from(repositories.outerjoin(v1_repositories))
            .where(matching)
            .order_by(self._bytewise(repositories.c.name))
        )
        return self._read(lambda conn: [(row.name, row.description) for row in conn.execute(query)])
