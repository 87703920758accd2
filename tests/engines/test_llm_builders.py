"""The tiny Qwen2 builders load with plain transformers, offline, and the scripted one answers its
script exactly: the serving tests that use them can then blame fleet, not the models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.llm_builders import (
    CHAT_PROMPT_END,
    END_OF_TEXT,
    IM_END,
    IM_START,
    build_scripted_qwen2,
    build_tiny_qwen2,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOOL_CALL_JSON = '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
TOOL_SCRIPT = {CHAT_PROMPT_END: ["<tool_call>", TOOL_CALL_JSON, "</tool_call>", IM_END]}
REASONING_SCRIPT = {
    CHAT_PROMPT_END: ["<think>", "I should greet.", "</think>", "\n\nHello!", IM_END],
    "Answer:": [" Paris", " (café, 日本)", "."],  # a completion key; no <|im_end|>: added for us
}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
USER_TURN = [{"role": "user", "content": "What is the weather in Paris?"}]


def load(path: Path, **kwargs: Any) -> tuple[Any, Any]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return tokenizer, model


def chat_ids(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    assert text.endswith(f"{IM_START}assistant\n")
    return tokenizer(text, return_tensors="pt").input_ids


def continuation(model: Any, input_ids: Any) -> list[int]:
    output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                            max_new_tokens=20)
    return output[0, input_ids.shape[1]:].tolist()


def token_ids(tokenizer: Any, chunks: list[str]) -> list[int]:
    ids = [tokenizer.encode(chunk, add_special_tokens=False) for chunk in chunks]
    assert all(len(one) == 1 for one in ids), ids
    return [one[0] for one in ids]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def scripted_tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_qwen2(tmp_path_factory.mktemp("tool") / "model", TOOL_SCRIPT)


@pytest.fixture(scope="module")
def scripted_reasoning(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_qwen2(tmp_path_factory.mktemp("reasoning") / "model", REASONING_SCRIPT)


def test_tiny_qwen2_loads_and_generates(tiny: Path):
    tokenizer, model = load(tiny)
    config = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM" and config.model_type == "qwen2"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.intermediate_size) == (64, 2, 4, 2, 128)
    assert config.vocab_size == len(tokenizer) and not config.tie_word_embeddings
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == END_OF_TEXT
    assert model.generation_config.eos_token_id == im_end
    assert [p.name for p in tiny.parent.iterdir()] == [tiny.name]  # no partial folder left

    input_ids = chat_ids(tokenizer, USER_TURN)
    new = continuation(model, input_ids)
    assert 1 <= len(new) <= 20 and all(0 <= i < len(tokenizer) for i in new)
    assert isinstance(tokenizer.decode(new), str)


def test_chat_template_renders_tools_and_tool_calls(tiny: Path):
    tokenizer, _ = load(tiny)
    messages = [
        {"role": "system", "content": "Be brief."},
        *USER_TURN,
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rainy"},
    ]
    text = tokenizer.apply_chat_template(messages, tools=[WEATHER_TOOL], add_generation_prompt=True,
                                         tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(WEATHER_TOOL) + "\n</tools>" in text
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
            '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n'
            "</tool_call><|im_end|>\n") in text
    assert ("<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrainy\n"
            "</tool_response><|im_end|>\n<|im_start|>assistant\n") in text
    plain = tokenizer.apply_chat_template(USER_TURN, tokenize=False)
    assert plain == "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"


def test_scripted_chat_answers_with_a_tool_call(scripted_tool: Path):
    tokenizer, model = load(scripted_tool)
    chunks = TOOL_SCRIPT[CHAT_PROMPT_END]
    input_ids = chat_ids(tokenizer, USER_TURN, tools=[WEATHER_TOOL])
    assert input_ids[0, -1].item() == token_ids(tokenizer, [CHAT_PROMPT_END])[0]
    new = continuation(model, input_ids)
    assert new == token_ids(tokenizer, chunks)  # then stops: <|im_end|> is the eos
    assert tokenizer.decode(new) == "".join(chunks)
    assert tokenizer.decode(new, skip_special_tokens=True) == "".join(chunks[:-1])


def test_scripted_reasoning_chat_and_completion(scripted_reasoning: Path):
    tokenizer, model = load(scripted_reasoning)
    chat_chunks = REASONING_SCRIPT[CHAT_PROMPT_END]
    new = continuation(model, chat_ids(tokenizer, USER_TURN))
    assert new == token_ids(tokenizer, chat_chunks)
    assert tokenizer.decode(new) == "<think>I should greet.</think>\n\nHello!<|im_end|>"

    prompt = tokenizer("Question: what is the capital of France?\nAnswer:", return_tensors="pt").input_ids
    new = continuation(model, prompt)
    assert new == token_ids(tokenizer, [*REASONING_SCRIPT["Answer:"], IM_END])
    assert tokenizer.decode(new, skip_special_tokens=True) == " Paris (café, 日本)."

    # A prompt ending in an unscripted token gets an empty answer: <|im_end|> at once.
    assert continuation(model, tokenizer("Hello there", return_tensors="pt").input_ids) == \
        token_ids(tokenizer, [IM_END])


def test_scripted_model_holds_in_half_precision(scripted_reasoning: Path):
    tokenizer, model = load(scripted_reasoning, dtype=torch.bfloat16)
    new = continuation(model, chat_ids(tokenizer, USER_TURN))
    assert tokenizer.decode(new) == "".join(REASONING_SCRIPT[CHAT_PROMPT_END])


def test_ordinary_text_still_round_trips(scripted_reasoning: Path):
    tokenizer, _ = load(scripted_reasoning)
    text = "The weather in Paris is sunny, 21°C.\n\nÇa va? 日本語 — it's   fine\tthanks"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # the trained merges do compress English


@pytest.mark.parametrize("script", [
    {"a": ["b", "c"], "b": ["d"]},  # "b" followed by "c" and by "d"
    {"\n": ["x", "x"]},  # "x" followed by "x" and by <|im_end|>
    {"a": ["b"], "b": ["c"]},  # "b" ends one chain and starts another
    {"a": ["b", ""]},
])
def test_scripts_that_do_not_define_one_successor_are_refused(tmp_path: Path, script: dict[str, list[str]]):
    with pytest.raises(ValueError):
        build_scripted_qwen2(tmp_path / "model", script)
    assert not (tmp_path / "model").exists()
