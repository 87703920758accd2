"""LangChain's standard chat-model tests (the `langchain-tests` package) against Fleet: the real
SmolLM2-135M-Instruct GGUF on llama.cpp behind a real `fleet local`, driven by
`langchain_openai.ChatOpenAI` pointed at it, as a LangChain user would.

SmolLM2's family has no tool format of its own, so every tool test here runs on Fleet's generic
tool format (fleet.generation.tool_use), with tool_choice "auto" as with a forced call.

The standard tests that are overridden are listed in OVERRIDDEN with the reason for each; every
override still checks the server's side of the same exchange. LangChain marks such overrides
with xfail, which this project does not use: its own check that nothing is overridden silently
(test_no_overrides_DO_NOT_OVERRIDE) is replaced by one that holds the overrides to that list."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from tests.builders import _smollm2_gguf

MODEL_UID, OVERRIDE_UID = "smol-lc", "smol-lc-other"
OVERRIDDEN = {
    "test_image_inputs": "SmolLM2 reads text only (and the standard test downloads its image): "
                         "Fleet must refuse image parts with a 400 that says so",
    "test_pdf_inputs": "the same for PDF files",
    "test_audio_inputs": "the same for audio",
    "test_image_tool_message": "the same for an image in a tool result",
    "test_pdf_tool_message": "the same for a PDF in a tool result",
    "test_stream_time": "a benchmark replayed from recorded HTTP cassettes, for hosted APIs: "
                        "here, that a long answer streams (its first words arrive well before "
                        "its end)",
    "test_agent_loop": "asked 'What is the weather in San Francisco, CA?' with the tool left to "
                       "it, SmolLM2-135M answers in text (its choice, which the server must "
                       "allow): the loop's first call is forced, and its last turn is left to "
                       "the model with the call and its result in the history",
    "test_unicode_tool_call_integration": "SmolLM2-135M does not copy a Chinese or Japanese "
                                          "name from the request into its call (it writes "
                                          "'{{company}}'): the names are given to it as the "
                                          "schema's enum, so the grammar makes the call carry "
                                          "them, and they must come back as sent",
    "test_json_mode": "JSON mode promises a JSON object, not the keys that the prompt asks for "
                      "in prose; SmolLM2-135M sometimes writes only 'setup' (its greedy answer "
                      "changes with the CPU's float paths): every answer, invoked or streamed, "
                      "must be one JSON object, parsed as LangChain parses it",
    "test_no_overrides_DO_NOT_OVERRIDE": "LangChain asks for xfail marks on overrides; this "
                                         "project has none, and keeps this list instead",
}
# A few bytes stand for each file: the server refuses the part before reading it.
DATA = "iVBORw0KGgo="
MEDIA_PARTS = {
    "image_url": {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{DATA}"}},
    "image": {"type": "image", "base64": DATA, "mime_type": "image/png"},
    "pdf": {"type": "file", "base64": DATA, "mime_type": "application/pdf"},
    "audio": {"type": "audio", "base64": DATA, "mime_type": "audio/wav"},
}


@pytest.fixture(scope="module", autouse=True)
def fleet_models(local_cluster, client) -> None:
    """SmolLM2 under two uids (the second for the model-override tests); the class reads the
    server's address from here, since LangChain's tests build the model from class properties."""
    for uid in (MODEL_UID, OVERRIDE_UID):
        client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                            model_format="gguf", quantization="Q4_1", model_uid=uid,
                            model_path=str(_smollm2_gguf()), n_parallel=4)
    TestFleetChatModel.endpoint = local_cluster.endpoint


def _refused(model: Any, messages: list[BaseMessage], part_type: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        model.invoke(messages)
    assert info.value.status_code == 400
    if part_type == "image_url":  # an image, to a model without the vision ability
        assert info.value.body["code"] == "no_vision"
        assert "has no vision ability" in info.value.body["message"]
    else:
        assert f"content parts of type {part_type!r} are not supported" in \
            info.value.body["message"]


def _file_in_a_tool_result(model: BaseChatModel, part: str, sent_as: str) -> None:
    call = {"type": "tool_call", "id": "1", "name": "random_file", "args": {}}
    messages = [HumanMessage("Describe a random file."), AIMessage([], tool_calls=[call]),
                ToolMessage([MEDIA_PARTS[part]], tool_call_id="1", name="random_file")]

    def random_file() -> str:
        """A random file."""
        return ""

    _refused(model.bind_tools([random_file]), messages, sent_as)


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "It's sunny."


class TestFleetChatModel(ChatModelIntegrationTests):
    endpoint = ""

    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # stream_usage: ChatOpenAI asks for usage in streams only from OpenAI's own address.
        # The standard parameters again (temperature 0, at most 100 tokens): test_stop_sequence
        # builds a model from these alone, and 135M parameters ramble for thousands of tokens.
        # frequency_penalty: at temperature 0 SmolLM2 repeats one sentence inside a JSON string
        # until max_tokens ("A cat is a cat, right? A cat is a cat, right? ..."); a penalty, as
        # one would configure for such a small model, lets its answers end (0.5 was not enough
        # with 4 parallel slots: llama.cpp's numbers, and so greedy answers, change with them).
        return {"model": MODEL_UID, "base_url": f"{self.endpoint}/v1", "api_key": "unused",
                "stream_usage": True, "temperature": 0, "max_tokens": 100,
                "frequency_penalty": 1.0}

    @property
    def supports_json_mode(self) -> bool:
        return True  # response_format {"type": "json_object"}

    @property
    def model_override_value(self) -> str:
        return OVERRIDE_UID

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True  # Anthropic-style content blocks in the history, as ChatOpenAI sends them

    def test_no_overrides_DO_NOT_OVERRIDE(self) -> None:  # noqa: N802 - the standard name
        standard = ChatModelIntegrationTests
        tests = {name for name in dir(standard) if name.startswith("test_")}
        assert tests <= {name for name in dir(self) if name.startswith("test_")}
        overridden = {name for name in tests
                      if getattr(type(self), name) is not getattr(standard, name)}
        assert overridden == set(OVERRIDDEN)

    # ---- text only ------------------------------------------------------------------------
    @pytest.mark.parametrize("part", ["image_url", "image"])
    def test_image_inputs(self, model: BaseChatModel, part: str) -> None:
        message = HumanMessage([{"type": "text", "text": "Describe this image."}, MEDIA_PARTS[part]])
        _refused(model, [message], "image_url")  # ChatOpenAI sends both as image_url

    def test_pdf_inputs(self, model: BaseChatModel) -> None:
        message = HumanMessage([{"type": "text", "text": "Summarize:"}, MEDIA_PARTS["pdf"]])
        _refused(model, [message], "file")

    def test_audio_inputs(self, model: BaseChatModel) -> None:
        message = HumanMessage([{"type": "text", "text": "Describe:"}, MEDIA_PARTS["audio"]])
        _refused(model, [message], "input_audio")

    def test_image_tool_message(self, model: BaseChatModel) -> None:
        _file_in_a_tool_result(model, "image_url", "image_url")

    def test_pdf_tool_message(self, model: BaseChatModel) -> None:
        _file_in_a_tool_result(model, "pdf", "file")

    # ---- what a 135M model cannot give --------------------------------------------------------
    def test_stream_time(self, model: BaseChatModel) -> None:
        started, arrivals = time.monotonic(), []
        for chunk in model.stream("Write a story about a cat."):
            assert isinstance(chunk, AIMessageChunk)
            if chunk.text:
                arrivals.append(time.monotonic() - started)
        assert len(arrivals) > 20  # about one chunk a token, up to max_tokens=100
        assert arrivals[0] < arrivals[-1] / 2

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        question = HumanMessage("What is the weather in San Francisco, CA?")
        called = model.bind_tools([get_weather], tool_choice="any").invoke([question])
        assert isinstance(called, AIMessage)
        assert any(block["type"] == "tool_call" for block in called.content_blocks)
        [call] = called.tool_calls
        result = get_weather.invoke(call)
        assert isinstance(result, ToolMessage)
        answer = model.bind_tools([get_weather]).invoke([question, called, result])
        assert isinstance(answer, AIMessage)
        # Text, or another call to the one tool: never half a call left in the text.
        assert answer.tool_calls or (answer.text and "<tool_call>" not in answer.text)
        assert all(c["name"] == "get_weather" for c in answer.tool_calls)
        assert not answer.invalid_tool_calls

    def test_json_mode(self, model: BaseChatModel) -> None:
        chat = model.with_structured_output({"title": "Joke", "type": "object", "properties": {
            "setup": {"type": "string"}, "punchline": {"type": "string"}}}, method="json_mode")
        msg = ("Tell me a joke about cats. Return the result as a JSON with 'setup' and "
               "'punchline' keys. Return nothing other than JSON.")
        result = chat.invoke(msg)
        assert isinstance(result, dict) and result
        chunks = list(chat.stream(msg))
        assert chunks and all(isinstance(chunk, dict) for chunk in chunks)
        assert chunks[-1]

    def test_unicode_tool_call_integration(self, model: BaseChatModel) -> None:
        names = ["你好啊集团", "こんにちは株式会社"]
        customer = {"type": "function", "function": {
            "name": "unicode_customer", "description": "Create a customer with a Unicode name.",
            "parameters": {"type": "object", "required": ["customer_name", "description"],
                           "properties": {"customer_name": {"enum": names},
                                          "description": {"type": "string", "maxLength": 40}}}}}
        bound = model.bind_tools([customer], tool_choice="any")
        for name in names:
            message = bound.invoke([HumanMessage(f"Create a customer named '{name}'.")])
            [call] = message.tool_calls
            assert call["name"] == "unicode_customer"
            assert call["args"]["customer_name"] in names
            assert isinstance(call["args"]["description"], str)
