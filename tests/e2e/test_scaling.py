"""Scaling a model while it serves, through Xinference's client, Fleet's CLI and its client: a
real `fleet local`, real MiniLM replicas under a closed-loop load, and a streamed answer that a
terminate lets finish."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from xinference_client import RESTfulClient

from fleet.client import Client, FleetClientError
from tests.concurrency import ClosedLoop, wait_for
from tests.conftest import FleetProcess, start_local
from tests.llm_builders import build_scripted_qwen2
from tests.state_db import saved_models

WORDS = [f" w{i}" for i in range(120)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    server = start_local(tmp_path_factory.mktemp("fleet-home"), env={"FLEET_DRAIN_TIMEOUT_S": "30"})
    yield server
    server.stop()


def _fleet(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", endpoint],
                          capture_output=True, text=True, timeout=300)


def _ready_ids(client: Client, uid: str) -> list[int]:
    return sorted(r["replica_id"] for r in client.describe_model(uid)["replicas"]
                  if r["state"] == "ready")


def _saved_replicas(cluster: FleetProcess, uid: str) -> int:
    return saved_models(cluster.home)[uid]["replica"]


def test_scale_one_three_one_under_load_fails_no_request(cluster, minilm_path):
    client = Client(cluster.endpoint)
    xinference = RESTfulClient(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="scaled",
                              model_path=minilm_path)
    try:
        with ClosedLoop(cluster.endpoint, uid) as load:
            wait_for(lambda: load.served_after(0) >= 10)
            added = xinference.add_model_replica(uid)  # one: Xinference's single-replica answer
            assert added == {"replica_id": 1, "replica_model_uid": "scaled-1",
                             "worker_address": client.list_workers()[0]["address"]}
            scaled = _fleet(cluster.endpoint, "scale", "-u", uid, "-r", "3")
            assert scaled.returncode == 0, scaled.stderr
            assert "scaled-0, scaled-1, scaled-2" in scaled.stdout
            assert _ready_ids(client, uid) == [0, 1, 2] and _saved_replicas(cluster, uid) == 3
            # The new replicas joined the routes: each takes its share of the load.
            wait_for(lambda: all(r["requests_served"] > 0 for r in client.replicas(uid)), 60)
            pids = {r["replica_id"]: r["pid"] for r in client.replicas(uid)}
            assert xinference.terminate_model_replica(uid, 2) == 2
            assert client.scale(uid, 1) == [0]
            down_at = time.monotonic()
            wait_for(lambda: load.served_after(down_at) >= 10)  # served on by the one left
        assert load.failed == [], load.failed[:3]
        assert _ready_ids(client, uid) == [0] and _saved_replicas(cluster, uid) == 1
        assert client.replicas(uid)[0]["pid"] == pids[0]  # the first replica served throughout
        _refusals(client, uid)
    finally:
        client.terminate_model(uid)


def _refusals(client: Client, uid: str) -> None:
    with pytest.raises(FleetClientError) as unknown:
        client.terminate_model_replica(uid, 7)
    assert unknown.value.status_code == 404 and "has no replica 7 (it has 0)" in unknown.value.message
    other_engine = httpx.post(f"{client.endpoint}/v1/models/{uid}/replicas",
                              json={"model_engine": "llama.cpp"}, timeout=30)
    assert other_engine.status_code == 400
    assert "its replicas all do" in other_engine.json()["error"]["message"]
    for bad in ({"replica": 0}, {"replica": True}, {"replica": "2"}):
        assert httpx.post(f"{client.endpoint}/v1/models/{uid}/replicas", json=bad,
                          timeout=30).status_code == 400


@pytest.fixture(scope="module")
def long_talker(cluster: FleetProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    path = build_scripted_qwen2(tmp_path_factory.mktemp("scripted") / "talker",
                                {"Go:": WORDS})
    family = {"version": 2, "model_name": "long-talker", "model_ability": ["generate"],
              "context_length": 512, "model_specs": [{
                  "model_format": "pytorch", "model_size_in_billions": 0,
                  "quantizations": ["none"], "model_uri": str(path)}]}
    Client(cluster.endpoint).register_model("LLM", family, persist=False)
    return "long-talker", path


def test_terminate_during_a_stream_lets_it_finish(cluster, long_talker):
    name, path = long_talker
    client = Client(cluster.endpoint)
    uid = client.launch_model(name, model_type="LLM", model_engine="transformers",
                              model_path=str(path), model_uid="talker")
    events: list[str] = []
    terminated_at: list[float] = []
    with httpx.stream("POST", f"{cluster.endpoint}/v1/completions", timeout=120, json={
            "model": uid, "prompt": "Go:", "max_tokens": len(WORDS) + 5, "temperature": 0,
            "stream": True}) as response:
        stopper = None
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if len(events) == 3:  # the stream has started: terminate the model now
                stopper = threading.Thread(
                    target=lambda: (client.terminate_model(uid),
                                    terminated_at.append(time.monotonic())))
                stopper.start()
        ended_at = time.monotonic()
    assert stopper is not None
    stopper.join(timeout=60)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not [c for c in chunks if "error" in c]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "".join(WORDS)
    # The terminate waited for the stream (it drained the replica), then the model went.
    assert terminated_at and terminated_at[0] >= ended_at - 0.5
    assert uid not in client.list_models()


def test_scaling_past_the_replicas_a_model_may_have_is_refused(cluster, minilm_path):
    client = Client(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="capped",
                              model_path=minilm_path)
    try:
        # 64 is what one request may add; with the one it has, the model would pass the cap
        # that a launch (and a restore) holds it to.
        answer = httpx.post(f"{cluster.endpoint}/v1/models/{uid}/replicas", json={"replica": 64},
                            timeout=60)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "too_many_replicas"
        assert "has 1 replica(s); 64 more would pass the 64 replicas" in error["message"]
        assert _ready_ids(client, uid) == [0] and _saved_replicas(cluster, uid) == 1
    finally:
        client.terminate_model(uid)
