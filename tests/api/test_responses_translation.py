"""OpenAI's Responses API translated both ways, in-process: a Responses body -> the chat request
that runs it (fleet.api.responses.to_chat), a chat answer -> a Response
(fleet.api.responses.answer), a chat stream's chunks -> the typed events, read back by the
openai SDK's own types (fleet.api.responses.events). tests/e2e/test_openai_responses.py runs
the same through a real server and model."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response as SdkResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from fleet.api.protocol.openai_responses import ResponsesRequest
from fleet.api.responses.answer import response
from fleet.api.responses.events import ResponseEvents
from fleet.api.responses.to_chat import chat_request
from fleet.errors import BadRequest
from fleet.messages import Usage

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}, "strict": True}
EVENTS = TypeAdapter(ResponseStreamEvent)


def _request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate_json(orjson.dumps({"model": "m", **fields}))


def _messages(**fields: Any) -> list[dict[str, Any]]:
    return chat_request(_request(**fields)).messages


def test_a_string_and_instructions_are_the_user_and_system_messages():
    assert _messages(input="Hi") == [{"role": "user", "content": "Hi"}]
    assert _messages(input="Hi", instructions="Be brief.") == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_items_become_chat_turns_in_order():
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Weather"}, {"type": "input_text", "text": "in Paris?"}]},
        {"type": "reasoning", "summary": [], "content": [
            {"type": "reasoning_text", "text": "A call."}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Let me look.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather",
         "arguments": '{"city": "Lyon"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [
            {"type": "input_text", "text": "Rain"}]},
    ]
    calls = [{"id": f"c{n}", "type": "function", "function": {
        "name": "get_weather", "arguments": f'{{"city": "{city}"}}'}}
        for n, city in ((1, "Paris"), (2, "Lyon"))]
    assert _messages(input=items) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather\nin Paris?"},
        {"role": "assistant", "content": "Let me look.", "reasoning_content": "A call.",
         "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "Rain"}]


def test_tools_formats_and_sampling_are_chat_s():
    chat = chat_request(_request(
        input="Hi", tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False, max_output_tokens=9, temperature=0, top_p=0.5,
        reasoning={"effort": "none"}))
    assert chat.tools[0].model_dump(exclude_unset=True) == {"type": "function", "function": {
        k: WEATHER[k] for k in ("name", "description", "parameters", "strict")}}
    assert chat.tool_choice.function.name == "get_weather"
    assert (chat.parallel_tool_calls, chat.max_tokens, chat.temperature, chat.top_p) == (
        False, 9, 0, 0.5)
    assert chat.chat_template_kwargs == {"enable_thinking": False}
    assert chat_request(_request(input="Hi", tools=[WEATHER], tool_choice="required")
                        ).tool_choice == "required"
    schema = {"type": "object"}
    assert chat_request(_request(input="Hi", text={"format": {
        "type": "json_schema", "name": "x", "schema": schema, "strict": True}})
    ).response_format == {"type": "json_schema", "json_schema": {
        "name": "x", "schema": schema, "strict": True}}
    assert chat_request(_request(input="Hi", text={"format": {"type": "json_object"}})
                        ).response_format == {"type": "json_object"}
    assert chat_request(_request(input="Hi", text={"format": {"type": "text"}})
                        ).response_format is None


@pytest.mark.parametrize(("fields", "words"), [
    ({"input": "Hi", "tools": [{"type": "web_search_preview"}]}, "web_search_preview"),
    ({"input": "Hi", "tools": [{"type": "mcp", "server_label": "x"}]}, "'mcp'"),
    ({"input": "Hi", "tools": [{"type": "computer_use_preview"}]}, "computer_use_preview"),
    ({"input": "Hi", "background": True}, "background responses are not supported"),
    ({"input": "Hi", "unknown": 1}, "unknown"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input item"),
    ({"input": "Hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
     "nope"),
])
def test_what_fleet_cannot_apply_is_refused_by_name(fields, words):
    with pytest.raises((ValidationError, BadRequest)) as refused:
        chat_request(_request(**fields))
    assert words in str(refused.value)


def test_input_images_become_image_parts_in_their_places():
    body = _request(input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is it?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]}])
    # Read and checked at the API's next step (fleet.api.chat_images), for a model that sees.
    assert chat_request(body).messages == [{"role": "user", "content": [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]
    for part, words in (({"type": "input_image", "file_id": "file-1"}, "file_id"),
                        ({"type": "input_file", "file_id": "file-1"}, "input_file")):
        with pytest.raises(BadRequest, match=rf"input\.0\.content\.0: .*{words}"):
            chat_request(_request(input=[{"role": "user", "content": [part]}]))
    output = {"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_image", "image_url": "data:image/png;base64,AA"}]}
    with pytest.raises(BadRequest, match=r"input\.0\.output\.0: .*message's content"):
        chat_request(_request(input=[output]))


def test_a_whole_answer_is_a_response_the_sdk_reads():
    choice = {"finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Looking.", "reasoning_content": "Think.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]}}
    body = _request(input="Hi", tools=[WEATHER], reasoning={"summary": "auto"})
    answer = SdkResponse.model_validate(response(body, choice, Usage(7, 5, 12)))
    assert [item.type for item in answer.output] == ["reasoning", "message", "function_call"]
    assert answer.output[0].summary[0].text == "Think."
    assert answer.output_text == "Looking." and answer.status == "completed"
    assert (answer.output[2].call_id, answer.output[2].name) == ("call_1", "get_weather")
    assert (answer.usage.input_tokens, answer.usage.output_tokens,
            answer.usage.total_tokens) == (7, 5, 12)
    cut = SdkResponse.model_validate(response(body, {"finish_reason": "length", "message": {
        "content": "Par"}}, Usage(7, 3, 10)))
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


def _events(frames: list[bytes]) -> list[Any]:
    events = []
    for frame in frames:
        for block in frame.decode().split("\n\n"):
            if block:
                name, data = block.split("\n")
                event = EVENTS.validate_python(orjson.loads(data.removeprefix("data: ")))
                assert name == f"event: {event.type}"
                events.append(event)
    return events


def test_a_stream_is_the_typed_events_in_order():
    finished: list[dict[str, Any]] = []
    dialect = ResponseEvents(_request(input="Hi", stream=True, reasoning={"summary": "auto"}),
                             7, finished.append)
    frames = [*dialect.opening(),
              *dialect.chunks([{"delta": {"reasoning_content": "Hm."}, "finish_reason": None}]),
              *dialect.chunks([{"delta": {"content": "Hel"}, "finish_reason": None},
                               {"delta": {"content": "lo"}, "finish_reason": None}]),
              *dialect.chunks([{"delta": {"tool_calls": [{"index": 0, "id": "call_1",
                                "type": "function", "function": {
                                    "name": "f", "arguments": "{}"}}]},
                                "finish_reason": "tool_calls"}]),
              *dialect.closing(Usage(7, 4, 11))]
    events = _events(frames)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [event.type for event in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    final = events[-1].response
    assert final.output_text == "Hello" and final.usage.total_tokens == 11
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert len(finished) == 1 and SdkResponse.model_validate(finished[0]) == final


def test_an_error_mid_stream_is_an_error_event():
    dialect = ResponseEvents(_request(input="Hi", stream=True), 3)
    frames = [*dialect.opening(), *dialect.failure(503, {
        "message": "replica lost", "type": "unavailable", "code": "replica_lost"})]
    events = _events(frames)
    assert events[-1].type == "error" and events[-1].sequence_number == 2
    assert (events[-1].message, events[-1].code) == ("replica lost", "replica_lost")
