"""Xinference's prompt styles (its older custom-LLM `prompt_style`) read as Fleet chat templates:
each style, with the fields Xinference's catalogue gave the models that used it, renders a
two-turn chat with a system message as the text the style defines (written out here by hand,
from the style's rules), through Fleet's one renderer; the style's stops become the family's;
what a style cannot serve is refused with the style's name and the reason."""

from __future__ import annotations

import json

import pytest

import fleet.catalogue.prompt_styles as prompt_styles
from fleet.catalogue.registry import Catalogue, builtin_families
from fleet.catalogue.schemas import LLMFamily
from fleet.errors import BadRequest
from fleet.generation.chat_template import render_chat
from tests.state_db import saved_family

SYSTEM = {"role": "system", "content": "Be brief."}
TWO_TURNS = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a color."},
]


def family(style: dict, **fields) -> LLMFamily:
    return LLMFamily.model_validate({
        "version": 1, "model_name": "styled", "model_ability": ["chat"], "model_lang": ["en"],
        "model_family": "other", "prompt_style": style, **fields,
        "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": 1,
                         "quantizations": ["q4_0"], "model_uri": "/m/model.gguf"}]})


def rendered(style: dict, messages: list[dict]) -> str:
    return render_chat(family(style).chat_template, messages)


def style(name: str, roles: list[str], system: str = "", intra: str = "", inter: str = "") -> dict:
    return {"style_name": name, "system_prompt": system, "roles": roles,
            "intra_message_sep": intra, "inter_message_sep": inter}


# (style, the chat with a system message, as the style writes it)
CASES = {
    "ADD_COLON_SINGLE": (
        style("ADD_COLON_SINGLE", ["USER", "ASSISTANT"], "You are a helpful AI assistant.", "\n"),
        "Be brief.\nUSER: Hi\nASSISTANT: Hello!\nUSER: Name a color.\nASSISTANT:"),
    "ADD_COLON_SINGLE_COT": (
        style("ADD_COLON_SINGLE_COT", ["Instruction", "Response"], "Below is a task.", "\n\n### "),
        "Be brief.\n\n### Instruction: Hi\n\n### Response: Hello!\n\n### Instruction: Name a "
        "color.\n\n### Response: Let's think step by step."),
    "ADD_COLON_TWO": (
        style("ADD_COLON_TWO", ["USER", "ASSISTANT"], "A chat.", " ", "</s>"),
        "Be brief. USER: Hi ASSISTANT: Hello!</s>USER: Name a color. ASSISTANT:"),
    "NO_COLON_TWO": (
        style("NO_COLON_TWO", ["<reserved_106>", "<reserved_107>"], "", "", "</s>"),
        "Be brief.<reserved_106>Hi<reserved_107>Hello!</s><reserved_106>Name a color."
        "<reserved_107>"),
    "DEEPSEEK_CHAT": (
        style("DEEPSEEK_CHAT", ["User", "Assistant"], "<｜begin▁of▁sentence｜>", "\n\n",
              "<｜end▁of▁sentence｜>"),
        "Be brief.User: Hi\n\nAssistant: Hello!<｜end▁of▁sentence｜>User: Name a color.\n\n"
        "Assistant:"),
    "LLAMA2": (
        style("LLAMA2", ["[INST]", "[/INST]"], "[INST] ", " ", "<s>"),
        "Be brief.Hi[/INST] Hello!<s>[INST] Name a color. [/INST]"),
    "LLAMA3": (
        style("LLAMA3", ["user", "assistant"], "You are a helpful assistant.", "\n\n",
              "<|eot_id|>"),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "FALCON": (
        style("FALCON", ["User", "Assistant"], "", "\n", "<|endoftext|>"),
        "Be brief.User: Hi\n\nAssistant: Hello!\n\nUser: Name a color.\n\nAssistant:"),
    "MIXTRAL_V01": (
        style("MIXTRAL_V01", ["user", "assistant"]),
        "<s> [INST] Hi [/INST]Hello! </s><s> [INST] Name a color. [/INST]"),
    "CHATGLM": (
        style("CHATGLM", ["问", "答"], "", "\n\n"),
        "Be brief.\n\n[Round 1]\n\n问：Hi\n\n答：Hello!\n\n[Round 2]\n\n问：Name a color.\n\n答："),
    "CHATGLM3": (
        style("CHATGLM3", ["user", "assistant"]),
        "<|system|>\n Be brief.\n<|user|>\n Hi\n<|assistant|>\n Hello!\n<|user|>\n Name a color."
        "\n<|assistant|>"),
    "XVERSE": (
        style("XVERSE", ["user", "assistant"]),
        "<|system|> \n Be brief.<|user|> \n Hi<|assistant|> \n Hello!<|user|> \n Name a color."
        "<|assistant|>"),
    "QWEN": (
        style("QWEN", ["user", "assistant"], "You are a helpful assistant.", "\n"),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n"
        "<|im_start|>assistant\n"),
    "CHATML": (
        style("CHATML", ["<|im_start|>user", "<|im_start|>assistant"], "", "<|im_end|>"),
        "Be brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!"
        "<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n"),
    "INTERNLM": (
        style("INTERNLM", ["<|User|>", "<|Bot|>"], "", "<eoh>\n", "<eoa>\n"),
        "<s><|User|>:Hi<eoh>\n<|Bot|>:Hello!<eoa>\n<|User|>:Name a color.<eoh>\n<|Bot|>:"),
    "INTERNLM2": (
        style("INTERNLM2", ["<|im_start|>user", "<|im_start|>assistant"], "You are InternLM.",
              "<|im_end|>"),
        "<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color.<|im_end|>\n"
        "<|im_start|>assistant\n"),
    "DEEPSEEK_CODER": (
        style("DEEPSEEK_CODER", ["### Instruction:", "### Response:"], "You code.", "", "\n"),
        "Be brief.\n### Instruction:\nHi\n### Response:\nHello!\n### Instruction:\nName a color."
        "\n### Response:\n"),
    "PHI3": (
        style("PHI3", ["user", "assistant"], "You are a helpful AI assistant.", "\n", "<|end|>\n"),
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nName a color.<|end|>\n<|assistant|>\n"),
    "C4AI-COMMAND-R": (
        style("c4ai-command-r", ["<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>"], "You are Command-R.",
              "", "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|>"),
        "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>Be brief.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|>"
        "<|CHATBOT_TOKEN|>Hello!<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>"
        "Name a color.<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"),
    "MISTRAL-NEMO": (
        style("mistral-nemo", ["[INST]", "[/INST]"], "", "", "</s>"),
        "<s>[INST] Hi[/INST] Hello!</s>[INST] Be brief.\n\nName a color.[/INST]"),
    "GEMMA": (
        style("gemma", ["user", "model"]),
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nName a color.<end_of_turn>\n<start_of_turn>model\n"),
    "ORION": (
        style("orion", ["Human", "assistant"]),
        "<s>Human: Hi\n\nassistant: </s>Hello!</s>Human: Name a color.\n\nassistant: </s>"),
    "CODESHELL": (
        style("CodeShell", ["## human:", "## assistant: "]),
        "## human:Hi|<end>|## assistant: Hello!|<end>|## human:Name a color.|<end>|## assistant:"),
    "MINICPM-2B": (
        style("MINICPM-2B", ["user", "assistant"]),
        "<用户>Hi<AI>Hello!<用户>Name a color.<AI>"),
    "INSTRUCTION": (
        style("INSTRUCTION", ["User", "Assistant"], "Translate.\nUser:\n\n{0}\nAssistant:"),
        "Be brief."),
}


def test_every_supported_style_has_a_case_and_is_listed_in_the_module_docstring():
    assert set(CASES) == set(prompt_styles.SUPPORTED_STYLES)
    for name in prompt_styles.SUPPORTED_STYLES.values():
        assert name in prompt_styles.__doc__, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_chat_with_a_system_message_is_written_as_the_style_says(name):
    given, expected = CASES[name]
    assert rendered(given, [SYSTEM, *TWO_TURNS]) == expected


@pytest.mark.parametrize(("given", "expected"), [
    # Without a system message the style's own system prompt is used.
    (CASES["QWEN"][0],
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>"
     "\n<|im_start|>assistant\n"),
    (style("LLAMA2", ["[INST]", "[/INST]"],
           "<s>[INST] <<SYS>>\nYou are a helpful AI assistant.\n<</SYS>>\n\n", " ", " </s><s>"),
     "<s>[INST] <<SYS>>\nYou are a helpful AI assistant.\n<</SYS>>\n\nHi[/INST]"),
    (style("CHATML", ["user", "assistant"], "<|im_start|>system\nYou are Hermes.",
           "<|im_end|>\n<|im_start|>"),
     "<|im_start|>system\nYou are Hermes.<|im_end|>\n<|im_start|>\nuser\nHi<|im_end|>\n"
     "<|im_start|>\nassistant\n"),
    (CASES["INTERNLM"][0], "<s><|User|>:Hi<eoh>\n<|Bot|>:"),
    (CASES["CHATGLM3"][0], "<|user|>\n Hi\n<|assistant|>"),
    (CASES["INSTRUCTION"][0], "Translate.\nUser:\n\nHi\nAssistant:"),
])
def test_one_question_without_a_system_message(given, expected):
    assert rendered(given, [{"role": "user", "content": "Hi"}]) == expected


def test_several_system_messages_are_joined_and_instruction_fills_in_the_question():
    qwen = CASES["QWEN"][0]
    two = [SYSTEM, {"role": "system", "content": "Use French"}, {"role": "user", "content": "Hi"}]
    assert rendered(qwen, two).startswith("<|im_start|>system\nBe brief.. Use French<|im_end|>")
    asked = [{"role": "system", "content": "Say {0} twice."}, {"role": "user", "content": "hi"}]
    assert rendered(CASES["INSTRUCTION"][0], asked) == "Say hi twice."


def test_a_tool_answer_is_written_under_its_role():
    chat = [{"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me look."},
            {"role": "tool", "content": "22 degrees"}]
    assert rendered(CASES["CHATGLM3"][0], chat) == (
        "<|user|>\n Weather?\n<|assistant|>\n Let me look.\n<|observation|>\n 22 degrees"
        "\n<|assistant|>")
    assert rendered(CASES["ADD_COLON_SINGLE"][0], chat).endswith(
        "ASSISTANT: Let me look.\ntool: 22 degrees\nASSISTANT:")


def test_the_styles_text_is_never_read_as_template_code():
    odd = 'Quote " back\\slash {{ 7 * 7 }} {% if true %}x{% endif %} {# c #} 😀 \t'
    given = style("ADD_COLON_SINGLE", [odd, "{{ R1 }}"], odd, "\n")
    assert rendered(given, [{"role": "user", "content": "Hi"}]) == (
        f"{odd}\n{odd}: Hi\n{{{{ R1 }}}}:")


def test_the_styles_stops_become_the_familys_and_the_files_own_win():
    given = {**CASES["QWEN"][0], "stop": ["", "<|im_end|>", "<|endoftext|>"],
             "stop_token_ids": [151643, 151645]}
    styled = family(given)
    assert (styled.stop, styled.stop_token_ids) == (["<|im_end|>", "<|endoftext|>"],
                                                   [151643, 151645])
    assert styled.prompt_style is None and "prompt_style" not in styled.model_dump(
        exclude_none=True)
    own = family(given, stop=["\nUSER"], stop_token_ids=[2])
    assert (own.stop, own.stop_token_ids) == (["\nUSER"], [2])


def test_style_names_are_read_without_regard_to_case():
    assert rendered(style("Gemma", ["user", "model"]), TWO_TURNS) == CASES["GEMMA"][1]


@pytest.mark.parametrize(("given", "fragment"), [
    (style("GORILLA_OPENFUNCTIONS", ["", ""]),
     "prompt style 'GORILLA_OPENFUNCTIONS' writes the request's tools in Gorilla's own"),
    (style("INTERNVL", ["a", "b"]), "prompt style 'INTERNVL' was Xinference's code for a vision"),
    (style("VICUNA", ["USER", "ASSISTANT"]), "prompt style 'VICUNA' is not one of Xinference's"),
    ({**style("QWEN", ["user", "assistant"]), "inter_message_seperator": "\n"},
     "prompt_style.style.inter_message_seperator: Extra inputs are not permitted"),
    (style("QWEN", ["user"]), "prompt_style.style.roles: List should have at least 2 items"),
    (style("INSTRUCTION", ["a", "b"], "{0} then {1}"),
     "prompt style INSTRUCTION: system_prompt may only hold {0}"),
])
def test_what_a_style_cannot_say_is_refused_with_its_name_and_why(given, fragment):
    with pytest.raises(BadRequest, match="prompt") as refused:
        Catalogue().register("LLM", {**family_data(), "prompt_style": given})
    assert fragment in refused.value.message


def family_data() -> dict:
    return json.loads(family(CASES["QWEN"][0]).model_dump_json(exclude_none=True))


def test_a_style_with_tools_or_a_chat_template_beside_it_is_refused():
    catalogue = Catalogue()
    data = {**family_data(), "prompt_style": CASES["QWEN"][0]}
    data.pop("chat_template")
    with pytest.raises(BadRequest, match="prompt style QWEN writes no tool definitions"):
        catalogue.register("LLM", {**data, "model_ability": ["chat", "tools"]})
    with pytest.raises(BadRequest, match="prompt_style and chat_template both say"):
        catalogue.register("LLM", {**data, "chat_template": "{{ messages }}"})


def test_a_registered_style_is_persisted_as_its_template_and_reloads_the_same(registrations):
    data = family_data()
    data.pop("chat_template")
    data.update(model_name="styled-qwen", model_family="qwen2.5-instruct",
                prompt_style={**CASES["QWEN"][0], "stop": ["<|im_end|>"]})
    registered = Catalogue(registrations).register("LLM", data)
    # The style wins over the model_family's own format.
    assert registered.chat_template == family(CASES["QWEN"][0]).chat_template
    assert registered.stop == ["<|im_end|>"]
    saved = saved_family(registrations, "LLM", "styled-qwen")
    assert "prompt_style" not in saved and saved["chat_template"] == registered.chat_template
    assert Catalogue(registrations).find("styled-qwen", "LLM") == registered


def test_a_style_named_by_a_string_borrows_that_built_in_familys_format():
    catalogue = Catalogue()
    data = family_data()
    data.pop("chat_template")
    named = catalogue.register("LLM", {**data, "model_name": "named",
                                       "prompt_style": "llama-3-instruct"}, persist=False)
    llama = builtin_families("LLM")["llama-3-instruct"]
    assert (named.chat_template, named.stop) == (llama.chat_template, llama.stop)
    assert named.prompt_style is None
    with pytest.raises(BadRequest, match="prompt_style 'chatglm3' is not the name of a built-in"):
        catalogue.register("LLM", {**data, "model_name": "unknown", "prompt_style": "chatglm3"})
