"""The `docker-registry` command line (also `python -m docker_registry.server`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from importlib import metadata

import yaml

from docker_registry.core.exceptions import ConfigError

from . import config as configuration

EXIT_CONFIG_ERROR = 2


def _version() -> str:
    try:
        return metadata.version("docker-registry")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docker-registry",
        description=(
            "docker-registry 3: a container image registry (OCI Distribution v1.1, Docker Registry API v2, and the "
            "legacy v1 API of the original docker-registry, bridged to v2: see docs/v1.md)."
        ),
        epilog=(
            "CONFIG is a YAML file with CNCF Distribution's keys (storage, http, log, ...) plus our own "
            "(database, http.workers, validation.manifests.maxbytes). Without one, REGISTRY_CONFIGURATION_PATH "
            "is used if set, else embedded defaults: filesystem storage and SQLite under ./data, 127.0.0.1:5000. "
            "Any key can be overridden by an environment variable REGISTRY_<SECTION>_<KEY>, "
            "e.g. REGISTRY_HTTP_ADDR=:5000 or REGISTRY_STORAGE_DELETE_ENABLED=true."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the registry server",
        description=(
            "Run the registry: prepare the data directory and database once, then serve with http.workers "
            "processes (default: one per core) sharing the port. SIGTERM or SIGINT stops accepting connections, "
            "lets requests in flight finish (up to http.draintimeout, default 30s) and exits 0. "
            "Exits 2 on a configuration error."
        ),
    )
    serve.add_argument("config", nargs="?", metavar="CONFIG", help="YAML configuration file")

    show = commands.add_parser(
        "config",
        help="print the effective configuration as YAML",
        description=(
            "Print the effective configuration (defaults, the file, then REGISTRY_* environment overrides) as "
            "YAML, with secrets masked; warnings about ignored settings go to stderr. Exits 2 on a "
            "configuration error, so it also checks a file before deploying it."
        ),
    )
    show.add_argument("config", nargs="?", metavar="CONFIG", help="YAML configuration file")
    show.add_argument("--show-secrets", action="store_true", help="print secrets and passwords instead of ***")

    load = commands.add_parser(
        "import",
        help="read an existing registry's storage into this one",
        description=(
            "Read the storage tree of another registry into this one's metadata store. --v1 PATH: the storage "
            "directory of the original docker-registry (images/, repositories/). When PATH lies inside "
            "storage.filesystem.rootdirectory the layers stay where they are (hard-linked as blobs), otherwise they "
            "are copied and PATH is not modified. Half-pushed images are reported and not served. Running it again "
            "changes nothing. Shows progress on a terminal and ends with a summary. Exits 2 on a configuration "
            "error, 1 if PATH is not a directory."
        ),
    )
    load.add_argument("config", nargs="?", metavar="CONFIG", help="YAML configuration file")
    load.add_argument("--v1", metavar="PATH", required=True, help="storage directory of the original registry (v1)")
    return parser


def _import(config: configuration.Config, v1_path: str) -> int:
    """`docker-registry import --v1 PATH`."""
    import asyncio

    from .application import open_registry, prepare
    from .v1.importer import V1Importer

    if not os.path.isdir(v1_path):
        print(f"docker-registry: import: {v1_path} is not a directory", file=sys.stderr)
        return 1
    root = config.storage.options.get("rootdirectory") if config.storage.driver in ("filesystem", "file") else None
    source = os.path.realpath(v1_path)
    in_place = root is not None and os.path.commonpath([source, os.path.realpath(str(root))]) == os.path.realpath(
        str(root)
    )
    prepare(config)

    async def run() -> list[str]:
        async with open_registry(config) as registry:
            summary = await V1Importer(registry, source, in_place, sys.stderr.isatty()).run()
        return list(summary.lines())

    for line in asyncio.run(run()):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG_ERROR
    path = args.config or os.environ.get("REGISTRY_CONFIGURATION_PATH") or None
    try:
        config = configuration.load(path)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command == "config":
        for notice in config.notices:
            print(f"docker-registry: warning: {notice}", file=sys.stderr)
        try:
            yaml.safe_dump(configuration.dump(config, show_secrets=args.show_secrets), sys.stdout, sort_keys=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `docker-registry config | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return 0
    if args.command == "import":
        return _import(config, args.v1)
    from .runtime.serve import serve  # the server's imports (aiohttp, the app) are not needed to print a config

    try:
        return serve(config)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:  # Ctrl-C before serving began (say during migrations): nothing to drain
        return 128 + signal.SIGINT
