"""Workers and supervisors come and go: a supervisor killed and started again adopts the replica
its worker still runs (same process, nothing relaunched), and a worker cut off the network has
its replica relaunched on the other worker, then, back, is reconciled (its stale copy ended)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from functools import partial

import httpx

from fleet.client import Client
from tests.concurrency import ClosedLoop, wait_for
from tests.conftest import FleetProcess, free_port
from tests.e2e.test_distributed import _joining, _wait_for_workers, second_host  # noqa: F401

CUSTOM = {"model_name": "kept-minilm", "dimensions": 384, "max_tokens": 256,
          "language": ["en"], "model_id": "sentence-transformers/all-MiniLM-L6-v2"}


def _answers(endpoint: str, uid: str) -> bool:
    try:
        return httpx.post(f"{endpoint}/v1/embeddings", json={"model": uid, "input": "hi"},
                          timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def _restart(supervisor: FleetProcess, args: list[str]) -> FleetProcess:
    os.kill(supervisor.process.pid, signal.SIGKILL)  # no goodbye to anyone
    supervisor.process.wait()
    return FleetProcess(args, supervisor.home, supervisor.port).wait_ready()


def test_a_restarted_supervisor_adopts_the_replicas_its_workers_still_run(tmp_path, minilm_path):
    port, actor_port = free_port(), free_port()
    fixed = ["supervisor", "-p", str(port), "--actor-port", str(actor_port)]
    supervisor = FleetProcess(fixed, tmp_path / "sup", port).wait_ready()
    worker = FleetProcess(["worker", "-e", supervisor.endpoint, "-H", "127.0.0.1"],
                          tmp_path / "worker",
                          env={**_joining(supervisor), "FLEET_HEARTBEAT_INTERVAL_S": "1"})
    try:
        client = Client(supervisor.endpoint)
        _wait_for_workers(client, 1)
        assert client.cluster_info()[0]["address"].endswith(f":{actor_port}")
        client.register_model("embedding", CUSTOM, persist=True)
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="kept",
                                  model_path=minilm_path)
        pid = client.replicas(uid)[0]["pid"]
        # Once at the same actor port (the worker's heartbeats reach the new supervisor), once
        # at a new one (the worker asks the API where it is now).
        for args in (fixed, ["supervisor", "-p", str(port)]):
            supervisor = _restart(supervisor, args)
            back = time.monotonic()
            wait_for(partial(_answers, supervisor.endpoint, uid), timeout=30, step=0.1)
            answered_after = time.monotonic() - back
            replica = client.describe_model(uid)["replicas"][0]
            assert replica["pid"] == pid and replica["restarts"] == 0, replica
            assert answered_after < 15, answered_after  # the figure is printed by bench/chaos.py
            assert [w["replicas"] for w in client.list_workers()] == [["kept-0"]]
            names = [r["model_name"] for r in client.list_model_registrations("embedding")]
            assert "kept-minilm" in names
        assert "joined the supervisor at" in worker.output() or \
            "joined again" in (supervisor.home / "logs" / "supervisor.log").read_text()
    finally:
        assert worker.stop() == 0, worker.output()
        supervisor.stop()


def _link(device: str, state: str) -> None:
    subprocess.run(["ip", "link", "set", device, state], check=True, capture_output=True)


def test_a_worker_cut_off_is_replaced_and_reconciled_when_it_returns(
        tmp_path, minilm_path, second_host):  # noqa: F811 (the fixture imported above)
    here, there, run_there, device = second_host
    port = free_port()
    fast = {"FLEET_HEARTBEAT_INTERVAL_S": "0.5", "FLEET_WARM_SPARE": "0"}
    # A request caught on the cut-off worker waits 5 s, not the default 600, to be answered 503.
    supervisor = FleetProcess(
        ["supervisor", "-H", here, "-p", str(port), "--insecure-no-auth",
         "--model-root", os.path.dirname(minilm_path)], tmp_path / "sup", port, host=here,
        env={"FLEET_WORKER_TIMEOUT_S": "3", "FLEET_REQUEST_TIMEOUT_S": "5"}).wait_ready()
    env = {**_joining(supervisor), **fast}
    near = FleetProcess(["worker", "-e", supervisor.endpoint, "-H", here], tmp_path / "a", env=env)
    far = FleetProcess(["worker", "-e", supervisor.endpoint], tmp_path / "b", env=env,
                       wrapper=run_there)
    try:
        client = Client(supervisor.endpoint)
        workers = {w["address"].split(":")[0]: w["address"] for w in _wait_for_workers(client, 2)}
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="spread",
                                  model_path=minilm_path, replica=2)
        placed = {r["replica_id"]: r["worker_address"] for r in client.describe_model(uid)["replicas"]}
        assert set(placed.values()) == set(workers.values())  # one replica on each host
        far_replica = next(i for i, w in placed.items() if w == workers[there])
        with ClosedLoop(supervisor.endpoint, uid) as load:
            wait_for(lambda: load.served_after(0) >= 10)
            _link(device, "down")  # the other host is gone from the network
            cut_at = time.monotonic()
            moved = wait_for(lambda: _moved(client, uid, far_replica, workers[here]), timeout=90)
            wait_for(lambda: load.served_after(time.monotonic() - 0.5) > 0, timeout=30)
        assert moved["restarts"] == 1 and "stopped responding" in moved["last_failure"]
        assert load.served_after(cut_at) > 0
        _link(device, "up")  # it comes back, with the copy it kept running
        wait_for(lambda: len(_wait_for_workers(client, 2)) == 2 and
                 _replicas_on(client, workers[there]) == [], timeout=60)
        assert sorted(_replicas_on(client, workers[here])) == ["spread-0", "spread-1"]
        assert all(r["state"] == "ready" for r in client.describe_model(uid)["replicas"])
        print(json.dumps({"failed_during_cut": len(load.failed), "served": len(load.outcomes)}))
    finally:
        _link(device, "up")
        far.stop()
        near.stop()
        supervisor.stop()


def _moved(client: Client, uid: str, replica_id: int, to: str) -> dict | None:
    replica = next(r for r in client.describe_model(uid)["replicas"]
                   if r["replica_id"] == replica_id)
    return replica if replica["state"] == "ready" and replica["worker_address"] == to else None


def _replicas_on(client: Client, address: str) -> list[str] | None:
    for worker in client.list_workers():
        if worker["address"] == address:
            return worker["replicas"]
    return None
