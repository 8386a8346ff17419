"""The `docker-registry` command line (also `python -m docker_registry.server`)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from docker_registry.core.exceptions import ConfigError

from .maintenance.options import DEFAULT_JOBS, IMPORT_SOURCES

if TYPE_CHECKING:
    from . import config as configuration

EXIT_CONFIG_ERROR = 2


class _Version(argparse.Action):
    """`--version`, looked up only when asked: importlib.metadata is a noticeable part of a command's start-up."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib import metadata

        try:
            version = metadata.version("docker-registry")
        except metadata.PackageNotFoundError:
            version = "unknown"
        print(f"{parser.prog} {version}")
        parser.exit()


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
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the registry server",
        description=(
            "Run the registry: prepare the data directory and database once, then serve with http.workers "
            "processes (default: one per usable core) sharing the port. SIGTERM or SIGINT stops accepting connections, "
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
    _add_maintenance(commands)

    collect = commands.add_parser(
        "garbage-collect",
        help="delete what nothing references any more, while the registry runs or not",
        description=(
            "Delete repositories' blob links no manifest references, blobs no repository links (row, then file), "
            "expired upload sessions (storage.maintenance.uploadpurging.age) and temporary files, each once it has "
            "stayed unreferenced for the grace period gc.delay; with --delete-untagged also manifests no tag "
            "reaches. Safe while the registry serves: one collection runs at a time (on any node), and what a push "
            "uses again meanwhile is kept. Progress goes to stderr, the summary to stdout. Exits 0 when done, 1 "
            "when another collection is running or this one failed, 2 on a configuration error or when there is no "
            "registry database where the configuration says (nothing is created)."
        ),
    )
    collect.add_argument("config", nargs="?", metavar="CONFIG", help="YAML configuration file")
    collect.add_argument("--dry-run", action="store_true", help="delete nothing, report what would be deleted now")
    collect.add_argument(
        "--delete-untagged", action="store_true", help="also delete manifests no tag reaches (and what only they use)"
    )
    collect.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


MAINTENANCE_EXIT_STATUS = (
    "Progress goes to stderr (a bar on a terminal, a line every 10 seconds otherwise); problems and a closing "
    "summary go to stdout. Exit status: 0 nothing wrong, 1 problems remain (listed) or the database cannot be "
    "reached, 2 configuration or usage error."
)


def _add_maintenance(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fsck = commands.add_parser(
        "fsck",
        help="verify every blob against its digest and every manifest's references",
        description=(
            "Read every blob the registry serves through the storage driver and check it hashes to its digest, and "
            "check that every manifest references only blobs its repository serves and child manifests it has. "
            "Safe while the registry serves. With --repair, corrupt blobs are moved to lost+found/ in the storage "
            "(never deleted) and, like missing ones, no longer served; the images they break are listed, and stay "
            "broken (exit status 1) until their blobs are pushed again. Refused (exit status 2, nothing created) when "
            "there is no registry database where the configuration says. " + MAINTENANCE_EXIT_STATUS
        ),
    )
    fsck.add_argument("config", nargs="?", metavar="CONFIG", help="YAML configuration file")
    fsck.add_argument("--repair", action="store_true", help="set corrupt blobs aside and stop serving damaged ones")
    fsck.add_argument("--jobs", type=_positive, default=DEFAULT_JOBS, help="blobs read at once (default 4)")

    imports = commands.add_parser(
        "import",
        help="import an existing registry's storage into the metadata store",
        description=(
            "--from distribution PATH reads a CNCF Distribution (registry:2) filesystem storage tree: PATH is its "
            "rootdirectory (holding docker/registry/v2) or that v2 folder. Repositories, blob links, manifests and "
            "tags are imported after the checks a push gets (digests, manifest validation, references); anything "
            "failing them is reported and skipped. When storage.filesystem.rootdirectory is that v2 folder the "
            "import is in place (nothing copied); otherwise blobs are copied into the configured storage. PATH is "
            "never changed. Running it again imports only what is missing. --v1 PATH reads the storage directory of "
            "the original docker-registry (images/, repositories/): layers stay where they are (hard-linked as blobs) "
            "when PATH lies inside storage.filesystem.rootdirectory, else they are copied; half-pushed images are "
            "reported and not served. " + MAINTENANCE_EXIT_STATUS
        ),
    )
    imports.add_argument("config", metavar="CONFIG", help="YAML configuration file of this registry")
    source = imports.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        nargs=2,
        metavar=("SOURCE", "PATH"),
        dest="source",
        help=f"SOURCE is one of: {', '.join(IMPORT_SOURCES)}",
    )
    source.add_argument("--v1", metavar="PATH", help="storage directory of the original registry (v1)")
    imports.add_argument("--jobs", type=_positive, default=DEFAULT_JOBS, help="blobs read at once (default 4)")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _import(config: configuration.Config, v1_path: str) -> int:
    """`docker-registry import --v1 PATH`."""
    import asyncio

    from .application import open_registry
    from .v1.importer import V1Importer

    if not os.path.isdir(v1_path):
        print(f"docker-registry: import: {v1_path} is not a directory", file=sys.stderr)
        return 1
    root = config.storage.options.get("rootdirectory") if config.storage.driver in ("filesystem", "file") else None
    source = os.path.realpath(v1_path)
    in_place = root is not None and os.path.commonpath([source, os.path.realpath(str(root))]) == os.path.realpath(
        str(root)
    )
    failed = _unprepared(config)
    if failed is not None:
        return failed

    async def run() -> list[str]:
        async with open_registry(config) as registry:
            summary = await V1Importer(registry, source, in_place, sys.stderr.isatty()).run()
        return list(summary.lines())

    for line in asyncio.run(run()):
        print(line)
    return 0


def run() -> NoReturn:
    """The command line as a process of its own (the console script, `python -m docker_registry.server`).

    Python's cyclic collector is off while the modules load: start-up builds a few hundred thousand objects that all
    live until the end, and the collector went through them again and again (about 15% of `garbage-collect`'s start,
    0.06 s). `dispatch` turns it back on once the command's modules are loaded (for a collection, with all they
    built frozen first). A collection's process then ends without the interpreter's teardown, which frees every
    object one by one (another 0.1 s): its output is flushed, its database connections closed, and nothing it
    started is left running."""
    gc.disable()
    parser = build_parser()
    args = parser.parse_args()
    status = dispatch(parser, args)
    if args.command != "garbage-collect":
        sys.exit(status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return dispatch(parser, parser.parse_args(argv))


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the command `args` names (parsed by `parser`); its exit status."""
    from . import config as configuration

    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG_ERROR
    path = args.config or os.environ.get("REGISTRY_CONFIGURATION_PATH") or None
    try:
        config = configuration.load(path)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command == "garbage-collect":
        return _garbage_collect(config, args)
    gc.enable()
    if args.command == "config":
        import yaml

        for notice in config.notices:
            print(f"docker-registry: warning: {notice}", file=sys.stderr)
        try:
            yaml.safe_dump(configuration.dump(config, show_secrets=args.show_secrets), sys.stdout, sort_keys=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `docker-registry config | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return 0
    if args.command == "import" and args.v1 is not None:
        return _import(config, args.v1)
    if args.command in ("fsck", "import"):
        return _maintenance(args, config)
    from .runtime.serve import serve  # the server's imports (aiohttp, the app) are not needed to print a config

    try:
        return serve(config)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:  # Ctrl-C before serving began (say during migrations): nothing to drain
        return 128 + signal.SIGINT


def _maintenance(args: argparse.Namespace, config: configuration.Config) -> int:
    from .maintenance.commands import UsageError, import_tree, run_fsck, run_import
    from .maintenance.console import Console
    from .preparation import build_driver

    console = Console(f"docker-registry {args.command}")
    tree = ""
    try:
        if args.command == "import":
            tree = import_tree(*args.source)  # --from SOURCE PATH; other sources join its mutually exclusive group
        driver = build_driver(config)
    except UsageError as exc:
        print(f"docker-registry {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.command == "fsck" and _no_database(config, args.command):
        return EXIT_CONFIG_ERROR
    failed = _unprepared(config)
    if failed is not None:
        return failed
    try:
        if args.command == "fsck":
            return run_fsck(config, driver, repair=args.repair, jobs=args.jobs, console=console)
        return run_import(config, driver, tree, jobs=args.jobs, console=console)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


def _no_database(config: configuration.Config, command: str) -> bool:
    """Whether the SQLite database the configuration names does not exist, said on stderr: a command that checks or
    cleans a registry, pointed at the wrong place (a typo in the root, Distribution's own configuration), found
    nothing wrong and created a database, its lock and an 8 MiB reserve there. Only `import` and `serve` create
    one. Another database's absence shows when it is opened."""
    from .store.engine import database_url, sqlite_file

    path = sqlite_file(database_url(config))
    if path is None or os.path.exists(path):
        return False
    print(
        f"docker-registry {command}: no registry database at {path} (is this the registry's configuration? "
        "storage.filesystem.rootdirectory and database.url say where it is); nothing was done",
        file=sys.stderr,
    )
    return True


def _unprepared(config: configuration.Config) -> int | None:
    """`prepare(config)`: the database at this release's schema, the data directory there. When that fails, the
    exit status, the reason said on one line as `serve` says it (an unreachable database, an unwritable directory, a
    database a newer release migrated), where `garbage-collect` and `import --v1` printed a traceback."""
    from .preparation import prepare

    try:
        prepare(config)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except Exception as exc:
        print(f"docker-registry: cannot prepare the data directory and database: {exc}", file=sys.stderr)
        return 1
    return None


def _garbage_collect(config: configuration.Config, args: argparse.Namespace) -> int:
    from .gc.command import garbage_collect
    from .preparation import build_driver

    if config.storage.driver == "inmemory":
        print("docker-registry: garbage-collect: the inmemory driver keeps blobs inside the server", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if _no_database(config, args.command):
        return EXIT_CONFIG_ERROR
    failed = _unprepared(config)  # the database may predate this release's schema (the server was not started since)
    if failed is not None:
        return failed
    try:
        driver = build_driver(config)
    except ConfigError as exc:
        print(f"docker-registry: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    # the modules and settings stay to the end: the collector leaves them out of its rounds (see `run`)
    gc.freeze()
    gc.enable()
    return garbage_collect(
        config, driver, dry_run=args.dry_run, delete_untagged=args.delete_untagged, as_json=args.json
    )
