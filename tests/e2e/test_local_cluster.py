"""A real `fleet local` serving the real all-MiniLM-L6-v2, driven through every client."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from fleet.client import Client

TEXTS = ["The capital of France is Paris.", "Embeddings map text to vectors.", "hello"]


@pytest.fixture(scope="module")
def reference_model(minilm_path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


@pytest.fixture(scope="module")
def minilm(client: Client, minilm_path: str) -> str:
    uid = client.launch_model(
        "all-MiniLM-L6-v2", model_type="embedding", model_uid="minilm", model_path=minilm_path
    )
    yield uid
    if uid in client.list_models():
        client.terminate_model(uid)


def _replica_pids(client: Client, uid: str) -> list[int]:
    return [r["pid"] for r in client.replicas(uid)]


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def test_embeddings_match_the_model_in_process(client, minilm, reference_model):
    result = client.get_model(minilm).create_embedding(TEXTS)
    expected = reference_model.encode(TEXTS, convert_to_numpy=True)
    got = np.array([item["embedding"] for item in result["data"]], dtype=np.float32)
    assert [item["index"] for item in result["data"]] == [0, 1, 2]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    tokens = sum(len(reference_model.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert result["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_base64_encoding_carries_the_same_floats(client, minilm, reference_model):
    result = client.get_model(minilm).create_embedding("hello", encoding_format="base64")
    vector = np.frombuffer(base64.b64decode(result["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, reference_model.encode("hello"), atol=1e-6)


def test_openai_sdk(local_cluster, minilm, reference_model):
    import openai

    sdk = openai.OpenAI(base_url=f"{local_cluster.endpoint}/v1", api_key="not-needed")
    # The SDK asks for base64 by default and decodes it itself.
    response = sdk.embeddings.create(model=minilm, input=TEXTS)
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, reference_model.encode(TEXTS), atol=1e-6)
    listed = [m.id for m in sdk.models.list().data]
    assert minilm in listed
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.embeddings.create(model="no-such-model", input="x")
    assert "no-such-model" in str(caught.value)


def test_list_and_describe(client, minilm):
    listed = client.list_models()[minilm]
    assert listed["object"] == "model"
    assert listed["model_type"] == "embedding"
    assert listed["model_engine"] == "sentence_transformers"
    assert listed["status"] == "ready"
    described = client.describe_model(minilm)
    assert described["model_name"] == "all-MiniLM-L6-v2"
    assert described["dimensions"] == 384
    assert described["replicas"][0]["state"] == "ready"


def test_xinference_client_drives_fleet_unchanged(local_cluster, minilm_path, reference_model):
    from xinference_client import RESTfulClient

    xclient = RESTfulClient(local_cluster.endpoint)
    uid = xclient.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding",
                               model_uid="xinf-minilm", model_path=minilm_path)
    assert uid == "xinf-minilm"
    assert uid in xclient.list_models()
    assert xclient.describe_model(uid)["model_type"] == "embedding"
    result = xclient.get_model(uid).create_embedding("hello")
    np.testing.assert_allclose(result["data"][0]["embedding"], reference_model.encode("hello"),
                               atol=1e-6)
    pids = _replica_pids(Client(local_cluster.endpoint), uid)
    xclient.terminate_model(uid)
    assert uid not in xclient.list_models()
    assert all(_wait_gone(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="not running"):
        xclient.describe_model(uid)
    names = [r["model_name"] for r in xclient.list_model_registrations("embedding")]
    assert "all-MiniLM-L6-v2" in names


def _fleet(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", endpoint],
                          capture_output=True, text=True, timeout=180)


def test_cli_launch_list_terminate(local_cluster, minilm_path):
    endpoint = local_cluster.endpoint
    launched = _fleet(endpoint, "launch", "-n", "all-MiniLM-L6-v2", "-t", "embedding",
                      "-u", "cli-minilm", "--model-path", minilm_path, "--json")
    assert launched.returncode == 0, launched.stderr
    assert json.loads(launched.stdout)["status"] == "ready"
    listed = _fleet(endpoint, "list", "--json")
    assert "cli-minilm" in [m["id"] for m in json.loads(listed.stdout)]
    table = _fleet(endpoint, "list")
    assert "cli-minilm" in table.stdout and "sentence_transformers" in table.stdout
    pids = _replica_pids(Client(endpoint), "cli-minilm")
    assert _fleet(endpoint, "terminate", "-u", "cli-minilm").returncode == 0
    assert all(_wait_gone(pid) for pid in pids)
    missing = _fleet(endpoint, "terminate", "-u", "cli-minilm")
    assert missing.returncode == 1
    assert "not running" in missing.stderr


def test_cli_engine_and_registrations(local_cluster):
    engines = _fleet(local_cluster.endpoint, "engine", "all-MiniLM-L6-v2", "--json")
    rows = {e["engine"]: e for e in json.loads(engines.stdout)["engines"]}
    assert rows["sentence_transformers"]["available"] is True
    registered = _fleet(local_cluster.endpoint, "registrations", "-t", "embedding")
    assert "bge-small-en-v1.5" in registered.stdout


def test_replicas_are_balanced_and_terminate_frees_every_process(client, minilm_path):
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="two",
                              model_path=minilm_path, replica=2)
    handle = client.get_model(uid)
    for _ in range(6):
        handle.create_embedding("balanced")
    replicas = client.replicas(uid)
    assert len(replicas) == 2 and len({r["pid"] for r in replicas}) == 2
    assert [r["requests_served"] for r in replicas] == [3, 3]
    client.terminate_model(uid)
    assert all(_wait_gone(r["pid"]) for r in replicas)
    assert uid not in client.list_models()


def test_docs_auth_status_and_cluster_info(local_cluster):
    import httpx

    base = local_cluster.endpoint
    assert httpx.get(f"{base}/docs").status_code == 200
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    assert {"/v1/models", "/v1/embeddings", "/v1/model_registrations/{model_type}"} <= set(paths)
    assert httpx.get(f"{base}/v1/cluster/auth").json() == {"auth": False}
    nodes = httpx.get(f"{base}/v1/cluster/info").json()
    assert [n["node_type"] for n in nodes] == ["Supervisor", "Worker"]
    assert nodes[1]["resources"]["memory_total"] > 0
    status = _fleet(base, "status")
    assert status.returncode == 0 and "Worker" in status.stdout


def test_logs_are_written_under_fleet_home(local_cluster):
    log = local_cluster.home / "logs" / "local.log"
    assert "Fleet API listening" in log.read_text()


def test_terminate_during_launch_leaves_no_process(client, minilm_path):
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="hasty",
                              model_path=minilm_path, wait_ready=False)
    client.terminate_model(uid)
    assert uid not in client.list_models()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = [r for w in client.list_workers() for r in w["replicas"] if r.startswith("hasty")]
        if not live:
            break
        time.sleep(0.2)
    assert not live
    # The uid is free again and the cluster still launches.
    assert client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="hasty",
                               model_path=minilm_path) == "hasty"
    client.terminate_model("hasty")
