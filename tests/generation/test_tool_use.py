"""How tools reach the prompt: through a family's own template, or in Fleet's generic format
(the functions in the system prompt, earlier calls and results as text), rendered by SmolLM2's
real chat template, which knows nothing of tools."""

from __future__ import annotations

import json

import pytest

from fleet.generation.chat_template import render_chat
from fleet.generation.structured import constraint_of as constraint_of_call
from fleet.generation.tool_calls import StreamingToolCallParser, ToolFormat
from fleet.generation.tool_use import (
    EXAMPLE,
    INSTRUCTIONS,
    call_block,
    chat_input,
    history_as_text,
)
from fleet.messages import GenerationCall
from tests.builders import smollm2_hf_folder


def constraint_of(body: dict, generic_tools: bool = False):
    """The constraint of a chat request with these fields, as the replica reads it."""
    return constraint_of_call(GenerationCall(kind="chat", **body), generic_tools)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather and time in Rome?"},
    {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
    {"role": "user", "content": "Thanks. And Paris?"},
]


def _input(body: dict, native: bool):
    return chat_input(GenerationCall(kind="chat", **body), native,
                      constraint_of(body, generic_tools=not native))


def test_a_family_with_a_tool_format_gets_the_tools_through_its_template():
    chat = _input({"messages": ASK, "tools": [WEATHER]}, native=True)
    assert chat.messages is ASK and chat.tools == [WEATHER]
    assert chat.tool_format == ToolFormat(("get_weather",))
    forced = _input({"messages": ASK, "tools": [WEATHER, TIME], "tool_choice": {
        "type": "function", "function": {"name": "get_time"}}}, native=True)
    assert forced.tools == [WEATHER, TIME] and forced.tool_format == ToolFormat(("get_time",), True)
    none = _input({"messages": ASK, "tools": [WEATHER], "tool_choice": "none"}, native=True)
    assert none.tools is None and none.tool_format is None


@pytest.mark.parametrize("tool_choice, names, forced", [
    ("auto", ("get_weather", "get_time"), False),
    ("required", ("get_weather", "get_time"), True),
    ({"type": "function", "function": {"name": "get_time"}}, ("get_time",), True),
])
def test_the_generic_format_describes_the_callable_functions_in_the_system_prompt(tool_choice, names,
                                                                                   forced):
    chat = _input({"messages": ASK, "tools": [WEATHER, TIME], "tool_choice": tool_choice},
                  native=False)
    assert chat.tools is None  # the template is never asked to render tools
    assert chat.tool_format == ToolFormat(names, forced=forced, generic=True)
    system, user = chat.messages
    assert system["role"] == "system" and user == ASK[0]
    listed = system["content"].split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(line)["name"] for line in listed] == list(names)
    assert EXAMPLE in system["content"]


def test_the_section_follows_the_clients_own_system_prompt():
    chat = _input({"messages": [{"role": "system", "content": "Be brief."}, *ASK],
                   "tools": [WEATHER]}, native=False)
    assert chat.messages[0]["content"].startswith("Be brief.\n\nYou can call functions.")
    assert len(chat.messages) == 2


@pytest.mark.parametrize("body", [
    {"messages": ASK, "tools": [WEATHER], "tool_choice": "none"},
    {"messages": ASK},
    # Another grammar leaves no room for a call: the tools are neither described nor read.
    {"messages": ASK, "tools": [WEATHER], "response_format": {"type": "json_object"}},
])
def test_no_call_possible_means_no_section_and_no_parsing(body):
    chat = _input(body, native=False)
    assert chat.messages == ASK and chat.tools is None and chat.tool_format is None


def test_earlier_calls_and_results_are_text_in_the_generic_format():
    converted = history_as_text(HISTORY)
    assert [m["role"] for m in converted] == ["system", "user", "assistant", "user"]
    assert converted[2] == {"role": "assistant", "content": "\n".join([
        "Checking.", call_block("get_weather", {"city": "Rome"}), call_block("get_time", {})])}
    # Both results and the user's next words in one turn, each result named after its call.
    assert converted[3]["content"] == (
        "Result of get_weather: Sunny\nResult of get_time: noon\nThanks. And Paris?")
    # What the model is shown as its own earlier call is what the parser reads as a call.
    parser = StreamingToolCallParser(ToolFormat(generic=True))
    text, calls = parser.feed(converted[2]["content"])
    assert text == "Checking.\n" and [c.name for c in calls] == ["get_weather", "get_time"]


def test_a_template_without_tools_renders_a_whole_tool_conversation():
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(smollm2_hf_folder()).chat_template
    body = {"messages": HISTORY, "tools": [WEATHER, TIME]}
    prompt = render_chat(template, _input(body, native=False).messages)
    for expected in ("Be brief.\n\nYou can call functions.", '"name": "get_weather"',
                     call_block("get_weather", {"city": "Rome"}), "Sunny", "noon",
                     "Thanks. And Paris?"):
        assert expected in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    # tool_choice "none": no section, the history still as text (the template drops tool_calls).
    quiet = render_chat(template, _input({**body, "tool_choice": "none"}, native=False).messages)
    assert INSTRUCTIONS.split("\n")[0] not in quiet and call_block("get_time", {}) in quiet
