"""What the metadata store costs per small write, with no HTTP, no threads and no contention:
`python3 bench/store_micro.py [N]`.

Times, in one thread on a fresh SQLite database (the server's engine: WAL, synchronous=FULL), the store calls a
20 KB blob push makes (create, claim, release, claim, known_blob_size, finish: what POST + PATCH + PUT run) and a tag
PUT makes (put_manifest of a manifest already stored, under a new tag), then the same transactions written as plain
SQL on a bare `sqlite3` connection (one connection per durability, so no PRAGMA switching). CPU (process time) and
wall time per operation: the difference is SQLAlchemy's and the store's own Python, the floor is SQLite's and the
disk's. See PROFILE-small-writes.md.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import tests_path  # noqa: F401 - oci_content

from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.models import Descriptor, Manifest
from oci_content import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, sha256


def timed(label: str, n: int, op: Callable[[int], None]) -> tuple[float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        op(i)
    cpu, wall = (time.process_time() - cpu0) / n * 1e6, (time.perf_counter() - wall0) / n * 1e6
    print(f"  {label:<64} CPU {cpu:7.0f} µs   wall {wall:7.0f} µs")
    return cpu, wall


def image() -> tuple[Manifest, str, str]:
    config, layer = b'{"architecture":"amd64"}', os.urandom(1024)
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()
    manifest = Manifest(raw, OCI_MANIFEST, sha256(raw))
    manifest.blobs = [
        Descriptor(OCI_CONFIG, sha256(config), len(config), ()),
        Descriptor(OCI_LAYER_GZIP, sha256(layer), len(layer), ()),
    ]
    return manifest, sha256(config), sha256(layer)


def store_calls(db: Path, n: int, seeded: tuple[Manifest, str, str]) -> None:
    engine = create_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    manifest, config, layer = seeded
    store.link_blob("r", config, 24)
    store.link_blob("r", layer, 1024)
    store.put_manifest("r", manifest, ["latest"])
    print("SQLAlchemy store (store/*.py), one thread:")
    timed(
        "put_manifest, existing manifest, new tag (a tag PUT)",
        n,
        lambda i: store.put_manifest("r", manifest, [f"t{i}"]),
    )

    def blob(i: int) -> None:
        upload_id, token, digest = str(uuid.uuid4()), str(uuid.uuid4()), f"sha256:{os.urandom(32).hex()}"
        store.create_upload(upload_id, "r")
        store.claim_upload(upload_id, "r", None, token, "me")
        store.release_upload(upload_id, token, 20_000)
        store.claim_upload(upload_id, "r", None, token, "me")
        store.known_blob_size(digest)
        store.finish_upload(upload_id, "r", digest, 20_000, token)

    timed("a blob's 6 calls: create, claim, release, claim, known size, finish", n, blob)
    timed("create_upload alone (not durable)", n, lambda i: store.create_upload(str(uuid.uuid4()), "r"))
    store.close()


def raw_calls(db: Path, n: int, seeded: tuple[Manifest, str, str]) -> None:
    manifest, config, layer = seeded

    def connect(synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", f"synchronous={synchronous}", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    durable, relaxed = connect("FULL"), connect("NORMAL")

    def tag_put(i: int) -> None:
        now = time.time()
        c = durable
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", ("r", now))
        repo_id = c.execute("SELECT id FROM repositories WHERE name = ?", ("r",)).fetchone()[0]
        found = c.execute(
            "SELECT rb.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest "
            "WHERE rb.repository_id = ? AND rb.digest IN (?, ?)",
            (repo_id, config, layer),
        ).fetchall()
        assert len(found) == 2
        row = c.execute(
            "INSERT INTO manifests (repository_id, digest, media_type, content, size, artifact_type, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repository_id, digest) DO NOTHING RETURNING id",
            (repo_id, manifest.digest, manifest.media_type, manifest.raw, len(manifest.raw), OCI_CONFIG, now),
        ).fetchone()
        manifest_id = (
            row[0]
            if row
            else c.execute(
                "SELECT id FROM manifests WHERE repository_id = ? AND digest = ?", (repo_id, manifest.digest)
            ).fetchone()[0]
        )
        c.execute(
            "INSERT INTO tags (repository_id, name, manifest_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (repository_id, name) DO UPDATE SET manifest_id = excluded.manifest_id, "
            "updated_at = excluded.updated_at",
            (repo_id, f"raw{i}", manifest_id, now),
        )
        c.execute("COMMIT")

    def write(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(sql, params)
            cur.fetchall()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return cur

    claim = "UPDATE uploads SET writer = ?, writer_since = ?, writer_process = ? WHERE id = ? AND repository = ? "
    claim += "AND (writer IS NULL OR writer_since < ?) RETURNING size"
    release = "UPDATE uploads SET size = ?, writer = NULL, writer_since = NULL, writer_process = NULL, updated_at = ? "
    release += "WHERE id = ? AND writer = ?"

    def blob(i: int) -> None:
        upload_id, token, digest = str(uuid.uuid4()), str(uuid.uuid4()), f"sha256:{os.urandom(32).hex()}"
        now = time.time()
        write(
            relaxed,
            "INSERT INTO uploads (id, repository, size, created_at, updated_at) VALUES (?, ?, 0, ?, ?)",
            (upload_id, "r", now, now),
        )
        write(relaxed, claim, (token, now, "me", upload_id, "r", now - 60))
        write(relaxed, release, (20_000, now, upload_id, token))
        write(relaxed, claim, (token, now, "me", upload_id, "r", now - 60))
        durable.execute("SELECT size FROM blobs WHERE digest = ?", (digest,)).fetchall()
        c = durable
        c.execute("BEGIN IMMEDIATE")
        c.execute("DELETE FROM uploads WHERE id = ? AND writer = ?", (upload_id, token))
        c.execute("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", ("r", now))
        repo_id = c.execute("SELECT id FROM repositories WHERE name = ?", ("r",)).fetchone()[0]
        c.execute(
            "INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (digest, 1, now)
        )
        c.execute(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (repo_id, digest, now),
        )
        c.execute("COMMIT")

    print("plain sqlite3, same transactions, one thread:")
    timed("tag PUT transaction", n, tag_put)
    timed("a blob's 6 transactions", n, blob)
    durable.close()
    relaxed.close()


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    with tempfile.TemporaryDirectory(prefix="store-micro-") as tmp:
        db = Path(tmp) / "registry.db"
        seeded = image()
        store_calls(db, n, seeded)
        raw_calls(db, n, seeded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
