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
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", sa.String(200), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

repository_blobs = sa.Table(
    "repository_blobs",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(200), sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
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
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
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
)

v1_repository_images = sa.Table(
    "v1_repository_images",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("image_id", sa.String(64), primary_key=True),
    sa.Column("checksum", sa.String(200), nullable=True),
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
