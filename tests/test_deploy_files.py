"""The deployment files in `deploy/` (docs/deployment.md): parsed, their registry configurations validated by the
registry's own loader, and linted where a linter is at hand (`docker-compose config`, `nginx -t`). Not run here:
the compose stack itself (its images come from an image registry these machines cannot reach) and the Kubernetes
manifests against a cluster (`kubectl --dry-run` needs an API server); see docs/deployment.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from certificates import self_signed

from docker_registry.server.config.loading import load

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: apt-get install {package}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def _dockerfile_uid() -> int:
    match = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert match, "the Dockerfile creates its user with a fixed uid"
    return int(match.group(1))


def test_image_default_config_is_valid() -> None:
    config = load(str(DEPLOY / "config.yml"), environ={})
    assert config.storage.driver == "filesystem"
    assert config.storage.options["rootdirectory"] == "/var/lib/registry"
    assert config.http.addr == ":5000"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    return document


def test_compose_nodes_share_postgresql_and_s3() -> None:
    services = _compose()["services"]
    nodes = [s for name, s in services.items() if name.startswith("registry-")]
    assert len(nodes) == 2
    for node in nodes:
        environ = {k: str(v) for k, v in node["environment"].items()}
        config = load(None, environ=environ)  # the variables as the image's entry point reads them
        assert config.database.url is not None
        assert config.database.url.startswith("postgresql+psycopg://")
        assert config.database.url.split("@", 1)[1].startswith("postgres:5432/")
        assert config.storage.driver == "s3"
        assert config.storage.options["bucket"] == "registry"
        assert config.storage.options["regionendpoint"] == "http://minio:9000"
    assert {"postgres", "minio", "nginx"} <= services.keys()


def test_compose_file_passes_docker_compose_config() -> None:
    compose = _tool("docker-compose", "docker-compose")
    checked = subprocess.run(
        [compose, "-f", str(DEPLOY / "compose" / "compose.yaml"), "config", "--quiet"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    """`nginx -t` resolves upstream names and reads the certificates: both pointed at this machine's."""
    nginx = _tool("nginx", "nginx-light")
    conf = (DEPLOY / "compose" / "nginx.conf").read_text()
    conf = re.sub(r"registry-\d:5000", "127.0.0.1:5000", conf).replace("/etc/nginx/certs/", f"{tmp_path}/")
    self_signed(tmp_path, "tls", "registry.example.com")
    (tmp_path / "tls.pem").rename(tmp_path / "tls.crt")
    (tmp_path / "nginx.conf").write_text(conf)
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert "proxy_request_buffering off" in conf, "uploads must stream through the balancer"


def _kubernetes() -> dict[str, dict[str, Any]]:
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "registry.yaml").read_text()))
    for document in documents:
        assert {"apiVersion", "kind", "metadata"} <= document.keys(), document
    return {d["kind"]: d for d in documents}


def test_kubernetes_manifests_are_consistent() -> None:
    by_kind = _kubernetes()
    assert set(by_kind) == {"ConfigMap", "Deployment", "Service", "Ingress"}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_names = {p["name"] for p in container["ports"]}
    assert by_kind["Service"]["spec"]["ports"][0]["targetPort"] in port_names
    assert pod["securityContext"]["runAsUser"] == _dockerfile_uid()
    assert by_kind["Deployment"]["spec"]["replicas"] >= 2
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert f"{mount['mountPath']}/config.yml" == container["args"][0]
    labels = by_kind["Deployment"]["spec"]["selector"]["matchLabels"]
    assert by_kind["Service"]["spec"]["selector"] == labels


def test_kubernetes_registry_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(_kubernetes()["ConfigMap"]["data"]["config.yml"])
    config = load(str(path), environ={"REGISTRY_DATABASE_URL": "postgresql+psycopg://registry@postgres/registry"})
    assert config.storage.driver == "s3"
    assert config.storage.options["bucket"] == "my-registry"
    assert config.http.workers == 2
