"""Xinference's names and files against a real `fleet local`: the SmolLM2 GGUF launched as
`ggufv2` through the REST API, xinference-client and Fleet's CLI, and registration files in
Xinference 4.1.0's shape for each model type (LLM, embedding, rerank) registered, read back with
their hub ids and quantizations, and launched with the same meaning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.builders import CORPUS, _smollm2_gguf, build_tiny_cross_encoder
from tests.state_db import saved_family
from tests.xinference_files import (
    CHATML,
    SMOL_HF,
    SMOL_MS,
    SMOL_TEMPLATE,
    embedding_registration,
    llm_catalogue_entry,
    llm_registration,
    rerank_registration,
)

GERMANY = [{"role": "user", "content": "What is the capital of Germany?"}]
SHORT = {"max_tokens": 16, "temperature": 0}


@pytest.fixture(scope="module")
def http(local_cluster) -> httpx.Client:
    return httpx.Client(base_url=local_cluster.endpoint, timeout=120)


@pytest.fixture(scope="module")
def xclient(local_cluster):
    from xinference_client import RESTfulClient

    return RESTfulClient(local_cluster.endpoint)


@pytest.fixture(scope="module")
def gguf() -> Path:
    return _smollm2_gguf()


def _chat(http: httpx.Client, uid: str) -> dict:
    reply = http.post("/v1/chat/completions", json={"model": uid, "messages": GERMANY, **SHORT})
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def rest_smol(http: httpx.Client, gguf: Path) -> str:
    """The built-in SmolLM2 launched as `ggufv2` over REST; the reference the custom ones are
    compared with."""
    reply = http.post("/v1/models", json={
        "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
        "model_format": "ggufv2", "quantization": "Q4_1", "model_path": str(gguf),
        "model_uid": "rest-ggufv2"})
    assert reply.status_code == 200, reply.text
    return reply.json()["model_uid"]


def test_ggufv2_over_rest_launches_the_gguf_variant_and_chats(http, rest_smol, gguf):
    described = http.get(f"/v1/models/{rest_smol}").json()
    assert (described["model_format"], described["quantization"]) == ("gguf", "Q4_1")
    assert described["model_engine"] == "llama.cpp" and described["status"] == "ready"
    assert "Berlin" in _chat(http, rest_smol)["choices"][0]["message"]["content"]
    plan = http.get("/v1/models/estimate", params={
        "model_name": "smollm2-instruct", "model_format": "ggufv2", "quantization": "Q8_0",
        "model_path": str(gguf)}).json()
    assert (plan["model_format"], plan["quantization"], plan["model_engine"]) == (
        "gguf", "Q8_0", "llama.cpp")


def test_an_unknown_format_is_refused_with_the_variants_there_are(http, gguf):
    reply = http.post("/v1/models", json={"model_name": "smollm2-instruct", "model_type": "LLM",
                                          "model_format": "ggufv3", "model_path": str(gguf)})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "spec_not_found" and "gguf 0.135B" in error["message"]


def test_ggufv2_through_xinference_client(xclient, http, rest_smol, gguf):
    engines = xclient.query_engine_by_model_name("smollm2-instruct", model_type="LLM")
    assert {p["model_format"] for p in engines["llama.cpp"]} == {"ggufv2"}
    uid = xclient.launch_model(model_name="smollm2-instruct", model_type="LLM",
                               model_engine="llama.cpp", model_format="ggufv2",
                               quantization="Q4_1", model_path=str(gguf), model_uid="xc-ggufv2")
    assert xclient.list_models()[uid]["model_format"] == "gguf"
    answer = xclient.get_model(uid).chat(messages=GERMANY, generate_config=SHORT)
    # The same file and variant as the REST launch: the same answer at temperature 0.
    assert answer["choices"][0]["message"]["content"] == \
        _chat(http, rest_smol)["choices"][0]["message"]["content"]
    xclient.terminate_model(uid)
    assert uid not in xclient.list_models()


def test_fleet_cli_launch_with_ggufv2(local_cluster, gguf):
    def fleet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", local_cluster.endpoint],
                              capture_output=True, text=True, timeout=180)

    dry = fleet("launch", "-n", "smollm2-instruct", "-f", "ggufv2", "-q", "Q4_1",
                "--model-path", str(gguf), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["model_format"] == "gguf"
    launched = fleet("launch", "-n", "smollm2-instruct", "-en", "llama.cpp", "-f", "ggufv2",
                     "-q", "Q4_1", "--model-path", str(gguf), "-u", "cli-ggufv2", "--json")
    assert launched.returncode == 0, launched.stderr
    described = json.loads(launched.stdout)
    assert (described["status"], described["model_format"]) == ("ready", "gguf")
    assert fleet("terminate", "cli-ggufv2").returncode == 0


def test_llm_registration_file_registers_reads_back_and_launches(
        local_cluster, http, xclient, rest_smol, gguf):
    """Xinference's registration shape: flat specs per hub and quantization, `ggufv2`, a
    model_uri folder with a file name template, and model_family for the chat formatting."""
    data = llm_registration("xinf-smol-file", gguf.parent)
    reply = http.post("/v1/model_registrations/LLM", json={"model": json.dumps(data),
                                                           "persist": True})
    assert reply.status_code == 200, reply.text
    shown = xclient.get_model_registration("LLM", "xinf-smol-file")
    [spec] = shown["model_specs"]
    assert (spec["model_format"], spec["quantizations"]) == ("gguf", ["Q4_1", "Q8_0"])
    assert (spec["model_id"], spec["modelscope_model_id"]) == (SMOL_HF, SMOL_MS)
    assert spec["model_file_name_template"] == SMOL_TEMPLATE
    builtin = http.get("/v1/model_registrations/LLM/smollm2-instruct").json()
    assert (shown["stop"], shown["stop_token_ids"]) == (builtin["stop"], builtin["stop_token_ids"])
    assert shown["model_family"] == "smollm2-instruct" and shown["is_builtin"] is False
    saved = saved_family(local_cluster.home, "LLM", "xinf-smol-file")
    assert saved["model_specs"][0]["model_format"] == "gguf"

    # No model path: the registered folder and its file name template say which file.
    uid = xclient.launch_model(model_name="xinf-smol-file", model_type="LLM",
                               model_engine="llama.cpp", model_format="ggufv2",
                               quantization="Q4_1")
    answer = _chat(http, uid)
    reference = _chat(http, rest_smol)
    # The same weights and the same (the file's own) chat template as the built-in family.
    assert answer["usage"] == reference["usage"]
    assert answer["choices"][0]["message"] == reference["choices"][0]["message"]
    xclient.terminate_model(uid)
    xclient.unregister_model("LLM", "xinf-smol-file")
    assert saved_family(local_cluster.home, "LLM", "xinf-smol-file") is None
    assert http.get("/v1/model_registrations/LLM/xinf-smol-file").status_code == 404


def test_llm_catalogue_shaped_file_with_its_own_template(http, xclient, gguf):
    """`model_src` specs with a Hugging Face and a ModelScope source, and a Jinja chat template
    of its own: a chat is that template's prompt, token for token and word for word."""
    import jinja2

    xclient.register_model(model_type="LLM", model=json.dumps(llm_catalogue_entry("xinf-smol-src")),
                           persist=False)
    names = {r["model_name"]: r["is_builtin"] for r in xclient.list_model_registrations("LLM")}
    assert names["xinf-smol-src"] is False
    shown = xclient.get_model_registration("LLM", "xinf-smol-src")
    pytorch, gguf_spec = shown["model_specs"]
    assert pytorch["modelscope_model_id"] == "AI-ModelScope/SmolLM2-135M-Instruct"
    assert (gguf_spec["model_format"], gguf_spec["quantizations"]) == ("gguf", ["Q4_1", "Q8_0"])
    assert gguf_spec["modelscope_model_file_name_template"] == "smollm2-{quantization}.gguf"
    assert shown["chat_template"] == CHATML
    uid = xclient.launch_model(model_name="xinf-smol-src", model_type="LLM",
                               model_engine="llama.cpp", model_format="ggufv2",
                               quantization="Q4_1", model_path=str(gguf))
    answer = _chat(http, uid)
    prompt = jinja2.Template(CHATML).render(messages=GERMANY, add_generation_prompt=True)
    completion = http.post("/v1/completions", json={"model": uid, "prompt": prompt, **SHORT})
    assert answer["usage"] == completion.json()["usage"]
    assert answer["choices"][0]["message"]["content"] == completion.json()["choices"][0]["text"]
    xclient.terminate_model(uid)
    xclient.unregister_model("LLM", "xinf-smol-src")


def test_embedding_registration_file(xclient, minilm_path):
    from sentence_transformers import SentenceTransformer

    data = embedding_registration("xinf-minilm-file", Path(minilm_path))
    xclient.register_model(model_type="embedding", model=json.dumps(data), persist=True)
    shown = xclient.get_model_registration("embedding", "xinf-minilm-file")
    assert (shown["dimensions"], shown["max_tokens"]) == (384, 256)
    assert shown["model_specs"][0]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    uid = xclient.launch_model(model_name="xinf-minilm-file", model_type="embedding")
    assert xclient.describe_model(uid)["dimensions"] == 384
    vector = xclient.get_model(uid).create_embedding("hello")["data"][0]["embedding"]
    expected = SentenceTransformer(minilm_path, device="cpu").encode("hello")
    np.testing.assert_allclose(vector, expected, atol=1e-5)
    xclient.terminate_model(uid)
    xclient.unregister_model("embedding", "xinf-minilm-file")


def test_rerank_registration_file(xclient, tmp_path_factory):
    from sentence_transformers import CrossEncoder

    folder = build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))
    data = rerank_registration("xinf-rerank-file", folder)
    xclient.register_model(model_type="rerank", model=json.dumps(data), persist=True)
    shown = xclient.get_model_registration("rerank", "xinf-rerank-file")
    # "unknown" is Xinference's load-time guess with "normal" as its fallback; null max_tokens
    # is the default; the ModelScope id stays a ModelScope id.
    assert (shown["type"], shown["max_tokens"], shown["language"]) == ("normal", 512, ["en", "zh"])
    [spec] = shown["model_specs"]
    assert spec["modelscope_model_id"] == "tiny/cross-encoder" and "model_id" not in spec
    uid = xclient.launch_model(model_name="xinf-rerank-file", model_type="rerank")
    query, documents = CORPUS[4], CORPUS[:4]
    result = xclient.get_model(uid).rerank(documents, query)
    scores = {r["index"]: r["relevance_score"] for r in result["results"]}
    expected = CrossEncoder(str(folder), device="cpu").predict([(query, d) for d in documents])
    np.testing.assert_allclose([scores[i] for i in range(4)], expected, atol=1e-5)
    xclient.terminate_model(uid)
    xclient.unregister_model("rerank", "xinf-rerank-file")


def test_enable_thinking_at_launch_is_the_chats_default(http, gguf):
    """Xinference's launch option `enable_thinking` (its CLI sends false with every launch) is
    what the chat template sees unless a request's chat_template_kwargs say otherwise."""
    template = ("{% if enable_thinking is defined and not enable_thinking %}/no_think {% endif %}"
                + CHATML)
    entry = {**llm_catalogue_entry("xinf-think"), "chat_template": template}
    assert http.post("/v1/model_registrations/LLM",
                     json={"model": json.dumps(entry), "persist": False}).status_code == 200
    reply = http.post("/v1/models", json={
        "model_name": "xinf-think", "model_type": "LLM", "model_engine": "llama.cpp",
        "model_format": "gguf", "quantization": "Q4_1", "model_path": str(gguf),
        "model_uid": "xinf-think", "enable_thinking": False})
    assert reply.status_code == 200, reply.text

    def prompt_tokens(**extra) -> int:
        answer = http.post("/v1/chat/completions", json={
            "model": "xinf-think", "messages": GERMANY, "max_tokens": 1, **extra})
        assert answer.status_code == 200, answer.text
        return answer.json()["usage"]["prompt_tokens"]

    by_launch = prompt_tokens()
    by_request = prompt_tokens(chat_template_kwargs={"enable_thinking": True})
    assert by_launch > by_request  # "/no_think " is in the prompt unless the request says
    assert http.delete("/v1/models/xinf-think").status_code == 200
    assert http.delete("/v1/model_registrations/LLM/xinf-think").status_code == 200


# Xinference's older custom-LLM file (version 1) with its QWEN prompt style: the system turn is
# the style's own, its stop strings end answers.
QWEN_SYSTEM = "You answer in one short sentence."


def _qwen_prompt(system: str, question: str) -> str:
    """What the QWEN style writes for one question (Xinference's rule, spelt out by hand)."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n")


def _v1_styled_file(name: str, gguf: Path, stop: list[str]) -> dict:
    return {
        "version": 1, "context_length": 2048, "model_name": name, "model_lang": ["en"],
        "model_ability": ["chat"], "model_family": "other",
        "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": "0_135",
                         "quantizations": ["Q4_1"], "model_id": SMOL_HF,
                         "model_file_name_template": SMOL_TEMPLATE,
                         "model_uri": f"file://{gguf}"}],
        "prompt_style": {"style_name": "QWEN", "system_prompt": QWEN_SYSTEM,
                         "roles": ["user", "assistant"], "intra_message_sep": "\n",
                         "inter_message_sep": "", "stop": ["<|im_end|>", *stop],
                         "stop_token_ids": [2]},
    }


def test_prompt_style_file_renders_its_format_and_stops_on_its_stop_strings(
        http, xclient, rest_smol, gguf):
    question = GERMANY[0]["content"]

    def reference(prompt: str) -> dict:
        """The same weights completing the text the style defines, with no style involved."""
        reply = http.post("/v1/completions", json={"model": rest_smol, "prompt": prompt, **SHORT})
        assert reply.status_code == 200, reply.text
        return reply.json()

    plain = reference(_qwen_prompt(QWEN_SYSTEM, question))
    full = plain["choices"][0]["text"]
    assert "Berlin" in full, full  # the stop below is met inside the answer
    xclient.register_model(model_type="LLM", persist=False,
                           model=json.dumps(_v1_styled_file("xinf-v1-qwen", gguf, ["Berlin"])))
    shown = xclient.get_model_registration("LLM", "xinf-v1-qwen")
    assert "prompt_style" not in shown and "<|im_start|>system" in shown["chat_template"]
    assert (shown["stop"], shown["stop_token_ids"]) == (["<|im_end|>", "Berlin"], [2])
    uid = xclient.launch_model(model_name="xinf-v1-qwen", model_type="LLM",
                               model_engine="llama.cpp", model_format="ggufv2",
                               quantization="Q4_1")

    answer = _chat(http, uid)
    # The prompt is the style's text, token for token; the answer is cut where the style's stop
    # string begins.
    assert answer["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    [choice] = answer["choices"]
    assert choice["message"]["content"] == full[:full.index("Berlin")]
    assert choice["finish_reason"] == "stop"
    # A request's system message takes the place of the style's system prompt.
    french = "Answer in French."
    asked = http.post("/v1/chat/completions", json={
        "model": uid, "messages": [{"role": "system", "content": french}, *GERMANY], **SHORT})
    assert asked.status_code == 200, asked.text
    assert asked.json()["usage"]["prompt_tokens"] == \
        reference(_qwen_prompt(french, question))["usage"]["prompt_tokens"]
    xclient.terminate_model(uid)
    xclient.unregister_model("LLM", "xinf-v1-qwen")


def test_a_style_fleet_cannot_serve_is_refused_with_its_name(http, gguf):
    data = _v1_styled_file("xinf-gorilla", gguf, [])
    data["prompt_style"]["style_name"] = "GORILLA_OPENFUNCTIONS"
    reply = http.post("/v1/model_registrations/LLM", json={"model": json.dumps(data)})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "prompt style 'GORILLA_OPENFUNCTIONS' writes the request's tools" in error["message"]
    assert http.get("/v1/model_registrations/LLM/xinf-gorilla").status_code == 404


def test_list_form_quantization_registers_and_launches(http, xclient, rest_smol, gguf):
    data = llm_registration("xinf-list-quant", gguf.parent)
    data["model_specs"] = [{**data["model_specs"][0], "quantization": ["Q4_1"]}]
    reply = http.post("/v1/model_registrations/LLM", json={"model": json.dumps(data)})
    assert reply.status_code == 200, reply.text
    [spec] = xclient.get_model_registration("LLM", "xinf-list-quant")["model_specs"]
    assert spec["quantizations"] == ["Q4_1"] and "quantization" not in spec
    uid = xclient.launch_model(model_name="xinf-list-quant", model_type="LLM",
                               model_engine="llama.cpp", model_format="ggufv2",
                               quantization="Q4_1")
    assert xclient.describe_model(uid)["quantization"] == "Q4_1"
    assert _chat(http, uid)["choices"][0]["message"] == \
        _chat(http, rest_smol)["choices"][0]["message"]
    xclient.terminate_model(uid)
    xclient.unregister_model("LLM", "xinf-list-quant")

    data["model_specs"][0]["quantization"] = 8
    reply = http.post("/v1/model_registrations/LLM", json={"model": json.dumps(data)})
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert "model_specs.0: Value error, quantization must be a name" in message
    assert "quantizations" not in message
