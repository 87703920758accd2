"""Anthropic's Messages API through a real `fleet local`, driven by the official `anthropic` SDK,
with the real SmolLM2-135M-Instruct on both LLM engines (llama.cpp from its GGUF file, and
Transformers): an answer whole and streamed (Anthropic's events in order, the same text and
usage), a system prompt, stop_sequences and max_tokens with their stop reasons, a forced tool
use whose input follows the tool's schema, a tool_result round trip, structured output, and
count_tokens equal to the usage of the same request; all checked against the chat route, which
runs the same requests. Then, on llama.cpp: bad input answered 400 in Anthropic's shape (never
a 500), the Messages metrics, and keys sent as `x-api-key` on a cluster with keys (401/403 in
Anthropic's shape)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from tests.builders import _smollm2_gguf, smollm2_hf_folder
from tests.conftest import FleetProcess, free_port
from tests.metrics_text import scrape, value

GERMANY = [{"role": "user", "content": "What is the capital of Germany?"}]
GREEDY = {"extra_body": {"temperature": 0}}  # the SDK of today sends no sampling fields itself
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 16},
               "unit": {"enum": ["celsius", "fahrenheit"]}},
               "required": ["city", "unit"], "additionalProperties": False}}
TIME = {"name": "get_time", "description": "The time in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string",
                                                                   "maxLength": 16}},
                         "required": ["city"], "additionalProperties": False}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
CITY = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 12},
    "country": {"enum": ["FR", "DE", "IT"]},
    "population_millions": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["name", "country", "population_millions"], "additionalProperties": False}
EVENT_ORDER = ["message_start", "content_block_start", "content_block_delta",
               "content_block_stop", "message_delta", "message_stop"]


@pytest.fixture(scope="module")
def smol_cpp(client) -> str:
    return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                               model_format="gguf", quantization="Q4_1", model_uid="smol-cpp",
                               model_path=str(_smollm2_gguf()), n_parallel=2)


# The translation is the same for every engine: most tests run on llama.cpp alone. Where
# engines differ under it (the grammar that forces a tool call; the prompt count_tokens builds
# with each engine's own template and tokenizer) a test asks for both with ON_BOTH_ENGINES.
ON_BOTH_ENGINES = pytest.mark.parametrize("model", ["llama.cpp", "transformers"], indirect=True)


@pytest.fixture(scope="module")
def model(request, client, smol_cpp) -> str:
    if getattr(request, "param", "llama.cpp") == "llama.cpp":
        return smol_cpp
    return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="transformers",
                               model_uid="smol-hf", model_path=str(smollm2_hf_folder()))


@pytest.fixture(scope="module")
def claude(local_cluster) -> anthropic.Anthropic:
    """The anthropic SDK pointed at the module's cluster; no retries, so a refusal shows at once."""
    return anthropic.Anthropic(base_url=local_cluster.endpoint, api_key="unused", max_retries=0)


def _text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_an_answer_is_the_chat_route_s_answer_with_its_usage(claude, openai_client, model):
    message = claude.messages.create(model=model, max_tokens=24, messages=GERMANY, **GREEDY)
    assert "Berlin" in _text(message) and message.stop_reason == "end_turn"
    assert message.type == "message" and message.role == "assistant" and message.model == model
    assert message.id.startswith("msg_") and message.stop_sequence is None
    chat = openai_client.chat.completions.create(model=model, messages=GERMANY, max_tokens=24,
                                                 temperature=0)
    assert _text(message) == chat.choices[0].message.content
    assert message.usage.input_tokens == chat.usage.prompt_tokens
    assert message.usage.output_tokens == chat.usage.completion_tokens
    # A system prompt, as a string or as text blocks, is the chat's system message.
    system = "You answer in one short sentence."
    with_system = claude.messages.create(model=model, max_tokens=24, messages=GERMANY,
                                         system=[{"type": "text", "text": system}], **GREEDY)
    chat = openai_client.chat.completions.create(
        model=model, max_tokens=24, temperature=0,
        messages=[{"role": "system", "content": system}, *GERMANY])
    assert _text(with_system) == chat.choices[0].message.content
    assert with_system.usage.input_tokens == chat.usage.prompt_tokens
    assert with_system.usage.input_tokens != message.usage.input_tokens


def test_a_stream_is_anthropic_s_events_in_order_with_the_same_answer(claude, model):
    whole = claude.messages.create(model=model, max_tokens=24, messages=GERMANY, **GREEDY)
    events = list(claude.messages.create(model=model, max_tokens=24, messages=GERMANY,
                                         stream=True, **GREEDY))
    names = [event.type for event in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]] == EVENT_ORDER
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == _text(whole)
    assert events[0].message.usage.input_tokens == whole.usage.input_tokens
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == whole.usage.output_tokens
    # The SDK's stream helper rebuilds the same message.
    with claude.messages.stream(model=model, max_tokens=24, messages=GERMANY, **GREEDY) as stream:
        final = stream.get_final_message()
    assert _text(final) == _text(whole) and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens, whole.usage.output_tokens)


def test_stop_sequences_and_max_tokens_give_their_stop_reasons(claude, model):
    cut = claude.messages.create(model=model, max_tokens=24, messages=GERMANY,
                                 stop_sequences=["never-seen", "Berlin"], **GREEDY)
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", "Berlin")
    assert "Germany" in _text(cut) and "Berlin" not in _text(cut)
    with claude.messages.stream(model=model, max_tokens=24, messages=GERMANY,
                                stop_sequences=["Berlin"], **GREEDY) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", "Berlin")
    assert _text(streamed) == _text(cut)
    # A stop sequence the answer never meets leaves the end of its turn as it was.
    free = claude.messages.create(model=model, max_tokens=24, messages=GERMANY,
                                  stop_sequences=["never-seen"], **GREEDY)
    assert (free.stop_reason, free.stop_sequence) == ("end_turn", None)
    short = claude.messages.create(model=model, max_tokens=3, messages=GERMANY, **GREEDY)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3


@ON_BOTH_ENGINES
@pytest.mark.parametrize("tool_choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_a_forced_tool_use_follows_its_schema_whole_and_streamed(claude, model, tool_choice):
    settings = {"model": model, "max_tokens": 60, "messages": ASK_WEATHER,
                "tools": [WEATHER, TIME], "tool_choice": tool_choice, **GREEDY}
    message = claude.messages.create(**settings)
    assert message.stop_reason == "tool_use"
    calls = [block for block in message.content if block.type == "tool_use"]
    assert calls and all(call.name in ("get_weather", "get_time") for call in calls)
    if tool_choice["type"] == "tool":
        assert {call.name for call in calls} == {"get_weather"}
    for call in calls:
        schema = WEATHER if call.name == "get_weather" else TIME
        jsonschema.validate(call.input, schema["input_schema"])
    with claude.messages.stream(**settings) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        (c.name, c.input) for c in calls]


def test_a_tool_result_round_trip(claude, model):
    first = claude.messages.create(model=model, max_tokens=60, messages=ASK_WEATHER,
                                   tools=[WEATHER], tool_choice={"type": "any"}, **GREEDY)
    call = next(block for block in first.content if block.type == "tool_use")
    conversation = [*ASK_WEATHER, first.to_param(), {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny and 22 degrees."}]}]
    answer = claude.messages.create(model=model, max_tokens=40, messages=conversation,
                                    tools=[WEATHER], **GREEDY)
    assert answer.stop_reason in ("end_turn", "tool_use", "max_tokens")
    assert answer.content  # the model answered the result
    # The prompt holds the call and its result: more tokens than the first turn, and as many
    # as count_tokens says, the result's text counting in full.
    assert answer.usage.input_tokens > first.usage.input_tokens
    counted = claude.messages.count_tokens(model=model, messages=conversation, tools=[WEATHER])
    assert counted.input_tokens == answer.usage.input_tokens
    longer = [*conversation[:2], {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "is_error": True,
         "content": [{"type": "text", "text": "Sunny and 22 degrees. Wind from the west."}]}]}]
    assert claude.messages.count_tokens(model=model, messages=longer, tools=[WEATHER]
                                        ).input_tokens > counted.input_tokens


def test_structured_output_follows_the_schema(claude, model):
    ask = [{"role": "user", "content": "Describe Paris as JSON."}]
    message = claude.messages.create(model=model, max_tokens=60, messages=ask, **GREEDY,
                                     output_config={"format": {"type": "json_schema",
                                                               "schema": CITY}})
    jsonschema.validate(json.loads(_text(message)), CITY)
    assert message.stop_reason == "end_turn"
    # The structured-outputs beta's field, which clients still send, is the same grammar.
    beta = claude.messages.create(model=model, max_tokens=60, messages=ask, extra_body={
        "temperature": 0, "output_format": {"type": "json_schema", "schema": CITY}})
    assert _text(beta) == _text(message)


@ON_BOTH_ENGINES
def test_count_tokens_is_the_usage_of_the_same_request(claude, model):
    requests = [{"messages": GERMANY},
                {"messages": GERMANY, "system": "Be brief."},
                {"messages": ASK_WEATHER, "tools": [WEATHER, TIME],
                 "tool_choice": {"type": "any"}}]
    for request in requests:
        counted = claude.messages.count_tokens(model=model, **request)
        used = claude.messages.create(model=model, max_tokens=4, **request, **GREEDY)
        assert counted.input_tokens == used.usage.input_tokens > 0


# ---- llama.cpp only: bad input, metrics ---------------------------------------------------------
def _post(endpoint: str, body: Any, path: str = "/v1/messages", **kwargs: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(endpoint + path, content=body, timeout=60,
                          headers={"content-type": "application/json"}, **kwargs)
    return httpx.post(endpoint + path, json=body, timeout=60, **kwargs)


def _anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    return body["error"]["message"]


@pytest.mark.parametrize(("body", "words"), [
    ({"messages": GERMANY}, "max_tokens: Field required"),
    ({"max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "Input tag 'video'"),
    ({"max_tokens": "8", "messages": GERMANY}, "max_tokens"),
    ({"max_tokens": 8, "messages": "hello"}, "messages"),
    ({"max_tokens": 8, "messages": [{"role": "user", "content": 12}]}, "content"),
    ({"max_tokens": 8, "messages": GERMANY, "temperature": "hot"}, "temperature"),
    ({"max_tokens": 8, "messages": GERMANY, "stop_sequences": "Berlin"}, "stop_sequences"),
    ({"max_tokens": 0, "messages": GERMANY}, "max_tokens"),
    ({"max_tokens": 8, "messages": [{"role": "user", "content": [{
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]},
     "has no vision ability"),
    ({"max_tokens": 8, "messages": GERMANY, "tools": [WEATHER],
      "tool_choice": {"type": "tool", "name": "get_time"}}, "get_time"),
    ({"max_tokens": 8, "messages": GERMANY, "mcp_servers": []}, "mcp_servers"),
])
def test_bad_input_is_a_400_in_anthropic_s_shape(local_cluster, smol_cpp, body, words):
    message = _anthropic_error(_post(local_cluster.endpoint, {"model": smol_cpp, **body}), 400,
                               "invalid_request_error")
    assert words in message


def test_other_refusals_are_in_anthropic_s_shape_and_the_model_keeps_serving(
        local_cluster, smol_cpp, claude):
    endpoint = local_cluster.endpoint
    _anthropic_error(_post(endpoint, b'{"model": "x", "max_tokens": '), 400,
                     "invalid_request_error")
    _anthropic_error(_post(endpoint, {"model": "no-such-model", "max_tokens": 8,
                                      "messages": GERMANY}), 404, "not_found_error")
    _anthropic_error(_post(endpoint, {"model": "no-such-model", "messages": GERMANY},
                           "/v1/messages/count_tokens"), 404, "not_found_error")
    _anthropic_error(_post(endpoint, {"model": smol_cpp, "messages": GERMANY, "max_tokens": 8},
                           "/v1/messages/count_tokens"), 400, "invalid_request_error")
    _anthropic_error(httpx.get(endpoint + "/v1/messages"), 405, "invalid_request_error")
    _anthropic_error(httpx.post(endpoint + "/v1/messages", content=b"x",
                                headers={"content-type": "text/plain"}), 415,
                     "invalid_request_error")
    # The SDK reads these errors as its own.
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=smol_cpp, max_tokens=8, messages=[
            {"role": "user", "content": [{"type": "document", "source": {}}]}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=GERMANY)
    still = claude.messages.create(model=smol_cpp, max_tokens=24, messages=GERMANY, **GREEDY)
    assert "Berlin" in _text(still)


def test_the_stream_s_raw_events_and_anthropic_version(local_cluster, smol_cpp):
    response = _post(local_cluster.endpoint, {"model": smol_cpp, "max_tokens": 8, "stream": True,
                                              "messages": GERMANY},
                     headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [part.split("\n") for part in response.text.split("\n\n") if part]
    assert all(len(e) == 2 and e[0].startswith("event: ") and e[1].startswith("data: ")
               for e in events)
    names = [e[0].removeprefix("event: ") for e in events]
    assert names[:2] == ["message_start", "ping"] and names[-1] == "message_stop"
    assert all(json.loads(e[1].removeprefix("data: "))["type"] == name
               for e, name in zip(events, names, strict=True))


def test_messages_are_counted_in_the_model_s_metrics(local_cluster, smol_cpp, claude):
    before = scrape(local_cluster.endpoint)
    claude.messages.create(model=smol_cpp, max_tokens=4, messages=GERMANY, **GREEDY)
    list(claude.messages.create(model=smol_cpp, max_tokens=4, messages=GERMANY, stream=True,
                                **GREEDY))
    claude.messages.count_tokens(model=smol_cpp, messages=GERMANY)
    after = scrape(local_cluster.endpoint)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("fleet_model_requests_total", model=smol_cpp, endpoint="messages") == 2
    assert grew("fleet_model_responses_total", model=smol_cpp, endpoint="messages") == 2
    assert grew("fleet_model_requests_total", model=smol_cpp,
                endpoint="messages_count_tokens") == 1
    assert grew("fleet_model_generated_tokens_total", model=smol_cpp) == 8
    assert grew("fleet_model_time_to_first_token_seconds_count", model=smol_cpp) == 1


# ---- keys ------------------------------------------------------------------------------------------
ADMIN_KEY = "sk-e2e-messages-admin-0123"
LIST_ONLY_KEY = "sk-e2e-messages-list-only"
OTHER_MODEL_KEY = "sk-e2e-messages-other-model"


@pytest.fixture(scope="module")
def keyed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home-keys")
    auth_file = home.parent / "auth-messages.json"
    auth_file.write_text(json.dumps({"user_config": [
        {"username": "lister", "permissions": ["models:list"], "api_keys": [LIST_ONLY_KEY]},
        {"username": "app", "permissions": ["models:read"],
         "api_keys": [{"key": OTHER_MODEL_KEY, "models": ["another-model"]}]}]}))
    env = {k: v for k, v in os.environ.items() if k not in ("FLEET_API_KEY", "FLEET_AUTH_CONFIG")}
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), "--auth-config", str(auth_file)], home, port,
                          env={**env, "FLEET_API_KEY": ADMIN_KEY}).wait_ready()
    yield server
    server.stop()


def test_keys_come_as_x_api_key_and_refusals_are_in_anthropic_s_shape(keyed_cluster):
    endpoint = keyed_cluster.endpoint
    body = {"model": "no-such-model", "max_tokens": 8, "messages": GERMANY}
    missing = _post(endpoint, body)
    assert "x-api-key" in _anthropic_error(missing, 401, "authentication_error")
    _anthropic_error(_post(endpoint, body, headers={"x-api-key": "sk-wrong"}), 401,
                     "authentication_error")
    _anthropic_error(_post(endpoint, body, headers={"x-api-key": LIST_ONLY_KEY}), 403,
                     "permission_error")
    limited = _anthropic_error(_post(endpoint, {"model": "no-such-model", "messages": GERMANY},
                                     "/v1/messages/count_tokens",
                                     headers={"x-api-key": OTHER_MODEL_KEY}), 403,
                               "permission_error")
    assert "no-such-model" in limited
    # The key is taken: the request reaches the route, and the model is what is missing.
    _anthropic_error(_post(endpoint, body, headers={"x-api-key": ADMIN_KEY}), 404,
                     "not_found_error")
    _anthropic_error(_post(endpoint, body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}), 404,
                     "not_found_error")
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=endpoint, api_key="sk-wrong", max_retries=0
                            ).messages.count_tokens(model="m", messages=GERMANY)
    assert refused.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        anthropic.Anthropic(base_url=endpoint, api_key=ADMIN_KEY, max_retries=0
                            ).messages.count_tokens(model="m", messages=GERMANY)
    # Other routes take the x-api-key too; their errors keep OpenAI's shape.
    models = httpx.get(f"{endpoint}/v1/models", headers={"x-api-key": LIST_ONLY_KEY})
    assert models.status_code == 200
    refused_chat = httpx.post(f"{endpoint}/v1/chat/completions", json={"model": "m"})
    assert refused_chat.status_code == 401 and refused_chat.json()["error"]["type"] == (
        "authentication_error")
