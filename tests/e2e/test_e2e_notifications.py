"""Notifications (issue 13) seen through a real client: skopeo pushes an image, copies it to another repository
(a cross-repository mount), pulls it back and deletes it; the receiver gets Distribution's events for each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from notification_receiver import Receiver

from e2e_images import OciLayout
from e2e_tools import require, run
from oci_content import OCI_MANIFEST
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="event durability of docker-registry 3")


def skopeo(*args: str) -> None:
    run(["skopeo", "--insecure-policy", *args])


def test_skopeo_push_mount_pull_delete_send_events(
    make_registry: Callable[..., RegistryProcess], layout: OciLayout, tmp_path: Path
) -> None:
    require("skopeo")
    receiver = Receiver().start()
    try:
        endpoint = receiver.endpoint("skopeo")
        server = make_registry(extra_config={"notifications": {"endpoints": [endpoint]}})
        image = layout.add_image("v1", layer_count=2)
        blobs = [image.config.digest, *(layer.digest for layer in image.layers)]
        source, copy = f"docker://{server.host}/e2e/notify:v1", f"docker://{server.host}/e2e/notify-copy:v1"

        skopeo("copy", "--dest-tls-verify=false", layout.ref("v1"), source)
        pushed = receiver.wait_for(lambda got: len(got) >= 4)
        assert sorted((e["action"], e["target"]["digest"]) for e in pushed) == sorted(
            [("push", d) for d in [*blobs, image.manifest.digest]]
        )
        manifest_push = next(e for e in pushed if e["target"]["digest"] == image.manifest.digest)
        assert manifest_push["target"]["tag"] == "v1"
        assert manifest_push["target"]["mediaType"] == OCI_MANIFEST
        assert manifest_push["target"]["url"] == f"{server.url}/v2/e2e/notify/manifests/{image.manifest.digest}"
        assert manifest_push["request"]["useragent"].startswith("skopeo/")
        assert pushed[-1] is manifest_push  # after its blobs, as they were committed

        skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", source, copy)
        receiver.wait_for(  # the copy's manifest push: delivered in order, so after every blob event of the copy
            lambda got: any(
                e["target"]["repository"] == "e2e/notify-copy" and e["action"] == "push" and e["target"].get("tag")
                for e in got
            )
        )
        copied = [e for e in receiver.events if e["target"]["repository"] == "e2e/notify-copy"]
        # skopeo mounts the layers it knows to be there and copies the rest (the config, read by a pull)
        mounted = [e for e in copied if e["action"] == "mount"]
        assert mounted, "no cross-repository mount"
        assert all(e["target"]["fromRepository"] == "e2e/notify" for e in mounted)
        assert all(e["request"]["method"] == "POST" for e in mounted)
        assert sorted(e["target"]["digest"] for e in copied if e["target"].get("tag") is None) == sorted(blobs)
        assert copied[-1]["target"] == {
            **manifest_push["target"],
            "repository": "e2e/notify-copy",
            "url": manifest_push["target"]["url"].replace("notify", "notify-copy"),
        }

        skopeo("copy", "--src-tls-verify=false", copy, f"dir:{tmp_path / 'pulled'}")
        receiver.wait_for(
            lambda got: (
                {d for d in blobs}
                <= {e["target"]["digest"] for e in got if e["action"] == "pull" and "copy" in e["target"]["repository"]}
            )
        )
        pulls = [e for e in receiver.events if e["action"] == "pull"]
        assert {(e["target"]["repository"], e["target"]["digest"]) for e in pulls} >= {
            ("e2e/notify", image.manifest.digest),  # the second copy read the source
            ("e2e/notify-copy", image.manifest.digest),
        }

        skopeo("delete", "--tls-verify=false", copy)
        # skopeo deletes by digest: the manifest's deletion, then one for the tag it removed (as Distribution sends)
        deleted = receiver.wait_for(lambda got: sum(e["action"] == "delete" for e in got) >= 2)
        deletes = [e for e in deleted if e["action"] == "delete"]
        assert [e["target"] for e in deletes] == [
            {"repository": "e2e/notify-copy", "digest": image.manifest.digest},
            {"repository": "e2e/notify-copy", "tag": "v1"},
        ]
        assert all(e["request"]["method"] == "DELETE" for e in deletes)
    finally:
        receiver.stop()
