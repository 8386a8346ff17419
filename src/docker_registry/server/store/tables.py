"""Table definitions of the metadata store; the migrations in `migrations/versions` create exactly these."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # since when the repository holds nothing: no tag, manifest, blob link, upload session or v1 content (set by GC,
    # cleared by the next collection that finds it in use; migration 0018)
    sa.Column("gc_candidate_since", sa.Float, nullable=True),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Garbage collection (gc/): since when no repository links the blob, and since when its file is being deleted
    sa.Column("gc_candidate_since", sa.Float, nullable=True),
    sa.Column("deleting_since", sa.Float, nullable=True),
    # 0027: the few blobs being deleted found without a scan (every worker looks for a dead collection's every few s)
    sa.Index(
        "ix_blobs_deleting",
        "deleting_since",
        sqlite_where=sa.text("deleting_since IS NOT NULL"),
        postgresql_where=sa.text("deleting_since IS NOT NULL"),
    ),
)

repository_blobs = sa.Table(
    "repository_blobs",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(200), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # since when no manifest of the repository references the blob (set by GC, cleared by any new use)
    sa.Column("gc_candidate_since", sa.Float, nullable=True),
    sa.Index("ix_repository_blobs_digest", "digest", "repository_id"),  # 0022: a link found by both from either side
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("subject_digest", sa.String(200), nullable=True),
    sa.Column("artifact_type", sa.String(255), nullable=True),
    sa.Column("annotations", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # since when the manifest is untagged and unreferenced (set by GC, cleared by a push, a tag or a reference)
    sa.Column("gc_candidate_since", sa.Float, nullable=True),
    sa.UniqueConstraint("repository_id", "digest", name="uq_manifests_repository_digest"),
    sa.Index("ix_manifests_subject", "repository_id", "subject_digest"),
)

manifest_references = sa.Table(
    "manifest_references",
    metadata,
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(200), primary_key=True),
    # 'blob' (config, layers), 'foreign' (non-distributable layer with URLs) or 'manifest' (index child)
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Index("ix_manifest_references_digest", "digest", "kind", "manifest_id"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # The UI's orders: a repository's tags by push time, the registry's latest pushes (migration 0014).
    sa.Index("ix_tags_repository_updated", "repository_id", "updated_at"),
    sa.Index("ix_tags_updated", "updated_at"),
    sa.Index("ix_tags_manifest", "manifest_id"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("repository", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # The request appending to the session right now (a random token), so racing chunks cannot interleave.
    sa.Column("writer", sa.String(36), nullable=True),
    sa.Column("writer_since", sa.Float, nullable=True),
    # Who that request runs in (process_identity), so a claim left by a crashed process can be taken over at once.
    sa.Column("writer_process", sa.String(200), nullable=True),
    # The authenticated user who began the session (NULL: anonymous, or no auth): only they may use it.
    sa.Column("owner", sa.String(255), nullable=True),
    # garbage collection keeps a repository while a session of it lives (migration 0018)
    sa.Index("ix_uploads_repository", "repository"),
)

# --- the legacy v1 API (the original registry's images, index images, tags and properties) ---------------------------

v1_images = sa.Table(
    "v1_images",
    metadata,
    # 64 (or legacy 16) lowercase hex characters; global, as in the original: images belong to no repository
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("json", sa.LargeBinary, nullable=False),  # as pushed: the payload checksum covers these bytes
    sa.Column("parent", sa.String(64), nullable=True),
    sa.Column("ancestry", sa.Text, nullable=False),
    # the layer: a blob of the content-addressed store, by the sha256 of its bytes
    sa.Column("layer_digest", sa.String(200), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("checksum", sa.String(200), nullable=True),
    sa.Column("diff_id", sa.String(200), nullable=True),
    sa.Column("complete", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # 0028: the authenticated user who wrote the json (NULL: anonymous, no auth, imported, presented, or older)
    sa.Column("pusher", sa.String(200), nullable=True),
    # garbage collection keeps the blobs v1 images name (migration 0006)
    sa.Index("ix_v1_images_layer_digest", "layer_digest"),
)

v1_repository_images = sa.Table(
    "v1_repository_images",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("image_id", sa.String(64), primary_key=True),
    sa.Column("checksum", sa.String(200), nullable=True),
    # 0028: who listed the image before it existed: the listing holds it only once that user pushed it (NULL: it
    # holds, listed by a user who could read the image, anonymously, without auth, or before 0028)
    sa.Column("listed_by", sa.String(200), nullable=True),
    sa.Index("ix_v1_repository_images_image", "image_id", "repository_id"),  # 0023: who holds an image
)

v1_tags = sa.Table(
    "v1_tags",
    metadata,
    # A v1 PUT of a tag writes the v2 tag (to the manifest the bridge built) and this row; a tag is a v1 tag while
    # its v2 row still points at that manifest.
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    sa.Column("image_id", sa.String(64), nullable=False),
    sa.Column("json", sa.Text, nullable=False),
)

v1_repositories = sa.Table(
    "v1_repositories",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("properties", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
)

v1_presented = sa.Table(
    "v1_presented",
    metadata,
    # A v2-pushed image manifest as v1 clients see it: the top of the v1 image chain made from it (global: the
    # chain depends on the manifest's content only).
    sa.Column("manifest_digest", sa.String(200), primary_key=True),
    sa.Column("image_id", sa.String(64), nullable=False),
)

registry_secrets = sa.Table(
    "registry_secrets",
    metadata,
    # keys the registry draws once and every worker and node shares (migration 0023): v1's presented image ids
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

# Notifications (issue 13): the outbox of events, one cursor per endpoint, one lease for the single deliverer.
# A row holds one event, or a worker's batch of pull events (in a compact form of the notifications feature).
# AUTOINCREMENT on SQLite: ids are never reused after the delivered events are pruned, so a cursor stays meaningful.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    # events in `payload`: 1, or as many as a worker's batch of pull events holds, for the queue depth
    sa.Column("count", sa.Integer, nullable=False, server_default="1"),
    sqlite_autoincrement=True,
)

event_cursors = sa.Table(
    "event_cursors",
    metadata,
    sa.Column("endpoint", sa.String(255), primary_key=True),
    # the id of the last row of events this endpoint has been given whole (or has skipped: ignored, too old)
    sa.Column("position", sa.BigInteger, nullable=False),
    # how many events of the next row (a batch of pull events, one per line) it has been given already
    sa.Column("given", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.Float, nullable=False),
)

event_lease = sa.Table(
    "event_lease",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    # process_identity of the holder, so a holder that died on this host is replaced at once
    sa.Column("holder_process", sa.String(200), nullable=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)

blob_pins = sa.Table(
    "blob_pins",
    metadata,
    # An upload about to publish and link this blob: GC deletes no blob while a live pin names it.
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("token", sa.String(36), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    # One holder at a time across processes and nodes (garbage collection, upload purging); expires if not renewed.
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    # process_identity of the holder, so a holder that died on this host is replaced at once (migration 0026)
    sa.Column("holder_process", sa.String(200), nullable=True),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# --- the pull-through cache ----------------------------------------------------------------------------------------

proxy_pulls = sa.Table(
    "proxy_pulls",
    metadata,
    # When content cached from an upstream was last served (recorded at most once a minute per worker): garbage
    # collection may drop what nobody pulled within the upstream's ttl, as Distribution's proxy scheduler does.
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # 'manifest' or 'blob'
    sa.Column("pulled_at", sa.Float, nullable=False),
    sa.Index("ix_proxy_pulls_pulled_at", "pulled_at"),
)

proxy_tag_checks = sa.Table(
    "proxy_tag_checks",
    metadata,
    # When the upstream last confirmed a cached tag (migration 0019): every worker and node reads this one clock, so
    # a tag is revalidated at most once per ttl by the whole registry, not once per ttl per worker.
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(128), primary_key=True),
    sa.Column("checked_at", sa.Float, nullable=False),
)

proxy_fetches = sa.Table(
    "proxy_fetches",
    metadata,
    # Who is fetching a manifest from an upstream right now (migration 0019): the others wait for it instead of
    # asking the upstream too. A claim not released by `expires_at` belongs to a worker that died.
    sa.Column("key", sa.String(600), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),  # its process's identity and a token (migration 0024)
    sa.Column("expires_at", sa.Float, nullable=False),
)
