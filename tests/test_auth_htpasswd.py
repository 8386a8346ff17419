"""Authentication with an htpasswd file and access rules, over HTTP against real server processes.

Every route refuses a caller without valid credentials (401 with the Basic challenge) and a user without the right
(403 DENIED), with the spec's error body and never any data; rules grant anonymous pulls, filter the catalog and
decide cross-repository mounts; upload sessions belong to the user who began them; the htpasswd file is re-read
when it changes; names crafted to slip past a rule are refused; failed logins are limited per address.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import httpx
import pytest
import yaml

from registry_api import (
    MANIFEST_ACCEPT,
    assert_error,
    image_manifest,
    push,
    push_blob,
    random_bytes,
    raw_http,
    raw_status,
    sha256,
    start_upload,
    unique_repo,
    with_params,
)
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="access rules are ours")

REALM = "test-realm"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2", "carol": "carol-secret-3"}
RULES: list[dict[str, Any]] = [
    {"who": "group:team-a", "repositories": ["team-a/*"], "actions": ["*"]},
    {"who": "bob", "repositories": ["team-b/*"], "actions": ["pull", "push"]},
    {"who": "group:pushers", "repositories": ["common/*"], "actions": ["pull", "push"]},
    {"who": "authenticated", "repositories": ["shared/*"], "actions": ["pull"]},
    {"who": "anonymous", "repositories": ["public/*"], "actions": ["pull"]},
    {"who": "alice", "repositories": ["public/*", "shared/*"], "actions": ["pull", "push"]},
]
GROUPS = {"team-a": ["alice"], "pushers": ["alice", "bob"]}


def htpasswd_line(user: str, password: str, prefix: bytes = b"$2b$") -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4))
    return f"{user}:{(prefix + hashed[4:]).decode()}\n"


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    # One entry as Apache's `htpasswd -B` writes it ($2y$), the others as Python's bcrypt ($2b$).
    path.write_text(
        "".join(htpasswd_line(u, p, b"$2y$" if i == 0 else b"$2b$") for i, (u, p) in enumerate(users.items()))
    )
    return path


def auth_config(htpasswd: Path, rules: list[dict[str, Any]] | None = RULES) -> dict[str, Any]:
    config: dict[str, Any] = {"auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd), "groups": GROUPS}}}
    if rules is not None:
        config["access"] = rules
    return config


def as_user(
    server: RegistryProcess, user: str | None, password: str | None = None, source: str | None = None
) -> httpx.Client:
    """A client sending `user`'s credentials; `source` is a loopback address of its own (each has its own tally
    of failed logins)."""
    auth = None if user is None else (user, password if password is not None else PASSWORDS[user])
    transport = None if source is None else httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=server.url, timeout=30, auth=auth, transport=transport)


def assert_challenge(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.method, response.request.url, response.text)
    assert response.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
    if response.request.method != "HEAD":
        assert_error(response, 401, "UNAUTHORIZED")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    workdir = tmp_path_factory.mktemp("auth")
    htpasswd = write_htpasswd(workdir / "htpasswd", PASSWORDS)
    process = RegistryProcess(workdir / "registry", extra_config=auth_config(htpasswd)).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def seeded(server: RegistryProcess) -> dict[str, str]:
    """team-a/app with a tagged image, one of its blobs and an open upload session, all made by alice."""
    with as_user(server, "alice") as alice:
        manifest = image_manifest(alice, "team-a/app")
        push(alice, "team-a/app", manifest, "v1")
        blob = push_blob(alice, "team-a/app", b"team-a secret layer")
        session = start_upload(alice, "team-a/app")
    return {"manifest": manifest.digest, "blob": blob, "session": httpx.URL(session).path}


def team_a_requests(seeded: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    """Every route on team-a/app: (method, path, query)."""
    repo, session = "/v2/team-a/app", seeded["session"]
    return [
        ("GET", f"{repo}/manifests/v1", {}),
        ("HEAD", f"{repo}/manifests/v1", {}),
        ("GET", f"{repo}/manifests/{seeded['manifest']}", {}),
        ("PUT", f"{repo}/manifests/v2", {}),
        ("DELETE", f"{repo}/manifests/{seeded['manifest']}", {}),
        ("GET", f"{repo}/blobs/{seeded['blob']}", {}),
        ("HEAD", f"{repo}/blobs/{seeded['blob']}", {}),
        ("DELETE", f"{repo}/blobs/{seeded['blob']}", {}),
        ("GET", f"{repo}/tags/list", {}),
        ("GET", f"{repo}/referrers/{seeded['manifest']}", {}),
        ("POST", f"{repo}/blobs/uploads/", {}),
        ("POST", f"{repo}/blobs/uploads/", {"digest": sha256(b"x")}),
        ("GET", session, {}),
        ("PATCH", session, {}),
        ("PUT", session, {"digest": sha256(b"x")}),
        ("DELETE", session, {}),
    ]


def test_every_route_refuses_missing_wrong_and_insufficient_credentials(
    server: RegistryProcess, seeded: dict[str, str]
) -> None:
    requests = team_a_requests(seeded)
    paths = [*requests, ("GET", "/v2/", {}), ("HEAD", "/v2/", {}), ("GET", "/nowhere", {})]
    for number, (method, path, query) in enumerate([*paths, ("GET", "/v2/_catalog", {})]):
        # Wrong passwords from an address of their own each time: the failed-login limit stays out of the way.
        for user, password in ((None, None), ("alice", "wrong"), ("nobody", "x")):
            source = f"127.0.1.{number + 1}" if user == "alice" else f"127.0.2.{number + 1}" if user else None
            with as_user(server, user, password, source) as client:
                if user is None and path == "/v2/_catalog":
                    continue  # anonymous callers may list what they may pull: see the catalog test
                body = b"x" if method in ("PATCH", "PUT") else None
                response = client.request(method, path, params=query, content=body)
                assert_challenge(response)
                assert b"team-a secret" not in response.content
    for user in ("carol", "bob"):
        with as_user(server, user) as client:
            assert client.get("/v2/").status_code == 200
            for method, path, query in requests:
                response = client.request(
                    method, path, params=query, content=b"x" if method in ("PATCH", "PUT") else None
                )
                assert response.status_code == 403, (user, method, path, response.status_code, response.text)
                if method != "HEAD":
                    assert_error(response, 403, "DENIED")
                assert b"team-a secret" not in response.content
    with as_user(server, "alice") as alice:  # nothing was changed by the refused requests
        assert alice.get(f"/v2/team-a/app/blobs/{seeded['blob']}").content == b"team-a secret layer"
        assert alice.get("/v2/team-a/app/tags/list").json()["tags"] == ["v1"]
        assert alice.get(seeded["session"]).status_code == 204


def test_refused_before_100_continue(server: RegistryProcess, seeded: dict[str, str]) -> None:
    """A client waiting for `100 Continue` is refused before it sends its body, and never learns of the session."""
    for headers in (
        {},
        {"Authorization": "Basic " + base64.b64encode(b"carol:" + PASSWORDS["carol"].encode()).decode()},
    ):
        answer = raw_http(
            server.host,
            "PATCH",
            seeded["session"],
            {"Expect": "100-continue", "Content-Length": "1000", "Content-Type": "application/octet-stream", **headers},
            first_answer=True,  # the server goes on waiting for the body it refused, up to its lingering time
        )
        assert b"100 Continue" not in answer
        assert raw_status(answer) == (403 if headers else 401)


def test_anonymous_pull_by_rule_push_refused(server: RegistryProcess) -> None:
    repo = unique_repo("public/img")
    with as_user(server, "alice") as alice:
        manifest = image_manifest(alice, repo)
        push(alice, repo, manifest, "latest")
        blob = push_blob(alice, repo, b"public layer")
    with as_user(server, None) as anonymous:
        response = anonymous.get(f"/v2/{repo}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT})
        assert response.status_code == 200
        assert response.content == manifest.body
        assert anonymous.get(f"/v2/{repo}/blobs/{blob}").content == b"public layer"
        assert anonymous.get(f"/v2/{repo}/tags/list").json()["tags"] == ["latest"]
        assert_challenge(anonymous.post(f"/v2/{repo}/blobs/uploads/"))
        assert_challenge(anonymous.put(f"/v2/{repo}/manifests/other", content=manifest.body))
        assert_challenge(anonymous.delete(f"/v2/{repo}/manifests/{manifest.digest}"))
        assert_challenge(anonymous.get("/v2/team-a/app/tags/list"))
    with as_user(server, "carol") as carol:  # logging in never loses a right anonymous callers have
        assert carol.get(f"/v2/{repo}/blobs/{blob}").content == b"public layer"
        assert_error(carol.post(f"/v2/{repo}/blobs/uploads/"), 403, "DENIED")


def test_catalog_lists_only_what_the_caller_may_pull(server: RegistryProcess, seeded: dict[str, str]) -> None:
    public, shared, team_b = unique_repo("public/c"), unique_repo("shared/c"), unique_repo("team-b/c")
    with as_user(server, "alice") as alice:
        push_blob(alice, public, b"p")
        push_blob(alice, shared, b"s")
    with as_user(server, "bob") as bob:
        push_blob(bob, team_b, b"b")

    def catalog(client: httpx.Client, n: int) -> list[str]:
        names: list[str] = []
        url: str | None = f"/v2/_catalog?n={n}"
        while url:
            response = client.get(url)
            assert response.status_code == 200, response.text
            page = response.json()["repositories"]
            assert len(page) == n or "Link" not in response.headers  # a page is full unless it is the last
            names += page
            link = response.headers.get("Link")
            url = link.split(";")[0].strip("<>") if link else None
            if link:  # it leads on from the last name shown: never one the caller may not see
                assert f"last={quote(page[-1], safe='')}>" in link, (page, link)
        return names

    for n in (1000, 2):
        with as_user(server, None) as anonymous:
            names = catalog(anonymous, n)
            assert public in names
            assert all(name.startswith("public/") for name in names), names
        with as_user(server, "carol") as carol:
            names = catalog(carol, n)
            assert {public, shared} <= set(names)
            assert all(name.startswith(("public/", "shared/")) for name in names), names
        with as_user(server, "bob") as bob:
            names = catalog(bob, n)
            assert {public, shared, team_b} <= set(names)
            assert "team-a/app" not in names
        with as_user(server, "alice") as alice:
            names = catalog(alice, n)
            assert {"team-a/app", public, shared} <= set(names)
            assert team_b not in names


def test_mount_needs_pull_on_the_source(server: RegistryProcess, seeded: dict[str, str]) -> None:
    blob = seeded["blob"]
    target = unique_repo("team-b/mount")
    with as_user(server, "bob") as bob:
        response = bob.post(f"/v2/{target}/blobs/uploads/", params={"mount": blob, "from": "team-a/app"})
        assert response.status_code == 202, response.text  # an ordinary upload instead, as the spec asks
        assert bob.head(f"/v2/{target}/blobs/{blob}").status_code == 404
        assert bob.get(f"/v2/{target}/blobs/{blob}").status_code == 404
    with as_user(server, "alice") as alice:  # alice may pull team-a/app and push public/*: her mount works
        mounted = unique_repo("public/mount")
        response = alice.post(f"/v2/{mounted}/blobs/uploads/", params={"mount": blob, "from": "team-a/app"})
        assert response.status_code == 201, response.text
        assert alice.get(f"/v2/{mounted}/blobs/{blob}").content == b"team-a secret layer"


def test_upload_sessions_belong_to_who_began_them(server: RegistryProcess) -> None:
    repo = unique_repo("common/up")
    data = random_bytes(2048)
    with as_user(server, "alice") as alice, as_user(server, "bob") as bob:
        location = start_upload(alice, repo)
        assert alice.patch(location, content=data[:1024]).status_code == 202
        for method in ("GET", "HEAD", "PATCH", "PUT", "DELETE"):
            target = with_params(location, digest=sha256(data)) if method == "PUT" else location
            response = bob.request(method, target, content=b"evil" if method in ("PATCH", "PUT") else None)
            assert response.status_code == 404, (method, response.status_code, response.text)
            if method != "HEAD":
                assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
        status = alice.get(location)
        assert status.status_code == 204
        assert status.headers["Range"] == "0-1023"
        response = alice.put(with_params(location, digest=sha256(data)), content=data[1024:])
        assert response.status_code == 201, response.text
        assert bob.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
        # Bob's own session is his: alice cannot cancel it.
        his = start_upload(bob, repo)
        assert_error(alice.delete(his), 404, "BLOB_UPLOAD_UNKNOWN")
        assert bob.get(his).status_code == 204


@pytest.mark.parametrize(
    "path",
    [
        "/v2/team-b/../team-a/app/tags/list",
        "/v2/team-b/%2E%2E/team-a/app/tags/list",
        "/v2/team-b%2F..%2Fteam-a%2Fapp/tags/list",
        "/v2/team-b/x%2F..%2F..%2Fteam-a/app/tags/list",
        "/v2/TEAM-B/../team-a/app/tags/list",
        "/v2/team-b/./../team-a/app/tags/list",
        "/v2/team-b//team-a/app/tags/list",
        "/v2/team-b/%00/../team-a/app/tags/list",
    ],
)
def test_a_rule_cannot_be_escaped_by_the_name(server: RegistryProcess, seeded: dict[str, str], path: str) -> None:
    """bob may pull team-b/*: no spelling of a team-a name lets him read it. Raw paths: no client normalises them."""
    basic = base64.b64encode(f"bob:{PASSWORDS['bob']}".encode()).decode()
    answer = raw_http(server.host, "GET", path, {"Authorization": f"Basic {basic}"})
    assert raw_status(answer) in (400, 403, 404), answer[:300]
    assert b'"v1"' not in answer
    answer = raw_http(server.host, "GET", path)
    assert raw_status(answer) in (400, 401, 404), answer[:300]
    assert b'"v1"' not in answer


def test_upper_case_names_are_refused(server: RegistryProcess, seeded: dict[str, str]) -> None:
    with as_user(server, "alice") as alice:  # alice's rule on team-a/* must not stretch to another spelling
        assert_error(alice.get("/v2/TEAM-A/app/tags/list"), 400, "NAME_INVALID")
    with as_user(server, "bob") as bob:
        assert_error(bob.get("/v2/Team-A/app/tags/list"), 400, "NAME_INVALID")
        assert_error(bob.get("/v2/team-a%2Fapp/tags/list"), (400, 404), "NAME_INVALID", "NOT_FOUND")


def test_passwords_never_logged(server: RegistryProcess, seeded: dict[str, str]) -> None:
    with as_user(server, "carol", "a-wrong-password-xyz") as wrong:
        wrong.get("/v2/team-a/app/tags/list")
    log = server.log_path.read_text(errors="replace")
    for password in [*PASSWORDS.values(), "a-wrong-password-xyz"]:
        assert password not in log
        assert base64.b64encode(f"carol:{password}".encode()).decode() not in log
    assert "failed login" in log
    assert "'carol'" in log


def test_without_rules_every_authenticated_user_may_do_everything(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    server = make_registry(workers=1, extra_config=auth_config(htpasswd, rules=None))
    repo = unique_repo("any/where")
    with as_user(server, "carol") as carol, as_user(server, None) as anonymous:
        manifest = image_manifest(carol, repo)
        push(carol, repo, manifest, "t")
        assert carol.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
        assert_challenge(anonymous.get(f"/v2/{repo}/tags/list"))
        assert_challenge(anonymous.get("/v2/_catalog"))
        assert repo in carol.get("/v2/_catalog").json()["repositories"]


def test_htpasswd_changes_are_picked_up(make_registry: Callable[..., RegistryProcess], tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": PASSWORDS["alice"]})
    server = make_registry(workers=2, extra_config=auth_config(htpasswd, rules=None))
    with as_user(server, "alice") as alice, as_user(server, "bob") as bob:
        assert alice.get("/v2/").status_code == 200  # and now cached
        assert_challenge(bob.get("/v2/"))
        write_htpasswd(htpasswd, {"bob": PASSWORDS["bob"], "alice": "a-new-password"})
        time.sleep(1.5)
        for _ in range(4):  # both workers
            assert bob.get("/v2/").status_code == 200
            assert_challenge(alice.get("/v2/"))  # the cached old password no longer counts
        with as_user(server, "alice", "a-new-password") as renewed:
            assert renewed.get("/v2/").status_code == 200


def test_failed_logins_are_limited_per_address(make_registry: Callable[..., RegistryProcess], tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", PASSWORDS)
    server = make_registry(workers=1, extra_config=auth_config(htpasswd, rules=None))
    with as_user(server, "alice", "guess") as guesser, as_user(server, "alice") as alice:
        for _ in range(10):
            assert_challenge(guesser.get("/v2/"))
        for client in (guesser, alice):  # blocked now, even with the right password
            response = client.get("/v2/")
            assert_error(response, 429, "TOOMANYREQUESTS")
            assert 0 < int(response.headers["Retry-After"]) <= 60
    with as_user(server, None) as anonymous:  # a request without credentials is no login attempt
        assert_challenge(anonymous.get("/v2/"))


@pytest.mark.parametrize("path", ["/v2/", "/ui/"])
def test_a_burst_of_logins_gets_no_more_tries_than_a_series(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path, path: str
) -> None:
    """40 wrong passwords sent at once from one address, checked at bcrypt's cost 10, through the API or the web
    UI's Basic login: before, each was let in while the earlier ones were still being checked (a probe: 56 of 300
    answered 401 through the API, all 300 through the UI, where 10 should). Once the address is blocked, a user
    whose password was verified within the minute is refused too: a guesser would otherwise tell a remembered
    password from a wrong one, 200 among 429s."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(
        b"".join(
            user.encode() + b":" + bcrypt.hashpw(PASSWORDS[user].encode(), bcrypt.gensalt(10)) + b"\n"
            for user in ("alice", "bob")
        )
    )
    server = make_registry(workers=1, extra_config=auth_config(htpasswd, rules=None))
    with as_user(server, "alice") as alice:
        assert alice.get(path).status_code == 200

        def guess(number: int) -> int:
            with as_user(server, "bob", f"guess{number}") as guesser:
                return guesser.get(path).status_code

        with ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(guess, range(40)))
        assert statuses.count(401) == 10, statuses
        assert statuses.count(429) == 30, statuses
        with as_user(server, "bob") as bob:  # the address is blocked, even with the right password
            assert bob.get(path).status_code == 429
        refused = alice.get(path)
        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 60, "the client is told when it may try again"


def _start(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yml"
    base = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}, "http": {"addr": "127.0.0.1:1"}}
    path.write_text(yaml.safe_dump({**base, **config}))
    command = [sys.executable, "-m", "docker_registry.server", "serve", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"htpasswd": {"realm": "r", "path": "/nonexistent/htpasswd"}}, "auth.htpasswd.path"),
        ({"token": {"realm": "https://auth.example/token", "service": "s", "issuer": "i"}}, "auth.token: no key"),
        ({"silly": {"realm": "r"}}, "auth.silly"),
        ({"keystone": {}}, "auth.keystone"),
        ({}, "auth"),
    ],
)
def test_unusable_auth_refuses_to_start(tmp_path: Path, auth: dict[str, Any], message: str) -> None:
    result = _start(tmp_path, {"auth": auth})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_non_bcrypt_entries_and_unknown_groups_refuse_to_start(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    result = _start(tmp_path, {"auth": {"htpasswd": {"path": str(htpasswd)}}})
    assert result.returncode == 2, result.stderr
    assert "auth.htpasswd.path" in result.stderr
    assert "bcrypt" in result.stderr
    write_htpasswd(htpasswd, PASSWORDS)
    rules = [{"who": "group:nobody", "repositories": ["*"], "actions": ["pull"]}]
    result = _start(tmp_path, {"auth": {"htpasswd": {"path": str(htpasswd)}}, "access": rules})
    assert result.returncode == 2, result.stderr
    assert "group" in result.stderr
    assert "nobody" in result.stderr


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_copy_and_inspect_with_credentials(server: RegistryProcess, tmp_path: Path) -> None:
    from e2e_images import OciLayout

    layout = OciLayout(tmp_path / "layout")
    layout.add_image("v1", layer_count=1, layer_size=4096)
    dest = f"docker://{server.host}/team-a/skopeo:v1"
    common = ["--dest-tls-verify=false"]
    refused = subprocess.run(
        ["skopeo", "copy", *common, layout.ref("v1"), dest], capture_output=True, text=True, timeout=120, check=False
    )
    assert refused.returncode != 0
    copied = subprocess.run(
        ["skopeo", "copy", *common, "--dest-creds", f"alice:{PASSWORDS['alice']}", layout.ref("v1"), dest],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert copied.returncode == 0, copied.stderr
    inspect = ["skopeo", "inspect", "--tls-verify=false", "--raw"]
    shown = subprocess.run(
        [*inspect, "--creds", f"alice:{PASSWORDS['alice']}", dest],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"schemaVersion"' in shown.stdout
    anonymous = subprocess.run([*inspect, dest], capture_output=True, text=True, timeout=60, check=False)
    assert anonymous.returncode != 0
    other = subprocess.run(
        [*inspect, "--creds", f"carol:{PASSWORDS['carol']}", dest],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode != 0


def test_empty_basic_credentials_are_anonymous(server: RegistryProcess) -> None:
    """containers/image (podman, skopeo) sends `Basic Og==` (an empty user and password) when it has none."""
    repo = unique_repo("public/empty")
    with as_user(server, "alice") as alice:
        manifest = image_manifest(alice, repo)
        push(alice, repo, manifest, "latest")
    empty = {"Authorization": "Basic " + base64.b64encode(b":").decode()}
    with httpx.Client(base_url=server.url, timeout=30, headers=empty) as anonymous:
        response = anonymous.get(f"/v2/{repo}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT})
        assert response.content == manifest.body
        assert_challenge(anonymous.post(f"/v2/{repo}/blobs/uploads/"))
        assert_challenge(anonymous.get("/v2/team-a/app/tags/list"))
    with httpx.Client(base_url=server.url, timeout=30, auth=("", "not empty")) as nobody:
        assert_challenge(nobody.get(f"/v2/{repo}/tags/list"))


@pytest.mark.parametrize("header", ["Basic é".encode(), b"Basic \xff\xfe", b"Basic " + base64.b64encode(b"\xff:pw")])
def test_credentials_of_other_bytes_than_base64_ascii_are_challenged(server: RegistryProcess, header: bytes) -> None:
    """`Basic é` (not ASCII) made base64 raise a ValueError no one caught: a 500 on every route, before any login."""
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": header}) as client:
        assert_challenge(client.get("/v2/"))
        assert_challenge(client.get("/v2/team-a/app/tags/list"))


def test_a_password_longer_than_bcrypt_reads_logs_in(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path
) -> None:
    """bcrypt reads 72 bytes of a password: Apache's `htpasswd -B` and Distribution (Go) hash and check a longer one
    by them, but bcrypt 5.0 raised a ValueError for it, counted as a wrong password: a user with a long password
    (a generated one, say) was refused on every request and counted as a failed login, where Distribution let them
    in."""
    long_password = "robot-" + "x9" * 50  # 106 bytes
    hashed = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4)).decode()
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"robot:{hashed}\n")
    server = make_registry(workers=1, extra_config=auth_config(htpasswd, rules=None))
    with as_user(server, "robot", long_password) as robot:
        assert robot.get("/v2/").status_code == 200
    with as_user(server, "robot", long_password[:72]) as prefix:  # what bcrypt has always checked, as Go does
        assert prefix.get("/v2/").status_code == 200
    with as_user(server, "robot", long_password[:71]) as short:
        assert_challenge(short.get("/v2/"))
