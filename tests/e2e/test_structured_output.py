"""Structured output through a real `fleet local` with the real SmolLM2-135M-Instruct, on both LLM
engines (Transformers: Fleet's logits mask; llama.cpp: its own llguidance grammar): a JSON schema
with nested objects, enums and arrays sampled at temperature 0.7 over several seeds, whole and
streamed; json_object; tools on a model whose family has no tool format of its own (Fleet's
generic one): tool_choice "required" and named, a forced call cut by max_tokens, and "auto",
whose answers are text or valid calls; Xinference's guided-decoding fields; LangChain's
with_structured_output in its three methods; and the 400s of schemas that cannot be used."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import pytest
from openai import BadRequestError
from pydantic import BaseModel

from tests.builders import _smollm2_gguf, smollm2_hf_folder

CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "country": {
            "type": "object",
            "properties": {"code": {"enum": ["FR", "DE", "IT"]},
                           "size": {"enum": ["small", "large"]}},
            "required": ["code", "size"], "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["old", "big", "sea"]},
                 "minItems": 1, "maxItems": 2},
    },
    "required": ["name", "country", "tags"], "additionalProperties": False,
}
ASK_CITY = [{"role": "user", "content": "Describe Paris as JSON."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
                   "required": ["city"], "additionalProperties": False}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module", params=["transformers", "llama.cpp"])
def model(request, client) -> str:
    if request.param == "transformers":
        return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="transformers",
                                   model_uid="smol-hf", model_path=str(smollm2_hf_folder()))
    return client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                               model_format="gguf", quantization="Q4_1", model_uid="smol-cpp",
                               model_path=str(_smollm2_gguf()), n_parallel=8)


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def _streamed(chunks) -> tuple[str, list[dict[str, Any]], str | None]:
    """Content, tool calls (arguments joined) and finish reason of a streamed chat answer."""
    content, calls, reason = "", {}, None
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            reason = choice.finish_reason or reason
    return content, [calls[i] for i in sorted(calls)], reason


def test_a_json_schema_is_followed_whole_and_streamed_over_seeds(openai_client, model):
    def ask(seed: int, stream: bool) -> tuple[str, str | None]:
        settings = dict(model=model, messages=ASK_CITY, temperature=0.7, seed=seed, max_tokens=60,
                        response_format=_schema_format(CITY))
        if stream:
            content, _, reason = _streamed(openai_client.chat.completions.create(**settings,
                                                                                 stream=True))
            return content, reason
        answer = openai_client.chat.completions.create(**settings)
        return answer.choices[0].message.content, answer.choices[0].finish_reason

    jobs = [(seed, stream) for seed in SEEDS for stream in (False, True)]
    with ThreadPoolExecutor(len(jobs)) as pool:  # together: they share the batch
        answers = list(pool.map(lambda job: ask(*job), jobs))
    for (seed, stream), (content, reason) in zip(jobs, answers, strict=True):
        assert reason == "stop", (seed, stream, content)
        jsonschema.validate(json.loads(content), CITY)
        # Keys come in the schema's order, as on OpenAI's API.
        assert list(json.loads(content)) == list(CITY["properties"])
    if model == "smol-hf":
        # The same seed gives the same text whole and streamed: the grammar changes nothing
        # else. (llama.cpp's numbers shift with what else shares its batch.)
        assert answers[0] == answers[1]
    assert len({content for content, _ in answers}) > 1, "the seeds should not all agree"


def test_json_object_gives_a_json_object(openai_client, model):
    # Any object is allowed, so nothing but the model ends it: greedy, and asked for two keys.
    ask = [{"role": "user", "content": 'Give Paris as JSON with the keys "city" and "country".'}]
    answer = openai_client.chat.completions.create(
        model=model, messages=ask, temperature=0, max_tokens=60,
        response_format={"type": "json_object"})
    assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


@pytest.mark.parametrize("tool_choice, expected", [
    ("required", {"get_weather", "get_time"}),
    ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}),
])
def test_a_forced_tool_call_is_a_valid_call_whole_and_streamed(openai_client, model, tool_choice,
                                                              expected):
    # SmolLM2's family has no tool format: the call is made in Fleet's generic one.
    settings = dict(model=model, messages=ASK_WEATHER, tools=[WEATHER, TIME],
                    tool_choice=tool_choice, temperature=0.7, seed=5, max_tokens=60)
    answer = openai_client.chat.completions.create(**settings)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls
    content, [streamed], reason = _streamed(openai_client.chat.completions.create(**settings,
                                                                                 stream=True))
    assert (content, reason) == ("", "tool_calls")
    assert streamed == {"name": call.function.name, "arguments": call.function.arguments}
    assert call.function.name in expected and call.id.startswith("call_")
    tool = WEATHER if call.function.name == "get_weather" else TIME
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_a_forced_call_cut_by_max_tokens_is_a_call_with_partial_arguments(openai_client, model):
    # 22 tokens end inside the arguments: `<tool_call>\n{"name": "get_weather", "arguments": {"`
    # and the city take about that many.
    settings = dict(model=model, messages=ASK_WEATHER, tools=[WEATHER, TIME], temperature=0,
                    tool_choice={"type": "function", "function": {"name": "get_weather"}},
                    max_tokens=22)
    choice = openai_client.chat.completions.create(**settings).choices[0]
    assert choice.finish_reason == "length" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = call.function.arguments
    assert arguments.startswith('{"city": ') and "<tool_call>" not in arguments
    with pytest.raises(json.JSONDecodeError):  # what the model wrote of them, as OpenAI sends it
        json.loads(arguments)
    content, [streamed], reason = _streamed(openai_client.chat.completions.create(**settings,
                                                                                 stream=True))
    assert (content, reason) == ("", "length")
    assert streamed == {"name": "get_weather", "arguments": arguments}


def _text_or_valid_call(choice: Any) -> str:
    """Asserts the answer is plain text or valid calls, never both, and says which."""
    message = choice.message
    if not message.tool_calls:
        assert "<tool_call>" not in (message.content or "")
        assert choice.finish_reason in ("stop", "length")
        return "text"
    assert not message.content and choice.finish_reason == "tool_calls"
    [call] = message.tool_calls  # one call: parallel_tool_calls was not asked for
    tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    return "call"


def test_tools_left_to_the_model_give_text_or_a_valid_call(openai_client, model):
    settings = dict(model=model, tools=[WEATHER, TIME], max_tokens=60)
    answers = [openai_client.chat.completions.create(**settings, messages=ASK_WEATHER,
                                                     temperature=0.9, seed=seed).choices[0]
               for seed in SEEDS]
    for answer in answers:
        _text_or_valid_call(answer)
    # A conversation where the model called before, and is asked again: SmolLM2 calls (greedy).
    again = [*ASK_WEATHER,
             {"role": "assistant", "content": None, "tool_calls": [{
                 "id": "call_1", "type": "function", "function": {
                     "name": "get_weather", "arguments": '{"city": "Rome", "unit": "celsius"}'}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
             {"role": "assistant", "content": "It is sunny in Rome, 24 C."},
             {"role": "user", "content": "What is the weather in Berlin?"}]
    choice = openai_client.chat.completions.create(**settings, messages=again,
                                                   temperature=0).choices[0]
    assert _text_or_valid_call(choice) == "call", choice.message.content
    call = choice.message.tool_calls[0]
    content, [streamed], reason = _streamed(openai_client.chat.completions.create(
        **settings, messages=again, temperature=0, stream=True))
    assert (content, reason) == ("", "tool_calls")
    assert streamed == {"name": call.function.name, "arguments": call.function.arguments}


def test_xinference_guided_fields(openai_client, model):
    chat = openai_client.chat.completions.create
    choice = chat(model=model, messages=[{"role": "user", "content": "Is Paris in France?"}],
                  temperature=0.7, seed=6, max_tokens=5,
                  extra_body={"guided_choice": ["yes", "no", "maybe"]})
    assert choice.choices[0].message.content in ("yes", "no", "maybe")
    point = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
             "required": ["x", "y"], "additionalProperties": False}
    guided = chat(model=model, messages=[{"role": "user", "content": "A point as JSON."}],
                  temperature=0.7, seed=7, max_tokens=30, extra_body={"guided_json": point})
    jsonschema.validate(json.loads(guided.choices[0].message.content), point)
    year = openai_client.completions.create(model=model, prompt="Paris was founded in the year",
                                            temperature=0.7, seed=8, max_tokens=6,
                                            extra_body={"guided_regex": r" [0-9]{3,4}"})
    assert year.choices[0].text.strip().isdigit() and len(year.choices[0].text) in (4, 5)


class Capital(BaseModel):
    city: str
    country: str


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_with_structured_output(local_cluster, model, method):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=model, base_url=f"{local_cluster.endpoint}/v1", api_key="unused",
                      temperature=0, max_tokens=40)
    # json_mode constrains to any JSON object: the prompt shows the keys, as LangChain's docs say.
    prompt = ('What is the capital of France? Answer with JSON like '
              '{"city": "...", "country": "..."}.')
    result = chat.with_structured_output(Capital, method=method).invoke(prompt)
    assert isinstance(result, Capital) and result.city and result.country


def _refused(call, *fragments: str) -> None:
    with pytest.raises(BadRequestError) as info:
        call()
    assert info.value.status_code == 400
    message = info.value.body["message"]
    for fragment in fragments:
        assert fragment in message, message


def test_schemas_that_cannot_be_used_are_400s_and_the_model_keeps_serving(openai_client, model):
    chat = openai_client.chat.completions.create

    def with_format(schema: dict[str, Any]):
        return lambda: chat(model=model, messages=ASK_CITY, max_tokens=5,
                            response_format=_schema_format(schema))

    _refused(with_format({"type": "objectx"}), "response_format", "Invalid type: objectx")
    _refused(with_format({"type": "object", "properties": "nope"}), "properties must be an object")
    _refused(with_format({"type": "object", "not": {"type": "string"}}), "Unimplemented keys",
             "not")
    _refused(with_format({"type": "string", "pattern": "(?=a)b"}), "look-around")
    _refused(lambda: chat(model=model, messages=ASK_WEATHER, tools=[WEATHER],
                          tool_choice={"type": "function", "function": {"name": "get_time"}}),
             "get_time", "not in tools")
    _refused(lambda: chat(model=model, messages=ASK_WEATHER, tool_choice="required"),
             "no tools")
    _refused(lambda: chat(model=model, messages=ASK_WEATHER, tools=[{
        "type": "function", "function": {"name": "get_weather", "parameters": "city"}}]),
             "parameters of function 'get_weather'", "JSON schema object")
    _refused(lambda: chat(model=model, messages=ASK_WEATHER, tools=[WEATHER],
                          tool_choice="required", response_format={"type": "json_object"}),
             "send one of them")
    _refused(lambda: chat(model=model, messages=ASK_CITY, extra_body={"guided_regex": "(?=x)"}),
             "guided_regex", "look-around")
    _refused(lambda: chat(model=model, messages=ASK_CITY, response_format={"type": "json_object"},
                          extra_body={"guided_choice": ["a"]}), "send one of them")
    answer = chat(model=model, messages=ASK_CITY, max_tokens=60, temperature=0,
                  response_format=_schema_format(CITY))
    jsonschema.validate(json.loads(answer.choices[0].message.content), CITY)
