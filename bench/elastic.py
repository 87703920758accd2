"""Elastic models (keep_alive, fleet.cluster.supervisor.elastic): what a load on demand costs.

- The time from a request to an idle model to its answer, against `POST /v1/models` of the same
  model until its first answer, in the same run (MiniLM; SmolLM2 GGUF on llama.cpp). Target: the
  load on demand within 0.3 s of the launch.
- The cluster's resident memory (every process of it) with three idle models (loaded once, then
  unloaded by their keep_alive) against the same cluster with none. Target: at most 50 MB more.

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

from tests.builders import _smollm2_gguf  # noqa: E402

TARGETS = {"load_on_demand_added_s": 0.3, "idle_models_added_mb": 50.0}


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
                "targets": TARGETS,
            }
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
