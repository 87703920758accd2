"""Every bad request gets its status code and a readable message in OpenAI's error shape, and
the cluster keeps serving afterwards."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image


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


def _nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


EMBEDDING_FAMILY = {"version": 2, "dimensions": 384, "max_tokens": 512,
                    "model_specs": [{"model_format": "pytorch", "model_id": "x/y"}]}


@pytest.mark.parametrize("as_text", [False, True])
def test_a_registration_nested_500_levels_is_400_and_listings_still_work(http, as_text):
    family = {**EMBEDDING_FAMILY, "model_name": "deep-family", "extra": _nested(500)}
    model = json.dumps(family) if as_text else family
    error = _error(http.post("/v1/model_registrations/embedding", json={"model": model}), 400,
                   "nested 502 levels deep", "limit of 32", "FLEET_MAX_JSON_DEPTH")
    assert error["code"] == "too_deep"
    listed = http.get("/v1/model_registrations/embedding", params={"detailed": "true"})
    assert listed.status_code == 200
    assert "deep-family" not in [row["model_name"] for row in listed.json()]


def test_engine_options_nested_too_deep_are_400(http, minilm_path):
    body = {"model_name": "all-MiniLM-L6-v2", "model_uid": "deep-options",
            "model_path": minilm_path, "trust_remote_code": _nested(100)}
    _error(http.post("/v1/models", json=body), 400, "trust_remote_code is nested 101 levels deep")


def test_a_model_name_longer_than_a_file_name_takes_is_400(http):
    family = {**EMBEDDING_FAMILY, "model_name": "é" * 200}  # 200 characters, 400 bytes
    _error(http.post("/v1/model_registrations/embedding", json={"model": family}), 400,
           "model_name is 400 bytes in UTF-8, more than 200")
    family = {**EMBEDDING_FAMILY, "model_name": "é" * 100}  # 200 bytes: registered, and kept
    assert http.post("/v1/model_registrations/embedding", json={"model": family}).status_code == 200
    assert http.get(f"/v1/model_registrations/embedding/{'é' * 100}").status_code == 200
    assert http.delete(f"/v1/model_registrations/embedding/{'é' * 100}").status_code == 200


def test_a_cache_folder_name_longer_than_a_file_name_takes_is_400(http):
    family = {"version": 2, "model_name": "x" * 150, "model_ability": ["generate"],
              "model_specs": [{"model_format": "gguf", "model_size_in_billions": 1,
                               "quantizations": ["q" * 100], "model_id": "x/y"}]}
    _error(http.post("/v1/model_registrations/LLM", json={"model": family}), 400,
           "the cache folder of this variant", "more than a file name may be (255)")


# ---- the OpenAPI document and the server agree (issue 25's schemathesis findings) ----------
# Each request is one that the document allowed and the server refused (or the other way): the
# document now says what the server does. A body meant to pass validation names a model that
# does not exist, so that its answer is the 404 of the routing that comes after validation.
@pytest.fixture(scope="module")
def document(http) -> dict:
    return http.get("/openapi.json").json()


def _schema(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def _parameter(document: dict, method: str, path: str, name: str) -> dict:
    operation = document["paths"][path][method]
    return next(p for p in operation["parameters"] if p["name"] == name)


def test_model_type_is_an_enum_in_the_document_and_the_server(http, document):
    for method, path in (("get", "/v1/model_registrations/{model_type}"),
                         ("get", "/v1/engines/{model_type}/{model_name}"),
                         ("delete", "/v1/model_registrations/{model_type}/{model_name}")):
        schema = _parameter(document, method, path, "model_type")["schema"]
        assert schema["enum"] == ["LLM", "embedding", "rerank", "image", "audio"]
    _error(http.get("/v1/model_registrations/0"), 400, "unknown model type '0'")
    assert http.get("/v1/model_registrations/embedding").status_code == 200
    assert http.get("/v1/model_registrations/llm").status_code == 200  # "in any case"


@pytest.mark.parametrize(("method", "path"), [("get", "/v1/cache/models/files"),
                                              ("delete", "/v1/cache/models")])
def test_model_version_is_required_in_the_document_and_the_server(http, document, method, path):
    parameter = _parameter(document, method, path, "model_version")
    assert parameter["required"] is True and parameter["schema"]["minLength"] == 1
    _error(http.request(method.upper(), path), 400, "model_version")
    _error(http.request(method.upper(), path, params={"model_version": ""}), 400,
           "model_version is required")
    found = http.request(method.upper(), path, params={"model_version": "not-cached-here"})
    assert found.status_code in (200, 404), found.text  # a valid name: looked for


@pytest.mark.parametrize("empty", ["", [""], [], [[]], ["x", ""]])
def test_empty_inputs_are_refused_by_the_document_and_the_server(http, document, served, empty):
    members = _schema(document, "EmbeddingRequest")["properties"]["input"]["anyOf"]
    assert [m.get("minLength", m.get("minItems")) for m in members] == [1, 1, 1, 1]
    assert members[1]["items"]["minLength"] == 1 and members[3]["items"]["minItems"] == 1
    _error(http.post("/v1/embeddings", json={"model": served, "input": empty}), 400,
           "must not be empty")
    rerank = {"model": "ghost", "query": "q", "documents": ["fine", ""]}
    _error(http.post("/v1/rerank", json=rerank), 400, "documents.1: must not be empty")


def test_max_chunks_per_doc_is_documented_as_unsupported(http, document):
    field = _schema(document, "RerankRequest")["properties"]["max_chunks_per_doc"]
    assert field["type"] == "null" and field["description"].startswith("Not supported")
    body = {"model": "ghost", "query": "q", "documents": ["d"]}
    assert http.post("/v1/rerank", json={**body, "max_chunks_per_doc": None}).status_code == 404
    _error(http.post("/v1/rerank", json={**body, "max_chunks_per_doc": 5}), 400,
           "max_chunks_per_doc: is not supported")


def test_an_image_seed_is_documented_with_its_exact_limit(http, document):
    seed = _schema(document, "ImageGenerationRequest")["properties"]["seed"]["anyOf"][0]
    assert (seed["minimum"], seed["maximum"]) == (0, 2**63 - 1)  # not 2**63, as a float
    body = {"model": "ghost", "prompt": "a cat"}
    assert http.post("/v1/images/generations", json={**body, "seed": 2**63 - 1}).status_code == 404
    _error(http.post("/v1/images/generations", json={**body, "seed": 2**63}), 400, "seed")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_multipart_fields_are_documented_without_null(http, document):
    form = document["paths"]["/v1/images/variations"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]
    assert form["properties"]["output_format"] == {"const": "png", "title": "Output Format",
                                                   "type": "string"}
    assert form["additionalProperties"] is False
    files = {"image": ("a.png", _png(), "image/png")}
    sent = http.post("/v1/images/variations", files=files,
                     data={"model": "ghost", "output_format": "png"})
    assert sent.status_code == 404, sent.text
    _error(http.post("/v1/images/variations", files=files,
                     data={"model": "ghost", "output_format": "null"}), 400, "output_format")


@pytest.mark.parametrize(("body", "fragment"), [
    ({"guided_choice": []}, "guided_choice: must not be empty"),
    ({"guided_choice": ["yes", ""]}, "guided_choice.1: must not be empty"),
    ({"n": True}, "n: Input should be a valid integer"),
    ({"stream": 1}, "stream: Input should be a valid boolean"),
])
def test_chat_fields_the_document_refuses_are_refused(http, document, body, fragment):
    chat = _schema(document, "ChatCompletionRequest")
    assert chat["properties"]["guided_choice"]["anyOf"][0]["minItems"] == 1
    # The replica's rule, in the document: top_logprobs needs logprobs=true.
    assert chat["anyOf"][1] == {"properties": {"logprobs": {"const": True}},
                                "required": ["logprobs"]}
    request = {"model": "ghost", "messages": [{"role": "user", "content": "hi"}], **body}
    _error(http.post("/v1/chat/completions", json=request), 400, fragment)


def test_whole_numbers_are_integers_as_the_document_says(http, served):
    # JSON Schema's integer is any whole number, 2.0 included.
    response = http.post("/v1/embeddings", json={"model": served, "input": [101.0, 2023, 102]})
    assert response.status_code == 200, response.text
    _error(http.post("/v1/embeddings", json={"model": served, "input": [101.5]}), 400,
           "whole number")
    _error(http.post("/v1/embeddings", json={"model": served, "input": "x", "truncate": 0}), 400,
           "truncate")


def test_cluster_still_serves_after_all_that(http, served):
    response = http.post("/v1/embeddings", json={"model": served, "input": ["still alive"]})
    assert response.status_code == 200
    assert len(response.json()["data"][0]["embedding"]) == 384
    assert http.get("/status").json()["status"] == "ok"
