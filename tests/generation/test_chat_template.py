"""The one chat template renderer every engine uses: it must render what Hugging Face's
`apply_chat_template` renders (the Transformers engine's behaviour before, and what the templates
on the Hub are written for), without a tokenizer, and refuse what it cannot render with a 400."""

from __future__ import annotations

import datetime
import json

import pytest

from fleet.errors import BadRequest
from fleet.generation.chat_template import render_chat
from tests.llm_builders import CHAT_TEMPLATE, _chat_tokenizer

# SmolLM2's own template (the GGUF file's tokenizer.chat_template): a default system prompt.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Das Wetter in einer Stadt <city>.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße aus München"},
     {"role": "assistant", "content": "Hallo!"}, {"role": "user", "content": "Und Paris?"}],
    [{"role": "user", "content": [{"type": "text", "text": "Weather "},
                                  {"type": "text", "text": "in Paris?"}]},
     {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
         "name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
     {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    return _chat_tokenizer([])


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("tools", [None, [WEATHER_TOOL]])
def test_renders_what_transformers_renders(hf_tokenizer, messages, tools):
    from fleet.generation.chat_template import normalize_messages

    expected = hf_tokenizer.apply_chat_template(normalize_messages(messages), tools=tools,
                                                add_generation_prompt=True, tokenize=False)
    ours = render_chat(CHAT_TEMPLATE, messages, tools, None, {"eos_token": "<|im_end|>"})
    assert ours == expected
    assert ours.endswith("<|im_start|>assistant\n")


def test_tojson_keeps_text_as_written():
    # Jinja's own tojson would write "\u00fc" and escape "<" as "\u003c"; the models read neither.
    rendered = render_chat(CHAT_TEMPLATE, [{"role": "user", "content": "hi"}], [WEATHER_TOOL])
    assert "Das Wetter in einer Stadt <city>." in rendered
    assert json.dumps(WEATHER_TOOL, ensure_ascii=False) in rendered


def test_the_family_template_sees_the_model_special_tokens_and_request_kwargs():
    template = ("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
                "{% if enable_thinking is defined and not enable_thinking %}/no_think{% endif %}"
                "{{ eos_token }}")
    tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    messages = [{"role": "user", "content": "Hi"}]
    assert render_chat(template, messages, special_tokens=tokens) == "<s>Hi</s>"
    assert render_chat(template, messages, None, {"enable_thinking": False}, tokens) == "<s>Hi/no_think</s>"


def test_smollm2_template_adds_its_default_system_prompt():
    rendered = render_chat(SMOLLM2_TEMPLATE, [{"role": "user", "content": "Hi"}])
    assert rendered == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                        "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_named_templates_pick_tool_use_for_tools():
    templates = {"default": "plain", "tool_use": "with tools"}
    messages = [{"role": "user", "content": "Hi"}]
    assert render_chat(templates, messages) == "plain"
    assert render_chat(templates, messages, [WEATHER_TOOL]) == "with tools"


def test_generation_tag_strftime_and_loop_controls():
    template = ("{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
                "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}|{{ strftime_now('%Y') }}")
    messages = [{"role": "system", "content": "skip me"}, {"role": "user", "content": "kept"}]
    assert render_chat(template, messages) == f"kept|{datetime.datetime.now().year}"


def test_reasoning_reaches_templates_under_every_name():
    template = "{% for m in messages %}[{{ m.thinking }}|{{ m.reasoning_content }}]{% endfor %}"
    messages = [{"role": "assistant", "content": "4", "reasoning_content": "2+2"}]
    assert render_chat(template, messages) == "[2+2|2+2]"


@pytest.mark.parametrize(("template", "fragment"), [
    ("{{ raise_exception('System role not supported') }}", "System role not supported"),
    ("{% for m in messages %}", "chat template"),  # a syntax error
    ("{{ messages.__class__.__mro__ }}", "chat template"),  # out of the sandbox
    ("{% set ns = namespace(_secret=1) %}", "_secret"),
])
def test_template_errors_are_400s(template, fragment):
    with pytest.raises(BadRequest) as caught:
        render_chat(template, [{"role": "user", "content": "Hi"}])
    assert caught.value.code == "chat_template_error" and fragment in caught.value.message


def test_no_template_says_to_use_completions():
    with pytest.raises(BadRequest) as caught:
        render_chat(None, [{"role": "user", "content": "Hi"}])
    assert caught.value.code == "no_chat_template" and "/v1/completions" in caught.value.message
