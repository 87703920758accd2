"""Chat and completions on the Transformers engine through a real `fleet local`, with the real
SmolLM2-135M-Instruct weights: the openai SDK (whole and streamed), xinference-client, LangChain,
Fleet's client and CLI, continuous batching under concurrency, cancellation and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from openai import BadRequestError, NotFoundError

from fleet.client import Client
from tests.builders import smollm2_hf_folder
from tests.concurrency import run_while_watching
from tests.metrics_text import scrape, value

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2_path() -> str:
    return str(smollm2_hf_folder())


@pytest.fixture(scope="module")
def smollm2(local_cluster, smollm2_path: str) -> str:
    return Client(local_cluster.endpoint).launch_model(
        "smollm2-instruct", model_type="LLM", model_engine="transformers", model_uid="smollm2",
        model_path=smollm2_path)


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


def test_smollm2_knows_the_capital_of_france_with_exact_usage(openai_client, smollm2, tokenizer):
    answer = openai_client.chat.completions.create(model=smollm2, messages=FRANCE, temperature=0,
                                                   max_tokens=32)
    text = answer.choices[0].message.content
    assert "Paris" in text
    assert answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion" and answer.model == smollm2
    prompt = tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=False)
    assert answer.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    # The answer's tokens plus the end-of-turn token that stopped it.
    assert answer.usage.completion_tokens == len(tokenizer.encode(text, add_special_tokens=False)) + 1
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_a_stream_and_a_whole_answer_with_the_same_seed_are_the_same_text(openai_client, smollm2):
    settings = {"model": smollm2, "temperature": 0.9, "top_p": 0.95, "seed": 1234, "max_tokens": 40,
                "messages": [{"role": "user", "content": "Tell me about the sea."}]}
    whole = openai_client.chat.completions.create(**settings)
    chunks = list(openai_client.chat.completions.create(
        **settings, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    again = openai_client.chat.completions.create(**settings)
    assert again.choices[0].message.content == whole.choices[0].message.content


def test_max_tokens_ends_with_length(openai_client, smollm2):
    answer = openai_client.chat.completions.create(model=smollm2, messages=FRANCE, max_tokens=3,
                                                   temperature=0)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


def test_stop_strings_are_cut_in_whole_and_streamed_answers(openai_client, smollm2):
    settings = {"model": smollm2, "messages": FRANCE, "temperature": 0, "max_tokens": 32,
                "stop": ["Paris", "never-seen"]}
    whole = openai_client.chat.completions.create(**settings)
    text = whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "stop"
    assert "Paris" not in text and "France" in text
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       openai_client.chat.completions.create(**settings, stream=True) if c.choices)
    assert streamed == text


def test_completions_whole_streamed_and_n(openai_client, smollm2):
    prompt = "The capital of France is"
    whole = openai_client.completions.create(model=smollm2, prompt=prompt, max_tokens=8,
                                             temperature=0)
    assert whole.object == "text_completion" and "Paris" in whole.choices[0].text
    streamed = "".join(c.choices[0].text for c in openai_client.completions.create(
        model=smollm2, prompt=prompt, max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == whole.choices[0].text
    several = openai_client.completions.create(model=smollm2, prompt="Once upon a time",
                                               max_tokens=12, temperature=1.0, seed=7, n=3)
    assert sorted(c.index for c in several.choices) == [0, 1, 2]
    assert len({c.text for c in several.choices}) > 1  # each choice samples its own way
    assert several.usage.completion_tokens == 36


def test_chat_n_and_logprobs(openai_client, smollm2):
    answer = openai_client.chat.completions.create(
        model=smollm2, messages=FRANCE, temperature=0, max_tokens=4, n=2, logprobs=True,
        top_logprobs=3)
    assert len(answer.choices) == 2
    assert answer.choices[0].message.content == answer.choices[1].message.content  # greedy
    entries = answer.choices[0].logprobs.content
    assert len(entries) == 4
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the likeliest one.
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)


def test_eight_concurrent_streams_share_the_batch(local_cluster, client, openai_client, smollm2):
    def one(i: int) -> tuple[str, str | None]:
        chunks = openai_client.chat.completions.create(
            model=smollm2, stream=True, temperature=0, max_tokens=24,
            messages=[{"role": "user", "content": f"Count from {i} to {i + 10}."}])
        text, reason = "", None
        for chunk in chunks:
            text += chunk.choices[0].delta.content or ""
            reason = chunk.choices[0].finish_reason or reason
        return text, reason

    results, seen_running = run_while_watching(
        one, 8, lambda: client.replicas(smollm2)[0]["batch"].get("running", 0))
    for i, (text, reason) in enumerate(results):
        assert reason in ("stop", "length") and text.strip(), (i, text)
    # Alone, the same request gives the same greedy text: batching changes nothing.
    alone = openai_client.chat.completions.create(
        model=smollm2, temperature=0, max_tokens=24,
        messages=[{"role": "user", "content": "Count from 3 to 13."}])
    assert alone.choices[0].message.content == results[3][0]
    assert max(seen_running) > 1
    assert client.replicas(smollm2)[0]["batch"]["max_size"] > 1
    # The tokens came over the replica's channel, not by polling.
    assert "its streams are polled" not in local_cluster.output()


def test_a_client_that_leaves_cancels_its_sequence(local_cluster, smollm2, tokenizer):
    client = Client(local_cluster.endpoint)
    never_end = {str(tokenizer.convert_tokens_to_ids("<|im_end|>")): -100}
    body = {"model": smollm2, "stream": True, "max_tokens": 2000, "temperature": 0,
            "logit_bias": never_end, "messages": [{"role": "user", "content": "Write a long story."}]}
    with httpx.Client(base_url=local_cluster.endpoint, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            for _ in range(6):
                next(lines)
    deadline = time.monotonic() + 10
    while client.replicas(smollm2)[0]["batch"]["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.replicas(smollm2)[0]["batch"]["running"] == 0


def test_a_whole_answer_whose_client_left_is_cancelled_too(local_cluster, smollm2, tokenizer):
    client = Client(local_cluster.endpoint)
    never_end = {str(tokenizer.convert_tokens_to_ids("<|im_end|>")): -100}
    body = {"model": smollm2, "max_tokens": 2000, "temperature": 0, "logit_bias": never_end,
            "messages": [{"role": "user", "content": "Write a long story."}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{local_cluster.endpoint}/v1/chat/completions", json=body, timeout=2.0)
    deadline = time.monotonic() + 10
    while client.replicas(smollm2)[0]["batch"]["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.replicas(smollm2)[0]["batch"]["running"] == 0
    samples = scrape(local_cluster.endpoint)
    assert value(samples, "fleet_model_in_flight_requests", model=smollm2) == 0
    assert value(samples, "fleet_model_errors_total", model=smollm2,
                 kind="client_disconnected") >= 1


def test_xinference_client_chat_and_generate(local_cluster, smollm2):
    from xinference_client import RESTfulClient

    model = RESTfulClient(local_cluster.endpoint).get_model(smollm2)
    answer = model.chat(FRANCE, generate_config={"temperature": 0, "max_tokens": 32})
    assert "Paris" in answer["choices"][0]["message"]["content"]
    chunks = list(model.chat(FRANCE, generate_config={"temperature": 0, "max_tokens": 32,
                                                      "stream": True}))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) \
        == answer["choices"][0]["message"]["content"]
    completion = model.generate("The capital of France is", {"max_tokens": 8, "temperature": 0})
    assert "Paris" in completion["choices"][0]["text"]


def test_fleet_client_chat_and_generate(local_cluster, smollm2):
    model = Client(local_cluster.endpoint).get_model(smollm2)
    answer = model.chat(FRANCE, generate_config={"temperature": 0, "max_tokens": 32})
    chunks = list(model.chat(FRANCE, generate_config={"temperature": 0, "max_tokens": 32,
                                                      "stream": True}))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) \
        == answer["choices"][0]["message"]["content"]
    assert "Paris" in model.generate("The capital of France is",
                                     {"max_tokens": 8, "temperature": 0})["choices"][0]["text"]


def test_langchain_chat_openai(local_cluster, smollm2):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=smollm2, base_url=f"{local_cluster.endpoint}/v1", api_key="unused",
                      temperature=0, max_tokens=32)
    assert "Paris" in chat.invoke("What is the capital of France?").content
    streamed = "".join(str(part.content) for part in chat.stream("What is the capital of France?"))
    assert "Paris" in streamed


def test_cli_chat_and_generate(local_cluster, smollm2):
    def fleet(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "fleet", *args, "-e", local_cluster.endpoint],
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "Paris" in fleet("chat", "-u", smollm2, "-p", "What is the capital of France?",
                            "--temperature", "0", "--max_tokens", "32")
    assert "Paris" in fleet("generate", "-u", smollm2, "-p", "The capital of France is",
                            "--temperature", "0", "--max_tokens", "8", "--no-stream")


def _refused(call, status: int, *fragments: str) -> None:
    with pytest.raises((BadRequestError, NotFoundError)) as info:
        call()
    assert info.value.status_code == status
    message = info.value.body["message"]
    for fragment in fragments:
        assert fragment in message, message


def test_bad_requests_are_4xx_and_the_model_keeps_serving(openai_client, smollm2):
    chat = openai_client.chat.completions.create
    _refused(lambda: chat(model=smollm2, messages=[]), 400, "at least one message")
    _refused(lambda: chat(model=smollm2, messages=[{"role": "wizard", "content": "hi"}]), 400,
             "unknown role 'wizard'")
    _refused(lambda: chat(model=smollm2, messages=FRANCE, max_tokens=100_000), 400,
             "max_tokens=100000", "context of 8192")
    _refused(lambda: chat(model="no-such-model", messages=FRANCE), 404, "no-such-model")
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": []}}
    _refused(lambda: chat(model=smollm2, messages=FRANCE, tools=[tool]), 400,
             "parameters of function 'get_weather' must be a JSON schema object")
    _refused(lambda: chat(model=smollm2, messages=FRANCE, extra_body={"mirostat": 2}), 400,
             "mirostat")
    _refused(lambda: chat(model=smollm2, messages=FRANCE,
                          response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
             400, "response_format")
    _refused(lambda: chat(model=smollm2, messages=FRANCE, temperature=3), 400, "temperature")
    _refused(lambda: openai_client.completions.create(model=smollm2, prompt="x", echo=True), 400,
             "echo")
    answer = chat(model=smollm2, messages=FRANCE, temperature=0, max_tokens=32)
    assert "Paris" in answer.choices[0].message.content


def test_an_embedding_model_refuses_chat_clearly(local_cluster, openai_client, minilm_path):
    Client(local_cluster.endpoint).launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                                model_uid="vectors-only", model_path=minilm_path)
    _refused(lambda: openai_client.chat.completions.create(model="vectors-only", messages=FRANCE),
             400, "does not serve chat completions")


def test_models_list_shows_the_llm(openai_client, smollm2):
    listed = {m.id: m for m in openai_client.models.list().data}
    assert smollm2 in listed
    body = json.loads(listed[smollm2].model_dump_json())
    assert body.get("model_type", "LLM") == "LLM"
