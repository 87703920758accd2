"""A cluster of containers on a network of their own: a supervisor and two workers with the
cluster secret, each worker on its fixed ports. A model with two replicas spreads over the
workers; one worker container is stopped while requests flow: no request fails (a request
whose replica ends is sent once more to the other), and the lost replica is launched again on
the remaining worker."""

from __future__ import annotations

import random
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.concurrency import wait_for
from tests.containers.conftest import HEADERS, KEY, MINILM_GGUF_FAMILY
from tests.containers.images import podman


class Cluster:
    def __init__(self, image: str, models: Path):
        tag = uuid.uuid4().hex[:8]
        self.image, self.models, self.network = image, models, f"fleet-net-{tag}"
        self.subnet = f"10.89.{random.randint(100, 199)}"
        self.secret = secrets.token_hex(32)
        self.names: list[str] = []
        self.tag = tag

    @property
    def endpoint(self) -> str:
        return f"http://{self.subnet}.2:9997"

    def start(self) -> None:
        podman("network", "create", "--subnet", f"{self.subnet}.0/24", self.network)
        self._run("supervisor", 2, {"FLEET_API_KEY": KEY, "FLEET_WORKER_TIMEOUT_S": "5"},
                  ["supervisor", "-H", "0.0.0.0", "--model-root", "/models"])
        for index in (3, 4):
            self._run(f"worker{index}", index,
                      {"FLEET_REPLICA_PORTS": "20000-20009", "FLEET_WARM_SPARE": "0",
                       "FLEET_HEARTBEAT_INTERVAL_S": "1"},
                      ["worker", "-e", self.endpoint])

    def _run(self, role: str, host: int, env: dict[str, str], command: list[str]) -> None:
        name = f"fleet-{role}-{self.tag}"
        environment = {"FLEET_CLUSTER_SECRET": self.secret, "FLEET_ACTOR_PORT": "9998", **env}
        flags = [f"--env={key}={value}" for key, value in environment.items()]
        podman("run", "-d", "--name", name, f"--network={self.network}",
               f"--ip={self.subnet}.{host}", *flags, "-v", f"{self.models}:/models:ro",
               self.image, *command)
        self.names.append(name)

    def worker_container(self, address: str) -> str:
        return f"fleet-worker{address.split(':')[0].rsplit('.', 1)[1]}-{self.tag}"

    def stop(self) -> None:
        for name in self.names:
            podman("rm", "-f", "-v", "-t", "5", name, check=False, timeout=60)
        podman("network", "rm", "-f", self.network, check=False)


@pytest.fixture
def cluster(image: str, models: Path) -> Iterator[Cluster]:
    running = Cluster(image, models)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def _get(cluster: Cluster, path: str) -> Any:
    reply = httpx.get(f"{cluster.endpoint}{path}", headers=HEADERS, timeout=10)
    reply.raise_for_status()
    return reply.json()


class Load:
    """Embedding requests, one after another on two threads, until stopped."""

    def __init__(self, endpoint: str, model: str):
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(endpoint, model))
                         for _ in range(2)]

    def _run(self, endpoint: str, model: str) -> None:
        with httpx.Client(base_url=endpoint, headers=HEADERS, timeout=60) as http:
            while not self._stop.is_set():
                reply = http.post("/v1/embeddings", json={"model": model, "input": "steady"})
                self.statuses.append(reply.status_code)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_a_worker_container_stopped_under_load_loses_no_request(cluster):
    wait_for(lambda: len(_get(cluster, "/v1/workers")) == 2, 120, 0.5, "two workers joined",
             (httpx.HTTPError,))
    workers = {w["address"] for w in _get(cluster, "/v1/workers")}
    assert workers == {f"{cluster.subnet}.3:9998", f"{cluster.subnet}.4:9998"}
    registered = httpx.post(f"{cluster.endpoint}/v1/model_registrations/embedding",
                            headers=HEADERS, timeout=30,
                            json={"model": MINILM_GGUF_FAMILY, "persist": True})
    assert registered.status_code == 200, registered.text
    launched = httpx.post(f"{cluster.endpoint}/v1/models", headers=HEADERS, timeout=300,
                          json={"model_name": "minilm-gguf", "model_type": "embedding",
                                "replica": 2})
    assert launched.status_code == 200, launched.text
    uid = launched.json()["model_uid"]
    replicas = _get(cluster, f"/v1/models/{uid}")["replicas"]
    assert {r["worker_address"] for r in replicas} == workers  # one on each

    with Load(cluster.endpoint, uid) as load:
        time.sleep(3)
        served_before = len(load.statuses)
        stopped = replicas[0]["worker_address"]
        podman("stop", "-t", "30", cluster.worker_container(stopped), timeout=90)
        remaining = (workers - {stopped}).pop()

        def relaunched() -> bool:
            now = _get(cluster, f"/v1/models/{uid}")["replicas"]
            return [r["state"] for r in now] == ["ready", "ready"] and \
                {r["worker_address"] for r in now} == {remaining}

        wait_for(relaunched, 120, 0.5, "the lost replica launched again on the other worker",
                 (httpx.HTTPError,))
        time.sleep(2)
    assert served_before > 0 and len(load.statuses) > served_before
    assert set(load.statuses) == {200}, {s: load.statuses.count(s) for s in set(load.statuses)}
