"""The `docker-registry` command as an operator runs it: real processes, real signals, real sockets on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from certificates import self_signed, signed_by
from cryptography import x509
from cryptography.x509.oid import NameOID

from docker_registry.server.config.schema import usable_cores
from prerequisites import EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL, require_module
from registry_api import byteranges, push_blob, random_bytes
from registry_process import RegistryProcess, free_port, implementation

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="tests of our own command line and processes")

SCRIPT = Path(sys.executable).with_name("docker-registry")
"""Our console script; a bare `docker-registry` on PATH may be CNCF Distribution's binary (/usr/bin)."""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any REGISTRY_* override the test runner may carry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "docker_registry.server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env or clean_env(),
    )


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ready_workers(server: RegistryProcess) -> dict[int, int]:
    """Worker index -> pid of its latest start, from the server's log."""
    return {int(i): int(pid) for i, pid in re.findall(r"worker (\d+) ready \(pid (\d+)\)", server.log_path.read_text())}


def two_workers(server: RegistryProcess) -> dict[int, int]:
    return wait_for(lambda: len(workers := ready_workers(server)) == 2 and workers, what="two workers")


def log_containing(server: RegistryProcess, needle: str) -> str:
    return wait_for(lambda: needle in (text := server.log_path.read_text()) and text, what=repr(needle))


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def port_is_free(port: int) -> bool:
    """Whether the server could bind the port: like asyncio's servers, the probe sets SO_REUSEADDR, so connections
    a previous run left in TIME_WAIT do not count as busy."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}
"""The `st` column of /proc/net/tcp (hexadecimal) as the kernel names it."""


def port_holders(port: int) -> str:
    """Which processes hold a local TCP port, from /proc, so a failure names the culprit (other users' processes
    may not be visible: then only the socket's state is)."""
    inodes: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes[fields[9]] = TCP_STATES.get(int(fields[3], 16), f"state {fields[3]}")
    if not inodes:
        return "no socket found in /proc/net"
    owners: list[str] = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                inode = target[len("socket:[") : -1] if target.startswith("socket:[") else None
                if inode in inodes:
                    cmdline = " ".join((fd_dir.parent / "cmdline").read_text(errors="replace").split("\0")).strip()
                    owners.append(f"pid {fd_dir.parent.name} ({inodes.pop(inode)}): {cmdline[:200]}")
    owners += [f"a socket in {state}, owner not visible" for state in inodes.values()]
    return "; ".join(owners)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryProcess]:
    started = RegistryProcess(tmp_path / "registry", workers=2).start()
    yield started
    started.stop()


# --- the command line ----------------------------------------------------------------------------------------------


def test_help_describes_every_subcommand() -> None:
    assert SCRIPT.exists(), f"console script missing: pip install -e . ({SCRIPT})"
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, env=clean_env())
    assert result.returncode == 0
    assert "serve" in result.stdout
    assert "run the registry server" in result.stdout
    assert "print the effective configuration as YAML" in result.stdout
    assert "REGISTRY_<SECTION>_<KEY>" in result.stdout
    serve_help = run_cli("serve", "--help")
    assert serve_help.returncode == 0
    assert "http.draintimeout" in serve_help.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"docker-registry \d+\.\d+\.\d+\S*\n", result.stdout)


def test_no_subcommand_prints_usage_and_fails() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage: docker-registry" in result.stderr


def test_config_prints_the_effective_configuration_with_env_overrides(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"http": {"addr": "127.0.0.1:5000", "secret": "hush"}, "redis": {"addr": "localhost:6379"}})
    )
    result = run_cli(
        "config",
        "config.yml",
        cwd=tmp_path,
        env=clean_env(REGISTRY_HTTP_ADDR=":6000", REGISTRY_HTTP_WORKERS="3", REGISTRY_STORAGE_DELETE_ENABLED="true"),
    )
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["http"]["addr"] == ":6000"
    assert effective["http"]["workers"] == 3
    assert effective["http"]["secret"] == "***"
    assert effective["storage"]["delete"]["enabled"] is True
    assert effective["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")
    assert "redis: not supported yet" in result.stderr
    # What `config` prints is itself a valid configuration file.
    (tmp_path / "effective.yml").write_text(result.stdout)
    assert run_cli("config", "effective.yml", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("command", ["serve", "config"])
@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("http:\n  workers: x\n", {}, "http.workers: expected a positive integer, got 'x'"),
        ("storage:\n  filesystem: {}\n  inmemory: {}\n", {}, "storage: exactly one storage driver"),
        ("log:\n  level: loud\n", {}, "log.level: expected one of error, warn, info, debug"),
        ("http: {addr: [\n", {}, "invalid YAML"),
        ("", {"REGISTRY_HTTP_ADDR": "no-port"}, "http.addr (from REGISTRY_HTTP_ADDR): expected host:port"),
    ],
)
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, command: str, content: str, env: dict[str, str], message: str
) -> None:
    (tmp_path / "config.yml").write_text(content)
    result = run_cli(command, "config.yml", cwd=tmp_path, env=clean_env(**env))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("serve", str(tmp_path / "nope.yml"))
    assert result.returncode == 2
    assert "nope.yml: cannot read the configuration file: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_storage_driver_exits_2(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text("storage:\n  nosuchdriver: {}\n")
    result = run_cli("serve", "config.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert "storage.nosuchdriver: no driver named 'nosuchdriver'" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_path_from_environment(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.yml").write_text("http:\n  addr: 127.0.0.1:7001\n")
    result = run_cli("config", cwd=tmp_path, env=clean_env(REGISTRY_CONFIGURATION_PATH=str(tmp_path / "elsewhere.yml")))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["http"]["addr"] == "127.0.0.1:7001"


# --- serving -------------------------------------------------------------------------------------------------------


def test_serve_without_a_file_uses_the_embedded_defaults(tmp_path: Path) -> None:
    if not port_is_free(5000):
        message = f"port 5000 on 127.0.0.1 is busy ({port_holders(5000)}); the default address cannot be tested"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docker_registry.server", "serve"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def answers() -> bool:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            try:
                return httpx.get("http://127.0.0.1:5000/v2/", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, 30, "the registry on 127.0.0.1:5000")
        assert (tmp_path / "data").is_dir()
        assert (tmp_path / "data" / "registry.db").is_file()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    text = (tmp_path / "registry.log").read_text()
    assert f"storage filesystem ({tmp_path / 'data'})" in text
    count = usable_cores()  # one per core the process may use (affinity, a cgroup CPU limit)
    assert f"listening on http://127.0.0.1:5000 with {count} worker{'s' if count > 1 else ''}," in text


def test_environment_overrides_the_listening_address(tmp_path: Path) -> None:
    """The file says one port, REGISTRY_HTTP_ADDR another: the server answers on the variable's."""
    unused = free_port()
    server = RegistryProcess(tmp_path, extra_config={"http": {"addr": f"127.0.0.1:{unused}"}})
    server.env = {"REGISTRY_HTTP_ADDR": server.host}
    server.start()
    try:
        assert httpx.get(f"{server.url}/v2/", timeout=5).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{unused}/v2/", timeout=5)
    finally:
        server.stop()


def test_start_up_line_and_access_log(server: RegistryProcess) -> None:
    assert httpx.get(f"{server.url}/v2/?probe=access-log", headers={"User-Agent": "probe/1.0"}).status_code == 200
    text = log_containing(server, "probe=access-log")
    assert f"listening on http://127.0.0.1:{server.port} with 2 workers, storage filesystem ({server.data_dir})" in text
    assert "database sqlite" in text
    # Combined Log Format plus the request time in seconds.
    assert re.search(
        r'aiohttp\.access: 127\.0\.0\.1 \[[^]]+\] "GET /v2/\?probe=access-log HTTP/1\.1" 200 \d+ "-" "probe/1\.0" '
        r"\d+\.\d+s",
        text,
    ), text


def test_a_malformed_request_is_one_log_line_not_a_traceback(server: RegistryProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.0 400 ")
    text = log_containing(server, "refused a malformed request: Invalid character in Content-Length")
    assert "Traceback" not in text
    assert " ERROR " not in text


def test_access_log_can_be_disabled(tmp_path: Path) -> None:
    server = RegistryProcess(tmp_path, workers=1, extra_config={"log": {"accesslog": {"disabled": True}}}).start()
    try:
        for _ in range(3):
            assert httpx.get(f"{server.url}/v2/").status_code == 200
    finally:
        server.stop()
    text = server.log_path.read_text()
    assert "listening on" in text
    assert "aiohttp.access" not in text


def test_several_workers_share_the_port(server: RegistryProcess) -> None:
    workers = two_workers(server)
    assert server.proc is not None
    for pid in workers.values():
        assert parent_pid(pid) == server.proc.pid

    # No keep-alive: a new connection every time, so the kernel balances them over the workers.
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, timeout=10, limits=no_keepalive) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: client.get(f"/v2/?n={i}").status_code, range(200)))
    assert statuses == [200] * 200

    def answered_by() -> set[int] | None:
        lines = re.findall(r"\[(\d+)\] aiohttp\.access: .*GET /v2/\?n=\d+ ", server.log_path.read_text())
        return {int(pid) for pid in lines} if len(lines) == 200 else None

    assert wait_for(answered_by, what="200 access log lines") == set(workers.values())


OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _empty_index(label: str) -> tuple[bytes, str]:
    body = f'{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"annotations":{{"l":"{label}"}}}}'.encode()
    return body, "sha256:" + hashlib.sha256(body).hexdigest()


def test_a_tag_moved_through_one_worker_is_read_at_once_through_the_other(server: RegistryProcess) -> None:
    """Each worker caches tag targets; a commit by the other worker must empty that cache before the next read.
    Every request on a new connection, so the kernel spreads them over both workers: the tag is moved by one
    request, then read back at once several times, and every answer must name the new target."""
    workers = two_workers(server)
    repo, rounds, reads = "cache/moving", 12, 10
    manifests = [_empty_index("a"), _empty_index("b")]
    url = f"/v2/{repo}/manifests/latest"
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    headers = {"Accept": OCI_INDEX}
    with httpx.Client(base_url=server.url, timeout=10, limits=no_keepalive) as client:
        body, digest = manifests[0]
        assert client.put(url, content=body, headers={"Content-Type": OCI_INDEX}).status_code == 201
        for _ in range(reads):  # both workers cache the first target
            assert client.get(url, headers=headers).headers["Docker-Content-Digest"] == digest
        for round_ in range(rounds):
            body, digest = manifests[(round_ + 1) % 2]
            moved = client.put(f"{url}?round={round_}", content=body, headers={"Content-Type": OCI_INDEX})
            assert moved.status_code == 201, moved.text
            answers = [client.get(f"{url}?read={round_}-{i}", headers=headers) for i in range(reads)]
            assert [(a.status_code, a.headers["Docker-Content-Digest"], a.content) for a in answers] == [
                (200, digest, body)
            ] * reads, f"round {round_}: a worker served the tag's previous target"

    def served_by() -> tuple[dict[int, int], dict[int, set[int]]] | None:
        lines = re.findall(
            rf'\[(\d+)\] aiohttp\.access: .*"(PUT|GET) {re.escape(url)}\?(?:round|read)=(\d+)',
            server.log_path.read_text(),
        )
        puts = {int(r): int(pid) for pid, method, r in lines if method == "PUT"}
        gets: dict[int, set[int]] = {}
        for pid, method, r in lines:
            if method == "GET":
                gets.setdefault(int(r), set()).add(int(pid))
        return (puts, gets) if len(lines) == rounds * (1 + reads) else None

    puts, gets = wait_for(served_by, what="the access log lines of every request")
    assert set(puts.values()) | set().union(*gets.values()) == set(workers.values()), "both workers served"
    crossed = [r for r in range(rounds) if gets[r] - {puts[r]}]
    assert len(crossed) >= rounds // 2, f"too few rounds read through the other worker: {crossed}"


def test_a_killed_worker_is_restarted(server: RegistryProcess) -> None:
    workers = two_workers(server)
    victim = workers[1]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> int | None:
        pid = ready_workers(server).get(1)
        return pid if pid != victim else None

    new_pid = wait_for(replaced, 30, "the replacement worker")
    assert server.proc is not None
    assert server.proc.poll() is None
    assert parent_pid(new_pid) == server.proc.pid
    assert re.search(
        rf"worker 1 \(pid {victim}\) was killed by SIGKILL after [\d.]+ s; restarting it", server.log_path.read_text()
    )
    with httpx.Client(base_url=server.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        statuses = [client.get("/v2/").status_code for _ in range(50)]
    assert statuses == [200] * 50


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path, workers: int) -> None:
    """A chunked upload streaming for ~2 s when SIGTERM arrives still completes (202), then the server exits 0."""
    server = RegistryProcess(tmp_path, workers=workers).start()
    assert server.proc is not None
    chunk = os.urandom(64 * 1024)
    pieces = 20
    data = chunk * pieces
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        started = httpx.post(f"{server.url}/v2/drain/test/blobs/uploads/", timeout=10)
        assert started.status_code == 202, started.text
        location = httpx.URL(server.url).join(started.headers["Location"])
        streaming = threading.Event()
        outcome: dict[str, object] = {}

        def body() -> Iterator[bytes]:
            for i in range(pieces):
                if i == 3:
                    streaming.set()
                time.sleep(0.1)
                yield chunk

        def upload() -> None:
            try:
                outcome["response"] = httpx.patch(
                    location, content=body(), headers={"Content-Type": "application/octet-stream"}, timeout=30
                )
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

        thread = threading.Thread(target=upload)
        thread.start()
        assert streaming.wait(10)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # Draining: no new connections are accepted, while the upload goes on.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/v2/", timeout=2)
        assert server.proc.poll() is None
        thread.join(30)
        assert "error" not in outcome, outcome
        response = outcome["response"]
        assert isinstance(response, httpx.Response)
        assert response.status_code == 202, response.text
        assert response.headers["Range"] == f"0-{len(data) - 1}"
        assert server.proc.wait(30) == 0
        # Nothing was lost: after a restart the upload can be completed and read back.
        proc_log = server.log_path.read_text()
        assert "stopped" in proc_log
        server.proc = None
        server.start()
        done = httpx.put(location.copy_merge_params({"digest": digest}), timeout=30)
        assert done.status_code == 201, done.text
        assert httpx.get(f"{server.url}/v2/drain/test/blobs/{digest}", timeout=30).content == data
    finally:
        server.stop()


def test_second_server_on_the_same_port_refuses_to_start(server: RegistryProcess, tmp_path: Path) -> None:
    """SO_REUSEPORT must not let a second registry silently share the port with the first."""
    config = tmp_path / "second.yml"
    config.write_text(yaml.safe_dump({"http": {"addr": server.host, "workers": 2}}))
    result = run_cli("serve", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on {server.host}: Address already in use" in result.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_tls(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "cert", "localhost", ip="127.0.0.1")
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                "http": {
                    "addr": f"127.0.0.1:{port}",
                    "workers": 1,
                    "tls": {"certificate": "cert.pem", "key": "cert.key"},
                },
            }
        )
    )
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docker_registry.server", "serve", str(config)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    try:

        def answers() -> httpx.Response | None:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            try:
                return httpx.get(f"https://127.0.0.1:{port}/v2/", verify=trust, timeout=2)
            except httpx.TransportError:
                return None

        assert wait_for(answers, 30, "the TLS registry").status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2)  # plain HTTP is not served on a TLS port
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_blob_ranges_out_of_order_over_tls(tmp_path: Path) -> None:
    """Over in-process TLS the kernel cannot send files: asyncio copies them through Python, from the file's
    position, which each window must set (the windows go out in the order asked, not the file's)."""
    cert, key = self_signed(tmp_path, "cert", "127.0.0.1", ip="127.0.0.1")
    config = {"http": {"tls": {"certificate": str(cert), "key": str(key)}}}
    server = RegistryProcess(tmp_path / "tls", extra_config=config, tls=True).start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=server.url, verify=trust, timeout=30) as client:
            data = random_bytes(300_000)
            url = f"/v2/tls/ranges/blobs/{push_blob(client, 'tls/ranges', data)}"
            several = client.get(url, headers={"Range": "bytes=200000-200099,0-49,-10"})
            assert byteranges(several) == [
                ("bytes 200000-200099/300000", data[200_000:200_100]),
                ("bytes 0-49/300000", data[:50]),
                ("bytes 299990-299999/300000", data[-10:]),
            ]
            assert client.get(url, headers={"Range": "bytes=100-199"}).content == data[100:200]
            assert client.get(url).content == data
    finally:
        server.stop()


def test_tls_client_certificates(tmp_path: Path) -> None:
    """http.tls.clientcas (mTLS): a client with a certificate from a listed CA is served; one without, or with a
    certificate from another CA, never gets past the handshake."""
    self_signed(tmp_path, "cert", "localhost", ip="127.0.0.1")
    for ca in ("ca", "other-ca"):
        self_signed(tmp_path, ca, ca)
    good = signed_by(tmp_path, "alice", "ca")
    stranger = signed_by(tmp_path, "mallory", "other-ca")
    port = free_port()
    tls = {"certificate": "cert.pem", "key": "cert.key", "clientcas": ["ca.pem"]}
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                "http": {"addr": f"127.0.0.1:{port}", "workers": 1, "tls": tls},
            }
        )
    )
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docker_registry.server", "serve", "config.yml"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def client(certificate: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        if certificate is not None:
            context.load_cert_chain(*certificate)
        return context

    try:

        def answers() -> httpx.Response | None:
            assert proc.poll() is None, (tmp_path / "registry.log").read_text()
            try:
                return httpx.get(f"https://127.0.0.1:{port}/v2/", verify=client(good), timeout=2)
            except httpx.TransportError:
                return None

        assert wait_for(answers, 30, "the mTLS registry").status_code == 200
        for certificate in (None, stranger):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"https://127.0.0.1:{port}/v2/", verify=client(certificate), timeout=5)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_bad_tls_certificate_exits_2(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {"http": {"addr": f"127.0.0.1:{free_port()}", "tls": {"certificate": "cert.pem", "key": "cert.pem"}}}
        )
    )
    result = run_cli("serve", "config.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert "http.tls: cannot load certificate" in result.stderr
    assert "Traceback" not in result.stderr


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_ctrl_c_to_the_process_group_stops_cleanly(server: RegistryProcess) -> None:
    """A terminal's Ctrl-C reaches master and workers alike; the master alone drains them, nothing restarts."""
    workers = two_workers(server)
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGINT)
    assert server.proc.wait(30) == 0
    assert all(gone(pid) for pid in workers.values())
    text = server.log_path.read_text()
    assert "shutting down" in text
    assert "restarting" not in text


def test_workers_stop_when_the_master_is_killed(server: RegistryProcess) -> None:
    workers = two_workers(server)
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    wait_for(lambda: all(gone(pid) for pid in workers.values()), 30, "orphaned workers to exit")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/", timeout=2)


def answers_at_once(server: RegistryProcess) -> bool:
    """A new connection is answered within two seconds (a connection the kernel had queued for a worker that was
    just killed may be reset: the client's retry goes to a live one)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            with httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0)) as client:
                return client.get(f"{server.url}/v2/").status_code == 200
        except httpx.TransportError:
            time.sleep(0.02)
    return False


def test_workers_killed_again_and_again_are_restarted_while_it_serves(server: RegistryProcess) -> None:
    """As an OOM killer might: a worker killed every second or so, 12 times. The master keeps restarting them and
    reports the crash loop; the registry answers throughout (the other worker serves while one restarts)."""
    proc = server.proc
    assert proc is not None
    killed: list[int] = []
    while len(killed) < 12:
        workers = wait_for(lambda: (w := set(ready_workers(server).values()) - set(killed)) and w, 30, "a new worker")
        time.sleep(1.1)  # a worker that lived a second died of something else than failing to start
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        assert answers_at_once(server), f"no answer after killing worker {victim}"
        assert proc.poll() is None, server.log_path.read_text()[-3000:]
    wait_for(lambda: len(set(ready_workers(server).values()) - set(killed)) == 2, 30, "two live workers")
    assert "crash loop: 6 worker deaths within 60 s" in server.log_path.read_text()
    assert proc.poll() is None


CRASHING_WORKER_LAUNCHER = (
    "import os, sys\n"
    "from docker_registry.server.runtime import worker\n"
    "def crash(config):\n"
    "    os._exit(1)  # dies as it starts, not through a start-up error the master would give up on\n"
    "worker.create_app = crash\n"
    "from docker_registry.server.cli import main\n"
    "sys.exit(main(['serve', 'config.yml']))\n"
)


def test_workers_that_die_as_they_start_are_restarted_with_backoff(tmp_path: Path) -> None:
    """A worker that cannot stay up is restarted after delays that double (0.1 s, 0.2 s, ... up to 10 s): the master
    neither spins nor gives up, and still stops cleanly on SIGTERM."""
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"http": {"addr": f"127.0.0.1:{free_port()}", "workers": 2}, "log": {"level": "debug"}})
    )
    log_path = tmp_path / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WORKER_LAUNCHER],
            cwd=tmp_path,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30  # about 3 s on an idle machine; a loaded one starts workers slower
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            text = log_path.read_text()
            delays = [
                float(d)
                for d in re.findall(
                    r"worker 0 \(pid \d+\) exited with status 1 after [\d.]+ s; restarting it in ([\d.]+) s", text
                )
            ]
            if len(delays) >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6], text[-3000:]
        assert len(started_workers(text)) <= 2 * 8, "restarts back off instead of spinning"
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unusable_data_directory_exits_1_with_the_reason(tmp_path: Path) -> None:
    """A directory that cannot be made under a file: found only when `serve` prepares it."""
    (tmp_path / "not-a-dir").write_text("a file where the data directory's parent should be\n")
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {
                "http": {"addr": f"127.0.0.1:{free_port()}"},
                "storage": {"filesystem": {"rootdirectory": "not-a-dir/data"}},
            }
        )
    )
    result = run_cli("serve", "config.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot prepare the data directory and database" in result.stderr
    assert "not-a-dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_unopenable_sqlite_database_exits_1_naming_the_file(tmp_path: Path) -> None:
    """sqlite3 says only "unable to open database file", and SQLAlchemy adds a line pointing to its web page: the
    operator was not told which file (here a directory stands where registry.db should be, as it would for a data
    directory this user cannot write)."""
    (tmp_path / "data" / "registry.db").mkdir(parents=True)
    (tmp_path / "config.yml").write_text(yaml.safe_dump({"http": {"addr": f"127.0.0.1:{free_port()}"}}))
    result = run_cli("serve", "config.yml", cwd=tmp_path)
    assert result.returncode == 1
    database = tmp_path / "data" / "registry.db"
    assert (
        f"cannot prepare the data directory and database: SQLite database {database}: unable to open" in result.stderr
    )
    assert "sqlalche.me" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "config"])
def test_rootdirectory_that_is_a_file_exits_2_naming_the_key(tmp_path: Path, command: str) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the data directory should be\n")
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {"http": {"addr": f"127.0.0.1:{free_port()}"}, "storage": {"filesystem": {"rootdirectory": "not-a-dir"}}}
        )
    )
    result = run_cli(command, "config.yml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert (
        f"configuration error: storage.filesystem.rootdirectory: {str(tmp_path / 'not-a-dir')!r} exists and is "
        "not a directory" in result.stderr
    )
    assert "cannot prepare" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("extra", "signals", "status"),
    [({"http": {"draintimeout": "1s"}}, 1, 0), ({}, 2, 1)],
    ids=["draintimeout", "second-signal"],
)
def test_slow_requests_do_not_hold_shutdown_forever(
    tmp_path: Path, extra: dict[str, object], signals: int, status: int
) -> None:
    """http.draintimeout bounds the wait; an impatient second SIGTERM stops at once (status 1: requests were cut)."""
    server = RegistryProcess(tmp_path, workers=2, extra_config=extra).start()
    assert server.proc is not None
    try:
        started = httpx.post(f"{server.url}/v2/drain/slow/blobs/uploads/", timeout=10)
        assert started.status_code == 202, started.text
        location = httpx.URL(server.url).join(started.headers["Location"])
        streaming = threading.Event()

        def body() -> Iterator[bytes]:
            for _ in range(200):  # 20 s, far beyond the drain timeout
                streaming.set()
                time.sleep(0.1)
                yield b"x" * 1024

        def upload() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.patch(location, content=body(), timeout=30)

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        assert streaming.wait(10)
        time.sleep(0.3)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        if signals == 2:
            log_containing(server, "shutting down")
            server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(15) == status
        assert time.monotonic() - signalled < 10
    finally:
        server.stop()


def test_master_with_another_thread_spawns_its_workers(tmp_path: Path) -> None:
    """Forking a multi-threaded master is unsafe, so then the workers are spawned; they serve all the same."""
    port = free_port()
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"http": {"addr": f"127.0.0.1:{port}", "workers": 2}, "log": {"level": "debug"}})
    )
    launcher = (
        "import sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
        "from docker_registry.server.cli import main\n"
        "sys.exit(main(['serve', 'config.yml']))\n"
    )
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], cwd=tmp_path, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        text = wait_for(
            lambda: len(re.findall(r"worker \d ready", t := (tmp_path / "registry.log").read_text())) == 2 and t,
            60,
            "two spawned workers",
        )
        assert len(re.findall(r"worker \d started \(pid \d+, spawn\)", text)) == 2
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            assert [client.get(f"http://127.0.0.1:{port}/v2/").status_code for _ in range(20)] == [200] * 20
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_inmemory_storage_keeps_no_metadata_on_disk(tmp_path: Path) -> None:
    """Blobs in memory die with the process, and so must the tags and manifests that name them."""
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump({"version": 0.1, "storage": {"inmemory": {}}, "http": {"addr": f"127.0.0.1:{port}"}})
    )
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "docker_registry.server", "serve", str(config)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def answers() -> bool:
            assert proc.poll() is None
            try:
                return httpx.get(f"{url}/v2/", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, 30, "the in-memory registry")
        return proc

    blob = b"kept only in memory"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    proc = start()
    try:
        pushed = httpx.post(f"{url}/v2/mem/blobs/uploads/?digest={digest}", content=blob)
        assert pushed.status_code == 201
        assert httpx.get(f"{url}/v2/mem/blobs/{digest}").content == blob
        assert httpx.get(f"{url}/v2/_catalog").json()["repositories"] == ["mem"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert not (tmp_path / "data").exists()
    proc = start()
    try:
        assert httpx.get(f"{url}/v2/_catalog").json()["repositories"] == []
        assert httpx.head(f"{url}/v2/mem/blobs/{digest}").status_code == 404
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def started_workers(log_text: str) -> list[int]:
    """Pids of the workers the master started, from its debug log."""
    return [int(pid) for pid in re.findall(r"worker \d+ started \(pid (\d+), \w+\)", log_text)]


SLOW_WORKER_LAUNCHER = (
    "import sys, time\n"
    "from docker_registry.server.runtime import worker\n"
    "build = worker.create_app\n"
    "def slow_create_app(config):\n"
    "    time.sleep(30)  # a worker still starting up, say opening a slow database\n"
    "    return build(config)\n"
    "worker.create_app = slow_create_app\n"
    "from docker_registry.server.cli import main\n"
    "sys.exit(main(['serve', 'config.yml']))\n"
)


@pytest.mark.parametrize("launcher", ["slow-workers", "as-is"])
def test_sigterm_while_workers_start_up_stops_at_once(tmp_path: Path, launcher: str) -> None:
    """SIGTERM to the master before its workers are ready: every worker is told, the master exits 0 at once."""
    port = free_port()
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump({"http": {"addr": f"127.0.0.1:{port}", "workers": 2}, "log": {"level": "debug"}})
    )
    if launcher == "slow-workers":
        command = ["-c", SLOW_WORKER_LAUNCHER]
    else:
        command = ["-m", "docker_registry.server", "serve", "config.yml"]
    log_path = tmp_path / "registry.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *command], cwd=tmp_path, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while len(started_workers(log_path.read_text())) < 2:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.002)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, log_path.read_text()
        assert time.monotonic() - signalled < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    pids = started_workers(text)
    wait_for(lambda: all(gone(pid) for pid in pids), 5, "the workers to exit")
    assert "killing them" not in text
    assert "restarting" not in text
    if launcher == "slow-workers":
        assert " ready " not in text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_driver_option_exits_2_naming_the_key(tmp_path: Path, workers: int) -> None:
    require_module(EXAMPLE_DRIVER, EXAMPLE_DRIVER_INSTALL)  # without it the driver name itself is the error
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {
                "http": {"addr": f"127.0.0.1:{free_port()}", "workers": workers},
                "storage": {"example": {"rootdirectory": "example-data", "redirect_base": "ftp://x"}},
            }
        )
    )
    result = run_cli("serve", "config.yml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert (
        "configuration error: storage.example.redirect_base: redirect_base must be an http:// or https:// URL, "
        "not 'ftp://x'" in result.stderr
    )
    assert "cannot start serving" not in result.stderr
    assert "Traceback" not in result.stderr


def test_files_get_safe_modes_whatever_the_callers_umask(tmp_path: Path) -> None:
    """Started from a shell with umask 000, blobs and directories still are not world-writable."""
    port = free_port()
    (tmp_path / "config.yml").write_text(yaml.safe_dump({"http": {"addr": f"127.0.0.1:{port}", "workers": 1}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "docker_registry.server", "serve", "config.yml"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        umask=0,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        blob = b"modes"
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        response = wait_for(lambda: _post_blob(url, digest, blob), 30, "the registry to answer")
        assert response.status_code == 201
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    data = tmp_path / "data"
    modes = {path: path.stat().st_mode & 0o777 for path in [data, *data.rglob("*")]}
    assert modes, "nothing was written"
    assert not [path for path, mode in modes.items() if mode & 0o002], f"world-writable: {modes}"
    assert (data / "registry.db").stat().st_mode & 0o777 == 0o644


def _post_blob(url: str, digest: str, blob: bytes) -> httpx.Response | None:
    try:
        return httpx.post(f"{url}/v2/modes/blobs/uploads/", params={"digest": digest}, content=blob, timeout=5)
    except httpx.TransportError:
        return None


def test_config_output_cut_short_by_its_reader_is_no_error(tmp_path: Path) -> None:
    """`docker-registry config | head -2`: the reader stops early (here: at once); no traceback, status 0."""
    result = subprocess.run(
        f"{shlex.quote(sys.executable)} -m docker_registry.server config | true; echo ${{PIPESTATUS[0]}} >&2",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert result.stderr.strip().splitlines()[-1] == "0", result.stderr
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


def _served_name(port: int) -> str:
    """The common name of the certificate a new connection is served."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as connection,
    ):
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    common_name = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
    return str(common_name.value)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_rereads_the_certificate(tmp_path: Path, workers: int) -> None:
    """SIGHUP to the registry: every worker serves the new certificate to new connections; a certificate that
    cannot be loaded is logged and the previous one stays in use."""
    for name in ("first", "second"):
        self_signed(tmp_path, name, name)
    shutil.copy(tmp_path / "first.pem", tmp_path / "cert.pem")
    shutil.copy(tmp_path / "first.key", tmp_path / "key.pem")
    port = free_port()
    tls = {"certificate": "cert.pem", "key": "key.pem"}
    (tmp_path / "config.yml").write_text(
        yaml.safe_dump(
            {
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                "http": {"addr": f"127.0.0.1:{port}", "workers": workers, "tls": tls},
            }
        )
    )
    log_path = tmp_path / "registry.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "docker_registry.server", "serve", "config.yml"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def names() -> set[str] | None:
        """The names served to 8 new connections (spread over the workers by the kernel)."""
        assert proc.poll() is None, log_path.read_text()
        try:
            return {_served_name(port) for _ in range(8)}
        except OSError:
            return None

    try:
        assert wait_for(lambda: log_path.read_text().count("ready (pid") >= workers or None, 30, "the workers")
        assert wait_for(names, 30, "the TLS registry") == {"first"}
        shutil.copy(tmp_path / "second.pem", tmp_path / "cert.pem")
        shutil.copy(tmp_path / "second.key", tmp_path / "key.pem")
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_for(lambda: names() == {"second"} or None, 30, "the new certificate")
        assert wait_for(lambda: log_path.read_text().count("cert.pem re-read") >= workers or None, 10, "")
        (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
        os.kill(proc.pid, signal.SIGHUP)
        kept = "SIGHUP: keeping the certificate in use"
        assert wait_for(lambda: log_path.read_text().count(kept) >= workers or None, 30, "the refusal")
        assert names() == {"second"}
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
