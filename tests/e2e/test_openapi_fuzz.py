"""Property-based testing of the whole API from its own OpenAPI document: schemathesis reads
/openapi.json of a real `fleet local` serving the real MiniLM and the real SmolLM2 GGUF (llama.cpp)
and sends what the document allows (and, in its negative mode, what it forbids) to every
operation. Its checks hold the server to the document: no 5xx, every status documented, every
answer's content type, headers (a 429's Retry-After, a 405's Allow), JSON body and server-sent
events as documented, schema-invalid requests refused, and ("positive_data_acceptance")
schema-valid requests accepted.

Left out, each for a reason:
- POST /v1/models, DELETE /v1/models/{model_uid}, POST /v1/models/{model_uid}/cancel, and
  POST /v1/models/{model_uid}/replicas, DELETE /v1/models/{model_uid}/replicas/{replica_id},
  POST /v1/models/{model_uid}/autoscale: they launch and stop models and replicas (autoscale's
  bounds at once: a min_replicas of 41 starts 41 processes). A launch by a catalogue name
  downloads from the hub (unreachable here: a 503 after the network gives up), a replica takes
  seconds to start (over schemathesis' response time limit), and the stateful phase stops the
  uids that GET /v1/models lists, the very models this run needs. tests/e2e/test_bad_input.py,
  test_hostile_input.py and the scaling and autoscaling tests send them bad bodies.
- POST /v1/keys: the first admin key it made would turn keys on for the rest of the run
  (tests/e2e/test_keys_api.py sends it bad bodies).
- From the inference bodies, `keep_alive` (STATEFUL): it changes the model, not the answer.
- From the acceptance check only (ACCEPTANCE_LEFT_OUT): what a schema-valid request may rightly
  be refused for that no document can say. A model name that the catalogue does not hold is a
  400 (Xinference's answer) for GET /v1/models/estimate and /v1/engines/..., and a family to
  register follows the catalogue's schema, not the document's; a built-in family, or one that a
  running model uses, cannot be unregistered; a key's `expires_at` must be to come, which a
  date-time schema cannot say (PATCH /v1/keys/{key_id}), nor that GET /v1/usage's `start` must
  be before its `end`.

Three runs, on the document as served but for what each says:
1. Every operation, positive and negative, every check but acceptance; the inference routes
   name MiniLM (`model` made an enum of its uid), so their bodies reach a real engine instead of
   a 404 for a random name (which test_bad_input.py covers). Chat and completions then get 400s
   (an embedding model), and what depends on the model (its dimensions, its vocabulary) is
   refused as well: this run cannot check acceptance.
2. Chat, completions, Anthropic's Messages and OpenAI's Responses on SmolLM2, positive only,
   acceptance included, on a narrower document (plain messages, at most 4 tokens and 2
   choices, no tools, logit_bias or structured output, NOT_FUZZED, MESSAGES_NOT_FUZZED and
   RESPONSES_NOT_FUZZED) so that most requests are answered, whole and streamed (Anthropic's
   and the Responses API's named events too), and each answer is
   checked against its schema, in a time that fits. The narrower document is not the server's
   (it takes more), so its negative cases would be wrong.
3. Acceptance on every operation but the left-out: positive only, `model` left a free string,
   so that a schema-valid body passes validation and meets the 404 of an unknown model, and
   anything else is the document promising more than the server takes. What the generator
   cannot draw is given (_acceptance_document): the cluster's worker address, a JSON object
   for a field that holds one as text ("{}": the coverage phase does not read
   contentMediaType), and no multipart `encoding` (with one, the coverage phase leaves the
   form's required text fields empty). Rules across fields of chat, completions and Messages
   are out of its document (ACROSS_FIELDS, MESSAGES_ACROSS_FIELDS). A Messages body meets the
   404 before its content is judged (an image block is refused for what the model is).
   tests/e2e/schemathesis_hooks.py gives files real images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import _smollm2_gguf

MODEL_UID = "fuzz-minilm"
LLM_UID = "fuzz-smol"
MAX_EXAMPLES = 20  # per operation and phase
LLM_EXAMPLES = 6  # generation costs more
INFERENCE = ("EmbeddingRequest", "RerankRequest", "ChatCompletionRequest", "CompletionRequest",
             "MessagesRequest", "CountTokensRequest", "ResponsesRequest")
GENERATION = ("ChatCompletionRequest", "CompletionRequest")
# Anthropic's Messages API: its bodies, and what run 2 leaves out of them (as NOT_FUZZED).
MESSAGES = ("MessagesRequest", "CountTokensRequest")
MESSAGES_NOT_FUZZED = ("tools", "tool_choice", "output_config", "output_format", "thinking")
# OpenAI's Responses API: what run 2 leaves out of its body (as NOT_FUZZED), and a
# previous_response_id, which names a stored response only by chance (a 404 otherwise).
RESPONSES_NOT_FUZZED = ("tools", "tool_choice", "text", "reasoning", "parallel_tool_calls",
                        "previous_response_id")
# What the narrower document of run 2 leaves out of generation requests: tools and structured
# output (tests/e2e/test_structured_output.py), what llama.cpp cannot do or Fleet does not
# support, and top_logprobs, whose rule across fields (it needs logprobs=true) triples the
# coverage phase's cases.
NOT_FUZZED = ("logit_bias", "tools", "tool_choice", "response_format", "chat_template_kwargs",
              "echo", "suffix", "best_of", "metadata", "parallel_tool_calls", "guided_json",
              "guided_regex", "guided_choice", "guided_grammar", "top_logprobs")
# Rules across the fields of chat and completions, which a schema cannot say and the API
# checks (fleet.generation.structured): one structured-output constraint at a time, a forced
# tool named among the tools, best_of equal to n. Run 3 leaves these fields out.
ACROSS_FIELDS = ("response_format", "tool_choice", "guided_json", "guided_regex",
                 "guided_grammar", "best_of")
# The Messages bodies' one rule across fields: output_format and output_config.format, not both.
MESSAGES_ACROSS_FIELDS = ("output_format",)
# What changes the model rather than the answer, left out of every run's inference bodies:
# a request's keep_alive becomes its model's (0 unloads it after each answer, and the next one
# waits for a load), and one of more than a year, which the pattern cannot bound, is refused.
# tests/e2e/test_elastic.py sends it.
STATEFUL = ("keep_alive",)
# FastAPI's operation ids of the routes left out (see the top).
LEFT_OUT = "^(launch_model|terminate_model|cancel_launch|add_model_replica|" \
           "terminate_model_replica|set_autoscale|create_key)_"
LEFT_OUT_COUNT = 7
ACCEPTANCE_LEFT_OUT = "^(launch_model|terminate_model|cancel_launch|add_model_replica|" \
                      "terminate_model_replica|set_autoscale|estimate_launch|engines|" \
                      "register_model|unregister_model|create_key|update_key|usage)_"
ACCEPTANCE_LEFT_OUT_COUNT = 14  # `engines`: both
ROOT = Path(__file__).resolve().parents[2]
CONFIG = "hooks = \"tests.e2e.schemathesis_hooks\"\n"


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


def _write(document: dict[str, Any], path: Path) -> Path:
    for name in INFERENCE:
        for field in STATEFUL:
            document["components"]["schemas"][name]["properties"].pop(field, None)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _document_for_the_fuzzer(endpoint: str, path: Path) -> Path:
    document = httpx.get(f"{endpoint}/openapi.json").json()
    schemas = document["components"]["schemas"]
    for name in INFERENCE:
        schemas[name]["properties"]["model"] = {"type": "string", "enum": [MODEL_UID]}
    return _write(document, path)


def _generation_document(endpoint: str, path: Path) -> Path:
    """Run 2's document: cheap generation requests that the model can mostly answer."""
    document = httpx.get(f"{endpoint}/openapi.json").json()
    schemas = document["components"]["schemas"]
    message = {"type": "object", "additionalProperties": False, "required": ["role", "content"],
               "properties": {"role": {"enum": ["system", "user", "assistant"]},
                              "content": {"type": "string", "maxLength": 200}}}
    schemas["ChatCompletionRequest"]["properties"]["messages"] = {
        "type": "array", "items": message, "minItems": 1, "maxItems": 3}
    schemas["ChatCompletionRequest"].pop("anyOf")  # top_logprobs' rule; the field is left out
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
    turn = {"type": "object", "additionalProperties": False, "required": ["role", "content"],
            "properties": {"role": {"enum": ["user", "assistant"]},
                           "content": {"type": "string", "maxLength": 200}}}
    properties = schemas["MessagesRequest"]["properties"]
    properties["model"] = {"type": "string", "enum": [LLM_UID]}
    properties["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": 4}
    properties["messages"] = {"type": "array", "items": turn, "minItems": 1, "maxItems": 3}
    for field in MESSAGES_NOT_FUZZED:
        properties.pop(field, None)
    properties = schemas["ResponsesRequest"]["properties"]
    properties["model"] = {"type": "string", "enum": [LLM_UID]}
    properties["max_output_tokens"] = {"type": "integer", "minimum": 1, "maximum": 4}
    properties["input"] = {"anyOf": [{"type": "string", "maxLength": 200}, {
        "type": "array", "items": turn, "minItems": 1, "maxItems": 3}]}
    for field in RESPONSES_NOT_FUZZED:
        properties.pop(field, None)
    schemas["ResponsesRequest"]["required"] = ["input", "max_output_tokens", "model"]
    return _write(document, path)


def _json_text_is_an_empty_object(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("contentMediaType") == "application/json":
            node["enum"] = ["{}"]
        for value in node.values():
            _json_text_is_an_empty_object(value)
    elif isinstance(node, list):
        for value in node:
            _json_text_is_an_empty_object(value)


def _acceptance_document(endpoint: str, path: Path) -> Path:
    """Run 3's document (see the top)."""
    document = httpx.get(f"{endpoint}/openapi.json").json()
    workers = [w["address"] for w in httpx.get(f"{endpoint}/v1/workers").json()]
    _json_text_is_an_empty_object(document)
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "worker_ip":
                    parameter["schema"] = {"type": "string", "enum": workers}
            for content in operation.get("requestBody", {}).get("content", {}).values():
                content.pop("encoding", None)
    for name in GENERATION:
        for field in ACROSS_FIELDS:
            document["components"]["schemas"][name]["properties"].pop(field, None)
    for name in MESSAGES:
        for field in MESSAGES_ACROSS_FIELDS:
            document["components"]["schemas"][name]["properties"].pop(field, None)
    return _write(document, path)


def _run_schemathesis(document: Path, endpoint: str, *extra: str) -> str:
    """Schemathesis' report; fails the test when it found anything."""
    config = document.parent / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
        "run", str(document), "--url", endpoint, "--checks", "all",
        # A fixed seed: the same cases on every run (a failure can be replayed); the budget
        # (MAX_EXAMPLES, LLM_EXAMPLES) keeps the runs to minutes on two busy cores.
        "--workers", "1", "--seed", "13",
        # Response time is not what this test measures: two busy cores can take seconds.
        "--request-timeout", "60", "--max-response-time", "60",
        "--no-color", "--suppress-health-check", "all",
        "--generation-database", "none", *extra,
    ]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # the hooks' package
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment,
                         cwd=document.parent)  # where schemathesis leaves its files
    report = run.stdout + run.stderr
    print(report.strip().splitlines()[-1])  # its time, in the output of `pytest -s`
    assert run.returncode == 0, report[-12000:]
    return report


def _operations(document: Path) -> int:
    return len([op for ops in json.loads(document.read_text())["paths"].values() for op in ops])


@pytest.mark.timeout(1200)
def test_the_api_keeps_to_its_own_openapi_document(local_cluster, served, llm, tmp_path):
    endpoint = local_cluster.endpoint
    document = _document_for_the_fuzzer(endpoint, tmp_path / "all" / "openapi.json")
    report = _run_schemathesis(document, endpoint, "--max-examples", str(MAX_EXAMPLES),
                               "--exclude-checks", "positive_data_acceptance",
                               "--exclude-operation-id-regex", LEFT_OUT)
    operations = _operations(document)
    assert f"Selected: {operations - LEFT_OUT_COUNT}/{operations}" in report, report[-3000:]

    generation = _generation_document(endpoint, tmp_path / "generation" / "openapi.json")
    report = _run_schemathesis(generation, endpoint, "--max-examples", str(LLM_EXAMPLES),
                               "--include-path-regex",
                               "(completions|/v1/messages|/v1/responses)$",
                               "--mode", "positive")
    assert "Selected: 4/" in report, report[-3000:]

    accepted = _acceptance_document(endpoint, tmp_path / "acceptance" / "openapi.json")
    report = _run_schemathesis(accepted, endpoint, "--max-examples", str(MAX_EXAMPLES),
                               "--mode", "positive",
                               "--exclude-operation-id-regex", ACCEPTANCE_LEFT_OUT)
    assert f"Selected: {operations - ACCEPTANCE_LEFT_OUT_COUNT}/{operations}" in report, \
        report[-3000:]

    # Both models still serve.
    response = httpx.post(f"{endpoint}/v1/embeddings",
                          json={"model": served, "input": "still serving"}, timeout=60)
    assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384
    response = httpx.post(f"{endpoint}/v1/completions", timeout=60,
                          json={"model": llm, "prompt": "Hello", "max_tokens": 2})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
