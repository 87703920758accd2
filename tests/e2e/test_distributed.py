"""`fleet supervisor` and `fleet worker` as separate processes form a cluster and serve."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from fleet.client import Client
from tests.conftest import FleetProcess, free_port
from tests.llm_builders import build_scripted_qwen2
from tests.netns import VethHosts, veth_host


def test_supervisor_and_worker_processes_serve_a_model(tmp_path, minilm_path):
    port = free_port()
    supervisor = FleetProcess(["supervisor", "-p", str(port)], tmp_path / "sup", port).wait_ready()
    worker = FleetProcess(["worker", "-e", supervisor.endpoint, "-H", "127.0.0.1"],
                          tmp_path / "worker", env=_joining(supervisor))
    try:
        client = Client(supervisor.endpoint)
        workers = _wait_for_workers(client, 1)
        assert workers[0]["address"] != client.cluster_info()[0]["address"]
        assert workers[0]["resources"]["cpu_count"] >= 1
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                  model_path=minilm_path)
        described = client.describe_model(uid)
        assert described["replicas"][0]["worker_address"] == workers[0]["address"]
        vector = client.get_model(uid).create_embedding("across processes")["data"][0]["embedding"]
        assert len(vector) == 384 and abs(np.linalg.norm(vector) - 1.0) < 1e-5
        # The request travelled on the replica's channel, across the two process trees.
        assert client.replicas(uid)[0]["batch"]["api_channels"] == 1
        client.terminate_model(uid)
        assert client.list_models() == {}
        # A streamed answer from a replica in the worker's process tree reaches the API in the
        # supervisor's over the replica's channel.
        _check_a_stream(client, supervisor, tmp_path)
    finally:
        assert worker.stop() == 0, worker.output()
        supervisor.stop()


def _joining(supervisor: FleetProcess) -> dict[str, str]:
    """A worker's environment: the supervisor's cluster secret, as an operator hands it over
    (the worker has its own FLEET_HOME, as on another machine)."""
    return {"FLEET_CLUSTER_SECRET": (supervisor.home / "cluster-secret").read_text()}


def _check_a_stream(client: Client, supervisor: FleetProcess, tmp_path) -> None:
    path = build_scripted_qwen2(tmp_path / "scripted", {"Answer:": [" Par", "is is", " lovely"]})
    family = {"version": 2, "model_name": "scripted", "model_ability": ["generate"],
              "context_length": 512, "model_specs": [{
                  "model_format": "pytorch", "model_size_in_billions": 0,
                  "quantizations": ["none"], "model_uri": str(path)}]}
    client.register_model("LLM", family, persist=False)
    uid = client.launch_model("scripted", model_type="LLM", model_engine="transformers",
                              model_path=str(path))
    with httpx.stream("POST", f"{supervisor.endpoint}/v1/completions", timeout=60, json={
            "model": uid, "prompt": "Answer:", "max_tokens": 3, "temperature": 0,
            "stream": True}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == " Paris is lovely"
    assert client.replicas(uid)[0]["batch"]["api_channels"] == 1  # pushed, not polled
    client.terminate_model(uid)


def _wait_for_workers(client: Client, count: int, timeout: float = 60.0) -> list[dict]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.list_workers()
        if len(workers) >= count:
            return workers
        time.sleep(0.2)
    raise TimeoutError("worker did not join")


def test_a_lost_worker_is_noticed_and_its_models_say_why(tmp_path, minilm_path):
    import signal
    import time

    import httpx

    port = free_port()
    supervisor = FleetProcess(["supervisor", "-p", str(port)], tmp_path / "sup", port,
                              env={"FLEET_WORKER_TIMEOUT_S": "3"}).wait_ready()
    worker = FleetProcess(["worker", "-e", supervisor.endpoint, "-H", "127.0.0.1"],
                          tmp_path / "worker", env={**_joining(supervisor),
                                                    "FLEET_HEARTBEAT_INTERVAL_S": "0.5",
                                                    "FLEET_WARM_SPARE": "0"})
    try:
        client = Client(supervisor.endpoint)
        _wait_for_workers(client, 1)
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                  model_path=minilm_path)
        client.get_model(uid).create_embedding("before")
        # The machine dies: the worker and its model process vanish without a word.
        os.killpg(worker.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while client.list_workers() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert client.list_workers() == []
        described = client.describe_model(uid)
        # Its replica would be launched on another worker; there is none: it waits for one.
        assert described["status"] == "waiting"
        assert "stopped responding" in described["error"]
        assert "waiting for capacity" in described["error"]
        assert described["replicas"][0]["state"] == "waiting"
        response = httpx.post(f"{supervisor.endpoint}/v1/embeddings",
                              json={"model": uid, "input": "after"}, timeout=30)
        assert response.status_code == 503
        assert "stopped responding" in response.json()["error"]["message"]
    finally:
        worker.stop()
        supervisor.stop()


@pytest.fixture
def second_host() -> Iterator[VethHosts]:
    """Another host on a real (virtual) network (tests.netns). Yields (this host's address, the
    other's, the command prefix that runs there, this host's end of the link)."""
    with veth_host() as hosts:
        yield hosts


def test_a_worker_on_another_host_serves_over_its_replica_channel(tmp_path, minilm_path,
                                                                  second_host):
    """The supervisor and a worker on two hosts: grouped embeddings and streamed tokens cross the
    network on the replica's channel, which listens on the worker's address."""
    supervisor_host, worker_host, run_there, _ = second_host
    port = free_port()
    # A private virtual network: no keys needed, but a non-loopback address must say so, and
    # name the folders launches may read (MiniLM's, and this test's scripted model).
    supervisor = FleetProcess(["supervisor", "-H", supervisor_host, "-p", str(port),
                               "--insecure-no-auth", "--model-root", minilm_path,
                               "--model-root", str(tmp_path)],
                              tmp_path / "sup", port, host=supervisor_host).wait_ready()
    worker = FleetProcess(["worker", "-e", supervisor.endpoint], tmp_path / "worker",
                          env={**_joining(supervisor), "FLEET_WARM_SPARE": "0"},
                          wrapper=run_there)
    try:
        client = Client(supervisor.endpoint)
        workers = _wait_for_workers(client, 1)
        assert workers[0]["address"].startswith(f"{worker_host}:")  # it faces the supervisor
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                  model_path=minilm_path)
        texts = [f"across the network {i}" for i in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            vectors = list(pool.map(
                lambda t: client.get_model(uid).create_embedding(t)["data"][0]["embedding"], texts))
        assert all(len(v) == 384 and abs(np.linalg.norm(v) - 1.0) < 1e-5 for v in vectors)
        assert client.replicas(uid)[0]["batch"]["api_channels"] == 1
        client.terminate_model(uid)
        _check_a_stream(client, supervisor, tmp_path)
    finally:
        assert worker.stop() == 0, worker.output()
        supervisor.stop()
