"""The request models take what their JSON schema allows and refuse the rest, with one line that
says what is wrong (fleet.api.protocol.fields, fleet.api.errors): integers as JSON Schema reads
them (2 and 2.0, never true or "2"), booleans that are booleans, nothing empty that an engine
must read, a registration's family read at the edge, and unsupported fields null or absent."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from fleet.api.errors import error_reply
from fleet.api.protocol.bodies import EmbeddingRequest, RegisterRequest, RerankRequest
from fleet.api.protocol.generation import ChatCompletionRequest, CompletionRequest
from fleet.errors import BadRequest, validation_message
from fleet.keep_alive import parse_keep_alive

HELLO = [{"role": "user", "content": "hi"}]


def _refusal(model: type, body: dict) -> str:
    """The message of the 400 that `body` gets."""
    with pytest.raises((ValidationError, BadRequest)) as refused:
        model.model_validate_json(json.dumps(body))
    status, reply, _ = error_reply(refused.value)
    assert status == 400
    return reply["error"]["message"]


@pytest.mark.parametrize(("value", "taken"), [(2, 2), (2.0, 2), (1e18, 10**18),
                                             (2**63 - 1, 2**63 - 1)])
def test_an_integer_is_any_whole_number(value, taken):
    request = ChatCompletionRequest.model_validate_json(json.dumps(
        {"model": "m", "messages": HELLO, "seed": value}))
    assert request.seed == taken and isinstance(request.seed, int)


@pytest.mark.parametrize(("value", "message"), [
    (True, "seed: Input should be a valid integer"),
    ("2", "seed: Input should be a valid integer"),
    (2.5, "seed: Input should be a whole number"),
    (1e-42, "seed: Input should be a whole number"),  # pydantic's multiple_of=1 passes it
    (2**63, "seed: Input should be less than or equal to 9223372036854775807"),
])
def test_what_is_not_an_integer_is_refused(value, message):
    assert message in _refusal(ChatCompletionRequest,
                               {"model": "m", "messages": HELLO, "seed": value})


@pytest.mark.parametrize(("field", "value"), [("stream", 1), ("temperature", "1"),
                                              ("logprobs", "true")])
def test_hot_path_bodies_are_read_strictly(field, value):
    assert f"{field}: Input should be a valid" in _refusal(
        ChatCompletionRequest, {"model": "m", "messages": HELLO, field: value})


def test_token_ids_take_whole_floats_and_nothing_else():
    assert EmbeddingRequest.model_validate_json('{"model": "m", "input": [[101.0, 7]]}').input \
        == [[101, 7]]
    for bad in ([True], [[True]], [["1", 2]], [-1], [2**31]):
        with pytest.raises(ValidationError):
            EmbeddingRequest.model_validate_json(json.dumps({"model": "m", "input": bad}))


@pytest.mark.parametrize(("model", "body", "message"), [
    (EmbeddingRequest, {"input": ""}, "input: must not be empty"),
    (EmbeddingRequest, {"input": []}, "input: must not be empty"),
    (EmbeddingRequest, {"input": ["a", ""]}, "input.1: must not be empty"),
    (EmbeddingRequest, {"input": [[1], []]}, "input.1: must not be empty"),
    (RerankRequest, {"query": "q", "documents": [{"text": ""}]},
     "documents.0.RerankDocument.text: must not be empty"),
    (ChatCompletionRequest, {"messages": HELLO, "guided_choice": []},
     "guided_choice: must not be empty"),
    (ChatCompletionRequest, {"messages": HELLO, "guided_regex": " \t"},
     "guided_regex: String should match pattern"),
])
def test_empty_inputs_are_refused_naming_where(model, body, message):
    """One line that names the field: the union's other members, which the value's type did
    not match, are left out of it."""
    refused = _refusal(model, {"model": "m", **body})
    assert refused == f"invalid request: {message}" or message in refused, refused


@pytest.mark.parametrize(("model", "body", "message"), [
    (RerankRequest, {"query": "q", "documents": ["d"], "max_chunks_per_doc": 3},
     "max_chunks_per_doc: is not supported: send null or leave it out"),
    (CompletionRequest, {"prompt": "x", "suffix": "y"}, "suffix: is not supported"),
    (CompletionRequest, {"prompt": "x", "echo": True}, "echo: Input should be False"),
    (CompletionRequest, {"prompt": "x", "best_of": 3}, "best_of=3 is not supported"),
])
def test_unsupported_fields_are_refused_unless_null(model, body, message):
    assert message in _refusal(model, {"model": "m", **body})
    unset = {key: None for key in body if key not in ("query", "documents", "prompt")}
    model.model_validate_json(json.dumps({"model": "m", **body, **unset}))


def test_tools_and_tool_choice_have_their_shapes():
    tool = {"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}
    request = ChatCompletionRequest.model_validate_json(json.dumps(
        {"model": "m", "messages": HELLO, "tools": [tool], "tool_choice": "required"}))
    assert request.generation_call().tools == [tool]  # OpenAI's further fields pass through
    assert "tools.0.type" in _refusal(ChatCompletionRequest, {
        "model": "m", "messages": HELLO, "tools": [{"type": "retrieval"}]})
    assert "tool_choice" in _refusal(ChatCompletionRequest, {
        "model": "m", "messages": HELLO, "tool_choice": "sometimes"})
    for parameters in ("city", [], 3):  # the function is named, not only its place in the list
        assert "tools.1.function: the parameters of function 'g' must be a JSON schema object" in \
            _refusal(ChatCompletionRequest, {"model": "m", "messages": HELLO, "tools": [
                tool, {"type": "function", "function": {"name": "g", "parameters": parameters}}]})


@pytest.mark.parametrize("family", [{"model_name": "x"}, '{"model_name": "x"}',
                                    ' \n{"model_name": "x"}'])
def test_a_family_is_an_object_or_its_json(family):
    assert RegisterRequest.model_validate({"model": family}).family == {"model_name": "x"}


@pytest.mark.parametrize(("family", "message"), [
    ("{oops", "model is not valid JSON"),
    ("[1]", "model must be a JSON object"),
    ('{"a": ' * 40 + "1" + "}" * 40, "model is nested 40 levels deep"),
    ("[" * 2000 + "]" * 2000, "model is not valid JSON"),  # past the parser's own depth
])
def test_a_family_that_is_not_one_is_refused(family, message):
    with pytest.raises(BadRequest, match=message):
        RegisterRequest.model_validate({"model": family})


def test_a_query_parameters_message_keeps_its_place():
    message = validation_message([
        {"type": "missing", "loc": ("query", "model_version"), "msg": "Field required"},
        {"type": "bool_parsing", "loc": ("query", "force"), "msg": "Input should be a valid "
                                                                    "boolean"}])
    assert message == ("invalid request: query.model_version: Field required; query.force: "
                       "Input should be a valid boolean")


_BODIES = [(ChatCompletionRequest, {"model": "m", "messages": HELLO}),
           (CompletionRequest, {"model": "m", "prompt": "hi"}),
           (EmbeddingRequest, {"model": "m", "input": "hi"}),
           (RerankRequest, {"model": "m", "query": "q", "documents": ["d"]})]


@pytest.mark.parametrize(("model", "body"), _BODIES)
def test_every_hot_body_takes_ollamas_keep_alive_and_refuses_what_is_no_duration(model, body):
    for value in ("2s", "10m", "1h30m", 300, 2.5, -1, "-1", 0):
        assert model.model_validate_json(json.dumps({**body, "keep_alive": value})).keep_alive \
            == value
    assert model.model_validate_json(json.dumps(body)).keep_alive is None
    assert _refusal(model, {**body, "keep_alive": "soon"}).startswith(
        "keep_alive 'soon' is not a duration")
    assert "keep_alive" in _refusal(model, {**body, "keep_alive": True})
    assert "longer than a year" in _refusal(model, {**body, "keep_alive": "9000h"})


@pytest.mark.parametrize("value", ["2s", " 10M ", "1h30m", "500ms", "-5m", "45", "2.5s",
                                   "soon", "1d", "1h-5m", "", "m", "10 minutes"])
def test_the_documented_pattern_is_the_parsers_grammar(value):
    pattern = EmbeddingRequest.model_json_schema()["properties"]["keep_alive"]["anyOf"][0][
        "anyOf"][0]["pattern"]
    try:
        parse_keep_alive(value)
        parsed = True
    except BadRequest:
        parsed = False
    assert bool(re.match(pattern, value)) == parsed
