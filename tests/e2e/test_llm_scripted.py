"""Exact-text checks through a real `fleet local` on tiny Qwen2 models built here: tool calls
(whole, streamed, cut by max_tokens), reasoning blocks and stop strings that span tokens
(scripted models, whose greedy output is fixed; the thoughts through the Responses API too),
the request queue bound (429), and the LLM metrics (random tiny model)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fleet.client import Client
from tests.conftest import start_local
from tests.llm_builders import CHAT_PROMPT_END, build_scripted_qwen2, build_tiny_qwen2
from tests.metrics_text import scrape, value

TOOL_ARGUMENTS = {"city": "Paris"}
TOOL_SCRIPT = {
    CHAT_PROMPT_END: ["<tool_call>", "\n" + json.dumps({"name": "get_weather",
                                                        "arguments": TOOL_ARGUMENTS}) + "\n",
                      "</tool_call>"],
    # A completion whose text holds "Paris" split over two tokens: " Par" + "is is".
    "Answer:": [" Par", "is is", " lovely", " in spring."],
}
THINK_SCRIPT = {CHAT_PROMPT_END: ["<think>", "I should greet.", "</think>", "\n\nHello!"]}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def _family(name: str, abilities: list[str], path: Path, **extra: object) -> dict:
    return {"version": 2, "model_name": name, "model_ability": abilities, "context_length": 512,
            "stop": ["<|im_end|>", "<|endoftext|>"],
            "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                             "quantizations": ["none"], "model_uri": str(path)}], **extra}


def _launch(client: Client, family: dict, path: Path, **kwargs: object) -> str:
    client.register_model("LLM", family, persist=False)
    return client.launch_model(family["model_name"], model_type="LLM", model_engine="transformers",
                               model_path=str(path), **kwargs)


@pytest.fixture(scope="module")
def tool_model(client, tmp_path_factory) -> str:
    path = build_scripted_qwen2(tmp_path_factory.mktemp("scripted") / "tools", TOOL_SCRIPT)
    return _launch(client, _family("scripted-tools", ["chat", "generate", "tools"], path), path)


@pytest.fixture(scope="module")
def thinker(client, tmp_path_factory) -> str:
    path = build_scripted_qwen2(tmp_path_factory.mktemp("scripted") / "thinker", THINK_SCRIPT)
    family = _family("scripted-thinker", ["chat", "reasoning"], path,
                     reasoning_start_tag="<think>", reasoning_end_tag="</think>")
    return _launch(client, family, path)


@pytest.fixture(scope="module")
def tiny(client, tmp_path_factory) -> str:
    path = build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2")
    return _launch(client, _family("tiny-qwen2", ["chat", "generate"], path), path,
                   request_limits=1)


def test_tool_calls_whole_and_streamed(openai_client, tool_model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    answer = openai_client.chat.completions.create(model=tool_model, messages=messages,
                                                   tools=[WEATHER_TOOL], temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == TOOL_ARGUMENTS
    assert call.id.startswith("call_")

    chunks = list(openai_client.chat.completions.create(
        model=tool_model, messages=messages, tools=[WEATHER_TOOL], temperature=0, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == ["get_weather"]
    assert json.loads("".join(d.function.arguments for d in deltas)) == TOOL_ARGUMENTS
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("max_tokens, arguments", [
    (2, json.dumps(TOOL_ARGUMENTS)),  # cut before the closing tag: the call itself is whole
    (1, ""),  # cut right after the opening tag: the one tool's name, no arguments yet
])
def test_a_call_cut_by_max_tokens_stays_a_call_whole_and_streamed(openai_client, tool_model,
                                                                  max_tokens, arguments):
    settings = dict(model=tool_model, messages=[{"role": "user", "content": "Weather?"}],
                    tools=[WEATHER_TOOL], temperature=0, max_tokens=max_tokens)
    choice = openai_client.chat.completions.create(**settings).choices[0]
    assert choice.finish_reason == "length" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", arguments)
    chunks = list(openai_client.chat.completions.create(**settings, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert [(d.function.name, d.function.arguments) for d in deltas] == [("get_weather", arguments)]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_conversation_with_tool_results_goes_through_the_template(openai_client, tool_model):
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps(TOOL_ARGUMENTS)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    answer = openai_client.chat.completions.create(model=tool_model, messages=messages,
                                                   tools=[WEATHER_TOOL], temperature=0)
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert answer.usage.prompt_tokens > 30  # the tool result and the tool list were rendered


def test_tool_choice_none_leaves_the_text_alone(openai_client, tool_model):
    answer = openai_client.chat.completions.create(
        model=tool_model, messages=[{"role": "user", "content": "Hi"}], tools=[WEATHER_TOOL],
        tool_choice="none", temperature=0)
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content.startswith("<tool_call>")
    assert answer.choices[0].finish_reason == "stop"


def test_stop_string_spanning_two_tokens_is_cut(openai_client, tool_model):
    prompt = "Question: where?\nAnswer:"
    full = openai_client.completions.create(model=tool_model, prompt=prompt, temperature=0)
    assert full.choices[0].text == " Paris is lovely in spring."
    assert full.usage.completion_tokens == 5  # four chunks and the end of turn
    for stream in (False, True):
        kwargs = {"model": tool_model, "prompt": prompt, "temperature": 0, "stop": ["Paris"]}
        if stream:
            text = "".join(c.choices[0].text for c in openai_client.completions.create(
                **kwargs, stream=True) if c.choices)
        else:
            text = openai_client.completions.create(**kwargs).choices[0].text
        assert text == " ", stream
    spanning = openai_client.completions.create(model=tool_model, prompt=prompt, temperature=0,
                                                stop=["is lov"])
    assert spanning.choices[0].text == " Paris "
    assert spanning.choices[0].finish_reason == "stop"


def test_reasoning_content_is_separate(openai_client, thinker):
    messages = [{"role": "user", "content": "Greet me."}]
    answer = openai_client.chat.completions.create(model=thinker, messages=messages, temperature=0)
    message = answer.choices[0].message
    assert message.content == "Hello!"
    assert message.model_extra["reasoning_content"] == "I should greet."
    chunks = list(openai_client.chat.completions.create(model=thinker, messages=messages,
                                                        temperature=0, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Hello!"
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas) \
        == "I should greet."


def test_the_responses_api_returns_the_thoughts_as_a_reasoning_item(openai_client, thinker):
    settings = {"model": thinker, "input": "Greet me.", "temperature": 0,
                "reasoning": {"summary": "auto"}}
    response = openai_client.responses.create(**settings)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "Hello!"
    thoughts = response.output[0]
    assert [part.text for part in thoughts.content] == ["I should greet."]
    assert [part.text for part in thoughts.summary] == ["I should greet."]
    events = list(openai_client.responses.create(**settings, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") \
        == "I should greet."
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "Hello!"
    assert events[-1].response.output[0].summary[0].text == "I should greet."
    # Without a summary asked for, the thoughts are the item's content alone.
    plain = openai_client.responses.create(model=thinker, input="Greet me.", temperature=0)
    assert plain.output[0].summary == [] and plain.output[0].content[0].text == "I should greet."


def test_a_full_queue_answers_429_with_retry_after(local_cluster, tiny):
    never_end = {str(i): -100 for i in range(3)}  # the special tokens: keep generating
    body = {"model": tiny, "max_tokens": 480, "temperature": 0, "logit_bias": never_end,
            "messages": [{"role": "user", "content": "Hello"}]}
    url = f"{local_cluster.endpoint}/v1/chat/completions"
    # Six at once on a model that takes one at a time (request_limits=1): the first holds the
    # place for its 480 tokens while the others arrive.
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, json=body, timeout=120), range(6)))
    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert served and refused and len(served) + len(refused) == 6, [a.text for a in answers]
    for answer in served:
        assert answer.json()["usage"]["completion_tokens"] == 480
    for answer in refused:
        assert answer.headers["Retry-After"] == "1"
        error = answer.json()["error"]
        assert error["type"] == "rate_limit_error" and "limit is 1" in error["message"]
    # All have finished: the place is free again.
    again = httpx.post(url, json={**body, "max_tokens": 4}, timeout=60)
    assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] == 4


def test_metrics_count_streams_first_tokens_and_generated_tokens(local_cluster, openai_client, tiny):
    streamed, whole = 3, 2
    prompt_tokens = completion_tokens = 0
    for i in range(streamed):
        chunks = list(openai_client.chat.completions.create(
            model=tiny, messages=[{"role": "user", "content": f"Story {i}"}], max_tokens=6 + i,
            stream=True, stream_options={"include_usage": True}))
        prompt_tokens += chunks[-1].usage.prompt_tokens
        completion_tokens += chunks[-1].usage.completion_tokens
    for i in range(whole):
        answer = openai_client.chat.completions.create(
            model=tiny, messages=[{"role": "user", "content": f"Poem {i}"}], max_tokens=5)
        prompt_tokens += answer.usage.prompt_tokens
        completion_tokens += answer.usage.completion_tokens

    samples = scrape(local_cluster.endpoint)
    chat = {"model": tiny, "endpoint": "chat_completions"}
    # Earlier tests in this module sent requests to other models only, and the 429 test's
    # requests to this one: count from what the metrics held before, through the difference.
    assert value(samples, "fleet_model_time_to_first_token_seconds_count", model=tiny) == streamed
    assert value(samples, "fleet_model_time_per_output_token_seconds_count", model=tiny) == streamed
    responses = value(samples, "fleet_model_responses_total", **chat)
    assert value(samples, "fleet_model_requests_total", **chat) - responses == value(
        samples, "fleet_model_errors_total", **chat)
    assert value(samples, "fleet_model_generated_tokens_total", model=tiny) >= completion_tokens
    assert value(samples, "fleet_model_in_flight_requests", model=tiny) == 0


def test_streams_are_polled_when_replica_channels_are_off(tmp_path):
    """FLEET_REPLICA_CHANNELS=0 (or a replica the API cannot reach on another port): streamed
    tokens come over actor calls instead, and the answer is the same."""
    cluster = start_local(tmp_path / "home", {"FLEET_REPLICA_CHANNELS": "0"})
    try:
        client = Client(cluster.endpoint)
        path = build_scripted_qwen2(tmp_path / "tools", TOOL_SCRIPT)
        uid = _launch(client, _family("scripted-tools", ["chat", "generate", "tools"], path), path)
        body = {"model": uid, "prompt": "Answer:", "max_tokens": 4, "temperature": 0}
        whole = httpx.post(f"{cluster.endpoint}/v1/completions", json=body, timeout=60).json()
        with httpx.stream("POST", f"{cluster.endpoint}/v1/completions", timeout=60,
                          json={**body, "stream": True}) as response:
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        streamed = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        assert streamed == whole["choices"][0]["text"] == " Paris is lovely in spring."
        assert "its streams are polled" not in cluster.output()  # off by choice, not by failure
        assert client.replicas(uid)[0]["batch"]["api_channels"] == 0
    finally:
        cluster.stop()
