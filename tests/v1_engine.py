"""A docker 1.x engine's side of the legacy v1 API, as the tests need it: image chains built the way engines built
them (a json per image, a tar layer, gzip by default), pushed and pulled in the engines' order of requests."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

ENGINE_AGENT = "docker/1.6.2 go/go1.4.2 git-commit/7c8fca2 kernel/4.19.0 os/linux arch/amd64"
COMPRESSORS = {"gzip": gzip.compress, "xz": lzma.compress, "bzip2": bz2.compress, "none": lambda data: data}


@dataclass
class V1TestImage:
    id: str
    json: bytes
    layer: bytes
    files: dict[str, bytes]
    """The files of this layer (a None-like empty bytes for a directory is not used: files only)."""
    deleted: tuple[str, ...] = ()

    @property
    def checksum(self) -> str:
        return payload_checksum(self.json, self.layer)

    @property
    def parent(self) -> str | None:
        return json.loads(self.json).get("parent")


def payload_checksum(image_json: bytes, layer: bytes) -> str:
    return "sha256:" + hashlib.sha256(image_json + b"\n" + layer).hexdigest()


def random_id() -> str:
    return os.urandom(32).hex()


def tar_of(files: dict[str, bytes], deleted: tuple[str, ...] = (), prefix: str = "./") -> bytes:
    """A layer tar: the directories of `files`, the files, and a whiteout `.wh.<name>` for each deleted path."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        directories = sorted({os.path.dirname(p) for p in [*files, *deleted] if os.path.dirname(p)})
        for directory in directories:
            info = tarfile.TarInfo(prefix + directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_400_000_000
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(prefix + path)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_400_000_000
            tar.addfile(info, io.BytesIO(data))
        for path in deleted:
            directory, base = os.path.split(path)
            info = tarfile.TarInfo(prefix + os.path.join(directory, ".wh." + base))
            info.mode, info.mtime = 0o644, 1_400_000_000
            tar.addfile(info)
    return buffer.getvalue()


def image(
    files: dict[str, bytes],
    parent: V1TestImage | None = None,
    *,
    deleted: tuple[str, ...] = (),
    compression: str = "gzip",
    command: str = "/bin/sh -c #(nop) ADD files",
    config: dict[str, object] | None = None,
) -> V1TestImage:
    image_id = random_id()
    document: dict[str, object] = {
        "id": image_id,
        "created": "2015-06-01T12:00:00.000000000Z",
        "container_config": {"Cmd": ["/bin/sh", "-c", command]},
        "config": config or {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "docker_version": "1.6.2",
        "architecture": "amd64",
        "os": "linux",
    }
    if parent is not None:
        document["parent"] = parent.id
    raw = json.dumps(document).encode()
    return V1TestImage(image_id, raw, COMPRESSORS[compression](tar_of(files, deleted)), files, deleted)


def chain(*layers: dict[str, bytes], compression: str = "gzip") -> list[V1TestImage]:
    """Images root first, each the parent of the next."""
    images: list[V1TestImage] = []
    for files in layers:
        images.append(image(files, images[-1] if images else None, compression=compression))
    return images


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    assert response.status_code in statuses, (
        f"{response.status_code} for {response.request.method} {response.request.url}: {response.text[:300]}"
    )
    return response


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def push_image(client: httpx.Client, image: V1TestImage) -> None:
    """json, layer (chunked transfer, as engines sent it), checksum: unless the registry has the image already."""
    headers = {"User-Agent": ENGINE_AGENT}
    if client.get(f"/v1/images/{image.id}/json", headers=headers).status_code == 200:
        return
    expect(client.put(f"/v1/images/{image.id}/json", content=image.json, headers=headers), 200)
    expect(client.put(f"/v1/images/{image.id}/layer", content=_chunks(image.layer), headers=headers), 200)
    checksum = {**headers, "X-Docker-Checksum-Payload": image.checksum}
    expect(client.put(f"/v1/images/{image.id}/checksum", headers=checksum), 200)


def push(client: httpx.Client, repository: str, images: list[V1TestImage], tag: str = "latest") -> httpx.Response:
    """A whole `docker push` of a v1 engine; returns the answer to the repository PUT (token, endpoints)."""
    headers = {"User-Agent": ENGINE_AGENT}
    expect(client.get("/v1/_ping"), 200)
    listed = [{"id": i.id} for i in images]
    started = expect(
        client.put(f"/v1/repositories/{repository}/", json=listed, headers={**headers, "X-Docker-Token": "true"}),
        200,
    )
    for each in images:
        push_image(client, each)
    expect(client.put(f"/v1/repositories/{repository}/tags/{tag}", json=images[-1].id, headers=headers), 200)
    with_checksums = [{"id": i.id, "checksum": i.checksum} for i in images]
    expect(client.put(f"/v1/repositories/{repository}/images", json=with_checksums, headers=headers), 204)
    return started


def pull(client: httpx.Client, repository: str, tag: str = "latest") -> list[tuple[dict[str, object], bytes]]:
    """A `docker pull` of a v1 engine: (json, layer) of each image of the tag's chain, top first; each layer is
    fetched in two requests, the second resuming with an open-ended Range as engines resumed a broken download."""
    expect(client.get("/v1/_ping"), 200)
    expect(client.get(f"/v1/repositories/{repository}/images", headers={"X-Docker-Token": "true"}), 200)
    tags = expect(client.get(f"/v1/repositories/{repository}/tags"), 200).json()
    top = tags[tag]
    ancestry = expect(client.get(f"/v1/images/{top}/ancestry"), 200).json()
    assert ancestry[0] == top
    pulled = []
    for image_id in ancestry:
        answer = expect(client.get(f"/v1/images/{image_id}/json"), 200)
        size = int(answer.headers["X-Docker-Size"])
        head = expect(client.get(f"/v1/images/{image_id}/layer", headers={"Range": f"bytes=0-{size // 2 - 1}"}), 206)
        rest = expect(client.get(f"/v1/images/{image_id}/layer", headers={"Range": f"bytes={size // 2}-"}), 206)
        assert rest.headers["Content-Range"] == f"bytes {size // 2}-{size - 1}/{size}"
        layer = head.content + rest.content
        assert len(layer) == size
        pulled.append((answer.json(), layer))
    return pulled


def rootfs(images: list[V1TestImage]) -> dict[str, bytes]:
    """The root filesystem (regular files) a chain given root first unpacks to: layers in order, whiteouts applied."""
    files: dict[str, bytes] = {}
    for each in images:
        for path in each.deleted:
            files.pop(path, None)
        files.update(each.files)
    return files


def unpack(layers: list[bytes]) -> dict[str, bytes]:
    """Regular files of layer tars (any compression tarfile reads) applied in order, whiteouts honoured: what a
    client that pulled the layers would have on disk."""
    files: dict[str, bytes] = {}
    for layer in layers:
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:*") as tar:
            for member in tar:
                path = os.path.normpath(member.name.removeprefix("./")).lstrip("/")
                directory, base = os.path.split(path)
                if base.startswith(".wh."):
                    files.pop(os.path.join(directory, base[4:]), None)
                elif member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    files[path] = extracted.read()
    return files


def write_original_tree(
    root: os.PathLike[str] | str,
    images: list[V1TestImage],
    tags: dict[str, dict[str, V1TestImage]],
    *,
    in_progress: tuple[V1TestImage, ...] = (),
    without_layer: tuple[V1TestImage, ...] = (),
) -> None:
    """A storage tree as the original registry wrote it: `images/<id>/{json,layer,ancestry,_checksum}` (a push in
    progress has `_inprogress` and no `_checksum`; an image may lack its layer) and
    `repositories/<ns>/<repo>/{tag_<name>,tag<name>_json,_index_images,json}`."""
    by_id = {i.id: i for i in images}
    for each in images:
        directory = os.path.join(root, "images", each.id)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "json"), "wb") as f:
            f.write(each.json)
        ancestry, current = [], each
        while True:
            ancestry.append(current.id)
            if current.parent is None:
                break
            current = by_id[current.parent]
        with open(os.path.join(directory, "ancestry"), "w") as f:
            json.dump(ancestry, f)
        if each not in without_layer:
            with open(os.path.join(directory, "layer"), "wb") as f:
                f.write(each.layer)
        if each in in_progress:
            with open(os.path.join(directory, "_inprogress"), "w") as f:
                f.write("true")
        else:
            with open(os.path.join(directory, "_checksum"), "w") as f:
                json.dump([each.checksum, "tarsum+sha256:" + "0" * 64], f)
    for repository, repository_tags in tags.items():
        directory = os.path.join(root, "repositories", repository)
        os.makedirs(directory, exist_ok=True)
        described = json.dumps({"last_update": 1433160000, "docker_version": "1.6.2", "arch": "amd64", "os": "linux"})
        for tag, each in repository_tags.items():
            with open(os.path.join(directory, f"tag_{tag}"), "w") as f:
                f.write(each.id)
            with open(os.path.join(directory, f"tag{tag}_json"), "w") as f:
                f.write(described)
        with open(os.path.join(directory, "_index_images"), "w") as f:
            json.dump([{"id": i.id} for i in {i.id: i for i in repository_tags.values()}.values()], f)
        with open(os.path.join(directory, "json"), "w") as f:
            f.write(described)
