"""Model aliases through a real `fleet local` with the real SmolLM2-135M-Instruct GGUF on
llama.cpp: a model launched with aliases answers to them through the openai and anthropic
SDKs, is listed under them for OpenAI clients, is counted under its uid in the metrics, and
takes new aliases while it serves (the old ones then 404); an alias never shadows a model uid
or another model's alias. That they survive a restart: tests/e2e/test_restart.py."""

from __future__ import annotations

import subprocess
import sys

import anthropic
import httpx
import openai
import pytest

from tests.builders import _smollm2_gguf
from tests.metrics_text import scrape, value

UID = "smol-aliased"
ALIASES = ["claude-sonnet-4-5", "gpt-4o-mini"]


@pytest.fixture(scope="module")
def smol(client) -> str:
    return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                               model_format="gguf", quantization="Q4_1", model_uid=UID,
                               model_path=str(_smollm2_gguf()), aliases=ALIASES)


def _chat(openai_client: openai.OpenAI, model: str) -> openai.types.chat.ChatCompletion:
    return openai_client.chat.completions.create(
        model=model, max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": "Say hi."}])


def test_an_alias_answers_through_both_sdks_and_counts_under_the_uid(
        local_cluster, openai_client, smol):
    before = value(scrape(local_cluster.endpoint), "fleet_model_requests_total",
                   model=UID, endpoint="chat_completions")
    answer = _chat(openai_client, "gpt-4o-mini")
    assert answer.model == "gpt-4o-mini"  # the name asked for, as the peers echo it
    assert answer.choices[0].message.content
    assert answer.usage.completion_tokens >= 1
    claude = anthropic.Anthropic(base_url=local_cluster.endpoint, api_key="unused",
                                 max_retries=0)
    message = claude.messages.create(model="claude-sonnet-4-5", max_tokens=4,
                                     messages=[{"role": "user", "content": "Say hi."}])
    assert message.model == "claude-sonnet-4-5" and message.content[0].text
    stream = openai_client.chat.completions.create(
        model="claude-sonnet-4-5", max_tokens=4, stream=True,
        messages=[{"role": "user", "content": "Say hi."}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    metrics = scrape(local_cluster.endpoint)
    assert value(metrics, "fleet_model_requests_total", model=UID, endpoint="chat_completions") == before + 2
    assert not {s.labels.get("model") for s in metrics} & set(ALIASES)


def test_the_listing_names_each_alias_for_openai_clients(openai_client, client, smol):
    listed = {m.id: m for m in openai_client.models.list()}
    assert {UID, *ALIASES} <= set(listed)
    for alias in ALIASES:
        assert listed[alias].model_extra["alias_of"] == UID
    assert client.list_models()[UID]["aliases"] == ALIASES  # Fleet's client: models only
    assert not set(ALIASES) & set(client.list_models())
    assert client.describe_model(UID)["aliases"] == ALIASES


def test_aliases_changed_while_serving_take_effect_at_once(local_cluster, openai_client,
                                                           client, smol):
    try:
        assert client.set_aliases(UID, ["llama3", "llama3"]) == ["llama3"]  # repeats dropped
        assert _chat(openai_client, "llama3").model == "llama3"
        with pytest.raises(openai.NotFoundError) as gone:
            _chat(openai_client, "gpt-4o-mini")
        assert gone.value.body["code"] == "model_not_found"
        assert client.set_aliases(UID, []) == []
        assert "aliases" not in client.describe_model(UID)["launch_options"]
        with pytest.raises(openai.NotFoundError):
            _chat(openai_client, "llama3")
    finally:
        client.set_aliases(UID, ALIASES)


@pytest.mark.parametrize(("aliases", "code", "words"), [
    ([UID], "alias_taken", "uid of a running model"),
    (["has space"], "invalid_request_error", "aliases.0"),
    (["estimate"], "invalid_alias", "reserved"),
    ([f"a{i}" for i in range(33)], "invalid_request_error", "at most 32"),
])
def test_a_bad_alias_is_a_400_that_says_why(local_cluster, smol, aliases, code, words):
    answer = httpx.put(f"{local_cluster.endpoint}/v1/models/{UID}/aliases",
                       json={"aliases": aliases}, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert words in error["message"]
    assert code in (error["code"], error["type"])
    assert httpx.get(f"{local_cluster.endpoint}/v1/models/{UID}").json()["aliases"] == ALIASES


def test_an_alias_never_shadows_a_uid_or_another_model_s_alias(local_cluster, client, smol):
    launch = {"model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
              "model_format": "gguf", "quantization": "Q4_1", "idle": True,
              "model_path": str(_smollm2_gguf())}
    for body, words in [({**launch, "model_uid": "gpt-4o-mini"}, "is an alias of model"),
                        ({**launch, "model_uid": "other", "aliases": ["gpt-4o-mini"]},
                         "already names model")]:
        answer = httpx.post(f"{local_cluster.endpoint}/v1/models", json=body, timeout=60)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "alias_taken"
        assert words in answer.json()["error"]["message"]
    # Another model (idle: listed, not loaded) may not take this one's alias either.
    client.launch_model(**{**launch, "model_uid": "other"})
    try:
        refused = httpx.put(f"{local_cluster.endpoint}/v1/models/other/aliases",
                            json={"aliases": ["claude-sonnet-4-5"]}, timeout=30)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "alias_taken"
    finally:
        client.terminate_model("other")


def test_the_cli_sets_and_lists_aliases(local_cluster, client, smol):
    def fleet(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "fleet", *args, "-e", local_cluster.endpoint],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        assert "answers to qwen-coder" in fleet("alias", "-u", UID, "qwen-coder")
        assert client.describe_model(UID)["aliases"] == ["qwen-coder"]
        assert "= qwen-coder" in fleet("list")
        assert "its uid only" in fleet("alias", "-u", UID, "--clear")
        refused = subprocess.run([sys.executable, "-m", "fleet", "alias", "-u", UID, "-e",
                                  local_cluster.endpoint], capture_output=True, text=True)
        assert refused.returncode != 0 and "--clear" in refused.stderr
    finally:
        client.set_aliases(UID, ALIASES)
