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
        description="docker-registry 3: a container image registry (OCI Distribution v1.1, Docker Registry API v2).",
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

    collect = commands.add_parser(
        "garbage-collect",
        help="delete what nothing references any more, while the registry runs or not",
        description=(
            "Delete repositories' blob links no manifest references, blobs no repository links (row, then file), "
            "expired upload sessions (storage.maintenance.uploadpurging.age) and temporary files, each once it has "
            "stayed unreferenced for the grace period gc.delay; with --delete-untagged also manifests no tag "
            "reaches. Safe while the registry serves: one collection runs at a time (on any node), and what a push "
            "uses again meanwhile is kept. Progress goes to stderr, the summary to stdout. Exits 0 when done, 1 "
            "when another collection is running or this one failed, 2 on a configuration error."
        ),
    )
    collect.add_argument("config", nargs="?", metavar="CONFIG", help="YAML configuration file")
    collect.add_argument("--dry-run", action="store_true", help="delete nothing, report what would be deleted now")
    collect.add_argument(
        "--delete-untagged", action="store_true", help="also delete manifests no tag reaches (and what only they use)"
    )
    collect.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


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
    if args.command == "garbage-collect":
        return _garbage_collect(config, args)
    from .runtime.serve import serve  # the server's imports (aiohttp, the app) are not needed to print a config

    try:
        return serve(config)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:  # Ctrl-C before serving began (say during migrations): nothing to drain
        return 128 + signal.SIGINT


def _garbage_collect(config: configuration.Config, args: argparse.Namespace) -> int:
    from .application import build_driver, prepare
    from .gc.command import garbage_collect

    if config.storage.driver == "inmemory":
        print("docker-registry: garbage-collect: the inmemory driver keeps blobs inside the server", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        prepare(config)  # the database may predate this release's schema (the server was not started since)
        driver = build_driver(config)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    return garbage_collect(
        config, driver, dry_run=args.dry_run, delete_untagged=args.delete_untagged, as_json=args.json
    )
