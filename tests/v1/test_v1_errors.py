"""Every refusal of the v1 API: the push life cycle out of order, bad ids, names, tags and bodies. Each is a 4xx in
the original's shape, `{"error": "..."}`, never a 500; where the original was wrong (a checksum before any layer
was a 500 there), the answer here is right."""

from __future__ import annotations

import dataclasses
import json
import socket

import httpx
import pytest

from registry_api import unique_repo
from v1_engine import chain, expect, image, push, push_image


def refused(response: httpx.Response, status: int, words: str = "") -> str:
    expect(response, status)
    message = response.json()["error"]
    assert isinstance(message, str)
    assert words.lower() in message.lower(), message
    return message


def repo() -> str:
    return f"team/{unique_repo()}"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "Invalid JSON"),
        (b"\xff\xfe", "Invalid JSON"),
        (b"[]", "Invalid JSON"),
        (b'"a string"', "Invalid JSON"),
        (b'{"parent": null}', "Missing key `id'"),
        (b'{"id": "%s"}' % (b"0" * 64), "invalid id"),
        (b'{"id": "%s", "x": NaN}' % (b"a" * 64), "Invalid JSON"),  # Python's, not JSON: was stored as it came
        (b'{"id": "%s", "x": 1e400}' % (b"a" * 64), "Invalid JSON"),  # infinity: bridged to v2 as `Infinity`
        (b'{"id": "%s", "x": ' % (b"a" * 64) + b"[" * 100_000, "Invalid JSON"),  # was a 500 (RecursionError)
    ],
    ids=["not-json", "not-utf8", "list", "string", "no-id", "other-id", "nan", "1e400", "deep"],
)
def test_json_put_refuses_bad_documents(client: httpx.Client, body: bytes, words: str) -> None:
    refused(client.put(f"/v1/images/{'a' * 64}/json", content=body), 400, words)


def test_json_put_needs_an_existing_parent(client: httpx.Client) -> None:
    orphan = image({"f": b"x"})
    document = json.loads(orphan.json) | {"parent": "b" * 64}
    refused(client.put(f"/v1/images/{orphan.id}/json", json=document), 400, "non existing parent")
    document["parent"] = "not-an-id"
    refused(client.put(f"/v1/images/{orphan.id}/json", json=document), 400, "parent")


def test_json_put_needs_a_complete_parent(client: httpx.Client) -> None:
    """A child's ancestry is copied from its parent's when its json is PUT: a child pushed on an incomplete parent,
    which was then pushed again with another parent, kept the old chain (and a tag of it bridged the wrong layers).
    Engines push a parent whole before its child."""
    first, second = image({"p": b"first parent"}), image({"p": b"second parent"})
    push_image(client, first)
    push_image(client, second)
    middle = image({"m": b"middle"}, first)
    child = image({"c": b"child"}, middle)
    expect(client.put(f"/v1/images/{middle.id}/json", content=middle.json), 200)
    refused(client.put(f"/v1/images/{child.id}/json", content=child.json), 400, "parent that is being pushed")
    moved = dataclasses.replace(middle, json=json.dumps(json.loads(middle.json) | {"parent": second.id}).encode())
    push_image(client, moved)
    push_image(client, child)
    assert expect(client.get(f"/v1/images/{child.id}/ancestry"), 200).json() == [child.id, middle.id, second.id]


@pytest.mark.parametrize("bad_id", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "abc", "a" * 32])
def test_image_ids_are_64_or_16_lowercase_hex(client: httpx.Client, bad_id: str) -> None:
    for method, path in (("GET", "json"), ("PUT", "json"), ("GET", "layer"), ("PUT", "layer"), ("GET", "ancestry")):
        refused(client.request(method, f"/v1/images/{bad_id}/{path}", content=b"{}"), 400, "Invalid image ID")


def test_legacy_16_character_ids_are_accepted(client: httpx.Client) -> None:
    legacy = image({"f": b"old"})
    legacy_id = legacy.id[:16]
    document = json.loads(legacy.json) | {"id": legacy_id}
    expect(client.put(f"/v1/images/{legacy_id}/json", json=document), 200)
    refused(client.get(f"/v1/images/{legacy_id}/json"), 400, "being uploaded")


def test_the_push_life_cycle_in_order_and_out_of_it(client: httpx.Client) -> None:
    pushed = image({"f": b"life cycle"})
    base = f"/v1/images/{pushed.id}"
    refused(client.put(f"{base}/layer", content=pushed.layer), 404, "Image not found")  # a layer with no json
    refused(client.put(f"{base}/checksum", headers={"X-Docker-Checksum-Payload": pushed.checksum}), 404)
    refused(client.get(f"{base}/json"), 404, "Image not found")
    expect(client.put(f"{base}/json", content=pushed.json), 200)
    for path in ("json", "layer", "ancestry", "files"):  # in progress: not served
        refused(client.get(f"{base}/{path}"), 400, "being uploaded")
    # a checksum before any layer (a 500 in the original)
    refused(client.put(f"{base}/checksum", headers={"X-Docker-Checksum-Payload": pushed.checksum}), 400, "layer")
    expect(client.put(f"{base}/layer", content=pushed.layer), 200)
    refused(client.put(f"{base}/checksum"), 400, "checksum")  # no checksum header at all
    refused(client.put(f"{base}/checksum", headers={"X-Docker-Checksum": "tarsum+sha256:" + "0" * 64}), 400, "tarsum")
    wrong = "sha256:" + "0" * 64
    refused(client.put(f"{base}/checksum", headers={"X-Docker-Checksum-Payload": wrong}), 400, "Checksum mismatch")
    refused(client.get(f"{base}/json"), 400, "being uploaded")  # a mismatch leaves it incomplete
    # the tarsum header may come alongside the payload checksum
    headers = {"X-Docker-Checksum-Payload": pushed.checksum, "X-Docker-Checksum": "tarsum+sha256:" + "1" * 64}
    expect(client.put(f"{base}/checksum", headers=headers), 200)
    expect(client.get(f"{base}/json"), 200)
    # complete: it can no longer change
    refused(client.put(f"{base}/json", content=pushed.json), 409, "already exists")
    refused(client.put(f"{base}/layer", content=pushed.layer), 409, "already exists")
    refused(client.put(f"{base}/checksum", headers={"X-Docker-Checksum-Payload": pushed.checksum}), 409)


def test_a_retried_push_starts_over_from_its_json(client: httpx.Client) -> None:
    pushed = image({"f": b"retry"})
    base = f"/v1/images/{pushed.id}"
    expect(client.put(f"{base}/json", content=pushed.json), 200)
    expect(client.put(f"{base}/layer", content=b"a broken first attempt"), 200)
    refused(client.put(f"{base}/checksum", headers={"X-Docker-Checksum-Payload": pushed.checksum}), 400, "mismatch")
    push_image(client, pushed)
    assert expect(client.get(f"{base}/layer"), 200).content == pushed.layer


def test_a_layer_cut_short_leaves_the_image_without_one(client: httpx.Client) -> None:
    pushed = image({"f": b"short" * 1000})
    base = f"/v1/images/{pushed.id}"
    expect(client.put(f"{base}/json", content=pushed.json), 200)
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    with socket.create_connection((host, port), timeout=30) as connection:  # httpx will not send a short body
        head = f"PUT {base}/layer HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(pushed.layer)}\r\n\r\n"
        connection.sendall(head.encode() + pushed.layer[:10])
        connection.shutdown(socket.SHUT_WR)
        answer = connection.makefile("rb").read()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]  # aiohttp drops a half-closed request
    refused(client.put(f"{base}/checksum", headers={"X-Docker-Checksum-Payload": pushed.checksum}), 400, "layer")


@pytest.mark.parametrize(
    "name",
    ["Upper/case", "team/" + "a" * 300, "team/a..b", "team/-lead", "team%2Fx/y", "team/.."],
)
def test_odd_and_over_long_names(client: httpx.Client, name: str) -> None:
    for method, path in (("GET", "tags"), ("PUT", "tags/latest"), ("GET", "images"), ("PUT", "")):
        answer = client.request(method, f"/v1/repositories/{name}/{path}", content=b'"x"')
        assert 400 <= answer.status_code < 500, (method, path, answer.status_code)
        assert "error" in answer.json()


@pytest.mark.parametrize("tag", ["caf%C3%A9", "-lead", ".dot", "a" * 129, "%E2%9C%93"])
def test_non_ascii_and_odd_tags(client: httpx.Client, tag: str) -> None:
    name = repo()
    images = chain({"f": b"tags"})
    push(client, name, images)
    refused(client.put(f"/v1/repositories/{name}/tags/{tag}", json=images[-1].id), 400, "Invalid tag")
    refused(client.get(f"/v1/repositories/{name}/tags/{tag}"), 400, "Invalid tag")


def test_tag_put_refusals(client: httpx.Client) -> None:
    name = repo()
    images = chain({"f": b"t"})
    push(client, name, images)
    refused(client.put(f"/v1/repositories/{name}/tags/x", content=b"not json"), 400, "Invalid data")
    refused(client.put(f"/v1/repositories/{name}/tags/x", json={"id": images[0].id}), 400, "Invalid data")
    refused(client.put(f"/v1/repositories/{name}/tags/x", json="c" * 64), 404, "Image not found")
    refused(client.put(f"/v1/repositories/{name}/tags/x", json="bad"), 400, "Invalid image ID")
    incomplete = image({"f": b"incomplete"})
    expect(client.put(f"/v1/images/{incomplete.id}/json", content=incomplete.json), 200)
    refused(client.put(f"/v1/repositories/{name}/tags/x", json=incomplete.id), 400, "being uploaded")
    refused(client.get(f"/v1/repositories/{name}/tags/x"), 404, "Tag not found")
    refused(client.get(f"/v1/repositories/team/{unique_repo()}/tags"), 404, "Repository not found")


def test_index_and_properties_refusals(client: httpx.Client) -> None:
    name = repo()
    refused(client.put(f"/v1/repositories/{name}/", content=b"{"), 400, "Decoding JSON")
    refused(client.put(f"/v1/repositories/{name}/", json={"id": "x"}), 400, "Invalid data")
    refused(client.put(f"/v1/repositories/{name}/images", json=[{"no": "id"}]), 400, "Invalid data")
    refused(client.put(f"/v1/repositories/{name}/images", json=[{"id": "short"}]), 400, "Invalid image ID")
    refused(client.get(f"/v1/repositories/{name}/images"), 404, "images not found")
    refused(client.put(f"/v1/repositories/{name}/properties", json={"access": "secret"}), 400, "Invalid data")
    refused(client.put(f"/v1/repositories/{name}/properties", content=b"[]"), 400, "Invalid data")
    # a lone surrogate is no text the database can store: each was a 500
    lone = b'{"access": "public", "description": "\\ud800"}'
    refused(client.put(f"/v1/repositories/{name}/properties", content=lone), 400, "Invalid data")
    checksum = b'[{"id": "%s", "checksum": "\\ud800"}]' % (b"a" * 64)
    refused(client.put(f"/v1/repositories/{name}/images", content=checksum), 400, "Decoding JSON")


def test_unknown_paths_and_methods(client: httpx.Client) -> None:
    refused(client.get("/v1/nothing/here"), 404)
    # HEAD is answered wherever GET is, as the original's Flask routes did (no body: the status says it)
    assert client.head("/v1/search").status_code == 200
    assert client.head(f"/v1/repositories/team/{unique_repo()}/tags").status_code == 404
    refused(client.post(f"/v1/images/{'a' * 64}/json"), 405)
    refused(client.get(f"/v1/images/{'a' * 64}/checksum"), 405)


def test_search_refusals(client: httpx.Client) -> None:
    refused(client.get("/v1/search", params={"n": "0"}), 400, "Invalid n")
    refused(client.get("/v1/search", params={"n": "101"}), 400, "Invalid n")
    refused(client.get("/v1/search", params={"page": "-1"}), 400, "Invalid page")
    refused(client.get("/v1/search", params={"q": "x" * 300}), 400, "Invalid q")
