"""Every bad request gets its status code and a readable message in OpenAI's error shape, and
the cluster keeps serving afterwards."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="module")
def http(local_cluster) -> httpx.Client:
    return httpx.Client(base_url=local_cluster.endpoint, timeout=120)


@pytest.fixture(scope="module")
def served(http: httpx.Client, minilm_path: str) -> str:
    body = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
            "model_uid": "served", "model_path": minilm_path}
    assert http.post("/v1/models", json=body).status_code == 200
    return "served"


def _error(response: httpx.Response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    error = body["error"]
    assert set(error) >= {"message", "type", "code"}
    assert body["detail"] == error["message"]
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({}, ["model_name"]),
        ({"model_name": "no-such-model"}, ["no-such-model", "not in the catalogue"]),
        ({"model_name": "all-MiniLM-L6-v2", "replica": 0}, ["replica"]),
        ({"model_name": "all-MiniLM-L6-v2", "replica": "many"}, ["replica"]),
        ({"model_name": "all-MiniLM-L6-v2", "model_type": "video"}, ["unknown model type"]),
        ({"model_name": "all-MiniLM-L6-v2", "model_engine": "warp-drive"}, ["unknown engine"]),
        ({"model_name": "all-MiniLM-L6-v2", "model_format": "gguf"}, ["no variant"]),
        ({"model_name": "all-MiniLM-L6-v2", "model_path": "/does/not/exist"}, ["does not exist"]),
    ],
)
def test_bad_launch_requests_are_400(http, body, fragments):
    _error(http.post("/v1/models", json=body), 400, *fragments)


def test_duplicate_uid_is_400(http, served, minilm_path):
    body = {"model_name": "all-MiniLM-L6-v2", "model_uid": served, "model_path": minilm_path}
    _error(http.post("/v1/models", json=body), 400, "already in use")


def test_unknown_uid_is_404(http):
    _error(http.get("/v1/models/ghost"), 404, "ghost")
    _error(http.delete("/v1/models/ghost"), 404, "ghost")
    _error(http.get("/v1/models/ghost/progress"), 404, "ghost")
    _error(http.post("/v1/embeddings", json={"model": "ghost", "input": "x"}), 404, "ghost")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "served", "input": []}, "empty"),
        ({"model": "served", "input": ""}, "empty"),
        ({"model": "served", "input": [1, 2, 99999999]}, "token ids must be in"),
        ({"model": "served", "input": [[]]}, "empty"),
        ({"model": "served"}, "input"),
        ({"model": "served", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "served", "input": "x", "dimensions": 7}, "dimensions"),
    ],
)
def test_bad_embedding_requests_are_400(http, served, body, fragment):
    _error(http.post("/v1/embeddings", json=body), 400, fragment)


def test_malformed_json_is_400(http):
    response = http.post("/v1/embeddings", content=b"{not json",
                         headers={"content-type": "application/json"})
    _error(response, 400)


def test_engine_failure_is_503_with_the_real_cause_and_leaves_nothing(http, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    body = {"model_name": "all-MiniLM-L6-v2", "model_uid": "broken", "model_path": str(broken)}
    error = _error(http.post("/v1/models", json=body), 503, "sentence_transformers")
    assert error["type"] == "launch_error"
    described = http.get("/v1/models/broken").json()
    assert described["status"] == "failed" and "sentence_transformers" in described["error"]
    replicas = http.get("/v1/models/broken/replicas").json()
    assert replicas[0]["state"] == "failed" and replicas[0]["error"] == described["error"]
    workers = http.get("/v1/workers").json()
    assert all("broken-0" not in w["replicas"] for w in workers)
    assert http.delete("/v1/models/broken").status_code == 200


def test_download_without_hub_fails_fast_and_names_model_path(http):
    body = {"model_name": "bge-small-en-v1.5", "model_type": "embedding", "model_uid": "hubless"}
    error = _error(http.post("/v1/models", json=body), 503, "--model-path")
    assert "BAAI/bge-small-en-v1.5" in error["message"]
    http.delete("/v1/models/hubless")


def test_registration_errors(http):
    _error(http.post("/v1/model_registrations/embedding", json={"model": "{oops"}), 400, "JSON")
    builtin = {"model_name": "all-MiniLM-L6-v2", "dimensions": 384, "model_id": "x/y"}
    _error(http.post("/v1/model_registrations/embedding", json={"model": builtin}), 400, "built-in")
    no_dims = {"model_name": "custom-x", "model_id": "x/y"}
    _error(http.post("/v1/model_registrations/embedding", json={"model": no_dims}), 400, "dimensions")
    _error(http.delete("/v1/model_registrations/embedding/all-MiniLM-L6-v2"), 400, "built-in")
    _error(http.delete("/v1/model_registrations/embedding/never-registered"), 404, "never-registered")
    _error(http.get("/v1/model_registrations/video"), 400, "unknown model type")


def test_cluster_still_serves_after_all_that(http, served):
    response = http.post("/v1/embeddings", json={"model": served, "input": ["still alive"]})
    assert response.status_code == 200
    assert len(response.json()["data"][0]["embedding"]) == 384
    assert http.get("/status").json()["status"] == "ok"
