"""The bridge between v1 and v2 with real clients: an image pushed as a docker 1.x engine pushed it (over HTTP,
through the v1 API) is pulled by skopeo and by today's Docker engine through v2, and its root filesystem compared
file by file with what the v1 layers hold (whiteouts applied); an image skopeo pushes through v2 is pulled through
v1."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import tarfile
import zlib
from pathlib import Path

import httpx

from e2e_daemons import Dockerd
from e2e_images import OciLayout
from e2e_tools import require, run
from registry_process import RegistryProcess
from v1_engine import V1TestImage, expect, image, pull, push, rootfs, unpack

DOCKER_OWN_FILES = {".dockerenv", "dev/console", "etc/hostname", "etc/hosts", "etc/resolv.conf"}
"""Files the engine puts into every container's filesystem."""


def three_layers() -> list[V1TestImage]:
    """A chain with a gzip, a plain and an xz layer; the top one deletes a file of the root one."""
    base = image({"etc/os-release": b"NAME=v1\n", "etc/gone": b"removed later", "bin/tool": b"\x7fELF" + bytes(5000)})
    middle = image({"usr/share/doc/readme": b"plain tar layer\n" * 100}, base, compression="none")
    top = image(
        {"app/main.py": b"print('hello from v1')\n", "etc/os-release": b"NAME=v1 top\n"},
        middle,
        deleted=("etc/gone",),
        compression="xz",
        config={"Cmd": ["python3", "/app/main.py"], "Env": ["A=1"], "WorkingDir": "/app"},
    )
    return [base, middle, top]


def _uncompressed(layer: bytes) -> bytes:
    if layer.startswith(b"\x1f\x8b"):
        return zlib.decompress(layer, wbits=31)
    if layer.startswith(b"\xfd7zXZ"):
        return lzma.decompress(layer)
    return layer


def test_v1_push_pulled_by_skopeo(registry: RegistryProcess, client: httpx.Client, tmp_path: Path) -> None:
    require("skopeo")
    images = three_layers()
    push(client, "e2e/v1-skopeo", images)
    target = tmp_path / "dir"
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            f"docker://{registry.host}/e2e/v1-skopeo:latest",
            f"dir:{target}",
        ]
    )
    manifest = json.loads((target / "manifest.json").read_bytes())
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    layers = [(target / layer["digest"].removeprefix("sha256:")).read_bytes() for layer in manifest["layers"]]
    assert layers == [i.layer for i in images]  # the bytes v1 pushed, root first
    config = json.loads((target / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    assert config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(_uncompressed(i.layer)).hexdigest() for i in images
    ]
    assert config["config"]["Cmd"] == ["python3", "/app/main.py"]
    assert len(config["history"]) == 3
    assert "id" not in config
    assert "parent" not in config
    assert unpack(layers) == rootfs(images)


def test_v1_push_pulled_by_docker(
    dockerd: Dockerd, registry: RegistryProcess, client: httpx.Client, tmp_path: Path
) -> None:
    images = three_layers()
    push(client, "e2e/v1-docker", images, tag="v1")
    name = f"{registry.host}/e2e/v1-docker:v1"
    env = dockerd.env
    run(["docker", "pull", name], env=env)
    inspected = json.loads(run(["docker", "image", "inspect", name], env=env).stdout)[0]
    assert inspected["Config"]["Cmd"] == ["python3", "/app/main.py"]
    assert inspected["Config"]["WorkingDir"] == "/app"
    container = run(["docker", "create", name], env=env).stdout.strip()
    try:
        exported = run(["docker", "export", container], env=env, text=False).stdout
    finally:
        run(["docker", "rm", container], env=env)
    files = {}
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        for member in tar:
            path = member.name.removeprefix("./").lstrip("/")
            if member.isfile() and path not in DOCKER_OWN_FILES:
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[path] = extracted.read()
    assert files == rootfs(images)


def test_skopeo_push_pulled_through_v1(
    registry: RegistryProcess, client: httpx.Client, layout: OciLayout, tmp_path: Path
) -> None:
    """The other direction: an OCI image pushed by skopeo, pulled as a docker 1.x engine pulls it."""
    require("skopeo")
    pushed = layout.add_image("v2")
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            layout.ref("v2"),
            f"docker://{registry.host}/e2e/v2-to-v1:v2",
        ]
    )
    layers = [layer for _, layer in pull(client, "e2e/v2-to-v1", "v2")]
    assert list(reversed(layers)) == [layout.read_blob(layer.digest) for layer in pushed.layers]
    assert unpack(list(reversed(layers))) == pushed.files


def test_docker_search(dockerd: Dockerd, registry: RegistryProcess, client: httpx.Client) -> None:
    """Today's `docker search` still speaks v1: it finds v1- and v2-pushed repositories alike."""
    push(client, "e2e/searchable-v1", [image({"f": b"search"})])
    expect(
        client.put(
            "/v1/repositories/e2e/searchable-v1/properties", json={"access": "public", "description": "found by docker"}
        ),
        200,
    )
    found = run(["docker", "search", "--no-trunc", f"{registry.host}/searchable"], env=dockerd.env).stdout
    lines = found.splitlines()
    assert lines[0].split()[:2] == ["NAME", "DESCRIPTION"]
    assert any(line.split()[0] == "e2e/searchable-v1" and "found by docker" in line for line in lines[1:])
