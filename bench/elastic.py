"""Elastic models (keep_alive, fleet.cluster.supervisor.elastic): what a load on demand costs.

- The time from a request to an idle model to its answer, against `POST /v1/models` of the same
  model until its first answer, in the same run (MiniLM; SmolLM2 GGUF on llama.cpp). Target: the
  load on demand within 0.3 s of the launch.
- The cluster's resident memory (every process of it) with three idle models (loaded once, then
  unloaded by their keep_alive) against the same cluster with none. Target: at most 50 MB more.
- A step load of 1 -> 16 -> 1 clients on MiniLM launched with autoscaling 1..3, against a fixed
  3 replicas (bench/step_load.py). Targets: the high phase's rate, once the up delay has passed,
  at least 0.9 of the fixed launch's; no failed request on either side.

Prints JSON; medians over --runs.

    python bench/elastic.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import free_port, wait_until_up  # noqa: E402
from lifecycle import _minilm_path, _settled_rss_mb  # noqa: E402
from step_load import step_load  # noqa: E402

from tests.builders import _smollm2_gguf  # noqa: E402

TARGETS = {"load_on_demand_added_s": 0.3, "idle_models_added_mb": 50.0,
           "step_high_rate_over_fixed": 0.9, "step_failed_requests": 0}


def _minilm(uid: str) -> dict[str, Any]:
    return {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": uid,
            "model_path": _minilm_path()}


def _smollm2(uid: str) -> dict[str, Any]:
    return {"model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
            "model_format": "gguf", "quantization": "Q4_1", "model_uid": uid,
            "model_path": str(_smollm2_gguf())}


def _embed(endpoint: str, uid: str) -> None:
    answer = httpx.post(f"{endpoint}/v1/embeddings", json={"model": uid, "input": "hello"},
                        timeout=300)
    answer.raise_for_status()


def _chat(endpoint: str, uid: str) -> None:
    answer = httpx.post(f"{endpoint}/v1/chat/completions", timeout=300, json={
        "model": uid, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]})
    answer.raise_for_status()


def _launch(endpoint: str, body: dict[str, Any]) -> None:
    httpx.post(f"{endpoint}/v1/models", json=body, timeout=300).raise_for_status()


def _terminate(endpoint: str, uid: str) -> None:
    httpx.delete(f"{endpoint}/v1/models/{uid}", timeout=120).raise_for_status()


# The worker keeps a spare process with the engine libraries imported, and warms the next one
# after each launch takes it (seconds of a core): each timed step starts once that is done, as
# a launch that is not one of a quick series finds it.
SETTLE_S = 8.0


def launch_then_load(endpoint: str, model: Callable[[str], dict[str, Any]],
                     ask: Callable[[str, str], None], runs: int) -> dict[str, float]:
    """Seconds to an answer: launched and asked, against launched idle and asked (the load on
    demand), alternating."""
    launch_s, on_demand_s = [], []
    for run in range(runs):
        uid = f"launched-{run}"
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        _launch(endpoint, model(uid))
        ask(endpoint, uid)
        launch_s.append(time.perf_counter() - started)
        _terminate(endpoint, uid)
        uid = f"idle-{run}"
        _launch(endpoint, {**model(uid), "idle": True})
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        ask(endpoint, uid)
        on_demand_s.append(time.perf_counter() - started)
        _terminate(endpoint, uid)
    launch, on_demand = statistics.median(launch_s), statistics.median(on_demand_s)
    return {"launch_to_answer_s": round(launch, 3), "load_on_demand_to_answer_s": round(on_demand, 3),
            "load_on_demand_added_s": round(on_demand - launch, 3)}


def idle_memory(endpoint: str, pid: int) -> dict[str, float]:
    """The cluster's memory with no model, then with three that loaded and went idle."""
    empty = _settled_rss_mb(pid)
    for index in range(3):
        uid = f"napper-{index}"
        _launch(endpoint, {**_minilm(uid), "keep_alive": "1s"})
        _embed(endpoint, uid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        models = httpx.get(f"{endpoint}/v1/models", timeout=30).json()["data"]
        if all(m["status"] == "idle" for m in models if m["id"].startswith("napper-")):
            break
        time.sleep(0.2)
    idle = _settled_rss_mb(pid)
    return {"no_model_mb": round(empty, 1), "three_idle_models_mb": round(idle, 1),
            "idle_models_added_mb": round(idle - empty, 1)}


# Autoscaling for the step load: 16 clients are 16 in flight on one replica, 8 on two, 5.3 on
# three, all above a target of 4, so the wave takes the model to its 3; one client fits one.
STEP_AUTOSCALE = {"min_replicas": 1, "max_replicas": 3, "target_inflight": 4.0,
                  "scale_up_delay": 2.0, "scale_down_delay": 10.0}
STEP_PHASES = {"low_s": 5.0, "high_s": 40.0, "settle_s": 15.0, "tail_s": 20.0}


def _ready_replicas(endpoint: str, uid: str) -> int:
    model = httpx.get(f"{endpoint}/v1/models/{uid}", timeout=30).json()
    return sum(r["state"] == "ready" for r in model["replicas"])


def step_against_fixed(endpoint: str) -> dict[str, Any]:
    """The step load on MiniLM autoscaled 1..3, then on MiniLM with a fixed 3 replicas."""
    _launch(endpoint, {**_minilm("autoscaled"), **STEP_AUTOSCALE})
    time.sleep(SETTLE_S)
    autoscaled = step_load(endpoint, "autoscaled", **STEP_PHASES)
    _terminate(endpoint, "autoscaled")
    _launch(endpoint, {**_minilm("fixed-3"), "replica": 3})
    deadline = time.monotonic() + 120
    while _ready_replicas(endpoint, "fixed-3") < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(SETTLE_S)
    fixed = step_load(endpoint, "fixed-3", **STEP_PHASES)
    _terminate(endpoint, "fixed-3")
    return {"autoscaled_1_to_3": autoscaled, "fixed_3": fixed, "settings": STEP_AUTOSCALE,
            "phases": STEP_PHASES,
            "high_rate_over_fixed": round(autoscaled["high_phase_requests_per_s"]
                                          / fixed["high_phase_requests_per_s"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        process = subprocess.Popen([sys.executable, "-m", "fleet", "local", "-p", str(port)],
                                   env={**os.environ, "FLEET_HOME": home},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(f"{endpoint}/status", process, 60)
            report = {
                "minilm": launch_then_load(endpoint, _minilm, _embed, args.runs),
                "smollm2_gguf": launch_then_load(endpoint, _smollm2, _chat, args.runs),
                "memory": idle_memory(endpoint, process.pid),
                "step_load": step_against_fixed(endpoint),
                "targets": TARGETS,
            }
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
