"""Structured output without a model: request fields -> one constraint -> a grammar llguidance
accepts (or a 400 naming what it refused), and the logits mask of Fleet's torch sampler, with
SmolLM2's real tokenizer."""

from __future__ import annotations

import json

import pytest
import torch

from fleet.engines.constrained import GrammarMatchers
from fleet.engines.torch_sampling import SamplerState, _constrain, sample
from fleet.errors import BadRequest
from fleet.generation.grammar import checked_grammar, llama_cpp_grammar
from fleet.generation.params import SamplingParams
from fleet.generation.structured import constraint_of as constraint_of_call
from fleet.messages import GenerationCall
from tests.builders import smollm2_hf_folder


def constraint_of(body: dict, generic_tools: bool = False):
    """The constraint of a chat request with these fields, as the replica reads it."""
    return constraint_of_call(GenerationCall(kind="chat", **body), generic_tools)

TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}


def test_a_forced_call_is_the_json_the_tool_call_parser_reads():
    constraint = constraint_of({"tools": [TOOL], "tool_choice": "required"})
    schema = json.loads(constraint.spec)
    assert schema["properties"]["name"] == {"const": "f"}
    # The parameters the function lists and no others, unless its schema says otherwise.
    assert schema["properties"]["arguments"] == {**TOOL["function"]["parameters"],
                                                 "additionalProperties": False}
    assert constraint_of({"tools": [TOOL], "tool_choice": "auto"}) is None
    for parameters in ({"type": "object"}, {**TOOL["function"]["parameters"],
                                            "additionalProperties": {"type": "string"}}):
        tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
        forced = json.loads(constraint_of({"tools": [tool], "tool_choice": "required"}).spec)
        assert forced["properties"]["arguments"] == parameters


@pytest.mark.parametrize("body, fragment", [
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "'g', which is not in tools (f)"),
    ({"tool_choice": "required"}, "no tools"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "schema is missing"),
    ({"response_format": {"type": "yaml"}}, "'yaml'"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_json": "{not json"}, "guided_json is not valid JSON"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "one guided-decoding field"),
])
def test_bad_requests_are_refused_before_any_grammar(body, fragment):
    with pytest.raises(BadRequest) as info:
        constraint_of(body)
    assert fragment in str(info.value)


@pytest.mark.parametrize("body, fragment", [
    ({"guided_json": {"type": "objectx"}}, "Invalid type: objectx"),
    ({"guided_json": {"type": "object", "not": {}}}, 'Unimplemented keys: ["not"]'),
    ({"guided_regex": "(?<=a)b"}, "look-around"),
    ({"guided_grammar": "root ::= ((("}, "guided_grammar cannot be used"),
])
def test_what_llguidance_refuses_is_a_400_that_says_why(body, fragment):
    with pytest.raises(BadRequest) as info:
        checked_grammar(constraint_of(body))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_grammars_are_cached_and_spelled_for_llama_cpp():
    body = {"guided_grammar": 'root ::= "yes" | "no"'}
    first = checked_grammar(constraint_of(body))
    assert checked_grammar(constraint_of(body)) is first
    assert llama_cpp_grammar(first).count("%llguidance") == 1
    assert llama_cpp_grammar('start: "a"') == '%llguidance {}\nstart: "a"'


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_hf_folder())


def test_the_mask_allows_only_what_the_grammar_allows_in_its_own_row(tokenizer):
    grammar = checked_grammar(constraint_of({"guided_choice": ["yes", "no"]}))
    matchers = GrammarMatchers(tokenizer, len(tokenizer))
    free = SamplerState(0, SamplingParams(max_tokens=4, temperature=0.0), [1])
    bound = SamplerState(1, SamplingParams(max_tokens=4, temperature=0.0), [1],
                         matcher=matchers.matcher(grammar))
    logits = torch.randn(2, len(tokenizer))
    assert _constrain(logits, [free, free]) is logits  # no grammar: no copy, no work
    masked = _constrain(logits, [free, bound])
    assert torch.equal(masked[0], logits[0])
    allowed = {tokenizer.decode([t]) for t in torch.isfinite(masked[1]).nonzero().flatten().tolist()}
    assert allowed and allowed <= {"y", "ye", "yes", "n", "no"}, allowed
    text = ""
    for _ in range(4):
        [choice] = sample(torch.randn(1, len(tokenizer)), [bound])
        if choice.token_id == tokenizer.eos_token_id:
            break
        text += tokenizer.decode([choice.token_id])
    assert text in ("yes", "no") and bound.matcher.is_accepting()
