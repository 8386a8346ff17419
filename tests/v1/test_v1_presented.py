"""What a v1 client sees of a v2-pushed image: a chain of v1 images made from the manifest and its config, pulled
as a docker 1.x engine pulls (index images, tags, ancestry, json, layers resumed with ranges)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable

import httpx

from oci_content import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from registry_api import canonical, push_blob, put_manifest, sha256, unique_repo
from v1_engine import V1TestImage, chain, expect, image, pull, rootfs, unpack

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def push_v2_image(
    client: httpx.Client,
    repository: str,
    tag: str,
    images: list[V1TestImage],
    layer_type: str = DOCKER_LAYER,
    edit_config: Callable[[bytes], bytes] | None = None,
) -> tuple[str, dict[str, object]]:
    """Push the layers of `images` (root first) as a v2 Docker schema 2 image; its manifest digest and config.
    `edit_config` changes the config's bytes before they are pushed (what a client that is no builder may send)."""
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/app"], "Env": ["V=2"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(gzip.decompress(i.layer)).hexdigest() for i in images],
        },
        "history": [
            {"created": "2026-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ENV V=2", "empty_layer": True},
            *({"created": "2026-01-02T00:00:00Z", "created_by": f"COPY layer {n}"} for n in range(len(images))),
        ],
    }
    config_bytes = canonical(config) if edit_config is None else edit_config(canonical(config))
    layers = []
    for each in images:
        push_blob(client, repository, each.layer)
        layers.append(
            {
                "mediaType": layer_type,
                "size": len(each.layer),
                "digest": "sha256:" + hashlib.sha256(each.layer).hexdigest(),
            }
        )
    push_blob(client, repository, config_bytes)
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": DOCKER_CONFIG,
                "size": len(config_bytes),
                "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
            },
            "layers": layers,
        }
    )
    expect(put_manifest(client, repository, tag, manifest, DOCKER_MANIFEST), 201)
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), config


def push_artifact(client: httpx.Client, repository: str, tag: str) -> None:
    """An OCI artifact (a signature, say): no image, so nothing v1 clients see."""
    config = canonical({"kind": "signature"})
    push_blob(client, repository, config)
    descriptor = {"mediaType": "application/x.signature.config", "size": len(config), "digest": sha256(config)}
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x.signature"}
    manifest = canonical({**document, "config": descriptor, "layers": []})
    expect(put_manifest(client, repository, tag, manifest, OCI_MANIFEST), 201)


def test_a_v2_image_pulled_through_v1(client: httpx.Client) -> None:
    name = f"team/{unique_repo()}"
    images = chain({"etc/a": b"base"}, {"etc/b": b"middle"}, {"srv/c": b"top"})
    push_v2_image(client, name, "latest", images)

    pulled = pull(client, name)  # index images, tags, ancestry, json and layers, as an engine pulls
    assert [layer for _, layer in pulled] == [i.layer for i in reversed(images)]
    assert unpack([layer for _, layer in reversed(pulled)]) == rootfs(images)
    top, *_ = (document for document, _ in pulled)
    assert top["config"] == {"Cmd": ["/bin/app"], "Env": ["V=2"]}
    assert top["container_config"] == {"Cmd": ["/bin/sh", "-c", "COPY layer 2"]}  # the empty-layer entry skipped
    assert top["Size"] == len(images[-1].layer)
    assert "rootfs" not in top
    ids = [document["id"] for document, _ in pulled]
    assert [document.get("parent") for document, _ in pulled] == [*ids[1:], None]

    # stable: asked again (and by another repository holding the same image), the same ids
    again = expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()
    assert again == {"latest": ids[0]}
    other = f"team/{unique_repo()}"
    push_v2_image(client, other, "v2", images)
    assert expect(client.get(f"/v1/repositories/{other}/tags/v2"), 200).json() == ids[0]
    answer = expect(client.get(f"/v1/images/{ids[0]}/json"), 200)
    assert "X-Docker-Checksum-Payload" not in answer.headers  # none without reading every layer
    assert expect(client.get(f"/v1/repositories/{name}/tags/latest/json"), 200).json()["last_update"] is None


def test_images_sharing_base_layers_share_base_images(client: httpx.Client) -> None:
    base = image({"etc/base": b"shared"})
    first, second = image({"a": b"1"}, base), image({"b": b"2"}, base)
    name = f"team/{unique_repo()}"
    push_v2_image(client, name, "one", [base, first])
    push_v2_image(client, name, "two", [base, second])
    tags = expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()
    one = expect(client.get(f"/v1/images/{tags['one']}/ancestry"), 200).json()
    two = expect(client.get(f"/v1/images/{tags['two']}/ancestry"), 200).json()
    assert one[0] != two[0]
    assert one[1] == two[1]


def test_what_v1_cannot_use_stays_invisible(client: httpx.Client) -> None:
    name = f"team/{unique_repo()}"
    usable = chain({"f": b"usable"})
    push_v2_image(client, name, "image", usable)
    push_artifact(client, name, "artifact")  # its config is no image config
    # zstd layers: no docker 1.x engine inflates them
    push_v2_image(client, name, "zstd", chain({"z": b"zstd"}), layer_type="application/vnd.oci.image.layer.v1.tar+zstd")
    for _ in range(2):  # the second listing reads what the first recorded
        assert set(expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()) == {"image"}
    expect(client.get(f"/v1/repositories/{name}/tags/artifact"), 404)
    expect(client.delete(f"/v1/repositories/{name}/tags/artifact"), 404)
    assert expect(client.get(f"/v2/{name}/tags/list"), 200).json()["tags"] == ["artifact", "image", "zstd"]


def test_a_foreign_layer_naming_another_repositorys_blob_presents_nothing(client: httpx.Client) -> None:
    """A layer with `urls` is stored elsewhere: the registry checks neither that it exists nor that the repository
    links it. Presented as a v1 image, its digest became the image's layer, served by image id (and linked into the
    repository by a v1 tag PUT) to whoever could push somewhere: any blob of any repository, read by digest."""
    victim = f"team/{unique_repo()}"
    secret = chain({"etc/secret": b"private"})
    push_v2_image(client, victim, "latest", secret)
    layer = secret[0].layer
    thief = f"team/{unique_repo()}"
    config = canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()]},
        }
    )
    push_blob(client, thief, config)
    foreign = {"mediaType": FOREIGN_LAYER, "size": len(layer), "digest": sha256(layer), "urls": ["http://x.invalid/"]}
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha256(config)},
            "layers": [foreign],
        }
    )
    expect(put_manifest(client, thief, "stolen", manifest, DOCKER_MANIFEST), 201)  # v2 accepts foreign layers
    for _ in range(2):  # the second listing reads what the first recorded
        assert expect(client.get(f"/v1/repositories/{thief}/tags"), 200).json() == {}
    expect(client.get(f"/v1/repositories/{thief}/tags/stolen"), 404)
    expect(client.get(f"/v2/{thief}/blobs/{sha256(layer)}"), 404)


def test_a_manifest_whose_layer_lost_its_link_is_presented_once_linked_again(client: httpx.Client) -> None:
    """A blob the repository does not link (unlinked by a blob DELETE, or a cached manifest's blob not pulled yet)
    keeps the image from v1 clients, but only until it is linked: that is not remembered as unpresentable."""
    name = f"team/{unique_repo()}"
    images = chain({"etc/a": b"relinked"})
    push_v2_image(client, name, "latest", images)
    digest = sha256(images[0].layer)
    expect(client.delete(f"/v2/{name}/blobs/{digest}"), 202)
    assert expect(client.get(f"/v1/repositories/{name}/tags"), 200).json() == {}
    push_blob(client, name, images[0].layer)
    pulled = pull(client, name)
    assert [layer for _, layer in pulled] == [images[0].layer]


def test_odd_configs_leave_the_tag_listing_whole(client: httpx.Client) -> None:
    """A config whose history is no list, or nested deeper than Python's stack, made every v1 listing of the
    repository (tags, images, tag GET and DELETE) a 500. The first is still an image (history is optional), the
    second is none a docker 1.x engine could read."""
    name = f"team/{unique_repo()}"
    push_v2_image(client, name, "odd-history", chain({"h": b"history"}), edit_config=_history_of_five)
    push_v2_image(client, name, "deep", chain({"d": b"deep"}), edit_config=_nested_deeply)
    push_v2_image(client, name, "plain", chain({"p": b"plain"}))
    for _ in range(2):  # the second listing reads what the first recorded
        assert set(expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()) == {"odd-history", "plain"}
    expect(client.get(f"/v1/repositories/{name}/tags/deep"), 404)
    expect(client.get(f"/v1/repositories/{name}/images"), 200)


def _history_of_five(config: bytes) -> bytes:
    document = json.loads(config)
    document["history"] = 5
    return canonical(document)


def _nested_deeply(config: bytes) -> bytes:
    return config.replace(b"{", b'{"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b",", 1)


def test_an_index_is_seen_as_its_linux_amd64_image(client: httpx.Client) -> None:
    name = f"team/{unique_repo()}"
    amd64, arm64 = chain({"arch": b"amd64"}), chain({"arch": b"arm64"})
    amd64_digest, _ = push_v2_image(client, name, "amd64", amd64)
    arm64_digest, _ = push_v2_image(client, name, "arm64", arm64)
    index = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": DOCKER_MANIFEST,
                    "digest": digest,
                    "size": size,
                    "platform": {"os": "linux", "architecture": arch},
                }
                for digest, size, arch in (
                    (
                        arm64_digest,
                        len(
                            expect(
                                client.get(f"/v2/{name}/manifests/{arm64_digest}", headers={"Accept": DOCKER_MANIFEST}),
                                200,
                            ).content
                        ),
                        "arm64",
                    ),
                    (
                        amd64_digest,
                        len(
                            expect(
                                client.get(f"/v2/{name}/manifests/{amd64_digest}", headers={"Accept": DOCKER_MANIFEST}),
                                200,
                            ).content
                        ),
                        "amd64",
                    ),
                )
            ],
        }
    )
    expect(put_manifest(client, name, "multi", index, OCI_INDEX), 201)
    tags = expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()
    assert tags["multi"] == tags["amd64"]


def test_a_v2_tag_deleted_through_v1(client: httpx.Client) -> None:
    name = f"team/{unique_repo()}"
    push_v2_image(client, name, "gone", chain({"f": b"x"}))
    push_v2_image(client, name, "kept", chain({"f": b"y"}))
    expect(client.delete(f"/v1/repositories/{name}/tags/gone"), 200)
    assert set(expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()) == {"kept"}
    assert expect(client.get(f"/v2/{name}/tags/list"), 200).json()["tags"] == ["kept"]
    push_artifact(client, name, "sig")
    expect(client.delete(f"/v1/repositories/{name}/"), 200)  # the original's repository deletion: what v1 sees
    assert expect(client.get(f"/v2/{name}/tags/list"), 200).json()["tags"] == ["sig"]
    assert json.loads(expect(client.get(f"/v1/repositories/{name}/tags"), 200).content) == {}


def test_an_index_whose_image_is_missing_is_presented_once_it_is_back(client: httpx.Client) -> None:
    """An index whose linux/amd64 child the repository lacks (deleted by digest, or a cached index whose amd64
    image was not pulled yet) was remembered as unpresentable for good."""
    name = f"team/{unique_repo()}"
    digest, _ = push_v2_image(client, name, "amd64", chain({"arch": b"back again"}))
    child = expect(client.get(f"/v2/{name}/manifests/{digest}", headers={"Accept": DOCKER_MANIFEST}), 200).content
    entry = {"mediaType": DOCKER_MANIFEST, "digest": digest, "size": len(child)}
    platform = {"os": "linux", "architecture": "amd64"}
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{**entry, "platform": platform}]})
    expect(put_manifest(client, name, "multi", index, OCI_INDEX), 201)
    expect(client.delete(f"/v2/{name}/manifests/{digest}"), 202)
    assert expect(client.get(f"/v1/repositories/{name}/tags"), 200).json() == {}
    expect(put_manifest(client, name, "amd64", child, DOCKER_MANIFEST), 201)
    tags = expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()
    assert set(tags) == {"amd64", "multi"}
    assert tags["multi"] == tags["amd64"]


def test_a_presented_base_shows_its_own_history_not_another_presenters(client: httpx.Client) -> None:
    """Two v2 images sharing a base layer but not its history entry were presented with one base image, whose json
    showed the first presenter's command (a `RUN ... PASSWORD=...`, or a spoofed one) to v1 clients of the other
    (probe). The history shown is part of the id now: each gets its own base image."""
    layers = chain({"etc/os-release": b"debian 8"}, {"srv/app": b"the same app"})

    def history_of(command: str) -> Callable[[bytes], bytes]:
        def edit(raw: bytes) -> bytes:
            config = json.loads(raw)
            config["history"][1]["created_by"] = command
            return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()

        return edit

    shown: dict[str, str] = {}
    for command in ("RUN install PASSWORD=hunter2", "ADD debian rootfs"):
        name = f"team/{unique_repo()}"
        push_v2_image(client, name, "latest", layers, edit_config=history_of(command))
        top = expect(client.get(f"/v1/repositories/{name}/tags"), 200).json()["latest"]
        _, base = expect(client.get(f"/v1/images/{top}/ancestry"), 200).json()
        described = expect(client.get(f"/v1/images/{base}/json"), 200).json()
        assert described["container_config"]["Cmd"][-1] == command
        shown[command] = base
    assert len(set(shown.values())) == 2
