"""A private PostgreSQL cluster for the tests: a temporary directory, a free loopback port, stopped and started at
will (outage tests), with a fresh database per registry so registries sharing the cluster never see each other.

Not under pytest's temporary root: that is private to root, and the server runs as `postgres`."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from proc_stat import processes

from prerequisites import PSYCOPG_INSTALL, missing, require_module
from server_launch import free_port

_names = itertools.count()


class PostgresCluster:
    """`durable=False` (the tests') runs with `fsync=off`: a test never survives a power cut, and its commits are
    fast. A benchmark that compares write paths needs `durable=True`: PostgreSQL's defaults, a commit waits for its
    WAL's flush, as an SQLite commit waits for its fsync."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        require_module("psycopg", PSYCOPG_INSTALL)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            missing("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = Path(found[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="registry-test-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        """The `postgres` database's URL, as the registry's `database.url` takes it."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def new_database(self) -> str:
        """A new empty database's URL: each registry migrates its own, as a fresh SQLite file would be."""
        import psycopg

        name = f"registry_{os.getpid()}_{next(_names)}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def version(self) -> str:
        """The server's major version, as the installed binaries' folder names it (`/usr/lib/postgresql/16/bin`)."""
        return self.bin.parent.name

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)

    def start(self) -> PostgresCluster:
        # max_connections: every worker of every registry holds a pool and a listening connection
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        return self

    def cpu_seconds(self) -> float:
        """User+system CPU the cluster has used: the postmaster's, its live children's (backends, WAL writer,
        checkpointer, ...) and that of the children it has reaped (a backend whose connection closed)."""
        ticks = os.sysconf("SC_CLK_TCK")
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        total = 0
        for pid, fields in processes():
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            elif int(fields[1]) == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def stop(self) -> None:
        """As a crash would: connections are cut at once."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(self.root, ignore_errors=True)
