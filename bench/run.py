"""Benchmark docker-registry 3 against CNCF Distribution on this machine: `python3 bench/run.py [--quick]`.

Both servers run at once, each in its own temp dir on loopback, and every figure is measured in interleaved
rounds (ours, Distribution, ours, Distribution, ...) so background noise hits both alike; the report gives the
median per server. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import images
import loadgen
import rawhttp
import servers
import smallwrites
import tests_path  # noqa: F401  (tests/ on sys.path)
import token_minting
import transfer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from idle import IdleConnections
from postgres_cluster import PostgresCluster
from report import (
    Figure,
    Target,
    markdown_table,
    ours_at_least,
    ours_below,
    ratio_at_least,
    ratio_at_most,
    speed_at_least,
    text_table,
)
from servers import RssSummary, RssWatch, Server

MiB = 1024 * 1024
RESULTS_DIR = Path(__file__).with_name("results")


@dataclass
class Settings:
    rounds: int
    blob_rounds: int
    load_seconds: int
    warmup_seconds: int
    connections: int
    blob_size: int
    chunk_size: int
    layer_sizes: list[int]
    small_pushes: int
    """skopeo pushes of the small image per server and round, one at a time"""
    small_blobs: int
    """raw small blobs per server and round"""
    metadata_items: int
    """new repositories (mount + manifest PUT), and tag PUTs, per server and round"""
    small_layers: int = 10
    small_layer_size: int = 20_000
    batch: int = 12
    """skopeo pushes of the small image at once"""
    batch_rounds: int = 6
    """rounds of those batches: one batch takes about a second and its wall time moves by a third from one to the
    next, so a median needs more of them than the other figures"""
    blob_connections: int = 16
    metadata_connections: int = 8
    idle_connections: int = 5000
    """held open beside the manifest GET load in its second variant (issue 7)"""

    @classmethod
    def full(cls) -> Settings:
        return cls(3, 5, 10, 2, 64, 512 * MiB, 8 * MiB, [20 * MiB, 35 * MiB, 50 * MiB], 3, 1000, 2000)

    @classmethod
    def quick(cls) -> Settings:
        return cls(2, 2, 3, 1, 64, 64 * MiB, 8 * MiB, [2 * MiB, 3 * MiB, 4 * MiB], 2, 300, 500, batch_rounds=2)


class Bench:
    """One run: the two servers, the settings, and every figure, reference and CPU total measured so far."""

    def __init__(self, settings: Settings, ours: Server, dist: Server, tmp: Path) -> None:
        self.s = settings
        self.ours, self.dist = ours, dist
        self.pair = [ours, dist]
        self.tmp = tmp
        self.figures: dict[str, Figure] = {}
        self.reference: dict[str, float] = {}
        self.rss_phases: list[tuple[str, dict[str, RssSummary]]] = []
        self.cpu: dict[str, dict[str, float]] = {}
        self.database_cpu: dict[str, float] = {}
        """Per phase, the part of our CPU that our PostgreSQL cluster used (`--database postgres`)."""
        self.work: dict[str, dict[str, float]] = {}
        self.failures: list[str] = []
        self.blob = tmp / "blob.bin"
        self.ours_workers_text = ""
        self.load_before = os.getloadavg()[0]
        self.source = source_version()

    def figure(self, key: str, name: str, unit: str, **kwargs: object) -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(name, unit, **kwargs)  # type: ignore[arg-type]
        return self.figures[key]

    def interleaved(
        self,
        rounds: int,
        measure: Callable[[Server, int], float],
        phase: str,
        among: list[Server] | None = None,
        before_round: Callable[[], None] | None = None,
        alternate: bool = True,
    ) -> None:
        """A, B, B, A, A, B, ...: each round runs every server once, in reverse order every other round (unless
        `alternate` is off, for a measure that needs its servers in order), so neither server always runs right
        after the other's writes. `measure` returns the work it did (requests or bytes), added up per phase with
        the server CPU it cost: on a shared machine, CPU per unit of work is the figure that least depends on what
        else runs."""
        for r in range(rounds):
            if before_round is not None:
                before_round()
            order = among or self.pair
            for server in order[::-1] if alternate and r % 2 else order:
                before = cpu_seconds(server)
                database_before = server.companion_cpu() if server.companion_cpu is not None else 0.0
                work = measure(server, r)
                used = cpu_seconds(server) - before
                self.cpu.setdefault(phase, {}).setdefault(server.name, 0.0)
                self.cpu[phase][server.name] += used
                if server.companion_cpu is not None:
                    database_used = server.companion_cpu() - database_before
                    self.database_cpu[phase] = self.database_cpu.get(phase, 0.0) + database_used
                self.work.setdefault(phase, {}).setdefault(server.name, 0.0)
                self.work[phase][server.name] += work
                log(f"  {phase} round {r + 1}/{rounds} {server.name} done (server CPU {used:.1f}s)")

    # --- small requests -------------------------------------------------------------------------------------------
    def small_requests(self, rss: RssWatch) -> None:
        s = self.s
        layer = {}
        for server in self.pair:
            layer[server.name], _ = images.seed_small_image(server.url, "bench/small", "latest")
        manifest_rps = self.figure(
            "manifest_rps", f"manifest GET by tag, {s.connections} conns", "req/s", target=ratio_at_least(5)
        )
        manifest_p99 = self.figure("manifest_p99", "manifest GET p99", "ms", higher_is_better=False, digits=1)
        head_rps = self.figure("head_rps", f"blob HEAD, {s.connections} conns", "req/s", target=ratio_at_least(5))
        head_p99 = self.figure("head_p99", "blob HEAD p99", "ms", higher_is_better=False, digits=1)

        def manifest_url(server: Server) -> str:
            return f"{server.url}/v2/bench/small/manifests/latest"

        def blob_url(server: Server) -> str:
            return f"{server.url}/v2/bench/small/blobs/{layer[server.name]}"

        log("manifest GET (wrk)")
        for server in self.pair:
            loadgen.wrk_get(manifest_url(server), s.connections, s.warmup_seconds, loadgen.MANIFEST_ACCEPT)

        def get_manifest(server: Server, _: int) -> float:
            r = loadgen.wrk_get(manifest_url(server), s.connections, s.load_seconds, loadgen.MANIFEST_ACCEPT)
            self.check(r, f"manifest GET {server.name}")
            manifest_rps.add(server.name, r.rps)
            manifest_p99.add(server.name, r.p99_ms)
            return r.requests

        self.interleaved(s.rounds, get_manifest, "manifest GET")

        log(f"manifest GET beside {s.idle_connections} idle connections (wrk)")
        idle_rps = self.figure(
            "manifest_idle_rps",
            f"manifest GET by tag, {s.connections} conns, beside {s.idle_connections:,} idle connections",
            "req/s",
            target=ratio_at_least(5),
        )
        idle_p99 = self.figure(
            "manifest_idle_p99", "manifest GET p99 beside idle connections", "ms", higher_is_better=False, digits=1
        )

        def get_manifest_beside_idle(server: Server, _: int) -> float:
            with IdleConnections("127.0.0.1", server.port, s.idle_connections) as idle:
                r = loadgen.wrk_get(manifest_url(server), s.connections, s.load_seconds, loadgen.MANIFEST_ACCEPT)
                kept = idle.still_open()
            self.check(r, f"manifest GET beside idle connections {server.name}")
            if kept < s.idle_connections:
                self.failures.append(f"{server.name} closed {s.idle_connections - kept} idle connections mid-load")
            idle_rps.add(server.name, r.rps)
            idle_p99.add(server.name, r.p99_ms)
            return r.requests

        self.interleaved(s.rounds, get_manifest_beside_idle, "manifest GET beside idle connections")

        log("blob HEAD (hey)")
        for server in self.pair:
            loadgen.hey(blob_url(server), s.connections, s.warmup_seconds)

        def head_blob(server: Server, _: int) -> float:
            r = loadgen.hey(blob_url(server), s.connections, s.load_seconds)
            self.check(r, f"blob HEAD {server.name}")
            head_rps.add(server.name, r.rps)
            head_p99.add(server.name, r.p99_ms)
            return r.requests

        self.interleaved(s.rounds, head_blob, "blob HEAD")
        self.rss_phase(rss, "after small requests")

    def authenticated(self) -> None:
        """Manifest GET with Basic credentials checked against the same bcrypt htpasswd file by both servers (issue
        8): each is restarted with `auth.htpasswd` on the data it has, measured, and restarted without it again."""
        htpasswd = self.tmp / "htpasswd"
        htpasswd.write_text("bench:" + bcrypt.hashpw(b"bench-secret", bcrypt.gensalt(rounds=10)).decode() + "\n")
        credentials = "Authorization: Basic " + base64.b64encode(b"bench:bench-secret").decode()
        auth = {"htpasswd": {"realm": "bench", "path": str(htpasswd)}}
        self.manifest_get_with_auth("auth", "htpasswd", auth, credentials)

    def bearer_token(self) -> None:
        """Manifest GET with a bearer token (issue 8): both servers restarted with `auth.token` on one
        rootcertbundle (a self-signed EC P-256 certificate made here), the token minted by the bench with that key,
        named by its libtrust `kid` as Distribution 2.8 expects, granting pull on the repository."""
        key = ec.generate_private_key(ec.SECP256R1())
        bundle = self.tmp / "token-root.pem"
        bundle.write_bytes(token_minting.certificate("bench token root", key).public_bytes(serialization.Encoding.PEM))
        payload = token_minting.claims(
            "bench-issuer", "bench-registry", [token_minting.repository("bench/small", "pull")], "bench", 3 * 3600
        )
        token = token_minting.sign(payload, key, "ES256", kid=token_minting.libtrust_kid(key))
        auth = {
            "token": {
                "realm": "http://127.0.0.1:9/token",
                "service": "bench-registry",
                "issuer": "bench-issuer",
                "rootcertbundle": str(bundle),
            }
        }
        self.manifest_get_with_auth("token", "bearer token", auth, f"Authorization: Bearer {token}")

    def manifest_get_with_auth(self, key: str, label: str, auth: dict[str, Any], header: str) -> None:
        """Both servers restarted with `auth` on the data they have, measured with `header` on every request, and
        restarted without it again."""
        s = self.s
        rps = self.figure(
            f"{key}_rps", f"manifest GET by tag, {label}, {s.connections} conns", "req/s", target=ratio_at_least(5)
        )
        p99 = self.figure(f"{key}_p99", f"manifest GET p99, {label}", "ms", higher_is_better=False, digits=1)
        plain = {server.name: server.config for server in self.pair}
        log(f"manifest GET with {label} (wrk)")
        try:
            for server in self.pair:
                server.stop()
                server.config = {**(server.config or {}), "auth": auth}
                server.start()
                url = f"{server.url}/v2/bench/small/manifests/latest"
                loadgen.wrk_get(url, s.connections, s.warmup_seconds, loadgen.MANIFEST_ACCEPT, header)

            def get_manifest(server: Server, _: int) -> float:
                url = f"{server.url}/v2/bench/small/manifests/latest"
                r = loadgen.wrk_get(url, s.connections, s.load_seconds, loadgen.MANIFEST_ACCEPT, header)
                self.check(r, f"manifest GET with {label} {server.name}")
                rps.add(server.name, r.rps)
                p99.add(server.name, r.p99_ms)
                return r.requests

            self.interleaved(s.rounds, get_manifest, f"manifest GET with {label}")
        finally:
            for server in self.pair:
                server.stop()
                server.config = plain[server.name]
                server.start()

    def observability(self) -> None:
        """The cost of metrics (issue 13): manifest GET and blob HEAD against a second server of each kind with
        Prometheus metrics on, in rounds interleaved with the servers without them (ours, ours+metrics,
        Distribution, Distribution+metrics), so each round gives a paired on/off share per server; and ours against
        Distribution with metrics on in both."""
        s = self.s
        on = {server.name: servers.with_metrics(server, f"{server.name}+metrics") for server in self.pair}
        layer: dict[str, str] = {}
        try:
            for server in on.values():
                log(f"starting {server.name} on {server.url}")
                server.start()
            every = [each for base in self.pair for each in (base, on[base.name])]
            for server in every:
                layer[server.name], _ = images.seed_small_image(server.url, "bench/metrics", "latest")
            for kind, load in (("manifest", self._manifest_load), ("head", self._head_load)):
                what = "manifest GET by tag" if kind == "manifest" else "blob HEAD"
                rps = self.figure(
                    f"metrics_{kind}_rps",
                    f"{what}, {s.connections} conns, Prometheus metrics on (both)",
                    "req/s",
                    target=ratio_at_least(5),
                )
                share = self.figure(
                    f"metrics_{kind}_share",
                    f"{what}, metrics on as a share of off (paired rounds)",
                    "%",
                    target=ours_at_least(90, "%"),
                    digits=1,
                )
                log(f"{what}, metrics on and off")
                for server in every:
                    load(server, layer[server.name], s.warmup_seconds)
                phase = f"{what}, metrics on/off"
                self.interleaved(
                    s.rounds, self._on_off(kind, load, layer, rps, share), phase, among=every, alternate=False
                )
                cpu = self.figure(
                    f"metrics_{kind}_cpu",
                    f"{what}, server CPU per request, metrics on / off (all rounds)",
                    "x",
                    target=Target("ours <= 1.11x (90% of the requests per CPU second)", lambda o, d, r: o <= 1.11),
                    higher_is_better=False,
                    digits=3,
                )
                for base in self.pair:
                    per_request = {
                        name: self.cpu[phase][name] / max(self.work[phase][name], 1)
                        for name in (base.name, on[base.name].name)
                    }
                    cpu.add(base.name, per_request[on[base.name].name] / per_request[base.name])
        finally:
            for server in on.values():
                server.stop()

    def _on_off(
        self,
        kind: str,
        load: Callable[[Server, str, int], loadgen.LoadResult],
        layer: dict[str, str],
        rps: Figure,
        share: Figure,
    ) -> Callable[[Server, int], float]:
        """A round's measure: a server without metrics runs just before its twin with them, whose figure is then
        also taken as a share of its twin's in the same round."""
        off: dict[str, float] = {}

        def measure(server: Server, _: int) -> float:
            r = load(server, layer[server.name], self.s.load_seconds)
            self.check(r, f"{kind} {server.name}")
            base = server.name.removesuffix("+metrics")
            if base == server.name:
                off[base] = r.rps
            else:
                rps.add(base, r.rps)
                share.add(base, 100 * r.rps / off[base])
            return r.requests

        return measure

    def _manifest_load(self, server: Server, _layer: str, seconds: int) -> loadgen.LoadResult:
        url = f"{server.url}/v2/bench/metrics/manifests/latest"
        return loadgen.wrk_get(url, self.s.connections, seconds, loadgen.MANIFEST_ACCEPT)

    def _head_load(self, server: Server, layer: str, seconds: int) -> loadgen.LoadResult:
        return loadgen.hey(f"{server.url}/v2/bench/metrics/blobs/{layer}", self.s.connections, seconds)

    def check(self, r: loadgen.LoadResult, what: str) -> None:
        if r.failures:
            self.failures.append(f"{what}: {r.failures} of {r.requests} requests failed")

    # --- big blobs ------------------------------------------------------------------------------------------------
    def machine_ceilings(self) -> None:
        log(f"writing a {self.s.blob_size // MiB} MiB random blob")
        transfer.random_file(self.blob, self.s.blob_size)
        self.reference["sha256 of the blob, one core (MB/s)"] = transfer.sha256_mbps(self.blob)

    def downloads(self) -> None:
        """GETs from both registries and from two bare sendfile servers, interleaved, with a page-cache read before
        each round: the shares of those two ceilings compare figures taken under the same conditions."""
        s = self.s
        digest = transfer.sha256_file(self.blob)
        for server in self.pair:
            rawhttp.upload_monolithic(server.url, "bench/blob", self.blob, digest)
        page_cache = self.figure("page_cache", "page-cache read, dd bs=1M", "MB/s")
        page_splice = self.figure("page_splice", "page-cache splice to /dev/null", "MB/s")

        def read_page_cache() -> None:
            page_cache.add("machine", transfer.page_cache_mbps(self.blob))
            page_splice.add("machine", transfer.splice_read_mbps(self.blob))

        static = servers.static_file(self.tmp / "static", self.blob)
        bare = servers.sendfile_file(self.tmp / "sendfile", self.blob)
        try:
            static.start()
            bare.start()
            url = {server.name: f"{server.url}/v2/bench/blob/blobs/{digest}" for server in self.pair}
            url[static.name] = f"{static.url}/blob"
            url[bare.name] = f"{bare.url}/blob"
            for streams in (1, 8):
                curl = max(transfer.curl_get_mbps(url[static.name], streams, s.blob_size) for _ in range(2))
                self.reference[f"curl GET from the bare aiohttp server, {streams} stream(s), best of 2 (MB/s)"] = curl
                copying = max(
                    transfer.get_mbps(url[static.name], streams, s.blob_size, rawhttp.download) for _ in range(2)
                )
                self.reference[
                    f"recv_into client (copies every byte) from the bare aiohttp server, {streams} stream(s), "
                    "best of 2 (MB/s)"
                ] = copying
                fig = self.figure(
                    f"get{streams}",
                    f"{s.blob_size // MiB} MiB blob GET, {streams} stream(s)",
                    "MB/s",
                    target=ratio_at_least(1),
                )
                log(f"blob GET, {streams} stream(s)")
                for name in url:
                    transfer.get_mbps(url[name], streams, s.blob_size)

                def get(server: Server, _: int, fig: Figure = fig, streams: int = streams) -> float:
                    fig.add(server.name, transfer.get_mbps(url[server.name], streams, s.blob_size))
                    return streams * s.blob_size

                self.interleaved(
                    s.blob_rounds,
                    get,
                    f"blob GET x{streams}",
                    [*self.pair, static, bare],
                    before_round=read_page_cache,
                )
        finally:
            static.stop()
            bare.stop()

        self.reference["page-cache read, dd bs=1M, median (MB/s)"] = page_cache.median("machine") or 0.0
        self.reference["page-cache splice to /dev/null (moves page references, copies nothing), median (MB/s)"] = (
            page_splice.median("machine") or 0.0
        )
        dd = page_cache.samples.get("machine", [])
        for i, streams in enumerate((1, 8)):
            fig = self.figures[f"get{streams}"]
            # Shares are taken round by round (each round's GET against the dd read just before it, or against the
            # bare server in the same round), so a load swing between rounds does not skew them.
            dd_rounds = dd[i * s.blob_rounds : (i + 1) * s.blob_rounds]
            share = self.figure(
                f"get{streams}_share",
                f"blob GET, {streams} stream(s), share of page-cache read",
                "%",
                target=ours_at_least(70, "%"),
            )
            of_bare = self.figure(
                f"get{streams}_bare", f"blob GET, {streams} stream(s), share of a bare aiohttp sendfile server", "%"
            )
            bare_share = self.figure(
                f"get{streams}_kernel", f"blocking sendfile server, {streams} stream(s), share of page-cache read", "%"
            )
            for name, scale, into in (
                (self.ours.name, dd_rounds, share),
                (self.dist.name, dd_rounds, share),
                (self.ours.name, fig.samples.get(static.name, []), of_bare),
                (self.dist.name, fig.samples.get(static.name, []), of_bare),
                (bare.name, dd_rounds, bare_share),
            ):
                for value, ceiling in zip(fig.samples.get(name, []), scale, strict=False):
                    into.add(name, 100 * value / ceiling)
            self.reference[f"bare aiohttp sendfile server, {streams} stream(s), median (MB/s)"] = (
                fig.median(static.name) or 0.0
            )
            self.reference[f"blocking sendfile server (no event loop), {streams} stream(s), median (MB/s)"] = (
                fig.median(bare.name) or 0.0
            )
            self.reference[
                f"blocking sendfile server, {streams} stream(s), share of page-cache read, median of rounds (%)"
            ] = bare_share.median(bare.name) or 0.0

    def uploads(self, rss: RssWatch) -> None:
        s = self.s
        size_mib = s.blob_size // MiB
        # Uploads are durable when acknowledged, so the disk's own synced write speed, measured beside every upload
        # (the disk's speed swings from round to round on shared machines), is their ceiling.
        disk = self.figure("disk_write", "durable write of the blob, dd conv=fsync", "MB/s")
        for key, chunk, label in (
            ("put", None, f"{size_mib} MiB monolithic upload (POST+PUT)"),
            ("patch", s.chunk_size, f"{size_mib} MiB chunked upload ({s.chunk_size // MiB} MiB PATCHes)"),
        ):
            fig = self.figure(key, label, "MB/s", target=ratio_at_least(3))  # issue 15 (was 2x)
            log(label)

            def upload(server: Server, r: int, fig: Figure = fig, chunk: int | None = chunk, key: str = key) -> float:
                fig.add(server.name, transfer.upload_mbps(server.url, f"bench/up-{key}-{r}", self.blob, chunk))
                disk.add("machine", transfer.durable_write_mbps(self.blob, server.workdir / "data"))
                return s.blob_size

            self.interleaved(s.rounds, upload, label)
        self.reference["durable write of the blob to a new file, dd conv=fsync, median (MB/s)"] = (
            disk.median("machine") or 0.0
        )
        self.rss_phase(rss, f"after {size_mib} MiB transfers")

    # --- real client ----------------------------------------------------------------------------------------------
    def skopeo(self, rss: RssWatch) -> None:
        s = self.s
        sizes = "+".join(str(n // MiB) for n in s.layer_sizes)
        push = self.figure("push", f"skopeo copy push, 3 layers ({sizes} MiB)", "s", higher_is_better=False, digits=2)
        pull = self.figure("pull", "skopeo copy pull, same image", "s", higher_is_better=False, digits=2)
        log(f"building {s.rounds * 2} OCI layouts of {sizes} MiB")
        layouts = {}
        for r in range(s.rounds):
            for server in self.pair:
                # A fresh image per push: skopeo's blob-info cache would otherwise mount or skip known layers.
                layouts[(r, server.name)] = self.tmp / f"layout-{r}-{server.name}"
                images.build_layout(layouts[(r, server.name)], s.layer_sizes)
        log("skopeo copy push and pull")

        def copy(server: Server, r: int) -> float:
            ref = f"docker://127.0.0.1:{server.port}/bench/skopeo-{r}:latest"
            push.add(server.name, images.skopeo_copy_seconds(f"oci:{layouts[(r, server.name)]}:{images.REF_NAME}", ref))
            out = self.tmp / f"pulled-{r}-{server.name}"
            pull.add(server.name, images.skopeo_copy_seconds(ref, f"oci:{out}:{images.REF_NAME}"))
            shutil.rmtree(out)
            shutil.rmtree(layouts[(r, server.name)])
            return 0.0

        self.interleaved(s.rounds, copy, "skopeo copy")
        self.rss_phase(rss, "end of run")

    # --- small writes (issue 15) ----------------------------------------------------------------------------------
    def small_writes(self, rss: RssWatch) -> None:
        """What CI farms do: push images of many small layers, often many at once; the raw small-blob rate; and the
        metadata writes (new repositories by mount, tags) that dominate once the blobs are there."""
        self.small_image_pushes()
        self.small_blob_loads()
        self.metadata_loads()
        self.rss_phase(rss, "after small writes")

    def small_image_pushes(self) -> None:
        s = self.s
        kb, layers = s.small_layer_size // 1000, s.small_layers
        image = f"{layers} x {kb} KB layers"
        one = self.figure(
            "sw_push",
            f"skopeo push, {image}, one at a time",
            "s",
            higher_is_better=False,
            digits=3,
            target=speed_at_least(1.3),
        )
        batch = self.figure(
            "sw_batch",
            f"{s.batch} skopeo pushes of {image} at once, batch wall time",
            "s",
            higher_is_better=False,
            digits=2,
            target=speed_at_least(1.3),
        )
        batch_rate = self.figure("sw_batch_rate", f"{s.batch} pushes at once, blobs pushed per second", "blobs/s")
        blobs_per_push = layers + 1  # and the config; the manifest is a request of its own

        def layout(tag: str) -> Path:
            # Fresh random layers for every push: skopeo's blob-info cache must find nothing to skip or mount.
            directory = self.tmp / f"small-{tag}"
            images.build_small_layout(directory, layers, s.small_layer_size)
            return directory

        def push_one(server: Server, r: int) -> float:
            for i in range(s.small_pushes):
                source = layout(f"{server.name}-{r}-{i}")
                ref = f"docker://127.0.0.1:{server.port}/bench/small-push-{r}-{i}:latest"
                one.add(server.name, images.skopeo_copy_seconds(f"oci:{source}:{images.REF_NAME}", ref))
                shutil.rmtree(source)
            return s.small_pushes

        log(f"skopeo push of {image}, one at a time ({s.small_pushes} per round)")
        self.interleaved(s.rounds, push_one, "small image push, one at a time")

        def push_batch(server: Server, r: int) -> float:
            sources = [layout(f"{server.name}-{r}-b{i}") for i in range(s.batch)]
            copies = [
                (f"oci:{src}:{images.REF_NAME}", f"docker://127.0.0.1:{server.port}/bench/small-batch-{r}-{i}:latest")
                for i, src in enumerate(sources)
            ]
            seconds = images.skopeo_copies_seconds(copies)
            batch.add(server.name, seconds)
            batch_rate.add(server.name, s.batch * blobs_per_push / seconds)
            for src in sources:
                shutil.rmtree(src)
            return s.batch

        log(f"{s.batch} skopeo pushes of {image} at once")
        self.interleaved(s.batch_rounds, push_batch, "small image push, batch")
        for phase, key, label in (
            ("small image push, one at a time", "sw_cpu_push", "one at a time"),
            ("small image push, batch", "sw_cpu_batch", f"{s.batch} at once"),
        ):
            self.cpu_per_unit(phase, key, f"server CPU per small-image push, {label}", "ms", 1e3)

    def small_blob_loads(self) -> None:
        s = self.s
        kb, conns = s.small_layer_size // 1000, s.blob_connections
        for key, label, action in (
            ("patch", "POST+PATCH+PUT (as skopeo, docker)", smallwrites.blob_patch_put),
            ("put", "POST+PUT with the body", smallwrites.blob_post_put),
        ):

            def prepare(server: Server, r: int, key: str = key, action: Any = action) -> tuple[Sequence[Any], Any]:
                return smallwrites.random_blobs(s.small_blobs, s.small_layer_size), action(
                    server.url, f"bench/small-blobs-{key}-{r}"
                )

            self.write_load(
                f"sw_blobs_{key}",
                f"{s.small_blobs:,} x {kb} KB blobs, {label}, {conns} conns",
                conns,
                prepare,
                "blobs/s",
                ratio_at_least(2),
                per_item=True,
                cpu_label=f"server CPU per {kb} KB blob, {label}",
                cpu_target=ratio_at_most(0.5),
            )

    def metadata_loads(self) -> None:
        s = self.s
        conns, n = s.metadata_connections, s.metadata_items
        seeded = {}
        for server in self.pair:
            seeded[server.name] = images.seed_image(server.url, "bench/mount-source", "latest")

        def mounts(server: Server, r: int) -> tuple[Sequence[Any], Any]:
            repos = [f"bench/mounted-{r}-{i}" for i in range(n)]
            return repos, smallwrites.mount_and_manifest(server.url, "bench/mount-source", seeded[server.name])

        self.write_load(
            "sw_mount",
            f"{n:,} new repos by mount (config + layer) + manifest PUT, {conns} conns",
            conns,
            mounts,
            "req/s",
            ratio_at_least(2),
            per_item=False,
            cpu_label="server CPU per request, mounts + manifest PUTs",
        )

        def tag_puts(server: Server, r: int) -> tuple[Sequence[Any], Any]:
            return [f"t{r}-{i}" for i in range(n)], smallwrites.tag_put(
                server.url, "bench/mount-source", seeded[server.name]
            )

        self.write_load(
            "sw_tag",
            f"{n:,} tag PUTs of an existing manifest, {conns} conns",
            conns,
            tag_puts,
            "req/s",
            ratio_at_least(2),
            per_item=False,
            cpu_label="server CPU per tag PUT",
        )

    def write_load(
        self,
        key: str,
        label: str,
        connections: int,
        prepare: Callable[[Server, int], tuple[Sequence[Any], Any]],
        unit: str,
        target: Target,
        *,
        per_item: bool,
        cpu_label: str,
        cpu_target: Target | None = None,
    ) -> None:
        """One small-write load in interleaved rounds: its rate (items or requests per second), requests per
        second, wall time, and server CPU per item or request. `prepare` gives the round's items and action."""
        rate = self.figure(key, label, unit, target=target)
        rps = self.figure(f"{key}_rps", f"{label}: requests", "req/s") if per_item else None
        wall = self.figure(f"{key}_wall", f"{label}: wall time", "s", higher_is_better=False, digits=2)
        log(label)

        def measure(server: Server, r: int) -> float:
            items, action = prepare(server, r)
            load = smallwrites.run(server.url, items, connections, action)
            if load.failures:
                self.failures.append(
                    f"{label} {server.name}: {load.failures} of {len(items)} failed, first: {load.first_error[:300]}"
                )
            rate.add(server.name, load.items_per_second if per_item else load.requests_per_second)
            if rps is not None:
                rps.add(server.name, load.requests_per_second)
            wall.add(server.name, load.seconds)
            return load.items if per_item else load.requests

        self.interleaved(self.s.rounds, measure, label)
        self.cpu_per_unit(label, f"{key}_cpu", cpu_label, "µs", 1e6, cpu_target)

    def cpu_per_unit(
        self, phase: str, key: str, name: str, unit: str, scale: float, target: Target | None = None
    ) -> None:
        """Server CPU of a phase over the work it did (all rounds), as one figure per server."""
        fig = self.figure(key, name, unit, higher_is_better=False, digits=0 if unit == "µs" else 1, target=target)
        for server in self.pair:
            work = self.work.get(phase, {}).get(server.name, 0)
            if work:
                fig.add(server.name, self.cpu[phase][server.name] / work * scale)

    # --- efficiency -----------------------------------------------------------------------------------------------
    def cpu_figures(self) -> None:
        """Server CPU per request or per GB, from the phases' totals."""
        size_mib = self.s.blob_size // MiB
        per_request = [("manifest GET", "cpu_manifest"), ("blob HEAD", "cpu_head")]
        per_gb = [
            ("blob GET x1", "cpu_get1"),
            ("blob GET x8", "cpu_get8"),
            (f"{size_mib} MiB monolithic upload (POST+PUT)", "cpu_put"),
            (f"{size_mib} MiB chunked upload ({self.s.chunk_size // MiB} MiB PATCHes)", "cpu_patch"),
        ]
        for phases, unit, scale in ((per_request, "µs", 1e6), (per_gb, "s", 1e9)):
            for phase, key in phases:
                if phase not in self.work:
                    continue  # not run (--small-writes, --uploads)
                fig = self.figure(key, f"server CPU per {'request' if unit == 'µs' else 'GB'}, {phase}", unit)
                fig.higher_is_better, fig.digits = False, 0 if unit == "µs" else 2
                for server in self.pair:
                    work = self.work.get(phase, {}).get(server.name, 0)
                    if work:
                        fig.add(server.name, self.cpu[phase][server.name] / work * scale)

    # --- memory ---------------------------------------------------------------------------------------------------
    def rss_phase(self, rss: RssWatch, phase: str) -> None:
        rss.sample()
        self.rss_phases.append((phase, {srv.name: rss.summary(srv.name) for srv in self.pair}))

    def rss_figures(self, rss: RssWatch) -> None:
        largest = self.figure(
            "rss_worker", "peak RSS per worker (largest)", "MB", target=ours_below(150, "MB"), higher_is_better=False
        )
        total = self.figure("rss_total", "peak RSS, sum over all processes", "MB", higher_is_better=False)
        for server in self.pair:
            summary = rss.summary(server.name)
            largest.add(server.name, summary.largest_worker_mb)
            total.add(server.name, summary.total_mb)


def cpu_seconds(server: Server, nice_at_most: int | None = None) -> float:
    """User+system CPU of the server's live processes and its companions (its PostgreSQL cluster), from
    /proc/<pid>/stat in clock ticks; with `nice_at_most`, only of the server's processes whose nice value is no
    higher."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in server.pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if nice_at_most is None or int(fields[16]) <= nice_at_most:  # field 19 of stat(5): the nice value
            total += int(fields[11]) + int(fields[12])
    companion = server.companion_cpu() if server.companion_cpu is not None and nice_at_most is None else 0.0
    return total / ticks + companion


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    distro = "Linux"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return (
        f"{distro}, kernel {platform.release()}, {os.cpu_count()} cores ({cpu}), {mem_kib // 1024 // 1024} GiB RAM, "
        f"Python {platform.python_version()}"
    )


def distribution_version() -> str:
    out = subprocess.run([servers.DISTRIBUTION_BINARY, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().split()[-1] if out.stdout.strip() else "unknown"


ORDER = [
    "manifest_rps", "manifest_p99", "manifest_idle_rps", "manifest_idle_p99", "auth_rps", "auth_p99",
    "token_rps", "token_p99",
    "head_rps", "head_p99",
    "metrics_manifest_rps", "metrics_head_rps", "metrics_manifest_share", "metrics_head_share",
    "metrics_manifest_cpu", "metrics_head_cpu",
    "get1", "get8", "get1_share", "get8_share", "get1_bare", "get8_bare",
    "put", "patch", "push", "pull", "rss_worker", "rss_total",
    "cpu_manifest", "cpu_head", "cpu_get1", "cpu_get8", "cpu_put", "cpu_patch",
    "sw_push", "sw_cpu_push", "sw_batch", "sw_batch_rate", "sw_cpu_batch",
    "sw_blobs_patch", "sw_blobs_patch_rps", "sw_blobs_patch_wall", "sw_blobs_patch_cpu",
    "sw_blobs_put", "sw_blobs_put_rps", "sw_blobs_put_wall", "sw_blobs_put_cpu",
    "sw_mount", "sw_mount_wall", "sw_mount_cpu", "sw_tag", "sw_tag_wall", "sw_tag_cpu",
]  # fmt: skip


def rows(bench: Bench) -> list[list[str]]:
    return [bench.figures[k].row(bench.ours.name, bench.dist.name) for k in ORDER if k in bench.figures]


def source_version() -> str:
    """The commit the run measured, and whether the server's files differed from it (a shared working tree)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src", "core/src")
    return commit + (" with uncommitted server changes" if dirty else "")


def render(bench: Bench, args: argparse.Namespace, started: datetime.datetime, elapsed: float) -> str:
    s = bench.s
    out = [
        f"# Benchmark: docker-registry 3 vs CNCF Distribution {distribution_version()}",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; run took {elapsed / 60:.1f} min",
        f"- machine: {machine()}",
        f"- mode: {'--quick (smoke run, small sizes)' if args.quick else 'full'}"
        + (" -- STAND-IN: 'ours' is a second Distribution" if args.stand_in else ""),
        f"- our registry: {bench.ours_workers_text}, source {bench.source}",
        f"- rounds: {s.rounds} interleaved, the order reversed every other round (blob GET: {s.blob_rounds}; "
        f"{s.batch} pushes at once: {s.batch_rounds}); medians shown; "
        f"load runs of {s.load_seconds}s at {s.connections} connections; blob {s.blob_size // MiB} MiB",
        "- the load generators (wrk, hey, curl, skopeo) run on the same cores as the servers",
        f"- load average (1 min) at start {bench.load_before:.2f}, at end {os.getloadavg()[0]:.2f}: anything else "
        "running on the machine shares the cores too",
        "",
        markdown_table(rows(bench)),
        "",
        "## Ceilings of this machine and of the clients",
        "",
        "| reference | value |",
        "|---|---|",
        *[f"| {k} | {v:,.0f} |" for k, v in bench.reference.items()],
        "",
        "The bare servers are measured in the same interleaved rounds as the registries, and both page-cache reads "
        "before each round; shares are medians of per-round ratios. Blob GETs use the splice client (socket -> "
        "pipe -> /dev/null, no copy), so the client is not what caps them. The 'share of page-cache read' is taken "
        "against dd bs=1M, as the target defines it: one copy of each byte into user space, the least any client "
        "that uses the bytes pays. The splice read copies nothing (it moves page references), so no transfer over "
        "a socket comes near it.",
        "",
        "## Peak RSS by phase (VmHWM, highest so far)",
        "",
        "| phase | " + " | ".join(srv.name for srv in bench.pair) + " |",
        "|---|" + "---|" * len(bench.pair),
    ]
    for phase, per_server in bench.rss_phases:
        cells = [str(summary) for summary in per_server.values()]
        out.append(f"| {phase} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Server CPU seconds per phase (all rounds)",
        "",
        "| phase | " + " | ".join(srv.name for srv in bench.pair) + " |",
        "|---|" + "---|" * len(bench.pair),
    ]
    for phase, per_server in bench.cpu.items():
        out.append(f"| {phase} | " + " | ".join(f"{per_server.get(srv.name, 0):.1f}" for srv in bench.pair) + " |")
    if bench.database_cpu:
        out += ["", "Of our CPU above, PostgreSQL's processes used:", ""]
        out += [f"- {phase}: {seconds:.1f} s" for phase, seconds in bench.database_cpu.items()]
    out += ["", "## Every round", ""]
    for fig in bench.figures.values():
        for name, values in fig.samples.items():
            shown = ", ".join(f"{v:,.{max(fig.digits, 1)}f}" for v in values)
            out.append(f"- {fig.name} ({fig.unit}), {name}: {shown}")
    if bench.failures:
        out += ["", "## FAILED REQUESTS (figures above are suspect)", "", *[f"- {f}" for f in bench.failures]]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: short loads, 64 MiB blob (~1 min)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per figure (default 3, quick 2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="our worker processes")
    parser.add_argument(
        "--stand-in", action="store_true", help="run a second Distribution as 'ours' (to test the benchmark itself)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, data) for inspection")
    parser.add_argument(
        "--small-writes", action="store_true", help="only the small-write figures (small images, blobs, mounts, tags)"
    )
    parser.add_argument(
        "--uploads",
        action="store_true",
        help="only the big-blob upload figures (monolithic and chunked), sha256 beside",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="our registry's database: SQLite beside the data, or a PostgreSQL cluster of the run's own (durable: "
        "fsync on; its CPU counted as ours)",
    )
    parser.add_argument(
        "--auth", action="store_true", help="only the manifest GET figures: anonymous, htpasswd and bearer token"
    )
    parser.add_argument(
        "--observability", action="store_true", help="only the cost of metrics (manifest GET, blob HEAD, on and off)"
    )
    args = parser.parse_args()
    settings = Settings.quick() if args.quick else Settings.full()
    if args.rounds:
        settings.rounds = settings.blob_rounds = max(1, args.rounds)

    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    dist = servers.distribution(tmp / "distribution")
    cluster = PostgresCluster(durable=True).start() if args.database == "postgres" else None
    try:
        ours = (
            servers.distribution(tmp / "ours", "ours")
            if args.stand_in
            else servers.ours(tmp / "ours", args.workers, cluster)
        )
    except BaseException:
        if cluster is not None:  # the `finally` below removes it once the run has begun
            cluster.remove()
        raise
    bench = Bench(settings, ours, dist, tmp)
    bench.ours_workers_text = "stand-in" if args.stand_in else f"{args.workers} worker processes"
    if cluster is not None:
        bench.ours_workers_text += (
            f", on PostgreSQL {cluster.version()} (a cluster of the run's own, fsync on; its CPU counted as ours)"
        )
    try:
        for server in bench.pair:
            log(f"starting {server.name} on {server.url}")
            server.start()
        with RssWatch(bench.pair) as rss:
            if args.small_writes:
                bench.small_writes(rss)
            elif args.uploads:
                bench.machine_ceilings()
                bench.uploads(rss)
            elif args.auth:
                bench.small_requests(rss)
                bench.authenticated()
                bench.bearer_token()
            elif args.observability:
                bench.observability()
            else:
                bench.small_requests(rss)
                bench.observability()
                bench.authenticated()
                bench.bearer_token()
                bench.small_writes(rss)  # before the big blobs: their writeback would stall these fsyncs
                bench.machine_ceilings()
                bench.downloads()
                bench.uploads(rss)
                bench.skopeo(rss)
        bench.rss_figures(rss)
        bench.cpu_figures()
    except Exception:
        for server in bench.pair:
            print(f"--- {server.name} log tail ({server.log_path}) ---\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        for server in bench.pair:
            server.stop()
        if cluster is not None:
            cluster.remove()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    markdown = render(bench, args, started, time.monotonic() - t0)
    print()
    print(text_table(rows(bench)))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(markdown)
    log(f"wrote {RESULTS_DIR / 'latest.md'}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
