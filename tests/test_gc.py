"""Garbage collection (issue 9), as an operator and clients see it: `docker-registry garbage-collect` against a
running registry, and the online collector of the server itself.

Every test checks what matters to a user: what is referenced still pulls completely and verifies, what is not is
gone from the API (on every worker: caches included), from storage and from the metadata database.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from docker_registry.drivers.file import TEMP_DIRECTORY
from docker_registry.server.registry.process_identity import this_process
from docker_registry.server.registry.upload_area import upload_path
from gc_checks import pull_and_verify, verify_manifest
from oci_content import OCI_INDEX, OCI_MANIFEST
from registry_api import (
    Pushed,
    get_manifest,
    image_manifest,
    index_manifest,
    push,
    push_blob,
    random_bytes,
    start_upload,
    with_params,
)
from registry_process import RegistryProcess, implementation
from v1_engine import chain, expect, push_image

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="garbage collection of this registry")

NO_ONLINE_GC = {"gc": {"enabled": False, "delay": "0s"}}


def collect(server: RegistryProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-registry garbage-collect` on the server's own configuration, while it runs."""
    return subprocess.run(
        [sys.executable, "-m", "docker_registry.server", "garbage-collect", str(server.workdir / "config.yml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def collect_json(server: RegistryProcess, *args: str) -> dict[str, Any]:
    result = collect(server, "--json", *args)
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def fresh_statuses(server: RegistryProcess, method: str, path: str, times: int = 12, **kwargs: Any) -> set[int]:
    """Statuses of `times` requests, each on a new connection: the kernel spreads them over the workers."""
    statuses = set()
    for _ in range(times):
        with httpx.Client(base_url=server.url, timeout=30) as one:
            statuses.add(one.request(method, path, **kwargs).status_code)
    return statuses


def blob_file(server: RegistryProcess, digest: str) -> Path:
    hex_digest = digest.removeprefix("sha256:")
    return server.data_dir / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"


def rows(server: RegistryProcess, query: str, *params: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "registry.db") as db:
        return db.execute(query, params).fetchall()


def layer_digests(pushed: Pushed) -> list[str]:
    document = json.loads(pushed.body)
    return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


@pytest.fixture
def server(make_registry: Callable[..., RegistryProcess]) -> RegistryProcess:
    return make_registry(extra_config=NO_ONLINE_GC)


def test_collect_deletes_what_nothing_references_and_keeps_the_rest(server: RegistryProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        kept = image_manifest(client, "gc/app", layers=2)
        push(client, "gc/app", kept, "keep")
        doomed = image_manifest(client, "gc/app", layers=2)
        push(client, "gc/app", doomed, "gone")
        orphan = push_blob(client, "gc/app", random_bytes(3000))  # uploaded, never referenced
        assert client.delete(f"/v2/gc/app/manifests/{doomed.digest}").status_code == 202
        unreferenced = [*layer_digests(doomed), orphan]
        for digest in unreferenced:  # every worker caches the blob's size
            assert fresh_statuses(server, "HEAD", f"/v2/gc/app/blobs/{digest}") == {200}

        summary = collect_json(server)

        assert summary["deleted"]["links"] == len(unreferenced)
        assert summary["deleted"]["blobs"] == len(unreferenced)
        assert summary["bytes_freed"] >= 3000 + 1024
        assert summary["scanned"]["blobs"] == len(unreferenced) + len(layer_digests(kept))
        for digest in unreferenced:
            assert fresh_statuses(server, "HEAD", f"/v2/gc/app/blobs/{digest}") == {404}
            mount = with_params("/v2/gc/other/blobs/uploads/", mount=digest, **{"from": "gc/app"})
            assert fresh_statuses(server, "POST", str(mount), times=4) == {202}  # an upload instead of a mount
            assert not blob_file(server, digest).exists()
            assert rows(server, "SELECT digest FROM blobs WHERE digest = ?", digest) == []
        pull_and_verify(client, "gc/app", "keep")
        for digest in layer_digests(kept):
            assert blob_file(server, digest).exists()
    assert collect_json(server)["deleted"]["blobs"] == 0


def test_the_blobs_a_buildkit_cache_index_lists_are_kept(server: RegistryProcess) -> None:
    """An index whose entries are blobs (BuildKit's registry cache): they are referenced, as an image's layers, and
    go only with the index."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        blobs = [random_bytes(2000), b'{"layers":[],"records":[]}']
        digests = [push_blob(client, "gc/cache", blob) for blob in blobs]
        types = ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.buildkit.cacheconfig.v0"]
        entries = [
            {"mediaType": kind, "digest": digest, "size": len(blob)}
            for kind, digest, blob in zip(types, digests, blobs, strict=True)
        ]
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        put = client.put("/v2/gc/cache/manifests/cache", content=index, headers={"Content-Type": OCI_INDEX})
        assert put.status_code == 201, put.text

        assert collect_json(server)["deleted"]["blobs"] == 0
        for digest, blob in zip(digests, blobs, strict=True):
            assert client.get(f"/v2/gc/cache/blobs/{digest}").content == blob

        assert client.delete(f"/v2/gc/cache/manifests/{put.headers['Docker-Content-Digest']}").status_code == 202
        assert collect_json(server)["deleted"]["blobs"] == 2
        for digest in digests:
            assert not blob_file(server, digest).exists()


def test_dry_run_deletes_nothing(server: RegistryProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        doomed = image_manifest(client, "gc/dry", layers=1)
        push(client, "gc/dry", doomed, "latest")
        assert client.delete(f"/v2/gc/dry/manifests/{doomed.digest}").status_code == 202

        result = collect(server, "--dry-run")

        assert result.returncode == 0, result.stderr
        assert "would delete: 0 manifests, 2 links, 2 blobs" in result.stdout
        for digest in layer_digests(doomed):
            assert client.head(f"/v2/gc/dry/blobs/{digest}").status_code == 200
            assert blob_file(server, digest).exists()
        assert collect_json(server)["deleted"]["blobs"] == 2


def test_untagged_manifests_go_only_when_asked_and_referrers_keep_their_subjects(server: RegistryProcess) -> None:
    repo = "gc/untagged"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        tagged = image_manifest(client, repo, layers=2)
        push(client, repo, tagged, "v1")
        untagged = image_manifest(client, repo, layers=1)
        push(client, repo, untagged, "moving")
        push(client, repo, tagged, "moving")  # the tag moves away: `untagged` is reachable no more
        signature = image_manifest(client, repo, artifact_type="application/vnd.example.sig", subject=tagged)
        push(client, repo, signature)  # an untagged referrer of a tagged image: it lives
        subject = image_manifest(client, repo, layers=1)
        push(client, repo, subject)  # untagged, but a tagged referrer points at it
        sbom = image_manifest(client, repo, artifact_type="application/vnd.example.sbom", subject=subject)
        push(client, repo, sbom, "sbom")
        children = [image_manifest(client, repo, layers=1) for _ in range(2)]
        for child in children:
            push(client, repo, child)
        index = index_manifest(children)
        push(client, repo, index, "multi")
        shared_layer = layer_digests(tagged)[1]

        assert collect_json(server)["deleted"]["manifests"] == 0
        assert get_manifest(client, repo, untagged.digest).status_code == 200

        summary = collect_json(server, "--delete-untagged")

        assert summary["deleted"]["manifests"] == 1
        assert summary["deleted"]["blobs"] == len(layer_digests(untagged))
        assert get_manifest(client, repo, untagged.digest).status_code == 404
        for digest in layer_digests(untagged):
            assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
            assert not blob_file(server, digest).exists()
        for kept in (tagged, signature, subject, sbom, *children, index):
            response = get_manifest(client, repo, kept.digest)
            assert response.status_code == 200, kept.digest
            verify_manifest(client, repo, response.content)
        assert client.head(f"/v2/{repo}/blobs/{shared_layer}").status_code == 200
        referrers = client.get(f"/v2/{repo}/referrers/{tagged.digest}").json()["manifests"]
        assert [r["digest"] for r in referrers] == [signature.digest]

        # the tag goes: the image, its signature and everything only they use follow
        assert client.delete(f"/v2/{repo}/manifests/sbom").status_code == 202
        summary = collect_json(server, "--delete-untagged")
        assert summary["deleted"]["manifests"] == 2  # the sbom and its subject
        assert get_manifest(client, repo, subject.digest).status_code == 404
        pull_and_verify(client, repo, "v1")
        pull_and_verify(client, repo, "multi")


def test_a_candidate_used_again_within_the_grace_period_is_kept(make_registry: Callable[..., RegistryProcess]) -> None:
    server = make_registry(extra_config={"gc": {"enabled": False, "delay": "1h"}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        headed = push_blob(client, "gc/grace", random_bytes(2000))
        untouched = push_blob(client, "gc/grace", random_bytes(2001))
        collect_json(server)  # marks both links as candidates; an hour must pass before they go
        marked = "SELECT gc_candidate_since FROM repository_blobs WHERE digest = ?"
        assert rows(server, marked, headed)[0][0] is not None

        assert client.head(f"/v2/gc/grace/blobs/{headed}").status_code == 200  # a client about to skip an upload

        assert rows(server, marked, headed) == [(None,)]
        assert rows(server, marked, untouched)[0][0] is not None
        summary = collect_json(server)
        assert summary["deleted"]["links"] == 0
        assert client.head(f"/v2/gc/grace/blobs/{headed}").status_code == 200


def test_collect_refuses_while_another_holds_the_lease(server: RegistryProcess) -> None:
    with sqlite3.connect(server.data_dir / "registry.db") as db:
        db.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('gc', 'node-b:42', ?)", (time.time() + 30,))

    result = collect(server)

    assert result.returncode == 1
    assert "another garbage collection is running (node-b:42" in result.stderr
    with sqlite3.connect(server.data_dir / "registry.db") as db:
        db.execute("UPDATE leases SET expires_at = ? WHERE name = 'gc'", (time.time() - 1,))  # the holder crashed
    assert collect(server).returncode == 0


def test_output_on_a_pipe_is_log_lines_and_a_summary(server: RegistryProcess) -> None:
    result = collect(server)

    assert result.returncode == 0
    assert "unreferenced links" in result.stderr
    assert "\r" not in result.stderr  # no progress bar off a terminal
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["scanned", "deleted", "freed", "time"]


def test_temporary_leftovers_older_than_the_grace_period_go(server: RegistryProcess) -> None:
    folder = server.data_dir / TEMP_DIRECTORY  # the filesystem driver's temporary files, whatever they are for
    folder.mkdir(parents=True, exist_ok=True)
    old, recent = folder / "crashed", folder / "writing"
    old.write_bytes(b"x" * 100)
    recent.write_bytes(b"y" * 10)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))

    summary = collect_json(server)

    assert summary["deleted"]["temporary"] == 1
    assert not old.exists()
    assert recent.exists()  # a write may be running into it


def test_expired_upload_sessions_are_purged_with_their_data(make_registry: Callable[..., RegistryProcess]) -> None:
    purging = {"uploadpurging": {"enabled": True, "age": "2s", "interval": "1s"}}
    server = make_registry(extra_config={**NO_ONLINE_GC, "storage": {"maintenance": purging}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = start_upload(client, "gc/uploads")
        assert client.patch(location, content=b"z" * 5000).status_code == 202
        upload_id = location.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
        assert (server.data_dir / upload_path(upload_id)).exists()

        deadline = time.monotonic() + 30
        while client.get(location).status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.5)

        assert client.get(location).status_code == 404
        assert not (server.data_dir / "uploads" / upload_id).exists()
        assert rows(server, "SELECT id FROM uploads WHERE id = ?", upload_id) == []
        fresh = start_upload(client, "gc/uploads")  # a new session is untouched until it is as old
        assert client.patch(fresh, content=b"new").status_code == 202


def test_a_blob_whose_link_was_deleted_is_kept_while_a_manifest_names_it(server: RegistryProcess) -> None:
    """`DELETE /v2/<name>/blobs/<digest>` of a tagged image's layer, then a collection: the layer's bytes were
    deleted, and the image stayed broken for good. They stay while a manifest names them (Distribution's collector
    marks through manifests), so pushing the blob again links it and the image pulls; once the manifest goes, so
    do they, and a dry run counts them as the real run then deletes them."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        image = image_manifest(client, "gc/unlinked", layers=1)
        push(client, "gc/unlinked", image, "t")
        layer = json.loads(image.body)["layers"][0]["digest"]
        content = client.get(f"/v2/gc/unlinked/blobs/{layer}").content
        assert client.delete(f"/v2/gc/unlinked/blobs/{layer}").status_code == 202
        summary = collect_json(server)
        assert summary["deleted"]["blobs"] == 0
        assert blob_file(server, layer).exists()
        push_blob(client, "gc/unlinked", content)
        pull_and_verify(client, "gc/unlinked", "t")

        assert client.delete(f"/v2/gc/unlinked/blobs/{layer}").status_code == 202
        assert client.delete(f"/v2/gc/unlinked/manifests/{image.digest}").status_code == 202
        dry = collect_json(server, "--dry-run", "--delete-untagged")
        real = collect_json(server, "--delete-untagged")
        assert dry["deleted"]["blobs"] == real["deleted"]["blobs"] == len(layer_digests(image))
        assert not blob_file(server, layer).exists()


def test_purging_set_to_a_dry_run_purges_nothing_from_the_command_either(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """`uploadpurging.dryrun` only logs what would go: `garbage-collect` purged the sessions anyway."""
    purging = {"uploadpurging": {"enabled": True, "age": "1s", "interval": "1h", "dryrun": True}}
    server = make_registry(extra_config={**NO_ONLINE_GC, "storage": {"maintenance": purging}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = start_upload(client, "gc/kept-uploads")
        assert client.patch(location, content=b"k" * 500).status_code == 202
        time.sleep(1.5)
        assert collect_json(server)["deleted"]["uploads"] == 0
        assert client.patch(location, content=b"more", headers={"Content-Range": "500-503"}).status_code == 202


def test_a_folder_among_the_temporary_files_is_left_and_collections_go_on(server: RegistryProcess) -> None:
    """Something other than a file in the driver's temporary directory (an operator's folder) failed every
    collection (IsADirectoryError), the background one at every interval."""
    folder = server.data_dir / TEMP_DIRECTORY / "not-ours"
    folder.mkdir(parents=True)
    old = time.time() - 3600
    os.utime(folder, (old, old))
    result = collect(server, "--json")
    assert result.returncode == 0, result.stderr
    assert folder.is_dir()


def test_an_image_pushed_with_the_blobs_of_a_collected_one_is_refused_cleanly(server: RegistryProcess) -> None:
    """A client that HEADed a blob before collection and pushes its manifest after it: refused, never stored."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        image = image_manifest(client, "gc/late", media_type=OCI_MANIFEST, layers=1)
        collect_json(server)  # the blobs were never referenced: collected

        response = client.put(
            f"/v2/gc/late/manifests/{image.digest}", content=image.body, headers={"Content-Type": image.media_type}
        )

        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        assert get_manifest(client, "gc/late", image.digest).status_code == 404


def test_on_a_terminal_progress_is_a_bar(server: RegistryProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        push_blob(client, "gc/tty", random_bytes(100))
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    try:
        result = subprocess.run(
            [sys.executable, "-m", "docker_registry.server", "garbage-collect", str(server.workdir / "config.yml")],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=120,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert result.returncode == 0
    assert b"unreferenced links: 100%" in shown  # tqdm's bar, drawn with carriage returns
    # with no grace period the blobs are found batch by batch as they go (no count first): a counter
    assert b"unlinked blobs: 1 [" in shown
    assert b"\r" in shown
    assert "deleted: 0 manifests, 1 links, 1 blobs" in result.stdout


def test_a_configuration_error_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("version: 0.1\ngc:\n  delay: soon\n")

    result = subprocess.run(
        [sys.executable, "-m", "docker_registry.server", "garbage-collect", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "gc.delay" in result.stderr


def test_layers_of_v1_images_are_kept_though_no_repository_links_them(server: RegistryProcess) -> None:
    """v1 images belong to no repository and are served by image id: their layers are references of their own, so
    a collection with no grace period leaves an untagged v1 push whole."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        images = chain({"a.txt": b"alpha"}, {"b.txt": b"beta"})
        for image in images:
            push_image(client, image)
        assert collect_json(server)["deleted"]["blobs"] == 0
        for image in images:
            assert expect(client.get(f"/v1/images/{image.id}/layer"), 200).content == image.layer


def _seen_by_v1(client: httpx.Client, repo: str, tag: str, layers: int) -> tuple[Pushed, str]:
    """An image pushed through v2 and listed by a v1 client (which presents it as a v1 chain); the top image id."""
    diff_ids = [f"sha256:{os.urandom(32).hex()}" for _ in range(layers)]
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    pushed = image_manifest(client, repo, layers=layers, config=config.encode())
    push(client, repo, pushed, tag)
    return pushed, expect(client.get(f"/v1/repositories/{repo}/tags/{tag}"), 200).json()


def test_a_deleted_image_v1_clients_had_listed_is_freed_and_what_v1_still_reaches_is_kept(
    server: RegistryProcess,
) -> None:
    """A v2 image listed through v1 is presented as v1 images, and every blob a v1 image names was kept: its layers
    stayed for ever after the image was deleted. The presentation of a deleted manifest goes, and its images unless
    something of v1 still reaches them: another repository holding the manifest, or an image pushed through v1 on
    top of it."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        doomed, doomed_top = _seen_by_v1(client, "gc/seen", "gone", layers=2)
        kept, kept_top = _seen_by_v1(client, "gc/seen", "kept", layers=1)
        for digest in layer_digests(kept):  # the same manifest in another repository
            mount = with_params("/v2/gc/elsewhere/blobs/uploads/", mount=digest, **{"from": "gc/seen"})
            assert client.post(str(mount)).status_code == 201
        push(client, "gc/elsewhere", kept, "same")
        base, base_top = _seen_by_v1(client, "gc/based", "base", layers=1)
        child = chain({"child.txt": b"built on a presented image"})[0]
        child = dataclasses.replace(child, json=json.dumps({**json.loads(child.json), "parent": base_top}).encode())
        push_image(client, child)  # a docker 1.x engine built on the presented image, and pushed through v1
        for repo, pushed in (("gc/seen", doomed), ("gc/seen", kept), ("gc/based", base)):
            assert client.delete(f"/v2/{repo}/manifests/{pushed.digest}").status_code == 202
        # read now, on this connection's worker, which kept it (complete images do not change) until the
        # collection deleted it and the worker went on serving it for ever (a probe on several nodes)
        expect(client.get(f"/v1/images/{doomed_top}/json"), 200)

        summary = collect_json(server)

        assert summary["deleted"]["v1_images"] == 2  # the doomed chain; the kept one and the base stay
        for digest in layer_digests(doomed):
            assert not blob_file(server, digest).exists()
        expect(client.get(f"/v1/images/{doomed_top}/json"), 404)
        expect(client.get(f"/v1/images/{kept_top}/json"), 200)
        pull_and_verify(client, "gc/elsewhere", "same")
        assert expect(client.get(f"/v1/images/{child.id}/ancestry"), 200).json() == [child.id, base_top]
        base_layer = json.loads(base.body)["layers"][0]["digest"]
        assert blob_file(server, base_layer).exists()  # the layer of a v1 image's parent
    assert collect_json(server)["deleted"]["v1_images"] == 0


def test_a_v1_push_never_completed_goes_once_as_old_as_a_purged_upload(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """An engine that died between a v1 layer and its checksum left an incomplete image whose layer was kept for
    ever, as every v1 image's is. Purged with the upload sessions as old (its layer by the collection after);
    finished pushes stay."""
    purging = {"uploadpurging": {"enabled": True, "age": "1s", "interval": "1h"}}
    server = make_registry(extra_config={**NO_ONLINE_GC, "storage": {"maintenance": purging}})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        finished, abandoned = chain({"done.txt": b"pushed whole"}), chain({"half.txt": b"never checksummed"})
        push_image(client, finished[0])
        expect(client.put(f"/v1/images/{abandoned[0].id}/json", content=abandoned[0].json), 200)
        expect(client.put(f"/v1/images/{abandoned[0].id}/layer", content=abandoned[0].layer), 200)
        (layer,) = rows(server, "SELECT layer_digest FROM v1_images WHERE id = ?", abandoned[0].id)[0]
        assert blob_file(server, layer).exists()
        time.sleep(1.5)
        collect_json(server)
        collect_json(server)  # the image went with the uploads, after the blobs' phase: its layer goes now
        assert rows(server, "SELECT id FROM v1_images WHERE id = ?", abandoned[0].id) == []
        assert not blob_file(server, layer).exists()
        assert expect(client.get(f"/v1/images/{finished[0].id}/layer"), 200).content == finished[0].layer


def _being_deleted(server: RegistryProcess, digest: str, collector: str | None) -> None:
    """What a collection leaves of a blob it is deleting (unlinked, marked), holding its lease as the process
    `collector` (`process_identity`)."""
    with sqlite3.connect(server.data_dir / "registry.db") as db:
        db.execute("DELETE FROM repository_blobs WHERE digest = ?", (digest,))
        db.execute("UPDATE blobs SET deleting_since = ? WHERE digest = ?", (time.time(), digest))
        db.execute("DELETE FROM leases WHERE name = 'gc'")
        db.execute(
            "INSERT INTO leases (name, holder, holder_process, expires_at) VALUES ('gc', 'collector', ?, ?)",
            (collector, time.time() + 600),
        )


def test_a_v1_layer_whose_blob_a_collection_is_deleting_is_refused_not_lost(server: RegistryProcess) -> None:
    """A v1 layer push pins its blob as a v2 upload does. Before, it found or placed the file while a collection
    was deleting that blob, answered 200, and the collection then took the file: the image named a layer that was
    gone, and the blob stayed "being deleted" for good. Here the collection's mark and lease are made by hand, as
    one that marked the blob and is still removing it (this live process) would leave them."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        image = chain({"c.txt": b"collected while pushed"})[0]
        digest = push_blob(client, "gc/race", image.layer)
        _being_deleted(server, digest, this_process())
        expect(client.put(f"/v1/images/{image.id}/json", content=image.json), 200)
        answer = client.put(f"/v1/images/{image.id}/layer", content=image.layer)
        assert answer.status_code == 503, answer.text
        assert "garbage collection" in answer.text
        assert rows(server, "SELECT layer_digest FROM v1_images WHERE id = ?", image.id) == [(None,)]


def test_blob_deletions_a_killed_collection_left_are_finished_when_the_registry_starts(
    server: RegistryProcess,
) -> None:
    """A collection killed while deleting blobs (its worker SIGKILLed, or `garbage-collect` killed) leaves them
    marked as being deleted, under its lease: an upload of such a blob waited and was refused 503, again and again
    until the next collection, a day away with the default `gc.interval`, or a minute at least (its lease). Now a
    registry that starts finishes them at once, taking over the lease of a holder that died on this host."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        data = b"a blob a killed collection was deleting"
        digest = push_blob(client, "gc/killed", data)
    _being_deleted(server, digest, _dead_process())
    server.restart()
    _finished_and_pushed_again(server, "gc/killed", digest, data, within=15)


def test_blob_deletions_a_garbage_collect_killed_beside_the_server_left_are_finished_while_it_serves(
    server: RegistryProcess,
) -> None:
    """The same leftovers from a `garbage-collect` killed while the server kept running (or a collecting node
    that died): before, they waited for a restart or for the next collection (`gc.interval`, a day by default);
    now every worker looks for them every few seconds."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        data = b"a blob a killed garbage-collect was deleting"
        digest = push_blob(client, "gc/killed-beside", data)
    time.sleep(3)  # past every worker's look at start
    _being_deleted(server, digest, _dead_process())
    _finished_and_pushed_again(server, "gc/killed-beside", digest, data, within=15)


def _dead_process() -> str:
    """A `process_identity` of this host that names no live process."""
    identity = this_process()
    assert identity is not None
    return "/".join([*identity.split("/")[:2], "4194000", "1"])


def _finished_and_pushed_again(
    server: RegistryProcess, repository: str, digest: str, data: bytes, within: float
) -> None:
    deadline = time.monotonic() + within
    while rows(server, "SELECT deleting_since FROM blobs WHERE digest = ?", digest):
        assert time.monotonic() < deadline, "the deletion stayed unfinished"
        time.sleep(0.2)
    assert not blob_file(server, digest).exists()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data)
        assert answer.status_code == 201, answer.text
        assert client.get(f"/v2/{repository}/blobs/{digest}").content == data
