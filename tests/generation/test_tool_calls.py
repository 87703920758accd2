from __future__ import annotations

import json
import re

import pytest

from fleet.generation.tool_calls import StreamingToolCallParser, ToolCall
from tests.generation.streams import chunkings


def parse(chunks: list[str]) -> tuple[list[str], list[ToolCall], tuple[str, list[ToolCall]]]:
    """(content per feed, calls from the feeds, what finish returned)."""
    parser = StreamingToolCallParser()
    contents, calls = [], []
    for chunk in chunks:
        text, found = parser.feed(chunk)
        contents.append(text)
        calls += found
    return contents, calls, parser.finish()


def whole(chunks: list[str]) -> tuple[str, list[tuple[str, dict]]]:
    contents, calls, (last_text, last_calls) = parse(chunks)
    return "".join(contents) + last_text, [(c.name, json.loads(c.arguments)) for c in calls + last_calls]


QWEN_ONE = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n'
            '</tool_call>')
QWEN_TWO = ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
            '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>\n')
LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}'


@pytest.mark.parametrize("text, expected", [
    (QWEN_ONE, ("Let me check.\n", [("get_weather", {"city": "Zürich"})])),
    (QWEN_TWO, ("", [("a", {"x": 1}), ("b", {})])),
    ("Before <tool_call>{\"name\": \"f\", \"arguments\": {\"q\": \"<tool_call>\"}}</tool_call> after",
     ("Before after", [("f", {"q": "<tool_call>"})])),
    (LLAMA, ("", [("get_weather", {"city": "Paris", "unit": "celsius"})])),
    ("  <|python_tag|>" + LLAMA, ("", [("get_weather", {"city": "Paris", "unit": "celsius"})])),
    ('{"name": "a", "parameters": {"n": 1}}; {"name": "b", "arguments": {"n": 2}}',
     ("", [("a", {"n": 1}), ("b", {"n": 2})])),
    ('{"name": "a", "parameters": {}};', ("", [("a", {})])),
    ('{"answer": 42} is JSON, not a call', ('{"answer": 42} is JSON, not a call', [])),
    ('{"name": "Ada", "age": 36}', ('{"name": "Ada", "age": 36}', [])),
    ('{"name": "a", "parameters": {}} and prose', ('{"name": "a", "parameters": {}} and prose', [])),
    ("{ not json at all", ("{ not json at all", [])),
    ('Sure: {"name": "f", "parameters": {}}', ('Sure: {"name": "f", "parameters": {}}', [])),
    ("Use <tools> and <tool_ca wisely", ("Use <tools> and <tool_ca wisely", [])),
    ("<tool_call>\n{broken json}\n</tool_call>\nok", ("<tool_call>\n{broken json}\n</tool_call>\nok", [])),
    ('<tool_call>\n{"name": "f", "arguments": {"a": [1, 2]}}', ("", [("f", {"a": [1, 2]})])),
    ('<tool_call>\n{"name": "f", "argu', ('<tool_call>\n{"name": "f", "argu', [])),
    ("", ("", [])),
    ("\n", ("\n", [])),
])
def test_every_chunking_parses_the_same(text, expected):
    for chunks in chunkings(text):
        assert whole(chunks) == expected, chunks


def test_opening_tag_split_across_deltas_is_held_back():
    parser = StreamingToolCallParser()
    assert parser.feed("Checking <tool_") == ("Checking ", [])
    assert parser.feed('call>{"name": "f", "arguments": {}}') == ("", [])
    text, calls = parser.feed("</tool_call>")
    assert text == "" and [c.name for c in calls] == ["f"]
    assert parser.finish() == ("", [])


def test_each_call_is_returned_by_the_feed_that_closes_it():
    first, close, rest = QWEN_TWO.partition("</tool_call>")
    parser = StreamingToolCallParser()
    assert parser.feed(first) == ("", [])
    assert [c.name for c in parser.feed(close)[1]] == ["a"]
    assert [c.name for c in parser.feed(rest)[1]] == ["b"]
    assert parser.finish() == ("", [])


def test_plain_text_streams_without_delay():
    parser = StreamingToolCallParser()
    assert parser.feed("Hello") == ("Hello", [])
    assert parser.feed(" world") == (" world", [])


def test_json_answer_that_is_no_call_streams_once_known():
    parser = StreamingToolCallParser()
    assert parser.feed('{"answer":') == ("", [])  # might still become a call
    assert parser.feed(" 42}") == ('{"answer": 42}', [])
    assert parser.feed(" more") == (" more", [])


def test_call_fields_follow_openai():
    _, _, (_, calls) = parse([LLAMA])
    (call,) = calls
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
    assert call.arguments == '{"city": "Paris", "unit": "celsius"}'
    _, more, _ = parse([QWEN_TWO])
    assert len({c.id for c in more}) == 2


def test_arguments_keep_unicode_and_strings_stay_as_sent():
    _, calls, _ = parse([QWEN_ONE])
    assert calls[0].arguments == '{"city": "Zürich"}'
    _, _, (_, given) = parse(['{"name": "f", "arguments": "{\\"x\\":1}"}'])
    assert given[0].arguments == '{"x":1}'
    _, _, (_, empty) = parse(['{"name": "f", "parameters": null}'])
    assert empty[0].arguments == "{}"
