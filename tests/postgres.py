"""A real PostgreSQL for the tests: Debian's `postgresql` package (`apt-get install postgresql`;
.ci/run installs it), a cluster made by initdb in a temporary folder, started on 127.0.0.1 at a
free port with a password, and removed at the end. PostgreSQL refuses to run as root: as root,
the server runs as the `postgres` user that the package creates.

A missing PostgreSQL fails the tests that need it, with the command that installs it."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import free_port

USER = "fleet"
# Characters a URL must escape, so that the tests see it written and shown right.
PASSWORD = "s3cret:pg/@pass"


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(Path(path).parts[-3]))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install -y postgresql (Debian)")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self, folder: Path, port: int, run_as: list[str]):
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self._run_as = run_as
        self._bin = _binaries()
        self._names = itertools.count(1)

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return URL.create("postgresql", username=USER, password=password, host="127.0.0.1",
                          port=self.port, database=database).render_as_string(
                              hide_password=False)

    def new_database(self) -> str:
        """A new, empty database on this server: its URL (with the password)."""
        import psycopg

        name = f"fleet_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                             dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), *args)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder}"
        self.pg_ctl("-l", str(self.folder / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self._run_as, str(self._bin / program), *args],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed:\n{done.stderr}\n{tail}")


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(folder, free_port(), run_as)
    try:
        password_file = folder / "password"
        password_file.write_text(PASSWORD)
        if run_as:
            shutil.chown(password_file, "postgres", "postgres")
        server._run("initdb", "-D", str(server.data), "-U", USER, f"--pwfile={password_file}",
                    "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        password_file.unlink()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
