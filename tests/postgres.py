"""A real PostgreSQL server for tests: Debian's binaries, `initdb` into a temporary directory as
a non-root user, a free port on 127.0.0.1, stopped and removed afterwards."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg

from tests.servers import free_port

# PostgreSQL refuses to run as root; CI runs as root, so the server runs as Debian's `postgres`.
SERVER_USER = "postgres"


def bindir() -> Path:
    """Where `initdb` and `pg_ctl` are: Debian keeps them off PATH, under /usr/lib/postgresql."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "PostgreSQL's initdb was not found: install Debian's `postgresql` package "
        "(.ci/run does), then run the tests again"
    )


class PostgresServer:
    """One throwaway server; `url` reaches database `callstatus` as a superuser (trust auth on
    127.0.0.1). `stop()` and `start()` again keep the data, to test outages."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.fsync = fsync
        self.log = root / "postgres.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/callstatus"
        self._bin = bindir()

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        command = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, cwd=self.root)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    def start(self, timeout: float = 30) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.root}'"
            f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=300"
            " -c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", str(int(timeout)), "start")  # fmt: skip
        self._ensure_database()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _ensure_database(self) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as con:
                    exists = con.execute(
                        "SELECT 1 FROM pg_database WHERE datname = 'callstatus'"
                    ).fetchone()
                    if not exists:
                        con.execute("CREATE DATABASE callstatus")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[PostgresServer]:
    """A started server, stopped (immediately) and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="callstatus-pg-"))
    server = PostgresServer(root, fsync=fsync)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            with suppress(subprocess.CalledProcessError):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def reset(url: str) -> None:
    """An empty `public` schema, for tests that share one server."""
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP SCHEMA public CASCADE")
        con.execute("CREATE SCHEMA public")
