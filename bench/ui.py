"""The web UI's figures: `python3 bench/ui.py [--quick]`.

Time to first render, and then the median over later renders, of the repository list with 10,000 repositories and
of a repository with 5,000 tags (issue 14's target: under 300 ms of server time each), plus a search and the last
page of tags (the deepest OFFSET). The store is filled directly through SQL (a single transaction per table, not
through HTTP), every manifest with its own image config file in storage, so the tag page reads 50 configs that
no cache holds on its first render. Times are measured by the client over loopback with no auth: an upper bound
of the server's time. Nothing else from the registry is compared: CNCF Distribution has no UI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import servers

from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.tables import blobs, manifests, repositories, repository_blobs, tags

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TARGET_MS = 300.0


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_blob(root: Path, data: bytes) -> str:
    digest = _digest(data)
    hexpart = digest.split(":")[1]
    path = root / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _manifest(config: str, config_size: int, layer: str, layer_size: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_size},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": layer_size}],
        }
    ).encode()


def fill(root: Path, repository_count: int, tag_count: int) -> None:
    """`repository_count` repositories `team-<n>/app-<n>` of one image each, and `big/app` with `tag_count` tags,
    each on its own manifest and config."""
    engine = create_engine(f"sqlite:///{root / 'registry.db'}")
    migrate.upgrade(engine)
    now = time.time()
    layer = b"layer" * 200
    layer_digest = _write_blob(root, layer)
    shared_config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z"}).encode()
    shared_digest = _write_blob(root, shared_config)
    shared_manifest = _manifest(shared_digest, len(shared_config), layer_digest, len(layer))
    blob_rows: list[dict[str, Any]] = [
        {"digest": layer_digest, "size": len(layer), "created_at": now},
        {"digest": shared_digest, "size": len(shared_config), "created_at": now},
    ]
    big_manifests = []
    for i in range(tag_count):
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "config": {"Labels": {"build": str(i)}},
            }
        ).encode()
        digest = _write_blob(root, config)
        blob_rows.append({"digest": digest, "size": len(config), "created_at": now})
        big_manifests.append(_manifest(digest, len(config), layer_digest, len(layer)))
    with engine.begin() as conn:
        conn.execute(blobs.insert(), blob_rows)
        names = [f"team-{i % 100:03d}/app-{i:05d}" for i in range(repository_count)] + ["big/app"]
        conn.execute(
            repositories.insert(), [{"id": n + 1, "name": name, "created_at": now} for n, name in enumerate(names)]
        )
        big_id = len(names)
        links = [
            {"repository_id": n + 1, "digest": d, "created_at": now}
            for n in range(big_id - 1)
            for d in (layer_digest, shared_digest)
        ]
        links += [{"repository_id": big_id, "digest": row["digest"], "created_at": now} for row in blob_rows]
        conn.execute(repository_blobs.insert(), links)
        manifest_rows = [
            {
                "id": n + 1,
                "repository_id": n + 1,
                "digest": _digest(shared_manifest),
                "media_type": OCI_MANIFEST,
                "content": shared_manifest,
                "size": len(shared_manifest),
                "created_at": now,
            }
            for n in range(big_id - 1)
        ]
        first_big = big_id
        manifest_rows += [
            {
                "id": first_big + i,
                "repository_id": big_id,
                "digest": _digest(body),
                "media_type": OCI_MANIFEST,
                "content": body,
                "size": len(body),
                "created_at": now,
            }
            for i, body in enumerate(big_manifests)
        ]
        conn.execute(manifests.insert(), manifest_rows)
        tag_rows = [
            {"repository_id": n + 1, "name": "latest", "manifest_id": n + 1, "updated_at": now - n}
            for n in range(big_id - 1)
        ]
        tag_rows += [
            {"repository_id": big_id, "name": f"v{i:05d}", "manifest_id": first_big + i, "updated_at": now - i}
            for i in range(tag_count)
        ]
        conn.execute(tags.insert(), tag_rows)
    engine.dispose()


def _time(client: httpx.Client, path: str) -> tuple[float, int]:
    """Milliseconds to the whole page, and the table rows it shows (so an empty page cannot pass as fast)."""
    start = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        sys.exit(f"GET {path}: {response.status_code} {response.text[:300]}")
    return elapsed, response.text.count("<tr>") - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer renders")
    parser.add_argument("--repositories", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=5_000)
    args = parser.parse_args()
    renders = 5 if args.quick else 20
    pages = {
        "repository list, first page": "/ui/repositories",
        "repository list, search 'app-09'": "/ui/repositories?q=app-09",
        "repository list, keyset page at the end": "/ui/repositories?after=team-099%2Fapp-09949",
        f"repository of {args.tags} tags, newest first": "/ui/repositories/big/app",
        f"repository of {args.tags} tags, by name, last page": (
            f"/ui/repositories/big/app?sort=name&page={args.tags // 50}"
        ),
        "overview": "/ui/",
    }
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as temp:
        workdir = Path(temp)
        server = servers.ours(workdir, workers=1)
        root = workdir / "data"
        root.mkdir(parents=True)
        started = time.perf_counter()
        fill(root, args.repositories, args.tags)
        print(f"filled {args.repositories} repositories and {args.tags} tags in {time.perf_counter() - started:.1f} s")
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                rows = []
                for name, path in pages.items():
                    first, shown = _time(client, path)
                    later = [_time(client, path)[0] for _ in range(renders)]
                    rows.append((name, shown, first, statistics.median(later)))
        finally:
            server.stop()
    print(f"\n| page | rows | first render, ms | median of {renders} later, ms | under {TARGET_MS:.0f} ms |")
    print("|---|---|---|---|---|")
    for name, shown, first, median in rows:
        print(f"| {name} | {shown} | {first:.0f} | {median:.0f} | {'yes' if first < TARGET_MS else 'NO'} |")


if __name__ == "__main__":
    main()
