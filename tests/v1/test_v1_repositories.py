"""Repositories through v1: one tag namespace with v2, deletion, properties, search, users, index tokens, the
auth gate, read-only mode and `v1.enabled`."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_auth_htpasswd import PASSWORDS, as_user, auth_config, write_htpasswd
from test_v1_presented import push_v2_image

from registry_api import MANIFEST_ACCEPT, image_manifest, sha256, unique_repo
from registry_api import push as push_v2
from registry_process import RegistryProcess
from v1_engine import ENGINE_AGENT, V1TestImage, chain, expect, image, pull, push, push_image

EXTRAS = {"star_count": 0, "is_official": False, "is_automated": False}
SQUAT_RULES = [
    {"who": "alice", "repositories": ["team-a/*"], "actions": ["pull", "push"]},
    {"who": "bob", "repositories": ["team-b/*"], "actions": ["pull", "push"]},
    {"who": "carol", "repositories": ["team-a/*"], "actions": ["pull"]},
    {"who": "anonymous", "repositories": ["drop/*"], "actions": ["pull", "push"]},
]
"""The probe's rules: alice pushes team-a/*, bob team-b/*, carol pulls what alice pushes, and anyone without
credentials pushes drop/*."""


def repo() -> str:
    return f"team/{unique_repo()}"


def test_v1_and_v2_tags_are_one_namespace(client: httpx.Client) -> None:
    name = repo()
    images = chain({"f": b"v1 content"})
    push(client, name, images, tag="shared")
    bridged = expect(client.get(f"/v2/{name}/manifests/shared", headers={"Accept": MANIFEST_ACCEPT}), 200)
    assert bridged.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert sorted(expect(client.get(f"/v2/{name}/tags/list"), 200).json()["tags"]) == ["shared"]

    # a v2 push of the same tag wins: v1 clients no longer see it (they cannot read a v2 image)
    manifest = image_manifest(client, name)
    push_v2(client, name, manifest, "shared")
    assert expect(client.get(f"/v1/repositories/{name}/tags"), 200).json() == {}
    expect(client.get(f"/v1/repositories/{name}/tags/shared"), 404)
    expect(client.delete(f"/v1/repositories/{name}/tags/shared"), 404)  # nor delete it
    assert (
        expect(client.get(f"/v2/{name}/manifests/shared", headers={"Accept": MANIFEST_ACCEPT}), 200).content
        != bridged.content
    )

    # and a v1 tag PUT takes it back
    expect(client.put(f"/v1/repositories/{name}/tags/shared", json=images[-1].id), 200)
    assert expect(client.get(f"/v1/repositories/{name}/tags"), 200).json() == {"shared": images[-1].id}
    assert (
        expect(client.get(f"/v2/{name}/manifests/shared", headers={"Accept": MANIFEST_ACCEPT}), 200).content
        == bridged.content
    )


def test_tag_and_repository_deletion(client: httpx.Client) -> None:
    name = repo()
    images = chain({"f": b"delete me"})
    push(client, name, images, tag="one")
    expect(client.put(f"/v1/repositories/{name}/tags/two", json=images[-1].id), 200)
    assert expect(client.delete(f"/v1/repositories/{name}/tags/one"), 200).json() is True
    assert expect(client.get(f"/v1/repositories/{name}/tags"), 200).json() == {"two": images[-1].id}
    expect(client.get(f"/v2/{name}/manifests/one", headers={"Accept": MANIFEST_ACCEPT}), 404)
    expect(client.delete(f"/v1/repositories/{name}/tags/one"), 404)

    expect(client.delete(f"/v1/repositories/{name}/"), 200)
    # gone, as in the original (its untagged manifests keep the repository for v2)
    assert expect(client.get(f"/v1/repositories/{name}/tags"), 404).json() == {"error": "Repository not found"}
    expect(client.get(f"/v1/repositories/{name}/images"), 404)
    expect(client.delete(f"/v1/repositories/{name}/"), 404)
    # images are global, as in the original: they outlive the repository
    expect(client.get(f"/v1/images/{images[-1].id}/json"), 200)
    # `DELETE .../tags` is the same deletion
    other = repo()
    push(client, other, images)
    expect(client.delete(f"/v1/repositories/{other}/tags"), 200)
    expect(client.get(f"/v1/repositories/{other}/tags"), 404)


def test_properties(client: httpx.Client) -> None:
    name = repo()
    assert expect(client.get(f"/v1/repositories/{name}/properties"), 200).json() == {"access": "public"}
    expect(client.put(f"/v1/repositories/{name}/properties", json={"access": "private"}), 200)
    assert expect(client.get(f"/v1/repositories/{name}/properties"), 200).json() == {"access": "private"}
    # ours: a description, which search matches
    word = unique_repo("described")
    described = {"access": "public", "description": f"the {word} service"}
    expect(client.put(f"/v1/repositories/{name}/properties", json=described), 200)
    assert expect(client.get(f"/v1/repositories/{name}/properties"), 200).json() == described
    found = expect(client.get("/v1/search", params={"q": word}), 200).json()
    assert found["results"] == [{"name": name, "description": f"the {word} service", **EXTRAS}]
    answer = client.put(f"/v1/repositories/{name}/properties", json={"access": "public", "description": 5})
    assert "description" in expect(answer, 400).json()["error"]


def test_index_images_merge_and_keep_checksums(client: httpx.Client) -> None:
    name = repo()
    first, second = "1" * 64, "2" * 64
    expect(client.put(f"/v1/repositories/{name}/", json=[{"id": first}, {"id": second}]), 200)
    expect(client.put(f"/v1/repositories/{name}/images", json=[{"id": first, "checksum": "sha256:aa"}]), 204)
    expect(client.put(f"/v1/repositories/{name}/images", json=[{"id": first}]), 204)  # no checksum: the known stays
    listed = expect(client.get(f"/v1/repositories/{name}/images"), 200)
    assert listed.json() == [{"id": first, "checksum": "sha256:aa"}, {"id": second}]
    assert "X-Docker-Token" not in listed.headers  # not asked for
    asked = client.get(f"/v1/repositories/{name}/images", headers={"X-Docker-Token": "true"})
    assert f'repository="{name}",access=read' in asked.headers["X-Docker-Token"]
    assert asked.headers["X-Docker-Endpoints"] == client.base_url.netloc.decode()
    assert expect(client.delete(f"/v1/repositories/{name}/images"), 204).content == b""
    expect(client.put(f"/v1/repositories/{name}/auth"), 200)


def test_search_finds_v1_and_v2_repositories(client: httpx.Client) -> None:
    word = unique_repo("needle")
    v1_name, v2_name = f"team/{word}-v1", f"team/{word}-v2"
    push(client, v1_name, chain({"f": b"s"}))
    push_v2(client, v2_name, image_manifest(client, v2_name), "latest")
    found = expect(client.get("/v1/search", params={"q": word}), 200).json()
    assert found["query"] == word
    assert found["num_results"] == 2
    assert found["results"] == [
        {"name": v1_name, "description": "", **EXTRAS},
        {"name": v2_name, "description": "", **EXTRAS},
    ]
    paged = expect(client.get("/v1/search", params={"q": word, "n": "1", "page": "2"}), 200).json()
    assert paged["results"] == [{"name": v2_name, "description": "", **EXTRAS}]
    assert paged["num_results"] == 2
    # LIKE's wildcards are literal characters here
    assert expect(client.get("/v1/search", params={"q": "%"}), 200).json()["num_results"] == 0


def test_users_as_a_standalone_registry(client: httpx.Client) -> None:
    assert expect(client.get("/v1/users/"), 200).json() == "OK"
    assert (
        expect(client.post("/v1/users/", json={"username": "u", "password": "p", "email": "e"}), 201).json()
        == "User Created"
    )
    assert "error" in expect(client.post("/v1/users/", content=b"{"), 400).json()
    expect(client.put("/v1/users/someone/", json={}), 204)


def auth_registry(
    make_registry: Callable[..., RegistryProcess],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    database: str,
    rules: list[dict[str, object]] | None = None,
) -> RegistryProcess:
    """A registry with htpasswd auth and `rules` (the htpasswd tests' by default), on SQLite or PostgreSQL."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    config = auth_config(htpasswd) if rules is None else auth_config(htpasswd, rules)
    if database == "postgres":
        config["database"] = {"url": request.getfixturevalue("postgres_cluster").new_database()}
    return make_registry(workers=1, extra_config=config)


def under_id(pushed: V1TestImage, image_id: str) -> V1TestImage:
    """The image with another id: what someone who knows an id pushes as their own."""
    return dataclasses.replace(pushed, id=image_id, json=pushed.json.replace(pushed.id.encode(), image_id.encode()))


def engine_push(client: httpx.Client, repository: str, images: list[V1TestImage]) -> httpx.Response | None:
    """A docker 1.x engine's push as it reads the answers: every image listed first; one whose json GET answers
    200, or whose json PUT answers 409 "Image already exists", is skipped as pushed already. The first refusal,
    or None when the push went through."""
    headers = {"User-Agent": ENGINE_AGENT}
    listed = client.put(f"/v1/repositories/{repository}/", json=[{"id": i.id} for i in images], headers=headers)
    if listed.status_code != 200:
        return listed
    for each in images:
        if client.get(f"/v1/images/{each.id}/json", headers=headers).status_code == 200:
            continue
        answer = client.put(f"/v1/images/{each.id}/json", content=each.json, headers=headers)
        if answer.status_code == 409 and answer.json().get("error") == "Image already exists":
            continue
        if answer.status_code == 200:
            answer = client.put(f"/v1/images/{each.id}/layer", content=each.layer, headers=headers)
        if answer.status_code == 200:
            checksum = {**headers, "X-Docker-Checksum-Payload": each.checksum}
            answer = client.put(f"/v1/images/{each.id}/checksum", headers=checksum)
        if answer.status_code != 200:
            return answer
    tagged = client.put(f"/v1/repositories/{repository}/tags/latest", json=images[-1].id, headers=headers)
    return None if tagged.status_code == 200 else tagged


def test_auth_gate_covers_v1(make_registry: Callable[..., RegistryProcess], tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    server = make_registry(workers=1, extra_config=auth_config(htpasswd))
    with as_user(server, None) as anonymous, as_user(server, "alice") as alice, as_user(server, "carol") as carol:
        expect(anonymous.get("/v1/_ping"), 200)  # open, as in the original
        expect(anonymous.put(f"/v1/images/{'a' * 64}/json", json={}), 401)
        expect(anonymous.put("/v1/repositories/team-a/app/", json=[]), 401)
        # docker 1.x login: sign-up "fails" (users come from htpasswd), then the credentials are checked
        assert (
            expect(anonymous.post("/v1/users/", json={"username": "alice"}), 400).json()
            == "Username or email already exists"
        )
        expect(anonymous.get("/v1/users/"), 401)
        expect(alice.get("/v1/users/"), 200)
        images = chain({"f": b"auth"})
        started = push(alice, "team-a/app", images)
        assert "X-Docker-Token" not in started.headers  # credentials, not a token, keep authorizing the engine
        assert expect(anonymous.get("/v1/repositories/public/none/tags"), 404).json()[
            "error"
        ]  # anonymous may pull public/*
        expect(carol.get("/v1/repositories/team-a/app/tags"), 403)
        expect(carol.put("/v1/repositories/team-a/app/tags/x", json=images[-1].id), 403)
        assert expect(alice.get("/v1/repositories/team-a/app/tags"), 200).json() == {"latest": images[-1].id}
        # an image that a repository holds is read through a repository the caller may pull
        expect(alice.get(f"/v1/images/{images[-1].id}/json"), 200)
        expect(carol.get(f"/v1/images/{images[-1].id}/json"), 403)
        expect(anonymous.get(f"/v1/images/{images[-1].id}/json"), 401)  # though anonymous may pull public/*
        # search lists only what the caller may pull
        assert expect(carol.get("/v1/search", params={"q": "team-a"}), 200).json()["num_results"] == 0
        assert expect(alice.get("/v1/search", params={"q": "team-a"}), 200).json()["num_results"] == 1


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_v1_images_are_read_and_written_through_the_repositories_that_hold_them(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    """Images are global, but the right to pull one repository opens only the images that repositories the caller
    may pull hold (listed by a v1 push, in the chain of a v1 tag, or in the chain a v2 image is presented as), and
    those the caller pushed: an image nobody holds is its pusher's alone."""
    server = auth_registry(make_registry, tmp_path, request, database)
    with as_user(server, "alice") as alice, as_user(server, "bob") as bob, as_user(server, "carol") as carol:
        pushed = chain({"etc/secret": b"team-a only"}, {"srv/app": b"team-a app"})
        push(alice, "team-a/app", pushed)
        presented_from = chain({"etc/v2": b"team-a v2 base"}, {"srv/v2": b"team-a v2 top"})
        push_v2_image(alice, "team-a/v2", "latest", presented_from)
        presented = expect(alice.get("/v1/repositories/team-a/v2/tags"), 200).json()["latest"]
        presented_chain = expect(alice.get(f"/v1/images/{presented}/ancestry"), 200).json()
        assert len(presented_chain) == 2
        # tagged without being listed first (a script, not an engine): the tag's chain is held
        unlisted = chain({"opt/tool": b"team-a tool"})
        for each in unlisted:
            push_image(alice, each)
        expect(alice.put("/v1/repositories/team-a/tool/tags/latest", json=unlisted[-1].id), 200)

        held = [i.id for i in pushed] + presented_chain + [unlisted[-1].id]
        for image_id in held:
            for route in ("json", "ancestry", "layer", "files"):
                expect(alice.get(f"/v1/images/{image_id}/{route}"), 200)
                expect(carol.get(f"/v1/images/{image_id}/{route}"), 403)  # carol may pull shared/* only
        # bob may pull team-b/*: the same layer there opens the images that hold it there only
        bob_images = [dataclasses.replace(image(pushed[0].files), layer=pushed[0].layer)]
        push(bob, "team-b/copy", bob_images)
        expect(bob.get(f"/v1/images/{bob_images[0].id}/layer"), 200)
        expect(bob.get(f"/v1/images/{pushed[0].id}/layer"), 403)
        expect(bob.get(f"/v1/images/{pushed[0].id}/json"), 403)

        # writes: an image a repository's push listed is written only by who may push there
        started = chain({"srv/next": b"team-a next"})
        expect(alice.put("/v1/repositories/team-a/next/", json=[{"id": started[0].id}]), 200)
        expect(bob.put(f"/v1/images/{started[0].id}/json", content=started[0].json), 403)
        push_image(alice, started[0])
        # an unknown id (then 404) needs the right to push somewhere: carol may only pull
        expect(bob.get(f"/v1/images/{'e' * 64}/json"), 404)
        expect(carol.get(f"/v1/images/{'e' * 64}/json"), 403)
        # an image nobody lists or holds is its pusher's alone: an id is no proof of a right to its content
        loose = chain({"tmp/loose": b"bob's"})
        push_image(bob, loose[0])
        expect(bob.get(f"/v1/images/{loose[0].id}/json"), 200)
        expect(alice.get(f"/v1/images/{loose[0].id}/json"), 403)
        expect(carol.get(f"/v1/images/{loose[0].id}/json"), 403)
        # so is one no longer held: the repository that listed and tagged it deleted
        expect(alice.delete("/v1/repositories/team-a/app/"), 200)
        expect(carol.get(f"/v1/images/{pushed[-1].id}/layer"), 403)
        expect(bob.get(f"/v1/images/{pushed[-1].id}/layer"), 403)
        expect(alice.get(f"/v1/images/{pushed[-1].id}/layer"), 200)

        # presented ids are keyed: nobody computes them from digests they know (and then lists one as their own)
        base = presented_from[0]
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(base.layer)).hexdigest()
        unkeyed = hashlib.sha256(f"\n{sha256(base.layer)}\n{diff_id}".encode()).hexdigest()
        assert unkeyed != presented_chain[-1]
        # and an id, once known, opens nothing: listing it as one's own is not recorded, tagging it is refused
        expect(bob.put("/v1/repositories/team-b/guess/", json=[{"id": presented_chain[-1]}]), 200)
        expect(bob.get(f"/v1/images/{presented_chain[-1]}/layer"), 403)
        expect(bob.put("/v1/repositories/team-b/guess/tags/latest", json=presented_chain[-1]), 403)
        expect(bob.get("/v1/repositories/team-b/guess/images"), 404)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_an_image_pushed_under_a_well_known_id_is_never_adopted(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    """Image ids are global, and those of images pulled from Docker Hub by docker 1.9 and older are public: bob
    pushed his own content under the id of a base alice's engine was about to push (unlisted, or in his own
    repository). Her engine's listing made her repository hold it, its json GET answered 200, so the engine skipped
    it as pushed, built on it and tagged: carol, pulling alice's repository, got bob's files. Now alice's push
    fails, and nobody but bob reads his image. The same for a squatter without credentials where anonymous callers
    may push somewhere (recorded as nobody, its image was open to all, as before the fix; review)."""
    server = auth_registry(make_registry, tmp_path, request, database, SQUAT_RULES)
    with (
        as_user(server, "alice") as alice,
        as_user(server, "bob") as bob,
        as_user(server, "carol") as carol,
        as_user(server, None) as anonymous,
    ):
        squats = [
            (bob, None),
            (bob, f"team-b/{unique_repo('x')}"),
            (anonymous, None),  # listed in drop/*, it would be alice's to read: what anyone may pull, she may
        ]
        for squatter, squatted_in in squats:
            base = image({"etc/os-release": b"the base from Docker Hub"})
            squat = under_id(image({"etc/os-release": b"bob's"}), base.id)
            if squatted_in is None:
                push_image(squatter, squat)
            else:
                push(squatter, squatted_in, [squat])
            app = image({"srv/app": b"alice's app"}, base)
            name = f"team-a/{unique_repo('app')}"
            refusal = engine_push(alice, name, [base, app])
            assert refusal is not None, f"alice's push went through on bob's image ({squatted_in or 'unlisted'})"
            expect(refusal, 403)
            # the squatted image is bob's: alice neither reads nor writes it, builds on it, or tags it
            expect(alice.get(f"/v1/images/{base.id}/json"), 403)
            expect(alice.put(f"/v1/images/{base.id}/json", content=base.json), 403)
            answer = expect(alice.put(f"/v1/images/{app.id}/json", content=app.json), 400)
            assert answer.json() == {"error": "Image depends on an unauthorized parent"}
            expect(alice.put(f"/v1/repositories/{name}/tags/latest", json=base.id), 403)
            # so carol, who may pull alice's repositories, never gets bob's files, through v1 or v2
            expect(carol.get(f"/v1/images/{base.id}/layer"), 403)
            assert expect(carol.get(f"/v1/repositories/{name}/tags"), 200).json() == {}
            expect(carol.get(f"/v2/{name}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT}), 404)
            expect(squatter.get(f"/v1/images/{base.id}/layer"), 200)


def test_reading_an_image_does_not_open_its_ancestors(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    """A tag, or a child's json, makes its repository hold the whole chain: the right to read the top image (here
    listed in drop/*, which bob may pull) opened its private parent, through v1 and the v2 bridge (probe)."""
    server = make_registry(
        workers=1, extra_config=auth_config(write_htpasswd(tmp_path / "htpasswd", PASSWORDS), SQUAT_RULES)
    )
    with as_user(server, "alice") as alice, as_user(server, "bob") as bob:
        private = image({"etc/secret": b"alice's private layer"})
        shown = image({"srv/public": b"shown"}, private)
        for where, each in ((f"team-a/{unique_repo('priv')}", private), (f"drop/{unique_repo('y')}", shown)):
            expect(alice.put(f"/v1/repositories/{where}/", json=[{"id": each.id}]), 200)  # listed, never tagged
            push_image(alice, each)
        expect(bob.get(f"/v1/images/{shown.id}/json"), 200)
        expect(bob.get(f"/v1/images/{private.id}/layer"), 403)
        name = f"team-b/{unique_repo('z')}"
        answer = expect(bob.put(f"/v1/repositories/{name}/tags/t", json=shown.id), 403)
        assert "ancestor" in answer.json()["error"]
        child = image({"srv/mine": b"bob's"}, shown)
        expect(bob.put(f"/v1/repositories/{name}/", json=[{"id": child.id}]), 200)
        answer = expect(bob.put(f"/v1/images/{child.id}/json", content=child.json), 400)
        assert answer.json() == {"error": "Image depends on an unauthorized parent"}
        expect(bob.get(f"/v1/images/{private.id}/layer"), 403)
        expect(bob.get(f"/v2/{name}/blobs/{sha256(private.layer)}"), 404)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_an_image_another_user_is_pushing_is_not_theirs_to_write(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    """alice listed X and wrote its json; bob listed X in his repository (before or after) and wrote its json, layer
    and checksum. They went through, alice's layer and checksum then answered 409 but her tag 200: her repository
    served bob's layer. Now bob's writes are refused and alice's push goes on (her retries too)."""
    server = auth_registry(make_registry, tmp_path, request, database, SQUAT_RULES)
    with as_user(server, "alice") as alice, as_user(server, "bob") as bob, as_user(server, "carol") as carol:
        pushed = image({"srv/y": b"alice's"})
        mine = under_id(image({"srv/y": b"bob's"}), pushed.id)
        name, bobs = f"team-a/{unique_repo('y')}", f"team-b/{unique_repo('z')}"
        expect(bob.put(f"/v1/repositories/{bobs}/", json=[{"id": pushed.id}]), 200)  # before it exists
        expect(alice.put(f"/v1/repositories/{name}/", json=[{"id": pushed.id}]), 200)
        expect(alice.put(f"/v1/images/{pushed.id}/json", content=pushed.json), 200)
        expect(bob.put(f"/v1/repositories/{bobs}/", json=[{"id": pushed.id}]), 200)  # and after: not recorded
        expect(bob.put(f"/v1/images/{pushed.id}/json", content=mine.json), 403)
        expect(bob.put(f"/v1/images/{pushed.id}/layer", content=mine.layer), 403)
        expect(bob.put(f"/v1/images/{pushed.id}/checksum", headers={"X-Docker-Checksum-Payload": mine.checksum}), 403)
        expect(bob.get(f"/v1/images/{pushed.id}/json"), 403)

        expect(alice.put(f"/v1/images/{pushed.id}/json", content=pushed.json), 200)  # her retry starts over
        expect(alice.put(f"/v1/images/{pushed.id}/layer", content=pushed.layer), 200)
        checksum = {"X-Docker-Checksum-Payload": pushed.checksum}
        expect(alice.put(f"/v1/images/{pushed.id}/checksum", headers=checksum), 200)
        expect(alice.put(f"/v1/repositories/{name}/tags/latest", json=pushed.id), 200)
        assert [layer for _, layer in pull(carol, name)] == [pushed.layer]
        expect(bob.get(f"/v1/images/{pushed.id}/layer"), 403)
        expect(bob.put(f"/v1/repositories/{bobs}/tags/latest", json=pushed.id), 403)


def test_an_image_pushed_under_a_presented_id_is_never_taken_for_it(
    make_registry: Callable[..., RegistryProcess],
) -> None:
    """Someone who knew the key (or guessed an id) and pushed an image of their own under a presented image's id
    before the manifest was presented: v1 clients are not shown that image as the manifest's, nor anything."""
    server = make_registry(workers=1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        warm = f"team/{unique_repo()}"
        push_v2_image(client, warm, "latest", chain({"a": b"draws the key"}))
        expect(client.get(f"/v1/repositories/{warm}/tags"), 200)
        with sqlite3.connect(server.data_dir / "registry.db") as db:
            (key,) = db.execute("SELECT value FROM registry_secrets").fetchone()
        victim = chain({"etc/base": b"the real base"})
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(victim[0].layer)).hexdigest()
        shown = json.dumps({"created": "2026-01-02T00:00:00Z", "created_by": "COPY layer 0"}, sort_keys=True)
        seed = f"\n{sha256(victim[0].layer)}\n{diff_id}\n{shown}".encode()  # the base's history (push_v2_image's)
        claimed = hmac.new(key.encode(), seed, hashlib.sha256).hexdigest()
        evil = image({"etc/base": b"EVIL"})
        evil = dataclasses.replace(evil, id=claimed, json=evil.json.replace(evil.id.encode(), claimed.encode()))
        push(client, f"team/{unique_repo()}", [evil])

        name = f"team/{unique_repo()}"
        push_v2_image(client, name, "latest", [*victim, image({"srv/top": b"top"}, victim[0])])
        assert expect(client.get(f"/v1/repositories/{name}/tags"), 200).json() == {}
    assert "an image id of" in server.log_path.read_text()  # the id computed here was the presented one


def test_read_only_and_disabled(make_registry: Callable[..., RegistryProcess]) -> None:
    readonly = make_registry(workers=1, extra_config={"storage": {"maintenance": {"readonly": {"enabled": True}}}})
    with httpx.Client(base_url=readonly.url, timeout=30) as client:
        expect(client.get("/v1/_ping"), 200)
        answer = expect(client.put(f"/v1/images/{'a' * 64}/json", json={"id": "a" * 64}), 405)
        assert "read-only" in answer.json()["error"]
    disabled = make_registry(workers=1, extra_config={"v1": {"enabled": False}})
    with httpx.Client(base_url=disabled.url, timeout=30) as client:
        expect(client.get("/v1/_ping"), 404)
        expect(client.get("/v2/"), 200)


def test_rules_apply_to_the_library_repository_written(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    """`/v1/repositories/app/...` writes `library/app`: a rule on `app` grants nothing there, one on `library/app`
    does."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    rules = [
        {"who": "alice", "repositories": ["app"], "actions": ["*"]},
        {"who": "bob", "repositories": ["library/app"], "actions": ["*"]},
    ]
    server = make_registry(workers=1, extra_config=auth_config(htpasswd, rules))
    with as_user(server, "alice") as alice, as_user(server, "bob") as bob:
        answer = expect(alice.put("/v1/repositories/app/", json=[]), 403)
        assert "library/app" in answer.text
        expect(bob.put("/v1/repositories/app/", json=[{"id": "1" * 64}]), 200)
        expect(bob.get("/v1/repositories/library/app/images"), 200)
