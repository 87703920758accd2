"""Anthropic's Messages API translated both ways, in-process: a Messages body -> the chat
request that runs it (fleet.api.anthropic.to_chat), a chat answer -> a Message
(fleet.api.anthropic.answer), a chat stream's chunks -> Anthropic's events, read back by the
official `anthropic` SDK's own types (fleet.api.anthropic.events), and errors on these
paths in Anthropic's shape (fleet.api.anthropic.errors). tests/e2e/test_anthropic_messages.py
runs the same through a real server and model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest
from anthropic.types import Message as SdkMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter, ValidationError

from fleet.api.anthropic.answer import message, stop_reason
from fleet.api.anthropic.errors import AnthropicErrors, error_body, error_type
from fleet.api.anthropic.events import MessageEvents
from fleet.api.anthropic.to_chat import chat_request
from fleet.api.protocol.anthropic import CountTokensRequest, MessagesRequest
from fleet.errors import BadRequest
from fleet.generation.choice_output import ChatChoice
from fleet.messages import Usage

WEATHER = {"name": "get_weather", "description": "The weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def _request(**fields: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}],
            **fields}
    return MessagesRequest.model_validate_json(orjson.dumps(body))


def _call(**fields: Any) -> Any:
    return chat_request(_request(**fields)).generation_call()


# ---- requests -> chat -------------------------------------------------------------------------
def test_system_and_turns_become_chat_messages():
    call = _call(system=[{"type": "text", "text": "Be brief."},
                         {"type": "text", "text": "Answer in French.", "cache_control": {
                             "type": "ephemeral"}}],
                 messages=[{"role": "user", "content": [{"type": "text", "text": "One"},
                                                        {"type": "text", "text": "Two"}]},
                           {"role": "assistant", "content": "Un, deux."},
                           {"role": "user", "content": "Three?"}])
    assert call.kind == "chat" and call.max_tokens == 16
    assert call.messages == [{"role": "system", "content": "Be brief.\nAnswer in French."},
                             {"role": "user", "content": "One\nTwo"},
                             {"role": "assistant", "content": "Un, deux."},
                             {"role": "user", "content": "Three?"}]
    assert _call(system="Plain.").messages[0] == {"role": "system", "content": "Plain."}


def test_calls_results_and_thoughts_become_tool_calls_tool_messages_and_reasoning():
    call = _call(tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two cities.", "signature": ""},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Thanks."},  # after the results, whatever its place
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 20°C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no station"}]}]}])
    assistant = call.messages[1]
    assert assistant["content"] == "Let me look." and assistant["reasoning_content"] == "Two cities."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in assistant["tool_calls"]] == [("toolu_1", "get_weather", {"city": "Paris"}),
                                                   ("toolu_2", "get_weather", {"city": "Rome"})]
    assert call.messages[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny, 20°C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no station"},
        {"role": "user", "content": "Thanks."}]
    assert call.tools == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather of a city",
        "parameters": WEATHER["input_schema"]}}]


@pytest.mark.parametrize(("choice", "expected", "parallel"), [
    ({"type": "auto"}, "auto", None),
    ({"type": "any"}, "required", None),
    ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ({"type": "auto", "disable_parallel_tool_use": False}, "auto", True),
    ({"type": "tool", "name": "get_weather"},
     {"type": "function", "function": {"name": "get_weather"}}, None),
    ({"type": "none"}, "none", None),
])
def test_tool_choice_maps_to_chat_s_so_that_any_and_tool_are_forced(choice, expected, parallel):
    call = _call(tools=[WEATHER], tool_choice=choice)
    assert call.tool_choice == expected and call.parallel_tool_calls is parallel


def test_structured_output_thinking_stops_and_sampling():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    for fields in ({"output_config": {"format": {"type": "json_schema", "schema": schema}}},
                   {"output_format": {"type": "json_schema", "schema": schema}}):
        assert _call(**fields).response_format == {
            "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert _call(thinking={"type": "enabled", "budget_tokens": 64}).chat_template_kwargs == {
        "enable_thinking": True}
    assert _call(thinking={"type": "disabled"}).chat_template_kwargs == {"enable_thinking": False}
    assert _call(thinking={"type": "adaptive"}).chat_template_kwargs is None
    call = _call(stop_sequences=["END", "\n\n"], temperature=0.5, top_p=0.9, top_k=40,
                 metadata={"user_id": "u-1"}, service_tier="auto", stream=True)
    assert (call.stop, call.temperature, call.top_p, call.top_k) == (["END", "\n\n"], 0.5, 0.9, 40)


def test_count_tokens_builds_the_same_prompt_without_max_tokens():
    body = {"model": "m", "system": "S.", "tools": [WEATHER], "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "Hi"}]}
    counted = chat_request(CountTokensRequest.model_validate_json(orjson.dumps(body)))
    answered = chat_request(MessagesRequest.model_validate_json(orjson.dumps(
        {**body, "max_tokens": 9})))
    assert counted.max_tokens is None
    for field in ("messages", "tools", "tool_choice"):
        assert getattr(counted.generation_call(), field) == getattr(answered.generation_call(), field)


@pytest.mark.parametrize(("fields", "words"), [
    ({"max_tokens": None}, "max_tokens: Field required"),
    ({"max_tokens": "16"}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),  # Anthropic's range is 0..1
    ({"messages": []}, "messages: must not be empty"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
     "Input tag 'video'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]}, "Input tag 'tool_use'"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "Input tag 'robot'"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages.0.user.content"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "Anthropic's servers run"),
    ({"output_config": {"effort": "high"}}, "output_config.effort: is not supported"),
    ({"output_format": {"type": "json_schema", "schema": {}},
      "output_config": {"format": {"type": "json_schema", "schema": {}}}}, "send one"),
    ({"unknown_field": 1}, "unknown_field: Extra inputs are not permitted"),
    ({"thinking": {"type": "between_tools"}}, "Input tag 'between_tools'"),
])
def test_bad_bodies_are_refused_with_the_field_named(fields, words):
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}],
            **fields}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ValidationError) as caught:
        MessagesRequest.model_validate_json(orjson.dumps(body))
    from fleet.errors import validation_message
    assert words in validation_message(caught.value.errors())


def test_image_blocks_become_image_parts_in_their_places():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    linked = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    call = _call(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare"}, {"type": "text", "text": "these:"}, image, linked]}])
    # Read and checked at the API's next step (fleet.api.chat_images), for a model that sees.
    assert call.messages == [{"role": "user", "content": [
        {"type": "text", "text": "Compare\nthese:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
    with pytest.raises(BadRequest) as caught:  # templates write a tool's result as text
        _call(messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [image]}]}])
    assert "messages.0.content.0.content.0" in caught.value.message
    assert "tool_result" in caught.value.message
    with pytest.raises(ValidationError):  # Anthropic's Files API: Fleet keeps no files
        _call(messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}}]}])


def test_what_only_the_chat_request_can_judge_is_refused_too():
    with pytest.raises(BadRequest) as caught:  # chat's own check across fields
        _call(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_time"})
    assert "get_time" in caught.value.message
    with pytest.raises(BadRequest):
        _call(tool_choice={"type": "any"})  # a forced call without tools


# ---- chat answers -> Messages -----------------------------------------------------------------
def _finished(text: str, reason: str, stop: str | None = None) -> dict[str, Any]:
    choice = ChatChoice(0)
    choice.feed(text)
    choice.finish(reason, stop)
    return choice.result()


def test_stop_reasons():
    assert stop_reason(_finished("Hi", "stop"), ["END"]) == ("end_turn", None)
    assert stop_reason(_finished("Hi", "length"), None) == ("max_tokens", None)
    assert stop_reason(_finished("Hi", "stop", "END"), ["END"]) == ("stop_sequence", "END")
    # A stop string of the model's own family is the end of its turn, not the client's sequence.
    assert stop_reason(_finished("Hi", "stop", "<|end|>"), ["END"]) == ("end_turn", None)
    assert stop_reason({"finish_reason": "tool_calls", "message": {}}, None) == ("tool_use", None)


def test_a_whole_answer_is_a_message_the_sdk_reads():
    choice = {"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Looking.", "reasoning_content": "Paris is a city.",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}},
                       {"id": "call_2", "type": "function", "function": {
                           "name": "get_weather", "arguments": '{"city": "Pa'}}]}}  # cut short
    answer = SdkMessage.model_validate(message("m", choice, Usage.of(30, 12), None))
    assert [block.type for block in answer.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert answer.content[0].thinking == "Paris is a city." and answer.content[1].text == "Looking."
    assert answer.content[2].input == {"city": "Paris"} and answer.content[3].input == {}
    assert (answer.stop_reason, answer.stop_sequence) == ("tool_use", None)
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (30, 12)
    assert answer.id.startswith("msg_") and answer.model == "m" and answer.role == "assistant"
    hidden = message("m", choice, Usage.of(30, 12), None, omit_thinking=True)
    assert hidden["content"][0] == {"type": "thinking", "thinking": "", "signature": ""}
    empty = message("m", {"finish_reason": "length", "message": {"content": ""}}, Usage.of(3, 1),
                    None)
    assert empty["content"] == [] and empty["stop_reason"] == "max_tokens"


# ---- a chat stream -> Anthropic's events ------------------------------------------------------
def _events(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for part in stream.split(b"\n\n"):
        if part:
            name, data = part.split(b"\n")
            assert name.startswith(b"event: ") and data.startswith(b"data: ")
            payload = orjson.loads(data.removeprefix(b"data: "))
            assert payload["type"] == name.removeprefix(b"event: ").decode()
            found.append((payload["type"], payload))
    return found


def _delta(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def test_a_stream_is_anthropic_s_events_in_order_each_one_the_sdk_reads():
    events = MessageEvents("m", 21, ["END"])
    frames = [[_delta(reasoning_content="Hmm, ")], [_delta(reasoning_content="a city.")],
              [_delta(content="It is "), _delta(content="sunny.")],
              [_delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function", "function": {
                  "name": "get_weather", "arguments": '{"city": "Paris"}'}}])],
              [_delta(finish="tool_calls")]]
    stream = b"".join([*events.opening(), *(e for f in frames for e in events.chunks(f)),
                       *events.closing(Usage.of(21, 9))])
    found = _events(stream)
    assert [name for name, _ in found] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    starts = [p for name, p in found if name == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "thinking"), (1, "text"), (2, "tool_use")]
    assert found[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    # Each event is one the SDK's own types read (strictly: no field missing or mistyped).
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    typed = [adapter.validate_python(payload, strict=True) for name, payload in found
             if name != "ping"]
    deltas = [e.delta for e in typed if e.type == "content_block_delta"]
    assert "".join(d.thinking for d in deltas if d.type == "thinking_delta") == "Hmm, a city."
    assert "".join(d.text for d in deltas if d.type == "text_delta") == "It is sunny."
    assert [json.loads(d.partial_json) for d in deltas if d.type == "input_json_delta"] == [
        {"city": "Paris"}]
    assert typed[0].message.usage.input_tokens == 21 and typed[-2].usage.output_tokens == 9


def test_a_stop_sequence_ends_the_stream_with_its_name_and_errors_are_error_events():
    events = MessageEvents("m", 5, ["END"])
    chunks = [_delta(content="Hi"), {**_delta(finish="stop"), "stop_reason": "END"}]
    found = _events(b"".join([*events.opening(), *events.chunks(chunks),
                              *events.closing(Usage.of(5, 2))]))
    assert found[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert _events(b"".join(MessageEvents.failure(503, {"message": "the engine failed"}))) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error",
                                              "message": "the engine failed"}})]


def test_thinking_omitted_keeps_the_block_without_its_text():
    events = MessageEvents("m", 5, None, omit_thinking=True)
    found = _events(b"".join([*events.chunks([_delta(reasoning_content="secret"),
                                              _delta(content="Hi")])]))
    assert [name for name, _ in found] == ["content_block_start", "content_block_stop",
                                           "content_block_start", "content_block_delta"]
    assert b"secret" not in b"".join(events.chunks([_delta(reasoning_content="more secret")]))


# ---- errors in Anthropic's shape --------------------------------------------------------------
@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (405, "invalid_request_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (503, "overloaded_error")])
def test_error_types_follow_the_status(status, kind):
    assert error_type(status) == kind
    assert error_body(status, "why") == {"type": "error", "error": {"type": kind, "message": "why"}}


def _asgi(app: Any, path: str) -> tuple[dict[str, Any], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "path": path, "method": "POST"}, receive, send))
    return sent[0], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_messages_paths_answer_their_errors_in_anthropic_s_shape():
    async def refusing(scope: dict, receive: Any, send: Any) -> None:
        body = b'{"error": {"message": "model \'x\' is not running", "type": "not_found_error"}}'
        await send({"type": "http.response.start", "status": 404, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})

    start, body = _asgi(AnthropicErrors(refusing), "/v1/messages/count_tokens")
    assert orjson.loads(body) == {"type": "error", "error": {
        "type": "not_found_error", "message": "model 'x' is not running"}}
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(body)).encode() and headers[b"retry-after"] == b"1"
    start, body = _asgi(AnthropicErrors(refusing), "/v1/chat/completions")
    assert orjson.loads(body)["error"]["type"] == "not_found_error" and "type" not in orjson.loads(body)

    async def answering(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "a field of an answer"}'})

    assert _asgi(AnthropicErrors(answering), "/v1/messages")[1] == b'{"error": "a field of an answer"}'
