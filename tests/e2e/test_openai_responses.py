"""OpenAI's Responses API through a real `fleet local`, driven by the openai SDK's
`client.responses`, with the real SmolLM2-135M-Instruct on llama.cpp (its GGUF file), greedy:
an answer whole and streamed (the typed events in OpenAI's order, sequence numbers from 0, the
same text and usage), instructions and a cut by max_output_tokens; a forced function call whose
arguments follow the function's schema, whole and streamed, and a function_call_output round
trip; a JSON schema answer; each checked against the chat route, which runs the same request.
Stored responses: a chain of three turns through previous_response_id whose prompt holds the
earlier turns, retrieval, input_items, delete; bad input: 400 in OpenAI's shape, never a 500.
Last, a stored response read back after the server restarts on the same FLEET_HOME."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.builders import _smollm2_gguf
from tests.conftest import start_local

GERMANY = "What is the capital of Germany?"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {
               "city": {"type": "string", "maxLength": 16},
               "unit": {"enum": ["celsius", "fahrenheit"]}},
               "required": ["city", "unit"], "additionalProperties": False}, "strict": True}
TIME = {"type": "function", "name": "get_time", "description": "The time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                                 "maxLength": 16}},
                       "required": ["city"], "additionalProperties": False}, "strict": True}
CITY = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 12},
    "country": {"enum": ["FR", "DE", "IT"]},
    "population_millions": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["name", "country", "population_millions"], "additionalProperties": False}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added", "response.output_text.delta",
               "response.output_text.done", "response.content_part.done",
               "response.output_item.done", "response.completed"]
CALL_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.function_call_arguments.delta", "response.function_call_arguments.done",
               "response.output_item.done"]


@pytest.fixture(scope="module")
def model(client) -> str:
    return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                               model_format="gguf", quantization="Q4_1", model_uid="smol-cpp",
                               model_path=str(_smollm2_gguf()), n_parallel=2)


def _chat(openai_client: Any, model: str, messages: list[dict[str, Any]], **fields: Any) -> Any:
    return openai_client.chat.completions.create(model=model, messages=messages, temperature=0,
                                                 **fields)


def _squeezed(names: list[str]) -> list[str]:
    """The names with runs of one name as one."""
    return [name for i, name in enumerate(names) if i == 0 or name != names[i - 1]]


def test_an_answer_is_the_chat_route_s_answer_with_its_usage(openai_client, model):
    response = openai_client.responses.create(model=model, input=GERMANY, temperature=0,
                                              max_output_tokens=24)
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.incomplete_details is None
    assert response.model == model and response.error is None
    assert [item.type for item in response.output] == ["message"]
    assert "Berlin" in response.output_text
    chat = _chat(openai_client, model, [{"role": "user", "content": GERMANY}], max_tokens=24)
    assert response.output_text == chat.choices[0].message.content
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens) == (chat.usage.prompt_tokens,
                                                         chat.usage.completion_tokens)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    # Instructions are the chat's system message; items with roles are the chat's messages.
    system = "You answer in one short sentence."
    items = [{"role": "developer", "content": [{"type": "input_text", "text": system}]},
             {"role": "user", "content": [{"type": "input_text", "text": GERMANY}]}]
    with_items = openai_client.responses.create(model=model, input=items, temperature=0,
                                                max_output_tokens=24)
    with_instructions = openai_client.responses.create(
        model=model, input=GERMANY, instructions=system, temperature=0, max_output_tokens=24,
        metadata={"case": "instructions"}, user="tester")
    chat = _chat(openai_client, model, [{"role": "system", "content": system},
                                        {"role": "user", "content": GERMANY}], max_tokens=24)
    for answer in (with_items, with_instructions):
        assert answer.output_text == chat.choices[0].message.content
        assert answer.usage.input_tokens == chat.usage.prompt_tokens != usage.input_tokens
    assert with_instructions.instructions == system
    assert with_instructions.metadata == {"case": "instructions"}
    assert with_instructions.user == "tester"


def test_max_output_tokens_leaves_the_response_incomplete(openai_client, model):
    short = openai_client.responses.create(model=model, input=GERMANY, temperature=0,
                                           max_output_tokens=3)
    assert short.status == "incomplete"
    assert short.incomplete_details.reason == "max_output_tokens"
    assert short.usage.output_tokens == 3
    events = list(openai_client.responses.create(model=model, input=GERMANY, temperature=0,
                                                 max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == short.output_text


def test_a_stream_is_the_typed_events_in_order_with_the_same_answer(openai_client, model):
    whole = openai_client.responses.create(model=model, input=GERMANY, temperature=0,
                                           max_output_tokens=24)
    events = list(openai_client.responses.create(model=model, input=GERMANY, temperature=0,
                                                 max_output_tokens=24, stream=True))
    assert _squeezed([event.type for event in events]) == TEXT_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text
    created, final = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.id == final.id
    assert final.status == "completed" and final.output_text == text
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        whole.usage.input_tokens, whole.usage.output_tokens)
    item_ids = {e.item_id for e in events if e.type == "response.output_text.delta"}
    assert item_ids == {final.output[0].id}
    # The SDK's stream helper rebuilds the same response.
    with openai_client.responses.stream(model=model, input=GERMANY, temperature=0,
                                        max_output_tokens=24) as stream:
        rebuilt = stream.get_final_response()
    assert rebuilt.output_text == whole.output_text


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "name": "get_weather"}])
def test_a_forced_function_call_follows_its_schema_whole_and_streamed(openai_client, model,
                                                                      tool_choice):
    settings = {"model": model, "input": "What is the weather in Paris?", "temperature": 0,
                "max_output_tokens": 60, "tools": [WEATHER, TIME], "tool_choice": tool_choice}
    response = openai_client.responses.create(**settings)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and response.status == "completed"
    if isinstance(tool_choice, dict):
        assert {call.name for call in calls} == {"get_weather"}
    for call in calls:
        schema = WEATHER if call.name == "get_weather" else TIME
        jsonschema.validate(json.loads(call.arguments), schema["parameters"])
        assert call.call_id and call.id.startswith("fc_")
    events = list(openai_client.responses.create(**settings, stream=True))
    names = _squeezed([event.type for event in events])
    assert names[:len(CALL_EVENTS)] == CALL_EVENTS and names[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    streamed = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [(e.name, e.arguments) for e in streamed] == [(c.name, c.arguments) for c in calls]


def test_a_function_call_output_round_trip(openai_client, model):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = openai_client.responses.create(model=model, input=ask, tools=[WEATHER],
                                           tool_choice="required", temperature=0,
                                           max_output_tokens=60)
    call = next(item for item in first.output if item.type == "function_call")
    conversation = [*ask, {"type": "function_call", "call_id": call.call_id, "name": call.name,
                           "arguments": call.arguments},
                    {"type": "function_call_output", "call_id": call.call_id,
                     "output": "Sunny and 22 degrees."}]
    answer = openai_client.responses.create(model=model, input=conversation, tools=[WEATHER],
                                            temperature=0, max_output_tokens=40)
    assert answer.output and answer.usage.input_tokens > first.usage.input_tokens
    # The same turns through chat: the same prompt, the same answer.
    chat = _chat(openai_client, model, [*ask, {
        "role": "assistant", "content": "", "tool_calls": [{
            "id": call.call_id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny and 22 degrees."}],
        tools=[{"type": "function", "function": {k: WEATHER[k] for k in (
            "name", "description", "parameters", "strict")}}], max_tokens=40)
    assert answer.usage.input_tokens == chat.usage.prompt_tokens
    assert answer.output_text == (chat.choices[0].message.content or "")
    assert [(item.name, item.arguments) for item in answer.output if item.type == "function_call"
            ] == [(c.function.name, c.function.arguments)
                  for c in chat.choices[0].message.tool_calls or ()]


def test_a_json_schema_answer_follows_the_schema(openai_client, model):
    ask = "Describe Paris as JSON."
    response = openai_client.responses.create(
        model=model, input=ask, temperature=0, max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY,
                         "strict": True}})
    jsonschema.validate(json.loads(response.output_text), CITY)
    assert response.text.format.type == "json_schema"
    # json_object is chat's json_object (its answer may be cut by max_output_tokens: the
    # grammar keeps its JSON open until the end, and SmolLM2 rambles).
    as_object = openai_client.responses.create(
        model=model, input=ask, temperature=0, max_output_tokens=40,
        text={"format": {"type": "json_object"}})
    chat = _chat(openai_client, model, [{"role": "user", "content": ask}], max_tokens=40,
                 response_format={"type": "json_object"})
    assert as_object.output_text.startswith("{")
    assert as_object.output_text == chat.choices[0].message.content


# ---- bad input ----------------------------------------------------------------------------------
def _openai_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    return error["message"]


@pytest.mark.parametrize(("body", "words"), [
    ({}, "input"),
    ({"input": GERMANY, "frequency": 2}, "frequency"),
    ({"input": GERMANY, "tools": [{"type": "web_search"}]}, "web_search"),
    ({"input": GERMANY, "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]},
     "file_search"),
    ({"input": GERMANY, "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
     "code_interpreter"),
    ({"input": GERMANY, "background": True}, "background"),
    ({"input": [{"type": "video"}]}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "has no vision ability"),
    ({"input": GERMANY, "tools": [WEATHER],
      "tool_choice": {"type": "function", "name": "get_time"}}, "get_time"),
    ({"input": GERMANY, "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": GERMANY, "text": {"format": {"type": "json_schema", "schema": CITY}}}, "name"),
])
def test_bad_input_is_a_400_in_openai_s_shape(local_cluster, model, body, words):
    response = httpx.post(local_cluster.endpoint + "/v1/responses", timeout=60,
                          json={"model": model, **body})
    assert words in _openai_error(response, 400)


def test_an_unknown_model_is_a_404(local_cluster):
    response = httpx.post(local_cluster.endpoint + "/v1/responses", timeout=60,
                          json={"model": "no-such-model", "input": GERMANY})
    _openai_error(response, 404)


# ---- stored responses ---------------------------------------------------------------------------
def test_a_chain_of_three_turns_holds_the_earlier_turns(openai_client, model):
    first = openai_client.responses.create(model=model, input="My name is Ada.", temperature=0,
                                           max_output_tokens=16, instructions="Be brief.")
    second = openai_client.responses.create(model=model, input="What is the capital of Italy?",
                                            previous_response_id=first.id, temperature=0,
                                            max_output_tokens=16)
    third = openai_client.responses.create(model=model, input="What is my name?",
                                           previous_response_id=second.id, temperature=0,
                                           max_output_tokens=16, stream=True)
    events = list(third)
    third_whole = events[-1].response
    assert second.previous_response_id == first.id
    assert third_whole.previous_response_id == second.id
    used = [first.usage.input_tokens, second.usage.input_tokens,
            third_whole.usage.input_tokens]
    assert used[0] < used[1] < used[2]
    # The prompt is the earlier turns' input and output, then this input: the chat route reads
    # the same messages and counts the same tokens (the first turn's instructions stay with it).
    chat = _chat(openai_client, model, [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is the capital of Italy?"},
        {"role": "assistant", "content": second.output_text},
        {"role": "user", "content": "What is my name?"}], max_tokens=16)
    assert third_whole.usage.input_tokens == chat.usage.prompt_tokens
    assert third_whole.output_text == chat.choices[0].message.content
    # A response asked not to be stored cannot be continued.
    unkept = openai_client.responses.create(model=model, input="Hi", store=False,
                                            max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.create(model=model, input="Hi", max_output_tokens=4,
                                       previous_response_id=unkept.id)


def test_retrieve_input_items_and_delete(openai_client, model):
    items = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "input_text", "text": GERMANY}]}]
    created = openai_client.responses.create(model=model, input=items, temperature=0,
                                             max_output_tokens=16, metadata={"k": "v"})
    found = openai_client.responses.retrieve(created.id)
    assert found.model_dump() == created.model_dump()
    listed = openai_client.responses.input_items.list(created.id)
    assert [item.role for item in listed.data] == ["user", "developer"]  # newest first
    assert listed.data[0].content[0].text == GERMANY and listed.has_more is False
    assert all(item.id for item in listed.data)
    ascending = openai_client.responses.input_items.list(created.id, order="asc", limit=1)
    assert [item.role for item in ascending.data] == ["developer"] and ascending.has_more
    after = openai_client.responses.input_items.list(created.id, order="asc",
                                                     after=ascending.data[0].id)
    assert [item.role for item in after.data] == ["user"]
    openai_client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.input_items.list(created.id)


def test_a_stored_response_survives_a_restart(local_cluster, openai_client, model):
    """Last in the module: it stops the module's server."""
    created = openai_client.responses.create(model=model, input=GERMANY, temperature=0,
                                             max_output_tokens=8)
    streamed = list(openai_client.responses.create(model=model, input=GERMANY, temperature=0,
                                                   max_output_tokens=8, stream=True))
    kept = {created.id: created, streamed[-1].response.id: streamed[-1].response}
    local_cluster.stop()
    again = start_local(local_cluster.home)
    try:
        client = openai.OpenAI(base_url=again.endpoint + "/v1", api_key="unused", max_retries=0)
        for response_id, response in kept.items():
            assert client.responses.retrieve(response_id).output_text == response.output_text
    finally:
        again.stop()
