"""Autoscaling on a real `fleet local`: MiniLM launched with 1..3 replicas and a small target
grows to 3 under a closed loop of 8 clients and comes back to 1 once the load is off, after its
(short, for the test) down delay, without a failed request; each decision is in the model's
events with its reason and in /metrics; bad settings are refused naming the field; with
min_replicas 0 it goes to zero when idle and its next request loads it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from fleet.client import Client
from tests.concurrency import ClosedLoop, wait_for
from tests.conftest import FleetProcess, start_local
from tests.metrics_text import scrape, value
from tests.state_db import saved_models


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    server = start_local(tmp_path_factory.mktemp("fleet-home"))
    yield server
    server.stop()


def _ready(client: Client, uid: str) -> int:
    return sum(r["state"] == "ready" for r in client.describe_model(uid)["replicas"])


def _desired(endpoint: str, uid: str) -> float:
    return value(scrape(endpoint), "fleet_model_desired_replicas", model=uid)


def test_up_to_three_under_load_and_back_to_one_after_it(cluster, minilm_path):
    client = Client(cluster.endpoint)
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="auto",
                              model_path=minilm_path, min_replicas=1, max_replicas=3,
                              target_inflight=1, scale_up_delay=1, scale_down_delay=3)
    try:
        assert client.describe_model(uid)["autoscale"] == {
            "min_replicas": 1, "max_replicas": 3, "target_inflight": 1.0, "scale_up_delay": 1.0,
            "scale_down_delay": 3.0}
        with ClosedLoop(cluster.endpoint, uid, clients=8) as load:
            wait_for(lambda: _ready(client, uid) == 3, timeout=90, step=0.5)
            assert _desired(cluster.endpoint, uid) == 3
            time.sleep(2)  # at max: no fourth, however long the load stays above the target
            assert len(client.describe_model(uid)["replicas"]) == 3
            served_at_three = len(load.outcomes)
        assert len(load.outcomes) > served_at_three
        off_at = time.monotonic()
        wait_for(lambda: _ready(client, uid) == 1 and len(
            client.describe_model(uid)["replicas"]) == 1, timeout=60, step=0.5)
        assert time.monotonic() - off_at >= 2 * 3  # two steps down, each after its delay
        assert load.failed == [], load.failed[:3]
        assert client.describe_model(uid)["replicas"][0]["replica_id"] == 0  # the newest went
        _events_say_why(client, uid)
        found = scrape(cluster.endpoint)
        assert value(found, "fleet_model_desired_replicas", model=uid) == 1
        assert value(found, "fleet_model_replicas", model=uid) == 1
        assert value(found, "fleet_model_scale_events_total", model=uid, direction="up") == 1
        assert value(found, "fleet_model_scale_events_total", model=uid, direction="down") == 2
        assert value(found, "fleet_model_replicas_waiting_for_capacity", model=uid) == 0
        _changed_while_serving(cluster, uid)
        _to_zero_and_back(cluster, uid)
    finally:
        client.terminate_model(uid)


def _events_say_why(client: Client, uid: str) -> None:
    events = client.model_events(uid)
    steps = [(e["kind"], e["from"], e["to"]) for e in events]
    # 8 clients at 1 in flight each need 8 replicas: one step to the 3 allowed; down one at a time.
    assert steps == [("scale_up", 1, 3), ("scale_down", 3, 2), ("scale_down", 2, 1)], events
    assert "above 1 per replica for 1s" in events[0]["reason"]
    assert all("at 1 each for 3s" in e["reason"] for e in events[1:])
    assert events == sorted(events, key=lambda e: e["time"])


def _changed_while_serving(cluster: FleetProcess, uid: str) -> None:
    changed = subprocess.run([sys.executable, "-m", "fleet", "autoscale", "-u", uid, "--max", "2",
                              "--target-inflight", "4", "-e", cluster.endpoint],
                             capture_output=True, text=True, timeout=60)
    assert changed.returncode == 0, changed.stderr
    assert "max_replicas=2" in changed.stdout and "target_inflight=4" in changed.stdout
    saved = saved_models(cluster.home)[uid]
    assert (saved["max_replicas"], saved["target_inflight"], saved["replica"]) == (2, 4.0, 1)
    for bad, field in (({"min_replicas": 3}, "min_replicas (3) must not exceed max_replicas (2)"),
                       ({"max_replicas": 0}, "max_replicas"), ({"target_inflight": -1},
                                                                "target_inflight"),
                       ({"max_replica": 2}, "max_replica")):
        refused = httpx.post(f"{cluster.endpoint}/v1/models/{uid}/autoscale", json=bad,
                              timeout=30)
        assert refused.status_code == 400, refused.text
        assert field in refused.json()["error"]["message"]
    missing = httpx.get(f"{cluster.endpoint}/v1/models/nobody/events", timeout=30)
    assert missing.status_code == 404
    # By hand past the bounds: refused rather than undone at the next look.
    past = httpx.post(f"{cluster.endpoint}/v1/models/{uid}/replicas", json={"replica": 2},
                      timeout=30)
    assert past.status_code == 400 and "autoscales between 1 and 2" in past.text


def _to_zero_and_back(cluster: FleetProcess, uid: str) -> None:
    client = Client(cluster.endpoint)
    client.autoscale(uid, min_replicas=0, scale_down_delay=1)
    wait_for(lambda: client.describe_model(uid)["status"] == "idle", timeout=30, step=0.25)
    assert _desired(cluster.endpoint, uid) == 0
    answered = httpx.post(f"{cluster.endpoint}/v1/embeddings", json={"model": uid, "input": "hi"},
                          timeout=120)
    assert answered.status_code == 200, answered.text
    unload, load = client.model_events(uid)[-2:]
    assert (unload["kind"], unload["from"], unload["to"]) == ("unload", 1, 0)
    assert "no request for 1s and min_replicas 0" in unload["reason"]
    assert (load["kind"], load["from"], load["to"]) == ("load", 0, 1)


def test_a_launch_with_bounds_out_of_order_is_refused(cluster, minilm_path):
    refused = httpx.post(f"{cluster.endpoint}/v1/models", timeout=60, json={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_path": minilm_path,
        "min_replicas": 3, "max_replicas": 2})
    assert refused.status_code == 400
    assert "min_replicas (3) must not exceed max_replicas (2)" in refused.json()["error"]["message"]
    assert Client(cluster.endpoint).list_models() == {}
