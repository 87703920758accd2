"""Replica processes that die or hang are noticed, their requests ride over the fault, and they
come back: a real `fleet local`, real MiniLM replicas, real signals."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from fleet.client import Client
from tests.concurrency import ClosedLoop, wait_for
from tests.conftest import FleetProcess, start_local

# A hung replica is found within a few seconds here (the defaults are 1 s probes, 3 s to answer).
FAST_SUPERVISION = {"FLEET_HEALTH_PROBE_INTERVAL_S": "0.5", "FLEET_HEALTH_PROBE_TIMEOUT_S": "1.5"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    server = start_local(tmp_path_factory.mktemp("fleet-home"), env=FAST_SUPERVISION)
    yield server
    server.stop()


def _replicas(client: Client, uid: str) -> list[dict]:
    return client.describe_model(uid)["replicas"]


def _back_ready(client: Client, uid: str, index: int, old_pid: int) -> dict | None:
    replica = _replicas(client, uid)[index]
    ready = replica["state"] == "ready" and replica["pid"] not in (None, old_pid)
    return replica if ready else None


def test_a_killed_replica_of_two_costs_no_request_and_comes_back(cluster, minilm_path):
    client = Client(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="two",
                              model_path=minilm_path, replica=2)
    try:
        victim = _replicas(client, uid)[0]
        with ClosedLoop(cluster.endpoint, uid) as load:
            wait_for(lambda: load.served_after(0) >= 20)
            killed_at = time.monotonic()
            os.kill(victim["pid"], signal.SIGKILL)
            back = wait_for(lambda: _back_ready(client, uid, 0, victim["pid"]), timeout=60)
            # Its route came back to the API: the new process takes its share of the load.
            wait_for(lambda: client.replicas(uid)[0]["requests_served"] > 0, timeout=30)
        assert load.failed == [], load.failed[:3]
        assert load.served_after(killed_at) > 0
        assert back["restarts"] == 1
        assert "killed by signal 9 (SIGKILL)" in back["last_failure"]
        assert client.describe_model(uid)["status"] == "ready"
        metrics = httpx.get(f"{cluster.endpoint}/metrics").text
        assert f'fleet_replica_restarts_total{{model="{uid}",replica="{uid}-0"}} 1.0' in metrics
    finally:
        client.terminate_model(uid)


def test_a_lone_killed_replica_answers_503_with_the_reason_then_serves(cluster, minilm_path):
    client = Client(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="lone",
                              model_path=minilm_path)
    try:
        pid = _replicas(client, uid)[0]["pid"]
        assert client.get_model(uid).create_embedding("before")["data"]
        os.kill(pid, signal.SIGKILL)
        refusals: list[httpx.Response] = []

        def answered() -> bool:
            response = httpx.post(f"{cluster.endpoint}/v1/embeddings",
                                  json={"model": uid, "input": "during"}, timeout=30)
            if response.status_code == 503:
                refusals.append(response)
            else:
                assert response.status_code == 200, response.text
            return response.status_code == 200

        wait_for(answered, timeout=60, step=0.05)
        assert refusals, "the restart was never seen"
        for response in refusals:
            assert response.headers["retry-after"] == "2"
            message = response.json()["error"]["message"]
            assert "restarting" in message or "unreachable" in message, message
        # The supervisor's own words, once it knew: why, and that it is restarting.
        assert any("killed by signal 9" in r.json()["error"]["message"] for r in refusals)
        replica = _replicas(client, uid)[0]
        assert replica["restarts"] == 1 and replica["pid"] != pid
        listed = client.list_models()[uid]
        assert listed["status"] == "ready" and listed["ready_replicas"] == 1
    finally:
        client.terminate_model(uid)


def test_a_hung_replica_is_found_and_replaced(cluster, minilm_path):
    client = Client(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="hung",
                              model_path=minilm_path)
    try:
        pid = _replicas(client, uid)[0]["pid"]
        time.sleep(1.5)  # a few probes answered: the watch knows it as a serving replica
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        # Not ready while it is being replaced: describe never calls it ready.
        seen = wait_for(lambda: _replicas(client, uid)[0]["state"] != "ready", timeout=15)
        detected_s = time.monotonic() - stopped_at
        assert seen and detected_s < 3, detected_s  # two process checks, 0.5 s apart
        replica = wait_for(lambda: _back_ready(client, uid, 0, pid), timeout=60)
        assert "did not answer a health check" in replica["last_failure"]
        assert replica["restarts"] == 1
        assert client.get_model(uid).create_embedding("after")["data"]
        # The stopped process was killed, not left behind.
        wait_for(lambda: not _alive(pid), timeout=10)
    finally:
        client.terminate_model(uid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_stream_whose_replica_dies_ends_with_an_error_event_that_says_so(cluster, tmp_path):
    from tests.llm_builders import build_scripted_qwen2

    words = [f" v{i}" for i in range(120)]
    path = build_scripted_qwen2(tmp_path / "talker", {"Go:": words})
    client = Client(cluster.endpoint)
    client.register_model("LLM", {
        "version": 2, "model_name": "dying-talker", "model_ability": ["generate"],
        "context_length": 512, "model_specs": [{"model_format": "pytorch",
                                                "model_size_in_billions": 0,
                                                "quantizations": ["none"],
                                                "model_uri": str(path)}]}, persist=False)
    uid = client.launch_model("dying-talker", model_type="LLM", model_engine="transformers",
                              model_path=str(path))
    try:
        pid = _replicas(client, uid)[0]["pid"]
        events: list[str] = []
        with httpx.stream("POST", f"{cluster.endpoint}/v1/completions", timeout=60, json={
                "model": uid, "prompt": "Go:", "max_tokens": 200, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        os.kill(pid, signal.SIGKILL)
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert "stopped in the middle of this stream" in error["message"], error
        assert error["code"] == "replica_lost"
        assert len(events) < len(words)  # it did not finish: it says so instead
        wait_for(lambda: _back_ready(client, uid, 0, pid), timeout=60)
    finally:
        client.terminate_model(uid)
