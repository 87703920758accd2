"""The generic tool format's grammar, run by llguidance over SmolLM2's real tokenizer: which
answers it allows (text without a block, or calls valid against their schemas), and, over random
walks through it cut anywhere, that the tool-call parser always makes of them either the text
itself or calls with nothing of the wrapper left as content."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import numpy as np
import pytest

from fleet.errors import BadRequest
from fleet.generation.grammar import checked_grammar
from fleet.generation.structured import constraint_of as constraint_of_call
from fleet.generation.tool_calls import OPEN_TAG, StreamingToolCallParser, ToolFormat
from fleet.messages import GenerationCall
from tests.builders import smollm2_hf_folder


def constraint_of(body: dict, generic_tools: bool = False):
    """The constraint of a chat request with these fields, as the replica reads it."""
    return constraint_of_call(GenerationCall(kind="chat", **body), generic_tools)

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
    "required": ["zone"], "additionalProperties": False}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
BLOCK = f"<tool_call>\n{CALL}\n</tool_call>"


def _grammar(body: dict[str, Any]) -> str:
    constraint = constraint_of({"tools": [WEATHER, TIME], **body}, generic_tools=True)
    assert constraint is not None and constraint.kind == "tool_calls"
    return checked_grammar(constraint)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_hf_folder())


@pytest.fixture(scope="module")
def vocabulary(tokenizer) -> Any:
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer))


def _matcher(vocabulary: Any, grammar: str) -> Any:
    import llguidance

    return llguidance.LLMatcher(vocabulary, llguidance.LLMatcher.grammar_from_lark(grammar))


def _allows(vocabulary: Any, tokenizer: Any, grammar: str, text: str) -> bool:
    """Whether the grammar lets the model write `text` and end there."""
    matcher = _matcher(vocabulary, grammar)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return matcher.consume_tokens(ids) and matcher.consume_token(tokenizer.eos_token_id)


def test_tools_left_to_the_model_constrain_only_a_family_without_a_tool_format():
    tools = {"tools": [WEATHER, TIME]}
    assert constraint_of(tools) is None  # a native family: its template and its own format
    spec = json.loads(constraint_of(tools, generic_tools=True).spec)
    assert (spec["text"], spec["parallel"]) == (True, False)
    assert [s["properties"]["name"] for s in spec["calls"]] == [{"const": "get_weather"},
                                                                 {"const": "get_time"}]
    parallel = constraint_of({**tools, "parallel_tool_calls": True}, generic_tools=True)
    assert json.loads(parallel.spec)["parallel"] is True
    named = constraint_of({**tools, "tool_choice": {"type": "function",
                                                    "function": {"name": "get_time"}}}, True)
    assert json.loads(named.spec)["text"] is False and len(json.loads(named.spec)["calls"]) == 1
    assert constraint_of({**tools, "tool_choice": "none"}, generic_tools=True) is None
    # Another field's grammar wins over tools left to the model, as on a native family...
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert constraint_of({**tools, "response_format": schema}, True).kind == "json_schema"
    # ... and a forced call with another grammar is refused on both.
    for generic in (False, True):
        with pytest.raises(BadRequest, match="send one of them"):
            constraint_of({**tools, "tool_choice": "required", "response_format": schema}, generic)


@pytest.mark.parametrize("text, allowed", [
    ("The weather in Paris is mild.", True),
    ("", True),
    ('{"name": "get_weather"} is JSON, and text here', True),
    ("Text with a <tool_call> in it", False),  # a call is the whole answer or nothing
    (BLOCK, True),
    ('<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>', True),
    (BLOCK + "\n" + BLOCK, False),  # one call unless parallel_tool_calls is true
    (BLOCK + " and text", False),
    (BLOCK.replace("celsius", "kelvin"), False),  # arguments off the schema
    (BLOCK.replace("get_weather", "get_news"), False),  # a function not in tools
    (f"<tool_call>\n{CALL}", False),  # an unclosed block
])
def test_auto_allows_text_or_a_valid_call(tokenizer, vocabulary, text, allowed):
    assert _allows(vocabulary, tokenizer, _grammar({}), text) is allowed


def test_forced_and_parallel_variants(tokenizer, vocabulary):
    forced = _grammar({"tool_choice": "required"})
    assert _allows(vocabulary, tokenizer, forced, BLOCK)
    assert not _allows(vocabulary, tokenizer, forced, "The weather is mild.")
    parallel = _grammar({"parallel_tool_calls": True})
    assert _allows(vocabulary, tokenizer, parallel, BLOCK + "\n" + BLOCK)
    assert _allows(vocabulary, tokenizer, parallel, "Just text.")


def _walk(matcher: Any, tokenizer: Any, rng: random.Random, start: str, steps: int
          ) -> tuple[list[str], bool]:
    """A random path through the grammar from `start`: the text of each token, and whether it
    ended (the end-of-text token) rather than being cut after `steps` tokens."""
    ids = tokenizer.encode(start, add_special_tokens=False)
    assert matcher.consume_tokens(ids)
    chunks = [tokenizer.decode([i]) for i in ids]
    for _ in range(steps):
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8),
                             bitorder="little")
        allowed = np.flatnonzero(bits[:len(tokenizer)]).tolist()
        eos = tokenizer.eos_token_id
        if eos in allowed and (len(allowed) == 1 or rng.random() < 0.05):
            return chunks, True
        token = rng.choice([t for t in allowed if t != eos])
        assert matcher.consume_token(token)
        chunks.append(tokenizer.decode([token]))
    return chunks, False


@pytest.mark.parametrize("start", ["", "Sure", "<tool_c", "<tool_call>\n", '<tool_call>\n{"name": "get_'])
def test_every_answer_the_grammar_allows_is_text_or_calls_however_it_is_cut(tokenizer, vocabulary,
                                                                          start):
    grammar = _grammar({})
    form = ToolFormat(("get_weather", "get_time"), generic=True)
    rng = random.Random(start)
    for _ in range(12):
        chunks, ended = _walk(_matcher(vocabulary, grammar), tokenizer, rng, start,
                              rng.randint(0, 40))
        parser = StreamingToolCallParser(form)
        content, calls = "", []
        for chunk in chunks:
            text, found = parser.feed(chunk)
            content, calls = content + text, calls + found
        text, found = parser.finish(cut=not ended)
        content, calls = content + text, calls + found
        answer = "".join(chunks)
        if not answer.startswith(OPEN_TAG):
            assert (content, calls) == (answer, []), answer
            continue
        assert content == "" and len(calls) <= 1, answer
        if ended:  # a whole call: its arguments follow the function's schema
            [call] = calls
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
        for call in calls:  # a cut one: what the model wrote of its arguments
            assert call.name in SCHEMAS and call.arguments in answer, answer
