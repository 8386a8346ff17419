"""Real clients against a registry with authentication (issue 8): `docker login` then push and pull with htpasswd
over TLS (the CA in `/etc/docker/certs.d/<host:port>/ca.crt`) and with the built-in token service; `podman login`
and `skopeo --creds` push and pull in token mode; an anonymous pull allowed by a rule while a push is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from certificates import self_signed
from cryptography.hazmat.primitives.asymmetric import rsa
from test_auth_htpasswd import write_htpasswd
from token_minting import pem_private

from e2e_daemons import Dockerd
from e2e_images import OciLayout
from e2e_tools import Cli, require, run, skopeo_copy
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="access rules and the token service are ours")

PASSWORDS = {"alice": "alice-e2e-secret", "bob": "bob-e2e-secret"}
RULES: list[dict[str, Any]] = [
    {"who": "alice", "repositories": ["*"], "actions": ["*"]},
    {"who": "anonymous", "repositories": ["public/*"], "actions": ["pull"]},
]
CERTS_D = Path("/etc/docker/certs.d")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-auth")


@pytest.fixture(scope="module")
def htpasswd(workdir: Path) -> Path:
    return write_htpasswd(workdir / "htpasswd", PASSWORDS)


@pytest.fixture(scope="module")
def tls_registry(workdir: Path, htpasswd: Path) -> Iterator[RegistryProcess]:
    """htpasswd over TLS, with an openssl-made certificate for 127.0.0.1 that docker trusts through certs.d."""
    cert, key = self_signed(workdir, "cert", "127.0.0.1", ip="127.0.0.1")
    config = {
        "http": {"tls": {"certificate": str(cert), "key": str(key)}},
        "auth": {"htpasswd": {"realm": "e2e", "path": str(htpasswd)}},
        "access": RULES,
    }
    server = RegistryProcess(workdir / "tls", extra_config=config, port=free_port(), tls=True)
    trusted = CERTS_D / server.host
    made_certs_d = not CERTS_D.exists()
    trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(cert, trusted / "ca.crt")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(trusted, ignore_errors=True)
        if made_certs_d and not any(CERTS_D.iterdir()):
            CERTS_D.rmdir()


@pytest.fixture(scope="module")
def token_registry(workdir: Path, htpasswd: Path) -> Iterator[RegistryProcess]:
    """Token authentication with the built-in token service, over plain HTTP (an insecure registry)."""
    key = workdir / "token.key"
    key.write_bytes(pem_private(rsa.generate_private_key(65537, 2048)))
    config = {
        "auth": {
            "token": {
                "service": "e2e-registry",
                "issuer": "e2e-issuer",
                "issue": {"key": str(key), "htpasswd": str(htpasswd)},
            }
        },
        "access": RULES,
    }
    server = RegistryProcess(workdir / "token", extra_config=config).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_dockerd(token_registry: RegistryProcess, tls_registry: RegistryProcess) -> Iterator[Dockerd]:
    """A daemon that treats only the token registry as insecure: the TLS one must pass certificate checks."""
    require("dockerd", "docker", "skopeo", root=True)
    daemon = Dockerd(insecure_registry=token_registry.host)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def docker(daemon: Dockerd, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["docker", *args], env=daemon.env, check=check)


def load(daemon: Dockerd, layout: OciLayout, tag: str, name: str, tmp_path: Path) -> None:
    archive = tmp_path / f"{tag}.docker.tar"
    skopeo_copy(layout.ref(tag), f"docker-archive:{archive}:{name}")
    docker(daemon, "load", "--input", str(archive))


def refused_for_auth(message: str) -> bool:
    """What docker says when the registry wants credentials or refuses the ones it got."""
    words = ("denied", "unauthorized", "no basic auth credentials", "authentication required")
    return any(word in message.lower() for word in words)


def login_push_pull(
    daemon: Dockerd, server: RegistryProcess, layout: OciLayout, tmp_path: Path, anonymous_pull: bool
) -> None:
    """alice logs in, pushes a private and a public image, pulls them back; logged out, the private one and any
    push are refused, and (token mode) the public one is pulled anonymously. docker sends nothing at all to a
    registry whose challenge is Basic while it has no credentials ("no basic auth credentials"), with Distribution
    as with us: anonymous docker pulls need token mode."""
    image = layout.add_image("v1")
    private, public = f"{server.host}/team/app:v1", f"{server.host}/public/app:v1"
    refused = docker(daemon, "push", private, check=False)  # not even loaded yet: nothing to push, no login
    assert refused.returncode != 0
    load(daemon, layout, "v1", private, tmp_path)
    docker(daemon, "tag", private, public)
    anonymous_push = docker(daemon, "push", public, check=False)
    assert anonymous_push.returncode != 0
    assert refused_for_auth(anonymous_push.stderr)
    login = docker(daemon, "login", server.host, "--username", "alice", "--password", PASSWORDS["alice"])
    assert "Login Succeeded" in login.stdout
    wrong = docker(daemon, "login", server.host, "--username", "alice", "--password", "wrong", check=False)
    assert wrong.returncode != 0
    docker(daemon, "login", server.host, "--username", "alice", "--password", PASSWORDS["alice"])
    docker(daemon, "push", private)
    docker(daemon, "push", public)
    docker(daemon, "rmi", private, public)
    docker(daemon, "pull", private)
    pulled = json.loads(docker(daemon, "image", "inspect", private).stdout)[0]
    assert pulled["Id"] == image.config.digest
    docker(daemon, "logout", server.host)
    docker(daemon, "rmi", private)
    # Refused; docker then falls back to plain HTTP for a 127.0.0.0/8 registry, so its last words may be about that.
    assert docker(daemon, "pull", private, check=False).returncode != 0
    assert docker(daemon, "image", "inspect", private, check=False).returncode != 0
    if anonymous_pull:
        docker(daemon, "pull", public)
        assert json.loads(docker(daemon, "image", "inspect", public).stdout)[0]["Id"] == image.config.digest
        docker(daemon, "rmi", public)


def test_docker_login_push_pull_htpasswd_over_tls(
    auth_dockerd: Dockerd, tls_registry: RegistryProcess, layout: OciLayout, tmp_path: Path
) -> None:
    """The port serves TLS only, so every success here went over TLS. docker itself skips certificate checks for
    127.0.0.0/8 (it counts loopback as an insecure registry); skopeo checks them: with the CA it is served, without
    it refused."""
    login_push_pull(auth_dockerd, tls_registry, layout, tmp_path, anonymous_pull=False)
    ref = f"docker://{tls_registry.host}/team/app:v1"
    creds = f"alice:{PASSWORDS['alice']}"
    trusted = run(["skopeo", "inspect", "--raw", "--cert-dir", str(CERTS_D / tls_registry.host), "--creds", creds, ref])
    assert json.loads(trusted.stdout)["schemaVersion"] == 2
    untrusted = run(["skopeo", "inspect", "--raw", "--cert-dir", str(tmp_path), "--creds", creds, ref], check=False)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr
    # Anonymous: the public image by the rule, nothing else (skopeo sends no credentials it does not have).
    public = f"docker://{tls_registry.host}/public/app:v1"
    cert_dir = str(CERTS_D / tls_registry.host)
    assert json.loads(run(["skopeo", "inspect", "--raw", "--cert-dir", cert_dir, public]).stdout)["schemaVersion"] == 2
    assert run(["skopeo", "inspect", "--raw", "--cert-dir", cert_dir, ref], check=False).returncode != 0


def test_docker_login_push_pull_with_the_token_service(
    auth_dockerd: Dockerd, token_registry: RegistryProcess, layout: OciLayout, tmp_path: Path
) -> None:
    login_push_pull(auth_dockerd, token_registry, layout, tmp_path, anonymous_pull=True)


@pytest.fixture
def podman(storage_args: list[str], token_registry: RegistryProcess, tmp_path: Path) -> Cli:
    require("podman", "skopeo")
    conf = tmp_path / "registries.conf"
    conf.write_text(f'unqualified-search-registries = []\n[[registry]]\nlocation = "{token_registry.host}"\n')
    runtime_dir = tmp_path / "xdg-runtime"
    runtime_dir.mkdir(mode=0o700)
    (tmp_path / "auth.json").write_text('{"auths": {}}')
    env = {
        "CONTAINERS_REGISTRIES_CONF": str(conf),
        "XDG_RUNTIME_DIR": str(runtime_dir),
        "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
    }
    base = ["podman", *storage_args, "--cgroup-manager=cgroupfs", "--events-backend=file"]

    def call(*args: str, check: bool = True) -> str:
        result = run([*base, *args], env=env, check=check)
        return result.stdout if check else str(result.returncode) + result.stderr

    return call


def test_podman_login_push_pull_with_the_token_service(
    podman: Cli, token_registry: RegistryProcess, layout: OciLayout
) -> None:
    image = layout.add_image("v1")
    name = f"{token_registry.host}/podman/app:v1"
    podman("pull", "--quiet", layout.ref("v1"))
    podman("tag", image.config.digest.removeprefix("sha256:"), name)
    refused = podman("push", "--tls-verify=false", name, check=False)
    assert not refused.startswith("0")
    podman("login", "--tls-verify=false", "--username", "alice", "--password", PASSWORDS["alice"], token_registry.host)
    podman("push", "--tls-verify=false", name)
    podman("rmi", "--all", "--force")
    podman("pull", "--tls-verify=false", name)
    assert json.loads(podman("image", "inspect", name))[0]["Id"] == image.config.digest.removeprefix("sha256:")
    podman("logout", token_registry.host)
    podman("rmi", "--all", "--force")
    assert not podman("pull", "--tls-verify=false", name, check=False).startswith("0")


def test_skopeo_creds_push_pull_with_the_token_service(
    token_registry: RegistryProcess, layout: OciLayout, tmp_path: Path
) -> None:
    require("skopeo")
    image = layout.add_image("v1")
    target = f"docker://{token_registry.host}/skopeo/app:v1"
    public = f"docker://{token_registry.host}/public/skopeo:v1"
    base = ["skopeo", "--insecure-policy", "copy"]
    creds = f"alice:{PASSWORDS['alice']}"
    anonymous = run([*base, "--dest-tls-verify=false", layout.ref("v1"), public], check=False)
    assert anonymous.returncode != 0
    run([*base, "--dest-tls-verify=false", "--dest-creds", creds, layout.ref("v1"), target])
    run([*base, "--dest-tls-verify=false", "--dest-creds", creds, layout.ref("v1"), public])
    pulled = tmp_path / "pulled"
    run([*base, "--src-tls-verify=false", "--src-creds", creds, target, f"dir:{pulled}"])
    config_blob = pulled / image.config.digest.removeprefix("sha256:")
    assert config_blob.read_bytes() == layout.read_blob(image.config.digest)
    denied = run([*base, "--src-tls-verify=false", target, f"dir:{tmp_path / 'denied'}"], check=False)
    assert denied.returncode != 0
    run([*base, "--src-tls-verify=false", public, f"dir:{tmp_path / 'public'}"])  # anonymous pull by rule


def test_skopeo_with_and_without_a_client_certificate(workdir: Path) -> None:
    """mTLS (`http.tls.clientcas`) with a real client: skopeo with a certificate from the listed CA is served; without
    one, or with one from another CA, the handshake fails."""
    require("openssl", "skopeo")
    folder = workdir / "mtls"
    folder.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "server.key", "-out", "server.pem")  # fmt: skip
    for ca in ("clients-ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={ca}",
                "-keyout", f"{ca}.key", "-out", f"{ca}.pem")  # fmt: skip
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=client of {ca}", "-keyout", f"{ca}-client.key",
                "-out", f"{ca}-client.csr")  # fmt: skip
        openssl("x509", "-req", "-in", f"{ca}-client.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-days", "1", "-out", f"{ca}-client.pem")  # fmt: skip
    tls = {"certificate": str(folder / "server.pem"), "key": str(folder / "server.key"),
           "clientcas": [str(folder / "clients-ca.pem")]}  # fmt: skip
    server = RegistryProcess(folder / "registry", extra_config={"http": {"tls": tls}}, tls=True)
    server.workdir.mkdir()
    config = server.workdir / "config.yml"
    config.write_text(yaml.safe_dump(server.config()))
    # The readiness probe has no client certificate: wait for the workers' log lines instead.
    with server.log_path.open("wb") as log:
        server.proc = subprocess.Popen(
            server.command(config), stdout=log, stderr=subprocess.STDOUT, cwd=server.workdir, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while server.log_path.read_text().count("ready (pid") < server.workers:
            assert server.proc.poll() is None, server.log_path.read_text()
            assert time.monotonic() < deadline, server.log_path.read_text()
            time.sleep(0.1)
        cert_dirs = {}
        for name, client in (("listed", "clients-ca"), ("other", "other-ca"), ("none", None)):
            cert_dir = folder / f"certs-{name}"
            cert_dir.mkdir()
            shutil.copy(folder / "server.pem", cert_dir / "ca.crt")
            if client is not None:
                shutil.copy(folder / f"{client}-client.pem", cert_dir / "client.cert")
                shutil.copy(folder / f"{client}-client.key", cert_dir / "client.key")
            cert_dirs[name] = str(cert_dir)
        target = f"docker://{server.host}/mtls/app:v1"
        layout = OciLayout(folder / "layout")
        layout.add_image("v1")
        copy = ["skopeo", "--insecure-policy", "copy", "--dest-cert-dir", cert_dirs["listed"], layout.ref("v1"), target]
        run(copy)
        listed = run(["skopeo", "inspect", "--raw", "--cert-dir", cert_dirs["listed"], target])
        assert json.loads(listed.stdout)["schemaVersion"] == 2
        for name in ("other", "none"):
            refused = run(["skopeo", "inspect", "--raw", "--cert-dir", cert_dirs[name], target], check=False)
            assert refused.returncode != 0, name
            assert "schemaVersion" not in refused.stdout
    finally:
        server.stop()
