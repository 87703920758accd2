"""Property-based testing of the whole API from its own OpenAPI document: schemathesis reads
/openapi.json of a real `fleet local` serving the real MiniLM and the real SmolLM2 GGUF (llama.cpp)
and sends what the document allows (and, in its negative mode, what it forbids) to every
operation. Its checks hold the server to the document: no 5xx, every status documented, every
answer's content type, headers (a 429's Retry-After, a 405's Allow), JSON body and server-sent
events as documented, and schema-invalid requests refused.

Not checked: "positive_data_acceptance" (every schema-valid request accepted), which no server
with a catalogue can pass: `{"model_name": "0"}` is valid JSON for a launch and still names no
model.

Left out, each for a reason:
- POST /v1/models, DELETE /v1/models/{model_uid}, POST /v1/models/{model_uid}/cancel, and
  POST /v1/models/{model_uid}/replicas, DELETE /v1/models/{model_uid}/replicas/{replica_id}:
  they launch and stop models and replicas. A launch by a catalogue name downloads from the hub
  (unreachable here: a 503 after the network gives up), a replica takes seconds to start (over
  schemathesis' response time limit), and the stateful phase stops the uids that GET /v1/models
  lists, the very models this run needs. tests/e2e/test_bad_input.py, test_hostile_input.py and
  the scaling tests send them bad bodies.

Two runs, on the document as served but for `model`:
1. Every other operation, positive and negative; the inference routes name MiniLM (`model` made
   an enum of its uid), so their bodies reach a real engine instead of a 404 for a random name
   (which test_bad_input.py covers). Chat and completions then get 400s (an embedding model).
2. Chat and completions on SmolLM2, positive only, on a narrower document (plain messages, at
   most 4 tokens and 2 choices, no tools or logit_bias) so that most requests are answered,
   whole and streamed, and each answer is checked against its schema, in a time that fits. The
   narrower document is not the server's (it takes more), so its negative cases would be wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.builders import _smollm2_gguf

MODEL_UID = "fuzz-minilm"
LLM_UID = "fuzz-smol"
MAX_EXAMPLES = 20  # per operation and phase
LLM_EXAMPLES = 6  # generation costs more
INFERENCE = ("EmbeddingRequest", "RerankRequest", "ChatCompletionRequest", "CompletionRequest")
GENERATION = ("ChatCompletionRequest", "CompletionRequest")
# What the narrower document of run 2 leaves out of generation requests.
NOT_FUZZED = ("logit_bias", "tools", "tool_choice", "response_format", "chat_template_kwargs",
              "echo", "suffix", "best_of", "metadata", "parallel_tool_calls")
# FastAPI's operation ids of the routes left out (see the top).
LEFT_OUT = "^(launch_model|terminate_model|cancel_launch|add_model_replica|terminate_model_replica)_"
LEFT_OUT_COUNT = 5


@pytest.fixture(scope="module")
def served(local_cluster, minilm_path: str) -> str:
    body = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
            "model_uid": MODEL_UID, "model_path": minilm_path}
    response = httpx.post(f"{local_cluster.endpoint}/v1/models", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return MODEL_UID


@pytest.fixture(scope="module")
def llm(local_cluster) -> str:
    body = {"model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
            "model_format": "gguf", "quantization": "Q4_1", "model_uid": LLM_UID,
            "model_path": str(_smollm2_gguf()), "n_parallel": 2}
    response = httpx.post(f"{local_cluster.endpoint}/v1/models", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return LLM_UID


def _document_for_the_fuzzer(endpoint: str, path: Path) -> Path:
    document = httpx.get(f"{endpoint}/openapi.json").json()
    schemas = document["components"]["schemas"]
    for name in INFERENCE:
        schemas[name]["properties"]["model"] = {"type": "string", "enum": [MODEL_UID]}
    path.write_text(json.dumps(document))
    return path


def _generation_document(endpoint: str, path: Path) -> Path:
    """Run 2's document: cheap generation requests that the model can mostly answer."""
    document = httpx.get(f"{endpoint}/openapi.json").json()
    schemas = document["components"]["schemas"]
    message = {"type": "object", "additionalProperties": False, "required": ["role", "content"],
               "properties": {"role": {"enum": ["system", "user", "assistant"]},
                              "content": {"type": "string", "maxLength": 200}}}
    schemas["ChatCompletionRequest"]["properties"]["messages"] = {
        "type": "array", "items": message, "minItems": 1, "maxItems": 3}
    schemas["CompletionRequest"]["properties"]["prompt"] = {
        "type": "string", "minLength": 1, "maxLength": 200}
    for name in GENERATION:
        properties = schemas[name]["properties"]
        properties["model"] = {"type": "string", "enum": [LLM_UID]}
        properties["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": 4}
        properties.pop("max_completion_tokens", None)
        properties["n"]["maximum"] = 2
        for field in NOT_FUZZED:
            properties.pop(field, None)
        schemas[name]["required"] = sorted({*schemas[name].get("required", ()), "max_tokens"})
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _run_schemathesis(document: Path, endpoint: str, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(document), "--url", endpoint,
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        # A fixed seed: the same cases on every run (a failure can be replayed); the budget
        # (MAX_EXAMPLES, LLM_EXAMPLES) keeps both runs near a minute on two busy cores.
        "--workers", "1", "--seed", "13",
        # Response time is not what this test measures: two busy cores can take seconds.
        "--request-timeout", "60", "--max-response-time", "60",
        "--no-color", "--suppress-health-check", "all",
        "--generation-database", "none", *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=240,
                          cwd=document.parent)  # where schemathesis leaves its files


@pytest.mark.timeout(300)
def test_the_api_keeps_to_its_own_openapi_document(local_cluster, served, llm, tmp_path):
    endpoint = local_cluster.endpoint
    document = _document_for_the_fuzzer(endpoint, tmp_path / "openapi.json")
    run = _run_schemathesis(document, endpoint, "--max-examples", str(MAX_EXAMPLES),
                            "--exclude-operation-id-regex", LEFT_OUT)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:]
    operations = len([op for ops in json.loads(document.read_text())["paths"].values() for op in ops])
    assert f"Selected: {operations - LEFT_OUT_COUNT}/{operations}" in report, report[-3000:]

    generation = _generation_document(endpoint, tmp_path / "generation" / "openapi.json")
    run = _run_schemathesis(generation, endpoint, "--max-examples", str(LLM_EXAMPLES),
                            "--include-path-regex", "completions$", "--mode", "positive")
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-12000:]
    assert "Selected: 2/" in report, report[-3000:]

    # Both models still serve.
    response = httpx.post(f"{endpoint}/v1/embeddings",
                          json={"model": served, "input": "still serving"}, timeout=60)
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384
    response = httpx.post(f"{endpoint}/v1/completions", timeout=60,
                          json={"model": llm, "prompt": "Hello", "max_tokens": 2})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
