"""Token authentication (Docker's token specification) against real server processes: the `Bearer` challenge with
the exact scope each route needs, every way a token can be wrong refused, the keys a token may name (an `x5c` chain
to `rootcertbundle`, a libtrust `kid`, a JWKS `kid`, the built-in service's key), and the built-in token service's
grants (Basic GET, OAuth2 password and refresh-token POSTs, anonymous, the intersection with the rules).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import token_minting as tm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from test_auth_htpasswd import write_htpasswd

from registry_api import (
    MANIFEST_ACCEPT,
    assert_error,
    image_manifest,
    push,
    push_blob,
    raw_http,
    raw_status,
    sha256,
    start_upload,
    unique_repo,
)
from registry_process import RegistryProcess, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the built-in token service is ours")

SERVICE, ISSUER = "test-registry", "test-issuer"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}
RULES: list[dict[str, Any]] = [
    {"who": "alice", "repositories": ["team-a/*", "public/*"], "actions": ["*"]},
    {"who": "bob", "repositories": ["team-b/*"], "actions": ["pull", "push"]},
    {"who": "authenticated", "repositories": ["team-a/*"], "actions": ["pull"]},
    {"who": "anonymous", "repositories": ["public/*"], "actions": ["pull"]},
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tm.TokenKeys:
    return tm.TokenKeys.make(tmp_path_factory.mktemp("token-keys"))


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_htpasswd(tmp_path_factory.mktemp("token-users") / "htpasswd", PASSWORDS)


def token_config(keys: tm.TokenKeys, htpasswd: Path, **issue: Any) -> dict[str, Any]:
    return {
        "storage": {"delete": {"enabled": True}},
        "auth": {
            "token": {
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(keys.bundle),
                "jwks": str(keys.jwks),
                "signingalgorithms": ["RS256", "ES256", "EdDSA"],
                "issue": {"key": str(keys.service_key_path), "htpasswd": str(htpasswd), "lifetime": "5m", **issue},
            }
        },
        "access": RULES,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: tm.TokenKeys, htpasswd: Path) -> Iterator[RegistryProcess]:
    process = RegistryProcess(tmp_path_factory.mktemp("token") / "registry", extra_config=token_config(keys, htpasswd))
    process.start()
    yield process
    process.stop()


def service_token(
    server: RegistryProcess, user: str | None, *scopes: str, password: str | None = None, source: str | None = None
) -> str:
    """A token from the built-in service for `user` (anonymous when None)."""
    auth = None if user is None else (user, password or PASSWORDS[user])
    transport = None if source is None else httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.url, timeout=30, transport=transport) as client:
        response = client.get("/auth/token", params={"service": SERVICE, "scope": list(scopes)}, auth=auth)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def bearer(server: RegistryProcess, token: str | None) -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=server.url, timeout=30, headers=headers)


def external(keys: tm.TokenKeys, access: list[dict[str, Any]], **changes: Any) -> str:
    """A token from an "external" service whose key chains to the rootcertbundle (x5c: leaf, intermediate)."""
    payload = {**tm.claims(ISSUER, SERVICE, access), **changes}
    return tm.sign(payload, keys.leaf_key, "RS256", x5c=tm.x5c(keys.leaf, keys.intermediate))


def challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', header))


def assert_bearer_challenge(
    response: httpx.Response, server: RegistryProcess, scope: str | None, error: str | None = None
) -> None:
    request = response.request
    assert response.status_code == 401, (request.method, request.url, response.status_code, response.text)
    expected = {"realm": f"{server.url}/auth/token", "service": SERVICE}
    if scope is not None:
        expected["scope"] = scope
    if error is not None:
        expected["error"] = error
    assert challenge(response) == expected
    if request.method != "HEAD":
        assert_error(response, 401, "UNAUTHORIZED")


@pytest.fixture(scope="module")
def seeded(server: RegistryProcess) -> dict[str, str]:
    token = service_token(server, "alice", "repository:team-a/app:pull,push,delete")
    with bearer(server, token) as alice:
        manifest = image_manifest(alice, "team-a/app")
        assert push(alice, "team-a/app", manifest, "v1").status_code == 201
        blob = push_blob(alice, "team-a/app", b"team-a secret layer")
        session = start_upload(alice, "team-a/app")
    return {"manifest": manifest.digest, "blob": blob, "session": httpx.URL(session).path}


def team_a_routes(seeded: dict[str, str]) -> list[tuple[str, str, dict[str, str], str]]:
    """Every route on team-a/app: (method, path, query, the scope the challenge must name)."""
    repo, session = "/v2/team-a/app", seeded["session"]
    pull, push_, delete = (f"repository:team-a/app:{actions}" for actions in ("pull", "pull,push", "delete"))
    return [
        ("GET", f"{repo}/manifests/v1", {}, pull),
        ("HEAD", f"{repo}/manifests/v1", {}, pull),
        ("PUT", f"{repo}/manifests/v2", {}, push_),
        ("DELETE", f"{repo}/manifests/{seeded['manifest']}", {}, delete),
        ("GET", f"{repo}/blobs/{seeded['blob']}", {}, pull),
        ("HEAD", f"{repo}/blobs/{seeded['blob']}", {}, pull),
        ("DELETE", f"{repo}/blobs/{seeded['blob']}", {}, delete),
        ("GET", f"{repo}/tags/list", {}, pull),
        ("GET", f"{repo}/referrers/{seeded['manifest']}", {}, pull),
        ("POST", f"{repo}/blobs/uploads/", {}, push_),
        ("POST", f"{repo}/blobs/uploads/", {"digest": sha256(b"x")}, push_),
        ("POST", f"{repo}/blobs/uploads/", {"mount": seeded["blob"], "from": "team-b/src"},
         push_ + " repository:team-b/src:pull"),
        ("GET", session, {}, push_),
        ("PATCH", session, {}, push_),
        ("PUT", session, {"digest": sha256(b"x")}, push_),
        ("DELETE", session, {}, push_),
        ("GET", "/v2/_catalog", {}, "registry:catalog:*"),
    ]  # fmt: skip


def test_every_route_challenges_without_a_token_with_a_bad_one_and_without_the_right(
    server: RegistryProcess, keys: tm.TokenKeys, seeded: dict[str, str]
) -> None:
    other = external(keys, [tm.repository("team-b/other", "pull", "push", "delete")])
    garbage = external(keys, [tm.repository("team-a/app", "pull", "push", "delete")])[:-8] + "AAAAAAAA"
    for method, path, query, scope in team_a_routes(seeded):
        body = b"x" if method in ("PATCH", "PUT") else None
        for token, error in ((None, None), (garbage, "invalid_token"), (other, "insufficient_scope")):
            with bearer(server, token) as client:
                response = client.request(method, path, params=query, content=body)
            assert_bearer_challenge(response, server, scope, error)
            assert b"team-a secret" not in response.content
            assert b"team-a/app" not in response.content or response.json()["errors"][0]["detail"]
    for token, error in ((None, None), (garbage, "invalid_token")):  # /v2/ needs a valid token, of any scope
        with bearer(server, token) as client:
            assert_bearer_challenge(client.get("/v2/"), server, None, error)
            assert_bearer_challenge(client.get("/nowhere"), server, None, error)
    with bearer(server, other) as client:
        assert client.get("/v2/").status_code == 200
    # Basic credentials are no token: the same challenge.
    with httpx.Client(base_url=server.url, auth=("alice", PASSWORDS["alice"])) as client:
        assert_bearer_challenge(client.get("/v2/team-a/app/tags/list"), server, "repository:team-a/app:pull")
    token = service_token(server, "alice", "repository:team-a/app:pull")
    with bearer(server, token) as alice:  # nothing was changed by the refused requests
        assert alice.get(f"/v2/team-a/app/blobs/{seeded['blob']}").content == b"team-a secret layer"
        assert alice.get("/v2/team-a/app/tags/list").json()["tags"] == ["v1"]


def test_refused_tokens(server: RegistryProcess, keys: tm.TokenKeys, seeded: dict[str, str]) -> None:
    access = [tm.repository("team-a/app", "pull")]
    now = int(time.time())
    good = external(keys, access)
    service_public = keys.service_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stranger = rsa.generate_private_key(65537, 2048)
    refused = {
        "expired": external(keys, access, exp=now - 600, iat=now - 900, nbf=now - 900),
        "not yet valid": external(keys, access, nbf=now + 600, iat=now),
        "wrong audience": external(keys, access, aud="another-registry"),
        "wrong issuer": external(keys, access, iss="someone-else"),
        "no audience": tm.sign({k: v for k, v in tm.claims(ISSUER, SERVICE, access).items() if k != "aud"},
                               keys.leaf_key, "RS256", x5c=tm.x5c(keys.leaf, keys.intermediate)),
        "unknown kid": tm.sign(tm.claims(ISSUER, SERVICE, access), stranger, "RS256", kid=tm.libtrust_kid(stranger)),
        "wrong key for a trusted kid": tm.sign(
            tm.claims(ISSUER, SERVICE, access), stranger, "RS256", kid=tm.libtrust_kid(keys.service_key)
        ),
        "x5c chain to no root": tm.sign(
            tm.claims(ISSUER, SERVICE, access), stranger, "RS256",
            x5c=tm.x5c(tm.certificate("rogue", stranger, ("rogue", stranger)))
        ),
        "embedded jwk of an untrusted key": tm.sign(
            tm.claims(ISSUER, SERVICE, access), stranger, "RS256",
            jwk=json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(stranger.public_key()))
        ),
        "alg none": tm.unsigned(tm.claims(ISSUER, SERVICE, access)),
        "HMAC with the public key": tm.hmac_with_public_key(
            tm.claims(ISSUER, SERVICE, access), service_public, tm.libtrust_kid(keys.service_key)
        ),
        "algorithm not configured": tm.sign(
            tm.claims(ISSUER, SERVICE, access), keys.service_key, "RS512", kid=tm.libtrust_kid(keys.service_key)
        ),
        "tampered payload": tm.tampered(good, sub="admin", access=[tm.repository("team-a/app", "pull", "push")]),
        "tampered expiry": tm.tampered(external(keys, access, exp=now - 600), exp=now + 600),
        "malformed": "not.a.token",
        "RS256 naming an EC key": tm.sign(
            tm.claims(ISSUER, SERVICE, access), keys.leaf_key, "RS256", kid=tm.libtrust_kid(keys.root_key)
        ),
        "ES256 naming an Ed25519 key": tm.sign(
            tm.claims(ISSUER, SERVICE, access), keys.root_key, "ES256", kid="jwks-key-1"
        ),
        "jwk of an unknown type": tm.sign(tm.claims(ISSUER, SERVICE, access), stranger, "RS256", jwk={"kty": "zzz"}),
        "jwk not an object": tm.sign(tm.claims(ISSUER, SERVICE, access), stranger, "RS256", jwk="key"),
        "x5c of garbage": tm.sign(tm.claims(ISSUER, SERVICE, access), stranger, "RS256", x5c=["!!", 1]),
        "access not a list": tm.sign(
            {**tm.claims(ISSUER, SERVICE, []), "access": "everything"}, keys.jwks_key, "EdDSA", kid="jwks-key-1"
        ),
        "refresh token": "",
    }  # fmt: skip
    with httpx.Client(base_url=server.url) as client:
        form = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"], "access_type": "offline"}
        refreshed = client.post("/auth/token", data={**form, "scope": "repository:team-a/app:pull"})
        refused["refresh token"] = refreshed.json()["refresh_token"]
    path = f"/v2/team-a/app/manifests/{seeded['manifest']}"
    for why, token in refused.items():
        with bearer(server, token) as client:
            response = client.get(path, headers={"Accept": MANIFEST_ACCEPT})
        assert response.status_code == 401, why
        assert challenge(response)["error"] == "invalid_token", why
        assert "schemaVersion" not in response.text, why
    with bearer(server, good) as client:
        assert client.get(path, headers={"Accept": MANIFEST_ACCEPT}).status_code == 200
    other_repo = external(keys, [tm.repository("team-a/other", "pull")])
    with bearer(server, other_repo) as client:
        response = client.get(path, headers={"Accept": MANIFEST_ACCEPT})
    assert_bearer_challenge(response, server, "repository:team-a/app:pull", "insufficient_scope")


def test_trusted_keys_by_chain_kid_and_jwks(
    server: RegistryProcess, keys: tm.TokenKeys, seeded: dict[str, str]
) -> None:
    access = [tm.repository("team-a/app", "pull")]
    payload = tm.claims(ISSUER, SERVICE, access)
    accepted = {
        "x5c leaf, intermediate": external(keys, access),
        "x5c root itself": tm.sign(payload, keys.root_key, "ES256", x5c=tm.x5c(keys.root)),
        "libtrust kid of a root": tm.sign(payload, keys.root_key, "ES256", kid=tm.libtrust_kid(keys.root_key)),
        "JWKS kid, EdDSA": tm.sign(payload, keys.jwks_key, "EdDSA", kid="jwks-key-1"),
        "a clock 30 s ahead": tm.sign({**payload, "nbf": payload["nbf"] + 30, "iat": payload["iat"] + 30},
                                      keys.jwks_key, "EdDSA", kid="jwks-key-1"),
    }  # fmt: skip
    for why, token in accepted.items():
        with bearer(server, token) as client:
            response = client.get("/v2/team-a/app/tags/list")
        assert response.status_code == 200, (why, response.text)
        assert response.json()["tags"] == ["v1"]


def test_a_wildcard_action_in_a_token_grants_every_action(server: RegistryProcess, keys: tm.TokenKeys) -> None:
    """Distribution reads `*` among a token's actions as every action: services that answer a `repository:x:*`
    scope (skopeo delete asks for it) with `*` work with us as with it; the wildcard covers its own resource only."""
    repo = unique_repo("team-a/star")
    with bearer(server, external(keys, [tm.repository(repo, "*")])) as client:
        manifest = image_manifest(client, repo)
        push(client, repo, manifest, "v1")
        assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
        assert client.delete(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 202
        other = client.get("/v2/team-a/app/tags/list")
        assert_bearer_challenge(other, server, "repository:team-a/app:pull", "insufficient_scope")


def test_an_access_entry_granting_nothing_as_null_leaves_the_others(
    server: RegistryProcess, keys: tm.TokenKeys, seeded: dict[str, str]
) -> None:
    """A token service in Go that grants nothing of a scope it was asked (a mount's source the user may not read)
    writes `"actions": null` (a nil slice) beside what it did grant, or leaves the member out: Distribution reads
    that as no actions, where we refused the whole token as invalid_token (the push itself failed)."""
    access = [
        tm.repository("team-a/app", "pull"),
        {"type": "repository", "name": "team-b/src", "actions": None},
        {"type": "repository", "name": "team-b/other"},
    ]
    with bearer(server, external(keys, access)) as client:
        assert client.get("/v2/team-a/app/tags/list").json()["tags"] == ["v1"]
        refused = client.get("/v2/team-b/src/tags/list")
        assert_bearer_challenge(refused, server, "repository:team-b/src:pull", "insufficient_scope")
    for malformed in ({"type": "repository", "name": "team-a/app", "actions": "pull"}, {"type": 1, "actions": []}):
        with bearer(server, external(keys, [tm.repository("team-a/app", "pull"), malformed])) as client:
            refused = client.get("/v2/team-a/app/tags/list")
            assert_bearer_challenge(refused, server, "repository:team-a/app:pull", "invalid_token")


def test_service_grants_the_intersection_of_scopes_and_rules(server: RegistryProcess) -> None:
    asked = {
        "scope": [
            "repository:team-a/app:pull,push,delete",
            "repository:team-b/app:pull repository:public/x:pull,push",
            "registry:catalog:*",
            "repository:team-a/../team-b/app:pull",
            "nonsense",
        ],
        "service": SERVICE,
    }
    with httpx.Client(base_url=server.url) as client:
        for user, expected in (
            ("alice", [("team-a/app", ["pull", "push", "delete"]), ("public/x", ["pull", "push"])]),
            ("bob", [("team-a/app", ["pull"]), ("team-b/app", ["pull"]), ("public/x", ["pull"])]),
            (None, [("public/x", ["pull"])]),
        ):
            auth = None if user is None else (user, PASSWORDS[user])
            response = client.get("/auth/token", params=asked, auth=auth)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["token"] == body["access_token"]
            assert body["expires_in"] == 300
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])
            assert response.headers["Cache-Control"] == "no-store"
            payload = jwt.decode(body["token"], options={"verify_signature": False})
            granted = [(a["name"], a["actions"]) for a in payload["access"] if a["type"] == "repository"]
            assert granted == expected, user
            catalog = [a for a in payload["access"] if a["type"] == "registry"]
            assert catalog == [{"type": "registry", "name": "catalog", "actions": ["*"]}]
            assert payload["sub"] == (user or "")
            assert payload["aud"] == SERVICE
            assert payload["iss"] == ISSUER
        wrong = client.get("/auth/token", params=asked, auth=("alice", "not her password"))
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"].startswith("Basic ")
        assert "token" not in wrong.json()
        assert client.get("/auth/token", params={"service": "elsewhere"}).status_code == 400


def test_oauth2_password_and_refresh_grants(server: RegistryProcess, htpasswd: Path, seeded: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url) as client:
        scope = "repository:team-b/app:pull,push repository:team-a/app:push"
        form = {"grant_type": "password", "username": "bob", "password": PASSWORDS["bob"], "service": SERVICE,
                "client_id": "docker", "scope": scope}  # fmt: skip
        plain = client.post("/auth/token", data=form)
        assert plain.status_code == 200, plain.text
        assert "refresh_token" not in plain.json()
        assert plain.json()["scope"] == "repository:team-b/app:pull,push"
        offline = client.post("/auth/token", data={**form, "access_type": "offline"}).json()
        refresh = offline["refresh_token"]
        again = client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh, "service": SERVICE, "client_id": "docker",
                  "scope": "repository:team-a/app:pull"},
        )  # fmt: skip
        assert again.status_code == 200, again.text
        assert again.json()["scope"] == "repository:team-a/app:pull"
        with bearer(server, again.json()["access_token"]) as bob:
            assert bob.get("/v2/team-a/app/tags/list").json()["tags"] == ["v1"]
        wrong = client.post("/auth/token", data={**form, "password": "guess"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_grant"
        bad_refresh = client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh[:-4]})
        assert bad_refresh.status_code == 401
        assert client.post("/auth/token", data={"grant_type": "client_credentials"}).status_code == 400
        # Basic GET with offline_token, as `docker login` asks: the refresh token works with POST.
        login = client.get("/auth/token", params={"service": SERVICE, "offline_token": "true", "client_id": "docker"},
                           auth=("alice", PASSWORDS["alice"]))  # fmt: skip
        alice_refresh = login.json()["refresh_token"]
        # A changed password ends the refresh tokens issued before it.
        original = htpasswd.read_text()
        try:
            write_htpasswd(htpasswd, {**PASSWORDS, "alice": "a new password"})
            time.sleep(1.2)  # the file is looked at once a second
            revoked = client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": alice_refresh})
            assert revoked.status_code == 401
        finally:
            htpasswd.write_text(original)
            time.sleep(1.2)


def test_failed_logins_on_the_token_service_are_limited(server: RegistryProcess) -> None:
    with httpx.Client(base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.5.9")) as client:
        statuses = [client.get("/auth/token", auth=("alice", f"guess{i}")).status_code for i in range(12)]
        assert statuses[:10] == [401] * 10
        assert statuses[10:] == [429, 429]
        blocked = client.get("/auth/token", auth=("alice", PASSWORDS["alice"]))
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0
        assert client.get("/auth/token").status_code == 200  # anonymous tokens need no login


def test_the_default_realm_is_where_the_client_reached_us_through_a_tls_proxy(server: RegistryProcess) -> None:
    """Behind a balancer that terminates TLS (deploy/compose/nginx.conf sends `X-Forwarded-Proto`), the challenge
    names the https address clients used: before, `http://`, so clients sent their passwords in the clear or
    failed to log in."""
    with httpx.Client(base_url=server.url) as client:
        proxied = {"X-Forwarded-Proto": "https", "Host": "registry.example.com"}
        assert challenge(client.get("/v2/", headers=proxied))["realm"] == "https://registry.example.com/auth/token"
        forwarded = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "registry.example.com:8443"}
        realm = challenge(client.get("/v2/", headers=forwarded))["realm"]
        assert realm == "https://registry.example.com:8443/auth/token"
        # anything but http or https is no scheme: the connection's is kept
        assert challenge(client.get("/v2/", headers={"X-Forwarded-Proto": "javascript"}))["realm"].startswith("http://")


def test_anonymous_pull_by_rule_push_refused(server: RegistryProcess) -> None:
    repo = unique_repo("public/img")
    with bearer(server, service_token(server, "alice", f"repository:{repo}:pull,push")) as alice:
        manifest = image_manifest(alice, repo)
        push(alice, repo, manifest, "latest")
    token = service_token(server, None, f"repository:{repo}:pull,push")
    with bearer(server, token) as anonymous:
        response = anonymous.get(f"/v2/{repo}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT})
        assert response.content == manifest.body
        refused = anonymous.post(f"/v2/{repo}/blobs/uploads/")
        assert_bearer_challenge(refused, server, f"repository:{repo}:pull,push", "insufficient_scope")


def test_mount_needs_pull_on_the_source(server: RegistryProcess, seeded: dict[str, str]) -> None:
    blob = seeded["blob"]
    query = {"mount": blob, "from": "team-a/app"}
    with bearer(server, service_token(server, "bob", "repository:team-b/m:pull,push")) as bob:
        response = bob.post("/v2/team-b/m/blobs/uploads/", params=query)
        assert_bearer_challenge(
            response, server, "repository:team-b/m:pull,push repository:team-a/app:pull", "insufficient_scope"
        )
    token = service_token(server, "bob", "repository:team-b/m:pull,push", "repository:team-a/app:pull")
    with bearer(server, token) as bob:
        response = bob.post("/v2/team-b/m/blobs/uploads/", params=query)
        assert response.status_code == 201, response.text
        assert bob.get(f"/v2/team-b/m/blobs/{blob}").content == b"team-a secret layer"


def test_catalog_follows_the_rules_and_sessions_their_owner(server: RegistryProcess, seeded: dict[str, str]) -> None:
    repo = unique_repo("team-b/cat")
    with bearer(server, service_token(server, "bob", f"repository:{repo}:pull,push")) as bob:
        push(bob, repo, image_manifest(bob, repo), "v1")
        bob_session = httpx.URL(start_upload(bob, repo)).path
    with bearer(server, service_token(server, None, "registry:catalog:*")) as anonymous:
        listed = anonymous.get("/v2/_catalog").json()["repositories"]
        assert repo not in listed
        assert "team-a/app" not in listed
    with bearer(server, service_token(server, "bob", "registry:catalog:*")) as bob:
        listed = bob.get("/v2/_catalog").json()["repositories"]
        assert repo in listed
        assert "team-a/app" in listed
    with bearer(server, service_token(server, "alice", "registry:catalog:*")) as alice:
        assert repo not in alice.get("/v2/_catalog").json()["repositories"]
    # Alice holds push on team-a/app but the session there is alice's own; bob's session is not hers to read.
    forged = service_token(server, "alice", f"repository:{repo}:pull,push")
    with bearer(server, forged) as alice:
        assert_bearer_challenge(alice.get(bob_session), server, f"repository:{repo}:pull,push", "insufficient_scope")
    with bearer(server, service_token(server, "bob", "repository:team-a/app:pull,push")) as bob:
        assert bob.get(seeded["session"]).status_code == 401  # bob may not push team-a at all


def test_upload_session_is_its_owners_with_tokens(server: RegistryProcess, keys: tm.TokenKeys) -> None:
    repo = "team-a/sessions"
    session = httpx.URL(start_upload(bearer(server, external(keys, [tm.repository(repo, "pull", "push")])), repo))
    other = external(keys, [tm.repository(repo, "pull", "push")], sub="mallory")
    with bearer(server, other) as mallory:
        assert_error(mallory.get(session.path), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(mallory.delete(session.path), 404, "BLOB_UPLOAD_UNKNOWN")
    with bearer(server, external(keys, [tm.repository(repo, "pull", "push")])) as tester:
        assert tester.get(session.path).status_code == 204


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ({"service": "s", "issuer": "i", "realm": "https://a/t", "rootcertbundle": "BUNDLE",
          "signingalgorithms": ["HS256"]}, "auth.token.signingalgorithms: 'HS256' is not accepted"),
        ({"service": "s", "issuer": "i", "realm": "https://a/t", "rootcertbundle": "BUNDLE",
          "signingalgorithms": ["none"]}, "auth.token.signingalgorithms: 'none' is not accepted"),
        ({"service": "s", "issuer": "i", "realm": "https://a/t"}, "auth.token: no key to check tokens with"),
        ({"service": "s", "issuer": "i", "rootcertbundle": "BUNDLE"}, "auth.token: realm is required"),
        ({"service": "s", "issuer": "i", "realm": "https://a/t", "rootcertbundle": "GARBAGE"},
         "auth.token.rootcertbundle: "),
        ({"service": "s", "issuer": "i", "issue": {"key": "GARBAGE"}}, "auth.token.issue.key: "),
        ({"service": "s", "issuer": "i", "issue": {"key": "KEY", "path": "/v2/token"}}, "auth.token.issue.path: "),
        ({"realm": "https://a/t", "issuer": "i", "rootcertbundle": "BUNDLE"}, "auth.token.service: "),
    ],
)  # fmt: skip
def test_unusable_token_settings_refuse_to_start(
    tmp_path: Path, keys: tm.TokenKeys, token: dict[str, Any], message: str
) -> None:
    from test_auth_htpasswd import _start

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN NOTHING-----\n")
    names = {"BUNDLE": str(keys.bundle), "GARBAGE": str(garbage), "KEY": str(keys.service_key_path)}

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return names.get(value, value) if isinstance(value, str) else value

    result = _start(tmp_path, {"auth": {"token": resolve(token)}})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr


def test_external_service_rules_are_refused(tmp_path: Path, keys: tm.TokenKeys) -> None:
    from test_auth_htpasswd import _start

    token = {"service": "s", "issuer": "i", "realm": "https://a/t", "rootcertbundle": str(keys.bundle)}
    result = _start(tmp_path, {"auth": {"token": token}, "access": RULES})
    assert result.returncode == 2
    assert "external token service" in result.stderr


def test_v1_is_off_with_tokens_and_asking_for_it_says_so(tmp_path: Path, keys: tm.TokenKeys, htpasswd: Path) -> None:
    """docker 1.x engines cannot get bearer tokens: v1 stays off, and a `v1.enabled: true` is not silently lost."""
    config = {**token_config(keys, htpasswd), "v1": {"enabled": True}}
    server = RegistryProcess(tmp_path / "registry", extra_config=config, workers=1).start()
    try:
        token = service_token(server, "alice", "repository:team-a/app:pull")
        with bearer(server, token) as alice:
            assert alice.get("/v1/_ping").status_code == 404
            assert alice.get("/v1/repositories/team-a/app/tags").status_code == 404
            assert alice.get("/v2/").status_code == 200
        assert "v1.enabled is ignored with auth.token" in server.log_path.read_text()
    finally:
        server.stop()


def test_ec_service_key_signs_es256(tmp_path: Path, keys: tm.TokenKeys, htpasswd: Path) -> None:
    key_path = tmp_path / "ec.key"
    key_path.write_bytes(tm.pem_private(ec.generate_private_key(ec.SECP256R1())))
    config = token_config(keys, htpasswd, key=str(key_path), path="/token")
    server = RegistryProcess(tmp_path / "registry", extra_config=config).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            body = client.get("/token", params={"scope": "repository:public/x:pull"}).json()
            assert jwt.get_unverified_header(body["token"])["alg"] == "ES256"
            response = client.get("/v2/public/x/tags/list")
            assert challenge(response)["realm"] == f"{server.url}/token"
            with bearer(server, body["token"]) as anonymous:
                assert_error(anonymous.get("/v2/public/x/tags/list"), 404, "NAME_UNKNOWN")
    finally:
        server.stop()


def test_token_service_refuses_malformed_requests(server: RegistryProcess) -> None:
    """Bad input is a clear 4xx in OAuth2's error format, never a 500 and never a token."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=server.url) as client:
        for method, options in (
            ("POST", {"content": b"grant_type=password&username=\xff\xfe", "headers": form}),
            ("POST", {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}),
            ("POST", {"content": b'{"grant_type": "password"}', "headers": {"Content-Type": "application/json"}}),
            ("POST", {"content": b"scope=" + b"x" * 100_000, "headers": form}),
            ("POST", {"data": {"grant_type": "password", "username": "alice"}}),
            ("POST", {"data": {"grant_type": "client_credentials"}}),
            ("GET", {"headers": {"Authorization": "Basic !!!"}}),
            ("GET", {"headers": {"Authorization": "Basic é".encode()}}),  # was a 500: b64decode's ValueError
            ("GET", {"headers": {"Authorization": "Bearer abc"}}),
            ("GET", {"params": {"service": "another-registry"}}),
            ("PUT", {}),
        ):
            response = client.request(method, "/auth/token", **options)  # type: ignore[arg-type]
            assert 400 <= response.status_code < 500, (method, options, response.status_code, response.text)
            assert "error" in response.json()
            assert "token" not in response.json()


def test_refused_before_100_continue(server: RegistryProcess, keys: tm.TokenKeys, seeded: dict[str, str]) -> None:
    """A client waiting for `100 Continue` is challenged before it sends its body, and never learns of the session."""
    other = external(keys, [tm.repository("team-b/other", "pull", "push")])
    for headers in ({}, {"Authorization": f"Bearer {other}"}):
        answer = raw_http(
            server.host,
            "PATCH",
            seeded["session"],
            {"Expect": "100-continue", "Content-Length": "1000", "Content-Type": "application/octet-stream", **headers},
            first_answer=True,  # the server goes on waiting for the body it refused, up to its lingering time
        )
        assert b"100 Continue" not in answer
        assert raw_status(answer) == 401
        assert b"Bearer realm=" in answer


def test_a_bearer_header_of_other_bytes_than_ascii_is_refused_as_a_bad_token(server: RegistryProcess) -> None:
    """PyJWT raised UnicodeEncodeError on the surrogates such bytes become: a 500 for any client, before any check."""
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": b"Bearer \xff\xfe"}) as client:
        assert_bearer_challenge(client.get("/v2/"), server, None, "invalid_token")


def test_the_service_refuses_a_token_too_long_for_its_registry(server: RegistryProcess) -> None:
    """200 scopes made a 20 KB token that every request then failed with ("the token is too long"): the service
    refuses to issue it instead, saying why."""
    scopes = [f"repository:team-a/r{n}:pull,push,delete" for n in range(200)]
    login = {"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"], "service": SERVICE}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/auth/token", data={**login, "scope": " ".join(scopes)})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_scope"
        assert "access_token" not in response.json()
        few = client.post("/auth/token", data={**login, "scope": " ".join(scopes[:5])})
        assert few.status_code == 200, few.text
