from __future__ import annotations

import json
import re

import pytest

from fleet.generation.tool_calls import StreamingToolCallParser, ToolCall, ToolFormat
from tests.generation.streams import chunkings


def parse(chunks: list[str], form: ToolFormat | None = None, cut: bool = False
          ) -> tuple[list[str], list[ToolCall], tuple[str, list[ToolCall]]]:
    """(content per feed, calls from the feeds, what finish returned)."""
    parser = StreamingToolCallParser(form)
    contents, calls = [], []
    for chunk in chunks:
        text, found = parser.feed(chunk)
        contents.append(text)
        calls += found
    return contents, calls, parser.finish(cut)


def whole(chunks: list[str]) -> tuple[str, list[tuple[str, dict]]]:
    contents, calls, (last_text, last_calls) = parse(chunks)
    return "".join(contents) + last_text, [(c.name, json.loads(c.arguments)) for c in calls + last_calls]


def raw(chunks: list[str], form: ToolFormat | None = None, cut: bool = False
        ) -> tuple[str, list[tuple[str, str]]]:
    """Content and (name, arguments text) of each call: a cut call's arguments are not JSON."""
    contents, calls, (last_text, last_calls) = parse(chunks, form, cut)
    return "".join(contents) + last_text, [(c.name, c.arguments) for c in calls + last_calls]


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


FORCED = ToolFormat(("get_weather", "get_time"), forced=True)
GENERIC = ToolFormat(("get_weather", "get_time"), generic=True)
GENERIC_FORCED = ToolFormat(("get_weather", "get_time"), forced=True, generic=True)
WEATHER_CALL = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'


@pytest.mark.parametrize("form, wrapper", [(FORCED, ""), (GENERIC_FORCED, "<tool_call>\n")])
@pytest.mark.parametrize("cut_at, expected", [
    ('{"city": "Par', [("get_weather", '{"city": "Par')]),
    ("", [("get_weather", "")]),  # cut right after the arguments' key
])
def test_a_forced_call_cut_at_max_tokens_is_a_call_with_partial_arguments(form, wrapper, cut_at,
                                                                            expected):
    text = wrapper + '{"name": "get_weather", "arguments": ' + cut_at
    for chunks in chunkings(text):
        assert raw(chunks, form, cut=True) == ("", expected), chunks


@pytest.mark.parametrize("form", [FORCED, GENERIC_FORCED])
def test_a_forced_call_cut_inside_its_name_is_completed_from_the_tools_or_dropped(form):
    wrapper = "<tool_call>\n" if form.generic else ""
    for chunks in chunkings(wrapper + '{"name": "get_w'):
        assert raw(chunks, form, cut=True) == ("", [("get_weather", "")]), chunks
    # "get_" begins both functions: no call can be named, and the wrapper is no content either.
    for chunks in chunkings(wrapper + '{"name": "get_'):
        assert raw(chunks, form, cut=True) == ("", []), chunks
    only_one = ToolFormat(("get_time",), forced=True, generic=form.generic)
    for text in ("", wrapper[:3], wrapper + '{"na'):
        assert raw([text], only_one, cut=True) == ("", [("get_time", "")]), text


def test_a_call_cut_in_its_closing_tag_is_whole():
    text = f"<tool_call>\n{WEATHER_CALL}\n</tool_ca"
    expected = ("", [("get_weather", '{"city": "Paris", "unit": "celsius"}')])
    for chunks in chunkings(text):
        assert raw(chunks, GENERIC, cut=True) == expected
        assert raw(chunks, GENERIC, cut=False) == expected


def test_an_unfinished_block_is_content_unless_cut_or_made_by_the_grammar():
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"ci'
    native = ToolFormat(("get_weather",))
    assert raw([text], native, cut=False) == (text, [])  # the model ended it: text is not lost
    assert raw([text], native, cut=True) == ("", [("get_weather", '{"ci')])
    # In the generic format a block is always a call (a stop string may end it early).
    assert raw([text], GENERIC, cut=False) == ("", [("get_weather", '{"ci')])
    assert raw(['<tool_call>\n{"name": "get_'], GENERIC, cut=True) == ("", [])


@pytest.mark.parametrize("text", ['{"answer": 4', '{"name": "Ada", "age": 3', '{"name": "get_weather"'])
def test_json_cut_short_is_no_call_unless_it_reached_the_arguments(text):
    # A Llama-style answer left to the model may be plain JSON: only a name and an arguments key
    # make it a call.
    for chunks in chunkings(text):
        assert raw(chunks, ToolFormat(("get_weather",)), cut=True) == (text, []), chunks
    cut_call = '{"name": "get_weather", "parameters": {"city": "Par'
    assert raw([cut_call], ToolFormat(("get_weather",)), cut=True) == (
        "", [("get_weather", '{"city": "Par')])


def test_complete_calls_before_a_cut_one_are_kept():
    text = '{"name": "get_time", "parameters": {"city": "Rome"}}; {"name": "get_weather", "parameters": {"ci'
    assert raw([text], ToolFormat(("get_weather", "get_time")), cut=True) == (
        "", [("get_time", '{"city": "Rome"}'), ("get_weather", '{"ci')])


@pytest.mark.parametrize("text, expected", [
    (f"<tool_call>\n{WEATHER_CALL}\n</tool_call>",
     ("", [("get_weather", {"city": "Paris", "unit": "celsius"})])),
    (f"<tool_call>\n{WEATHER_CALL}\n</tool_call>\n<tool_call>\n{WEATHER_CALL}\n</tool_call>",
     ("", [("get_weather", {"city": "Paris", "unit": "celsius"})] * 2)),
    # The generic format has calls in blocks only: an answer of JSON is text.
    (WEATHER_CALL, (WEATHER_CALL, [])),
    ('{"a": 1} and text', ('{"a": 1} and text', [])),
    ("Plain text about <tool_ca", ("Plain text about <tool_ca", [])),
])
def test_the_generic_format_reads_blocks_only(text, expected):
    for chunks in chunkings(text):
        contents, calls, (last_text, last_calls) = parse(chunks, GENERIC)
        got = ("".join(contents) + last_text,
               [(c.name, json.loads(c.arguments)) for c in calls + last_calls])
        assert got == expected, chunks


def test_the_generic_format_streams_text_and_json_at_once():
    parser = StreamingToolCallParser(GENERIC)
    assert parser.feed('{"a":') == ('{"a":', [])  # not held back as a Llama-style call could be
    assert parser.feed(" 1} <tool") == (" 1} ", [])  # only what may open a block waits
    assert parser.feed("s>") == ("<tools>", [])
